"""Concrete device ids for the solver's counted stages: stages in pipeline order, TP
groups packed into fast domains."""

from __future__ import annotations

from autoplan.errors import InfeasibleError
from autoplan.search.solver import StageChoice
from autoplan.search.tables import Tables


def _order(t: Tables, choices: list[StageChoice]) -> list[tuple[str, int, int]]:
    """Stages in pipeline order, in class blocks as the solver prices the hand-offs
    between classes: the first stage and the middles of its class, the middles of the
    other classes (by class), the middles of the last stage's class and the last stage;
    inside a block, canonical (config, length) order."""
    head = [(c.role, c.config, c.length) for c in choices if c.role in ("only", "first")]
    tail = [(c.role, c.config, c.length) for c in choices if c.role == "last"]
    first_cls = t.configs[head[0][1]].cls
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

    Per device class: largest TP first, first fit, in (pool, replica, stage) order so a
    replica's stages sit next to each other. When the class's TP sizes divide each
    other this always packs what the solver counted; otherwise (a 12-device domain with
    TP 3 and 4) an exact search over domain fills takes over. Devices of a domain are
    alike, so a group takes the next free devices of its domain.
    """
    demands = []
    for p_i, (p, seq) in enumerate(pools.items()):
        for r in range(replicas[p]):
            for s_i, (_, cfg, _) in enumerate(seq):
                c = t.configs[cfg]
                demands.append((-c.tp, p_i, r, s_i, p, c))
    demands.sort(key=lambda d: d[:4])
    out = {p: [[()] * len(seq) for _ in range(replicas[p])] for p, seq in pools.items()}
    for cls in t.classes:
        items = [d for d in demands if d[5].cls == cls.index]
        sizes = [d[5].tp for d in items]
        where = _pack(sizes, cls.domain_size, len(cls.domains))
        if where is None:
            raise InfeasibleError(
                f"cannot pack TP groups of {sorted(set(sizes))} {cls.kind} devices into "
                f"{len(cls.domains)} domains of {cls.domain_size}", "devices")
        used = [0] * len(cls.domains)
        for d, k in zip(items, where):
            dom = cls.domains[k]
            _, _, r, s_i, p, c = d
            out[p][r][s_i] = dom.devices[used[k]:used[k] + c.tp]
            used[k] += c.tp
    return out


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
