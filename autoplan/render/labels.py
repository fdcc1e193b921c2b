"""Point labels placed where they overlap least (the roofline's operators, the Pareto
chart's plans)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

def plain(text: str) -> str:
    """A name drawn as written: its dollar signs escaped, so that matplotlib does not read
    ``$...$`` in a device kind, a topology or a model name as mathtext (which raises on
    ``$x^{$``); matplotlib shows ``\\$`` as ``$``."""
    return str(text).replace("$", r"\$")


OFFSETS = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
           (-5, -3, "right", "top"), (5, 11, "left", "bottom"), (5, -11, "left", "top"),
           (-5, 11, "right", "bottom"), (-5, -11, "right", "top"),
           (0, 16, "center", "bottom"), (0, -16, "center", "top"),
           (5, 20, "left", "bottom"), (5, -20, "left", "top")]


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(fig: Figure, labels: list[tuple]) -> None:
    """Annotate points ``(ax, x, y, text, color, bold)``, each at the first of a few offsets
    where it overlaps no label, point or the axes' edge (else where it overlaps least).

    Call it on a frozen layout (:func:`autoplan.render.figure.freeze_layout`)."""
    renderer = fig.canvas.get_renderer()
    taken: dict[Any, list] = defaultdict(list)
    for ax, x, y, *_ in labels:  # the points themselves are obstacles
        px, py = ax.transData.transform((x, y))
        taken[ax].append((px - 4, py - 4, px + 4, py + 4))
    # Bold names (GEMMs) first: they matter most.
    for ax, x, y, text, color, bold in sorted(labels, key=lambda t: not t[5]):
        box_ax = ax.get_window_extent(renderer)
        ann = ax.annotate(text, (x, y), fontsize=6.5, color=color, textcoords="offset points",
                          xytext=OFFSETS[0][:2], fontweight="bold" if bold else "normal",
                          linespacing=1.0,
                          bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                                "alpha": 0.75, "edgecolor": "none"})
        best = None
        for dx, dy, ha, va in OFFSETS:
            ann.set_position((dx, dy))
            ann.set_ha(ha)
            ann.set_va(va)
            bb = ann.get_window_extent(renderer)
            b = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            cost = sum(_overlap(b, o) for o in taken[ax])
            outside = (bb.x0 < box_ax.x0 or bb.x1 > box_ax.x1 or bb.y0 < box_ax.y0
                       or bb.y1 > box_ax.y1)
            cost += 1e6 if outside else 0.0
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha, va, b)
            if cost == 0:
                break
        _, dx, dy, ha, va, b = best
        ann.set_position((dx, dy))
        ann.set_ha(ha)
        ann.set_va(va)
        taken[ax].append(b)
