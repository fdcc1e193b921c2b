"""Recompute a plan's figures from the cost model alone, and check its rules.

No solver here: the validator rebuilds the model and topology the plan records
(:func:`autoplan.cost.context.plan_context`), prices it with
:func:`autoplan.cost.evaluate.evaluate` and checks every rule of
:mod:`autoplan.rules.rules`: layer coverage, device disjointness, TP groups inside fast
domains, replicas, memory headroom, SLOs, the device budget and the request rate. The
planner fills its figures with the same ``evaluate``, so a fresh plan validates
exactly; a tampered plan fails with a message naming the broken rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from autoplan.cost.context import PlanContext, plan_context
from autoplan.cost.deployment import plan_figures
from autoplan.cost.evaluate import Figures, evaluate, placements
from autoplan.errors import InputError
from autoplan.inputs.context_length import context_needed
from autoplan.plan_schema import Plan
from autoplan.rules import rules


@dataclass
class Report:
    ok: bool
    errors: list[str]
    figures: Figures | None

    def summary(self) -> str:
        """One line: the first broken rule and how many more."""
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"plan is invalid: {self.errors[0]}{more}" if self.errors else "plan is valid"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def validate(plan: Plan | dict | str | Path) -> Report:
    """Check a plan's rules and recompute its figures; ``ok`` when all hold."""
    plan = Plan.load(plan)
    ctx = plan_context(plan)
    errors = structure(plan, ctx)
    if errors:
        return Report(False, errors, None)
    fig = evaluate(ctx.model, ctx.topo, ctx.work, plan.placement, ctx.pre, ctx.dec,
                   (plan.prefill.replicas, plan.decode.replicas))
    if plan.more_designs:
        fig, more_errors = _more_figures(plan, ctx, fig)
        errors += more_errors
    errors += _figures_match(plan, fig)
    errors += rules.figures(fig, plan.inputs, plan.placement, plan.devices)
    # a colocated design's prefill and decode views list the same devices: count one
    listed = [d for ph in _phase_plans(plan, colocated_once=plan.placement == "colocated")
              for r in ph.replica_devices for g in r for d in g]
    used = len(set(listed))
    if used != len(listed) and plan.more_designs:
        errors.append("device disjointness: a device serves two designs' replicas")
    if plan.devices != used:
        errors.append(f"figures: devices {plan.devices} != {used} devices listed")
    return Report(not errors, errors, fig)


def _phase_plans(plan: Plan, colocated_once: bool = False) -> list:
    """Every PhasePlan of the plan: the first designs' and those of more designs
    (``colocated_once``: a colocated design's prefill view only)."""
    out = [plan.prefill] if colocated_once else [plan.prefill, plan.decode]
    for d in plan.more_designs:
        out += [ph for ph in ((d.prefill,) if colocated_once else (d.prefill, d.decode))
                if ph is not None]
    return out


def _more_figures(plan: Plan, ctx: PlanContext, fig: Figures) -> tuple[Figures, list[str]]:
    """The deployment's figures with more designs (:func:`plan_figures`), and the errors
    of the more designs' own figures against what the plan records."""
    try:
        fig, others, figs = plan_figures(plan, ctx, fig)
    except InputError as e:
        return fig, [str(e)]
    errors: list[str] = []
    for k, (d, f, rec) in enumerate(zip(others, figs, plan.more_designs)):
        name = f"more_designs[{k}]"
        if rec.ttft_ms is not None and not _close(rec.ttft_ms, f.ttft_ms):
            errors.append(f"figures: {name} ttft_ms {rec.ttft_ms} != {f.ttft_ms}")
        if rec.tpot_ms is not None and not _close(rec.tpot_ms, f.tpot_ms):
            errors.append(f"figures: {name} tpot_ms {rec.tpot_ms} != {f.tpot_ms}")
        for phase, ph in (("prefill", rec.prefill), ("decode", rec.decode)):
            if ph is not None:
                errors += _phase_match(f"{name} {phase}", phase, ph, f)
        errors += rules.design_figures(f"{d.pool} design {k + 2}", f, plan.inputs)
    return fig, errors


def _phase_match(name: str, phase: str, ph, fig: Figures) -> list[str]:
    """One phase's recorded stage figures, rate and bubbles are the cost model's."""
    errors = []
    for s, ms, frac, bn in zip(ph.stages, fig.stage_ms[phase], fig.stage_fraction[phase],
                               fig.stage_bottleneck[phase]):
        if not _close(s.time_ms, ms):
            errors.append(f"figures: {name} stage {s.index} time_ms {s.time_ms} != {ms}")
        if not _close(s.memory_fraction, frac):
            errors.append(f"figures: {name} stage {s.index} memory_fraction differs")
        if s.bottleneck != bn:
            errors.append(f"figures: {name} stage {s.index} bottleneck {s.bottleneck} != {bn}")
    time_ms = fig.prefill_ms if phase == "prefill" else fig.tpot_ms
    if not _close(ph.time_ms, time_ms):
        errors.append(f"figures: {name} time_ms {ph.time_ms} != recomputed {time_ms}")
    if ph.bottleneck != fig.phase_bottleneck[phase]:
        errors.append(f"figures: {name} bottleneck {ph.bottleneck} != "
                      f"{fig.phase_bottleneck[phase]}")
    if ph.devices != sum(len(s.devices) for s in ph.stages):
        errors.append(f"figures: {name} devices {ph.devices} != "
                      f"{sum(len(s.devices) for s in ph.stages)} devices of its stages")
    if not _close(ph.requests_per_s, fig.phase_requests_per_s[phase]):
        errors.append(f"figures: {name} requests_per_s {ph.requests_per_s} != recomputed "
                      f"{fig.phase_requests_per_s[phase]}")
    if not _close(ph.bubble_fraction, fig.bubble_fraction[phase]):
        errors.append(f"figures: {name} bubble_fraction differs")
    return errors


def check(plan: Plan | dict | str | Path) -> Plan:
    """The plan, if it validates; else InputError naming its first broken rule (the
    check ``explain``, ``chart`` and ``export`` make before they read a plan)."""
    plan = Plan.load(plan)
    rep = validate(plan)
    if not rep.ok:
        raise InputError(rep.summary())
    return plan


def _devices(phase) -> set[str]:
    return {d for r in phase.replica_devices for g in r for d in g}


def structure(plan: Plan, ctx: PlanContext) -> list[str]:
    """The rules that need no pricing, over both phases and every replica."""
    errors: list[str] = []
    m, w = ctx.model, ctx.work
    if m.max_context is not None and context_needed(w.isl, w.osl) > m.max_context:
        errors.append(f"context: isl + osl = {w.isl + w.osl} tokens exceed the context of "
                      f"{m.name} ({m.max_context} tokens)")
    domain_of = rules.domain_map(ctx.topo)
    views = [("prefill", plan.prefill, ctx.pre), ("decode", plan.decode, ctx.dec)]
    for k, d in enumerate(plan.more_designs):
        for phase, ph in (("prefill", d.prefill), ("decode", d.decode)):
            if ph is not None:
                views.append((f"more_designs[{k}] {phase}", ph, placements(ph)))
        if (d.pool == "prefill") != (d.decode is None) or (d.pool == "decode") != (
                d.prefill is None) or (d.pool == "colocated") != (plan.placement == "colocated"):
            errors.append(f"designs: more_designs[{k}] is a {d.pool} design of a "
                          f"{plan.placement} plan with the wrong phases")
        elif d.pool == "colocated" and (
                [s.devices for s in d.prefill.stages] != [s.devices for s in d.decode.stages]
                or d.prefill.replica_devices != d.decode.replica_devices):
            errors.append(f"placement: more_designs[{k}] colocated prefill and decode stages "
                          f"must be the same")
        elif d.pool == "prefill" and not d.kv_to:
            errors.append(f"designs: more_designs[{k}] is a prefill design with no kv_to")
        elif (d.ttft_ms is None) == (d.pool != "decode") or (d.tpot_ms is None) == (
                d.pool != "prefill"):
            errors.append(f"designs: more_designs[{k}] lacks the TTFT / TPOT of its pool")
    if errors:
        return errors
    for name, phase, stages in views:
        for k, s in enumerate(phase.stages):
            if s.index != k:
                errors.append(f"stage order: {name} stage {k} has index {s.index}")
            if s.tp * s.attention_dp != len(s.devices):
                dp = f" x attention_dp {s.attention_dp}" if s.attention_dp > 1 else ""
                errors.append(f"TP: {name} stage {k} has tp {s.tp}{dp} but {len(s.devices)} "
                              f"devices")
        errors += rules.pipeline(name, ctx.model, ctx.topo, stages, domain_of)
    for name, phase, stages in views:
        if phase.replica_devices and phase.replica_devices[0] != [s.devices for s in phase.stages]:
            errors.append(f"replicas: {name} replica 0 devices differ from its stages' devices")
        errors += rules.uniform_tp(name, ctx.topo, [s.device_kind for s in phase.stages],
                                   [s.tp for s in phase.stages], plan.inputs.engine)
        errors += rules.engine_parallelism(name, ctx.topo, stages, plan.inputs.engine)
        errors += rules.disaggregated_pp(name, ctx.topo, [s.device_kind for s in phase.stages],
                                         plan.placement, plan.inputs.engine)
        errors += rules.replicas(name, ctx.topo, [s.device_kind for s in phase.stages],
                                 [s.tp for s in phase.stages], phase.replica_devices,
                                 phase.replicas, domain_of,
                                 [s.attention_dp for s in phase.stages])
    same = (ctx.pre == ctx.dec
            and plan.prefill.replica_devices == plan.decode.replica_devices)
    errors += rules.colocated_dp(ctx.pre, plan.placement)
    errors += rules.pools(plan.placement, _devices(plan.prefill), _devices(plan.decode), same)
    errors += rules.requested_placement(plan.inputs.placement, plan.placement)
    return errors


def _figures_match(plan: Plan, fig: Figures) -> list[str]:
    """The plan's figures are the cost model's."""
    errors: list[str] = []
    phases = [_phase_match(name, name, plan.phase(name), fig) for name in ("prefill", "decode")]
    # the stages' figures first, the phases' own after the plan's
    errors += [e for errs in phases for e in errs if " stage " in e]
    for field in ("ttft_ms", "tpot_ms", "e2e_ms", "kv_transfer_ms", "throughput_tokens_per_s",
                  "requests_per_s"):
        if not _close(getattr(plan, field), getattr(fig, field)):
            errors.append(f"figures: {field} {getattr(plan, field)} != recomputed "
                          f"{getattr(fig, field)}")
    for field in ("ttft_floor_ms", "tpot_floor_ms", "tokens_per_s_per_device",
                  "tokens_per_s_per_user"):  # absent in plans made before these figures
        if getattr(plan, field) is not None and not _close(getattr(plan, field),
                                                           getattr(fig, field)):
            errors.append(f"figures: {field} {getattr(plan, field)} != recomputed "
                          f"{getattr(fig, field)}")
    errors += [e for errs in phases for e in errs if " stage " not in e]
    return errors
