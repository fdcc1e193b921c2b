"""Replicated pools: the ``throughput`` and ``devices`` objectives.

FORMULATION.md's menu approach. For each pool type the CP-SAT stage model is solved for
the Pareto front of replica *designs*, one per device-usage vector: for every usage it
finds the design with the best per-replica rate (prefill: the slowest stage, since
batches are pipelined through the stages; decode: TPOT; colocated: end-to-end
latency), under the SLOs. The front is enumerated exactly by lowering one class's cap
below the last design's usage at a time (epsilon-constraint), so no usage vector that
could matter is skipped. A replica's rate depends on nothing but its design, so
choosing the pair of designs and the replica counts over the fronts is exact; that
choice is a small integer enumeration done here in numpy:

- rate per replica (requests/s): prefill ``B / slowest stage``, decode
  ``B / (osl * TPOT)``, colocated ``B / e2e``;
- deployment rate: ``min(y_p * r_p, y_d * r_d, KV link budget)``; the KV link budget
  is the per-device KV path bandwidth times the smaller pool's device count, over the
  bytes of one prompt's KV cache;
- inventory per device class: ``y_p * u_p + y_d * u_d <= devices``.

``throughput`` maximises the rate, then uses the fewest devices; ``devices`` uses the
fewest devices whose rate reaches ``request_rate``, then the highest rate. Remaining
ties go to the earlier design in a canonical order (colocated first).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from autoplan.solver import Limits, SolveResult, StageChoice, solve
from autoplan.tables import ROLES, Tables, kv_pair_bandwidth, kv_stage_bytes

MAX_FRONT = 64  # designs per front before the enumeration stops (the plan then says feasible)


@dataclass
class Design:
    pool: str
    stages: list[StageChoice]
    usage: tuple[int, ...]
    kinds: frozenset[str]
    ttft_us: int  # prefill sum + hops (+ KV hand-off for a prefill design)
    tpot_us: int
    slowest_us: int  # slowest prefill stage (prefill designs)
    rate: Fraction  # requests per second of one replica
    optimal: bool  # proved by CP-SAT
    decode_kinds: frozenset[str] = frozenset()  # prefill designs: where their KV goes


@dataclass
class Choice:
    mode: str
    designs: dict[str, Design]  # pool -> design
    replicas: dict[str, int]
    rate: Fraction
    devices: int
    optimal: bool
    wall_s: float = 0.0
    solves: int = 0
    notes: list[str] = field(default_factory=list)


def design_times(t: Tables, pool: str, stages: list[StageChoice],
                 decode_kinds: frozenset[str]) -> tuple[int, int, int, int]:
    """(TTFT part, TPOT, slowest prefill stage, KV hand-off) in table microseconds."""
    tab = t.pools[pool]
    sums = {ph: 0 for ph in tab.time_us}
    slowest = kv = 0
    for s in stages:
        r = ROLES.index(s.role)
        for ph, arr in tab.time_us.items():
            hop = int(tab.hop_us[ph][s.config]) if s.role in ("mid", "last") else 0
            sums[ph] += s.count * (int(arr[r, s.config, s.length]) + hop)
        if "prefill" in tab.time_us:
            slowest = max(slowest, int(tab.time_us["prefill"][r, s.config, s.length]))
        if pool == "prefill":
            for kd in decode_kinds:
                kv = max(kv, int(t.kv_us[r, s.config, s.length, t.kinds.index(kd)]))
    return sums.get("prefill", 0) + kv, sums.get("decode", 0), slowest, kv


def _rate(t: Tables, pool: str, ttft: int, tpot: int, slowest: int, osl: int) -> Fraction:
    B = t.work.batch * 10**6
    if pool == "prefill":
        return Fraction(B, slowest)
    if pool == "decode":
        return Fraction(B, osl * tpot)
    return Fraction(B, ttft + (osl - 1) * tpot)


def front(t: Tables, pool: str, osl: int, limits: Limits,
          decode_kinds: frozenset[str] = frozenset()) -> tuple[list[Design], int, bool]:
    """Pareto front of replica designs of ``pool``: (designs, solves, complete)."""
    goal = {"prefill": "slowest", "decode": "phase", "colocated": "latency"}[pool]
    full = tuple(c.devices for c in t.classes)
    stack, seen = [full], set()
    designs: dict[tuple[int, ...], Design] = {}
    solves, complete = 0, True
    while stack:
        caps = stack.pop()
        if caps in seen:
            continue
        seen.add(caps)
        if len(designs) >= MAX_FRONT:
            complete = False
            break
        quiet = Limits(limits.ttft_slo_us, limits.tpot_slo_us, limits.time_limit_s, False)
        res: SolveResult = solve(t, (pool,), osl, quiet, goal=goal, caps=list(caps),
                                 decode_kinds=tuple(sorted(decode_kinds)))
        solves += 1
        if res.status == "infeasible":
            complete = complete and res.wall_s < limits.time_limit_s
            continue
        stages = res.pools[pool]
        kinds = frozenset(t.configs[s.config].kind for s in stages)
        ttft, tpot, slowest, _ = design_times(t, pool, stages, decode_kinds)
        d = Design(pool, stages, res.usage, kinds, ttft, tpot, slowest,
                   _rate(t, pool, ttft, tpot, slowest, osl), res.status == "optimal",
                   decode_kinds if pool == "prefill" else frozenset())
        if res.usage not in designs:
            designs[res.usage] = d
            if limits.progress:
                print(f"  [{pool} front] {sum(res.usage)} devices: {float(d.rate):.4g} "
                      f"requests/s per replica ({res.status})", file=sys.stderr)
        for k in reversed(range(len(caps))):  # sorted pushes: deterministic order
            if res.usage[k] > 0:
                stack.append(tuple(u - 1 if j == k else c
                                   for j, (c, u) in enumerate(zip(caps, res.usage))))
    # Keep the Pareto set: no other design as good with no more devices of any class.
    out = [d for d in designs.values()
           if not any(e is not d and e.rate >= d.rate and all(a <= b for a, b in zip(e.usage, d.usage))
                      and (e.rate > d.rate or e.usage != d.usage) for e in designs.values())]
    out.sort(key=lambda d: (sum(d.usage), d.usage, -d.rate))
    return out, solves, complete


def kv_request_bytes(t: Tables) -> float:
    return kv_stage_bytes(t.model, t.work, t.model.num_layers) / t.work.batch


def _link_bw(t: Tables, a: Design, b: Design) -> float:
    return min(kv_pair_bandwidth(t.topo, x, y)[0] for x in sorted(a.kinds) for y in sorted(b.kinds))


def _ceil_div(x: Fraction) -> int:
    return max(1, math.ceil(x))


def choose(t: Tables, mode: str, fronts: dict[str, list[Design]], objective: str,
           request_rate: float | None) -> Choice | None:
    """The best designs and replica counts of one placement mode (None: infeasible)."""
    caps = np.array([c.devices for c in t.classes], dtype=np.int64)
    best: tuple | None = None
    lam_min = Fraction(request_rate).limit_denominator(10**9) if request_rate else None
    if mode == "colocated":
        for i, d in enumerate(fronts["colocated"]):
            u = np.array(d.usage)
            y_max = int(min(caps[u > 0] // u[u > 0]))
            if y_max < 1:
                continue
            if objective == "devices":
                y = _ceil_div(lam_min / d.rate)
                if y > y_max:
                    continue
            else:
                y = y_max
            rate = y * d.rate
            if lam_min is not None and rate < lam_min:
                continue
            key = _key(objective, rate, y * int(u.sum()), (i,))
            if best is None or key < best[0]:
                best = (key, {"colocated": d}, {"colocated": y}, rate, y * int(u.sum()))
    else:
        per_req = kv_request_bytes(t)
        for i, a in enumerate(fronts["prefill"]):
            for j, b in enumerate(fronts["decode"]):
                if not _compatible(a, b):
                    continue
                got = _pair(t, a, b, caps, objective, lam_min, per_req)
                if got is None:
                    continue
                (yp, yd), rate, dev = got
                key = _key(objective, rate, dev, (i, j))
                if best is None or key < best[0]:
                    best = (key, {"prefill": a, "decode": b}, {"prefill": yp, "decode": yd},
                            rate, dev)
    if best is None:
        return None
    _, designs, reps, rate, dev = best
    return Choice(mode, designs, reps, rate, dev, all(d.optimal for d in designs.values()))


def _compatible(a: Design, b: Design) -> bool:
    # Prefill fronts are solved per decode kind set; the pair must match it.
    return a.decode_kinds == b.kinds


def _key(objective: str, rate: Fraction, devices: int, index: tuple) -> tuple:
    if objective == "devices":
        return (devices, -rate, index)
    return (-rate, devices, index)


def _pair(t: Tables, a: Design, b: Design, caps: np.ndarray, objective: str,
          lam_min: Fraction | None, per_req: float):
    """Best replica counts of a prefill and a decode design."""
    ua, ub = np.array(a.usage), np.array(b.usage)
    na, nb = int(ua.sum()), int(ub.sum())
    bw = _link_bw(t, a, b)
    link_per_dev = Fraction(bw / per_req) if math.isfinite(bw) else None

    def link(yp: int, yd: int) -> Fraction | None:
        return None if link_per_dev is None else min(yp * na, yd * nb) * link_per_dev

    def rate_of(yp: int, yd: int) -> Fraction:
        r = min(yp * a.rate, yd * b.rate)
        lk = link(yp, yd)
        return r if lk is None else min(r, lk)

    def fits(yp: int, yd: int) -> bool:
        return bool(np.all(yp * ua + yd * ub <= caps))

    def fewest(lam: Fraction) -> tuple[int, int]:
        yp, yd = _ceil_div(lam / a.rate), _ceil_div(lam / b.rate)
        if link_per_dev is not None:
            yp = max(yp, _ceil_div(lam / (na * link_per_dev)))
            yd = max(yd, _ceil_div(lam / (nb * link_per_dev)))
        return yp, yd

    if objective == "devices":
        yp, yd = fewest(lam_min)
        if not fits(yp, yd) or rate_of(yp, yd) < lam_min:
            return None
        return (yp, yd), rate_of(yp, yd), yp * na + yd * nb
    # Throughput: for every prefill replica count, as many decode replicas as fit.
    yp_max = int(min(caps[ua > 0] // ua[ua > 0]))
    yps = np.arange(1, yp_max + 1)
    left = caps[None, :] - yps[:, None] * ua[None, :]
    with np.errstate(divide="ignore"):
        yd_max = np.min(np.where(ub[None, :] > 0, left // np.maximum(ub[None, :], 1),
                                 np.iinfo(np.int64).max), axis=1)
    ok = yd_max >= 1
    if not ok.any():
        return None
    yps, yd_max = yps[ok], yd_max[ok]
    approx = np.minimum(yps * float(a.rate), yd_max * float(b.rate))
    if link_per_dev is not None:
        approx = np.minimum(approx, np.minimum(yps * na, yd_max * nb) * float(link_per_dev))
    top = approx.max()
    best_rate = None
    for k in np.nonzero(approx >= top * (1 - 1e-9))[0]:  # exact among float near-ties
        r = rate_of(int(yps[k]), int(yd_max[k]))
        if best_rate is None or r > best_rate:
            best_rate = r
    if lam_min is not None and best_rate < lam_min:
        return None
    yp, yd = fewest(best_rate)
    assert fits(yp, yd) and rate_of(yp, yd) >= best_rate
    return (yp, yd), rate_of(yp, yd), yp * na + yd * nb


def plan_replicated(t: Tables, modes: list[str], osl: int, limits: Limits, objective: str,
                    request_rate: float | None) -> tuple[Choice | None, dict[str, Choice | None], float, int]:
    """Fronts, then the best choice per mode; returns (best, per mode, wall s, solves)."""
    import time

    t0 = time.perf_counter()
    solves = 0
    complete = True
    per_mode: dict[str, Choice | None] = {}
    for mode in modes:
        if mode == "colocated":
            designs, n, ok = front(t, "colocated", osl, limits)
            solves += n
            complete &= ok
            per_mode[mode] = choose(t, mode, {"colocated": designs}, objective, request_rate)
            continue
        dec, n, ok = front(t, "decode", osl, limits)
        solves += n
        complete &= ok
        pre: list[Design] = []
        for kinds in sorted({d.kinds for d in dec}, key=sorted):
            got, n, ok = front(t, "prefill", osl, limits, kinds)
            solves += n
            complete &= ok
            pre += got
        per_mode[mode] = choose(t, mode, {"prefill": pre, "decode": dec}, objective,
                                request_rate)
    found = [c for c in per_mode.values() if c is not None]
    wall = time.perf_counter() - t0
    for c in found:
        c.optimal = c.optimal and complete
        c.wall_s, c.solves = wall, solves
    if not found:
        return None, per_mode, wall, solves
    order = {m: i for i, m in enumerate(modes)}
    best = min(found, key=lambda c: _key(objective, c.rate, c.devices, (order[c.mode],)))
    return best, per_mode, wall, solves
