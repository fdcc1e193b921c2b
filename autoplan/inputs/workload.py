"""The workload of a request: lengths, batches, number formats and the memory headroom,
with the bounds every entry point checks."""

from __future__ import annotations

from dataclasses import dataclass

from autoplan.errors import InputError
from autoplan.inputs.dtypes import bytes_per_element


@dataclass(frozen=True)
class Precision:
    """Formats of weights (and GEMM compute), activations and the KV cache."""

    weight: str = "bf16"
    activation: str = "bf16"
    kv: str = "bf16"

    def __post_init__(self) -> None:
        for d in (self.weight, self.activation, self.kv):
            bytes_per_element(d)





@dataclass(frozen=True)
class Workload:
    isl: int
    osl: int
    batch: int
    precision: Precision
    max_memory_fraction: float = 0.9
    # Prompts prefilled together (default: the batch). Decode runs ``batch`` sequences;
    # prefill passes take ``prefill_batch`` prompts at a time.
    prefill_batch: int | None = None
    # Token budget of one step of a colocated server's in-flight batching (None: the
    # engine's default; autoplan.cost.inflight). Prefill batches do not apply there.
    step_tokens: int | None = None

    @property
    def pb(self) -> int:
        return self.prefill_batch or self.batch

    def phase_batch(self, phase: str) -> int:
        return self.pb if phase == "prefill" else self.batch




# Upper bounds far beyond any deployment (16Mi-token prompts and outputs, 64Ki requests
# per batch): they keep times inside the planner's 64-bit microsecond tables.
MAX_TOKENS = 1 << 24


MAX_BATCH = 1 << 16


def check_workload(isl: int, osl: int, batch: int, max_memory_fraction: float) -> None:
    if isl < 1:
        raise InputError(f"--isl must be >= 1, got {isl}")
    if osl < 1:
        raise InputError(f"--osl must be >= 1, got {osl}")
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    for flag, v, most in (("--isl", isl, MAX_TOKENS), ("--osl", osl, MAX_TOKENS),
                          ("--batch", batch, MAX_BATCH)):
        if v > most:
            raise InputError(f"{flag} must be at most {most}, got {v}")
    if not 0 < max_memory_fraction <= 1:
        raise InputError(f"max memory fraction must be in (0, 1], got {max_memory_fraction}")
