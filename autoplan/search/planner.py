"""``autoplan.plan``: the provably best deployment for a model, topology and workload.

Tables (no solver) -> CP-SAT (``solver.py``) -> concrete device ids per fast domain ->
figures from the validator's :func:`~autoplan.cost.evaluate.evaluate`. ``placement="auto"``
solves colocated and disaggregated and keeps the better (ties: fewer devices, then
colocated).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autoplan.catalog import (
    is_shipped_model,
    is_shipped_topology,
    load_model,
    load_profile,
    load_topology,
    topology_from_spec,
)
from autoplan.cost.context import spec_hash
from autoplan.cost.evaluate import evaluate
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import AutoplanError, InfeasibleError, InputError
from autoplan.graphs.model_graph import parameter_count
from autoplan.graphs.topology import Topology
from autoplan.inputs.dtypes import bytes_per_element
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.request import SLO_CAP_MS, Request
from autoplan.plan_schema import PhasePlan, Plan, PlanInputs, Stage
from autoplan.rules import rules
from autoplan.search.assign import _order, assign_devices
from autoplan.search.interrupt import interrupted, stop_on_sigint
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, StageChoice, solve
from autoplan.search.tables import TICKS_PER_MS, Tables, build_tables

PLACEMENT_POOLS = {"colocated": ("colocated",), "disaggregated": ("prefill", "decode")}


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
        return _plan(req)


def _resolve(req: Request) -> tuple[ModelSpec, Topology, PlanInputs]:
    """The request's model and topology, and the plan inputs that record them portably:
    a catalog name, or the model spec / topology content embedded."""
    m = req.model if isinstance(req.model, ModelSpec) else load_model(req.model)
    cal = load_profile(req.profile) if isinstance(req.profile, str) else req.profile
    if isinstance(req.topology, Topology):
        # Priced for the request's engine and profile, like a topology given by name.
        topo = topology_from_spec(req.topology.spec, cal, req.engine)
        topo_name = topo.name
    elif isinstance(req.topology, str):
        topo = load_topology(req.topology, cal, req.engine, req.nodes, req.network)
        topo_name = topo.name if req.nodes or req.network else req.topology
    else:
        raise InputError("--topology: a shipped topology name, a YAML path or a Topology")
    if isinstance(req.topology, str) and req.topology == topo.name:
        embed = not is_shipped_topology(topo)  # a catalog name: just the name
    else:
        embed = True
    spec = topo.spec if embed else None
    inputs = PlanInputs(
        model=m.name, topology=topo_name, isl=req.isl, osl=req.osl, batch=req.batch,
        prefill_batch=req.prefill_batch, dtype=req.dtype, kv_dtype=req.kv,
        objective=req.objective, placement=req.placement, ttft_slo_ms=req.ttft_slo_ms,
        tpot_slo_ms=req.tpot_slo_ms, request_rate=req.request_rate,
        max_memory_fraction=req.max_memory_fraction, max_devices=req.max_devices,
        engine=req.engine,
        calibration={k: v for k, v in sorted(cal.items()) if k in topo.kinds} if cal else None,
        model_spec=None if is_shipped_model(m) else m,
        topology_spec=spec, topology_sha256=spec_hash(spec) if spec is not None else None,
    )
    return m, topo, inputs


def _plan(req: Request) -> Plan:
    m, topo, inputs = _resolve(req)
    osl, placement, objective = req.osl, req.placement, req.objective
    ttft_slo_ms, tpot_slo_ms, request_rate = req.ttft_slo_ms, req.tpot_slo_ms, req.request_rate
    time_limit_s, progress, max_devices = req.time_limit_s, req.progress, req.max_devices
    work = req.workload
    modes = ["colocated", "disaggregated"] if placement == "auto" else [placement]
    if len(topo.devices) < 2 and "disaggregated" in modes:
        if placement == "disaggregated":
            raise InfeasibleError("disaggregated placement needs at least 2 devices", "devices")
        modes.remove("disaggregated")
    pools_needed = tuple(sorted({p for mode in modes for p in PLACEMENT_POOLS[mode]}))
    # Latency plans search every TP that fits a domain; the replica fronts count
    # devices, exact only for TP sizes dividing the domain.
    tables = build_tables(m, topo, work, pools_needed, packing=objective == "latency")
    limits = Limits(
        ttft_slo_t=_slo_t(ttft_slo_ms), tpot_slo_t=_slo_t(tpot_slo_ms),
        time_limit_s=time_limit_s, progress=progress, max_devices=max_devices,
    )
    if objective != "latency":
        best, _, wall, _ = plan_replicated(tables, modes, osl, limits, objective, request_rate)
        if best is None:
            if wall >= time_limit_s * 0.98:
                raise _time_limit(time_limit_s)
            raise _explain_infeasible(m, topo, tables, modes, limits, osl, work, request_rate)
        value = float(best.rate * osl) if objective == "throughput" else float(best.devices)
        # a proven optimum is its own bound; an incomplete search (time limit, Ctrl-C, a
        # cap on the fronts) proves none: the plan says so rather than gap 0
        return assemble(m, topo, tables, inputs, best.mode,
                        {p: d.stages for p, d in best.designs.items()}, best.replicas,
                        "optimal" if best.optimal else "feasible", value,
                        value if best.optimal else None, wall, best.stop_reason)
    results: dict = {}
    for k, mode in enumerate(modes, 1):
        header = (f"autoplan: phase {k}/{len(modes)}: {mode} placement "
                  f"(time limit {time_limit_s:g} s)")  # with its first incumbent
        results[mode] = solve(tables, PLACEMENT_POOLS[mode], osl,
                              dataclasses.replace(limits, label=mode, header=header))
        if interrupted():  # Ctrl-C: no more solves, keep the best so far
            break
    stopped = interrupted()
    feasible = {k: r for k, r in results.items() if r.status != "infeasible"}
    if not feasible:
        if stopped:
            raise KeyboardInterrupt
        if any(r.wall_s >= time_limit_s * 0.98 for r in results.values()):
            raise _time_limit(time_limit_s)
        raise _explain_infeasible(m, topo, tables, modes, limits, osl, work)
    mode = min(feasible, key=lambda k: (feasible[k].objective_t, feasible[k].devices,
                                        k != "colocated"))
    res = feasible[mode]
    status = "feasible" if stopped else res.status
    stop = ("interrupted" if stopped else
            "time_limit" if any(r.status == "feasible" for r in results.values()) else "completed")
    bound = _latency_bound(modes, results, time_limit_s)
    return assemble(m, topo, tables, inputs, mode, res.pools,
                    {p: 1 for p in res.pools}, status, res.objective_t / TICKS_PER_MS,
                    None if bound is None else bound / TICKS_PER_MS,
                    sum(r.wall_s for r in results.values()), stop)


def _latency_bound(modes: list[str], results: dict, time_limit_s: float) -> float | None:
    """The proven lower bound (ticks) over every placement searched: the smallest of the
    solvers' bounds, a proven-infeasible placement counting for none; None when one was
    not searched (Ctrl-C) or gave up at the time limit without a bound."""
    bounds = []
    for mode in modes:
        r = results.get(mode)
        if r is None:
            return None
        if r.status == "infeasible":
            if getattr(r, "interrupted", False) or r.wall_s >= time_limit_s * 0.98:
                return None
            continue
        if r.best_bound_t is None:
            return None
        bounds.append(r.best_bound_t)
    return min(bounds) if bounds else None


def assemble(m: ModelSpec, topo: Topology, t: Tables, inputs: PlanInputs, mode: str,
             choices: dict[str, list[StageChoice]], replicas: dict[str, int], status: str,
             objective: float, bound: float | None, wall_s: float,
             stop_reason: str = "completed") -> Plan:
    seqs = {p: _order(t, choices[p]) for p in PLACEMENT_POOLS[mode]}
    groups = assign_devices(t, seqs, replicas)
    placed: dict[str, list[StagePlacement]] = {}
    for p, seq in seqs.items():
        stages, start = [], 0
        for (role, cfg, ln), devs in zip(seq, groups[p][0]):
            layers = t.layers_of(role, ln)
            stages.append(StagePlacement(start, start + layers, t.configs[cfg].kind, devs))
            start += layers
        placed[p] = stages
    pre_pool = "prefill" if "prefill" in placed else "colocated"
    dec_pool = "decode" if "decode" in placed else "colocated"
    pre, dec = placed[pre_pool], placed[dec_pool]
    fig = evaluate(m, topo, t.work, mode, pre, dec, (replicas[pre_pool], replicas[dec_pool]))

    def phase(name: str, pool: str, stages: list[StagePlacement], time_ms: float) -> PhasePlan:
        return PhasePlan(
            replicas=replicas[pool], devices=sum(s.tp for s in stages), time_ms=time_ms,
            bottleneck=fig.phase_bottleneck[name],
            requests_per_s=fig.phase_requests_per_s[name],
            bubble_fraction=fig.bubble_fraction[name],
            stages=[Stage(index=k, layers=(s.first, s.end), device_kind=s.kind, tp=s.tp,
                          devices=list(s.devices), time_ms=fig.stage_ms[name][k],
                          memory_fraction=fig.stage_fraction[name][k],
                          bottleneck=fig.stage_bottleneck[name][k])
                    for k, s in enumerate(stages)],
            replica_devices=[[list(g) for g in rep] for rep in groups[pool]])

    used = {d for reps in groups.values() for rep in reps for g in rep for d in g}
    unit = {"latency": "ms", "throughput": "tokens/s", "devices": "devices"}[inputs.objective]
    if bound is None:
        gap = None  # no bound proven: the gap is unknown, not 0
    else:
        gap = abs(objective - bound) / objective if objective else 0.0
    # Self-check with the validator's rules: a solver or assignment bug must not reach
    # the user as a plan that `autoplan validate` would refuse.
    broken = (rules.pipeline("prefill", m, topo, pre) + rules.pipeline("decode", m, topo, dec)
              + rules.figures(fig, inputs, mode, len(used)))
    if broken:
        raise AutoplanError(f"internal error: the planner built a plan that breaks a rule: "
                            f"{broken[0]}")
    return Plan(
        inputs=inputs, placement=mode, status=status,
        objective=objective, objective_unit=unit, best_bound=bound, gap=gap,
        solve_seconds=wall_s, stop_reason=stop_reason, ttft_ms=fig.ttft_ms, tpot_ms=fig.tpot_ms, e2e_ms=fig.e2e_ms,
        throughput_tokens_per_s=fig.throughput_tokens_per_s, requests_per_s=fig.requests_per_s,
        kv_transfer_ms=fig.kv_transfer_ms, devices=len(used),
        prefill=phase("prefill", pre_pool, pre, fig.prefill_ms),
        decode=phase("decode", dec_pool, dec, fig.tpot_ms),
        pricing={k: topo.calibration(k).source for k in sorted({s.kind for s in pre + dec})},
    )


def _explain_infeasible(m: ModelSpec, topo: Topology, t: Tables, modes: list[str],
                        limits: Limits, osl: int, work,
                        request_rate: float | None = None) -> InfeasibleError:
    """Name the binding constraint family, and what these devices can achieve."""
    wb = parameter_count(m) * bytes_per_element(work.precision.weight)
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
            ttft = min(r.ttft_t for r in best) / TICKS_PER_MS
            tpot = min(r.tpot_t for r in best) / TICKS_PER_MS
            return InfeasibleError(
                f"SLO: no plan meets TTFT <= {_ms(limits.ttft_slo_t)} and TPOT <= "
                f"{_ms(limits.tpot_slo_t)}; with these devices the best latency plans reach "
                f"TTFT {ttft:.1f} ms and TPOT {tpot:.2f} ms", "slo",
                {"ttft_ms": ttft, "tpot_ms": tpot})
    return InfeasibleError(
        f"memory/devices: no pipeline of {which} devices holds "
        f"{m.name} with its KV cache for batch {work.batch} at context "
        f"{work.isl + work.osl} in {work.max_memory_fraction:.0%} of device memory"
        + (" with disjoint prefill and decode pools" if modes == ["disaggregated"] else ""),
        "memory")


def _time_limit(limit_s: float) -> InfeasibleError:
    return InfeasibleError(
        f"time limit: no plan found within --time-limit-s {limit_s:g} (none is proven "
        f"impossible either); give the solver more time", "time_limit")


def _slo_t(ms: float | None) -> int | None:
    """An SLO in table ticks (10 ns); one beyond any time the tables hold (a year)
    constrains nothing."""
    return None if ms is None or ms > SLO_CAP_MS else int(ms * TICKS_PER_MS)


def _ms(ticks: int | None) -> str:
    return "-" if ticks is None else f"{ticks / TICKS_PER_MS:g} ms"
