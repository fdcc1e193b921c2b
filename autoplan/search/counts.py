"""The replica-count rule: how many replicas of one design per pool a deployment has.

One implementation, used by the planner's chooser over its fronts of designs
(:func:`autoplan.search.replicas.choose`) and by ``explain`` for the designs it prices:

- deployment rate: ``min(y_p * r_p, y_d * r_d, KV link budget)``; the KV link budget
  is the per-device KV path bandwidth times the smaller pool's device count, over the
  bytes of one prompt's KV cache (colocated: ``y * r``);
- inventory per device class (or kind): ``y_p * u_p + y_d * u_d <= devices``, and
  no more devices in all than the budget;
- ``throughput``: the highest rate, then the fewest devices; ``devices``: the fewest
  replicas of each pool whose rate reaches the requested one.

Rates are exact fractions, so ties are decided exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from autoplan.cost.kv import kv_link_bandwidth, kv_stage_bytes
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload


def kv_request_bytes(model: ModelSpec, work: Workload) -> float:
    """Bytes of one prompt's KV cache (what crosses from the prefill to the decode pool)."""
    return kv_stage_bytes(model, work, model.num_layers) / work.pb


def kv_link_rate(topo: Topology, model: ModelSpec, work: Workload, kinds_from,
                 kinds_to) -> Fraction | None:
    """Requests/s the KV link carries per device of the smaller pool (None: unbounded)."""
    bw = kv_link_bandwidth(topo, kinds_from, kinds_to)
    return Fraction(bw / kv_request_bytes(model, work)) if math.isfinite(bw) else None


def requested(request_rate: float | None) -> Fraction | None:
    """The requested rate as the replica counts compare with it."""
    return Fraction(request_rate).limit_denominator(10**9) if request_rate else None


SMALL = 64  # prefill replica counts up to which most() loops in Python (numpy beyond)


def _ceil_div(x: Fraction) -> int:
    return max(1, math.ceil(x))


@dataclass(frozen=True)
class Counts:
    """Replica counts of one design per pool: THE rule by which a pair of designs is
    deployed, shared by the planner's chooser and ``explain``.

    ``rates``: requests/s of one prefill and one decode replica (colocated: the design's
    rate twice); ``usage``: devices of each class (or kind) one replica uses; ``caps``:
    the inventory in the same order; ``budget``: the most devices in all;
    ``link``: requests/s the KV link carries per device of the smaller pool (None:
    unbounded or colocated). A colocated deployment has ``y`` replicas, counted (y, y).
    """

    rates: tuple[Fraction, Fraction]
    usage: tuple[np.ndarray, np.ndarray]
    caps: np.ndarray
    budget: int
    link: Fraction | None = None
    colocated: bool = False

    @property
    def sizes(self) -> tuple[int, int]:
        return int(self.usage[0].sum()), int(self.usage[1].sum())

    def rate(self, yp: int, yd: int) -> Fraction:
        if self.colocated:
            return yp * self.rates[0]
        r = min(yp * self.rates[0], yd * self.rates[1])
        if self.link is None:
            return r
        return min(r, min(yp * self.sizes[0], yd * self.sizes[1]) * self.link)

    def devices(self, yp: int, yd: int) -> int:
        na, nb = self.sizes
        return yp * na if self.colocated else yp * na + yd * nb

    def within_caps(self, yp: int, yd: int) -> bool:
        use = yp * self.usage[0] if self.colocated else yp * self.usage[0] + yd * self.usage[1]
        return bool(np.all(use <= self.caps))

    def fits(self, yp: int, yd: int) -> bool:
        """Within the inventory of every class and the device budget."""
        return self.within_caps(yp, yd) and self.devices(yp, yd) <= self.budget

    def fewest(self, lam: Fraction) -> tuple[int, int]:
        """The fewest replicas of each pool whose rate reaches ``lam`` (they may not fit)."""
        if self.colocated:
            y = _ceil_div(lam / self.rates[0])
            return y, y
        yp, yd = _ceil_div(lam / self.rates[0]), _ceil_div(lam / self.rates[1])
        if self.link is not None:
            yp = max(yp, _ceil_div(lam / (self.sizes[0] * self.link)))
            yd = max(yd, _ceil_div(lam / (self.sizes[1] * self.link)))
        return yp, yd

    def most(self) -> tuple[tuple[int, int], bool] | None:
        """The counts with the highest rate that fit, then the fewest devices, and whether
        the KV link budget binds somewhere on the way (None: not one replica fits)."""
        ua, ub = self.usage
        na, nb = self.sizes
        caps = self.caps
        if self.colocated:
            y = min(int(min(caps[ua > 0] // ua[ua > 0])), self.budget // na)
            return ((y, y), False) if y >= 1 else None
        # For every prefill replica count, as many decode replicas as fit.
        yp_max = int(min(caps[ua > 0] // ua[ua > 0]))
        if yp_max <= SMALL:
            return self._most_small(yp_max)
        yps = np.arange(1, yp_max + 1)
        left = caps[None, :] - yps[:, None] * ua[None, :]
        with np.errstate(divide="ignore"):
            yd_max = np.min(np.where(ub[None, :] > 0, left // np.maximum(ub[None, :], 1),
                                     np.iinfo(np.int64).max), axis=1)
            yd_max = np.minimum(yd_max, (self.budget - yps * na) // nb)
        ok = yd_max >= 1
        if not ok.any():
            return None
        yps, yd_max = yps[ok], yd_max[ok]
        approx = np.minimum(yps * float(self.rates[0]), yd_max * float(self.rates[1]))
        binds = False
        if self.link is not None:
            budget_rate = np.minimum(yps * na, yd_max * nb) * float(self.link)
            binds = bool(np.any(budget_rate < approx))
            approx = np.minimum(approx, budget_rate)
        top = approx.max()
        best = None
        for k in np.nonzero(approx >= top * (1 - 1e-9))[0]:  # exact among float near-ties
            r = self.rate(int(yps[k]), int(yd_max[k]))
            if best is None or r > best:
                best = r
        reps = self.fewest(best)
        assert self.fits(*reps) and self.rate(*reps) >= best
        return reps, binds

    def _most_small(self, yp_max: int) -> tuple[tuple[int, int], bool] | None:
        """:meth:`most` for a few prefill replica counts, in plain Python (the same
        float screen and exact choice among its near-ties, without numpy's overhead)."""
        ua, ub = self.usage[0].tolist(), self.usage[1].tolist()
        caps = self.caps.tolist()
        na, nb = self.sizes
        ra, rb = float(self.rates[0]), float(self.rates[1])
        link = None if self.link is None else float(self.link)
        rows, binds = [], False
        for yp in range(1, yp_max + 1):
            yd = (self.budget - yp * na) // nb
            for c, a, b in zip(caps, ua, ub):
                if b > 0:
                    yd = min(yd, (c - yp * a) // b)
            if yd < 1:
                continue
            approx = min(yp * ra, yd * rb)
            if link is not None:
                budget_rate = min(yp * na, yd * nb) * link
                binds = binds or budget_rate < approx
                approx = min(approx, budget_rate)
            rows.append((yp, yd, approx))
        if not rows:
            return None
        top = max(r[2] for r in rows)
        best = None
        for yp, yd, approx in rows:
            if approx >= top * (1 - 1e-9):  # exact among float near-ties
                r = self.rate(yp, yd)
                if best is None or r > best:
                    best = r
        reps = self.fewest(best)
        assert self.fits(*reps) and self.rate(*reps) >= best
        return reps, binds
