"""Every figure of a concrete plan (stages, devices, replica counts) from the cost model:
the one function that the planner, the validator, explain and the charts all price with."""

from __future__ import annotations

from dataclasses import dataclass

from autoplan.cost.inflight import inflight, largest_pass_tokens, pool_passes
from autoplan.cost.kv import kv_link_bytes_per_s, kv_stage_bytes, kv_stage_time_s
from autoplan.cost.pipeline import (
    PhaseCost,
    StagePlacement,
    memories_for,
    pipeline_cost,
    pool_memory_args,
    request_host_s,
    weighted_pipeline_cost,
)
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Precision, Workload
from autoplan.plan_schema import Plan


@dataclass
class Figures:
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    kv_transfer_ms: float
    throughput_tokens_per_s: float
    requests_per_s: float
    phase_requests_per_s: dict[str, float]
    bubble_fraction: dict[str, float]
    prefill_ms: float
    stage_ms: dict[str, list[float]]
    stage_fraction: dict[str, list[float]]
    stage_bottleneck: dict[str, list[str]]
    phase_bottleneck: dict[str, str]
    ttft_floor_ms: float = 0.0
    tpot_floor_ms: float = 0.0
    tokens_per_s_per_device: float = 0.0
    tokens_per_s_per_user: float = 0.0


def workload_of(plan: Plan) -> Workload:
    i = plan.inputs
    return Workload(i.isl, i.osl, i.batch, Precision(i.dtype, "bf16", i.kv_dtype),
                    i.max_memory_fraction, i.prefill_batch, i.step_tokens)


def placements(plan_phase) -> list[StagePlacement]:
    return [StagePlacement(s.layers[0], s.layers[1], s.device_kind, tuple(s.devices),
                           s.attention_dp, s.ep)
            for s in plan_phase.stages]


def phase_cost(model: ModelSpec, topo: Topology, work: Workload, placement: str, phase: str,
               stages: list[StagePlacement], breakdown: bool = False) -> PhaseCost:
    """One phase's figure through its pipeline, with the memory its pool holds: a
    disaggregated pool's pass; in a colocated pool, TTFT (``prefill``) or TPOT
    (``decode``) of in-flight batching, weighted sums of its steps
    (:mod:`autoplan.cost.inflight`; raises InputError where the pool cannot sustain the
    batch)."""
    if placement != "colocated":
        kv_batch, ctx, tokens = pool_memory_args(phase, work)
        mems = memories_for(model, topo, stages, kv_batch, ctx, tokens, work.precision)
        passes = pool_passes(topo, work, phase)
        assert passes is not None  # only a colocated pool can fail to sustain its batch
        if len(passes[phase]) == 1:
            shape = passes[phase][0][1]
            return pipeline_cost(model, topo, stages, phase, shape, work.precision, mems,
                                 breakdown)
        # a prefill pool's TTFT: its pass and the server's handling of the request
        return weighted_pipeline_cost(model, topo, stages, passes[phase], work.precision, mems,
                                      breakdown)
    # Its DP ranks schedule alone (one DP degree per pipeline, as engines run it; the
    # widest where stages differ).
    passes = inflight(topo, work, max(s.dp for s in stages))[1]
    # A colocated pool holds both phases' needs: KV at full context, its largest step.
    kv_batch, ctx, tokens = pool_memory_args("colocated", work, largest_pass_tokens(passes))
    mems = memories_for(model, topo, stages, kv_batch, ctx, tokens, work.precision)
    return weighted_pipeline_cost(model, topo, stages, passes[phase], work.precision, mems,
                                  breakdown)


def evaluate(model: ModelSpec, topo: Topology, work: Workload, placement: str,
             pre: list[StagePlacement], dec: list[StagePlacement],
             replicas: tuple[int, int] = (1, 1)) -> Figures:
    """Every figure of a plan, from its stages and replica counts, by the cost model."""
    pools = {"prefill": pre, "decode": dec}
    stage_ms: dict[str, list[float]] = {}
    fractions: dict[str, list[float]] = {}
    bottlenecks: dict[str, list[str]] = {}
    phase_bn: dict[str, str] = {}
    times: dict[str, float] = {}
    slowest: dict[str, float] = {}
    floors: dict[str, float] = {}
    for ph, stages in pools.items():
        cost = phase_cost(model, topo, work, placement, ph, stages)
        times[ph] = cost.time_s
        floors[ph] = cost.floor_s
        slowest[ph] = cost.slowest_stage_s
        if ph == "prefill" and placement == "disaggregated":
            # what paces the pipelined pool: each stage's busy time, without the
            # handling of its requests (the API server's, beside the GPU's work)
            slowest[ph] = max(s.time_s - work.pb * request_host_s(topo, st)
                              for s, st in zip(cost.stages, stages))
        stage_ms[ph] = [s.time_s * 1e3 for s in cost.stages]
        fractions[ph] = [s.memory_fraction for s in cost.stages]
        bottlenecks[ph] = [s.bottleneck for s in cost.stages]
        phase_bn[ph] = cost.bottleneck
    kv_s = 0.0
    if placement == "disaggregated":
        dec_kinds = sorted({s.kind for s in dec})
        kv_s = max(kv_stage_time_s(model, topo, work, st.end - st.first, st.size, st.kind, kd)
                   for st in pre for kd in dec_kinds)
    ttft = times["prefill"] + kv_s
    tpot = times["decode"]
    e2e = ttft + (work.osl - 1) * tpot
    y_pre, y_dec = replicas
    B, P = work.batch, work.pb
    if placement == "colocated":
        # In-flight batching: B slots, each held for a request's TTFT and osl - 1 steps
        # (Little's law; counting the TTFT's wait for the step in progress as held is
        # conservative by that wait over e2e). prefill_batch does not apply here.
        rate = y_pre * B / e2e
        phase_rate = {"prefill": rate, "decode": rate}
        busy = [a + (work.osl - 1) * b for a, b in zip(stage_ms["prefill"], stage_ms["decode"])]
        bubble = 1 - sum(busy) / len(busy) / (e2e * 1e3)
        bubbles = {"prefill": bubble, "decode": bubble}
    else:
        # The pools work on different batches at once: prompts enter the prefill pipeline
        # every slowest-stage time; the decode pool serves one batch for osl steps. The
        # prompts' KV crosses from pool to pool within the link budget.
        phase_rate = {"prefill": y_pre * P / slowest["prefill"],
                      "decode": y_dec * B / (work.osl * tpot)}
        link = kv_link_bytes_per_s(topo, pre, dec, replicas)
        per_request = kv_stage_bytes(model, work, model.num_layers) / P
        rate = min(*phase_rate.values(), link / per_request)
        bubbles = {"prefill": 1 - _mean(stage_ms["prefill"]) / max(stage_ms["prefill"]),
                   "decode": 1 - _mean(stage_ms["decode"]) / (tpot * 1e3)}
    return Figures(
        ttft_ms=ttft * 1e3, tpot_ms=tpot * 1e3, e2e_ms=e2e * 1e3, kv_transfer_ms=kv_s * 1e3,
        throughput_tokens_per_s=rate * work.osl, requests_per_s=rate,
        phase_requests_per_s=phase_rate, bubble_fraction=bubbles,
        prefill_ms=times["prefill"] * 1e3,
        stage_ms=stage_ms, stage_fraction=fractions, stage_bottleneck=bottlenecks,
        phase_bottleneck=phase_bn,
        ttft_floor_ms=floors["prefill"] * 1e3, tpot_floor_ms=floors["decode"] * 1e3,
        tokens_per_s_per_device=rate * work.osl / deployment_devices(placement, pre, dec,
                                                                     replicas),
        tokens_per_s_per_user=1.0 / tpot,
    )


def deployment_devices(placement: str, pre: list[StagePlacement], dec: list[StagePlacement],
                       replicas: tuple[int, int]) -> int:
    """Devices of the whole deployment: every replica of each pool (one pool when
    colocated)."""
    n_pre = replicas[0] * sum(s.size for s in pre)
    return n_pre if placement == "colocated" else n_pre + replicas[1] * sum(s.size for s in dec)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)
