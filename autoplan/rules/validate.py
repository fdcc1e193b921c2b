"""Recompute a plan's figures from the cost model alone, and check its rules.

No solver here: the validator rebuilds the model and topology named by the plan's
inputs, prices every stage with :mod:`autoplan.cost.pipeline`, and checks layer coverage,
device disjointness, TP groups inside fast domains, memory headroom and SLOs. The
planner fills its figures with :func:`evaluate`, so a fresh plan validates exactly; a
tampered plan fails with a message naming the broken rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from autoplan.catalog import load_model, load_topology
from autoplan.cost.evaluate import Figures, evaluate, placements, workload_of
from autoplan.cost.pipeline import (
    StagePlacement,
)
from autoplan.cost.roofline import check_tp
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.plan_schema import Plan


@dataclass
class Report:
    ok: bool
    errors: list[str]
    figures: Figures | None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def validate(plan: Plan | dict | str | Path) -> Report:
    """Check a plan's rules and recompute its figures; ``ok`` when all hold."""
    plan = Plan.load(plan)
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
