"""The rows of the CP-SAT model that pack TP groups into fast domains exactly (see
:class:`~autoplan.search.tables.Packing`); built on the solver's model object."""

from __future__ import annotations

from typing import Any

from autoplan.search.tables import Tables


def _packing(m: Any, t: Tables, models: list[Any]) -> None:
    """TP groups fit the classes' domains exactly (see :class:`~.tables.Packing`); a
    device cap below the inventory is the usage row's."""
    for cls in t.classes:
        pk = t.packing.get(cls.index)
        if pk is None:
            continue
        n = cls.domain_size
        groups: dict[int, list] = {tp: [] for tp in pk.tps}
        for pmod in models:
            for g in pmod.groups:
                cfg = t.configs[g.cfg]
                # groups over whole domains (sizes above n) are counted by the usage rows,
                # exact beside sizes that divide n (tables.ep_shapes ``across``)
                if cfg.cls == cls.index and cfg.size <= n:
                    groups[cfg.size].append(g.count)
        if not any(groups.values()):
            continue
        bins = len(cls.domains)
        if pk.patterns is None:
            if all(n % tp == 0 for tp in pk.tps):
                continue  # counting devices (the usage rows) is exact
            for j, tj in enumerate(pk.tps):
                big = [tp * c for tp in pk.tps[j:] for c in groups[tp]]
                if big:
                    m.add(sum(big) <= bins * (n // tj) * tj)
            continue
        y = [m.new_int_var(0, bins, f"pattern[{cls.index},{i}]")
             for i in range(len(pk.patterns))]
        m.add(sum(y) <= bins)
        for ti, tp in enumerate(pk.tps):
            if groups[tp]:
                m.add(sum(groups[tp]) <= sum(p[ti] * v for p, v in zip(pk.patterns, y)))
