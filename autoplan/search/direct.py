"""Exact enumeration of one pool's replica designs where the space is tiny (no solver).

On one device class whose pipelines run one engine TP shape (every config governed by
the engine's uniform-TP rule) and whose stage times are affine in the stage length, a
pipeline is a config ``c``, a stage count ``S`` and the lengths of its first and last
stages (the middles take the rest, cut evenly, as the solver reads its compact groups
back). Every such pipeline is priced here from the tables, with the hand-offs and SLO
rows of :func:`~autoplan.search.solver.solve`, and the best one per (config, stage
count) is kept; a front's question under a device cap is then a minimum over those.
The replica fronts ask what the CP-SAT models of ``solve`` answer, without a model
(``tests/test_direct.py`` checks that both answer the same on the shipped cases):

- decode (goal ``phase``): the shortest TPOT under its SLO, then the fewest devices;
- colocated (goal ``rate``): the shortest ``TTFT + (osl - 1) * TPOT`` under both SLOs,
  then the fewest devices;
- prefill: the shortest slowest stage under the TTFT SLO (the KV hand-off to the
  decode kinds included), then the fewest devices, then the shortest TTFT (what
  :func:`~autoplan.search.replicas._min_slowest` bisects for).

Ties left among pipelines go to the lower config index, fewer stages, the most even
stage lengths, a shorter first stage, then a shorter last stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoplan.search.chosen import balanced_mids
from autoplan.search.limits import Limits, SolveResult, StageChoice
from autoplan.search.tables import ROLES, Tables

_F, _M, _L = ROLES.index("first"), ROLES.index("mid"), ROLES.index("last")


def applies(t: Tables, pool: str) -> bool:
    """The pool's space is the one this module enumerates: one class, one TP shape per
    pipeline, affine stage times."""
    if len(t.classes) != 1 or pool not in t.pools:
        return False
    if len(t.configs) > 1 and not all(t.governed(c.index) for c in t.configs):
        return False
    if len({c.shape for c in t.configs}) != len(t.configs):
        return False
    tab = t.pools[pool]
    used = tab.max_len[1:] > 0
    return bool(np.all(tab.affine[1:][used]))


@dataclass(frozen=True)
class _Best:
    key: tuple  # what the goal minimises, in order (devices included)
    usage: int
    stages: tuple
    ttft: int
    tpot: int
    kv: int


class Direct:
    """The best pipeline of every (config, stage count) of one pool's table."""

    def __init__(self, t: Tables, pool: str, osl: int, limits: Limits,
                 decode_kinds: frozenset[str] = frozenset()) -> None:
        self.t, self.pool = t, pool
        self.best: list[_Best] = []
        tab = t.pools[pool]
        U = t.units
        most = t.classes[0].devices
        if limits.max_devices is not None:
            most = min(most, limits.max_devices)
        kds = [t.kinds.index(k) for k in sorted(decode_kinds)] if pool == "prefill" else []
        phases = tuple(tab.time_t)
        ttft_slo, tpot_slo = limits.ttft_slo_t, limits.tpot_slo_t
        for cfg in t.configs:
            c, size = cfg.index, cfg.size
            if size > most:
                continue
            T = {ph: tab.time_t[ph][:, c, :] for ph in phases}
            busy = tab.busy_t[:, c, :] if "prefill" in T else None  # paces a prefill pool
            hop = {ph: int(tab.hop_t[ph][c]) for ph in phases}
            kv = (t.kv_t[:, c, :, :][:, :, kds].max(axis=2) if kds
                  else np.zeros((len(ROLES), U + 1), dtype=np.int64))
            if tab.max_len[0, c] > 0:
                sums = {ph: np.array([[int(T[ph][0, U])]]) for ph in phases}
                slow = np.array([[int(busy[0, U])]]) if busy is not None else None
                self._keep(c, 1, size, sums, slow, np.array([[int(kv[0, U])]]),
                           np.ones((1, 1), dtype=bool), 0, osl, ttft_slo, tpot_slo,
                           lambda i, j, c=c: (StageChoice("only", c, U),))
            mf, mm, ml = (int(tab.max_len[r, c]) for r in (_F, _M, _L))
            if mf == 0 or ml == 0:
                continue
            LF = np.arange(1, mf + 1)[:, None]
            LL = np.arange(1, ml + 1)[None, :]
            M = U - LF - LL  # layers left to the middle stages
            ends = {ph: T[ph][_F, LF] + T[ph][_L, LL] + hop[ph] for ph in phases}
            ends_slow = (np.maximum(busy[_F, LF], busy[_L, LL]) if busy is not None
                         else None)
            ends_kv = np.maximum(kv[_F, LF], kv[_L, LL])
            # middles' affine parts, as solver._PoolModel._compact reads them
            mid_b = {ph: int(T[ph][_M, 2]) - int(T[ph][_M, 1]) if mm >= 2 else 0
                     for ph in phases}
            mid_a = {ph: int(T[ph][_M, 1]) - mid_b[ph] for ph in phases}
            kv_b = int(kv[_M, 2]) - int(kv[_M, 1]) if mm >= 2 else 0
            kv_a = int(kv[_M, 1]) - kv_b
            for S in range(2, most // size + 1):
                n = S - 2
                if n > max(U - 2, 0) or (n and mm == 0):
                    break
                ok = (M == 0) if n == 0 else (M >= n) & (M <= n * mm)
                if not ok.any():
                    continue
                if n == 0:
                    sums, slow, kvs = ends, ends_slow, ends_kv
                    spread = np.abs(LF - LL)
                else:
                    # n middles cut evenly hold M layers: times A + B * length sum to
                    # n * A + B * M (the solver's compact middles); the longest holds
                    # ceil(M / n) layers.
                    sums = {ph: ends[ph] + n * (mid_a[ph] + hop[ph]) + mid_b[ph] * M
                            for ph in phases}
                    top = -(-M // n)
                    slow = (np.maximum(ends_slow, mid_a["prefill"] + mid_b["prefill"] * top)
                            if ends_slow is not None else None)
                    kvs = np.maximum(ends_kv, kv_a + kv_b * top) if kds else ends_kv
                    spread = (np.maximum(np.maximum(LF, LL), top)
                              - np.minimum(np.minimum(LF, LL), M // n))

                def stages(i: int, j: int, c=c, n=n) -> tuple:
                    lf, ll = i + 1, j + 1
                    return (StageChoice("first", c, lf), *balanced_mids(c, n, U - lf - ll),
                            StageChoice("last", c, ll))

                self._keep(c, S, S * size, sums, slow, kvs, ok, spread, osl, ttft_slo,
                           tpot_slo, stages)

    def _keep(self, c: int, S: int, usage: int, sums: dict, slow, kv, ok, spread, osl: int,
              ttft_slo, tpot_slo, stages) -> None:
        """The best of one (config, stage count)'s grid of end-stage lengths (exact ties:
        the most even stage lengths, then the shortest ends)."""
        pool = self.pool
        ttft = sums.get("prefill", 0) + (kv if pool == "prefill" else 0)
        tpot = sums.get("decode", 0)
        feas = ok.copy()
        if ttft_slo is not None and pool in ("prefill", "colocated"):
            feas &= ttft <= ttft_slo
        if tpot_slo is not None and pool in ("decode", "colocated"):
            feas &= tpot <= tpot_slo
        if not feas.any():
            return
        shape = feas.shape
        ttft = np.broadcast_to(ttft, shape)
        tpot = np.broadcast_to(tpot, shape)
        if pool == "decode":
            keys = (tpot,)
        elif pool == "colocated":
            keys = (ttft + (osl - 1) * tpot,)
        else:
            keys = (np.broadcast_to(slow, shape), ttft)
        # lexicographic minimum over the feasible grid
        cand = feas
        for k in (*keys, np.broadcast_to(spread, shape)):
            best = k[cand].min()
            cand = cand & (k == best)
        i, j = (int(x[0]) for x in np.nonzero(cand))
        vals = [int(k[i, j]) for k in keys]
        key = (vals[0], usage, *vals[1:])
        kvv = int(np.broadcast_to(kv, shape)[i, j]) if pool == "prefill" else 0
        self.best.append(_Best(key, usage, stages(i, j), int(ttft[i, j]),
                               int(tpot[i, j]), kvv))

    def answer(self, cap: int, goal: str = "") -> SolveResult:
        """The best pipeline on at most ``cap`` devices (``goal="devices"``: the fewest
        devices any pipeline needs), as the solver would report it."""
        fit = [b for b in self.best if b.usage <= cap]
        if not fit:
            return SolveResult("infeasible", None, None, 0.0)
        if goal == "devices":
            b = min(fit, key=lambda b: (b.usage, b.ttft))
        else:
            b = min(fit, key=lambda b: b.key)  # stable: the enumeration order breaks ties
        res = SolveResult("optimal", float(b.key[0]), float(b.key[0]), 0.0)
        res.pools[self.pool] = [StageChoice(s.role, s.config, s.length, s.count)
                                for s in b.stages]
        res.ttft_t = b.ttft if self.pool != "decode" else 0
        res.tpot_t = b.tpot if self.pool != "prefill" else 0
        res.kv_t = b.kv
        res.usage = (b.usage,)
        res.devices = b.usage
        return res
