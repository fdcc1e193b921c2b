"""The CP-SAT model over the integer tables (the only module that imports OR-Tools).

Count form (FORMULATION.md): per pool ``p``, role ``r``, config ``c`` and stage length
``l`` (layers of the uniform run)

- ``x[p, r, c, l]`` in {0, 1} for the roles only / first / last: this stage exists;
- ``n[p, c, l]`` >= 0 for middle stages: how many middle stages of this length on ``c``.

Constraints: one pipeline per pool (one ``only`` stage, or one ``first`` and one
``last``); the stages cover the ``U`` uniform layers; devices of each class suffice for
both pools (TP sizes divide the domain size, so counting devices is enough to pack TP
groups into domains); SLOs. Pool times are table constants times the counts, plus a
hand-off into every stage but the first. A disaggregated plan adds the KV hand-off: the
slowest prefill stage's KV transfer to the decode pool's kind(s).

Objective (latency): ``W * (TTFT + (osl - 1) * TPOT) + devices``, ``W`` larger than any
device count, so fewer devices break ties; the solver runs deterministically (one
worker, fixed seed), so equal inputs give equal plans.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from autoplan.tables import INF, POOL_PHASES, ROLES, Tables

BOOL_ROLES = ("only", "first", "last")


@dataclass
class StageChoice:
    role: str
    config: int
    length: int
    count: int = 1


@dataclass
class SolveResult:
    status: str  # optimal | feasible | infeasible
    objective_us: float | None
    best_bound_us: float | None
    wall_s: float
    pools: dict[str, list[StageChoice]] = field(default_factory=dict)
    ttft_us: int = 0
    tpot_us: int = 0
    kv_us: int = 0
    devices: int = 0
    infeasible_families: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        if self.objective_us is None or self.best_bound_us is None or self.objective_us <= 0:
            return 0.0
        return max(0.0, (self.objective_us - self.best_bound_us) / self.objective_us)


@dataclass
class Limits:
    ttft_slo_us: int | None = None
    tpot_slo_us: int | None = None
    time_limit_s: float = 30.0
    progress: bool = False


class _Progress(cp_model.CpSolverSolutionCallback):
    """Prints each incumbent and the bound to stderr (the CLI asks for it)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self._scale = scale
        self._t0 = time.perf_counter()
        self._last = (float("inf"), -1.0)

    def on_solution_callback(self) -> None:
        obj = self.objective_value / self._scale / 1e3
        bound = self.best_objective_bound / self._scale / 1e3
        now = time.perf_counter()
        # Only material improvements, or a heartbeat each second: tie-break steps are noise.
        if obj > self._last[0] * (1 - 1e-4) and now - self._last[1] < 1.0:
            return
        self._last = (obj, now)
        print(f"  [{time.perf_counter() - self._t0:6.2f}s] incumbent {obj:.3f} ms, "
              f"bound {bound:.3f} ms", file=sys.stderr)


def solve(t: Tables, pools: tuple[str, ...], osl: int, limits: Limits) -> SolveResult:
    """Minimise end-to-end latency over the pools' pipelines (see module docstring)."""
    m = cp_model.CpModel()
    U = t.units
    # x[pool, role, cfg, length]: a stage of this role exists (roles only/first/last).
    x: dict[tuple[str, str, int, int], cp_model.IntVar] = {}
    # n[pool, cfg, length]: number of middle stages of this length on this config.
    n: dict[tuple[str, int, int], cp_model.IntVar] = {}
    for p in pools:
        tab = t.pools[p]
        for r, role in enumerate(ROLES):
            for cfg in t.configs:
                best = int(tab.max_len[r, cfg.index])
                lengths = [U] if role == "only" and best else range(1, best + 1)
                for ln in lengths:
                    if role == "mid":
                        n[p, cfg.index, ln] = m.new_int_var(0, U // ln, f"n[{p},{cfg.index},{ln}]")
                    else:
                        x[p, role, cfg.index, ln] = m.new_bool_var(f"x[{p},{role},{cfg.index},{ln}]")

    def stage_terms(p: str):
        """(role, cfg, length, variable) for every stage variable of pool p."""
        for (pp, role, c, ln), v in x.items():
            if pp == p:
                yield role, c, ln, v
        for (pp, c, ln), v in n.items():
            if pp == p:
                yield "mid", c, ln, v

    for p in pools:
        _one_pipeline(m, x, n, p, U)
        # Cover: the stages hold every uniform layer exactly once.
        m.add(sum(ln * v for _, _, ln, v in stage_terms(p)) == U)

    # Inventory: devices of each class suffice for every pool together.
    used_by_class = {c.index: [] for c in t.classes}
    for p in pools:
        for _, c, _, v in stage_terms(p):
            used_by_class[t.configs[c].cls].append(t.configs[c].tp * v)
    for cls in t.classes:
        if used_by_class[cls.index]:
            m.add(sum(used_by_class[cls.index]) <= cls.devices)
    devices = sum(sum(v) for v in used_by_class.values() if v)

    # Phase times per pool: stage times plus a hand-off into every non-first stage.
    phase_time: dict[tuple[str, str], cp_model.LinearExpr] = {}
    for p in pools:
        tab = t.pools[p]
        for ph in POOL_PHASES[p]:
            terms = []
            for role, c, ln, v in stage_terms(p):
                r = ROLES.index(role)
                cost = int(tab.time_us[ph][r, c, ln])
                assert cost < INF
                if role in ("mid", "last"):
                    cost += int(tab.hop_us[ph][c])
                terms.append(cost * v)
            phase_time[p, ph] = sum(terms)

    kv = 0
    if "prefill" in pools:
        kv = _kv_handoff(m, t, x, n, stage_terms)
    pre_pool = "prefill" if "prefill" in pools else "colocated"
    dec_pool = "decode" if "decode" in pools else "colocated"
    ttft = phase_time[pre_pool, "prefill"] + kv
    tpot = phase_time[dec_pool, "decode"]
    if limits.ttft_slo_us is not None:
        m.add(ttft <= limits.ttft_slo_us)
    if limits.tpot_slo_us is not None:
        m.add(tpot <= limits.tpot_slo_us)
    scale = sum(c.devices for c in t.classes) + 1
    m.minimize(scale * (ttft + (osl - 1) * tpot) + devices)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_time_in_seconds = limits.time_limit_s
    t0 = time.perf_counter()
    cb = _Progress(scale) if limits.progress else None
    status = solver.solve(m, cb) if cb else solver.solve(m)
    wall = time.perf_counter() - t0
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult("infeasible", None, None, wall)
    res = SolveResult(
        "optimal" if status == cp_model.OPTIMAL else "feasible",
        solver.objective_value / scale, solver.best_objective_bound / scale, wall,
    )
    for p in pools:
        chosen = []
        for role, c, ln, v in stage_terms(p):
            k = solver.value(v)
            if k:
                chosen.append(StageChoice(role, c, ln, int(k)))
        res.pools[p] = chosen
    res.ttft_us = int(solver.value(ttft))
    res.tpot_us = int(solver.value(tpot))
    res.kv_us = int(solver.value(kv)) if "prefill" in pools else 0
    res.devices = int(solver.value(devices))
    return res


def _one_pipeline(m: cp_model.CpModel, x, n, p: str, U: int) -> None:
    """One ``only`` stage, or one ``first`` and one ``last`` with any middles between."""
    only = [v for (pp, r, _, _), v in x.items() if pp == p and r == "only"]
    first = [v for (pp, r, _, _), v in x.items() if pp == p and r == "first"]
    last = [v for (pp, r, _, _), v in x.items() if pp == p and r == "last"]
    mids = [v for (pp, _, _), v in n.items() if pp == p]
    m.add(sum(only) + sum(first) == 1)
    m.add(sum(first) == sum(last))
    if mids:
        m.add(sum(mids) <= U * sum(first))


def _kv_handoff(m: cp_model.CpModel, t: Tables, x, n, stage_terms) -> cp_model.IntVar:
    """kv >= the KV transfer of every prefill stage to every kind the decode pool uses."""
    K = len(t.kinds)
    # u[kind]: the decode pool uses a device of this kind.
    u = [m.new_bool_var(f"u[{k}]") for k in t.kinds]
    for role, c, ln, v in stage_terms("decode"):
        kd = t.kinds.index(t.configs[c].kind)
        if role == "mid":
            m.add(t.units * u[kd] >= v)
        else:
            m.add(u[kd] >= v)
    hi = int(t.kv_us.max()) if t.kv_us.size else 0
    kv = m.new_int_var(0, max(hi, 0), "kv_handoff")
    for role, c, ln, v in stage_terms("prefill"):
        r = ROLES.index(role)
        if role == "mid":
            # on <=> at least one middle stage of this (config, length) exists.
            on = m.new_bool_var(f"on[prefill,{c},{ln}]")
            m.add(v >= 1).only_enforce_if(on)
            m.add(v == 0).only_enforce_if(~on)
            sel = on
        else:
            sel = v
        for kd in range(K):
            cost = int(t.kv_us[r, c, ln, kd])
            if cost:
                m.add(kv >= cost * (sel + u[kd] - 1))
    return kv
