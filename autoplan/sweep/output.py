"""Writing a sweep's rows: one CSV and a chart of the solved rows (TTFT-TPOT-devices, or
the sweep's own), every target checked before the first is written (the pareto and fleet
sweeps alike)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A text cell a spreadsheet would run as a formula when it starts with one of these
(OWASP, CSV Injection: https://owasp.org/www-community/attacks/CSV_Injection)."""


def cell(v: object) -> object:
    """A CSV cell: None empty; text that a spreadsheet would read as a formula (a model
    or topology name, a note) behind a ``'``, as OWASP advises; numbers as they are."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(FORMULA_STARTS):
        return "'" + v
    return v


def rows_csv(rows: list[dict], columns: Iterable[str]) -> str:
    """The rows as CSV in ``columns`` order (cells by :func:`cell`)."""
    columns = list(columns)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: cell(r.get(k)) for k in columns})
    return buf.getvalue()


def write_rows(rows: list[dict], out_dir: str | Path, stem: str, columns: Iterable[str],
               solved: Callable[[dict], bool], label: Callable[[dict], str],
               title: str = "", chart_name: str | None = None,
               draw: Callable[[list[dict], Path, str], list[Path]] | None = None) -> list[Path]:
    """``<stem>.csv`` of every row and the chart (PNG, SVG) of the ``solved`` ones: the
    TTFT-TPOT chart (named ``chart_name``, default ``pareto``), or ``draw(rows, folder,
    title)``, which writes its own."""
    from autoplan.files import check_folder, check_writable, make_folder, write_atomic
    from autoplan.render.pareto import chart

    out = check_folder(out_dir)
    for name in (f"{stem}.csv", f"{stem}.png", f"{stem}.svg") if out.is_dir() else ():
        check_writable(out / name)  # every target first: none written if one cannot be
    paths: list[Path] = []
    keep = [r for r in rows if solved(r)]
    if keep:
        named = [{**r, "label": label(r)} for r in keep]
        if draw is not None:
            paths += draw(named, out, title)
        else:
            paths += chart(named, out, title, name=chart_name or "pareto")
    make_folder(out)
    write_atomic(out / f"{stem}.csv", rows_csv(rows, columns))
    return [out / f"{stem}.csv", *paths]


def check_solved(rows: list[dict], where: str, what: str = "case") -> None:
    """Raise when no row of a sweep (its cases, or a front's points) was solved:
    InfeasibleError (exit 3) if any was infeasible, else InputError (exit 2). Called after
    the rows are written and shown: they say why, row by row."""
    from autoplan.errors import InfeasibleError, InputError

    if not rows or any(r["status"] not in ("infeasible", "error") for r in rows):
        return
    n = sum(r["status"] == "infeasible" for r in rows)
    msg = (f"no {what} of the sweep was solved ({n} infeasible, {len(rows) - n} refused as "
           f"input): {where} has each {what}'s reason")
    if n:
        raise InfeasibleError(msg, reason="sweep")
    raise InputError(msg)
