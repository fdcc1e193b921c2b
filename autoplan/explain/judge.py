"""Pricing and judging one alternative: its replica counts, figures, the rules it breaks,
its verdict and the reason.

Replicas. A ``latency`` plan is one replica and so is each alternative. For the
``throughput`` and ``devices`` objectives an alternative is a replica *design* (its
prefill and decode stage lists) deployed by the planner's own rule
(:class:`autoplan.search.replicas.Counts`): ``throughput`` takes the replica counts with
the highest requests/s the topology's devices (counted per device kind; disaggregated
pools share the inventory) and the device budget allow, then the fewest devices;
``devices`` takes the fewest replicas whose rate reaches ``request_rate``. The first
replica is placed on concrete devices; further replicas are only counted. Figures are
the validator's ``evaluate(..., replicas=(y_prefill, y_decode))``, and the rules the
validator's (:mod:`autoplan.rules.rules`), the device budget and the request rate among
them.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from autoplan.cost.evaluate import evaluate
from autoplan.cost.pipeline import StagePlacement
from autoplan.explain.context import Context, compare, cost_terms, margin, unit, value
from autoplan.explain.model import TABLE_TOL, Alternative, StageRef, Verdict
from autoplan.explain.wording import cost_reason, inventory_text, use_text
from autoplan.rules import rules
from autoplan.search.assign import StageSpec, place
from autoplan.search.counts import Counts, kv_link_rate, requested


def deploy(ctx: Context, placement: str, pre: list[StagePlacement],
           dec: list[StagePlacement]) -> tuple[tuple[int, int], list[str]]:
    """Replica counts of this design as the planner chooses them, and violations the
    figures' rules cannot see (one replica beyond the inventory).

    Per-replica rates come from one ``evaluate`` at (1, 1); they scale linearly with the
    replicas, the KV link with the smaller pool's devices. Where the requested rate is
    out of reach (the inventory, the budget), the counts are the most requests/s there
    are, and the ``request rate:`` rule rules the alternative out.
    """
    i = ctx.plan.inputs
    one = evaluate(ctx.model, ctx.topo, ctx.work, placement, pre, dec, (1, 1))
    kinds = sorted(ctx.inventory)
    caps = np.array([ctx.inventory[k] for k in kinds], dtype=np.int64)
    budget = i.max_devices if i.max_devices is not None else int(caps.sum())

    def usage(stages: list[StagePlacement]) -> np.ndarray:
        return np.array([sum(s.size for s in stages if s.kind == k) for k in kinds],
                        dtype=np.int64)

    rp = Fraction(one.phase_requests_per_s["prefill"])
    if placement == "colocated":
        u = usage(pre)
        counts = Counts((rp, rp), (u, u), caps, budget, colocated=True)
    else:
        link = kv_link_rate(ctx.topo, ctx.model, ctx.work, {s.kind for s in pre},
                            {s.kind for s in dec})
        counts = Counts((rp, Fraction(one.phase_requests_per_s["decode"])),
                        (usage(pre), usage(dec)), caps, budget, link)
    lam = requested(i.request_rate)
    if ctx.objective == "devices" and lam is not None:
        reps = counts.fewest(lam)
        if counts.fits(*reps):
            return reps, []
    got = counts.most()
    if got is not None:
        return got[0], []
    if counts.within_caps(1, 1):  # over the budget: the device budget rule says so
        return (1, 1), []
    use = {k: int(n) for k, n in zip(kinds, counts.usage[0] + (0 if counts.colocated else
                                                               counts.usage[1])) if n}
    which = "one replica" if placement == "colocated" else "one prefill and one decode replica"
    return (1, 1), [f"devices: {which} need{'s' if placement == 'colocated' else ''} "
                    f"{use_text(use)}; the topology has {inventory_text(ctx, use)}"]


def broken_rules(ctx: Context, placement: str, pre: list[StagePlacement],
                 dec: list[StagePlacement], fig, devices: int) -> list[str]:
    """The validator's rules on the alternative's first replica and its deployment."""
    i = ctx.plan.inputs
    domain_of = rules.domain_map(ctx.topo)
    pipelines = [("prefill", pre)] if placement == "colocated" else [("prefill", pre),
                                                                      ("decode", dec)]
    errs: list[str] = []
    for name, stages in pipelines:
        errs += rules.pipeline(name, ctx.model, ctx.topo, stages, domain_of)
        errs += rules.uniform_tp(name, ctx.topo, [s.kind for s in stages],
                                 [s.tp for s in stages], i.engine)
        errs += rules.engine_parallelism(name, ctx.topo, stages, i.engine)
        errs += rules.disaggregated_pp(name, ctx.topo, [s.kind for s in stages], placement,
                                       i.engine)
    errs += rules.pools(placement, _devices(pre), _devices(dec), pre == dec)
    errs += rules.requested_placement(i.placement, placement)
    return errs + rules.figures(fig, i, placement, devices)


def _devices(stages: list[StagePlacement]) -> set[str]:
    return {d for s in stages for d in s.devices}


def deployment_devices(placement: str, pre: list[StagePlacement],
                       dec: list[StagePlacement], reps: tuple[int, int]) -> int:
    """Devices of all replicas: the first replica's (its pools may overlap when it is
    ruled out) and the further replicas' copies."""
    first = len(_devices(pre) | _devices(dec))
    if placement == "colocated":
        return first * reps[0]
    return first + (reps[0] - 1) * len(_devices(pre)) + (reps[1] - 1) * len(_devices(dec))


def _refs(stages: list[StagePlacement]) -> list[StageRef]:
    return [StageRef(layers=(s.first, s.end), device_kind=s.kind, tp=s.tp,
                     devices=list(s.devices), ep=s.ep, attention_dp=s.dp) for s in stages]


def judge(ctx: Context, name: str, description: str, placement: str,
          pre: list[StagePlacement] | None, dec: list[StagePlacement] | None,
          violations: list[str]) -> Alternative:
    """Price a placed alternative against the plan and give its verdict."""
    objective = ctx.objective
    if pre is None or dec is None:
        reason = violations[0] if violations else "devices: cannot be placed"
        return Alternative(name=name, description=description, placement=placement,
                           verdict="ruled out", reason=reason, violations=violations)
    reps, count_errs = (1, 1), []
    if ctx.replicated:
        reps, count_errs = deploy(ctx, placement, pre, dec)
    fig = evaluate(ctx.model, ctx.topo, ctx.work, placement, pre, dec, reps)
    terms = cost_terms(ctx.model, ctx.topo, ctx.work, placement, pre, dec)
    devices = deployment_devices(placement, pre, dec, reps)
    violations = list(dict.fromkeys(
        violations + count_errs + broken_rules(ctx, placement, pre, dec, fig, devices)))
    base_v = ctx.base_value
    v = value(objective, fig, devices)
    delta = v - base_v
    cost = cost_reason(ctx, fig, terms, placement, reps, devices)
    verdict: Verdict
    if violations:
        verdict = "ruled out"
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        reason = f"{violations[0]}{more}; otherwise {cost}"
    else:
        verdict = compare(objective, v, base_v, fig.requests_per_s, ctx.base.requests_per_s)
        if verdict == "equal":
            reason = f"ties the plan on the {objective} objective; {cost}"
        elif verdict == "better":
            by = (f"{abs(delta):.6g} {unit(objective)}" if delta else
                  f"{fig.requests_per_s - ctx.base.requests_per_s:.6g} requests/s at equal devices")
            m = margin(objective, v, base_v) if objective != "devices" else math.inf
            why = ("within the planner's rounding of stage times up to whole microseconds "
                   f"({TABLE_TOL:.1%}): not evidence against its optimality"
                   if m <= TABLE_TOL else
                   "the plan is not optimal under the validator's figures")
            reason = (f"beats the plan on the {objective} objective by {by} and breaks no "
                      f"rule: {why}; {cost}")
        else:
            reason = cost
    return Alternative(
        name=name, description=description, placement=placement, ttft_ms=fig.ttft_ms,
        tpot_ms=fig.tpot_ms, e2e_ms=fig.e2e_ms, kv_transfer_ms=fig.kv_transfer_ms,
        throughput_tokens_per_s=fig.throughput_tokens_per_s,
        requests_per_s=fig.requests_per_s, devices=devices, replicas=reps, delta=delta,
        verdict=verdict, reason=reason, violations=violations, prefill=_refs(pre),
        decode=_refs(dec))


def price(ctx: Context, name: str, description: str, placement: str, pre: list[StageSpec],
          dec: list[StageSpec]) -> Alternative:
    """Place an alternative's stages on devices (the planner's allocator), then judge it."""
    placed, violations = place(ctx.topo, [pre, dec])
    p, d = (placed if placed is not None else (None, None))
    return judge(ctx, name, description, placement, p, d, violations)
