"""``autoplan.plan``: the provably best deployment for a model, topology and workload.

Tables (no solver) -> CP-SAT (``solver.py``) -> concrete device ids per fast domain ->
figures from the validator's :func:`~autoplan.validate.evaluate`. ``placement="auto"``
solves colocated and disaggregated and keeps the better (ties: fewer devices, then
colocated).
"""

from __future__ import annotations

from autoplan.catalog import load_model, load_topology
from autoplan.cost import Precision
from autoplan.dtypes import bytes_per_element
from autoplan.errors import InfeasibleError, InputError
from autoplan.estimate import check_workload
from autoplan.model import ModelSpec
from autoplan.model_graph import parameter_count
from autoplan.pipeline import StagePlacement
from autoplan.plan_schema import PhasePlan, Plan, PlanInputs, Stage
from autoplan.solver import Limits, SolveResult, StageChoice, solve
from autoplan.tables import Tables, Workload, build_tables
from autoplan.topology import Topology
from autoplan.validate import evaluate

PLACEMENT_POOLS = {"colocated": ("colocated",), "disaggregated": ("prefill", "decode")}


def plan(
    model: str | ModelSpec,
    topology: str | Topology,
    *,
    isl: int = 2048,
    osl: int = 256,
    batch: int = 1,
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
) -> Plan:
    """Solve for the best plan; raises :class:`InfeasibleError` when none exists."""
    m = model if isinstance(model, ModelSpec) else load_model(model)
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    check_workload(isl, osl, batch, max_memory_fraction)
    if objective != "latency":
        raise InputError(f"objective {objective!r} is not implemented yet; use 'latency'")
    if placement not in ("auto", "colocated", "disaggregated"):
        raise InputError(f"unknown placement {placement!r}")
    for name, v in (("--ttft-slo-ms", ttft_slo_ms), ("--tpot-slo-ms", tpot_slo_ms),
                    ("--time-limit-s", time_limit_s)):
        if v is not None and not v > 0:
            raise InputError(f"{name} must be positive, got {v}")
    kv = kv_dtype or (dtype if dtype in ("bf16", "fp16", "fp8") else "bf16")
    precision = Precision(weight=dtype, activation="bf16", kv=kv)
    inputs = PlanInputs(
        model=m.name, topology=topo.name if isinstance(topology, Topology) else topology,
        isl=isl, osl=osl, batch=batch, dtype=dtype, kv_dtype=kv, objective=objective,
        placement=placement, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms,
        request_rate=request_rate, max_memory_fraction=max_memory_fraction,
    )
    work = Workload(isl, osl, batch, precision, max_memory_fraction)
    modes = ["colocated", "disaggregated"] if placement == "auto" else [placement]
    if len(topo.devices) < 2 and "disaggregated" in modes:
        if placement == "disaggregated":
            raise InfeasibleError("disaggregated placement needs at least 2 devices", "devices")
        modes.remove("disaggregated")
    pools_needed = tuple(sorted({p for mode in modes for p in PLACEMENT_POOLS[mode]}))
    tables = build_tables(m, topo, work, pools_needed)
    limits = Limits(
        ttft_slo_us=int(ttft_slo_ms * 1e3) if ttft_slo_ms else None,
        tpot_slo_us=int(tpot_slo_ms * 1e3) if tpot_slo_ms else None,
        time_limit_s=time_limit_s, progress=progress,
    )
    results = {mode: solve(tables, PLACEMENT_POOLS[mode], osl, limits) for mode in modes}
    feasible = {k: r for k, r in results.items() if r.status != "infeasible"}
    if not feasible:
        raise _explain_infeasible(m, topo, tables, modes, limits, osl, work)
    mode = min(feasible, key=lambda k: (feasible[k].objective_us, feasible[k].devices,
                                        k != "colocated"))
    res = feasible[mode]
    return assemble(m, topo, tables, inputs, mode, res, sum(r.wall_s for r in results.values()))


def _order(t: Tables, choices: list[StageChoice]) -> list[tuple[str, int, int]]:
    """Stages in pipeline order: first, middles in canonical (config, length) order, last."""
    seq = [(c.role, c.config, c.length) for c in choices if c.role in ("only", "first")]
    mids = sorted(((c.config, c.length, c.count) for c in choices if c.role == "mid"))
    for cfg, ln, k in mids:
        seq += [("mid", cfg, ln)] * k
    seq += [(c.role, c.config, c.length) for c in choices if c.role == "last"]
    return seq


def assign_devices(t: Tables, pools: dict[str, list[tuple[str, int, int]]]) -> dict[str, list[tuple[str, ...]]]:
    """Concrete TP groups: largest TP first, first fit into aligned blocks of a domain.

    TP sizes divide the domain size, so aligned blocks never straddle a domain and the
    solver's device counts always pack.
    """
    free = {d.index: [True] * d.size for c in t.classes for d in c.domains}
    domains = {c.index: c.domains for c in t.classes}
    demands = []
    for p_i, (p, seq) in enumerate(pools.items()):
        for s_i, (_, cfg, _) in enumerate(seq):
            c = t.configs[cfg]
            demands.append((-c.tp, p_i, s_i, p, c))
    out: dict[str, list[tuple[str, ...]]] = {p: [()] * len(seq) for p, seq in pools.items()}
    for _, _, s_i, p, c in sorted(demands, key=lambda d: d[:3]):
        for dom in domains[c.cls]:
            slots = free[dom.index]
            start = next((b for b in range(0, dom.size, c.tp) if all(slots[b:b + c.tp])), None)
            if start is not None:
                for j in range(start, start + c.tp):
                    slots[j] = False
                out[p][s_i] = dom.devices[start:start + c.tp]
                break
        else:
            raise InfeasibleError(f"cannot pack a TP group of {c.tp} {c.kind} devices", "devices")
    return out


def assemble(m: ModelSpec, topo: Topology, t: Tables, inputs: PlanInputs, mode: str,
             res: SolveResult, wall_s: float) -> Plan:
    seqs = {p: _order(t, res.pools[p]) for p in PLACEMENT_POOLS[mode]}
    groups = assign_devices(t, seqs)
    placed: dict[str, list[StagePlacement]] = {}
    for p, seq in seqs.items():
        stages, start = [], 0
        for (role, cfg, ln), devs in zip(seq, groups[p]):
            layers = t.layers_of(role, ln)
            stages.append(StagePlacement(start, start + layers, t.configs[cfg].kind, devs))
            start += layers
        placed[p] = stages
    pre = placed.get("prefill", placed.get("colocated"))
    dec = placed.get("decode", placed.get("colocated"))
    fig = evaluate(m, topo, t.work, mode, pre, dec)

    def phase(name: str, stages: list[StagePlacement], time_ms: float) -> PhasePlan:
        return PhasePlan(
            replicas=1, devices=sum(s.tp for s in stages), time_ms=time_ms,
            bottleneck=fig.phase_bottleneck[name],
            stages=[Stage(index=k, layers=(s.first, s.end), device_kind=s.kind, tp=s.tp,
                          devices=list(s.devices), time_ms=fig.stage_ms[name][k],
                          memory_fraction=fig.stage_fraction[name][k],
                          bottleneck=fig.stage_bottleneck[name][k])
                    for k, s in enumerate(stages)])

    used = {d for s in pre + dec for d in s.devices}
    return Plan(
        inputs=inputs, placement=mode, status=res.status,
        objective=res.objective_us / 1e3, best_bound=res.best_bound_us / 1e3, gap=res.gap,
        solve_seconds=wall_s, ttft_ms=fig.ttft_ms, tpot_ms=fig.tpot_ms, e2e_ms=fig.e2e_ms,
        throughput_tokens_per_s=fig.throughput_tokens_per_s,
        kv_transfer_ms=fig.kv_transfer_ms, devices=len(used),
        prefill=phase("prefill", pre, fig.prefill_ms), decode=phase("decode", dec, fig.tpot_ms),
    )


def _explain_infeasible(m: ModelSpec, topo: Topology, t: Tables, modes: list[str],
                        limits: Limits, osl: int, work) -> InfeasibleError:
    """Name the binding constraint family, and what these devices can achieve."""
    wb = parameter_count(m) * bytes_per_element(work.precision.weight)
    cap = sum(topo.kinds[topo.device_kind_of(d)].capacity_bytes for d in topo.devices)
    usable = cap * work.max_memory_fraction
    if wb > usable:
        return InfeasibleError(
            f"memory: the model needs {wb / 1e9:.1f} GB of weights; all {len(topo.devices)} "
            f"devices hold {usable / 1e9:.1f} GB at {work.max_memory_fraction:.0%} usable",
            "memory")
    if limits.ttft_slo_us is not None or limits.tpot_slo_us is not None:
        free = Limits(time_limit_s=limits.time_limit_s)
        best = [solve(t, PLACEMENT_POOLS[mode], osl, free) for mode in modes]
        best = [r for r in best if r.status != "infeasible"]
        if best:
            ttft = min(r.ttft_us for r in best) / 1e3
            tpot = min(r.tpot_us for r in best) / 1e3
            return InfeasibleError(
                f"SLO: no plan meets TTFT <= {_ms(limits.ttft_slo_us)} and TPOT <= "
                f"{_ms(limits.tpot_slo_us)}; with these devices the best latency plans reach "
                f"TTFT {ttft:.1f} ms and TPOT {tpot:.2f} ms", "slo",
                {"ttft_ms": ttft, "tpot_ms": tpot})
    return InfeasibleError(
        f"memory/devices: no pipeline of the {len(topo.devices)} devices holds "
        f"{m.name} with its KV cache for batch {work.batch} at context "
        f"{work.isl + work.osl} in {work.max_memory_fraction:.0%} of device memory"
        + (" with disjoint prefill and decode pools" if modes == ["disaggregated"] else ""),
        "memory")


def _ms(us: int | None) -> str:
    return "-" if us is None else f"{us / 1e3:g} ms"
