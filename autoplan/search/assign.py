"""Concrete device ids for TP groups, inside fast domains: one allocator of free devices
(:class:`FreeDevices`) serving the planner, which packs the solver's counted stages into
fresh domains (:func:`assign_devices`), and ``explain``, which places an alternative's
stages beside the devices they keep (:func:`place`)."""

from __future__ import annotations

from dataclasses import dataclass

from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import InfeasibleError
from autoplan.graphs.topology import FastDomain, Topology
from autoplan.search import roles as R
from autoplan.search.configs import spread_domain, spread_groups
from autoplan.search.solver import StageChoice
from autoplan.search.tables import Tables


def _order(t: Tables, choices: list[StageChoice]) -> list[tuple[str, int, int]]:
    """Stages in pipeline order: the lead stages of a cut dense run (by layer), then in
    class blocks as the solver prices the hand-offs between classes: the body stage
    (``first`` / ``only``) and the middles of its class, the middles of the other
    classes (by class), the middles of the last stage's class and the last stage;
    inside a block, canonical (config, length) order."""
    lead = sorted(((R.start(c.role), c.role, c.config, c.length)
                   for c in choices if R.base(c.role) == "lead"))
    head = [(r, cfg, ln) for _, r, cfg, ln in lead]
    head += [(c.role, c.config, c.length) for c in choices if R.is_body(c.role)]
    tail = [(c.role, c.config, c.length) for c in choices if c.role == "last"]
    first_cls = t.configs[head[-1][1]].cls
    last_cls = t.configs[tail[0][1]].cls if tail else first_cls

    def rank(cfg: int) -> tuple[int, int]:
        k = t.configs[cfg].cls
        return (0 if k == first_cls else 2 if k == last_cls else 1, k)

    mids = sorted((rank(c.config), c.config, c.length, c.count)
                  for c in choices if c.role == "mid")
    seq = head
    for _, cfg, ln, k in mids:
        seq += [("mid", cfg, ln)] * k
    return seq + tail


def assign_devices(t: Tables, pools: dict[str, list[tuple[str, int, int]]],
                   replicas: dict[str, int]) -> dict[str, list[list[tuple[str, ...]]]]:
    """Concrete TP groups per pool, replica and stage, inside fast domains.

    Per device class: each replica's pipeline on one domain where its groups fit one
    (hand-offs inside a node), largest first, first fit (see :func:`_pack_pipelines`);
    when the pipelines do not pack whole, group by group, largest TP first, in (pool,
    replica, stage) order so a replica's stages sit next to each other. When the
    class's TP sizes divide each other this always packs what the solver counted;
    otherwise (a 12-device domain with TP 3 and 4) an exact search over domain fills
    takes over. Devices of a domain are alike, so a group takes the next free devices
    of its domain.
    """
    demands = []
    for p_i, (p, seq) in enumerate(pools.items()):
        for r in range(replicas[p]):
            for s_i, (_, cfg, _) in enumerate(seq):
                c = t.configs[cfg]
                demands.append((-c.size, p_i, r, s_i, p, c))
    demands.sort(key=lambda d: d[:4])
    out = {p: [[()] * len(seq) for _ in range(replicas[p])] for p, seq in pools.items()}
    free = FreeDevices(t.topo)
    for cls in t.classes:
        items = [d for d in demands if d[5].cls == cls.index]
        # Groups over whole domains (expert-parallel stages wider than a domain) first,
        # on consecutive free domains; the other groups pack into the domains left.
        doms = list(cls.domains)
        for d in [d for d in items if d[5].size > cls.domain_size]:
            k = d[5].size // cls.domain_size
            if len(doms) < k:
                raise InfeasibleError(f"cannot place a group of {d[5].size} {cls.kind} devices "
                                      f"over whole domains of {cls.domain_size}", "devices")
            group = tuple(x for dom in doms[:k] for x in dom.devices)
            assert free.claim(group)
            doms = doms[k:]
            _, _, r, s_i, p, _ = d
            out[p][r][s_i] = group
        items = [d for d in items if d[5].size <= cls.domain_size]
        order, where = _pack_pipelines(items, cls.domain_size, len(doms))
        if where is None:
            sizes = sorted({d[5].size for d in items})
            raise InfeasibleError(
                f"cannot pack TP groups of {sizes} {cls.kind} devices into "
                f"{len(cls.domains)} domains of {cls.domain_size}", "devices")
        for d, k in zip(order, where):
            _, _, r, s_i, p, c = d
            group = free.take(doms[k], c.size, aligned=False)
            assert group is not None  # _pack keeps every domain within its size
            out[p][r][s_i] = group
    return out


def _pack_pipelines(items: list[tuple], capacity: int, bins: int
                    ) -> tuple[list[tuple], list[int] | None]:
    """A domain for every group of ``items`` (``(-size, pool, replica, stage, ...)``, in
    that order), in the order they are taken: first with each replica's groups (those of
    one class) as one block on one domain where the block fits a domain (blocks largest
    first, the exact packing of :func:`_pack`), else group by group."""
    blocks: dict[tuple[int, int], list[tuple]] = {}
    for d in items:
        blocks.setdefault((d[1], d[2]), []).append(d)
    units = []
    for key, ds in blocks.items():
        ds = sorted(ds, key=lambda d: d[3])  # stage order inside the block
        total = sum(d[5].size for d in ds)
        if total <= capacity:
            units.append((-total, key, ds))
        else:
            units += [((-d[5].size), (*key, d[3]), [d]) for d in ds]
    units.sort(key=lambda u: (u[0], u[1]))
    where = _pack([-u[0] for u in units], capacity, bins)
    if where is not None:
        return ([d for u in units for d in u[2]],
                [k for u, k in zip(units, where) for _ in u[2]])
    return items, _pack([d[5].size for d in items], capacity, bins)


def _pack(sizes: list[int], capacity: int, bins: int) -> list[int] | None:
    """A domain for each group (sizes in non-increasing order): first fit, else an exact
    depth-first search that skips domains as full as one already tried."""
    fill = [0] * bins
    first: list[int] = []
    for s in sizes:
        k = next((k for k in range(bins) if fill[k] + s <= capacity), None)
        if k is None:
            break
        fill[k] += s
        first.append(k)
    else:
        return first
    if sum(sizes) > capacity * bins:
        return None
    fill = [0] * bins
    where = [0] * len(sizes)

    def place(i: int) -> bool:
        if i == len(sizes):
            return True
        tried = set()
        for k in range(bins):
            if fill[k] in tried or fill[k] + sizes[i] > capacity:
                continue
            tried.add(fill[k])
            fill[k] += sizes[i]
            where[i] = k
            if place(i + 1):
                return True
            fill[k] -= sizes[i]
        return False

    return where if place(0) else None


class FreeDevices:
    """The devices of a topology not yet taken, handed out as TP groups of one domain."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.busy: set[str] = set()

    def claim(self, devs: tuple[str, ...]) -> bool:
        """Take these devices, if none is taken yet."""
        if any(d in self.busy for d in devs):
            return False
        self.busy.update(devs)
        return True

    def take(self, dom: FastDomain, tp: int, aligned: bool = True) -> tuple[str, ...] | None:
        """The first ``tp`` free consecutive devices of a domain (``aligned``: at an
        offset that is a multiple of ``tp``), taken; None when there are none."""
        for b in range(0, dom.size - tp + 1, tp if aligned else 1):
            blk = dom.devices[b:b + tp]
            if self.claim(blk):
                return blk
        return None

    def block(self, kind: str, tp: int) -> tuple[str, ...] | None:
        """An aligned free group in the first domain of ``kind`` that has one, taken."""
        for dom in self.topo.domains_of_kind(kind):
            blk = self.take(dom, tp)
            if blk is not None:
                return blk
        return None

    def free(self, kind: str) -> int:
        return sum(1 for d in self.topo.devices_of_kind(kind) if d not in self.busy)

    def pricing_block(self, kind: str, tp: int, avoid: set[str]) -> tuple[str, ...] | None:
        """A group only to price a placement that does not fit, taken: it may take devices
        already taken or span fast domains, never devices in ``avoid``."""
        blk = None
        for dom in self.topo.domains_of_kind(kind):
            for b in range(0, dom.size - tp + 1, tp):
                if not any(d in avoid for d in dom.devices[b:b + tp]):
                    blk = dom.devices[b:b + tp]
                    break
            if blk is not None:
                break
        if blk is None:
            devs = [d for d in self.topo.devices_of_kind(kind) if d not in avoid]
            blk = tuple(devs[:tp]) if len(devs) >= tp else None
        if blk is not None:
            self.busy.update(blk)
        return blk


@dataclass
class StageSpec:
    """A stage to place: layers, kind, TP, and devices it keeps (None: find a block);
    ``dp`` attention ranks of ``tp`` devices and ``ep`` expert ranks (MoE models)."""

    first: int
    end: int
    kind: str
    tp: int
    prefer: tuple[str, ...] | None = None
    dp: int = 1
    ep: int = 1

    @property
    def size(self) -> int:
        return self.tp * self.dp


def place(topo: Topology, pools: list[list[StageSpec]]
          ) -> tuple[list[list[StagePlacement]] | None, list[str]]:
    """Concrete devices for each pool's stages (pools may be the same list: colocated).

    Stages that keep devices claim them first; the others take aligned free blocks,
    largest TP first. Returns the placed pools (None when some stage cannot even be
    priced) and the violations, named by rule (TP beyond the fast domain, not enough
    free devices); a stage that does not fit is priced on a pricing block.
    """
    free = FreeDevices(topo)
    uniq: list[list[StageSpec]] = []
    for p in pools:
        if not any(p is q for q in uniq):
            uniq.append(p)
    got: dict[tuple[int, int], tuple[str, ...]] = {}
    own: list[set[str]] = [set() for _ in uniq]  # devices of each pipeline
    violations: list[str] = []
    todo = []
    for pi, p in enumerate(uniq):
        for si, s in enumerate(p):
            if s.prefer is not None and len(s.prefer) == s.size and free.claim(s.prefer):
                got[pi, si] = s.prefer
                own[pi].update(s.prefer)
            else:
                todo.append((-s.size, pi, si))
    for _, pi, si in sorted(todo):
        s = uniq[pi][si]
        blk = free.block(s.kind, s.size)
        if blk is None:
            violations.append(_why_not(topo, free, s))
            blk = free.pricing_block(s.kind, s.size, own[pi])
            if blk is None:  # not even the whole topology holds this pipeline
                return None, list(dict.fromkeys(violations))
        got[pi, si] = blk
        own[pi].update(blk)
    placed = [[StagePlacement(s.first, s.end, s.kind, got[pi, si], s.dp, s.ep)
               for si, s in enumerate(p)]
              for pi, p in enumerate(uniq)]
    out = [placed[next(k for k, q in enumerate(uniq) if q is p)] for p in pools]
    return out, list(dict.fromkeys(violations))


def _why_not(topo: Topology, free: FreeDevices, s: StageSpec) -> str:
    """Why a stage finds no aligned free block, named by rule."""
    dom = topo.max_fast_domain(s.kind)
    if dom == 0:
        return f"devices: the topology has no {s.kind} devices"
    if s.size > dom:
        return (f"TP inside fast domains: TP {s.size} exceeds the fast domain of {dom} "
                f"{s.kind} devices")
    return (f"devices: not enough free {s.kind} devices: a TP group of {s.size} needs an "
            f"aligned free block in one fast domain; {free.free(s.kind)} of "
            f"{len(topo.devices_of_kind(s.kind))} are free beside this alternative's other "
            f"stages")


MAX_SPREADS = 256
"""Most groups :func:`respread` tries for one stage (ways its devices lie over the nodes
of a domain spanning several); past it, the first ones in canonical order."""


def respread(topo: Topology, placed: dict[str, list[StagePlacement]],
             price) -> dict[str, list[StagePlacement]]:
    """Stages of fast domains that span nodes, moved to the node spread their exact price
    prefers. Inside such a domain where a group lies matters to the cost model (an
    all-to-all over two link classes at once beats one; a hand-off inside a node beats
    one across), and the first-fit assignment fills nodes in order. Local search: each
    stage in turn tries every spread of its size over the devices free around it
    (how many on each node, which node holds its first device), keeping a change that
    ``price`` (a key: SLOs violated, e2e, devices) says improves, until none does. Only
    attention-DP stages of domains that span nodes move (see
    :func:`~autoplan.search.configs.node_groups`: a TP group is best on the fewest nodes)."""
    doms = {d.index: d for d in topo.fast_domains}
    spread: dict[int, bool] = {}  # domain -> spans nodes that the cost model tells apart

    def movable(st: StagePlacement) -> bool:
        if st.dp <= 1:
            return False
        k = topo.domain_of[st.devices[0]]
        if k not in spread:
            spread[k] = spread_domain(topo, doms[k])
        return spread[k]

    cur = {p: list(v) for p, v in placed.items()}
    if not any(movable(s) for v in cur.values() for s in v):
        return cur
    best = price(cur)
    for _ in range(4):
        changed = False
        for p in list(cur):
            for i, st in enumerate(cur[p]):
                if not movable(st):
                    continue
                dom = doms[topo.domain_of[st.devices[0]]]
                busy = {d for q, v in cur.items() for k, s in enumerate(v)
                        if not (q == p and k == i) for d in s.devices}
                for group in _spreads(topo, dom, busy, st.size):
                    if group == st.devices:
                        continue
                    trial = dict(cur)
                    trial[p] = list(cur[p])
                    trial[p][i] = StagePlacement(st.first, st.end, st.kind, group, st.dp, st.ep)
                    v = price(trial)
                    if _improves(v, best):
                        cur, best, changed = trial, v, True
                        st = trial[p][i]
        if not changed:
            break
    return cur


REL = 1e-9  # float noise when comparing exact figures


def better(a: tuple, b: tuple) -> bool:
    """Key ``a`` beats ``b``: its exact objective (first) lower beyond float noise, or
    equal to it and the rest of the key (the tie-breaks) lower."""
    if a[0] < b[0] * (1 - REL):
        return True
    if a[0] > b[0] * (1 + REL):
        return False
    return a[1:] < b[1:]


def _improves(a: tuple, b: tuple) -> bool:
    """Key ``a`` (SLOs missed, e2e, devices) beats ``b``: fewer SLOs missed, then
    :func:`better`."""
    return a[0] < b[0] if a[0] != b[0] else better(a[1:], b[1:])


def _spreads(topo: Topology, dom: FastDomain, busy: set[str], size: int):
    """Groups of ``size`` free devices of ``dom`` the cost model tells apart (see
    :func:`~autoplan.search.configs.spread_groups`), at most :data:`MAX_SPREADS`."""
    return spread_groups(topo, dom, size, busy)[:MAX_SPREADS]


def tie_order(topo: Topology, *pipelines: list[StagePlacement]) -> tuple[int, int]:
    """Tie-break keys of equally good plans, lower first: pipelines with more than one
    (TP, DP, EP) shape on their engine-run stages (engines run one per pipeline; kinds
    of their own runtime are free), then stages whose devices span nodes."""
    mixed = sum(1 for p in pipelines
                if len({(s.tp, s.dp, s.ep) for s in p
                        if not topo.kinds[s.kind].own_runtime}) > 1)
    crossing = sum(1 for p in pipelines for s in p
                   if len({topo.graph.nodes[d]["node"] for d in s.devices}) > 1)
    return mixed, crossing
