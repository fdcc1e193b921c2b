"""``autoplan pareto``: sweep SLO targets and device budgets, keep the non-dominated plans.

Each grid point (a TTFT SLO, a TPOT SLO, a device budget; any of them swept) is one
latency-objective plan, solved by the sweep engine (:mod:`autoplan.sweep.engine`: local
processes, or a Ray cluster). The result is the
TTFT-TPOT-devices front: every point no other point beats on all three. Points whose
constraints no plan meets are kept in the CSV as infeasible, with the reason.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from autoplan.errors import InfeasibleError, InputError
from autoplan.search.front import pareto_front
from autoplan.sweep.engine import run
from autoplan.sweep.output import rows_csv, write_rows

COLUMNS = ("ttft_slo_ms", "tpot_slo_ms", "max_devices", "status", "placement", "ttft_ms",
           "tpot_ms", "e2e_ms", "devices", "throughput_tokens_per_s", "on_front", "note")


def parse_list(text: str | None, name: str, kind=float, most: float | None = None) -> list:
    """``"10,20,40"`` -> values (each at most ``most``); an empty flag means "not swept"
    ([None])."""
    if text is None or text == "":
        return [None]
    out = []
    for part in text.split(","):
        try:
            v = kind(part.strip())
        except ValueError:
            raise InputError(f"{name}: {part.strip()!r} is not a number") from None
        if not v > 0:
            raise InputError(f"{name}: values must be positive, got {part.strip()}")
        if most is not None and v > most:  # else every point would fail on its own
            raise InputError(f"{name}: values must be at most {most}, got {part.strip()}")
        out.append(v)
    if len(set(out)) != len(out):
        raise InputError(f"{name}: values repeat")
    return out


def _one(args: tuple) -> dict:
    """One grid point (runs in a worker process)."""
    from autoplan.search.planner import plan

    base, ttft, tpot, devices = args
    row = {"ttft_slo_ms": ttft, "tpot_slo_ms": tpot, "max_devices": devices}
    try:
        p = plan(**base, ttft_slo_ms=ttft, tpot_slo_ms=tpot, max_devices=devices)
    except InfeasibleError as e:
        return {**row, "status": "infeasible", "note": str(e)}
    return {**row, "status": p.status, "placement": p.placement, "ttft_ms": p.ttft_ms,
            "tpot_ms": p.tpot_ms, "e2e_ms": p.e2e_ms, "devices": p.devices,
            "throughput_tokens_per_s": p.throughput_tokens_per_s, "note": ""}


def sweep(base: dict, ttft_slos: list, tpot_slos: list, budgets: list, *,
          workers: int | None = None, progress: bool = False,
          ray_address: str | None = None) -> list[dict]:
    """Solve every grid point; rows in grid order, each marked ``on_front``."""
    grid = [(base, a, b, c) for a, b, c in itertools.product(ttft_slos, tpot_slos, budgets)]
    rows = run(_one, grid, workers=workers, ray_address=ray_address, progress=progress,
               label="pareto points")
    mark_front(rows)
    return rows


def mark_front(rows: list[dict]) -> None:
    """Mark each feasible row ``on_front`` when no other row beats it on TTFT, TPOT and
    devices."""
    feasible = [r for r in rows if r["status"] != "infeasible"]
    front = {id(r) for r in pareto_front(feasible)} if feasible else set()
    for r in rows:
        r["on_front"] = id(r) in front


def to_csv(rows: list[dict]) -> str:
    return rows_csv(rows, COLUMNS)


def write(rows: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """``pareto.csv`` and the chart (PNG and SVG) of the feasible rows."""
    return write_rows(rows, out_dir, "pareto", COLUMNS, lambda r: r["status"] != "infeasible",
                      _label, title)


def _label(r: dict) -> str:
    parts = []
    if r.get("tpot_slo_ms") is not None:
        parts.append(f"TPOT<={r['tpot_slo_ms']:g}")
    if r.get("ttft_slo_ms") is not None:
        parts.append(f"TTFT<={r['ttft_slo_ms']:g}")
    if r.get("max_devices") is not None:
        parts.append(f"<={r['max_devices']} dev")
    return ", ".join(parts)
