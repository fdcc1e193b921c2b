"""Brute-force enumerator over the planner's tables: the test oracle for CP-SAT.

It lists every pipeline of every pool explicitly (one ``only`` stage, or a first and a
last stage with any multiset of middle stages: stage order changes no figure the
solver optimises), prices it with the same integer tables and returns the best
objective. Exponential: small instances only (a dozen layers, a few configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from itertools import product

from autoplan.cost.kv import kv_link_bandwidth, kv_stage_bytes
from autoplan.search.solver import Limits
from autoplan.search.tables import (
    POOL_PHASES,
    ROLES,
    TICKS_PER_S,
    Tables,
    class_entries,
    colocated_rate,
)


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[tuple[str, int, int], ...]  # (role, config, length)
    times: tuple[tuple[str, int], ...]  # (phase, table ticks)
    usage: tuple[int, ...]  # devices per class
    kinds: frozenset[str]

    def time(self, phase: str) -> int:
        return dict(self.times)[phase]


def pipelines(t: Tables, pool: str) -> list[Pipeline]:
    """Every pipeline of ``pool`` that fits in memory and in the device inventory."""
    tab, U = t.pools[pool], t.units
    C = len(t.configs)
    cap = [c.devices for c in t.classes]
    out: list[Pipeline] = []

    def ok(role: str, c: int, ln: int) -> bool:
        return 1 <= ln <= tab.max_len[ROLES.index(role), c]

    def make(stages: list[tuple[str, int, int]]) -> None:
        if len({t.configs[c].shape for _, c, _ in stages if t.governed(c)}) > 1:
            return  # an engine runs one TP degree per pipeline
        usage = [0] * len(t.classes)
        for _, c, _ in stages:
            usage[t.configs[c].cls] += t.configs[c].size
        if any(u > k for u, k in zip(usage, cap)):
            return
        times = []
        classes = [t.configs[c].cls for _, c, _ in stages]
        for ph in POOL_PHASES[pool]:
            total = 0
            for role, c, ln in stages:
                total += int(tab.time_t[ph][ROLES.index(role), c, ln])
                if role in ("mid", "last"):
                    total += int(tab.hop_t[ph][c])
            total += class_entries(tab, ph, classes)
            times.append((ph, total))
        out.append(Pipeline(tuple(stages), tuple(times), tuple(usage),
                            frozenset(t.configs[c].kind for _, c, _ in stages)))

    for c in range(C):
        if tab.max_len[ROLES.index("only"), c] == U:
            make([("only", c, U)])
    mids = [(c, ln) for c in range(C) for ln in range(1, U + 1) if ok("mid", c, ln)]
    for cf, lf, cl, ll in product(range(C), range(1, U), range(C), range(1, U)):
        if not (ok("first", cf, lf) and ok("last", cl, ll)) or lf + ll > U:
            continue

        base = [0] * len(t.classes)
        for c in (cf, cl):
            base[t.configs[c].cls] += t.configs[c].size
        if any(u > k for u, k in zip(base, cap)):
            continue

        def rec(i: int, left: int, chosen: list[tuple[str, int, int]], usage: list[int]) -> None:
            if left == 0:
                make([("first", cf, lf), *chosen, ("last", cl, ll)])
                return
            for j in range(i, len(mids)):
                c, ln = mids[j]
                k, tp = t.configs[c].cls, t.configs[c].size
                if ln <= left and usage[k] + tp <= cap[k]:  # prune: inventory exhausted
                    usage[k] += tp
                    rec(j, left - ln, chosen + [("mid", c, ln)], usage)
                    usage[k] -= tp

        rec(0, U - lf - ll, [], base)
    return out


def brute_force(t: Tables, pools: tuple[str, ...], osl: int, limits: Limits) -> int | None:
    """The optimal solver objective (``scale * latency_t + devices``), or None."""
    scale = sum(c.devices for c in t.classes) + 1
    cap = [c.devices for c in t.classes]
    best: int | None = None

    def consider(ttft: int, tpot: int, devices: int) -> None:
        nonlocal best
        if limits.ttft_slo_t is not None and ttft > limits.ttft_slo_t:
            return
        if limits.tpot_slo_t is not None and tpot > limits.tpot_slo_t:
            return
        obj = scale * (ttft + (osl - 1) * tpot) + devices
        if best is None or obj < best:
            best = obj

    if pools == ("colocated",):
        for p in pipelines(t, "colocated"):
            consider(p.time("prefill"), p.time("decode"), sum(p.usage))
        return best
    # Exhaustive over pairs, aggregated exactly: a pair's objective depends on the
    # prefill pipeline only through (device usage, TTFT given the decode kinds) and on the
    # decode pipeline only through (device usage, kinds used, TPOT). Keep the best of each.
    best_pre: dict[tuple[tuple[int, ...], frozenset[str]], int] = {}
    best_dec: dict[tuple[tuple[int, ...], frozenset[str]], int] = {}
    kind_sets = {b.kinds for b in pipelines(t, "decode")}
    for a in pipelines(t, "prefill"):
        for kinds in kind_sets:
            kv = max(int(t.kv_t[ROLES.index(r), c, ln, t.kinds.index(kd)])
                     for r, c, ln in a.stages for kd in kinds)
            ttft = a.time("prefill") + kv
            if limits.ttft_slo_t is not None and ttft > limits.ttft_slo_t:
                continue
            key = (a.usage, kinds)
            best_pre[key] = min(best_pre.get(key, ttft), ttft)
    for b in pipelines(t, "decode"):
        tpot = b.time("decode")
        if limits.tpot_slo_t is not None and tpot > limits.tpot_slo_t:
            continue
        key = (b.usage, b.kinds)
        best_dec[key] = min(best_dec.get(key, tpot), tpot)
    for (ua, kinds), ttft in best_pre.items():
        for (ub, kb), tpot in best_dec.items():
            if kb == kinds and all(x + y <= k for x, y, k in zip(ua, ub, cap)):
                consider(ttft, tpot, sum(ua) + sum(ub))
    return best


def brute_force_replicated(t: Tables, mode: str, osl: int, limits: Limits, objective: str,
                           request_rate: float | None = None,
                           more: tuple[Tables, ...] = ()) -> tuple[Fraction, int] | None:
    """The best (requests/s, devices) of one placement mode over every deployment of
    every pipeline at every replica count, several pipelines per pool allowed, or None:
    the oracle of :mod:`autoplan.search.replicas` and :mod:`autoplan.search.mix`.

    A disaggregated deployment's rate is the sum over groups (the decode pipelines of
    one kind set and the prefill pipelines sending their KV there) of ``min(prefill
    rates, decode rates, the slowest KV path of the group per device times the smaller
    side's devices)``. Throughput: the highest rate, then the fewest devices; devices:
    the fewest devices whose rate reaches ``request_rate``, then the highest rate.
    ``more``: the tables of other batch sizes (the oracle of
    :mod:`autoplan.search.batches`): every pipeline of every table is a candidate at its
    table's batch sizes, no bound assumed. Of pipelines with the same device usage
    (and kinds, and KV destination) only the fastest is enumerated.
    """
    cap = [c.devices for c in t.classes]
    lam = Fraction(request_rate).limit_denominator(10**9) if request_rate else None
    best: tuple | None = None

    def consider(rate: Fraction, devices: int) -> None:
        nonlocal best
        if rate <= 0 or (lam is not None and rate < lam):
            return
        key = (devices, -rate) if objective == "devices" else (-rate, devices)
        if best is None or key < best:
            best = key

    def ok(ttft: int | None, tpot: int | None) -> bool:
        return not ((ttft is not None and limits.ttft_slo_t is not None and ttft > limits.ttft_slo_t)
                    or (tpot is not None and limits.tpot_slo_t is not None
                        and tpot > limits.tpot_slo_t))

    tables = (t, *more)
    if mode == "colocated":
        cols: dict[tuple[int, ...], Fraction] = {}
        for tt in tables:
            for p in pipelines(tt, "colocated"):
                ttft, tpot = p.time("prefill"), p.time("decode")
                if ok(ttft, tpot):
                    r = colocated_rate(tt.work.batch, ttft, tpot, osl)
                    cols[p.usage] = max(cols.get(p.usage, Fraction(0)), r)
        for v, r in _exactly(list(cols.items()), cap).items():
            consider(r, sum(v))
        return None if best is None else _unkey(best, objective)
    per_req = kv_stage_bytes(t.model, t.work, t.model.num_layers) / t.work.pb
    decs: dict[tuple[tuple[int, ...], frozenset[str]], Fraction] = {}
    for tt in tables:
        for b in pipelines(tt, "decode"):
            if ok(None, b.time("decode")):
                key = (b.usage, b.kinds)
                decs[key] = max(decs.get(key, Fraction(0)),
                                Fraction(tt.work.batch * TICKS_PER_S, osl * b.time("decode")))
    pres: dict[tuple[tuple[int, ...], frozenset[str], frozenset[str]], Fraction] = {}
    for tt in tables:
        tab, P = tt.pools["prefill"], tt.work.pb
        for a in pipelines(tt, "prefill"):
            slowest = max(int(tab.busy_t[ROLES.index(r), c, ln])
                          for r, c, ln in a.stages)
            for kinds in {k for _, k in decs}:
                kv = max(int(tt.kv_t[ROLES.index(r), c, ln, tt.kinds.index(kd)])
                         for r, c, ln in a.stages for kd in kinds)
                if ok(a.time("prefill") + kv, None):
                    key = (a.usage, a.kinds, kinds)
                    pres[key] = max(pres.get(key, Fraction(0)), Fraction(P * TICKS_PER_S, slowest))

    def link(ka, kd) -> Fraction | None:
        bw = kv_link_bandwidth(t.topo, ka, kd)
        return Fraction(bw / per_req) if math.isfinite(bw) else None

    # Per group (the decode pipelines of one kind set and the prefill pipelines sending
    # there): its best rate on exactly v devices per class, over every split of v
    # between its pools and every set S of prefill kinds it may use (the KV link: the
    # slowest path of S; the best over S is exact, since using fewer kinds than S only
    # widens the link).
    zero = tuple(0 for _ in cap)
    total: dict[tuple[int, ...], Fraction] = {zero: Fraction(0)}
    for g in sorted({k for _, k in decs}, key=sorted):
        dec = _exactly([(u, r) for (u, k), r in decs.items() if k == g], cap)
        kinds = sorted({ka for (_, ka, k) in pres if k == g}, key=sorted)
        group: dict[tuple[int, ...], Fraction] = {}
        for m in range(1, 1 << len(kinds)):
            sub = [kinds[i] for i in range(len(kinds)) if m >> i & 1]
            pre = _exactly([(u, r) for (u, ka, k), r in pres.items() if k == g and ka in sub],
                           cap)
            links = [x for x in (link(ka, g) for ka in sub) if x is not None]
            lk = min(links) if links else None  # unbounded paths constrain nothing
            for vp, rp in pre.items():
                for vd, rd in dec.items():
                    v = tuple(a + b for a, b in zip(vp, vd))
                    if any(x > c for x, c in zip(v, cap)):
                        continue
                    r = min(rp, rd)
                    if lk is not None:
                        r = min(r, lk * min(sum(vp), sum(vd)))
                    if r > group.get(v, Fraction(-1)):
                        group[v] = r
        merged = dict(total)
        for va, ra in total.items():
            for vb, rb in group.items():
                v = tuple(a + b for a, b in zip(va, vb))
                if all(x <= c for x, c in zip(v, cap)) and ra + rb > merged.get(v, Fraction(-1)):
                    merged[v] = ra + rb
        total = merged
    for v, r in total.items():
        consider(r, sum(v))
    return None if best is None else _unkey(best, objective)


def _exactly(cands: list[tuple[tuple[int, ...], Fraction]], cap: list[int]
             ) -> dict[tuple[int, ...], Fraction]:
    """The best total rate of any counts of ``cands`` (usage per class, rate) using
    exactly ``v`` devices of each class, for every ``v`` within ``cap`` that some counts
    use (the empty vector: rate 0): every count vector, by usage."""
    zero = tuple(0 for _ in cap)
    best: dict[tuple[int, ...], Fraction] = {zero: Fraction(0)}
    for v in product(*(range(c + 1) for c in cap)):  # each v after every v - u
        for u, r in cands:
            w = tuple(a - b for a, b in zip(v, u))
            if min(w) >= 0 and w != v and w in best and best[w] + r > best.get(v, Fraction(-1)):
                best[v] = best[w] + r
    return best


def _unkey(key: tuple, objective: str) -> tuple[Fraction, int]:
    return (-key[1], key[0]) if objective == "devices" else (-key[0], key[1])
