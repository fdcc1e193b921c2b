"""``autoplan.plan``: the provably best deployment for a model, topology and workload.

Tables (no solver) -> CP-SAT (``solver.py``) -> concrete device ids per fast domain ->
figures from the validator's :func:`~autoplan.cost.evaluate.evaluate`. ``placement="auto"``
solves colocated and disaggregated and keeps the better (ties: fewer devices, then
colocated).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from autoplan.catalog import (
    is_shipped_model,
    is_shipped_topology,
    load_model,
    load_profile,
    load_topology,
    topology_from_spec,
    uniform_tp,
)
from autoplan.cost.context import spec_hash
from autoplan.cost.evaluate import evaluate
from autoplan.cost.inflight import inflight
from autoplan.cost.pipeline import StagePlacement
from autoplan.cost.roofline import model_weight_bytes
from autoplan.errors import InfeasibleError, InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.context_length import check_context
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.request import SLO_CAP_MS, Request
from autoplan.inputs.workload import Workload
from autoplan.plan_schema import Plan, PlanInputs
from autoplan.search.assemble import PLACEMENT_POOLS, _finish, _phases, _place, assemble
from autoplan.search.assign import REL, better, respread, tie_order
from autoplan.search.batches import build_menu, chosen_work
from autoplan.search.interrupt import interrupted, stop_on_sigint
from autoplan.search.limits import TOO_LARGE
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, solve
from autoplan.search.tables import TICKS_PER_MS, Tables, build_tables


def plan(model: str | ModelSpec | Request, topology: str | Topology | None = None,
         **options: Any) -> Plan:
    """Solve for the best plan; raises :class:`InfeasibleError` when none exists.

    Takes a :class:`~autoplan.inputs.request.Request`, or the model, the topology and
    the request's other fields as keyword arguments (``isl``, ``osl``, ``batch``,
    ``prefill_batch``, ``dtype``, ``kv_dtype``, ``objective``, ``placement``, the SLOs,
    ``request_rate``, ``max_memory_fraction``, ``max_devices``, ``time_limit_s``,
    ``progress``, ``profile``).

    Ctrl-C stops the search: the best plan found so far comes back (``stop_reason``
    interrupted); with none found yet, :class:`KeyboardInterrupt` is raised.
    """
    if isinstance(model, Request):
        if topology is not None or options:
            raise InputError("plan(request) takes no other arguments; use "
                             "request.model_copy(update=...) to change it")
        req = model
    else:
        req = Request.build(model=model, topology=topology, **options)
    with stop_on_sigint():
        try:
            return _plan(req)
        except OverflowError:  # a stage's ticks past int64 (CP-SAT's own: solver.py)
            raise InputError(TOO_LARGE) from None


def _resolve(req: Request) -> tuple[ModelSpec, Topology, PlanInputs]:
    """The request's model and topology, and the plan inputs that record them portably:
    a catalog name, or the model spec / topology content embedded. The weight format
    recorded is the one given, else the checkpoint's (:meth:`Request.served`)."""
    m = req.model if isinstance(req.model, ModelSpec) else load_model(req.model)
    req = req.served(m)
    check_context(m, req.isl, req.osl)
    cal = load_profile(req.profile) if isinstance(req.profile, str) else req.profile
    if isinstance(req.topology, Topology):
        # Priced for the request's engine and profile, like a topology given by name.
        topo = topology_from_spec(req.topology.spec, cal, req.engine, req.host_terms)
        topo_name = topo.name
    elif isinstance(req.topology, str):
        topo = load_topology(req.topology, cal, req.engine, req.nodes, req.network,
                             req.host_terms)
        topo_name = topo.name if req.nodes or req.network else req.topology
    else:
        raise InputError("--topology: a shipped topology name, a YAML path or a Topology")
    if isinstance(req.topology, str) and req.topology == topo.name:
        embed = not is_shipped_topology(topo)  # a catalog name: just the name
    else:
        embed = True
    spec = topo.spec if embed else None
    inputs = PlanInputs(
        model=m.name, topology=topo_name, isl=req.isl, osl=req.osl, batch=req.workload.batch,
        prefill_batch=req.prefill_batch, dtype=req.dtype, kv_dtype=req.kv,
        objective=req.objective, placement=req.placement, ttft_slo_ms=req.ttft_slo_ms,
        tpot_slo_ms=req.tpot_slo_ms, request_rate=req.request_rate,
        max_memory_fraction=req.max_memory_fraction, max_devices=req.max_devices,
        engine=req.engine,
        calibration={k: v for k, v in sorted(cal.items()) if k in topo.kinds} if cal else None,
        model_spec=None if is_shipped_model(m) else m,
        topology_spec=spec, topology_sha256=spec_hash(spec) if spec is not None else None,
        host_terms=req.host_terms,
    )
    return m, topo, inputs


def _plan(req: Request) -> Plan:
    m, topo, inputs = _resolve(req)
    req = req.served(m)
    osl, placement, objective = req.osl, req.placement, req.objective
    ttft_slo_ms, tpot_slo_ms = req.ttft_slo_ms, req.tpot_slo_ms
    time_limit_s, progress, max_devices = req.time_limit_s, req.progress, req.max_devices
    work = req.workload
    modes = ["colocated", "disaggregated"] if placement == "auto" else [placement]
    if len(topo.devices) < 2 and "disaggregated" in modes:
        if placement == "disaggregated":
            raise InfeasibleError("disaggregated placement needs at least 2 devices", "devices")
        modes.remove("disaggregated")
    pools_needed = tuple(sorted({p for mode in modes for p in PLACEMENT_POOLS[mode]}))
    # Latency plans search every TP that fits a domain, over lower-bound tables, and
    # decide on exact figures; the replica fronts count devices, exact only for TP
    # sizes dividing the domain.
    if objective != "latency":
        return _replicated(m, topo, inputs, modes, pools_needed, req)
    tables = build_tables(m, topo, work, pools_needed, packing=True, lower=True,
                          uniform_tp=uniform_tp(req.engine), engine=req.engine)
    limits = Limits(
        ttft_slo_t=_slo_t(ttft_slo_ms, tables), tpot_slo_t=_slo_t(tpot_slo_ms, tables),
        time_limit_s=time_limit_s, progress=progress, max_devices=max_devices,
    )
    return _latency(m, topo, tables, inputs, modes, osl, limits, req)


def _replicated(m: ModelSpec, topo: Topology, inputs: PlanInputs, modes: list[str],
                pools: tuple[str, ...], req: Request) -> Plan:
    """The throughput and devices objectives: replica designs over every batch size
    searched (:mod:`autoplan.search.batches`), then the designs and replica counts."""
    osl, objective = req.osl, req.objective
    menu = build_menu(m, topo, req.workload, pools, uniform_tp(req.engine), req.searched,
                      req.max_devices, engine=req.engine)
    limits = Limits(
        ttft_slo_t=_slo_t(req.ttft_slo_ms, menu.t), tpot_slo_t=_slo_t(req.tpot_slo_ms, menu.t),
        time_limit_s=req.time_limit_s, progress=req.progress, max_devices=req.max_devices,
    )
    best, _, wall, _ = plan_replicated(menu, modes, osl, limits, objective, req.request_rate)
    if best is None:
        if wall >= req.time_limit_s * 0.98:
            raise _time_limit(req.time_limit_s)
        raise _explain_infeasible(m, topo, menu.t, modes, limits, osl, menu.work,
                                  req.request_rate, bool(req.searched))
    work = chosen_work(menu.work, best.designs)
    inputs = inputs.model_copy(update={
        "batch": work.batch, "searched": list(req.searched),
        "prefill_batch": work.prefill_batch if req.searched or req.prefill_batch else None})
    value = float(best.rate * osl) if objective == "throughput" else float(best.devices)
    # a proven optimum is its own bound; an incomplete search (time limit, Ctrl-C, a
    # cap on the fronts) proves none: the plan says so rather than gap 0
    return assemble(m, topo, replace(menu.t, work=work), inputs, best.mode,
                    {p: d.stages for p, d in best.designs.items()}, best.replicas,
                    "optimal" if best.optimal else "feasible", value,
                    value if best.optimal else None, wall, best.stop_reason, best.extra)


MAX_CHECKS = 16
"""Most exact checks (solve, place, price) of the latency search; past it the plan is
``feasible`` with the gap to the bound proven so far."""

OPTIMAL_GAP = 1e-6
"""The latency search is exhausted when no unchecked solution's lower bound reaches the
best exact plan; it says ``optimal`` when that plan is also within this of the proven
bound (the lower-bound tables' rounding, about 1e-7, and hand-offs that no placement can
make as fast as the best pair of their class)."""


def _latency(m: ModelSpec, topo: Topology, tables: Tables, inputs: PlanInputs,
             modes: list[str], osl: int, limits: Limits, req: Request) -> Plan:
    """Lazy branch and check over lower-bound tables: solve, place the devices, price
    the concrete plan exactly with ``evaluate`` and check the SLOs on it; exclude what
    was checked and solve again, only for solutions whose lower bound reaches the best
    exact plan so far (ties included, for the tie-break). A bound prunes, the exact
    figures decide."""
    T = tables.ticks_per_ms
    best = None  # (e2e, devices, mode rank, mixed TP, crossings, mode, stages, fig)
    bound = float("inf")  # proven lower bound (ms) over every plan not excluded
    exhausted, checks, wall, stopped = True, 0, 0.0, False
    searched = 0  # placements whose search ran to its end
    for mode in modes:
        exclude: list = []
        mode_lb = 0.0  # nothing proven yet about this mode's plans
        while True:
            left = limits.time_limit_s - wall  # the time limit bounds the whole search
            if checks >= MAX_CHECKS or left <= 0:  # the unchecked rest: its last bound
                exhausted = False
                bound = min(bound, mode_lb)
                break
            cap = None if best is None else math.floor(best[0] * (1 + REL) * T)
            header = (f"autoplan: phase {modes.index(mode) + 1}/{len(modes)}: {mode} "
                      f"placement, check {checks + 1} (time limit {limits.time_limit_s:g} s)")
            res = solve(tables, PLACEMENT_POOLS[mode], osl,
                        replace(limits, time_limit_s=left, label=mode, header=header),
                        exclude=tuple(exclude), value_cap=cap)
            checks += 1
            wall += res.wall_s
            if res.status == "infeasible":
                if res.interrupted or res.wall_s >= left * 0.98:
                    exhausted = False
                    bound = min(bound, mode_lb)
                break
            if res.status != "optimal":
                exhausted = False
            lb = mode_lb = math.floor(res.best_bound_t) / T
            placed = respread(topo, _place(tables, mode, res.pools, {p: 1 for p in res.pools}),
                              lambda pl: _key(m, topo, tables.work, mode, pl, req))
            pre, dec = _phases(placed)
            fig = evaluate(m, topo, tables.work, mode, pre, dec)
            if _meets(fig, req):
                bound = min(bound, lb)
                devices = len({d for s in pre + dec for d in s.devices})
                key = (fig.e2e_ms, devices, mode != "colocated", *tie_order(topo, pre, dec))
                # ties: fewer devices, colocated, then tie_order
                if best is None or better(key, best[:5]):
                    best = (*key, mode, placed, fig)
                exclude.append(("shape", res.shape))
            else:
                exclude.append(("full", res.full))
            if interrupted():
                stopped = True
                bound = min(bound, mode_lb)
                break
        if stopped:
            break
        searched += 1
    if best is None:
        if stopped:
            raise KeyboardInterrupt
        if not exhausted:
            raise _time_limit(limits.time_limit_s)
        raise _explain_infeasible(m, topo, tables, modes, limits, osl, tables.work)
    e2e, mode, placed = best[0], best[5], best[6]
    placed = _balance(m, topo, tables.work, mode, placed, req, e2e)
    bound = min(bound, e2e)
    gap = (e2e - bound) / e2e if e2e else 0.0
    whole = not tables.cuts_dense_run  # a dense run too long to cut: on the first stage
    status = "optimal" if exhausted and not (stopped or whole) and gap <= OPTIMAL_GAP else "feasible"
    if (stopped and searched < len(modes)) or whole:
        bound = None  # Ctrl-C before a placement was searched, or cuts not searched: no bound
    stop = ("interrupted" if stopped else "dense_run_limit" if whole else "completed" if exhausted
            else "iteration_limit" if checks >= MAX_CHECKS else "time_limit")
    return _finish(m, topo, tables.work, inputs, mode, placed, {p: 1 for p in placed},
                   {p: [tuple(s.devices for s in placed[p])] for p in placed},
                   status, e2e, bound, wall, stop)


def _key(m: ModelSpec, topo: Topology, work: Workload, mode: str,
         placed: dict[str, list[StagePlacement]], req: Request) -> tuple:
    """How good a placement is, exactly: meets the SLOs, then e2e, then fewer devices."""
    pre, dec = _phases(placed)
    fig = evaluate(m, topo, work, mode, pre, dec)
    return (not _meets(fig, req), fig.e2e_ms, len({d for s in pre + dec for d in s.devices}))


def _meets(fig, req: Request) -> bool:
    """The SLOs, on exact figures."""
    return ((req.ttft_slo_ms is None or fig.ttft_ms <= req.ttft_slo_ms * (1 + REL))
            and (req.tpot_slo_ms is None or fig.tpot_ms <= req.tpot_slo_ms * (1 + REL)))


MAX_BALANCE_STEPS = 400


def _balance(m: ModelSpec, topo: Topology, work, mode: str,
             placed: dict[str, list[StagePlacement]], req: Request, e2e: float
             ) -> dict[str, list[StagePlacement]]:
    """Tie-break among plans of equal exact objective: the most KV headroom on the
    fullest device. Moves one layer at a time off the fullest stage onto the emptiest
    stage that takes it while the exact e2e stays equal (to float noise), the SLOs hold
    and the fullest stage gets emptier; devices stay where they are."""
    from autoplan.cost.evaluate import phase_cost

    def fractions(pl):
        pre, dec = _phases(pl)
        out = {}
        for ph, stages in (("prefill", pre), ("decode", dec)):
            cost = phase_cost(m, topo, work, mode, ph, stages)
            for k, s in enumerate(cost.stages):
                key = (ph if mode != "colocated" else "colocated", k)
                out[key] = max(out.get(key, 0.0), s.memory_fraction)
        return out

    def moved(stages, i, j):
        lens = [s.end - s.first for s in stages]
        lens[i] -= 1
        lens[j] += 1
        out, start = [], 0
        for s, n in zip(stages, lens):
            out.append(StagePlacement(start, start + n, s.kind, s.devices, s.dp, s.ep))
            start += n
        return out

    cur = {p: list(v) for p, v in placed.items()}
    frac = fractions(cur)
    for _ in range(MAX_BALANCE_STEPS):
        worst = max(frac.values())
        (pool, i) = max(frac, key=lambda k: (frac[k], k))
        stages = cur[pool]
        # every stage keeps a layer (the latency tables cut inside a dense run too)
        if stages[i].end - stages[i].first <= 1:
            break
        done = False
        for (p2, j) in sorted((k for k in frac if k[0] == pool and k[1] != i),
                              key=lambda k: (frac[k], k))[:3]:
            trial = dict(cur)
            trial[pool] = moved(stages, i, j)
            pre, dec = _phases(trial)
            fig = evaluate(m, topo, work, mode, pre, dec)
            if fig.e2e_ms > e2e * (1 + REL) or not _meets(fig, req):
                continue
            f2 = fractions(trial)
            if max(f2.values()) < worst - 1e-12 or (
                    max(f2.values()) <= worst and f2[pool, i] < frac[pool, i] - 1e-12
                    and sorted(f2.values(), reverse=True) < sorted(frac.values(), reverse=True)):
                cur, frac, done = trial, f2, True
                break
        if not done:
            break
    return cur


def _explain_infeasible(m: ModelSpec, topo: Topology, t: Tables, modes: list[str],
                        limits: Limits, osl: int, work,
                        request_rate: float | None = None,
                        searched: bool = False) -> InfeasibleError:
    """Name the binding constraint family, and what these devices can achieve."""
    wb = model_weight_bytes(m, work.precision)
    caps = sorted((topo.kinds[topo.device_kind_of(d)].capacity_bytes for d in topo.devices),
                  reverse=True)
    n = len(caps) if limits.max_devices is None else min(len(caps), limits.max_devices)
    usable = sum(caps[:n]) * work.max_memory_fraction
    which = f"all {n}" if n == len(caps) else f"the largest {n} (the device budget)"
    if wb > usable:
        return InfeasibleError(
            f"memory: the model needs {wb / 1e9:.1f} GB of weights; {which} devices hold "
            f"{usable / 1e9:.1f} GB at {work.max_memory_fraction:.0%} usable", "memory")
    if request_rate is not None:
        most, _, _, _ = plan_replicated(t, modes, osl, limits, "throughput", None)
        if most is not None:
            r = float(most.rate)
            return InfeasibleError(
                f"rate: no deployment of these {len(topo.devices)} devices serves "
                f"{request_rate:g} requests/s within the SLOs; the most they serve is "
                f"{r:.3g} requests/s ({r * osl:.4g} output tokens/s, {most.mode})", "devices",
                {"requests_per_s": r, "tokens_per_s": r * osl})
    if limits.ttft_slo_t is not None or limits.tpot_slo_t is not None:
        free = Limits(time_limit_s=limits.time_limit_s, max_devices=limits.max_devices)
        best = [solve(t, PLACEMENT_POOLS[mode], osl, free) for mode in modes]
        best = [r for r in best if r.status != "infeasible"]
        if best:
            ttft = min(r.ttft_t for r in best) / t.ticks_per_ms
            tpot = min(r.tpot_t for r in best) / t.ticks_per_ms
            return InfeasibleError(
                f"SLO: no plan meets TTFT <= {_ms(limits.ttft_slo_t, t)} and TPOT <= "
                f"{_ms(limits.tpot_slo_t, t)}; with these devices the best latency plans reach "
                f"TTFT {ttft:.1f} ms and TPOT {tpot:.2f} ms", "slo",
                {"ttft_ms": ttft, "tpot_ms": tpot})
    if modes == ["colocated"] and ("colocated" not in t.pools
                                   or t.pools["colocated"].max_len.max() == 0):
        try:  # the step budget, not memory, may be what rules the colocated pool out
            inflight(topo, work)
        except InputError as e:
            return InfeasibleError(f"step budget: {e}", "devices")
    return InfeasibleError(
        f"memory/devices: no pipeline of {which} devices holds "
        f"{m.name} with its KV cache for batch {work.batch}"
        + (" (the smallest batch searched)" if searched else "")
        + f" at context {work.isl + work.osl} in {work.max_memory_fraction:.0%} of device memory"
        + (" with disjoint prefill and decode pools" if modes == ["disaggregated"] else ""),
        "memory")


def _time_limit(limit_s: float) -> InfeasibleError:
    return InfeasibleError(
        f"time limit: no plan found within --time-limit-s {limit_s:g} (none is proven "
        f"impossible either); give the solver more time", "time_limit")


def _slo_t(ms: float | None, t: Tables) -> int | None:
    """An SLO in table ticks; one beyond any time the tables hold (a year) constrains
    nothing. On lower-bound tables, rounded so that a plan meeting it exactly (to float
    noise) is kept."""
    if ms is None or ms > SLO_CAP_MS:
        return None
    if t.lower:
        return math.floor(ms * (1 + REL) * t.ticks_per_ms)
    return int(ms * TICKS_PER_MS)


def _ms(ticks: int | None, t: Tables | None = None) -> str:
    per = TICKS_PER_MS if t is None else t.ticks_per_ms
    return "-" if ticks is None else f"{ticks / per:g} ms"
