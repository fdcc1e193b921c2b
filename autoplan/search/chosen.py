"""Reading a solved CP-SAT model's stages back (no solver import: ``value`` is the
solver's ``value`` method)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoplan.search.limits import StageChoice


def chosen_stages(groups: list[Any], value: Callable[[Any], int]) -> list[StageChoice]:
    """The stages of a pool's groups: ``fixed`` groups (a count of stages of one
    length), ``one`` groups (a boolean and a length) and ``balanced`` middles (``N``
    stages holding ``Lam`` layers, cut as evenly as integers allow)."""
    out: list[StageChoice] = []
    for g in groups:
        how = g.values
        if how[0] == "fixed":
            k = int(value(how[1]))
            if k:
                out.append(StageChoice(g.role, g.cfg, how[2], k))
        elif how[0] == "one":
            if value(how[1]):
                out.append(StageChoice(g.role, g.cfg, int(value(how[2]))))
        else:  # balanced middles: N stages holding Lam layers
            out += balanced_mids(g.cfg, int(value(how[1])), int(value(how[2])))
    return out


def balanced_mids(cfg: int, n: int, layers: int) -> list[StageChoice]:
    """``n`` middle stages of config ``cfg`` holding ``layers`` layers, cut as evenly as
    integers allow (the longer ones first)."""
    if not n:
        return []
    q, rem = divmod(layers, n)
    return ([StageChoice("mid", cfg, q + 1, rem)] if rem else []) + (
        [StageChoice("mid", cfg, q, n - rem)] if n - rem else [])
