"""The plan's nearest alternatives: one edit of its stages each, no solver.

One TP step up or down, one stage more or less, colocated instead of disaggregated or
the reverse, another device kind, and for MoE models the other parallel layout on the
same devices (attention DP x EP instead of TP, or TP instead of DP x EP); each alternative's TP groups go on devices the plan
leaves free (the planner's allocator, :func:`autoplan.search.assign.place`). Optionally
the other placement is re-solved with the real planner for comparison.
"""

from __future__ import annotations

from autoplan.cost.evaluate import placements
from autoplan.cost.expert_parallel import check_ep
from autoplan.cost.pipeline import StagePlacement
from autoplan.cost.roofline import valid_tps
from autoplan.errors import AutoplanError, InfeasibleError
from autoplan.explain.context import Context
from autoplan.explain.judge import judge, price
from autoplan.explain.model import Alternative
from autoplan.explain.wording import tp_label
from autoplan.inputs.request import Request
from autoplan.search.assign import StageSpec
from autoplan.search.planner import plan as solve_plan


def alternatives(ctx: Context, solve: bool = True, time_limit_s: float = 10.0,
                 notes: list[str] | None = None) -> list[Alternative]:
    """Every neighbour of the plan, priced and judged (``solve``: and the re-solve)."""
    alts = (one_design(ctx) + tp_steps(ctx) + stage_steps(ctx) + placement_flip(ctx)
            + kind_moves(ctx) + parallel_flips(ctx))
    if solve:
        alts += resolve(ctx, time_limit_s, notes if notes is not None else [])
    return alts


def _keep(stages: list[StagePlacement]) -> list[StageSpec]:
    return [StageSpec(s.first, s.end, s.kind, s.tp, s.devices, s.dp, s.ep) for s in stages]


def _pools(ctx: Context) -> list[tuple[str, str]]:
    """(label, which pool) for the pools an edit can touch."""
    if ctx.plan.placement == "colocated":
        return [("", "colocated")]
    return [("prefill ", "prefill"), ("decode ", "decode")]


def _with(ctx: Context, pool: str, new: list[StageSpec]) -> tuple[list[StageSpec], list[StageSpec]]:
    if pool == "colocated":
        return new, new
    if pool == "prefill":
        return new, _keep(ctx.dec)
    return _keep(ctx.pre), new


def _stages_of(ctx: Context, pool: str) -> list[StagePlacement]:
    return ctx.dec if pool == "decode" else ctx.pre


def _weights(ctx: Context, pool: str) -> list[float]:
    """Each stage's share of the objective's latency: what a stage edit targets."""
    pre_ms, dec_ms = ctx.base.stage_ms["prefill"], ctx.base.stage_ms["decode"]
    osl = ctx.work.osl
    if pool == "colocated":
        return [a + (osl - 1) * b for a, b in zip(pre_ms, dec_ms)]
    return list(pre_ms if pool == "prefill" else dec_ms)


def tp_steps(ctx: Context) -> list[Alternative]:
    out = []
    valid = valid_tps(ctx.model, max(ctx.model.num_attention_heads, 1))
    for label, pool in _pools(ctx):
        stages = _stages_of(ctx, pool)
        for step, word in ((1, "up"), (-1, "down")):
            new = []
            for s in stages:
                cand = [t for t in valid if (t > s.tp if step > 0 else t < s.tp)]
                if not cand:
                    new = None
                    break
                t = min(cand) if step > 0 else max(cand)
                keep = s.devices[:t * s.dp] if step < 0 else None
                ep = s.ep if (t * s.dp) % s.ep == 0 else 1
                new.append(StageSpec(s.first, s.end, s.kind, t, keep, s.dp, ep))
            if new is None:
                continue  # no valid TP beyond the current one: not a neighbour
            pre, dec = _with(ctx, pool, new)
            name = f"{label}TP {word} ({tp_label(stages)}->{tp_label(new)})"
            desc = (f"every {pool} stage at the next valid TP {word}, same layer cuts"
                    + ("; stages keep a prefix of their devices" if step < 0 else
                       "; groups on free aligned blocks of one fast domain"))
            out.append(price(ctx, name, desc, ctx.plan.placement, pre, dec))
    return out


def parallel_flips(ctx: Context) -> list[Alternative]:
    """MoE models: every stage of a pool on its own devices in the other layout: attention
    DP x EP over all of them (TP 1 per rank) where the stages run TP, TP over all of them
    where they run DP / EP."""
    out: list[Alternative] = []
    if ctx.model.moe is None:
        return out
    for label, pool in _pools(ctx):
        stages = _stages_of(ctx, pool)
        to_tp = any(s.expert_parallel for s in stages)
        new = []
        for s in stages:
            tp, dp, ep = (s.size, 1, 1) if to_tp else (1, s.size, s.size)
            try:
                check_ep(ctx.model, tp, dp, ep)
            except AutoplanError:
                new = []
                break
            new.append(StageSpec(s.first, s.end, s.kind, tp, s.devices, dp, ep))
        if not new or all(n.tp == s.tp and n.dp == s.dp and n.ep == s.ep
                          for n, s in zip(new, stages)):
            continue
        pre, dec = _with(ctx, pool, new)
        what = ("TP over each stage's devices" if to_tp else
                "attention DP x EP over each stage's devices (TP 1 per rank)")
        out.append(price(ctx, f"{label}{tp_label(stages)} -> {tp_label(new)}",
                         f"every {pool} stage in {what}, same devices and cuts",
                         ctx.plan.placement, pre, dec))
    return out


def stage_steps(ctx: Context) -> list[Alternative]:
    out = []
    for label, pool in _pools(ctx):
        stages = _stages_of(ctx, pool)
        w = _weights(ctx, pool)
        # One stage more: split the slowest stage in halves; the second half on free devices.
        k = max(range(len(stages)), key=lambda j: (w[j], -j))
        s = stages[k]
        if s.end - s.first >= 2:
            mid = s.first + (s.end - s.first + 1) // 2
            new = _keep(stages)
            new[k:k + 1] = [StageSpec(s.first, mid, s.kind, s.tp, s.devices, s.dp, s.ep),
                            StageSpec(mid, s.end, s.kind, s.tp, None, s.dp, s.ep)]
            pre, dec = _with(ctx, pool, new)
            out.append(price(
                ctx, f"{label}one stage more ({len(stages)}->{len(stages) + 1})",
                f"split {pool} stage {k} (layers {s.first}-{s.end}, the slowest) at layer {mid}; "
                f"the second half on free {s.kind} devices at TP {s.tp}",
                ctx.plan.placement, pre, dec))
        # One stage less: merge the adjacent pair with the smallest combined time.
        if len(stages) >= 2:
            k = min(range(len(stages) - 1), key=lambda j: (w[j] + w[j + 1], j))
            a, b = stages[k], stages[k + 1]
            host = a if a.tp >= b.tp else b
            new = _keep(stages)
            new[k:k + 2] = [StageSpec(a.first, b.end, host.kind, host.tp, host.devices, host.dp,
                                      host.ep)]
            pre, dec = _with(ctx, pool, new)
            out.append(price(
                ctx, f"{label}one stage less ({len(stages)}->{len(stages) - 1})",
                f"merge {pool} stages {k} and {k + 1} (layers {a.first}-{b.end}, the fastest "
                f"adjacent pair) onto the {host.tp} {host.kind} devices of stage "
                f"{k if host is a else k + 1}", ctx.plan.placement, pre, dec))
    return out


def one_design(ctx: Context) -> list[Alternative]:
    """A plan of several designs per pool against its first designs alone (what the
    more designs buy)."""
    if not ctx.plan.more_designs:
        return []
    return [price(ctx, "one design per pool",
                  f"the plan's first designs alone, their replica counts chosen as the "
                  f"planner does; its {len(ctx.plan.more_designs)} more design(s) released",
                  ctx.plan.placement, _keep(ctx.pre), _keep(ctx.dec))]


def placement_flip(ctx: Context) -> list[Alternative]:
    out = []
    if ctx.plan.placement == "disaggregated":
        for src in ("prefill", "decode"):
            stages = _keep(_stages_of(ctx, src))
            out.append(price(
                ctx, f"colocated on the {src} pool",
                f"both phases on the {src} pool's stages (its memory must hold the full-context "
                f"KV and the prompt activations); the other pool's devices are released",
                "colocated", stages, stages))
    else:
        pre = _keep(ctx.pre)
        dec = [StageSpec(s.first, s.end, s.kind, s.tp, None, s.dp, s.ep) for s in ctx.pre]
        out.append(price(
            ctx, "disaggregated (copy of the pipeline)",
            "prefill stays on the plan's stages; decode on a copy of the pipeline (same cuts, "
            "kinds and TP) on free devices, paying the KV hand-off", "disaggregated", pre, dec))
    return out


def kind_moves(ctx: Context) -> list[Alternative]:
    out = []
    kinds = list(ctx.topo.kind_names)
    if len(kinds) < 2:
        return out
    for label, pool in _pools(ctx):
        stages = _stages_of(ctx, pool)
        for kind in kinds:
            if all(s.kind == kind for s in stages):
                continue
            dom = ctx.topo.max_fast_domain(kind)
            fits = [t for t in valid_tps(ctx.model, dom) if dom % t == 0] or [1]
            new, changed = [], False
            for s in stages:
                t = s.tp if s.tp in fits else max(fits)
                changed |= t != s.tp
                new.append(StageSpec(s.first, s.end, kind, t, None))
            pre, dec = _with(ctx, pool, new)
            tp_note = (f"TP {tp_label(new)} (the largest valid TP in its fast domain of {dom})"
                       if changed else f"same TP {tp_label(new)}")
            out.append(price(
                ctx, f"{label}on {kind}",
                f"the {pool} pool on free {kind} devices: same layer cuts, {tp_note}",
                ctx.plan.placement, pre, dec))
    return out


def request_of(ctx: Context) -> Request:
    """The request the plan answers, rebuilt from its inputs (model, the topology as
    loaded, the calibration it was priced with)."""
    i = ctx.plan.inputs
    fields = set(Request.model_fields) - {"model", "topology", "profile", "time_limit_s",
                                          "progress", "nodes", "network"}
    given = {k: getattr(i, k) for k in fields}
    for k in i.searched:  # batch sizes the planner chose stay decisions when re-solved
        given[k] = None
    return Request.build(model=i.model_spec or i.model, topology=ctx.topo,
                         profile=i.calibration, **given)


def resolve(ctx: Context, time_limit_s: float, notes: list[str]) -> list[Alternative]:
    """The other placement, re-solved by the real planner (optimal over all cuts and TPs)."""
    other = "colocated" if ctx.plan.placement == "disaggregated" else "disaggregated"
    name = f"{other} (re-solved)"
    desc = f"the planner's best {other} plan for the same inputs ({time_limit_s:g} s limit)"
    try:
        req = request_of(ctx).model_copy(update={"placement": other,
                                                 "time_limit_s": time_limit_s})
        p = solve_plan(req)
    except InfeasibleError as e:
        rule = {"slo": "SLO", "memory": "memory headroom", "devices": "devices"}.get(
            e.reason, "solver")
        return [Alternative(name=name, description=desc, placement=other, verdict="ruled out",
                            reason=f"{rule}: no {other} plan exists: {e}",
                            violations=[f"{rule}: {e}"])]
    except AutoplanError as e:
        notes.append(f"{other} placement was not re-solved: {e}")
        return []
    status = f"; solver status {p.status}" if p.status != "optimal" else ""
    return [judge(ctx, name, desc + status, p.placement, placements(p.prefill),
                  placements(p.decode), [])]
