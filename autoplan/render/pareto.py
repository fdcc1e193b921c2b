"""The Pareto charts: TTFT against TPOT of candidate plans, coloured by devices, with the
non-dominated front (:func:`autoplan.search.front.pareto_front`) connected; and the
throughput front, tokens/s per GPU against tokens/s per user."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

from autoplan.errors import InputError
from autoplan.render.figure import freeze_layout, new_figure, write_figure
from autoplan.render.labels import place_labels, plain
from autoplan.search.front import check_rows, front_2d, pareto_front

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def figure(rows: list[dict], title: str = "") -> Figure:
    """The Pareto Figure of ``rows`` (mappings with ``ttft_ms``, ``tpot_ms``, ``devices``
    and optional ``label``); the front's plans are named."""
    rows = check_rows(rows)
    if not rows:
        raise InputError("pareto: no rows to chart")
    front = pareto_front(rows)
    stair = front_2d(front)
    fig = new_figure(10, 7)
    ax = fig.add_subplot()
    devs = [r["devices"] for r in rows]
    vmin, vmax = min(devs), max(devs)
    sc = ax.scatter([r["ttft_ms"] for r in rows], [r["tpot_ms"] for r in rows], c=devs,
                    cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, s=30,
                    alpha=0.75, zorder=2, label="candidate plans")
    ax.scatter([r["ttft_ms"] for r in front], [r["tpot_ms"] for r in front],
               c=[r["devices"] for r in front], cmap="viridis", vmin=vmin,
               vmax=vmax if vmax > vmin else vmin + 1, s=90, edgecolors="black",
               linewidths=1.2, zorder=3, label=f"non-dominated ({len(front)}): TTFT, TPOT, devices")
    if len(stair) > 1:
        ax.step([r["ttft_ms"] for r in stair], [r["tpot_ms"] for r in stair], where="post",
                color="black", linewidth=1.2, zorder=2.5, label="front on TTFT and TPOT")
    for axis, key in ((ax.set_xscale, "ttft_ms"), (ax.set_yscale, "tpot_ms")):
        vals = [r[key] for r in rows]
        if min(vals) > 0 and max(vals) / min(vals) > 30:
            axis("log")
    ax.set_xlabel("TTFT (ms)")
    ax.set_ylabel("TPOT (ms)")
    ax.grid(True, color="#dddddd", linewidth=0.5)
    fig.colorbar(sc, ax=ax, label="devices")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_title(f"Pareto front: {len(rows)} plans, {len(front)} non-dominated"
                 + (f"\n{plain(title)}" if title else ""), fontsize=11)
    freeze_layout(fig)
    names = []
    for r in front:
        lab = r.get("label")
        txt = f"{lab} ({r['devices']:g} dev)" if lab else f"{r['devices']:g} dev"
        names.append((ax, r["ttft_ms"], r["tpot_ms"], txt, "black", False))
    place_labels(fig, names)
    return fig


def chart(rows: list[dict], out_dir: str | Path, title: str = "",
          name: str = "pareto") -> list[Path]:
    """Write ``NAME.png`` and ``NAME.svg`` (TPOT against TTFT); return their paths.

    ``rows`` are mappings with ``ttft_ms``, ``tpot_ms``, ``devices`` and optional ``label``.
    """
    return write_figure(name, figure(rows, title), out_dir)


THROUGHPUT_KEYS = ("tokens_per_s_per_user", "tokens_per_s_per_device", "devices")


def _throughput_rows(rows) -> list[dict]:
    if not isinstance(rows, (list, tuple)) or not rows:
        raise InputError("throughput front: no rows to chart")
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InputError(f"throughput front row {k} is not a mapping")
        for key in THROUGHPUT_KEYS:
            v = r.get(key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise InputError(f"throughput front row {k}: {key} must be a finite number, "
                                 f"got {v!r}")
        if not isinstance(r.get("on_front"), bool):
            raise InputError(f"throughput front row {k}: on_front must be true or false")
    return list(rows)


def throughput_figure(rows: list[dict], title: str = "") -> Figure:
    """Tokens/s per GPU (y) against tokens/s per user (x) of the sweep's plans: mappings
    with the two rates, ``devices``, ``on_front`` (marked by the sweep) and an optional
    ``label`` (the layout). The front is joined by its staircase (the region it
    dominates) and only its plans are named, so the names stay readable."""
    rows = _throughput_rows(rows)
    x, y = "tokens_per_s_per_user", "tokens_per_s_per_device"
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: (r[x], -r[y]))
    rest = [r for r in rows if not r["on_front"]]
    fig = new_figure(11, 7)
    ax = fig.add_subplot()
    if rest:
        ax.scatter([r[x] for r in rest], [r[y] for r in rest], s=28, color="#9e9e9e",
                   zorder=2, label=f"dominated plans ({len(rest)})")
    devs = [r["devices"] for r in rows]
    vmin, vmax = min(devs), max(devs)
    sc = ax.scatter([r[x] for r in front], [r[y] for r in front],
                    c=[r["devices"] for r in front], cmap="viridis", vmin=vmin,
                    vmax=vmax if vmax > vmin else vmin + 1, s=90, edgecolors="black",
                    linewidths=1.2, zorder=3, label=f"front ({len(front)} plans)"
                    + ("" if vmax > vmin else f", {vmin:g} devices each"))
    if len(front) > 1:
        ax.step([r[x] for r in front], [r[y] for r in front], where="pre", color="black",
                linewidth=1.2, zorder=2.5)
    for axis, key in ((ax.set_xscale, x), (ax.set_yscale, y)):
        vals = [r[key] for r in rows]
        if min(vals) > 0 and max(vals) / min(vals) > 30:
            axis("log")
    ax.set_xlabel("tokens/s per user (1000 / TPOT)")
    # TPOT, what the SLO is written in, on the top edge (1000 / x both ways; x > 0)
    top = ax.secondary_xaxis("top", functions=(_per_1000, _per_1000))
    top.set_xlabel("TPOT (ms)", fontsize=9)
    ax.set_ylabel("tokens/s per GPU")
    ax.grid(True, color="#dddddd", linewidth=0.5)
    if vmax > vmin:
        fig.colorbar(sc, ax=ax, label="devices")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_title(f"Throughput front: {len(rows)} plans, {len(front)} on the front"
                 + (f"\n{plain(title)}" if title else ""), fontsize=11)
    ax.margins(x=0.12, y=0.12)  # room for the names of the points at the edges
    left, _ = ax.get_xlim()
    if left <= 0:  # tokens/s per user is positive: TPOT on the top edge needs x > 0
        ax.set_xlim(left=min(r[x] for r in rows) / 2)
    freeze_layout(fig)
    place_labels(fig, [(ax, r[x], r[y], plain(r.get("label") or f"{r['devices']:g} dev"),
                        "black", False) for r in front])
    return fig


def _per_1000(v):
    import numpy as np

    # finite both ways, as matplotlib's limits must be (the x axis itself stays above 0)
    return 1000.0 / np.maximum(np.asarray(v, dtype=float), 1e-9)


def throughput_chart(rows: list[dict], out_dir: str | Path, title: str = "",
                     name: str = "pareto-throughput") -> list[Path]:
    """Write ``NAME.png`` and ``NAME.svg`` of :func:`throughput_figure`; return their
    paths."""
    return write_figure(name, throughput_figure(rows, title), out_dir)
