"""Figures for the charts: matplotlib imported lazily (``pip install 'autoplan[charts]'``),
used through :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global
state), rendered to PNG and SVG bytes in memory, then written each file atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from autoplan.errors import InputError
from autoplan.files import check_writable, make_folder, write_atomic

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DPI = 100


def _mpl():
    """(Figure, FigureCanvasAgg), or a one-line InputError naming the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("charts need matplotlib: pip install 'autoplan[charts]'") from None
    return Figure, FigureCanvasAgg


def new_figure(width_in: float, height_in: float) -> Figure:
    """An empty figure on its own Agg canvas, laid out by the constrained engine."""
    Figure, FigureCanvasAgg = _mpl()
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def freeze_layout(fig: Figure) -> None:
    """Lay the figure out once, then keep the positions (labels are placed against them,
    both formats share them, and they are not redone)."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")


def render(fig: Figure) -> dict[str, bytes]:
    """The figure as PNG and SVG bytes (SVG ids and metadata fixed: reproducible files)."""
    import matplotlib

    freeze_layout(fig)
    out = {}
    # Text stays text in the SVG (searchable, small); ids are salted for reproducibility.
    with matplotlib.rc_context({"svg.hashsalt": "autoplan", "svg.fonttype": "none"}):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=DPI, metadata=meta)
            out[ext] = buf.getvalue()
    return out


def write(files: dict[str, dict[str, bytes]], out_dir: str | Path) -> list[Path]:
    """Write ``{stem: {ext: bytes}}`` under ``out_dir`` (created if need be), each file
    atomically; return the paths in order."""
    d = make_folder(out_dir)
    for stem, data in files.items():  # every target first: none written if one cannot be
        for ext in data:
            check_writable(d / f"{stem}.{ext}")
    written = []
    for stem, data in files.items():
        for ext, blob in data.items():
            p = d / f"{stem}.{ext}"
            write_atomic(p, blob)
            written.append(p)
    return written


def write_figure(stem: str, fig: Figure, out_dir: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` of one figure; return their paths."""
    return write({stem: render(fig)}, out_dir)
