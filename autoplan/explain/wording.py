"""The sentences of an explanation: cost terms that moved, deployments, the headline."""

from __future__ import annotations

from autoplan.cost.evaluate import Figures
from autoplan.cost.pipeline import StagePlacement
from autoplan.explain.context import Context, Terms, margin, unit
from autoplan.explain.model import TABLE_TOL, Alternative


def fmt(x: float) -> str:
    a = abs(x)
    if a >= 100:
        return f"{x:+.0f}"
    if a >= 10:
        return f"{x:+.1f}"
    if a >= 0.1:
        return f"{x:+.2f}"
    return f"{x:+.3f}"


def use_text(use: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(use.items()))


def inventory_text(ctx: Context, kinds) -> str:
    return ", ".join(f"{ctx.inventory.get(k, 0)} {k}" for k in sorted(kinds))


def rep_label(placement: str, reps: tuple[int, int]) -> str:
    if placement == "colocated":
        return f"{reps[0]} replica{'s' if reps[0] != 1 else ''}"
    return f"{reps[0]} prefill + {reps[1]} decode replicas"


def tp_label(stages) -> str:
    """The TP degrees of a pipeline's stages: ``8``, or ``16/32`` when they differ; with
    attention DP and EP (MoE stages) ``1 x DP 8, EP 8``."""
    def one(s) -> str:
        dp, ep = getattr(s, "dp", 1), getattr(s, "ep", 1)
        return (str(s.tp) + (f" x DP {dp}" if dp > 1 else "") + (f", EP {ep}" if ep > 1 else ""))

    return "/".join(sorted({one(s) for s in stages}, key=lambda x: (len(x), x)))


def _bound(placement: str, fig: Figures) -> str:
    """What limits a disaggregated deployment's rate: `` (prefill-bound)``, decode or the
    KV link; empty for colocated (both phases share the replicas)."""
    if placement == "colocated":
        return ""
    pr = fig.phase_requests_per_s
    if fig.requests_per_s < min(pr.values()) * (1 - 1e-12):
        return " (KV-link-bound)"
    return " (prefill-bound)" if pr["prefill"] <= pr["decode"] else " (decode-bound)"


def cost_reason(ctx: Context, fig: Figures, terms: Terms, placement: str = "",
                reps: tuple[int, int] = (1, 1), devices: int = 0) -> str:
    """Which terms moved, weighted as they enter e2e (decode x (osl - 1)); for replicated
    objectives led by the deployment: replicas, rate and what bounds it."""
    osl = ctx.work.osl
    parts = []
    for ph, head, weight in (("prefill", "TTFT", 1), ("decode", "TPOT", max(osl - 1, 1))):
        moved = []
        for name, a, b in zip(("compute", "memory", "communication"), ctx.base_terms[ph],
                              terms[ph]):
            d = (b - a) * 1e3
            if abs(d) * weight > 1e-6:
                pct = f" ({(b - a) / a:+.0%})" if a > 0 else ""
                moved.append((abs(d), f"{ph} {name} {fmt(d)} ms{pct}"))
        if moved:  # name the terms that matter: within 1% of the largest move
            top = max(m[0] for m in moved)
            moved = [m for m in moved if m[0] >= 0.01 * top]
        if ph == "prefill":
            dkv = fig.kv_transfer_ms - ctx.base.kv_transfer_ms
            if abs(dkv) > 1e-6:
                moved.append((abs(dkv), f"KV hand-off {fmt(dkv)} ms"))
        dphase = (fig.ttft_ms - ctx.base.ttft_ms) if ph == "prefill" else (
            fig.tpot_ms - ctx.base.tpot_ms)
        if moved:
            moved.sort(key=lambda m: -m[0])
            parts.append(f"{head} {fmt(dphase)} ms: " + ", ".join(m[1] for m in moved[:3]))
    head = f"{fmt(fig.e2e_ms - ctx.base.e2e_ms)} ms e2e"
    deployment = ""
    if ctx.replicated:
        deployment = (f" at {rep_label(placement, reps)}, {fig.requests_per_s:.4g} "
                      f"requests/s{_bound(placement, fig)}")
    if ctx.objective == "throughput":
        head = (f"{fmt(fig.throughput_tokens_per_s - ctx.base.throughput_tokens_per_s)} tok/s"
                f"{deployment} ({head})")
    elif ctx.objective == "devices":
        head = f"{devices - ctx.base_devices:+d} devices{deployment} ({head})"
    return head + ("; " + "; ".join(parts) if parts else "")


def _shape(stages: list[StagePlacement]) -> str:
    kinds = sorted({s.kind for s in stages})
    return f"{len(stages)} stage(s) at TP {tp_label(stages)} on {'+'.join(kinds)}"


def headline(ctx: Context, alts: list[Alternative]) -> str:
    p = ctx.plan
    if p.placement == "colocated":
        shape = _shape(ctx.pre)
    else:
        shape = f"prefill {_shape(ctx.pre)}, decode {_shape(ctx.dec)}"
    counts = {v: sum(a.verdict == v for a in alts) for v in ("worse", "ruled out", "equal",
                                                             "better")}
    if ctx.replicated or ctx.replicas != (1, 1):
        shape += (f", {rep_label(p.placement, ctx.replicas)}, {p.requests_per_s:.4g} "
                  f"requests/s ({p.throughput_tokens_per_s:.4g} tok/s)")
    text = (f"why this plan: {p.placement}, {shape}, {p.devices} devices; e2e {p.e2e_ms:.1f} ms "
            f"(TTFT {p.ttft_ms:.2f} ms + {p.inputs.osl - 1} x TPOT {p.tpot_ms:.3f} ms), "
            f"solver {p.status}. Of {len(alts)} nearest alternatives {counts['worse']} are "
            f"worse, {counts['ruled out']} ruled out, {counts['equal']} equal")
    obj = ctx.objective
    if counts["better"]:
        base_v = ctx.base_value
        rounding = all(obj != "devices" and margin(obj, base_v + a.delta, base_v) <= TABLE_TOL
                       for a in alts if a.verdict == "better")
        text += (f", and {counts['better']} better by less than the planner's microsecond "
                 f"rounding ({TABLE_TOL:.1%})" if rounding else
                 f", and {counts['better']} BETTER (the plan is not optimal under these figures)")
    feas = [a for a in alts if a.verdict in ("worse", "equal") and a.delta is not None]
    if feas:
        best = min(feas, key=lambda a: (-a.delta if obj == "throughput" else a.delta,
                                        -(a.requests_per_s or 0.0)))
        by = f"{int(best.delta):+d}" if obj == "devices" else fmt(best.delta)
        text += f"; the closest feasible one, {best.name}, is {by} {unit(obj)}"
    return text + "."
