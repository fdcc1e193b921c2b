"""Several replica designs per pool: the replica counts ``y[q]`` over the whole menu.

FORMULATION.md's ``y[q]``: where one design per pool leaves devices idle (a mixed
cluster, or leftovers no second replica of the chosen design fits), a deployment may run
replicas of several designs of a pool at once. The designs of the fronts
(:func:`~autoplan.search.replicas.front`) are the menu; a deployment is a count per
design, and its rate is that of *groups* by where the KV goes:

- a disaggregated group is the decode designs of one set of device kinds ``K`` and the
  prefill designs whose KV goes to ``K``; its rate is ``min(sum y a, sum y b, link *
  min(prefill devices, decode devices))`` over its prefill rates ``a`` and decode rates
  ``b``, ``link`` the slowest KV path (per device) from the group's prefill kinds to
  ``K``; the deployment's rate is the sum over its groups;
- a colocated deployment's rate is ``sum y r``;
- inventory per device class, and the device budget, as for one design per pool.

:func:`mix_rate` is that rule in exact fractions (the search's);
:mod:`autoplan.cost.deployment` prices the same rule from a plan's figures for
``validate``.
:func:`best_mix` finds the best counts: one device class by dynamic programming over
device counts (exact in floating point, then re-priced exactly), several classes by a
small CP-SAT integer program on rates rounded down to integers, with a second solve on
rates rounded up that bounds the optimum (proven when the two agree to ``REL``).
The planner keeps one design per pool unless a mix is better by more than ``REL``
(ties go to the fewer designs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from autoplan.search.assign import REL  # float noise between exact figures

SCALE_BITS = 44  # rates as integers of 2^-44 of the reference rate (sums stay < 2^62)
MIX_TIME_LIMIT_S = 10.0  # per integer program (they take milliseconds)


@dataclass
class Mix:
    entries: list[tuple[str, object, int]]  # (pool, Design, replicas), canonical order
    rate: Fraction
    devices: int
    proven: bool
    link_binds: bool = False


def _group_key(pool: str, d) -> frozenset:
    return d.decode_kinds if pool == "prefill" else d.kinds


def mix_rate(entries: list[tuple[str, object, int]], links: dict) -> tuple[Fraction, bool]:
    """Exact requests/s of a deployment of ``entries`` (pool, design, replicas), and
    whether a KV link budget is what binds it. ``links[(A, K)]``: requests/s the KV path
    from kinds ``A`` to ``K`` carries per device of the smaller side (None: unbounded)."""
    if entries and entries[0][0] == "colocated":
        return sum((y * d.rate for _, d, y in entries), Fraction(0)), False
    total, binds = Fraction(0), False
    for key in sorted({_group_key(p, d) for p, d, _ in entries}, key=sorted):
        pre = [(d, y) for p, d, y in entries if p == "prefill" and d.decode_kinds == key]
        dec = [(d, y) for p, d, y in entries if p == "decode" and d.kinds == key]
        if not pre or not dec:
            continue  # a group without one of its pools serves nothing
        a = sum((y * d.rate for d, y in pre), Fraction(0))
        b = sum((y * d.rate for d, y in dec), Fraction(0))
        r = min(a, b)
        bw = [x for x in (links.get((d.kinds, key)) for d, _ in pre) if x is not None]
        if bw:  # the slowest bounded path (None: unbounded, no constraint)
            n = min(sum(y * sum(d.usage) for d, y in pre), sum(y * sum(d.usage) for d, y in dec))
            cap = n * min(bw)
            if cap < r:
                r, binds = cap, True
        total += r
    return total, binds


def _better(objective: str, a: tuple[Fraction, int], b: tuple[Fraction, int] | None) -> bool:
    """(rate, devices) ``a`` beats ``b`` beyond float noise, for the objective."""
    if b is None:
        return True
    (ra, da), (rb, db) = a, b
    if objective == "devices":
        return da < db or (da == db and ra > rb * (1 + REL))
    return ra > rb * (1 + REL) or (ra >= rb * (1 - REL) and da < db)


def best_mix(t, mode: str, fronts: dict[str, list], objective: str,
             lam: Fraction | None, budget: int, links: dict,
             than: tuple[Fraction, int] | None) -> tuple[Mix | None, bool]:
    """The best deployment of several designs per pool if it beats ``than`` (the best
    one-design-per-pool deployment's (rate, devices)) beyond float noise, else None; and
    whether the search proved it (False: the integer program stopped unsolved, or its
    two roundings disagree: nothing is known beyond what it returns)."""
    caps = [c.devices for c in t.classes]
    pools = ("colocated",) if mode == "colocated" else ("prefill", "decode")
    items = [(p, d) for p in pools for d in fronts.get(p, [])]
    if mode != "colocated":  # designs of a group with both pools only
        keys = ({d.decode_kinds for d in fronts.get("prefill", [])}
                & {d.kinds for d in fronts.get("decode", [])})
        items = [(p, d) for p, d in items if _group_key(p, d) in keys]
    if not items:
        return None, True
    if len(caps) == 1:
        got, bound = _dp(items, mode, objective, lam, min(caps[0], budget), links), None
    else:
        got, bound = _integer_program(items, mode, objective, lam, caps, budget, links, than)
        if got is None and bound is None:
            return None, False  # the solver stopped before it knew anything
    if got is None:
        return None, True
    entries = [(p, d, y) for (p, d), y in zip(items, got) if y > 0]
    if mode != "colocated":  # replicas of a group without the other pool serve nothing
        used = {p: {_group_key(p, d) for q, d, _ in entries if q == p} for p in pools}
        entries = [e for e in entries if _group_key(e[0], e[1]) in used["prefill"] & used["decode"]]
    rate, binds = mix_rate(entries, links)
    devices = sum(y * sum(d.usage) for _, d, y in entries)
    proven = True
    if bound is not None:  # the rounded-up program's optimum bounds every deployment
        proven = (devices <= bound if objective == "devices"
                  else rate * (1 + Fraction(REL)) >= bound)
    if rate <= 0 or (lam is not None and rate < lam):  # nothing served
        return None, proven
    if not _better(objective, (rate, devices), than):
        return None, proven
    return Mix(entries, rate, devices, proven, binds), proven


# -- one device class: dynamic programming over device counts --------------------------

def _knapsack(sizes: list[int], rates: list[float], cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Best total rate on exactly ``c`` devices (-inf: no combination), c = 0..cap, and
    the last design added (back-pointer; -1 at c = 0)."""
    best = np.full(cap + 1, -np.inf)
    last = np.full(cap + 1, -1, dtype=np.int64)
    best[0] = 0.0
    n = np.array(sizes, dtype=np.int64)
    r = np.array(rates, dtype=float)
    for c in range(1, cap + 1):
        fit = n <= c
        if not fit.any():
            continue
        cand = np.where(fit, best[np.maximum(c - n, 0)] + r, -np.inf)
        q = int(np.argmax(cand))  # the first of equal candidates: deterministic
        if cand[q] > -np.inf:
            best[c], last[c] = cand[q], q
    return best, last


def _counts(last: np.ndarray, sizes: list[int], c: int, k: int) -> list[int]:
    y = [0] * k
    while c > 0:
        q = int(last[c])
        y[q] += 1
        c -= sizes[q]
    return y


def _dp(items: list[tuple[str, object]], mode: str, objective: str, lam: Fraction | None,
        cap: int, links: dict) -> list[int] | None:
    sizes = [sum(d.usage) for _, d in items]
    rates = [float(d.rate) for _, d in items]
    lam_f = float(lam) if lam is not None else None
    if mode == "colocated":
        best, last = _knapsack(sizes, rates, cap)
        ok = np.isfinite(best) & (best > 0)
        if lam_f is not None:
            ok &= best >= lam_f * (1 - 1e-12)
        if not ok.any():
            return None
        if objective == "devices":
            c = int(np.flatnonzero(ok)[0])
        else:
            top = best[ok].max()
            c = int(np.flatnonzero(ok & (best >= top * (1 - 1e-12)))[0])
        return _counts(last, sizes, c, len(items))
    pre = [i for i, (p, _) in enumerate(items) if p == "prefill"]
    dec = [i for i, (p, _) in enumerate(items) if p == "decode"]
    bp, lp = _knapsack([sizes[i] for i in pre], [rates[i] for i in pre], cap)
    bd, ld = _knapsack([sizes[i] for i in dec], [rates[i] for i in dec], cap)
    (_, d0) = items[pre[0]]
    link = links.get((d0.kinds, d0.decode_kinds))  # one class: one kind, one group
    c = np.arange(cap + 1)
    if link is not None:
        bp = np.minimum(bp, float(link) * c)
        bd = np.minimum(bd, float(link) * c)
    best_pair = None  # (value, -devices) over c_p + c_d <= cap
    for cp in range(1, cap):
        if not np.isfinite(bp[cp]) or bp[cp] <= 0:
            continue
        d_vals = bd[1:cap - cp + 1]
        if not len(d_vals):
            continue
        vals = np.minimum(bp[cp], d_vals)
        top = vals.max()
        if not np.isfinite(top) or top <= 0 or (lam_f is not None
                                                and top < lam_f * (1 - 1e-12)):
            continue
        # devices: the fewest decode devices reaching the rate; throughput: the best
        # rate on the fewest decode devices
        goal = lam_f if objective == "devices" else top
        cd = int(np.flatnonzero(vals >= goal * (1 - 1e-12))[0]) + 1
        v = float(min(bp[cp], bd[cd]))
        key = (-(cp + cd), v) if objective == "devices" else (v, -(cp + cd))
        if best_pair is None or _float_better(key, best_pair[0]):
            best_pair = (key, cp, cd)
    if best_pair is None:
        return None
    _, cp, cd = best_pair
    y = [0] * len(items)
    for q, n in enumerate(_counts(lp, [sizes[i] for i in pre], cp, len(pre))):
        y[pre[q]] = n
    for q, n in enumerate(_counts(ld, [sizes[i] for i in dec], cd, len(dec))):
        y[dec[q]] = n
    return y


def _float_better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Lexicographic, the first entry compared to float noise."""
    if a[0] > b[0] + abs(b[0]) * 1e-12:
        return True
    return a[0] >= b[0] - abs(b[0]) * 1e-12 and a[1] > b[1]


# -- several device classes: a small integer program ------------------------------------

def _integer_program(items, mode: str, objective: str, lam: Fraction | None,
                     caps: list[int], budget: int, links: dict,
                     than: tuple[Fraction, int] | None):
    """(counts or None, bound): the counts on rates rounded down (sound: they serve at
    least what the model says), and the optimum on rates rounded up, which no deployment
    beats (throughput: a rate; devices: the fewest devices). (None, None): the solver
    stopped before it knew either."""
    from autoplan.search.limits import Limits
    from autoplan.search.solver import _model, _solve, cp_model

    def mix_solve(m):
        # big-M rows with large coefficients: a stronger linear relaxation helps
        s, status, _, _ = _solve(m, 1, Limits(time_limit_s=MIX_TIME_LIMIT_S),
                                 presolve=False, linearization_level=2)
        return s, status

    ub = [min([c // u for c, u in zip(caps, d.usage) if u > 0] + [budget // sum(d.usage)])
          for _, d in items]
    size = [sum(d.usage) for _, d in items]
    ref = than[0] if than is not None and than[0] > 0 else (lam or max(d.rate for _, d in items))
    scale = Fraction(2 ** SCALE_BITS) / ref
    finite = [x for x in links.values() if x is not None]
    most = sum(y * d.rate for y, (_, d) in zip(ub, items))
    top = most * scale
    # every sum of the model within 64 bits: rates, and the link rows (their link times
    # the devices, plus the big-M term)
    while max(top, max(finite, default=0) * scale * budget) * 3 > 2 ** 62:
        scale /= 2
        top /= 2
    bound_m = int(top) + 1
    slack = sum(ub)  # the most a sum of rounded-down rates loses: a unit per replica

    def build(rounding):
        m = _model()
        y = [m.new_int_var(0, u, f"y{i}") for i, u in enumerate(ub)]
        for k, cap in enumerate(caps):
            m.add(sum(v * d.usage[k] for v, (_, d) in zip(y, items)) <= cap)
        devices = sum(v * n for v, n in zip(y, size))
        m.add(devices <= budget)
        coef = [int(rounding(d.rate * scale)) for _, d in items]
        if mode == "colocated":
            return m, y, sum(v * a for v, a in zip(y, coef)), devices
        rates = []
        for key in sorted({_group_key(p, d) for p, d in items}, key=sorted):
            r = m.new_int_var(0, bound_m, "")
            dec = [i for i, (p, d) in enumerate(items) if p == "decode" and d.kinds == key]
            m.add(r <= sum(y[i] * coef[i] for i in dec))
            pre = [i for i, (p, d) in enumerate(items)
                   if p == "prefill" and d.decode_kinds == key]
            m.add(r <= sum(y[i] * coef[i] for i in pre))
            # The KV link: the slowest path of the prefill kinds the group uses, times
            # the smaller side's devices (z: the group uses prefill kinds a).
            for a in sorted({items[i][1].kinds for i in pre}, key=sorted):
                link = links.get((a, key))
                if link is None:
                    continue
                z = m.new_bool_var("")
                for i in pre:
                    if items[i][1].kinds == a:
                        m.add(y[i] <= ub[i] * z)
                lc = int(rounding(link * scale))
                for side in (pre, dec):
                    m.add(r <= lc * sum(y[i] * size[i] for i in side) + bound_m * (1 - z))
            rates.append(r)
        return m, y, sum(rates), devices

    def run(rounding, relax: int = 0):
        """(counts, objective value, proven optimal); counts None: infeasible (value
        None too: the solver stopped before it knew)."""
        m, y, rate, devices = build(rounding)
        if objective == "devices":
            m.add(rate >= math.ceil(lam * scale) - relax)
            m.minimize(devices)
        else:
            m.maximize(rate)
        s, status = mix_solve(m)
        if status == cp_model.INFEASIBLE:
            return None, 0, True
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None, None, False
        first = int(round(s.objective_value))
        optimal = status == cp_model.OPTIMAL
        if objective == "devices":  # then the highest rate on those devices
            m.add(devices <= first)
            m.maximize(rate)
        else:  # then the fewest devices, among rates within the rounding's loss
            m.add(rate >= first - slack)
            m.minimize(devices)
        s2, status2 = mix_solve(m)
        if status2 not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None, None, False
        return [int(s2.value(v)) for v in y], first, optimal and status2 == cp_model.OPTIMAL

    # rates rounded up: an upper bound of the rate (or lower bound of the devices) of
    # every deployment; with the devices objective its counts may serve just below the
    # rate, so they are the answer only where the exact rate reaches it
    up_y, up, up_ok = run(math.ceil)
    if up is None:
        return None, None
    y, _, ok = run(math.floor, 0 if objective == "throughput" else slack)
    if objective == "devices":
        cands = [c for c in (y, up_y) if c is not None]
        exact = [c for c in cands if _exact_rate(items, c, links, mode) >= lam]
        if not exact:  # none reaches the rate: proven where the bound says none can
            return None, (0 if up_y is None and up_ok else None)
        best = min(exact, key=lambda c: (sum(n * z for n, z in zip(c, size)),
                                         -_exact_rate(items, c, links, mode)))
        return best, up if (up_ok and ok and up_y is not None) else -1
    if y is None:
        return None, None
    return y, Fraction(up) / scale if (up_ok and ok) else Fraction(10) ** 30


def _exact_rate(items, y, links, mode) -> Fraction:
    return mix_rate([(p, d, n) for (p, d), n in zip(items, y) if n], links)[0]
