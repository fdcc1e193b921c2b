"""Replicated pools: the ``throughput`` and ``devices`` objectives.

FORMULATION.md's menu approach. For each pool type the CP-SAT stage model is solved for
the Pareto front of replica *designs*, one per device-usage vector: for every usage it
finds the design with the best per-replica rate (prefill: the slowest stage, since
batches are pipelined through the stages; decode: TPOT; colocated: end-to-end latency
under in-flight batching, ``batch / (TTFT + (osl - 1) TPOT)``), under the SLOs. The front is enumerated exactly by lowering one class's cap
below the last design's usage at a time (epsilon-constraint), so no usage vector that
could matter is skipped. Where the space is tiny (one device class, one TP shape per
pipeline, affine stage times) each cap's answer comes from an exact enumeration of the
pipelines (:mod:`autoplan.search.direct`) instead of a CP-SAT model. A replica's rate
depends on nothing but its design, so choosing the designs and the replica counts over
the fronts is exact (:mod:`autoplan.search.deploy`: one design per pool by the
replica-count rule of :mod:`autoplan.search.counts`, or several designs per pool,
:mod:`autoplan.search.mix`, where they do better). Ties: colocated first.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from autoplan.search.deploy import Choice, _key, _no_better, choose
from autoplan.search.direct import Direct, applies
from autoplan.search.interrupt import interrupted
from autoplan.search.solver import Limits, SolveResult, StageChoice, solve
from autoplan.search.tables import ROLES, TICKS_PER_S, Tables, class_entries, colocated_rate

MAX_FRONT = 64  # designs per front before the enumeration stops (the plan then says feasible)
MAX_MIXED_CLASSES = 4  # device classes up to which designs mixing classes are enumerated
# (4: the 405B case on 4 classes enumerates its mixed fronts, proven, in about a second)


@dataclass
class Design:
    pool: str
    stages: list[StageChoice]
    usage: tuple[int, ...]
    kinds: frozenset[str]
    ttft_t: int  # prefill sum + hops (+ KV hand-off for a prefill design)
    tpot_t: int
    slowest_t: int  # slowest prefill stage (prefill designs)
    rate: Fraction  # requests per second of one replica
    optimal: bool  # proved by CP-SAT
    decode_kinds: frozenset[str] = frozenset()  # prefill designs: where their KV goes
    batch: int = 1  # decode batch the design was priced at (decode and colocated designs)
    prefill_batch: int = 1  # prefill batch it was priced at (prefill and colocated designs)


def design_times(t: Tables, pool: str, stages: list[StageChoice],
                 decode_kinds: frozenset[str]) -> tuple[int, int, int, int]:
    """(TTFT part, TPOT, slowest prefill stage, KV hand-off) in table ticks (10 ns)."""
    tab = t.pools[pool]
    sums = {ph: 0 for ph in tab.time_t}
    slowest = kv = 0
    # The classes in pipeline order (first, the middles, last): only the first, the last
    # and the set of classes matter to the entry charges.
    order = ([s for s in stages if s.role in ("only", "first")]
             + [s for s in stages if s.role == "mid"] + [s for s in stages if s.role == "last"])
    classes = [t.configs[s.config].cls for s in order]
    for ph in sums:
        sums[ph] += class_entries(tab, ph, classes)
    for s in stages:
        r = ROLES.index(s.role)
        for ph, arr in tab.time_t.items():
            hop = int(tab.hop_t[ph][s.config]) if s.role in ("mid", "last") else 0
            sums[ph] += s.count * (int(arr[r, s.config, s.length]) + hop)
        if "prefill" in tab.time_t:  # what paces the pipeline: its devices' busy time
            slowest = max(slowest, int(tab.busy_t[r, s.config, s.length]))
        if pool == "prefill":
            for kd in decode_kinds:
                kv = max(kv, int(t.kv_t[r, s.config, s.length, t.kinds.index(kd)]))
    return sums.get("prefill", 0) + kv, sums.get("decode", 0), slowest, kv


def _rate(t: Tables, pool: str, ttft: int, tpot: int, slowest: int, osl: int) -> Fraction:
    B, P = t.work.batch, t.work.pb
    if pool == "prefill":
        return Fraction(P * TICKS_PER_S, slowest)
    if pool == "decode":
        return Fraction(B * TICKS_PER_S, osl * tpot)
    return colocated_rate(B, ttft, tpot, osl)


_PRIORITY = ("interrupted", "time_limit", "front_limit", "batch_bound")


def _stop(stop: dict, reason: str) -> None:
    """Record why the enumeration is incomplete: Ctrl-C over the time limit over the cap
    on designs (a search that ran out of time says so, even where a cap also applied)."""
    had = stop.get("reason")
    if had is None or _PRIORITY.index(reason) < _PRIORITY.index(had):
        stop["reason"] = reason


def front(t: Tables, pool: str, osl: int, limits: Limits,
          decode_kinds: frozenset[str] = frozenset(),
          stop: dict | None = None,
          start: tuple[int, ...] | None = None) -> tuple[list[Design], int, bool]:
    """Pareto front of replica designs of ``pool``: (designs, solves, complete).

    ``stop["reason"]`` records why the enumeration ended early (interrupted, front_limit).
    """
    stop = {} if stop is None else stop
    solves, complete = 0, True
    goal = {"decode": "phase", "colocated": "rate"}.get(pool)  # prefill: _min_slowest
    full = start if start is not None else tuple(c.devices for c in t.classes)
    # Designs on one device class first (each class alone), then, with at most
    # MAX_MIXED_CLASSES classes, every mix; beyond that mixed designs are not searched
    # and the result is not proven (stop reason front_limit).
    K = len(full)
    singles = [tuple(c if j == k else 0 for j, c in enumerate(full)) for k in range(K)] if K > 1 else []
    stack = ([full] if K <= MAX_MIXED_CLASSES else []) + [s for s in reversed(singles) if any(s)]
    if K > MAX_MIXED_CLASSES:
        complete = False
        _stop(stop, "front_limit")
    lower: dict[tuple[int, ...], int] = {}  # caps -> the parent's slowest stage (prefill)
    seen: set = set()
    designs: dict[tuple[int, ...], Design] = {}
    # A tiny space (one class, one TP shape, affine times) is enumerated, not solved.
    direct = Direct(t, pool, osl, limits, decode_kinds) if applies(t, pool) else None
    while stack:
        caps = stack.pop()
        if caps in seen:
            continue
        seen.add(caps)
        if len(designs) >= MAX_FRONT:
            complete = False
            _stop(stop, "front_limit")
            break
        if interrupted():
            _stop(stop, "interrupted")
            complete = False
            break
        left = stop.get("deadline", float("inf")) - time.perf_counter()
        if left <= 0:
            complete = False
            _stop(stop, "time_limit")
            break
        quiet = Limits(limits.ttft_slo_t, limits.tpot_slo_t, min(limits.time_limit_s, left),
                       False, limits.max_devices)
        try:
            if direct is not None:
                res = direct.answer(caps[0])
            elif pool == "prefill":
                res, n = _min_slowest(t, osl, quiet, list(caps), decode_kinds,
                                      lower.get(caps, 0))
                solves += n - 1
            else:
                res = solve(t, (pool,), osl, quiet, goal=goal, caps=list(caps),
                            decode_kinds=tuple(sorted(decode_kinds)))
        except KeyboardInterrupt:  # Ctrl-C while building a model: keep what was found
            res = SolveResult("infeasible", None, None, 0.0, interrupted=True)
        solves += 1
        if res.interrupted:
            _stop(stop, "interrupted")
            complete = False
        if res.status == "infeasible" and res.interrupted:
            break
        if res.status == "infeasible":
            if res.wall_s >= quiet.time_limit_s * 0.98:
                complete = False
                _stop(stop, "time_limit")
            continue
        if res.status != "optimal" and not res.interrupted:
            _stop(stop, "time_limit")
        stages = res.pools[pool]
        kinds = frozenset(t.configs[s.config].kind for s in stages)
        ttft, tpot, slowest, _ = design_times(t, pool, stages, decode_kinds)
        d = Design(pool, stages, res.usage, kinds, ttft, tpot, slowest,
                   _rate(t, pool, ttft, tpot, slowest, osl), res.status == "optimal",
                   decode_kinds if pool == "prefill" else frozenset(),
                   t.work.batch, t.work.pb)
        if res.usage not in designs:
            designs[res.usage] = d
            if limits.progress:
                print(f"  [{pool} front] design {len(designs)}, {sum(res.usage)} devices: "
                      f"{float(d.rate):.4g} "
                      f"requests/s per replica ({res.status})", file=sys.stderr)
        if res.interrupted:
            break
        for k in reversed(range(len(caps))):  # sorted pushes: deterministic order
            if res.usage[k] > 0:
                child = tuple(u - 1 if j == k else c for j, (c, u) in enumerate(zip(caps, res.usage)))
                if res.status == "optimal":  # a proven minimum bounds the child's
                    lower[child] = max(lower.get(child, 0), slowest)
                stack.append(child)
    # Keep the Pareto set: no other design as good with no more devices of any class.
    out = [d for d in designs.values()
           if not any(e is not d and e.rate >= d.rate and all(a <= b for a, b in zip(e.usage, d.usage))
                      and (e.rate > d.rate or e.usage != d.usage) for e in designs.values())]
    out.sort(key=lambda d: (sum(d.usage), d.usage, -d.rate))
    return out, solves, complete


def _min_slowest(t: Tables, osl: int, limits: Limits, caps: list[int],
                 decode_kinds: frozenset[str], lower: int = 0) -> tuple[SolveResult, int]:
    """The prefill design with the shortest slowest stage under ``caps`` (then the fewest
    devices, then the shortest TTFT), by bisection over the table's stage times: each
    step asks CP-SAT for the fewest devices with no stage above a cap, a linear model
    (a min-max objective would need products of variables)."""
    kinds = tuple(sorted(decode_kinds))

    def at(cap: int | None, tie_break: bool = False) -> SolveResult:
        # the steps need only the fewest devices; the answer also the shortest TTFT
        return solve(t, ("prefill",), osl, limits, goal="devices", caps=caps,
                     decode_kinds=kinds, stage_cap=cap, tie_break=tie_break)

    best = at(None)
    n, proved = 1, best.status != "feasible"
    if best.status == "infeasible":
        return best, n
    slowest = design_times(t, "prefill", best.pools["prefill"], decode_kinds)[2]
    arr = t.pools["prefill"].busy_t
    # Candidate caps below the incumbent, ascending; fewer devices than a parent's caps
    # never make the slowest stage shorter than the parent's (``lower``).
    values = np.unique(arr[(arr < slowest) & (arr >= lower)])
    lo, hi = 0, len(values)  # the answer's cap is values[k] for some k in [lo, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        res = at(int(values[mid]))
        n += 1
        proved = proved and res.status != "feasible" and not (
            res.status == "infeasible" and res.wall_s >= limits.time_limit_s * 0.98)
        if res.interrupted:
            best.interrupted = True
            break
        if res.status == "infeasible":
            lo = mid + 1
        else:
            best = res
            # The design found may beat the cap: the answer is at most its slowest stage.
            got = design_times(t, "prefill", res.pools["prefill"], decode_kinds)[2]
            hi = min(mid, int(np.searchsorted(values, got, side="left")))
    if not best.interrupted:  # the fewest devices at the shortest slowest stage found
        final = at(design_times(t, "prefill", best.pools["prefill"], decode_kinds)[2], True)
        n += 1
        if final.status != "infeasible":
            proved = proved and final.status == "optimal"
            best = final
        else:  # the time limit ran out on the tie-break: keep the design, unproven
            proved = False
    if not proved:
        best.status = "feasible"
    return best, n


def plan_replicated(menu, modes: list[str], osl: int, limits: Limits, objective: str,
                    request_rate: float | None) -> tuple[Choice | None, dict[str, Choice | None], float, int]:
    """Fronts, then the best choice per mode; returns (best, per mode, wall s, solves).

    ``menu``: the tables of one workload, or a menu of designs over batch sizes
    (:class:`~autoplan.search.batches.Menu`: its ``t`` and its ``front``).
    ``limits.time_limit_s`` bounds all the front solves together."""
    if isinstance(menu, Tables):
        t = menu

        def front_of(pool, osl, limits, decode_kinds=frozenset(), stop=None, start=None,
                     useless=None):
            return front(t, pool, osl, limits, decode_kinds, stop, start)
    else:
        t, front_of = menu.t, menu.front
    t0 = time.perf_counter()
    solves = 0
    complete = True
    per_mode: dict[str, Choice | None] = {}
    stop: dict = {"deadline": t0 + limits.time_limit_s}
    known: dict = {}  # choices over lists of designs the search keeps (held: ids stay)

    def chosen(mode: str, fronts: dict[str, list[Design]]) -> Choice | None:
        key = (mode, *((p, tuple(map(id, ds))) for p, ds in sorted(fronts.items())))
        if key not in known:
            known[key] = fronts, choose(t, mode, fronts, objective, request_rate,
                                        limits.max_devices)
        return known[key][1]

    def better(mode: str, fronts: dict[str, list[Design]] | Choice | None, than: list
               ) -> bool:
        """The best deployment of ``fronts`` (designs known and optimistic ones; or a
        choice made) beats every choice of ``than`` (None entries skipped; none: nothing
        to beat). A deployment may mix designs of a pool, so the bounds below choose
        over the known and the optimistic designs together."""
        got = (choose(t, mode, fronts, objective, request_rate, limits.max_devices, True)
               if isinstance(fronts, dict) else fronts)
        return got is not None and not _no_better(objective, got, than)

    for mode in modes:
        if stop.get("reason") == "interrupted":
            break
        if mode == "colocated":

            def useless_colocated(cur: list[Design], optimistic: list[Design]) -> bool:
                """Designs as good as ``optimistic`` beside ``cur`` deploy no better
                (a deployment may mix designs of both, autoplan.search.mix)."""
                return not better(mode, {"colocated": cur + optimistic},
                                  [chosen(mode, {"colocated": cur})])

            designs, n, ok = front_of("colocated", osl, limits, stop=stop,
                                      useless=useless_colocated)
            solves += n
            complete &= ok
            per_mode[mode] = choose(t, mode, {"colocated": designs}, objective, request_rate,
                                    limits.max_devices)
            continue
        # A pool never gets devices the other pool's smallest design needs: with one
        # device class, the fewest devices any prefill design uses (one solve) leaves
        # the decode front its cap, and the decode front's smallest design the prefill's.
        full = tuple(c.devices for c in t.classes)
        dec_start = full
        if len(full) == 1:
            if applies(t, "prefill"):
                least = Direct(t, "prefill", osl, limits, frozenset(t.kinds)).answer(
                    full[0], "devices")
            else:
                least = solve(t, ("prefill",), osl,
                              dataclasses.replace(limits, progress=False), goal="devices",
                              tie_break=False, decode_kinds=tuple(sorted(t.kinds)))
            solves += 1
            if least.status != "infeasible":
                dec_start = (full[0] - least.devices,)

        def useless_decode(cur: list[Design], optimistic: list[Design]) -> bool:
            """Even with prefill free (no devices, any rate), decode designs as good as
            ``optimistic`` beside ``cur`` deploy no better than the best plan known."""
            if all(c is None for c in per_mode.values()):
                return False
            than = [*per_mode.values()]
            return not better("colocated", {"colocated": cur + optimistic}, than)

        dec, n, ok = front_of("decode", osl, limits, stop=stop, start=dec_start,
                              useless=useless_decode)
        solves += n
        complete &= ok
        pre: list[Design] = []

        def useless(cur: list[Design], optimistic: list[Design]) -> bool:
            """Prefill designs as good as ``optimistic`` beside ``cur`` and the decode
            front make no deployment better than the best one known (any placement)."""
            return not better(mode, {"prefill": pre + cur + optimistic, "decode": dec}, [
                *per_mode.values(), chosen(mode, {"prefill": pre + cur, "decode": dec})])

        groups = sorted({d.kinds for d in dec}, key=sorted)
        for kinds in groups:
            if stop.get("reason") == "interrupted":
                break
            floor = [min(d.usage[k] for d in dec if d.kinds == kinds) for k in range(len(full))]
            pre_start = tuple(c - f for c, f in zip(full, floor))
            # With several decode kind sets, a deployment may mix groups whose prefill
            # designs are not enumerated yet: no bound prunes a group's prefill batches.
            got, n, ok = front_of("prefill", osl, limits, kinds, stop=stop, start=pre_start,
                                  useless=useless if len(groups) == 1 else None)
            solves += n
            complete &= ok
            pre += got
        per_mode[mode] = choose(t, mode, {"prefill": pre, "decode": dec}, objective,
                                request_rate, limits.max_devices)
    found = [c for c in per_mode.values() if c is not None]
    wall = time.perf_counter() - t0
    for c in found:
        c.optimal = c.optimal and complete
        c.wall_s, c.solves = wall, solves
        c.stop_reason = stop.get("reason") or ("link_bound" if c.link_binds else "completed")
    if not found:
        if stop.get("reason") == "interrupted":
            raise KeyboardInterrupt
        return None, per_mode, wall, solves
    order = {m: i for i, m in enumerate(modes)}
    best = min(found, key=lambda c: _key(objective, c.rate, c.devices, (order[c.mode],)))
    return best, per_mode, wall, solves
