"""Maximum-load serving throughput of published vLLM runs, simulated by the planner's cost
model, for ``bench/accuracy.py`` (section (e)).

    python bench/serving_throughput.py

The rows (``hardware/data/heldout-serving-throughput.csv``, held out: nothing is fitted to
them) are GPUStack's performance lab: ``vllm bench serve`` against ``vllm serve`` (vLLM
0.11.0, engine defaults) with every prompt of the run sent at once and fixed lengths,
output tokens/s over the run. Their prompts are long and their outputs short (4000/200,
2000/100, 32000/100): the running batch is what the KV cache holds, and prefill takes most
of the time, so they judge the memory model and the prefill pricing at scale.

What the engine runs (vLLM's ``vllm/engine/arg_utils.py``, ``get_batch_defaults``, read, not
copied): on a GPU of at least 70 GiB that is not an A100 the API server's
``max_num_seqs`` is 1024 and ``max_num_batched_tokens`` 8192, else 256 and 2048 (the step
budget is ``hardware/engines.yaml``'s); ``gpu_memory_utilization`` 0.9 of the device's
memory holds the weights, the activation peak of one step and the KV cache. The running
batch is then ``min(max_num_seqs, floor((0.9 capacity - weights - activations -
reserve) / KV of one sequence at isl + osl))`` per the planner's memory terms; vLLM
allocates KV blocks on demand (and preempts when they run out), which admits a little
more while prompts are long and outputs short. The run is the closed loop of
``bench/closed_loop.py`` with that many slots: the benchmark's request count, each
request of the row's prompt length and of the mean output it generated (no
``--ignore-eos``), the engine's mixed chunked-prefill steps and per-request server time.
"""

from __future__ import annotations

import csv
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from closed_loop import Run, simulate  # noqa: E402
from max_throughput import TOPOLOGY  # noqa: E402

from autoplan.catalog import catalog_root, load_model, load_topology  # noqa: E402
from autoplan.cost.estimate import place_even_pipeline  # noqa: E402
from autoplan.cost.inflight import step_budget  # noqa: E402
from autoplan.cost.pipeline import memories_for  # noqa: E402
from autoplan.inputs.workload import Precision, Workload  # noqa: E402

DATA = catalog_root() / "hardware" / "data" / "heldout-serving-throughput.csv"
GIB = float(1 << 30)
GPU_MEMORY_UTILIZATION = 0.9


@dataclass
class Row:
    id: str
    engine: str
    model: str
    device_kind: str
    tp: int
    weight_dtype: str
    kv_dtype: str
    isl: int
    osl: int
    requests: int
    generated: int
    duration_s: float
    value: float
    step_tokens: int | None

    @property
    def mean_output(self) -> int:
        return max(1, round(self.generated / self.requests))


def read_rows(path: Path = DATA) -> list[Row]:
    with open(path, newline="") as f:
        return [Row(r["id"], r["engine"], r["model"], r["device_kind"], int(r["tp"]),
                    r["weight_dtype"], r["kv_dtype"], int(r["isl"]), int(r["osl"]),
                    int(r["requests"]), int(r["generated_tokens"]), float(r["duration_s"]),
                    float(r["value"]), int(r["step_tokens"]) if r["step_tokens"] else None)
                for r in csv.DictReader(f)]


def max_num_seqs(capacity_bytes: float, kind: str) -> int:
    """vLLM's API-server default: 1024 on GPUs of 70 GiB or more but A100, else 256."""
    return 1024 if capacity_bytes >= 70 * GIB and not kind.startswith("a100") else 256


@dataclass
class Priced:
    row: Row
    step_tokens: int
    kv_batch: int
    batch: int
    predicted: float  # output tokens/s of the simulated run
    duration_s: float

    @property
    def error(self) -> float:
        return self.predicted / self.row.value - 1


def price(row: Row) -> Priced:
    model = load_model(row.model)
    topo = load_topology(TOPOLOGY[row.device_kind], None, row.engine.split("-")[0])
    precision = Precision(row.weight_dtype, "bf16", row.kv_dtype)
    stages = place_even_pipeline(model, topo, row.device_kind, row.tp, 1)
    osl = row.mean_output
    probe = Workload(row.isl, osl, 1, precision, 1.0, None, row.step_tokens)
    n_step = step_budget(topo, probe).tokens
    mem = memories_for(model, topo, stages, 1, row.isl + osl, n_step, precision)[0]
    cap = topo.kinds[row.device_kind].capacity_bytes
    free = GPU_MEMORY_UTILIZATION * cap - mem.weights_bytes - mem.activation_bytes - mem.reserved_bytes
    kv_batch = max(0, int(free // mem.kv_bytes))  # mem holds one sequence
    batch = min(max_num_seqs(cap, row.device_kind), kv_batch, row.requests)
    if batch < 1:
        raise ValueError(f"{row.id}: no sequence fits the KV cache")
    work = Workload(row.isl, osl, batch, precision, 1.0, None, row.step_tokens)
    res = simulate(model, topo, stages, work, Run(batch, row.requests))
    return Priced(row, n_step, kv_batch, batch, res.output_tokens_per_s, res.duration_s)


def table(rows: list[Row] | None = None) -> list[str]:
    priced = [price(r) for r in (rows or read_rows())]
    out = ["### (e) Maximum-load serving: vLLM 0.11 with every prompt at once (GPUStack)", "",
           ("`vllm bench serve` rows of `heldout-serving-throughput.csv` (held out), output "
            "tokens/s over the run, simulated step by step (`bench/serving_throughput.py`): "
            "the running batch is what vLLM's KV cache holds at gpu_memory_utilization 0.9, "
            "capped by its max_num_seqs."), "",
           ("| id | model | device | TP | dtype | ISL/mean output | requests | KV batch | "
            "running | step tokens | measured s | simulated s | measured tok/s | "
            "predicted | error |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in priced:
        r = p.row
        out.append(f"| {r.id} | {r.model.split('/')[-1]} | {r.device_kind} | {r.tp} | "
                   f"{r.weight_dtype} | {r.isl}/{r.mean_output} | {r.requests} | {p.kv_batch} | "
                   f"{p.batch} | {p.step_tokens} | {r.duration_s:g} | {p.duration_s:.1f} | "
                   f"{r.value:g} | {p.predicted:.1f} | {p.error * 100:+.1f}% |")
    a = sorted(abs(p.error) for p in priced)
    out += ["", f"{len(a)} rows: median |error| {statistics.median(a) * 100:.1f}%, "
            f"max {a[-1] * 100:.1f}%."]
    return out


def main() -> int:
    print("\n".join(table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
