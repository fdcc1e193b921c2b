"""The Pareto chart: TTFT against TPOT of candidate plans, coloured by devices, with the
non-dominated front (:func:`autoplan.search.front.pareto_front`) connected."""

from __future__ import annotations

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
