"""Maximum-load throughput of published ``trtllm-bench throughput`` rows, priced by the
planner's in-flight model, for ``bench/accuracy.py`` (section (d)).

    python bench/max_throughput.py [--kv-fraction 0.95]
    python bench/max_throughput.py --aic-venv PATH     # + aiconfigurator's estimate, side by side
    python bench/max_throughput.py --table-from DIR/aic-throughput.json   # reprint a run's table

The rows (``hardware/data/heldout-throughput.csv``) are TensorRT-LLM's own performance
overview: output tokens/s per GPU of ``trtllm-bench throughput``, every request queued at
once, fixed lengths. They are held out: nothing is fitted to them. They judge what the
latency rows do not: the planner's large-batch regime (batches of 100-700 sequences per
rank), where the throughput objective operates.

What the benchmark runs, from its source (TensorRT-LLM ``tensorrt_llm/bench``, read, not
copied; the rules below are restated):

- ``build/tuning.py`` sizes the executor. KV bytes per token ``2 * layers *
  max(tp, num_key_value_heads) * head_size * kv_bytes`` (``head_size`` from the HF config,
  else ``hidden / heads``: not MLA-aware), memory ``GPUs * reported capacity - parameters
  * weight_bytes``, times the KV fraction; ``r`` requests of ``isl + osl`` tokens fit
  that. ``max_batch_size``: ``min(r, 4096) / pp`` rounded up to a multiple of 32 (at least
  64) below 256, of 128 below 1024, else of 256. ``max_num_tokens``: ``min(bs * (1 + isl /
  osl), 32768)`` rounded up to 256 (at least 2048) below 4096, 512 below 8192, else 1024.
- ``benchmark/utils/general.py``: chunked prefill is off by default, so ``max_num_tokens``
  is raised to at least ``isl + max_batch_size`` (a whole prompt per step).
- ``benchmark/throughput.py``: ``--scheduler_policy`` defaults to
  ``guaranteed_no_evict``: a request is admitted only when the KV cache can hold it to its
  last token, so the running batch is what ``isl + osl`` tokens per sequence allow.
  ``--kv_cache_free_gpu_mem_fraction`` defaults to 0.90; the overview says 0.95 was used
  "in many cases" (not which): ``--kv-fraction``.

The running batch per attention rank is then ``min(max_batch_size, floor(f * free /
kv_per_sequence))`` with ``free`` = the device's reported capacity less the stage's
weights, activation workspace and runtime reserve (:func:`autoplan.cost.pipeline.
memories_for`) and the KV of one sequence at ``isl + osl`` tokens as the planner holds it.
With attention DP every rank runs its own batch (``max_batch_size`` is per rank). The
replica is then priced as the planner prices a colocated pool: in-flight batching at that
batch with ``max_num_tokens`` as the step budget (:func:`autoplan.cost.evaluate.evaluate`),
tokens/s per GPU = batch / (TTFT + (osl - 1) TPOT) * osl / GPUs. Not modelled: the
benchmark's ramp (its first and last waves), CUDA-graph padding of the decode batch, and
attention-DP load imbalance beyond the busiest rank's share.

With ``--aic-venv``, NVIDIA aiconfigurator 0.12 (the peer; its own virtual environment,
never a dependency) prices every row at the same operating point: ``aiconfigurator cli
estimate --estimate-mode agg --backend trtllm`` with the row's TP, attention DP and EP,
the batch per rank and ``--ctx-tokens`` (step budget) autoplan's side uses, FP8 weights
(block FP8 for DeepSeek-R1, whose checkpoint is block-quantised) and an FP8 KV cache; its
``tokens/s/gpu`` is set beside the measured value. Its answers are saved to
``DIR/aic-throughput.json`` (default ``bench/out/throughput``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autoplan.catalog import catalog_root, load_model, load_topology  # noqa: E402
from autoplan.cost.estimate import place_even_pipeline  # noqa: E402
from autoplan.cost.evaluate import evaluate  # noqa: E402
from autoplan.cost.pipeline import memories_for  # noqa: E402
from autoplan.graphs.model_graph import parameter_count  # noqa: E402
from autoplan.inputs.workload import Precision, Workload  # noqa: E402

DATA = catalog_root() / "hardware" / "data" / "heldout-throughput.csv"
BYTES = {"fp8": 1, "int8": 1, "bf16": 2, "fp16": 2}
TOPOLOGY = {"h100-sxm": "h100-sxm-x8", "h200": "h200-x8", "b200": "b200-x8",
            "a100-sxm-80gb": "a100-sxm-80gb-x8"}
"""The shipped node each device kind of the rows runs on (one node of eight)."""


def _round_up(x: float, step: int) -> int:
    return step * math.ceil(x / step)


def executor_limits(kv_requests: float, isl: int, osl: int, pp: int = 1,
                    chunked: bool = False) -> tuple[int, int]:
    """``(max_batch_size, max_num_tokens)`` trtllm-bench gives the executor when it fits
    ``kv_requests`` requests of ``isl + osl`` tokens (module docstring)."""
    bs = min(kv_requests, 4096) / pp
    tokens = min(bs * (1 + isl / osl), 32768)
    if bs < 256:
        max_bs = max(64, _round_up(bs, 32))
    elif bs < 1024:
        max_bs = _round_up(bs, 128)
    else:
        max_bs = _round_up(bs, 256)
    if tokens < 4096:
        max_tokens = max(2048, _round_up(tokens, 256))
    elif tokens < 8192:
        max_tokens = _round_up(tokens, 512)
    else:
        max_tokens = _round_up(tokens, 1024)
    if not chunked:
        max_tokens = max(max_tokens, isl + max_bs)
    return max_bs, max_tokens


@dataclass
class Row:
    id: str
    engine: str
    model: str
    device_kind: str
    tp: int
    attention_dp: int
    ep: int
    weight_dtype: str
    kv_dtype: str
    isl: int
    osl: int
    requests: int
    param_count: int | None
    value: float

    @property
    def mapping(self) -> str:
        return f"TP{self.tp}" if self.attention_dp == 1 else f"DEP{self.attention_dp}"


def read_rows(path: Path = DATA) -> list[Row]:
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append(Row(
                r["id"], r["engine"], r["model"], r["device_kind"], int(r["tp"]),
                int(r["attention_dp"]), int(r["ep"]), r["weight_dtype"], r["kv_dtype"],
                int(r["isl"]), int(r["osl"]), int(r["requests"]),
                int(r["param_count"]) if r["param_count"] else None, float(r["value"])))
    return out


@dataclass
class Priced:
    row: Row
    kv_fraction: float
    max_batch_size: int
    max_num_tokens: int
    kv_batch: int  # sequences per rank the KV cache holds at isl + osl
    batch: int  # running sequences per rank: the smaller of the two
    ttft_ms: float
    tpot_ms: float
    predicted: float  # output tokens/s per GPU, steady state (the planner's figure)
    simulated: float | None = None  # output tokens/s per GPU of the simulated run
    aic: float | None = None  # aiconfigurator's estimate at the same operating point
    aic_refusal: str | None = None  # why aiconfigurator gave none (its error)

    @property
    def error(self) -> float:
        return self.predicted / self.row.value - 1

    @property
    def sim_error(self) -> float | None:
        return None if self.simulated is None else self.simulated / self.row.value - 1

    @property
    def aic_error(self) -> float | None:
        return None if self.aic is None else self.aic / self.row.value - 1


def _hf_kv_bytes_per_token(model_id: str, tp: int, kv_bytes: int) -> float:
    """trtllm-bench's KV bytes per token of the whole TP group, from the HF config."""
    hf = json.loads((catalog_root() / "models" / f"{model_id}.json").read_text())
    heads = hf["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads") or heads
    head = hf.get("head_dim") or hf["hidden_size"] // heads
    return 2 * hf["num_hidden_layers"] * max(tp, kv_heads) * head * kv_bytes


def price(row: Row, kv_fraction: float = 0.95, engine: str = "trtllm",
          simulate_run: bool = False) -> Priced:
    model = load_model(row.model)
    topo = load_topology(TOPOLOGY[row.device_kind], None, engine)
    precision = Precision(row.weight_dtype, "bf16", row.kv_dtype)
    stages = place_even_pipeline(model, topo, row.device_kind, row.tp, 1, row.attention_dp,
                                 row.ep)
    gpus = row.tp * row.attention_dp
    capacity = topo.kinds[row.device_kind].capacity_bytes
    # executor limits, as trtllm-bench estimates them (--tp is the whole group)
    params = row.param_count or parameter_count(model)
    free_est = gpus * capacity - params * BYTES[row.weight_dtype]
    per_request = _hf_kv_bytes_per_token(row.model, gpus, BYTES[row.kv_dtype]) * (row.isl + row.osl)
    max_bs, max_tokens = executor_limits(kv_fraction * free_est / per_request, row.isl, row.osl)
    # the KV cache the runtime allocates, per rank, as the planner holds memory
    mem = memories_for(model, topo, stages, row.attention_dp, row.isl + row.osl,
                       max_tokens * row.attention_dp, precision)[0]
    free = capacity - mem.weights_bytes - mem.activation_bytes - mem.reserved_bytes
    kv_batch = int(kv_fraction * free // mem.kv_bytes)  # mem holds one sequence per rank
    batch = min(max_bs, kv_batch)
    work = Workload(row.isl, row.osl, batch * row.attention_dp, precision, 1.0,
                    step_tokens=max_tokens)
    fig = evaluate(model, topo, work, "colocated", stages, stages)
    sim = None
    if simulate_run:
        from closed_loop import Run, simulate

        res = simulate(model, topo, stages, work, Run(batch * row.attention_dp, row.requests))
        sim = res.output_tokens_per_s / gpus
    return Priced(row, kv_fraction, max_bs, max_tokens, kv_batch, batch, fig.ttft_ms,
                  fig.tpot_ms, fig.tokens_per_s_per_device, sim)


AIC_SYSTEM = {"h100-sxm": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm"}


def aic_command(exe: Path, model_dir: Path, p: Priced) -> list[str]:
    """aiconfigurator's ``cli estimate`` of one row at autoplan's operating point."""
    r = p.row
    quant = "fp8_block" if r.model.startswith("deepseek-ai/") else r.weight_dtype
    cmd = [str(exe), "cli", "estimate", "--model-path", str(model_dir), "--system",
           AIC_SYSTEM[r.device_kind], "--backend", "trtllm", "--estimate-mode", "agg",
           "--isl", str(r.isl), "--osl", str(r.osl), "--batch-size", str(p.batch),
           "--ctx-tokens", str(p.max_num_tokens), "--tp-size", str(r.tp),
           "--gemm-quant-mode", quant, "--kvcache-quant-mode", r.kv_dtype]
    if r.attention_dp > 1 or r.ep > 1:
        cmd += ["--attention-dp-size", str(r.attention_dp), "--moe-ep-size", str(r.ep),
                "--moe-tp-size", str(r.tp * r.attention_dp // r.ep), "--moe-quant-mode", quant]
    return cmd


def run_aic(priced: list[Priced], venv: Path, out: Path) -> dict[str, dict]:
    """aiconfigurator's tokens/s/GPU for every row (saved to ``out/aic-throughput.json``)."""
    from types import SimpleNamespace

    from vs_aiconfigurator import aic_version, ensure_aic, model_dir

    exe = ensure_aic(venv)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {"_version": {"aiconfigurator": aic_version(venv)},
                                "_kv_fraction": {"value": priced[0].kv_fraction if priced else None}}
    for p in priced:
        cmd = aic_command(exe, model_dir(SimpleNamespace(model=p.row.model), out / "models"), p)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=out,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        value, error = None, None
        for line in res.stdout.splitlines() + res.stderr.splitlines():
            if line.strip().startswith("tokens/s/gpu:"):
                value = float(line.split(":", 1)[1].replace(",", ""))
            if line.startswith("RuntimeError: "):
                error = line.removeprefix("RuntimeError: ")
        results[p.row.id] = {"tokens_per_s_per_gpu": value, "rc": res.returncode,
                             "error": error, "cmd": cmd[1:]}
        print(f"{p.row.id}: aiconfigurator {value}", file=sys.stderr)
    (out / "aic-throughput.json").write_text(json.dumps(results, indent=1))
    return results


def _refused(p: Priced) -> str:
    """aiconfigurator's refusal of a row, short: its OOM verdict, else its error."""
    if p.aic_refusal is None:
        return "not run"
    why = p.aic_refusal
    return "refused: OOM at this batch" if why.startswith("OOM") else f"refused: {why[:60]}"


def _stats(errs: list[float]) -> str:
    a = sorted(abs(e) for e in errs)
    return f"{len(a)} | {statistics.median(a) * 100:.1f}% | {a[-1] * 100:.1f}%"


def table(kv_fraction: float = 0.95, rows: list[Row] | None = None,
          simulate_run: bool = True, aic: dict[str, dict] | None = None) -> list[str]:
    priced = [price(r, kv_fraction, simulate_run=simulate_run) for r in (rows or read_rows())]
    if aic is not None:
        saved = aic.get("_kv_fraction", {}).get("value")
        if saved is not None and abs(saved - kv_fraction) > 1e-12:
            raise SystemExit(f"aiconfigurator's answers were priced at --kv-fraction {saved:g}, "
                             f"not {kv_fraction:g}: rerun with that fraction")
    for p in priced:
        if aic and p.row.id in aic:
            p.aic = aic[p.row.id].get("tokens_per_s_per_gpu")
            p.aic_refusal = aic[p.row.id].get("error") or "no estimate in its output"
    return render(priced, kv_fraction, aic)


def render(priced: list[Priced], kv_fraction: float, aic: dict[str, dict] | None) -> list[str]:
    peer = aic is not None
    out = ["### (d) Maximum-load throughput: TensorRT-LLM's performance overview", "",
           (f"`trtllm-bench throughput` rows of `heldout-throughput.csv` (held out), output "
            f"tokens/s per GPU. Batch per rank = min(trtllm-bench's max_batch_size, what the "
            f"KV cache holds at ISL + OSL with kv_cache_free_gpu_mem_fraction "
            f"{kv_fraction:g}); step budget = its max_num_tokens (`bench/max_throughput.py`). "
            "`steady state`: the planner's figure (`autoplan.cost.inflight`); `run`: the "
            "benchmark's run of its request count simulated step by step "
            "(`bench/closed_loop.py`: its first and last waves included)."),
           "", ("| id | model | device | mapping | ISL/OSL | max_batch_size | KV batch | "
                "batch/rank | step tokens | TTFT ms | TPOT ms | measured | steady state | "
                "error | run | error |" + (" aiconfigurator | error |" if peer else "")),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
           + ("---|---|" if peer else "")]
    if peer:
        out[2] += (f" `aiconfigurator` ({aic['_version']['aiconfigurator']}): its `cli "
                   "estimate` at the same TP / attention DP / EP, batch per rank and step "
                   "budget.")
    for p in priced:
        r = p.row
        out.append(f"| {r.id} | {r.model.split('/')[-1]} | {r.device_kind} | {r.mapping} | "
                   f"{r.isl}/{r.osl} | {p.max_batch_size} | {p.kv_batch} | {p.batch} | "
                   f"{p.max_num_tokens} | {p.ttft_ms:.0f} | {p.tpot_ms:.1f} | {r.value:g} | "
                   f"{p.predicted:.0f} | {p.error * 100:+.1f}% | "
                   + ("- | - |" if p.simulated is None else
                      f"{p.simulated:.0f} | {p.sim_error * 100:+.1f}% |")
                   + ("" if not peer else f" {_refused(p)} | - |" if p.aic is None else
                      f" {p.aic:.0f} | {p.aic_error * 100:+.1f}% |"))
    out += ["", ("| rows | n | steady state: median \\|error\\| | max \\|error\\| | "
                 "run: median | max |" + (" rows aiconfigurator priced | aiconfigurator: "
                                           "median | max | autoplan on those rows: median | "
                                           "max |" if peer else "")),
            "|---|---|---|---|---|---|" + ("---|---|---|---|---|" if peer else "")]
    groups: dict[str, list[Priced]] = {}
    for p in priced:
        for key in ("all", f"{p.row.model.split('/')[-1]}", f"{p.row.device_kind}"):
            groups.setdefault(key, []).append(p)
    for key in sorted(groups, key=lambda k: (k != "all", k)):
        ps = groups[key]
        sim = ([p.sim_error for p in ps] if all(p.simulated is not None for p in ps)
               else None)
        line = (f"| {key} | {_stats([p.error for p in ps])} | "
                + ("- | - |" if sim is None else " | ".join(_stats(sim).split(" | ")[1:]) + " |"))
        if peer:
            both = [p for p in ps if p.aic is not None]
            line += (" - | - | - |" if not both else
                     f" {len(both)} | {_stats([p.aic_error for p in both]).split(' | ', 1)[1]}"
                     f" | {_stats([p.error for p in both]).split(' | ', 1)[1]} |")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kv-fraction", type=float, default=0.95,
                    help="kv_cache_free_gpu_mem_fraction (the overview: 0.95 in many cases)")
    ap.add_argument("--aic-venv", type=Path, default=None,
                    help="aiconfigurator's virtual environment: price every row with it too")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "throughput",
                    help="folder for aiconfigurator's answers (aic-throughput.json)")
    ap.add_argument("--table-from", type=Path, default=None, metavar="AIC_JSON",
                    help="reprint the table with a saved aic-throughput.json")
    args = ap.parse_args(argv)
    aic = None
    if args.table_from is not None:
        aic = json.loads(args.table_from.read_text())
    elif args.aic_venv is not None:
        priced = [price(r, args.kv_fraction) for r in read_rows()]
        aic = run_aic(priced, args.aic_venv, args.out)
    print("\n".join(table(args.kv_fraction, aic=aic)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
