"""``autoplan explain``: why a plan wins, by pricing its nearest alternatives.

The plan is validated first (:func:`autoplan.rules.validate.check`): an invalid plan is
refused, naming its first broken rule. Every alternative (:mod:`.neighbours`) carries
its figures, the difference on the plan's objective, a verdict (``worse``, ``ruled
out``, ``equal``; ``better`` would mean the plan is not optimal under the validator's
figures) and a reason: the rule that rules it out, or the cost terms (compute / memory /
communication of each phase, KV hand-off) that moved (:mod:`.judge`).
"""

from __future__ import annotations

from pathlib import Path

from autoplan.errors import InputError
from autoplan.explain.context import Context, unit
from autoplan.explain.model import Explanation
from autoplan.explain.neighbours import alternatives
from autoplan.explain.wording import headline, inventory_text, rep_label
from autoplan.inputs.request import MAX_TIME_LIMIT_S
from autoplan.plan_schema import Plan
from autoplan.rules.validate import check


def explain(plan: Plan | dict | str | Path, *, solve: bool = True,
            time_limit_s: float = 10.0) -> Explanation:
    """Price the plan's nearest alternatives and say why each loses (or ties).

    ``solve`` also re-solves the other placement with the planner (seconds). Raises
    InputError for a plan that does not validate.
    """
    if not 0 < time_limit_s <= MAX_TIME_LIMIT_S:  # NaN too
        raise InputError(f"--time-limit-s must be in (0, {MAX_TIME_LIMIT_S}] seconds, "
                         f"got {time_limit_s!r}")
    plan = check(plan)
    ctx = Context.of(plan)
    notes: list[str] = []
    alts = alternatives(ctx, solve, time_limit_s, notes)
    i = plan.inputs
    if ctx.replicated:
        how = ("the highest requests/s, then the fewest devices" if i.objective == "throughput"
               else f"the fewest devices reaching {i.request_rate:g} requests/s")
        budget = f", within the budget of {i.max_devices}" if i.max_devices is not None else ""
        notes.append(f"alternatives are whole deployments: each design's replica counts are "
                     f"chosen as the planner does ({how}), with the devices of each kind in "
                     f"the topology ({inventory_text(ctx, ctx.inventory)}) as the inventory"
                     f"{budget}")
    if plan.more_designs:
        notes.append(f"the plan deploys {len(plan.more_designs)} more replica design(s) "
                     f"beside its first (more_designs); alternatives vary the first designs "
                     f"and deploy one design per pool, against the whole deployment")
    elif ctx.replicas != (1, 1) and not ctx.replicated:
        notes.append("alternatives are priced per replica, against the plan's "
                     f"{rep_label(plan.placement, ctx.replicas)}")
    return Explanation(
        model=i.model, topology=i.topology, placement=plan.placement,
        objective=i.objective, objective_unit=unit(i.objective),
        objective_value=ctx.base_value,
        ttft_ms=plan.ttft_ms, tpot_ms=plan.tpot_ms, e2e_ms=plan.e2e_ms,
        throughput_tokens_per_s=plan.throughput_tokens_per_s,
        requests_per_s=plan.requests_per_s, devices=plan.devices, replicas=ctx.replicas,
        headline=headline(ctx, alts), alternatives=alts, notes=notes)
