"""The CP-SAT models over the integer tables (the only module that imports OR-Tools).

Count form (FORMULATION.md). Per pool (a prefill, decode or colocated pipeline), stage
role (only / first / middle / last) and config ``c`` (device class, TP):

- *compact* groups, where the tables say a stage's time (and KV hand-off) is affine in
  its length, ``A + B * length`` (every single-memory-tier kind): for ``only`` one
  boolean; for ``first`` and ``last`` a boolean ``x`` and a length ``l`` in
  ``[x, Lmax * x]``; for middles a count ``N``, the layers they hold ``Lam`` in
  ``[N, Lmax * N]`` and, in prefill pools (whose KV hand-off follows the longest
  middle stage), ``M`` with ``Lam <= N * M``: balanced cuts then give every middle
  stage at most ``M`` layers. About ten variables per config, whatever the
  layer count.
- *per-length* groups otherwise (multi-tier kinds, where the tier split makes time
  non-affine): one boolean or count per stage length, priced from the table.

Constraints: one pipeline per pool (one ``only`` stage, or one ``first`` and one
``last``; where the tables cut inside a leading dense run, a chain of ``lead`` stages
before it, :mod:`autoplan.search.roles`: one stage holds layer 0, one the first uniform
layer, and as many stages start at each layer of the run as end there); the stages
cover the ``U`` uniform layers; devices of each class suffice for every pool, and the TP
groups pack into the class's domains exactly (threshold rows when TP sizes divide each
other, packing patterns per domain otherwise); SLOs. A pool's phase time is its stage
times plus a hand-off into every stage but the first. A disaggregated plan adds the KV
hand-off: the largest KV transfer of a prefill stage to a kind the decode pool uses.

Goals: ``latency`` minimises ``W * (TTFT + (osl - 1) * TPOT) + devices`` over the
pools together; ``phase`` (a decode pool) minimises TPOT; ``rate`` (a colocated pool)
minimises its time per request, ``TTFT + (osl - 1) * TPOT`` (in-flight batching);
``devices`` (a prefill pool) the fewest devices with no stage above a cap, then the
shortest TTFT part (the replica fronts bisect over the cap for the slowest stage, which
sets a pipelined pool's rate: a min-max objective would need products of variables).
``W`` exceeds any device count, so fewer devices break ties; one worker, fixed seed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from autoplan.errors import AutoplanError
from autoplan.search import roles as R
from autoplan.search.chosen import chosen_stages
from autoplan.search.interrupt import _INTERRUPT
from autoplan.search.limits import Limits, SolveResult, StageChoice
from autoplan.search.packrows import _packing
from autoplan.search.progress import PhaseBar, incumbent_printer
from autoplan.search.tables import INF, POOL_PHASES, TICKS_PER_MS, Tables


class _LazyCpSat:
    """``cp_model`` imported on first use (a fifth of a second): direct fronts need none."""
    def __getattr__(self, name: str):
        from ortools.sat.python import cp_model as real
        globals()["cp_model"] = real
        return getattr(real, name)


cp_model = _LazyCpSat()
_MODEL: list = []
QUICK_S = 1.0  # a front's model solved without presolve within this, else with it


def _model():
    """A CpModel without OR-Tools' camelCase aliases (0.6 ms a model, thousands of them)."""
    if not _MODEL:
        class Model(cp_model.CpModel):
            def _add_pre_pep8_methods(self) -> None:
                pass

        _MODEL.append(Model)
    return _MODEL[0]()


@dataclass
class _Group:
    """Stage variables of one (pool, role, config)."""

    role: str
    cfg: int
    count: cp_model.LinearExprT  # stages in the group
    layers: cp_model.LinearExprT  # uniform layers they hold
    time: dict[str, cp_model.LinearExprT]  # phase -> total time, hand-offs included
    kv: list[list[cp_model.LinearExprT]]  # decode kind -> KV hand-offs of stages (prefill pools)
    values: object  # how to read the chosen stages back
    lengths: tuple = ()  # length variables (first/last length, middles' layers and max)


class _PoolModel:
    """One pool's pipeline inside a CP-SAT model."""

    def __init__(self, m: cp_model.CpModel, t: Tables, pool: str, need_max: bool,
                 stage_cap: int | None = None) -> None:
        self.m, self.t, self.pool = m, t, pool
        self._entry_terms = None
        # No stage of this pool may take longer than stage_cap in its prefill pass.
        self.stage_cap = stage_cap
        self.groups: list[_Group] = []
        tab, U = t.pools[pool], t.units
        kv_tab = t.kv_t if pool == "prefill" else None
        for r, role in enumerate(t.roles):
            for cfg in t.configs:
                c = cfg.index
                best = int(tab.max_len[r, c])
                if best == 0:
                    continue
                if R.fixed_length(role):
                    self._fixed(r, role, c, kv_tab)
                elif tab.affine[r, c]:
                    self._compact(r, role, c, best, need_max, kv_tab)
                else:
                    self._per_length(r, role, c, best, kv_tab)
        of = {b: [g.count for g in self.groups if R.base(g.role) == b]
              for b in ("first", "mid", "last")}
        # one stage holds layer 0, one the first uniform layer (the body), and a chain
        # of lead stages (cuts inside the dense run) joins them: as many stages start at
        # each layer of the run as end there
        m.add(sum(g.count for g in self.groups if R.starts_pipeline(g.role)) == 1)
        m.add(sum(g.count for g in self.groups if R.is_body(g.role)) == 1)
        for q in range(1, t.prefix + 1):
            ends = [g.count for g in self.groups
                    if R.base(g.role) == "lead" and R.lead_end(g.role) == q]
            starts = [g.count for g in self.groups if R.start(g.role) == q]
            if ends or starts:
                m.add(sum(ends) == sum(starts))
        m.add(sum(of["first"]) == sum(of["last"]))
        if of["mid"]:
            m.add(sum(of["mid"]) <= U * sum(of["first"]))
        m.add(sum(g.layers for g in self.groups) == U)
        self._one_shape()

    def _one_shape(self) -> None:
        """With an engine, one (TP, DP, EP) shape on every engine-run stage; colocated, one
        attention-DP degree on every stage (``rules.colocated_dp``): a boolean per value
        present, exactly one chosen, the others' groups at 0 stages."""
        t, by = self.t, {"tp": {}, "dp": {}}
        for g in self.groups:
            if t.governed(g.cfg):
                by["tp"].setdefault(t.configs[g.cfg].shape, []).append(g.count)
            if self.pool == "colocated":
                by["dp"].setdefault((t.configs[g.cfg].dp,), []).append(g.count)
        for what, keys in ((w, k) for w, k in by.items() if len(k) > 1):
            pick = {k: self.m.new_bool_var(self._name(what, *k)) for k in keys}
            self.m.add_exactly_one(pick.values())
            for k, counts in keys.items():
                for n in counts:
                    self.m.add(n == 0).only_enforce_if(pick[k].Not())

    # -- group builders -------------------------------------------------------------
    def _name(self, *parts) -> str:
        return f"{self.pool}[" + ",".join(str(p) for p in parts) + "]"

    def _kv_const(self, kv_tab, r: int, c: int, ln: int) -> list[int]:
        if kv_tab is None:
            return []
        return [int(kv_tab[r, c, ln, kd]) for kd in range(len(self.t.kinds))]

    def _capped(self, r: int, c: int, ln: int) -> bool:
        """This stage keeps its devices busier than the stage cap in its prefill pass."""
        if self.stage_cap is None:
            return False
        return int(self.t.pools[self.pool].busy_t[r, c, ln]) > self.stage_cap

    def _hop(self, role: str, c: int) -> dict[str, int]:
        """The hand-off into a stage of this role and config (none into layer 0's)."""
        tab = self.t.pools[self.pool]
        return {ph: 0 if R.starts_pipeline(role) else int(tab.hop_t[ph][c])
                for ph in POOL_PHASES[self.pool]}

    def _fixed(self, r: int, role: str, c: int, kv_tab) -> None:
        """A stage of one length: ``only`` (every uniform layer) or a lead (none)."""
        tab, U = self.t.pools[self.pool], self.t.units
        ln = U if R.base(role) == "only" else 0
        if self._capped(r, c, ln):
            return
        x = self.m.new_bool_var(self._name(role, c))
        hop = self._hop(role, c)
        time_ = {ph: (int(tab.time_t[ph][r, c, ln]) + hop[ph]) * x for ph in hop}
        kv = [[k * x] for k in self._kv_const(kv_tab, r, c, ln)]
        self.groups.append(_Group(role, c, x, ln * x, time_, kv, ("fixed", x, ln)))

    def _compact(self, r: int, role: str, c: int, best: int, need_max: bool, kv_tab) -> None:
        m, tab, U = self.m, self.t.pools[self.pool], self.t.units
        # Under a stage cap the longest allowed stage is shorter (times grow with length).
        while best and self._capped(r, c, best):
            best -= 1
        if best == 0:
            return
        A, B = {}, {}
        for ph in POOL_PHASES[self.pool]:
            a1 = int(tab.time_t[ph][r, c, 1])
            B[ph] = int(tab.time_t[ph][r, c, 2]) - a1 if best >= 2 else 0
            A[ph] = a1 - B[ph]
        hop = self._hop(role, c)
        kvA, kvB = [], []
        if kv_tab is not None:
            for kd in range(len(self.t.kinds)):
                k1 = int(kv_tab[r, c, 1, kd])
                kb = int(kv_tab[r, c, 2, kd]) - k1 if best >= 2 else 0
                kvA.append(k1 - kb)
                kvB.append(kb)
        if R.base(role) in ("first", "last"):
            x = m.new_bool_var(self._name(role, c))
            ln = m.new_int_var(0, best, self._name(role, c, "len"))
            m.add(ln >= x)
            m.add(ln <= best * x)
            self.groups.append(_Group(
                role, c, x, ln, {ph: (A[ph] + hop[ph]) * x + B[ph] * ln for ph in A},
                [[a * x + b * ln] for a, b in zip(kvA, kvB)], ("one", x, ln), (ln,)))
            return
        n = m.new_int_var(0, U, self._name("mid", c, "n"))
        lam = m.new_int_var(0, U, self._name("mid", c, "layers"))
        m.add(lam >= n)
        m.add(lam <= best * n)
        kv: list[list] = [[] for _ in kvA]
        lengths: tuple = (lam,)
        if need_max:
            on = m.new_bool_var(self._name("mid", c, "on"))
            mx = m.new_int_var(0, best, self._name("mid", c, "max"))
            m.add(n >= on)
            m.add(n <= U * on)
            m.add(mx >= on)
            m.add(mx <= best * on)
            prod = m.new_int_var(0, U * best, self._name("mid", c, "n*max"))
            m.add_multiplication_equality(prod, [n, mx])
            m.add(lam <= prod)
            kv = [[a * on + b * mx] for a, b in zip(kvA, kvB)]
            lengths = (lam, mx)
        self.groups.append(_Group(
            "mid", c, n, lam, {ph: (A[ph] + hop[ph]) * n + B[ph] * lam for ph in A},
            kv, ("balanced", n, lam), lengths))

    def _per_length(self, r: int, role: str, c: int, best: int, kv_tab) -> None:
        m, tab, U = self.m, self.t.pools[self.pool], self.t.units
        hop = self._hop(role, c)
        for ln in range(1, best + 1):
            cost = {ph: int(tab.time_t[ph][r, c, ln]) for ph in hop}
            assert all(v < INF for v in cost.values())
            if self._capped(r, c, ln):
                continue
            if role == "mid":
                v = m.new_int_var(0, U // ln, self._name("mid", c, ln))
                on = m.new_bool_var(self._name("mid", c, ln, "on"))
                m.add(v >= on)
                m.add(v <= (U // ln) * on)
            else:
                v = on = m.new_bool_var(self._name(role, c, ln))
            self.groups.append(_Group(
                role, c, v, ln * v, {ph: (cost[ph] + hop[ph]) * v for ph in cost},
                [[k * on] for k in self._kv_const(kv_tab, r, c, ln)], ("fixed", v, ln)))

    # -- expressions ----------------------------------------------------------------
    def phase_time(self, ph: str) -> cp_model.LinearExprT:
        return sum(g.time[ph] for g in self.groups) + self._entries(ph)

    def _entries(self, ph: str) -> cp_model.LinearExprT:
        """Hand-offs between device classes, beyond the within-class hop every stage
        pays. Stages run in class blocks (the planner's order: the first stage's class,
        the others, the last stage's class), so a class is entered once unless it holds
        the first stage; the first stage's class is entered again for the last stage
        when both ends share it and another class sits between them."""
        t, m = self.t, self.m
        cross = t.pools[self.pool].cross_t[ph]
        if len(t.classes) < 2 or not cross.any():
            return 0
        if self._entry_terms is None:
            K = len(t.classes)
            used = [m.new_bool_var(self._name("class", k)) for k in range(K)]
            first, last = [0] * K, [0] * K
            for g in self.groups:
                k = t.configs[g.cfg].cls
                m.add(t.units * used[k] >= g.count)
                if R.starts_pipeline(g.role):
                    first[k] += g.count
                if R.ends_pipeline(g.role):
                    last[k] += g.count
            terms = []
            for k in range(K):
                again = m.new_bool_var(self._name("reenter", k))
                others = sum(used[j] for j in range(K) if j != k)
                # again >= first_k AND last_k AND some other class is used
                o = m.new_bool_var(self._name("others", k))
                m.add(others >= o)
                m.add(others <= (K - 1) * o)
                m.add(again >= first[k] + last[k] + o - 2)
                terms.append((k, used[k] - first[k] + again))
            self._entry_terms = terms
        return sum(int(cross[k]) * e for k, e in self._entry_terms)

    def usage(self) -> list[cp_model.LinearExprT]:
        out: list = [0] * len(self.t.classes)
        for g in self.groups:
            cfg = self.t.configs[g.cfg]
            out[cfg.cls] += cfg.size * g.count
        return out

    def kinds_used(self) -> list[cp_model.IntVar]:
        """u[kind]: the pool uses a device of this kind."""
        u = [self.m.new_bool_var(self._name("uses", k)) for k in self.t.kinds]
        for g in self.groups:
            kd = self.t.kinds.index(self.t.configs[g.cfg].kind)
            self.m.add(self.t.units * u[kd] >= g.count)
        return u

    def kv_handoff(self, decode_kinds: list) -> cp_model.IntVar:
        """kv >= the KV transfer of every prefill stage to every kind the decode pool uses.

        ``decode_kinds``: per kind a literal (or a constant 0/1)."""
        hi = int(self.t.kv_t.max()) if self.t.kv_t.size else 0
        kv = self.m.new_int_var(0, max(hi, 0), self._name("kv"))
        for g in self.groups:
            for kd, terms in enumerate(g.kv):
                lit = decode_kinds[kd]
                if isinstance(lit, int):
                    if lit:
                        for e in terms:
                            self.m.add(kv >= e)
                    continue
                for e in terms:
                    self.m.add(kv >= e).only_enforce_if(lit)
        return kv

    def chosen(self, s: cp_model.CpSolver) -> list[StageChoice]:
        return chosen_stages(self.groups, s.value)


def _solve(m: cp_model.CpModel, scale: int, limits: Limits, ticks_per_ms: float = TICKS_PER_MS,
           presolve: bool = True, **params):
    """Solve in a worker thread so that Ctrl-C (a KeyboardInterrupt in the main thread,
    whenever it arrives) stops the search gracefully: the best solution so far stays.
    CP-SAT's own SIGINT handling is off: it leaves no handler between solves. ``presolve``
    off for the replica fronts' many small models: presolve and probing cost them 10-30x
    their search (a 70B prefill front on 16 GPUs: 6.8 s, 0.23 s off); one not solved in
    ``QUICK_S`` without it is solved again with it (60 s -> 3 ms). A model CP-SAT refuses
    is no "infeasible": past its int64 range OverflowError (one line), else a bug."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.cp_model_presolve = presolve
    solver.parameters.max_time_in_seconds = limits.time_limit_s
    solver.parameters.catch_sigint_signal = False
    for k, v in params.items():  # e.g. linearization_level (autoplan.search.mix)
        setattr(solver.parameters, k, v)
    t0 = time.perf_counter()
    bar = PhaseBar.maybe(limits.progress, limits.header.removeprefix("autoplan: ")
                         or limits.label or "search", limits.time_limit_s)
    cb = (incumbent_printer(cp_model.CpSolverSolutionCallback)(
        scale * ticks_per_ms, limits.label, limits.header, bar)
          if limits.progress else None)
    out: dict = {}

    def run() -> None:
        out["status"] = solver.solve(m, cb) if cb else solver.solve(m)

    worker = threading.Thread(target=run, name="cp-sat", daemon=True)
    worker.start()
    interrupted = False
    try:
        while worker.is_alive():
            try:
                worker.join(0.05)
            except KeyboardInterrupt:
                _INTERRUPT.set()
            if _INTERRUPT.is_set() and not interrupted:
                interrupted = True
                solver.stop_search()
            if bar is not None:
                bar.tick()
    finally:
        if bar is not None:
            bar.close()
    if out["status"] == cp_model.MODEL_INVALID:
        why = m.validate()
        raise (OverflowError(why) if "overflow" in why or "kint64max" in why else
               AutoplanError(f"internal error: CP-SAT refused the model: {why[:200]}"))
    return solver, out["status"], time.perf_counter() - t0, interrupted


def solve(t: Tables, pools: tuple[str, ...], osl: int, limits: Limits, *,
          goal: str = "latency", caps: list[int] | None = None,
          decode_kinds: tuple[str, ...] = (), stage_cap: int | None = None,
          exclude: tuple[tuple[str, tuple[int, ...]], ...] = (),
          value_cap: int | None = None, tie_break: bool = True) -> SolveResult:
    """Best pipelines for ``pools`` (see the module docstring for the goals). ``caps``:
    devices per class available (default: the whole inventory). ``decode_kinds``: for a
    prefill pool solved alone, the kinds its KV is sent to. ``stage_cap``: goal ``devices``
    only: no prefill stage longer than this (ticks); the fewest devices, then
    (``tie_break``) the shortest TTFT part."""
    m = _model()
    caps = list(caps) if caps is not None else [c.devices for c in t.classes]
    pm = {p: _PoolModel(m, t, p, p == "prefill", stage_cap if goal == "devices" else None)
          for p in pools}
    if any(not pm[p].groups for p in pools):
        return SolveResult("infeasible", None, None, 0.0)

    usage: list = [0] * len(t.classes)
    for p in pools:
        for k, e in enumerate(pm[p].usage()):
            usage[k] += e
    for k, cap in enumerate(caps):
        if not isinstance(usage[k], int):
            m.add(usage[k] <= cap)
    _packing(m, t, [pm[p] for p in pools])
    devices = sum(usage)
    if limits.max_devices is not None and not isinstance(devices, int):
        m.add(devices <= limits.max_devices)

    kv = 0
    if "prefill" in pools:
        if "decode" in pools:
            lits = pm["decode"].kinds_used()
        else:
            lits = [1 if k in decode_kinds else 0 for k in t.kinds]
        kv = pm["prefill"].kv_handoff(lits)
    pre_pool = "prefill" if "prefill" in pools else ("colocated" if "colocated" in pools else None)
    dec_pool = "decode" if "decode" in pools else ("colocated" if "colocated" in pools else None)
    ttft = pm[pre_pool].phase_time("prefill") + kv if pre_pool else 0
    tpot = pm[dec_pool].phase_time("decode") if dec_pool else 0
    if limits.ttft_slo_t is not None and pre_pool:
        m.add(ttft <= limits.ttft_slo_t)
    if limits.tpot_slo_t is not None and dec_pool:
        m.add(tpot <= limits.tpot_slo_t)
    if goal == "devices":
        # Fewest devices, then the shortest TTFT: two solves with small coefficients (one
        # weighted objective made wide-EP prefill models 100x slower to prove).
        scale = 1
        m.minimize(devices)
    else:
        if goal == "rate":
            # A colocated replica serves batch / (TTFT + (osl - 1) TPOT) requests/s (in-flight
            # batching; tables.colocated_rate): the batch is fixed, so the shortest time
            # per request is the best rate.
            value = ttft + (osl - 1) * tpot
        elif goal == "phase":
            value = tpot
        else:
            value = ttft + (osl - 1) * tpot
            if value_cap is not None:
                m.add(value <= value_cap)
        scale = sum(caps) + 1
        m.minimize(scale * value + devices)
    shape_vars = [g.count for p in pools for g in pm[p].groups]
    full_vars = shape_vars + [v for p in pools for g in pm[p].groups for v in g.lengths]
    for how, vals in exclude:
        _nogood(m, shape_vars if how == "shape" else full_vars, vals)

    quick = goal != "latency"  # the fronts' small models: no presolve, unless one is slow
    first = replace(limits, time_limit_s=min(limits.time_limit_s, QUICK_S)) if quick else limits
    solver, status, wall, stopped = _solve(m, scale, first, t.ticks_per_ms, presolve=not quick)
    if quick and not stopped and status not in (cp_model.OPTIMAL, cp_model.INFEASIBLE) and (
            wall < limits.time_limit_s):
        solver, status, wall, stopped = _again(m, scale, limits, wall, t, presolve=True)
    if status == cp_model.INFEASIBLE and goal == "latency" and not stopped:
        # presolve called a feasible latency model infeasible (test_exact_oracle seed 1138)
        solver, status, wall, stopped = _again(m, scale, limits, wall, t)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveResult("infeasible", None, None, wall, interrupted=stopped)
    if goal == "devices" and tie_break and not stopped:
        fewest = int(round(solver.objective_value))
        first_optimal = status == cp_model.OPTIMAL
        m.add(devices <= fewest)
        m.minimize(ttft)
        solver, status, wall, stopped = _again(m, scale, limits, wall, t)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):  # time ran out
            return SolveResult("infeasible", None, None, wall, interrupted=stopped)
        if not first_optimal:
            status = cp_model.FEASIBLE
    res = SolveResult(
        "optimal" if status == cp_model.OPTIMAL else "feasible",
        solver.objective_value / scale, solver.best_objective_bound / scale, wall,
        interrupted=stopped,
    )
    for p in pools:
        res.pools[p] = pm[p].chosen(solver)
    res.ttft_t = int(solver.value(ttft)) if pre_pool else 0
    res.tpot_t = int(solver.value(tpot)) if dec_pool else 0
    res.kv_t = int(solver.value(kv)) if "prefill" in pools else 0
    res.usage = tuple(int(solver.value(u)) if not isinstance(u, int) else 0 for u in usage)
    res.devices = sum(res.usage)
    res.shape = tuple(int(solver.value(v)) for v in shape_vars)
    res.full = tuple(int(solver.value(v)) for v in full_vars)
    return res


def _again(m: cp_model.CpModel, scale: int, limits: Limits, wall: float, t: Tables,
           presolve: bool = False):
    """``m`` again in the time left; the wall time counts both solves."""
    rest = replace(limits, time_limit_s=max(limits.time_limit_s - wall, 1e-3))
    solver, status, more, stopped = _solve(m, scale, rest, t.ticks_per_ms, presolve=presolve)
    return solver, status, wall + more, stopped


def _nogood(m: cp_model.CpModel, xs: list, vals: tuple[int, ...]) -> None:
    """At least one of ``xs`` differs from ``vals``."""
    diff = [m.new_bool_var("") for _ in xs]
    for b, x, v in zip(diff, xs, vals):
        m.add(x != v).only_enforce_if(b)
        m.add(x == v).only_enforce_if(b.Not())
    m.add_bool_or(diff)
