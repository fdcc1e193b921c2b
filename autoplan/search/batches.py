"""Batch sizes as decisions: the menu of replica designs over every batch size.

The ``throughput`` and ``devices`` objectives choose a decode batch ``B`` per decode (or
colocated) design and a prefill batch ``P`` per prefill design, every integer from 1 to
what memory allows, exactly, without assuming that throughput is monotone in the batch
(it is not: a batch one larger can need a bigger design).

The menu of one pool is the Pareto set, over every batch size, of the designs of
:func:`~autoplan.search.replicas.front` (best rate per device usage), each design
carrying the batch it was priced at. A design enters the deployment only through its
usage, its kinds and its rate (:func:`~autoplan.search.replicas.choose`), so choosing
over the menus is exact when every batch's front is in them or provably useless.

Branch and bound over boxes of batch sizes ``[lo, hi]``. Two properties of the cost
model make a box's lower corner bound the whole box (``tests/test_batches.py`` checks
both over the shipped models, kinds and engines):

- a stage's time does not fall as its batch grows, and the memory it needs does not
  fall, so a design that fits and meets the SLOs at a batch in the box does so at the
  corner, no faster;
- a replica's rate is ``batch / time`` (decode: ``B / (osl * TPOT)``; prefill:
  ``P / slowest stage``; colocated: ``B / (TTFT + (osl - 1) * TPOT)``, in-flight batching), so at
  any batch of the box it is at most ``max(hi / lo)`` times the best rate the corner's
  front offers with no more devices.

A box whose corner front is empty is infeasible throughout; a box whose corner front,
its rates scaled by ``max(hi / lo)``, is dominated by the menu (a design of the same
kinds with no more devices of any class and at least that rate) cannot add to it. The
others split in two along their widest axis, the box that may offer the most requests/s
per device first. Every corner priced is checked against the first property on the
designs at hand; a breach (none is known) marks the menu unproven (stop reason
``batch_bound``) instead of claiming an optimum.
"""

from __future__ import annotations

import heapq
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction

from autoplan.cost.roofline import kv_bytes_per_token_layer, model_weight_bytes
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import MAX_BATCH, Workload
from autoplan.search.replicas import Design, design_times, front
from autoplan.search.solver import Limits
from autoplan.search.tables import ROLES, Tables, build_tables

# The batch axes each pool's tables depend on (colocated pools: see ``Axes``).
POOL_AXES = {"decode": ("batch",), "prefill": ("prefill_batch",),
             "colocated": ("batch", "prefill_batch")}


@dataclass(frozen=True)
class Axes:
    """The batch sizes searched: ``(lo, hi)`` per axis (lo == hi: fixed)."""

    batch: tuple[int, int]
    prefill_batch: tuple[int, int]

    def of(self, name: str) -> tuple[int, int]:
        return getattr(self, name)

    @property
    def searched(self) -> bool:
        return any(lo < hi for lo, hi in (self.batch, self.prefill_batch))


def batch_limits(model: ModelSpec, topo: Topology, work: Workload,
                 max_devices: int | None) -> tuple[int, int]:
    """Upper bounds of the decode and prefill batches from memory alone: the whole
    inventory (or the largest ``max_devices`` devices) at the usable fraction holds the
    weights once and the KV cache of that many sequences (decode: at the full context;
    prefill: the prompts), at least 1."""
    caps = sorted((topo.kinds[topo.device_kind_of(d)].capacity_bytes for d in topo.devices),
                  reverse=True)
    n = len(caps) if max_devices is None else min(len(caps), max_devices)
    free = sum(caps[:n]) * work.max_memory_fraction
    free -= model_weight_bytes(model, work.precision)
    per_token = kv_bytes_per_token_layer(model, 1, work.precision) * model.num_layers
    if free <= 0 or per_token <= 0:
        return 1, 1
    dec = int(free // (per_token * (work.isl + work.osl)))
    pre = int(free // (per_token * work.isl))
    return max(1, min(dec, MAX_BATCH)), max(1, min(pre, MAX_BATCH))


@dataclass
class Menu:
    """Replica designs of every pool over the searched batch sizes.

    ``front(pool, ...)`` has the signature and meaning of
    :func:`~autoplan.search.replicas.front`, over every batch size of ``axes``.
    """

    model: ModelSpec
    topo: Topology
    work: Workload  # its batch and prefill batch: the lower ends of the axes
    axes: Axes
    uniform_tp: bool
    base: Tables  # tables at the lower ends (inventory, configs, the KV link)
    engine: str | None = None  # the expert-parallel shapes its engine runs
    # A colocated replica holds B sequences and prefills P of them at a time; its
    # prefill batch stays at the lower end (1 unless given): P <= B, and in-flight
    # batching replaces it by the engine's chunked-prefill budget.
    colocated_axes: tuple[str, ...] = ("batch",)
    breach: bool = False  # a priced corner broke the monotone bound (none is known)
    _tables: dict = field(default_factory=dict)
    _fronts: dict = field(default_factory=dict)

    @property
    def t(self) -> Tables:
        return self.base

    def tables_at(self, pool: str, point: dict[str, int]) -> Tables:
        b = point.get("batch", self.work.batch)
        p = point.get("prefill_batch", self.work.pb)
        key = (pool, b, p)
        if key not in self._tables:
            work = replace(self.work, batch=b, prefill_batch=p)
            self._tables[key] = build_tables(self.model, self.topo, work, (pool,),
                                             packing=False, lower=False,
                                             uniform_tp=self.uniform_tp, engine=self.engine)
        return self._tables[key]

    def front(self, pool: str, osl: int, limits: Limits,
              decode_kinds: frozenset[str] = frozenset(), stop: dict | None = None,
              start: tuple[int, ...] | None = None,
              useless=None) -> tuple[list[Design], int, bool]:
        """``useless(menu, optimistic)``: True when designs as good as ``optimistic``
        (the box's bound) added to ``menu`` cannot make a better deployment than the
        best one known (the objective's own bound: boxes it says so of are skipped)."""
        searched = self.axes.searched
        say = limits.progress and searched
        if searched:  # one summary line per pool, not a line per batch's front
            limits = replace(limits, progress=False)
        names = self.colocated_axes if pool == "colocated" else POOL_AXES[pool]
        names = tuple(n for n in names if n in POOL_AXES[pool])
        lo = tuple(self.axes.of(n)[0] for n in names)
        hi = tuple(self.axes.of(n)[1] for n in names)
        solves, complete = 0, True
        menu: list[Design] = []
        corners: dict[tuple[int, ...], list[Design]] = {}

        def priced(x: tuple[int, ...]) -> list[Design]:
            nonlocal solves, complete
            if x not in corners:
                key = (pool, x, decode_kinds, start)
                if key not in self._fronts:
                    t = self.tables_at(pool, dict(zip(names, x)))
                    self._fronts[key] = front(t, pool, osl, limits, decode_kinds, stop, start)
                designs, n, ok = self._fronts[key]
                solves += n
                complete &= ok
                corners[x] = designs
                self._check_monotone(pool, names, x, corners, decode_kinds)
            return corners[x]

        # Best bound first (the most requests/s per device a box may offer): the best
        # designs are found early, and the objective's bound prunes the rest. Each box
        # waiting carries the bound of its designs (its parent's corner designs, rates
        # scaled by the parent's hi / lo; None: the first box, unbounded).
        boxes: list = [(-Fraction(10**18), 0, lo, hi, None)]
        seq = 0
        while boxes:
            _, _, a, b, _ = heapq.heappop(boxes)
            if stop is not None and stop.get("reason") in ("interrupted", "time_limit"):
                complete = False
                break
            designs = priced(a)
            if not designs:
                continue  # nothing fits or meets the SLOs at the corner: nor beyond it
            menu = pareto(menu + designs)
            if a == b:
                continue
            scale = max(Fraction(h, lo_) for lo_, h in zip(a, b))
            if all(_dominated(d, d.rate * scale, menu) for d in designs):
                continue
            bound = [replace(d, rate=d.rate * scale) for d in designs]
            # A deployment may mix designs of every box, so the box is useless only when
            # its bound and the bounds of every box still waiting, beside the menu, make
            # no deployment better than the best one known.
            waiting = [box[4] for box in boxes]
            if (useless is not None and all(w is not None for w in waiting)
                    and useless(menu, bound + [d for w in waiting for d in w])):
                continue
            k = max(range(len(a)), key=lambda i: (Fraction(b[i], a[i]), -i))
            mid = (a[k] + b[k]) // 2
            low_hi = tuple(mid if i == k else v for i, v in enumerate(b))
            up_lo = tuple(mid + 1 if i == k else v for i, v in enumerate(a))
            prio = -max(d.rate * scale / max(1, sum(d.usage)) for d in designs)
            for box in ((up_lo, b), (a, low_hi)):  # ties: the upper half first
                seq += 1
                heapq.heappush(boxes, (prio, seq, *box, bound))
        if self.breach:
            complete = False
            if stop is not None:
                stop.setdefault("reason", "batch_bound")
        menu.sort(key=lambda d: (sum(d.usage), d.usage, -d.rate, d.batch, d.prefill_batch))
        if say:
            axis = "/".join(names)
            span = ", ".join(f"{a}-{b}" for a, b in zip(lo, hi))
            kept = sorted({d.batch if pool != "prefill" else d.prefill_batch for d in menu})
            print(f"  [{pool} menu] {len(corners)} {axis} sizes priced of {span}: "
                  f"{len(menu)} designs kept ({axis} {', '.join(map(str, kept)) or 'none'})",
                  file=sys.stderr)
        return menu, solves, complete

    def _check_monotone(self, pool: str, names: tuple[str, ...], x: tuple[int, ...],
                        corners: dict, decode_kinds: frozenset[str]) -> None:
        """The bound's premise on the designs at hand: each design of a priced corner,
        priced at every smaller priced corner, fits there and is no slower."""
        for y, designs in corners.items():
            for lo, hi, ds in ((y, x, corners[x]), (x, y, designs)):
                if lo == hi or not all(a <= b for a, b in zip(lo, hi)):
                    continue
                t_lo = self.tables_at(pool, dict(zip(names, lo)))
                for d in ds:
                    tab = t_lo.pools[pool]
                    if any(s.length > tab.max_len[ROLES.index(s.role), s.config] for s in d.stages):
                        self.breach = True
                        return
                    got = design_times(t_lo, pool, d.stages, decode_kinds)
                    if got[0] > d.ttft_t or got[1] > d.tpot_t or got[2] > d.slowest_t:
                        self.breach = True
                        return


def _dominated(d: Design, rate: Fraction, menu: list[Design]) -> bool:
    """Some design of the menu, of ``d``'s kinds (and KV destination), uses no more
    devices of any class than ``d`` and serves at least ``rate``."""
    return any(e.kinds == d.kinds and e.decode_kinds == d.decode_kinds and e.rate >= rate
               and all(u <= v for u, v in zip(e.usage, d.usage)) for e in menu)


def pareto(designs: list[Design]) -> list[Design]:
    """The designs no other beats: of the same kinds (and KV destination), no more
    devices of any class, and a higher rate, or the same rate at a smaller batch (the
    canonical order: fewer devices, usage, higher rate, smaller batches)."""
    order = sorted(designs, key=lambda d: (sum(d.usage), d.usage, -d.rate, d.batch,
                                           d.prefill_batch, sorted(d.kinds)))
    out: list[Design] = []
    for d in order:
        if not _dominated(d, d.rate, out):
            out.append(d)
    return out


def build_menu(model: ModelSpec, topo: Topology, work: Workload, pools: tuple[str, ...],
               uniform_tp: bool, searched: tuple[str, ...],
               max_devices: int | None, most: tuple[int, int] | None = None,
               engine: str | None = None) -> Menu:
    """The menu over the batch sizes ``searched`` (``"batch"``, ``"prefill_batch"``):
    searched ones from 1 to the memory bound of :func:`batch_limits` (``most``: other
    upper ends, for tests), the others fixed at ``work``'s values."""
    b_hi, p_hi = most or batch_limits(model, topo, work, max_devices)
    b = (1, b_hi) if "batch" in searched else (work.batch, work.batch)
    p = (1, p_hi) if "prefill_batch" in searched else (work.pb, work.pb)
    base_work = replace(work, batch=b[0], prefill_batch=p[0])
    base = build_tables(model, topo, base_work, pools, packing=False, lower=False,
                        uniform_tp=uniform_tp, engine=engine)
    return Menu(model, topo, base_work, Axes(b, p), uniform_tp, base, engine=engine)


def chosen_work(work: Workload, designs: dict[str, Design]) -> Workload:
    """The workload of a deployment of ``designs``: the decode batch of its decode (or
    colocated) design, the prefill batch of its prefill (or colocated) design."""
    dec = designs.get("decode") or designs["colocated"]
    pre = designs.get("prefill") or designs["colocated"]
    return replace(work, batch=dec.batch, prefill_batch=pre.prefill_batch)
