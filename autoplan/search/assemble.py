"""From the solver's counted stages to a :class:`~autoplan.plan_schema.Plan`: concrete
devices for every replica of every design, figures by the validator's
:func:`~autoplan.cost.evaluate.evaluate` (and, for several designs per pool,
:mod:`autoplan.cost.deployment`), checked by the rules before the plan is returned."""

from __future__ import annotations

from autoplan.cost.deployment import Design, design_work, first_designs, with_more_designs
from autoplan.cost.evaluate import Figures, evaluate
from autoplan.cost.inflight import step_budget
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import AutoplanError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload
from autoplan.plan_schema import MoreDesign, PhasePlan, Plan, PlanInputs, Stage
from autoplan.rules import rules
from autoplan.search.assign import _order, assign_devices
from autoplan.search.solver import StageChoice
from autoplan.search.tables import Tables

PLACEMENT_POOLS = {"colocated": ("colocated",), "disaggregated": ("prefill", "decode")}


def _phases(placed: dict[str, list[StagePlacement]]):
    pre = placed["prefill"] if "prefill" in placed else placed["colocated"]
    dec = placed["decode"] if "decode" in placed else placed["colocated"]
    return pre, dec


def _place(t: Tables, mode: str, choices: dict[str, list[StageChoice]],
           replicas: dict[str, int]) -> dict[str, list[StagePlacement]]:
    """The first replica's stages with concrete devices, per pool."""
    return _place_all(t, mode, choices, replicas)[0]


def _place_all(t: Tables, mode: str, choices: dict[str, list[StageChoice]],
               replicas: dict[str, int]) -> tuple[dict[str, list[StagePlacement]], dict]:
    """The first replica's stages with concrete devices per pool (or design: keys beyond
    the placement's pools are more designs), and every replica's device groups."""
    pools = [p for p in PLACEMENT_POOLS[mode]] + [p for p in choices
                                                  if p not in PLACEMENT_POOLS[mode]]
    seqs = {p: _order(t, choices[p]) for p in pools}
    groups = assign_devices(t, seqs, replicas)
    placed: dict[str, list[StagePlacement]] = {}
    for p, seq in seqs.items():
        stages, start = [], 0
        for (role, cfg, ln), devs in zip(seq, groups[p][0]):
            layers = t.layers_of(role, ln)
            c = t.configs[cfg]
            stages.append(StagePlacement(start, start + layers, c.kind, devs, c.dp, c.ep))
            start += layers
        placed[p] = stages
    return placed, groups


def assemble(m: ModelSpec, topo: Topology, t: Tables, inputs: PlanInputs, mode: str,
             choices: dict[str, list[StageChoice]], replicas: dict[str, int], status: str,
             objective: float, bound: float | None, wall_s: float,
             stop_reason: str = "completed", extra: list = ()) -> Plan:
    """``extra``: more designs, ``(pool, search Design, replicas)``, beside the first of
    each pool (:attr:`autoplan.search.replicas.Choice.extra`)."""
    choices, replicas = dict(choices), dict(replicas)
    more: list[tuple[str, str, Workload, frozenset[str]]] = []  # key, pool, work, kv_to
    for k, (pool, d, y) in enumerate(extra):
        key = f"{pool}+{k + 1}"
        choices[key], replicas[key] = d.stages, y
        work = design_work(t.work, pool, d.prefill_batch if pool == "prefill" else d.batch)
        more.append((key, pool, work, d.decode_kinds if pool == "prefill" else frozenset()))
    placed, groups = _place_all(t, mode, choices, replicas)
    return _finish(m, topo, t.work, inputs, mode, placed, replicas, groups, status, objective,
                   bound, wall_s, stop_reason, more)


def _phase_plan(fig: Figures, name: str, stages: list[StagePlacement], replicas: int,
                groups: list, time_ms: float) -> PhasePlan:
    return PhasePlan(
        replicas=replicas, devices=sum(s.size for s in stages), time_ms=time_ms,
        bottleneck=fig.phase_bottleneck[name],
        requests_per_s=fig.phase_requests_per_s[name],
        bubble_fraction=fig.bubble_fraction[name],
        stages=[Stage(index=k, layers=(s.first, s.end), device_kind=s.kind, tp=s.tp,
                      ep=s.ep, attention_dp=s.dp, devices=list(s.devices),
                      time_ms=fig.stage_ms[name][k],
                      memory_fraction=fig.stage_fraction[name][k],
                      bottleneck=fig.stage_bottleneck[name][k])
                for k, s in enumerate(stages)],
        replica_devices=[[list(g) for g in rep] for rep in groups])


def more_design(d: Design, fig: Figures, groups: list) -> MoreDesign:
    """The plan's entry of one more design, from its figures."""
    pre = d.pool in ("prefill", "colocated")
    dec = d.pool in ("decode", "colocated")
    return MoreDesign(
        pool=d.pool, batch=d.work.pb if d.pool == "prefill" else d.work.batch,
        kv_to=sorted(d.kv_to), ttft_ms=fig.ttft_ms if pre else None,
        tpot_ms=fig.tpot_ms if dec else None,
        prefill=_phase_plan(fig, "prefill", d.stages, d.replicas, groups, fig.prefill_ms)
        if pre else None,
        decode=_phase_plan(fig, "decode", d.stages, d.replicas, groups, fig.tpot_ms)
        if dec else None)


def _finish(m: ModelSpec, topo: Topology, work: Workload, inputs: PlanInputs, mode: str,
            placed: dict[str, list[StagePlacement]], replicas: dict[str, int],
            groups: dict, status: str, objective: float, bound: float, wall_s: float,
            stop_reason: str, more: list = ()) -> Plan:
    """The plan of concrete stages (``work``: the workload the tables priced): figures by
    ``evaluate``, checked by the rules."""
    pre_pool = "prefill" if "prefill" in placed else "colocated"
    dec_pool = "decode" if "decode" in placed else "colocated"
    pre, dec = placed[pre_pool], placed[dec_pool]
    if mode == "colocated" and inputs.step_tokens is None:
        # The plan says the in-flight step budget it was priced with (the engine's).
        inputs = inputs.model_copy(update={"step_tokens": step_budget(topo, work).tokens})
    fig = evaluate(m, topo, work, mode, pre, dec, (replicas[pre_pool], replicas[dec_pool]))
    used_all = [d for reps in groups.values() for rep in reps for g in rep for d in g]
    used = set(used_all)
    broken: list[str] = []
    extras: list[MoreDesign] = []
    if more:
        firsts = first_designs(mode, pre, dec, (replicas[pre_pool], replicas[dec_pool]), work)
        others = [Design(pool, placed[key], replicas[key], w, kv_to)
                  for key, pool, w, kv_to in more]
        fig, figs = with_more_designs(m, topo, mode, fig, firsts, others)
        extras = [more_design(d, f, groups[key]) for d, f, (key, *_) in zip(others, figs, more)]
        for d, f in zip(others, figs):
            broken += rules.design_figures(d.pool, f, inputs)
            broken += rules.pipeline(d.pool, m, topo, d.stages)
    unit = {"latency": "ms", "throughput": "tokens/s", "devices": "devices"}[inputs.objective]
    if bound is None:
        gap = None  # no bound proven: the gap is unknown, not 0
    else:
        gap = abs(objective - bound) / objective if objective else 0.0
    # Self-check with the validator's rules: a solver or assignment bug must not reach
    # the user as a plan that `autoplan validate` would refuse.
    broken += (rules.pipeline("prefill", m, topo, pre) + rules.pipeline("decode", m, topo, dec)
               + rules.disaggregated_pp("prefill", topo, [s.kind for s in pre], mode,
                                        inputs.engine)
               + rules.disaggregated_pp("decode", topo, [s.kind for s in dec], mode,
                                        inputs.engine)
               + rules.colocated_dp(pre, mode) + rules.figures(fig, inputs, mode, len(used)))
    if len(used_all) != len(used):
        broken.append("device disjointness: a device serves two replicas")
    if broken:
        raise AutoplanError(f"internal error: the planner built a plan that breaks a rule: "
                            f"{broken[0]}")
    kinds = {s.kind for s in pre + dec} | {s.device_kind for e in extras
                                           for ph in (e.prefill, e.decode) if ph
                                           for s in ph.stages}
    return Plan(
        inputs=inputs, placement=mode, status=status,
        objective=objective, objective_unit=unit, best_bound=bound, gap=gap,
        solve_seconds=wall_s, stop_reason=stop_reason, ttft_ms=fig.ttft_ms,
        tpot_ms=fig.tpot_ms, e2e_ms=fig.e2e_ms,
        throughput_tokens_per_s=fig.throughput_tokens_per_s, requests_per_s=fig.requests_per_s,
        kv_transfer_ms=fig.kv_transfer_ms, ttft_floor_ms=fig.ttft_floor_ms,
        tpot_floor_ms=fig.tpot_floor_ms, tokens_per_s_per_device=fig.tokens_per_s_per_device,
        tokens_per_s_per_user=fig.tokens_per_s_per_user, devices=len(used),
        prefill=_phase_plan(fig, "prefill", pre, replicas[pre_pool], groups[pre_pool],
                            fig.prefill_ms),
        decode=_phase_plan(fig, "decode", dec, replicas[dec_pool], groups[dec_pool],
                           fig.tpot_ms),
        pricing={k: topo.calibration(k).source for k in sorted(kinds)},
        more_designs=extras,
    )
