"""Attention-DP ranks out of step, against TensorRT-LLM's ADP balance measurement.

    python bench/adp_balance.py        # the table (about 10 s)

TensorRT-LLM's tech blog 10, "ADP Balance Strategy"
(https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/blogs/tech_blog/blog10_ADP_Balance_Strategy.md),
serves DeepSeek-V3 on 8 GB200 at attention DP 8 x EP 8 with in-flight batching, 16,000
requests of 803 prompt and 3,653 output tokens on average. Without balancing (the
default) its ranks take context requests at different iterations and an iteration lasts
as long as the busiest rank: 25,664 tokens/s, a mean balance ratio of 54%. Holding
context requests back until every rank has one gives 33,499 (1.31x) and, with batch
equalisation, 34,140 tokens/s (1.33x).

autoplan's steady state prices the ranks' prompt chunks out of step
(``autoplan.cost.inflight.dp_mixed_passes``). This prints, for that model, system and
workload (mean lengths, FP8, TensorRT-LLM's kernels), its throughput with the ranks out
of step and with them in step (every rank's step alike, the balanced case), and the
ratio, at the batch sizes per rank the blog does not state. Nothing is fitted to the
blog; the ratio is a check of the mechanism's size.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import autoplan.cost.inflight as inflight  # noqa: E402
from autoplan.catalog import load_model, load_topology  # noqa: E402
from autoplan.cost.estimate import place_even_pipeline  # noqa: E402
from autoplan.cost.evaluate import evaluate  # noqa: E402
from autoplan.inputs.workload import Precision, Workload  # noqa: E402

BLOG = {"baseline": 25_664, "context wait": 33_499, "full strategy": 34_140}
ISL, OSL, DP = 803, 3653, 8


@contextmanager
def ranks_in_step():
    """Price every attention-DP rank's step alike (one rank's mix, scaled to all)."""
    def aligned(rank, s, ranks):
        return {m: [(w, replace(sh, batch=sh.batch * ranks, chunk_seqs=sh.chunk_seqs * ranks))
                    for w, sh in ps] for m, ps in inflight.colocated_passes(rank, s).items()}
    saved = inflight.dp_mixed_passes
    inflight.dp_mixed_passes = aligned
    try:
        yield
    finally:
        inflight.dp_mixed_passes = saved


def table(batches=(32, 64, 128, 256), step_tokens=8192) -> list[str]:
    model = load_model("deepseek-ai/DeepSeek-V3")
    topo = load_topology("gb200-nvl72", None, "trtllm")
    stages = place_even_pipeline(model, topo, "gb200", 1, 1, DP, DP)
    precision = Precision("fp8", "bf16", "fp8")
    out = ["| sequences per rank | TPOT out of step ms | TPOT in step ms | tokens/s out of step "
           "| tokens/s in step | in step / out of step |", "|---|---|---|---|---|---|"]
    for b in batches:
        work = Workload(ISL, OSL, b * DP, precision, 1.0, step_tokens=step_tokens)
        apart = evaluate(model, topo, work, "colocated", stages, stages)
        with ranks_in_step():
            step = evaluate(model, topo, work, "colocated", stages, stages)
        out.append(f"| {b} | {apart.tpot_ms:.1f} | {step.tpot_ms:.1f} | "
                   f"{apart.throughput_tokens_per_s:,.0f} | {step.throughput_tokens_per_s:,.0f} | "
                   f"{step.throughput_tokens_per_s / apart.throughput_tokens_per_s:.2f}x |")
    gain = BLOG["context wait"] / BLOG["baseline"], BLOG["full strategy"] / BLOG["baseline"]
    out += ["", f"TensorRT-LLM's blog (measured, its batch not stated): {gain[0]:.2f}x with "
                f"context wait, {gain[1]:.2f}x with the full strategy."]
    return out


if __name__ == "__main__":
    print("\n".join(table()))
