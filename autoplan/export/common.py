"""The shared model of an export: its commands, its files, the settings every engine uses.

An engine's builder has one shape, :data:`Builder`: ``build(ctx, pools) -> Export``. It
turns the plan's pools into the commands that launch them and the files that hold them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from autoplan.cost.context import model_of
from autoplan.errors import InputError
from autoplan.export.pools import Pool
from autoplan.files import check_writable, make_folder, write_atomic
from autoplan.plan_schema import Plan

# The ports servers listen on (one a server, counting up) and the router or proxy's.
SERVER_PORT = 8100
ROUTER_PORT = 8000


class ShellRef(str):
    """An environment value that is a reference to a variable of the launch script
    (``"$HOST_IP"``), written unquoted-for-expansion; every other value is quoted. Only
    the exporters make these, never from plan text."""

    def __new__(cls, name: str) -> ShellRef:  # noqa: PYI034 - never subclassed
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"not a shell variable name: {name!r}")
        return super().__new__(cls, f"${name}")

    @property
    def name(self) -> str:
        return self[1:]


HOST_IP = ShellRef("HOST_IP")


@dataclass
class Command:
    """One command of an export: where it runs, its environment and its argument list."""

    role: str  # server | prefill | decode | router | ray-head | ray-worker
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    host: str | None = None  # topology node it runs on; None when the plan does not say
    replica: int = 0

    def line(self) -> str:
        """The shell line: every value quoted (a :class:`ShellRef` as ``"$NAME"``)."""
        envs = [f'{k}="{v}"' if isinstance(v, ShellRef) else f"{k}={shlex.quote(v)}"
                for k, v in self.env.items()]
        return " ".join(envs + [shlex.join(self.argv)])


def comment(text: str) -> str:
    """``text`` made safe for one comment line of a shell script or a YAML file: any
    character that is not printable (a newline would end the comment and start a
    command) is written as its escape. Names are printable already (checked at input);
    this holds whatever a caller passes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


@dataclass
class Export:
    engine: str
    files: dict[str, str]
    warnings: list[str]
    commands: list[Command]


@dataclass
class Ctx:
    """What a builder is given besides the pools: the plan and what holds for all of them."""

    plan: Plan
    engine: str
    label: str  # the engine's name in warnings
    model: str  # the model path the launch lines load
    warn: list[str]
    backend: str | None = None  # Dynamo's worker engine (None: the plan's engine)

    @property
    def max_len(self) -> int:
        return self.plan.inputs.isl + self.plan.inputs.osl

    @property
    def context_cap(self) -> int | None:
        """The model's context (None where unknown or the plan cannot be rebuilt)."""
        pc = self.plan_context
        return None if pc is None else pc.model.max_context

    @cached_property
    def plan_context(self):
        """The plan's model, topology and workload for the cost model (sizing servers
        from memory), or None where a plan exported unchecked cannot rebuild them."""
        from autoplan.cost.context import plan_context

        try:
            return plan_context(self.plan)
        except (InputError, KeyError, ValueError, OSError):
            return None


Builder = Callable[[Ctx, list[Pool]], Export]


class Engine(NamedTuple):
    """One engine of the registry: its name in warnings and its builder."""

    label: str
    build: Builder


def model_path(plan: Plan, warn: list[str]) -> str:
    """The model for the launch lines: its Hugging Face id, or the local folder a plan
    made from a ``config.json`` records (which must also hold the weights). Older plans
    that recorded a config file path get its folder."""
    m = plan.inputs.model
    if m.startswith("-"):
        raise InputError(f"the plan's model {m!r} starts with '-': an engine would read it "
                         f"as a flag; give the model as its Hugging Face id or a path "
                         f"(./{m})")
    p = Path(m)
    if p.suffix == ".json":
        folder = str(p.parent) if str(p.parent) not in ("", ".") else "."
        warn.append(f"the plan's model is a config file ({m}); the launch lines use its folder "
                    f"{folder!r} as the model path, which must also hold the weights")
        return folder
    if plan.inputs.model_spec is not None and p.is_absolute():
        warn.append(f"the model is the local folder {m}: it must hold the weights on every "
                    "host that runs a server")
    return m


def precision_flags(ctx: Ctx, kv_fp8: str) -> list[str]:
    """Weights and KV-cache formats as engine flags (``kv_fp8``: the engine's name for an
    fp8 KV cache); a warning for what has no flag."""
    i = ctx.plan.inputs
    flags: list[str] = []
    dtype_names = {"bf16": "bfloat16", "fp16": "float16"}
    if i.dtype in dtype_names:
        flags += ["--dtype", dtype_names[i.dtype]]
    elif i.dtype == "fp8":
        ckpt = model_of(i).checkpoint
        # a checkpoint stored in FP8 carries its quantization_config, which the engine
        # reads; a --quantization flag must then match its quant_method (vLLM refuses fp8
        # against compressed-tensors), so it is left to the checkpoint
        if not (ckpt.dtype == "fp8" and ckpt.quant_method):
            flags += ["--quantization", "fp8"]
    else:
        ctx.warn.append(f"weights format {i.dtype} has no single {ctx.label} flag: serve a "
                        f"checkpoint already quantized to {i.dtype} (the engine reads its "
                        f"quantization config); no quantization flag is exported")
    act = i.dtype if i.dtype in dtype_names else None
    if i.kv_dtype == "fp8":
        flags += ["--kv-cache-dtype", kv_fp8]
    elif i.kv_dtype in ("bf16", "fp16"):
        if act is not None and i.kv_dtype != act:
            ctx.warn.append(f"a {i.kv_dtype} KV cache with {i.dtype} weights has no "
                            f"{ctx.label} flag; the KV cache follows the weights ({i.dtype})")
    else:
        ctx.warn.append(f"a {i.kv_dtype} KV cache has no {ctx.label} flag; the KV cache is "
                        f"left at the engine's default")
    return flags


def sizing_args(ctx: Ctx, pool: Pool, names: tuple[str, str, str, str, str],
                block: int, tp: int | None = None, per_rank: bool = False) -> list[str]:
    """TP (``tp``: the engine's TP value where it is not the pool's attention TP), PP,
    context length (rounded up to the engine's KV ``block``), concurrent sequences
    (``per_rank``: of one data-parallel attention rank, ``ceil(seqs / dp)``, where the
    engine's limit is per rank) and memory fraction of a server, under the engine's flag
    ``names`` for them (in that order); see :mod:`autoplan.export.limits`."""
    from autoplan.export.limits import block_len, max_seqs

    i = ctx.plan.inputs
    seqs = max_seqs(ctx, pool)
    if per_rank:
        seqs = -(-seqs // pool.dp)
    values = (pool.tp if tp is None else tp, pool.pp, block_len(ctx.max_len, block, ctx.context_cap),
              seqs, f"{i.max_memory_fraction:g}")
    return [a for flag, v in zip(names, values, strict=True) for a in (flag, str(v))]


def parallel_args(pool: Pool, engine: str) -> list[str]:
    """The expert-parallel and attention-DP flags of a server (none for a TP-only pool),
    with its TP flag from :func:`sizing_args` at :func:`engine_tp`:

    * vLLM: ``--data-parallel-size D`` attention ranks of ``--tensor-parallel-size`` GPUs,
      ``--enable-expert-parallel`` (EP = TP x DP); every DP rank is an engine core of its
      own, so ``--max-num-seqs`` is per rank (:func:`sizing_args` ``per_rank``);
    * SGLang: ``--tp-size`` all GPUs of a stage, ``--enable-dp-attention --dp-size D``,
      ``--ep-size E``.

    Sources: :mod:`autoplan.export.flags` (VLLM_EP_DOCS, SGLANG_EP_DOCS)."""
    out: list[str] = []
    if engine == "vllm":
        if pool.dp > 1:
            out += ["--data-parallel-size", str(pool.dp)]
        if pool.ep > 1:
            out.append("--enable-expert-parallel")
    elif engine == "sglang":
        if pool.dp > 1:
            out += ["--enable-dp-attention", "--dp-size", str(pool.dp)]
        if pool.ep > 1:
            out += ["--ep-size", str(pool.ep)]
    return out


def engine_tp(pool: Pool, engine: str) -> int:
    """The engine's TP value for a stage: vLLM's is one DP rank's; SGLang's and
    TensorRT-LLM's count every GPU of the stage (attention DP inside it)."""
    return pool.tp if engine == "vllm" else pool.tp * pool.dp


def write_export(exp: Export, out_dir: str | Path) -> list[Path]:
    """Write every file of ``exp`` into ``out_dir`` atomically; scripts are executable."""
    d = make_folder(out_dir)  # refuses a file, or a file on its path
    for name in exp.files:  # every target first: none written if one cannot be
        check_writable(d / name)
    written = []
    for name, text in exp.files.items():
        path = d / name
        write_atomic(path, text)
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
        written.append(path)
    return written
