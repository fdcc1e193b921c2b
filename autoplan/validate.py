"""Recompute a plan's figures from the cost model alone, and check its rules.

No solver here: the validator rebuilds the model and topology named by the plan's
inputs, prices every stage with :mod:`autoplan.pipeline`, and checks layer coverage,
device disjointness, TP groups inside fast domains, memory headroom and SLOs. The
planner fills its figures with :func:`evaluate`, so a fresh plan validates exactly; a
tampered plan fails with a message naming the broken rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from autoplan.catalog import load_model, load_topology
from autoplan.cost import Precision, check_tp, phase_shape
from autoplan.errors import InputError, first_error
from autoplan.model import ModelSpec
from autoplan.pipeline import PhaseCost, StagePlacement, memories_for, pipeline_cost
from autoplan.plan_schema import Plan
from autoplan.tables import (
    Workload,
    kv_link_bandwidth,
    kv_stage_bytes,
    kv_stage_time_s,
    pool_memory_args,
)
from autoplan.topology import Topology


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


def workload_of(plan: Plan) -> Workload:
    i = plan.inputs
    return Workload(i.isl, i.osl, i.batch, Precision(i.dtype, "bf16", i.kv_dtype),
                    i.max_memory_fraction, i.prefill_batch)


def placements(plan_phase) -> list[StagePlacement]:
    return [StagePlacement(s.layers[0], s.layers[1], s.device_kind, tuple(s.devices))
            for s in plan_phase.stages]


def phase_cost(model: ModelSpec, topo: Topology, work: Workload, placement: str, phase: str,
               stages: list[StagePlacement], breakdown: bool = False) -> PhaseCost:
    """One phase's pass through its pipeline, with the memory its pool holds."""
    pool = "colocated" if placement == "colocated" else phase
    kv_batch, ctx, tokens = pool_memory_args(pool, work)
    # A colocated pool holds both phases' needs: KV at full context, prompt activations.
    mems = memories_for(model, topo, stages, kv_batch, ctx, tokens, work.precision)
    shape = phase_shape(phase, work.phase_batch(phase), work.isl, work.osl)
    return pipeline_cost(model, topo, stages, phase, shape, work.precision, mems, breakdown)


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
    for ph, stages in pools.items():
        cost = phase_cost(model, topo, work, placement, ph, stages)
        times[ph] = cost.time_s
        slowest[ph] = cost.slowest_stage_s
        stage_ms[ph] = [s.time_s * 1e3 for s in cost.stages]
        fractions[ph] = [s.memory_fraction for s in cost.stages]
        bottlenecks[ph] = [s.bottleneck for s in cost.stages]
        phase_bn[ph] = cost.bottleneck
    kv_s = 0.0
    if placement == "disaggregated":
        dec_kinds = sorted({s.kind for s in dec})
        kv_s = max(kv_stage_time_s(model, topo, work, st.end - st.first, st.tp, st.kind, kd)
                   for st in pre for kd in dec_kinds)
    ttft = times["prefill"] + kv_s
    tpot = times["decode"]
    e2e = ttft + (work.osl - 1) * tpot
    y_pre, y_dec = replicas
    B, P = work.batch, work.pb
    if placement == "colocated":
        # Shared devices: per request, its share of a prompt pass and of osl - 1 steps.
        # (With prefill_batch = batch: batch / e2e, one batch after another.)
        rate = y_pre / (times["prefill"] / P + (work.osl - 1) * tpot / B)
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
    )


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def kv_link_bytes_per_s(topo: Topology, pre: list[StagePlacement], dec: list[StagePlacement],
                        replicas: tuple[int, int]) -> float:
    """KV bandwidth between the pools: every prefill device sends and every decode device
    receives at its kinds' per-device path bandwidth; the smaller side bounds the flow."""
    bw = kv_link_bandwidth(topo, {s.kind for s in pre}, {s.kind for s in dec})
    return min(replicas[0] * sum(s.tp for s in pre), replicas[1] * sum(s.tp for s in dec)) * bw


@dataclass
class Report:
    ok: bool
    errors: list[str]
    figures: Figures | None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def validate(plan: Plan | dict | str | Path) -> Report:
    """Check a plan's rules and recompute its figures; ``ok`` when all hold."""
    plan = _as_plan(plan)
    i = plan.inputs
    model = load_model(i.model)
    topo = load_topology(i.topology, i.calibration)
    work = workload_of(plan)
    errors: list[str] = []
    pre, dec = placements(plan.prefill), placements(plan.decode)
    domain_of = {d: dom.index for dom in topo.fast_domains for d in dom.devices}
    for name, phase, stages in (("prefill", plan.prefill, pre), ("decode", plan.decode, dec)):
        errors += _check_phase(name, model, topo, phase, stages, domain_of)
    for name, phase in (("prefill", plan.prefill), ("decode", plan.decode)):
        errors += _check_replicas(name, topo, phase, domain_of)
    pre_devs = {d for r in plan.prefill.replica_devices for g in r for d in g}
    dec_devs = {d for r in plan.decode.replica_devices for g in r for d in g}
    if plan.placement == "disaggregated" and pre_devs & dec_devs:
        errors.append(f"device disjointness: {sorted(pre_devs & dec_devs)[0]} serves both pools")
    if plan.placement == "colocated" and (
            pre != dec or plan.prefill.replica_devices != plan.decode.replica_devices):
        errors.append("colocated placement: prefill and decode stages must be the same")
    if errors:
        return Report(False, errors, None)
    fig = evaluate(model, topo, work, plan.placement, pre, dec,
                   (plan.prefill.replicas, plan.decode.replicas))
    for name, phase in (("prefill", plan.prefill), ("decode", plan.decode)):
        for s, ms, frac, bn in zip(phase.stages, fig.stage_ms[name], fig.stage_fraction[name],
                                   fig.stage_bottleneck[name]):
            if not _close(s.time_ms, ms):
                errors.append(f"figures: {name} stage {s.index} time_ms {s.time_ms} != {ms}")
            if not _close(s.memory_fraction, frac):
                errors.append(f"figures: {name} stage {s.index} memory_fraction differs")
            if frac > i.max_memory_fraction + 1e-12:
                errors.append(f"memory headroom: {name} stage {s.index} uses {frac:.1%} of "
                              f"device memory, above {i.max_memory_fraction:.0%}")
            if s.bottleneck != bn:
                errors.append(f"figures: {name} stage {s.index} bottleneck {s.bottleneck} != {bn}")
    for field in ("ttft_ms", "tpot_ms", "e2e_ms", "kv_transfer_ms", "throughput_tokens_per_s",
                  "requests_per_s"):
        if not _close(getattr(plan, field), getattr(fig, field)):
            errors.append(f"figures: {field} {getattr(plan, field)} != recomputed {getattr(fig, field)}")
    for name, phase in (("prefill", plan.prefill), ("decode", plan.decode)):
        if not _close(phase.requests_per_s, fig.phase_requests_per_s[name]):
            errors.append(f"figures: {name} requests_per_s {phase.requests_per_s} != recomputed "
                          f"{fig.phase_requests_per_s[name]}")
        if not _close(phase.bubble_fraction, fig.bubble_fraction[name]):
            errors.append(f"figures: {name} bubble_fraction differs")
    if i.ttft_slo_ms is not None and fig.ttft_ms > i.ttft_slo_ms * (1 + 1e-9):
        errors.append(f"SLO: TTFT {fig.ttft_ms:.2f} ms exceeds {i.ttft_slo_ms} ms")
    if i.tpot_slo_ms is not None and fig.tpot_ms > i.tpot_slo_ms * (1 + 1e-9):
        errors.append(f"SLO: TPOT {fig.tpot_ms:.2f} ms exceeds {i.tpot_slo_ms} ms")
    used = len(pre_devs | dec_devs)
    if plan.devices != used:
        errors.append(f"figures: devices {plan.devices} != {used} devices listed")
    return Report(not errors, errors, fig)


def _check_phase(name: str, model: ModelSpec, topo: Topology, phase,
                 stages: list[StagePlacement], domain_of: dict[str, int]) -> list[str]:
    errs: list[str] = []
    expect = 0
    for s in stages:
        if s.first != expect or s.end <= s.first:
            errs.append(f"layer coverage: {name} stage layers [{s.first}, {s.end}) do not "
                        f"continue from layer {expect}")
            return errs
        expect = s.end
    if expect != model.num_layers:
        errs.append(f"layer coverage: {name} stages end at layer {expect}, the model has "
                    f"{model.num_layers}")
    seen: set[str] = set()
    for k, (s, st) in enumerate(zip(phase.stages, stages)):
        if s.index != k:
            errs.append(f"stage order: {name} stage {k} has index {s.index}")
        if s.tp != len(s.devices):
            errs.append(f"TP: {name} stage {k} has tp {s.tp} but {len(s.devices)} devices")
        try:
            check_tp(model, s.tp)
        except InputError as e:
            errs.append(f"TP: {name} stage {k}: {e}")
        group_errs, known = _check_group(name, f"stage {k}", s.devices, s.device_kind, topo,
                                         domain_of, seen)
        errs += group_errs
        if not known:
            return errs
    return errs


def _check_group(name: str, where: str, devices: list[str], kind: str, topo: Topology,
                 domain_of: dict[str, int], seen: set[str]) -> tuple[list[str], bool]:
    """One TP group: known devices of its kind, none used twice in the phase (``seen``
    collects them), all inside one fast domain. The flag is False when a device is
    unknown (nothing more can be checked)."""
    errs: list[str] = []
    for d in devices:
        if d not in domain_of:
            return errs + [f"devices: {name} {where} names unknown device {d}"], False
        if topo.device_kind_of(d) != kind:
            errs.append(f"devices: {d} is not a {kind}")
        if d in seen:
            errs.append(f"device disjointness: {d} is used twice in {name}")
        seen.add(d)
    if len({domain_of[d] for d in devices}) > 1:
        errs.append(f"TP inside fast domains: {name} {where} spans several fast domains")
    return errs, True


def _check_replicas(name: str, topo: Topology, phase, domain_of: dict[str, int]) -> list[str]:
    """Every replica: the first replica's stages again, on devices of their own."""
    errs: list[str] = []
    if len(phase.replica_devices) != phase.replicas:
        return [f"replicas: {name} lists devices of {len(phase.replica_devices)} replicas, "
                f"not {phase.replicas}"]
    if phase.replica_devices and phase.replica_devices[0] != [s.devices for s in phase.stages]:
        errs.append(f"replicas: {name} replica 0 devices differ from its stages' devices")
    seen: set[str] = set()
    for r, groups in enumerate(phase.replica_devices):
        if len(groups) != len(phase.stages):
            errs.append(f"replicas: {name} replica {r} has {len(groups)} stages, "
                        f"not {len(phase.stages)}")
            continue
        for k, (g, s) in enumerate(zip(groups, phase.stages)):
            if len(g) != s.tp:
                errs.append(f"TP: {name} replica {r} stage {k} has {len(g)} devices, not {s.tp}")
            group_errs, known = _check_group(name, f"replica {r} stage {k}", g, s.device_kind,
                                             topo, domain_of, seen)
            errs += group_errs
            if not known:
                return errs
    return errs


def _as_plan(plan: Plan | dict | str | Path) -> Plan:
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, Path)):
        p = Path(plan)
        try:
            plan = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise InputError(f"cannot read plan {str(p)!r}: {e.__class__.__name__}") from None
        except json.JSONDecodeError as e:
            raise InputError(f"plan {str(p)!r} is not valid JSON: {e.msg}") from None
        except UnicodeDecodeError:
            raise InputError(f"plan {str(p)!r} is not UTF-8 text") from None
        except (ValueError, RecursionError) as e:  # over-long integers, deep nesting
            raise InputError(f"plan {str(p)!r} is not a plan: {e.__class__.__name__}") from None
    try:
        return Plan.model_validate(plan)
    except ValidationError as e:
        raise InputError(f"plan: {first_error(e)}") from None
