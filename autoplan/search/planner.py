"""``autoplan.plan``: the provably best deployment for a model, topology and workload.

Tables (no solver) -> CP-SAT (``solver.py``) -> concrete device ids per fast domain ->
figures from the validator's :func:`~autoplan.cost.evaluate.evaluate`. ``placement="auto"``
solves colocated and disaggregated and keeps the better (ties: fewer devices, then
colocated).
"""

from __future__ import annotations

import math

from autoplan.catalog import load_model, load_profile, load_topology
from autoplan.cost.evaluate import evaluate
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import InfeasibleError, InputError
from autoplan.graphs.model_graph import parameter_count
from autoplan.graphs.topology import Topology
from autoplan.inputs.dtypes import bytes_per_element
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import Calibration
from autoplan.inputs.workload import Precision, Workload, check_workload
from autoplan.plan_schema import PhasePlan, Plan, PlanInputs, Stage
from autoplan.search.assign import _order, assign_devices
from autoplan.search.interrupt import interrupted, stop_on_sigint
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, StageChoice, solve
from autoplan.search.tables import TICKS_PER_MS, Tables, build_tables

SLO_CAP_MS = 365 * 86400 * 1e3


PLACEMENT_POOLS = {"colocated": ("colocated",), "disaggregated": ("prefill", "decode")}


def plan(
    model: str | ModelSpec,
    topology: str | Topology,
    *,
    isl: int = 2048,
    osl: int = 256,
    batch: int = 1,
    prefill_batch: int | None = None,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    objective: str = "latency",
    placement: str = "auto",
    ttft_slo_ms: float | None = None,
    tpot_slo_ms: float | None = None,
    request_rate: float | None = None,
    max_memory_fraction: float = 0.9,
    time_limit_s: float = 30.0,
    progress: bool = False,
    profile: str | dict[str, Calibration] | None = None,
    max_devices: int | None = None,
) -> Plan:
    """Solve for the best plan; raises :class:`InfeasibleError` when none exists.

    Ctrl-C stops the search: the best plan found so far comes back (``stop_reason``
    interrupted); with none found yet, :class:`KeyboardInterrupt` is raised.
    """
    with stop_on_sigint():
        return _plan(model, topology, isl=isl, osl=osl, batch=batch,
                     prefill_batch=prefill_batch, dtype=dtype, kv_dtype=kv_dtype,
                     objective=objective, placement=placement, ttft_slo_ms=ttft_slo_ms,
                     tpot_slo_ms=tpot_slo_ms, request_rate=request_rate,
                     max_memory_fraction=max_memory_fraction, time_limit_s=time_limit_s,
                     progress=progress, profile=profile, max_devices=max_devices)


def _plan(model, topology, *, isl, osl, batch, prefill_batch, dtype, kv_dtype, objective,
          placement, ttft_slo_ms, tpot_slo_ms, request_rate, max_memory_fraction,
          time_limit_s, progress, profile, max_devices) -> Plan:
    m = model if isinstance(model, ModelSpec) else load_model(model)
    cal = load_profile(profile) if isinstance(profile, str) else profile
    if isinstance(topology, Topology):
        topo = topology.with_calibration(cal) if cal else topology
    else:
        topo = load_topology(topology, cal)
    check_workload(isl, osl, batch, max_memory_fraction)
    if prefill_batch is not None and not (isinstance(prefill_batch, int) and prefill_batch >= 1):
        raise InputError(f"--prefill-batch must be a positive integer, got {prefill_batch}")
    if objective not in ("latency", "throughput", "devices"):
        raise InputError(f"unknown objective {objective!r}; use latency, throughput or devices")
    if max_devices is not None and not (isinstance(max_devices, int) and max_devices >= 1):
        raise InputError(f"--max-devices must be a positive integer, got {max_devices}")
    if request_rate is not None and not request_rate > 0:
        raise InputError(f"--request-rate must be positive, got {request_rate}")
    if objective == "devices" and request_rate is None:
        raise InputError("objective 'devices' needs --request-rate (requests per second)")
    if objective == "latency" and request_rate is not None:
        raise InputError("--request-rate applies to the devices and throughput objectives; "
                         "with latency the plan is one replica")
    if placement not in ("auto", "colocated", "disaggregated"):
        raise InputError(f"unknown placement {placement!r}")
    for name, v in (("--ttft-slo-ms", ttft_slo_ms), ("--tpot-slo-ms", tpot_slo_ms),
                    ("--time-limit-s", time_limit_s), ("--request-rate", request_rate)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise InputError(f"{name} must be a positive finite number, got {v}")
    kv = kv_dtype or (dtype if dtype in ("bf16", "fp16", "fp8") else "bf16")
    precision = Precision(weight=dtype, activation="bf16", kv=kv)
    inputs = PlanInputs(
        model=m.name, topology=topo.name if isinstance(topology, Topology) else topology,
        isl=isl, osl=osl, batch=batch, prefill_batch=prefill_batch, dtype=dtype, kv_dtype=kv, objective=objective,
        placement=placement, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms,
        request_rate=request_rate, max_memory_fraction=max_memory_fraction,
        max_devices=max_devices,
        calibration={k: v for k, v in sorted(cal.items()) if k in topo.kinds} if cal else None,
    )
    work = Workload(isl, osl, batch, precision, max_memory_fraction, prefill_batch)
    modes = ["colocated", "disaggregated"] if placement == "auto" else [placement]
    if len(topo.devices) < 2 and "disaggregated" in modes:
        if placement == "disaggregated":
            raise InfeasibleError("disaggregated placement needs at least 2 devices", "devices")
        modes.remove("disaggregated")
    pools_needed = tuple(sorted({p for mode in modes for p in PLACEMENT_POOLS[mode]}))
    tables = build_tables(m, topo, work, pools_needed)
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
        return assemble(m, topo, tables, inputs, best.mode,
                        {p: d.stages for p, d in best.designs.items()}, best.replicas,
                        "optimal" if best.optimal else "feasible", value, value, wall,
                        best.stop_reason)
    results: dict = {}
    for mode in modes:
        results[mode] = solve(tables, PLACEMENT_POOLS[mode], osl, limits)
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
    return assemble(m, topo, tables, inputs, mode, res.pools,
                    {p: 1 for p in res.pools}, status, res.objective_t / TICKS_PER_MS,
                    res.best_bound_t / TICKS_PER_MS, sum(r.wall_s for r in results.values()), stop)


def assemble(m: ModelSpec, topo: Topology, t: Tables, inputs: PlanInputs, mode: str,
             choices: dict[str, list[StageChoice]], replicas: dict[str, int], status: str,
             objective: float, bound: float, wall_s: float,
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
    gap = abs(objective - bound) / objective if objective else 0.0
    return Plan(
        inputs=inputs, placement=mode, status=status,
        objective=objective, objective_unit=unit, best_bound=bound, gap=gap,
        solve_seconds=wall_s, stop_reason=stop_reason, ttft_ms=fig.ttft_ms, tpot_ms=fig.tpot_ms, e2e_ms=fig.e2e_ms,
        throughput_tokens_per_s=fig.throughput_tokens_per_s, requests_per_s=fig.requests_per_s,
        kv_transfer_ms=fig.kv_transfer_ms, devices=len(used),
        prefill=phase("prefill", pre_pool, pre, fig.prefill_ms),
        decode=phase("decode", dec_pool, dec, fig.tpot_ms),
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
