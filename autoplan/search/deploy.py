"""The choice of designs and replica counts over the fronts of replica designs.

One design per pool, replica counts by :mod:`autoplan.search.counts` (the rule
``explain`` deploys its alternatives by too), or several designs per pool where they do
better (:mod:`autoplan.search.mix`; ties go to one design per pool). ``throughput``
maximises the rate, then uses the fewest devices; ``devices`` uses the fewest devices
whose rate reaches ``request_rate``, then the highest rate. Remaining ties go to the
earlier design in a canonical order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from autoplan.search.counts import Counts, kv_link_rate, requested
from autoplan.search.mix import Mix, best_mix
from autoplan.search.tables import Tables

if TYPE_CHECKING:
    from autoplan.search.replicas import Design

UNBOUNDED = Fraction(10) ** 30  # the rate of a bound that proves nothing


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
    # completed | time_limit | interrupted | front_limit | link_bound
    stop_reason: str = "completed"
    link_binds: bool = False
    # more designs beside the first of each pool (several designs per pool,
    # autoplan.search.mix): (pool, design, replicas)
    extra: list[tuple[str, Design, int]] = dataclasses.field(default_factory=list)


def choose(t: Tables, mode: str, fronts: dict[str, list[Design]], objective: str,
           request_rate: float | None, max_devices: int | None = None,
           bound: bool = False) -> Choice | None:
    """The best designs and replica counts of one placement mode (None: infeasible).

    One design per pool unless several do better (:mod:`autoplan.search.mix`); ``bound``:
    only the best deployment's rate and devices matter (a bound of the batch search),
    so the deployment of several designs is the answer, not preferred over fewer."""
    caps = np.array([c.devices for c in t.classes], dtype=np.int64)
    budget = max_devices if max_devices is not None else int(caps.sum())
    lam_min = requested(request_rate)
    links = _links(t, mode, fronts)  # (prefill kinds, decode kinds) -> the KV link's rate
    if bound:
        mix, proven = best_mix(t, mode, fronts, objective, lam_min, budget, links, None)
        if not proven:  # nothing known: a bound that prunes nothing
            return Choice(mode, {}, {}, UNBOUNDED, 0, False)
        return None if mix is None else _mixed(mode, mix)
    # The fronts keep the best rate per device usage; where the KV link budget binds, a
    # slower design on more devices (a wider link) could do better, so the choice is
    # then not proven optimal.
    link_binds = False
    best: tuple | None = None
    if mode == "colocated":
        for i, d in enumerate(fronts["colocated"]):
            u = np.array(d.usage)
            got = _deploy(Counts((d.rate, d.rate), (u, u), caps, budget, None, True),
                          objective, lam_min)
            if got is None:
                continue
            (y, _), rate, dev, _ = got
            key = _key(objective, rate, dev, (i,))
            if best is None or key < best[0]:
                best = (key, {"colocated": d}, {"colocated": y}, rate, dev)
    else:
        for i, a in enumerate(fronts["prefill"]):
            for j, b in enumerate(fronts["decode"]):
                if not _compatible(a, b):
                    continue
                counts = Counts((a.rate, b.rate), (np.array(a.usage), np.array(b.usage)),
                                caps, budget, links[a.kinds, b.kinds])
                got = _deploy(counts, objective, lam_min)
                if got is None:
                    continue
                (yp, yd), rate, dev, binds = got
                link_binds = link_binds or binds
                key = _key(objective, rate, dev, (i, j))
                if best is None or key < best[0]:
                    best = (key, {"prefill": a, "decode": b}, {"prefill": yp, "decode": yd},
                            rate, dev)
    mix, proven = best_mix(t, mode, fronts, objective, lam_min, budget, links,
                           None if best is None else (best[3], best[4]))
    if mix is not None:
        return _mixed(mode, mix)
    if best is None:
        return None
    _, designs, reps, rate, dev = best
    # optimal only where the search over several designs per pool proved none better
    return Choice(mode, designs, reps, rate, dev,
                  all(d.optimal for d in designs.values()) and not link_binds and proven,
                  link_binds=link_binds)


def _links(t: Tables, mode: str, fronts: dict[str, list[Design]]) -> dict:
    """Requests/s per device of the KV path of every (prefill kinds, decode kinds) pair
    the fronts can deploy (colocated: none)."""
    if mode == "colocated":
        return {}
    out: dict = {}
    for a in fronts["prefill"]:
        for b in fronts["decode"]:
            if _compatible(a, b) and (a.kinds, b.kinds) not in out:
                out[a.kinds, b.kinds] = kv_link_rate(t.topo, t.model, t.work, a.kinds, b.kinds)
    return out


def _mixed(mode: str, mix: Mix) -> Choice:
    """The choice of a deployment of several designs per pool: per pool the design with
    the most devices (the earlier on ties) is the plan's first; a disaggregated plan's
    first prefill design sends its KV to the first decode design's kinds."""
    def largest(pool: str, where=lambda d: True):
        found = [(y * sum(d.usage), -k) for k, (p, d, y) in enumerate(mix.entries)
                 if p == pool and where(d)]
        return -max(found)[1]

    pools = ["colocated"] if mode == "colocated" else ["decode", "prefill"]
    first: dict[str, int] = {}
    for pool in pools:
        if pool == "prefill":
            kinds = mix.entries[first["decode"]][1].kinds
            first[pool] = largest(pool, lambda d: d.decode_kinds == kinds)
        else:
            first[pool] = largest(pool)
    chosen = set(first.values())
    designs = {p: mix.entries[k][1] for p, k in first.items()}
    reps = {p: mix.entries[k][2] for p, k in first.items()}
    extra = [e for k, e in enumerate(mix.entries) if k not in chosen]
    optimal = all(d.optimal for _, d, _ in mix.entries) and mix.proven and not mix.link_binds
    return Choice(mode, designs, reps, mix.rate, mix.devices, optimal,
                  link_binds=mix.link_binds, extra=extra)


def _compatible(a: Design, b: Design) -> bool:
    # Prefill fronts are solved per decode kind set; the pair must match it.
    return a.decode_kinds == b.kinds


def _key(objective: str, rate: Fraction, devices: int, index: tuple) -> tuple:
    if objective == "devices":
        return (devices, -rate, index)
    return (-rate, devices, index)


def _no_better(objective: str, got: Choice | None, known) -> bool:
    """``got`` (an optimistic deployment; None: none at all) is no better than the best
    of ``known`` (None entries skipped; none known: nothing to be better than)."""
    known = [c for c in known if c is not None]
    if got is None:
        return True
    return bool(known) and _key(objective, got.rate, got.devices, ()) >= min(
        _key(objective, c.rate, c.devices, ()) for c in known)


def _deploy(c: Counts, objective: str, lam_min: Fraction | None):
    """Replica counts of one design pair for the objective, with their rate, devices and
    whether the KV link binds (None: it cannot serve the request)."""
    if objective == "devices":
        reps = c.fewest(lam_min)
        if not c.fits(*reps) or c.rate(*reps) < lam_min:
            return None
        binds = not c.colocated and reps != Counts(c.rates, c.usage, c.caps,
                                                   c.budget).fewest(lam_min)
    else:
        got = c.most()
        if got is None:
            return None
        reps, binds = got
        if lam_min is not None and c.rate(*reps) < lam_min:
            return None
    return reps, c.rate(*reps), c.devices(*reps), binds
