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
from autoplan.cost.evaluate import Figures, evaluate
from autoplan.errors import InputError
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
    errors += _figures_match(plan, fig)
    errors += rules.figures(fig, plan.inputs, plan.placement, plan.devices)
    used = len(_devices(plan.prefill) | _devices(plan.decode))
    if plan.devices != used:
        errors.append(f"figures: devices {plan.devices} != {used} devices listed")
    return Report(not errors, errors, fig)


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
    domain_of = rules.domain_map(ctx.topo)
    for name, stages in (("prefill", ctx.pre), ("decode", ctx.dec)):
        phase = plan.phase(name)
        for k, s in enumerate(phase.stages):
            if s.index != k:
                errors.append(f"stage order: {name} stage {k} has index {s.index}")
            if s.tp * s.attention_dp != len(s.devices):
                dp = f" x attention_dp {s.attention_dp}" if s.attention_dp > 1 else ""
                errors.append(f"TP: {name} stage {k} has tp {s.tp}{dp} but {len(s.devices)} "
                              f"devices")
        errors += rules.pipeline(name, ctx.model, ctx.topo, stages, domain_of)
    for name in ("prefill", "decode"):
        phase = plan.phase(name)
        if phase.replica_devices and phase.replica_devices[0] != [s.devices for s in phase.stages]:
            errors.append(f"replicas: {name} replica 0 devices differ from its stages' devices")
        errors += rules.uniform_tp(name, ctx.topo, [s.device_kind for s in phase.stages],
                                   [s.tp for s in phase.stages], plan.inputs.engine)
        errors += rules.engine_parallelism(name, ctx.topo, ctx.pre if name == "prefill"
                                           else ctx.dec, plan.inputs.engine)
        errors += rules.disaggregated_pp(name, ctx.topo, [s.device_kind for s in phase.stages],
                                         plan.placement, plan.inputs.engine)
        errors += rules.replicas(name, ctx.topo, [s.device_kind for s in phase.stages],
                                 [s.tp for s in phase.stages], phase.replica_devices,
                                 phase.replicas, domain_of,
                                 [s.attention_dp for s in phase.stages])
    same = (ctx.pre == ctx.dec
            and plan.prefill.replica_devices == plan.decode.replica_devices)
    errors += rules.pools(plan.placement, _devices(plan.prefill), _devices(plan.decode), same)
    errors += rules.requested_placement(plan.inputs.placement, plan.placement)
    return errors


def _figures_match(plan: Plan, fig: Figures) -> list[str]:
    """The plan's figures are the cost model's."""
    errors: list[str] = []
    for name in ("prefill", "decode"):
        phase = plan.phase(name)
        for s, ms, frac, bn in zip(phase.stages, fig.stage_ms[name], fig.stage_fraction[name],
                                   fig.stage_bottleneck[name]):
            if not _close(s.time_ms, ms):
                errors.append(f"figures: {name} stage {s.index} time_ms {s.time_ms} != {ms}")
            if not _close(s.memory_fraction, frac):
                errors.append(f"figures: {name} stage {s.index} memory_fraction differs")
            if s.bottleneck != bn:
                errors.append(f"figures: {name} stage {s.index} bottleneck {s.bottleneck} != {bn}")
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
    for name in ("prefill", "decode"):
        phase = plan.phase(name)
        if not _close(phase.requests_per_s, fig.phase_requests_per_s[name]):
            errors.append(f"figures: {name} requests_per_s {phase.requests_per_s} != recomputed "
                          f"{fig.phase_requests_per_s[name]}")
        if not _close(phase.bubble_fraction, fig.bubble_fraction[name]):
            errors.append(f"figures: {name} bubble_fraction differs")
    return errors
