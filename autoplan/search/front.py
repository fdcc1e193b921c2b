"""The non-dominated front of result rows (TTFT, TPOT, devices): a plain function over
rows, no solver. The sweep marks its rows with it; the Pareto chart draws it."""

from __future__ import annotations

import math
import numbers
from typing import Any

from autoplan.errors import InputError

PARETO_KEYS = ("ttft_ms", "tpot_ms", "devices")


def check_rows(rows: Any) -> list[dict]:
    """``rows`` as a list of mappings with finite numbers under :data:`PARETO_KEYS`."""
    if not isinstance(rows, (list, tuple)):
        raise InputError("pareto rows must be a list of mappings")
    out = []
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InputError(f"pareto row {k} is not a mapping")
        for key in PARETO_KEYS:
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise InputError(f"pareto row {k}: {key} must be a finite number, got {v!r}")
        out.append(r)
    return out


def _dominates(a: dict, b: dict) -> bool:
    return (all(a[k] <= b[k] for k in PARETO_KEYS)
            and any(a[k] < b[k] for k in PARETO_KEYS))


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row dominates (lower or equal TTFT, TPOT and devices, and lower in
    one), in the order given. Equal rows do not dominate each other: all are kept."""
    rows = check_rows(rows)
    # Sorted by the objectives, a row can only be dominated by one before it.
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i][k] for k in PARETO_KEYS))
    front: list[int] = []
    for i in order:
        if not any(_dominates(rows[j], rows[i]) for j in front):
            front.append(i)
    keep = set(front)
    return [r for i, r in enumerate(rows) if i in keep]


def front_2d(rows: list[dict]) -> list[dict]:
    """The (TTFT, TPOT) staircase: rows not beaten on both latencies, by TTFT."""
    best = math.inf
    out = []
    for r in sorted(rows, key=lambda r: (r["ttft_ms"], r["tpot_ms"])):
        if r["tpot_ms"] < best:
            out.append(r)
            best = r["tpot_ms"]
    return out
