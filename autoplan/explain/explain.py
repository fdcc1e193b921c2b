"""``autoplan explain``: why a plan wins, by pricing its nearest alternatives.

No solver for the neighbours: each alternative edits the plan's stages (one TP step up
or down, one stage more or less, colocated instead of disaggregated or the reverse,
another device kind), places its TP groups on devices the plan leaves free, and is
priced by the validator's :func:`~autoplan.cost.evaluate.evaluate` and checked with the
validator's rules (TP validity, TP inside one fast domain, free devices, memory headroom,
SLOs, the requested placement). Optionally the other placement is re-solved with the
real planner for comparison.

Every alternative carries its figures, the difference on the plan's objective, a
verdict (``worse``, ``ruled out``, ``equal``; ``better`` would mean the plan is not
optimal under the validator's figures) and a reason: the rule that rules it out, or the
cost terms (compute / memory / communication of each phase, KV hand-off) that moved.

Replicas. A ``latency`` plan is one replica and so is each alternative. For the
``throughput`` and ``devices`` objectives an alternative is a replica *design* (its
prefill and decode stage lists) deployed as the planner would deploy it
(:mod:`autoplan.search.replicas`): ``throughput`` takes the replica counts with the highest
requests/s the topology's devices allow (counted per device kind; disaggregated pools
share the inventory), then the fewest devices; ``devices`` takes the fewest replicas
whose rate reaches ``request_rate`` (``rate:`` rules it out when the inventory cannot).
The first replica is placed on concrete devices as above; further replicas are only
counted. Rates are the validator's: ``evaluate(..., replicas=(y_prefill, y_decode))``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from autoplan.catalog import load_model, load_topology
from autoplan.cost.evaluate import Figures, evaluate, phase_cost, placements, workload_of
from autoplan.cost.kv import kv_link_bytes_per_s, kv_stage_bytes
from autoplan.cost.pipeline import StagePlacement
from autoplan.cost.roofline import check_tp, valid_tps
from autoplan.errors import AutoplanError, InfeasibleError, InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload
from autoplan.plan_schema import Plan

Verdict = Literal["worse", "ruled out", "equal", "better"]

RULES = ("TP:", "TP inside fast domains:", "devices:", "memory headroom:", "SLO:", "placement:",
         "rate:", "memory:", "slo:", "solver:")
"""Prefixes naming the rule in a ``ruled out`` reason (the validator's rule names)."""

REL_TOL = 1e-9

TABLE_TOL = 1e-3
"""The planner proves its choice optimal on integer cost tables whose stage times are
rounded up to whole microseconds (a conservative bound), while ``evaluate`` prices with
exact floats: an alternative may beat an optimal plan by this relative margin without
the plan being suboptimal. Such a ``better`` verdict says so in its reason."""


class StageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: tuple[int, int]
    device_kind: str
    tp: int
    devices: list[str]


class Alternative(BaseModel):
    """One neighbour of the plan, its figures (None when it cannot be priced) and verdict."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    placement: Literal["colocated", "disaggregated"]
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    kv_transfer_ms: float | None = None
    throughput_tokens_per_s: float | None = None
    requests_per_s: float | None = None  # the whole deployment (all replicas)
    devices: int | None = None  # all replicas
    replicas: tuple[int, int] | None = None  # (prefill, decode); colocated: (y, y)
    delta: float | None = None  # alternative - plan, on the plan's objective (its unit)
    verdict: Verdict
    reason: str
    violations: list[str] = []
    prefill: list[StageRef] = []
    decode: list[StageRef] = []


class Explanation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    topology: str
    placement: str
    objective: str
    objective_unit: str
    objective_value: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tokens_per_s: float
    requests_per_s: float
    devices: int
    replicas: tuple[int, int]  # (prefill, decode); colocated: (y, y)
    headline: str
    alternatives: list[Alternative]
    notes: list[str] = []


# ------------------------------------------------------------------ context


@dataclass
class _Ctx:
    plan: Plan
    model: ModelSpec
    topo: Topology
    work: Workload
    pre: list[StagePlacement]
    dec: list[StagePlacement]
    base: Figures  # the whole deployment, at the plan's replica counts
    base_terms: dict[str, tuple[float, float, float]]
    base_devices: int  # all replicas
    replicas: tuple[int, int]
    inventory: dict[str, int]  # devices of each kind in the topology

    @property
    def replicated(self) -> bool:
        """Alternatives are whole deployments with replica counts (not one replica)."""
        return self.plan.inputs.objective in ("throughput", "devices")


@dataclass
class _Spec:
    """A stage to place: layers, kind, TP, and devices it keeps (None: find a block)."""

    first: int
    end: int
    kind: str
    tp: int
    prefer: tuple[str, ...] | None = None


def _load_topology(name: str, base_dir: Path | None, profile=None) -> Topology:
    try:
        return load_topology(name, profile)
    except InputError:
        p = Path(name)
        if base_dir is None or p.is_absolute() or p.suffix not in (".yaml", ".yml"):
            raise
        # A relative topology path in a plan file: try the plan's folder and its parents.
        for d in (base_dir, *base_dir.parents):
            if (d / p).is_file():
                return load_topology(str(d / p), profile)
        raise


def _context(plan: Plan, base_dir: Path | None) -> _Ctx:
    i = plan.inputs
    model = load_model(i.model)
    # The calibration the plan was priced with, as the validator loads it.
    topo = _load_topology(i.topology, base_dir, getattr(i, "calibration", None))
    work = workload_of(plan)
    pre, dec = placements(plan.prefill), placements(plan.decode)
    reps = (plan.prefill.replicas, plan.decode.replicas)
    base = evaluate(model, topo, work, plan.placement, pre, dec, reps)
    terms = _terms(model, topo, work, plan.placement, pre, dec)
    devs = len({d for s in pre + dec for d in s.devices}
               | {d for ph in (plan.prefill, plan.decode)
                  for r in ph.replica_devices for g in r for d in g})
    inventory = {k: len(topo.devices_of_kind(k)) for k in topo.kind_names}
    return _Ctx(plan, model, topo, work, pre, dec, base, terms, devs, reps, inventory)


def _terms(model: ModelSpec, topo: Topology, work: Workload, placement: str,
           pre: list[StagePlacement], dec: list[StagePlacement]) -> dict[str, tuple[float, float, float]]:
    """(compute, memory, communication) seconds of each phase's pipeline, summed over stages."""
    out = {}
    for ph, stages in (("prefill", pre), ("decode", dec)):
        c = phase_cost(model, topo, work, placement, ph, stages)
        out[ph] = (c.compute_s, c.memory_s, c.comm_s)
    return out


# ------------------------------------------------------------------ objective


def _unit(objective: str) -> str:
    return {"latency": "ms e2e", "throughput": "tok/s", "devices": "devices"}[objective]


def _value(objective: str, fig: Figures, devices: int) -> float:
    if objective == "throughput":
        return fig.throughput_tokens_per_s
    if objective == "devices":
        return float(devices)
    return fig.e2e_ms


def _better(objective: str, a: float, b: float) -> bool:
    return a > b if objective == "throughput" else a < b


def _compare(objective: str, v: float, base_v: float, rate: float, base_rate: float) -> str:
    """``better``, ``equal`` or ``worse`` on the objective; devices ties go to the rate."""
    if objective == "devices" and v == base_v:
        v, base_v, objective = rate, base_rate, "throughput"
    if math.isclose(v, base_v, rel_tol=REL_TOL, abs_tol=1e-12):
        return "equal"
    return "better" if _better(objective, v, base_v) else "worse"


def _margin(objective: str, v: float, base_v: float) -> float:
    """How much better ``v`` is than ``base_v``, relative (e2e and throughput)."""
    if base_v == 0:
        return math.inf
    return (v - base_v) / base_v if objective == "throughput" else (base_v - v) / base_v


# ------------------------------------------------------------------ devices


class _Alloc:
    """Aligned first-fit TP groups inside fast domains, avoiding claimed devices."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.busy: set[str] = set()

    def claim(self, devs: tuple[str, ...]) -> bool:
        if any(d in self.busy for d in devs):
            return False
        self.busy.update(devs)
        return True

    def block(self, kind: str, tp: int) -> tuple[str, ...] | None:
        for dom in self.topo.domains_of_kind(kind):
            for b in range(0, dom.size - tp + 1, tp):
                blk = dom.devices[b:b + tp]
                if not any(d in self.busy for d in blk):
                    self.busy.update(blk)
                    return blk
        return None

    def pricing_block(self, kind: str, tp: int, avoid: set[str]) -> tuple[str, ...] | None:
        """A group only to price an alternative that does not fit: it may take devices of
        the plan's other pool or span fast domains, never devices of its own pipeline."""
        for dom in self.topo.domains_of_kind(kind):
            for b in range(0, dom.size - tp + 1, tp):
                blk = dom.devices[b:b + tp]
                if not any(d in avoid for d in blk):
                    return blk
        devs = [d for d in self.topo.devices_of_kind(kind) if d not in avoid]
        return tuple(devs[:tp]) if len(devs) >= tp else None


def _place(ctx: _Ctx, pools: list[list[_Spec]]) -> tuple[list[list[StagePlacement]] | None, list[str]]:
    """Concrete devices for each pool's stages (pools may be the same list: colocated).

    Stages that keep devices claim them first; the others take aligned free blocks,
    largest TP first. Devices the plan uses but this alternative does not are free.
    Returns the placed pools (None when some stage cannot even be priced) and the
    violations (TP beyond the fast domain, not enough free devices).
    """
    topo = ctx.topo
    alloc = _Alloc(topo)
    uniq: list[list[_Spec]] = []
    for p in pools:
        if not any(p is q for q in uniq):
            uniq.append(p)
    got: dict[tuple[int, int], tuple[str, ...]] = {}
    own: list[set[str]] = [set() for _ in uniq]  # devices of each pipeline
    violations: list[str] = []
    todo = []
    for pi, p in enumerate(uniq):
        for si, s in enumerate(p):
            if s.prefer is not None and len(s.prefer) == s.tp and alloc.claim(s.prefer):
                got[pi, si] = s.prefer
                own[pi].update(s.prefer)
            else:
                todo.append((-s.tp, pi, si))
    for _, pi, si in sorted(todo):
        s = uniq[pi][si]
        blk = alloc.block(s.kind, s.tp)
        if blk is None:
            dom = topo.max_fast_domain(s.kind)
            if dom == 0:
                violations.append(f"devices: the topology has no {s.kind} devices")
            elif s.tp > dom:
                violations.append(f"TP inside fast domains: TP {s.tp} exceeds the fast domain "
                                  f"of {dom} {s.kind} devices")
            else:
                free = sum(1 for d in topo.devices_of_kind(s.kind) if d not in alloc.busy)
                violations.append(
                    f"devices: not enough free {s.kind} devices: a TP group of {s.tp} needs an "
                    f"aligned free block in one fast domain; {free} of "
                    f"{len(topo.devices_of_kind(s.kind))} are free beside this alternative's "
                    f"other stages")
            blk = alloc.pricing_block(s.kind, s.tp, own[pi])
            if blk is None:  # not even the whole topology holds this pipeline
                return None, list(dict.fromkeys(violations))
            alloc.busy.update(blk)
        got[pi, si] = blk
        own[pi].update(blk)
    placed = [[StagePlacement(s.first, s.end, s.kind, got[pi, si]) for si, s in enumerate(p)]
              for pi, p in enumerate(uniq)]
    out = []
    for p in pools:
        out.append(placed[next(k for k, q in enumerate(uniq) if q is p)])
    return out, list(dict.fromkeys(violations))


# ------------------------------------------------------------------ replicas


def _usage(stages: list[StagePlacement]) -> dict[str, int]:
    """Devices of each kind one replica of a pipeline uses."""
    out: dict[str, int] = {}
    for s in stages:
        out[s.kind] = out.get(s.kind, 0) + s.tp
    return out


def _use_text(use: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(use.items()))


def _inv_text(ctx: _Ctx, kinds) -> str:
    return ", ".join(f"{ctx.inventory.get(k, 0)} {k}" for k in sorted(kinds))


def _replicas(ctx: _Ctx, placement: str, pre: list[StagePlacement],
              dec: list[StagePlacement]) -> tuple[tuple[int, int], list[str]]:
    """Replica counts as the planner chooses them for this design, and violations.

    Per-replica rates come from one ``evaluate`` at (1, 1): prefill and decode rates
    scale linearly with their replicas, the KV link budget with the smaller pool's
    devices (``min(y_p * n_p, y_d * n_d)``), so the counts are searched in closed form
    here and the caller prices the result with ``evaluate`` again. The inventory is
    counted per device kind, both pools of a disaggregated deployment together.
    """
    i = ctx.plan.inputs
    objective, lam = i.objective, i.request_rate
    inv = ctx.inventory
    one = evaluate(ctx.model, ctx.topo, ctx.work, placement, pre, dec, (1, 1))
    eps = 1e-12

    def need(rate: float, per: float) -> int:  # replicas of rate ``per`` to reach ``rate``
        return max(1, math.ceil(rate / per * (1 - eps))) if per > 0 else 10**9

    if placement == "colocated":
        u = _usage(pre)
        r = one.phase_requests_per_s["prefill"]
        y_max = min(inv.get(k, 0) // n for k, n in u.items())
        if y_max < 1:
            return (1, 1), [f"devices: one replica needs {_use_text(u)}; the topology has "
                            + _inv_text(ctx, u)]
        if objective == "devices" and lam is not None:
            y = need(lam, r)
            if y > y_max:
                return (y_max, y_max), [(
                    f"rate: {lam:g} requests/s needs {y} replicas of {r:.4g} requests/s "
                    f"({y * sum(u.values())} devices); the topology's {_inv_text(ctx, u)} "
                    f"devices hold {y_max}, {y_max * r:.4g} requests/s")]
            return (y, y), []
        errs = []
        if lam is not None and y_max * r < lam * (1 - 1e-9):
            errs.append(f"rate: at most {y_max * r:.4g} requests/s ({y_max} replicas on "
                        f"{_inv_text(ctx, u)} devices), below the requested {lam:g}")
        return (y_max, y_max), errs

    up, ud = _usage(pre), _usage(dec)
    kinds = set(up) | set(ud)
    rp, rd = one.phase_requests_per_s["prefill"], one.phase_requests_per_s["decode"]
    n_p, n_d = sum(up.values()), sum(ud.values())
    per_req = kv_stage_bytes(ctx.model, ctx.work, ctx.model.num_layers) / ctx.work.pb
    link_bytes = kv_link_bytes_per_s(ctx.topo, pre, dec, (1, 1))
    link = link_bytes / min(n_p, n_d) / per_req if math.isfinite(link_bytes) else math.inf

    def rate(yp: int, yd: int) -> float:
        return min(yp * rp, yd * rd, min(yp * n_p, yd * n_d) * link)

    def fits(yp: int, yd: int) -> bool:
        return all(yp * up.get(k, 0) + yd * ud.get(k, 0) <= inv.get(k, 0) for k in kinds)

    def yd_max(yp: int) -> int:
        return min((inv.get(k, 0) - yp * up.get(k, 0)) // n for k, n in ud.items())

    def fewest(lam_: float) -> tuple[int, int]:
        return (max(need(lam_, rp), need(lam_, n_p * link)),
                max(need(lam_, rd), need(lam_, n_d * link)))

    if not fits(1, 1):
        use = {k: up.get(k, 0) + ud.get(k, 0) for k in kinds}
        return (1, 1), [f"devices: one prefill and one decode replica need {_use_text(use)}; "
                        + f"the topology has {_inv_text(ctx, kinds)}"]
    # The most requests/s: for each prefill count, as many decode replicas as fit.
    best, yp = 0.0, 1
    while fits(yp, 1):
        best = max(best, rate(yp, yd_max(yp)))
        yp += 1
    if objective == "devices" and lam is not None:
        yp, yd = fewest(lam)
        if not fits(yp, yd):  # priced at the most the inventory holds
            return fewest(best), [(
                f"rate: {lam:g} requests/s needs {yp} prefill + {yd} decode replicas "
                f"({yp * n_p + yd * n_d} devices); the topology's {_inv_text(ctx, kinds)} "
                f"devices reach at most {best:.4g} requests/s")]
        return (yp, yd), []
    reps = fewest(best)  # the fewest devices reaching the best rate
    errs = []
    if lam is not None and best < lam * (1 - 1e-9):
        errs.append(f"rate: at most {best:.4g} requests/s ({reps[0]} prefill + {reps[1]} "
                    f"decode replicas on {_inv_text(ctx, kinds)} devices), below the "
                    f"requested {lam:g}")
    return reps, errs


def _deployment_devices(placement: str, pre: list[StagePlacement],
                        dec: list[StagePlacement], reps: tuple[int, int]) -> int:
    """Devices of all replicas: the first replica's (its pools may overlap when it is
    ruled out) and the further replicas' copies."""
    first = len({d for s in pre + dec for d in s.devices})
    if placement == "colocated":
        return first * reps[0]
    n_p = len({d for s in pre for d in s.devices})
    n_d = len({d for s in dec for d in s.devices})
    return first + (reps[0] - 1) * n_p + (reps[1] - 1) * n_d


def _rep_label(placement: str, reps: tuple[int, int]) -> str:
    if placement == "colocated":
        return f"{reps[0]} replica{'s' if reps[0] != 1 else ''}"
    return f"{reps[0]} prefill + {reps[1]} decode replicas"


def _bound(placement: str, fig: Figures) -> str:
    """What limits a disaggregated deployment's rate: `` (prefill-bound)``, decode or the
    KV link; empty for colocated (both phases share the replicas)."""
    if placement == "colocated":
        return ""
    pr = fig.phase_requests_per_s
    if fig.requests_per_s < min(pr.values()) * (1 - 1e-12):
        return " (KV-link-bound)"
    return " (prefill-bound)" if pr["prefill"] <= pr["decode"] else " (decode-bound)"


# ------------------------------------------------------------------ pricing


def _fmt(x: float) -> str:
    a = abs(x)
    if a >= 100:
        return f"{x:+.0f}"
    if a >= 10:
        return f"{x:+.1f}"
    if a >= 0.1:
        return f"{x:+.2f}"
    return f"{x:+.3f}"


def _cost_reason(ctx: _Ctx, fig: Figures, terms: dict[str, tuple[float, float, float]],
                 placement: str = "", reps: tuple[int, int] = (1, 1), devices: int = 0) -> str:
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
                moved.append((abs(d), f"{ph} {name} {_fmt(d)} ms{pct}"))
        if moved:  # name the terms that matter: within 1% of the largest move
            top = max(m[0] for m in moved)
            moved = [m for m in moved if m[0] >= 0.01 * top]
        if ph == "prefill":
            dkv = fig.kv_transfer_ms - ctx.base.kv_transfer_ms
            if abs(dkv) > 1e-6:
                moved.append((abs(dkv), f"KV hand-off {_fmt(dkv)} ms"))
        dphase = (fig.ttft_ms - ctx.base.ttft_ms) if ph == "prefill" else (
            fig.tpot_ms - ctx.base.tpot_ms)
        if moved:
            moved.sort(key=lambda m: -m[0])
            parts.append(f"{head} {_fmt(dphase)} ms: " + ", ".join(m[1] for m in moved[:3]))
    de2e = fig.e2e_ms - ctx.base.e2e_ms
    head = f"{_fmt(de2e)} ms e2e"
    objective = ctx.plan.inputs.objective
    deployment = ""
    if ctx.replicated:
        deployment = (f" at {_rep_label(placement, reps)}, {fig.requests_per_s:.4g} "
                      f"requests/s{_bound(placement, fig)}")
    if objective == "throughput":
        head = (f"{_fmt(fig.throughput_tokens_per_s - ctx.base.throughput_tokens_per_s)} tok/s"
                f"{deployment} ({head})")
    elif objective == "devices":
        head = f"{devices - ctx.base_devices:+d} devices{deployment} ({head})"
    return head + ("; " + "; ".join(parts) if parts else "")


def _rules(ctx: _Ctx, placement: str, pre: list[StagePlacement], dec: list[StagePlacement],
           fig: Figures | None) -> list[str]:
    """The validator's rules that do not depend on how the alternative was built."""
    errs: list[str] = []
    i = ctx.plan.inputs
    for s in dict.fromkeys(pre + dec):
        try:
            check_tp(ctx.model, s.tp)
        except InputError as e:
            errs.append(f"TP: {e}")
    domain_of = {d: dom.index for dom in ctx.topo.fast_domains for d in dom.devices}
    # A colocated pool is one pipeline: name its stages once ("stage k"), not per phase.
    pools = [("", pre)] if placement == "colocated" else [("prefill ", pre), ("decode ", dec)]
    for ph, stages in pools:
        for k, s in enumerate(stages):
            if len({domain_of[d] for d in s.devices}) > 1:
                errs.append(f"TP inside fast domains: {ph}stage {k} spans several fast domains")
    if placement == "disaggregated":
        both = {d for s in pre for d in s.devices} & {d for s in dec for d in s.devices}
        if both:
            errs.append(f"devices: {min(both)} would serve both pools")
    if fig is not None:
        for ph, _ in pools:
            for k, frac in enumerate(fig.stage_fraction[ph.strip() or "prefill"]):
                if frac > i.max_memory_fraction + 1e-12:
                    errs.append(f"memory headroom: {ph}stage {k} uses {frac:.1%} of device "
                                f"memory, above {i.max_memory_fraction:.0%}")
        if i.ttft_slo_ms is not None and fig.ttft_ms > i.ttft_slo_ms * (1 + 1e-9):
            errs.append(f"SLO: TTFT {fig.ttft_ms:.2f} ms > {i.ttft_slo_ms:g} ms")
        if i.tpot_slo_ms is not None and fig.tpot_ms > i.tpot_slo_ms * (1 + 1e-9):
            errs.append(f"SLO: TPOT {fig.tpot_ms:.3f} ms > {i.tpot_slo_ms:g} ms")
    if i.placement != "auto" and placement != i.placement:
        errs.append(f"placement: the request fixed placement={i.placement}")
    return errs


def _refs(stages: list[StagePlacement]) -> list[StageRef]:
    return [StageRef(layers=(s.first, s.end), device_kind=s.kind, tp=s.tp,
                     devices=list(s.devices)) for s in stages]


def _judge(ctx: _Ctx, name: str, description: str, placement: str,
           pre: list[StagePlacement] | None, dec: list[StagePlacement] | None,
           violations: list[str]) -> Alternative:
    objective = ctx.plan.inputs.objective
    if pre is None or dec is None:
        reason = violations[0] if violations else "devices: cannot be placed"
        return Alternative(name=name, description=description, placement=placement,
                           verdict="ruled out", reason=reason, violations=violations)
    reps, rate_errs = (1, 1), []
    if ctx.replicated:
        reps, rate_errs = _replicas(ctx, placement, pre, dec)
    fig = evaluate(ctx.model, ctx.topo, ctx.work, placement, pre, dec, reps)
    terms = _terms(ctx.model, ctx.topo, ctx.work, placement, pre, dec)
    devices = _deployment_devices(placement, pre, dec, reps)
    violations = list(dict.fromkeys(violations + _rules(ctx, placement, pre, dec, fig)
                                    + rate_errs))
    base_v = _value(objective, ctx.base, ctx.base_devices)
    v = _value(objective, fig, devices)
    delta = v - base_v
    cost = _cost_reason(ctx, fig, terms, placement, reps, devices)
    verdict: Verdict
    if violations:
        verdict = "ruled out"
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        reason = f"{violations[0]}{more}; otherwise {cost}"
    else:
        verdict = _compare(objective, v, base_v, fig.requests_per_s, ctx.base.requests_per_s)
        if verdict == "equal":
            reason = f"ties the plan on the {objective} objective; {cost}"
        elif verdict == "better":
            by = (f"{abs(delta):.6g} {_unit(objective)}" if delta else
                  f"{fig.requests_per_s - ctx.base.requests_per_s:.6g} requests/s at equal devices")
            margin = _margin(objective, v, base_v) if objective != "devices" else math.inf
            why = ("within the planner's rounding of stage times up to whole microseconds "
                   f"({TABLE_TOL:.1%}): not evidence against its optimality"
                   if margin <= TABLE_TOL else
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


def _price(ctx: _Ctx, name: str, description: str, placement: str, pre: list[_Spec],
           dec: list[_Spec]) -> Alternative:
    placed, violations = _place(ctx, [pre, dec])
    p, d = (placed if placed is not None else (None, None))
    return _judge(ctx, name, description, placement, p, d, violations)


# ------------------------------------------------------------------ neighbours


def _keep(stages: list[StagePlacement]) -> list[_Spec]:
    return [_Spec(s.first, s.end, s.kind, s.tp, s.devices) for s in stages]


def _pools(ctx: _Ctx) -> list[tuple[str, str]]:
    """(label, which pool) for the pools an edit can touch."""
    if ctx.plan.placement == "colocated":
        return [("", "colocated")]
    return [("prefill ", "prefill"), ("decode ", "decode")]


def _with(ctx: _Ctx, pool: str, new: list[_Spec]) -> tuple[list[_Spec], list[_Spec]]:
    if pool == "colocated":
        return new, new
    if pool == "prefill":
        return new, _keep(ctx.dec)
    return _keep(ctx.pre), new


def _stages_of(ctx: _Ctx, pool: str) -> list[StagePlacement]:
    return ctx.dec if pool == "decode" else ctx.pre


def _weights(ctx: _Ctx, pool: str) -> list[float]:
    """Each stage's share of the objective's latency: what a stage edit targets."""
    pre_ms, dec_ms = ctx.base.stage_ms["prefill"], ctx.base.stage_ms["decode"]
    osl = ctx.work.osl
    if pool == "colocated":
        return [a + (osl - 1) * b for a, b in zip(pre_ms, dec_ms)]
    return list(pre_ms if pool == "prefill" else dec_ms)


def _tp_label(stages) -> str:
    """The TP degrees of a pipeline's stages: ``8``, or ``16/32`` when they differ."""
    return "/".join(str(t) for t in sorted({s.tp for s in stages}))


def _tp_steps(ctx: _Ctx) -> list[Alternative]:
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
                keep = s.devices[:t] if step < 0 else None
                new.append(_Spec(s.first, s.end, s.kind, t, keep))
            if new is None:
                continue  # no valid TP beyond the current one: not a neighbour
            pre, dec = _with(ctx, pool, new)
            name = f"{label}TP {word} ({_tp_label(stages)}->{_tp_label(new)})"
            desc = (f"every {pool} stage at the next valid TP {word}, same layer cuts"
                    + ("; stages keep a prefix of their devices" if step < 0 else
                       "; groups on free aligned blocks of one fast domain"))
            out.append(_price(ctx, name, desc, ctx.plan.placement, pre, dec))
    return out


def _stage_steps(ctx: _Ctx) -> list[Alternative]:
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
            new[k:k + 1] = [_Spec(s.first, mid, s.kind, s.tp, s.devices),
                            _Spec(mid, s.end, s.kind, s.tp, None)]
            pre, dec = _with(ctx, pool, new)
            out.append(_price(
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
            new[k:k + 2] = [_Spec(a.first, b.end, host.kind, host.tp, host.devices)]
            pre, dec = _with(ctx, pool, new)
            out.append(_price(
                ctx, f"{label}one stage less ({len(stages)}->{len(stages) - 1})",
                f"merge {pool} stages {k} and {k + 1} (layers {a.first}-{b.end}, the fastest "
                f"adjacent pair) onto the {host.tp} {host.kind} devices of stage "
                f"{k if host is a else k + 1}", ctx.plan.placement, pre, dec))
    return out


def _placement_flip(ctx: _Ctx) -> list[Alternative]:
    out = []
    if ctx.plan.placement == "disaggregated":
        for src in ("prefill", "decode"):
            stages = _keep(_stages_of(ctx, src))
            out.append(_price(
                ctx, f"colocated on the {src} pool",
                f"both phases on the {src} pool's stages (its memory must hold the full-context "
                f"KV and the prompt activations); the other pool's devices are released",
                "colocated", stages, stages))
    else:
        pre = _keep(ctx.pre)
        dec = [_Spec(s.first, s.end, s.kind, s.tp, None) for s in ctx.pre]
        out.append(_price(
            ctx, "disaggregated (copy of the pipeline)",
            "prefill stays on the plan's stages; decode on a copy of the pipeline (same cuts, "
            "kinds and TP) on free devices, paying the KV hand-off", "disaggregated", pre, dec))
    return out


def _kind_moves(ctx: _Ctx) -> list[Alternative]:
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
                new.append(_Spec(s.first, s.end, kind, t, None))
            pre, dec = _with(ctx, pool, new)
            tp_note = (f"TP {_tp_label(new)} (the largest valid TP in its fast domain of {dom})"
                       if changed else f"same TP {_tp_label(new)}")
            out.append(_price(
                ctx, f"{label}on {kind}",
                f"the {pool} pool on free {kind} devices: same layer cuts, {tp_note}",
                ctx.plan.placement, pre, dec))
    return out


def _resolve(ctx: _Ctx, time_limit_s: float, notes: list[str]) -> list[Alternative]:
    """The other placement, re-solved by the real planner (optimal over all cuts and TPs)."""
    from autoplan.search.planner import plan as solve_plan

    other = "colocated" if ctx.plan.placement == "disaggregated" else "disaggregated"
    i = ctx.plan.inputs
    params = inspect.signature(solve_plan).parameters
    kw = {k: v for k, v in i.model_dump().items()
          if k in params and k not in ("model", "topology")}
    kw["placement"] = other
    if "profile" in params and getattr(i, "calibration", None):
        kw["profile"] = i.calibration
    if "time_limit_s" in params:
        kw["time_limit_s"] = time_limit_s
    name = f"{other} (re-solved)"
    desc = f"the planner's best {other} plan for the same inputs ({time_limit_s:g} s limit)"
    try:
        p = solve_plan(ctx.model, ctx.topo, **kw)
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
    return [_judge(ctx, name, desc + status, p.placement, placements(p.prefill),
                   placements(p.decode), [])]


# ------------------------------------------------------------------ entry point


def explain(plan: Plan | dict | str | Path, *, solve: bool = True,
            time_limit_s: float = 10.0) -> Explanation:
    """Price the plan's nearest alternatives and say why each loses (or ties).

    ``solve`` also re-solves the other placement with the planner (seconds).
    """
    base_dir = Path(plan).resolve().parent if isinstance(plan, (str, Path)) else None
    plan = Plan.load(plan)
    ctx = _context(plan, base_dir)
    notes: list[str] = []
    alts = _tp_steps(ctx) + _stage_steps(ctx) + _placement_flip(ctx) + _kind_moves(ctx)
    if solve:
        alts += _resolve(ctx, time_limit_s, notes)
    objective = plan.inputs.objective
    if ctx.replicated:
        how = ("the highest requests/s, then the fewest devices" if objective == "throughput"
               else f"the fewest devices reaching {plan.inputs.request_rate:g} requests/s")
        notes.append(f"alternatives are whole deployments: each design's replica counts are "
                     f"chosen as the planner does ({how}), with the devices of each kind in "
                     f"the topology ({_inv_text(ctx, ctx.inventory)}) as the inventory")
    elif ctx.replicas != (1, 1):
        notes.append("alternatives are priced per replica, against the plan's "
                     f"{_rep_label(plan.placement, ctx.replicas)}")
    return Explanation(
        model=plan.inputs.model, topology=plan.inputs.topology, placement=plan.placement,
        objective=objective, objective_unit=_unit(objective),
        objective_value=_value(objective, ctx.base, ctx.base_devices),
        ttft_ms=plan.ttft_ms, tpot_ms=plan.tpot_ms, e2e_ms=plan.e2e_ms,
        throughput_tokens_per_s=plan.throughput_tokens_per_s,
        requests_per_s=plan.requests_per_s, devices=plan.devices, replicas=ctx.replicas,
        headline=_headline(ctx, alts), alternatives=alts, notes=notes)


def _shape(stages: list[StagePlacement]) -> str:
    kinds = sorted({s.kind for s in stages})
    return f"{len(stages)} stage(s) at TP {_tp_label(stages)} on {'+'.join(kinds)}"


def _headline(ctx: _Ctx, alts: list[Alternative]) -> str:
    p = ctx.plan
    if p.placement == "colocated":
        shape = _shape(ctx.pre)
    else:
        shape = f"prefill {_shape(ctx.pre)}, decode {_shape(ctx.dec)}"
    counts = {v: sum(a.verdict == v for a in alts) for v in ("worse", "ruled out", "equal",
                                                             "better")}
    if ctx.replicated or ctx.replicas != (1, 1):
        shape += (f", {_rep_label(p.placement, ctx.replicas)}, {p.requests_per_s:.4g} "
                  f"requests/s ({p.throughput_tokens_per_s:.4g} tok/s)")
    text = (f"why this plan: {p.placement}, {shape}, {p.devices} devices; e2e {p.e2e_ms:.1f} ms "
            f"(TTFT {p.ttft_ms:.2f} ms + {p.inputs.osl - 1} x TPOT {p.tpot_ms:.3f} ms), "
            f"solver {p.status}. Of {len(alts)} nearest alternatives {counts['worse']} are "
            f"worse, {counts['ruled out']} ruled out, {counts['equal']} equal")
    obj = p.inputs.objective
    if counts["better"]:
        base_v = _value(obj, ctx.base, ctx.base_devices)
        rounding = all(obj != "devices" and _margin(obj, base_v + a.delta, base_v) <= TABLE_TOL
                       for a in alts if a.verdict == "better")
        text += (f", and {counts['better']} better by less than the planner's microsecond "
                 f"rounding ({TABLE_TOL:.1%})" if rounding else
                 f", and {counts['better']} BETTER (the plan is not optimal under these figures)")
    feas = [a for a in alts if a.verdict in ("worse", "equal") and a.delta is not None]
    if feas:
        best = min(feas, key=lambda a: (-a.delta if obj == "throughput" else a.delta,
                                        -(a.requests_per_s or 0.0)))
        by = f"{int(best.delta):+d}" if obj == "devices" else _fmt(best.delta)
        text += f"; the closest feasible one, {best.name}, is {by} {_unit(obj)}"
    return text + "."
