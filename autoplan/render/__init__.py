"""Output of autoplan: the terminal (:mod:`.terminal`) and charts of a plan, PNG and SVG
by matplotlib (``autoplan chart PLAN.json --out DIR``): :mod:`.timeline`,
:mod:`.roofline`, :mod:`.topology` and :mod:`.pareto`, each with ``figure`` (in memory)
and ``chart`` (written files). matplotlib is imported only when a chart is drawn."""

from __future__ import annotations

from pathlib import Path

from autoplan.files import check_folder
from autoplan.plan_schema import Plan
from autoplan.render import pareto, roofline, timeline, topology
from autoplan.render.context import chart_context
from autoplan.render.figure import render, write

__all__ = ["chart_all", "pareto", "roofline", "timeline", "topology"]


def chart_all(plan: Plan | dict | str | Path, out_dir: str | Path = "charts") -> list[Path]:
    """Write the timeline, roofline and topology charts of a plan (PNG and SVG each).

    Everything is rendered before the first file is written: bad input writes nothing.
    """
    plan = Plan.load(plan)
    check_folder(out_dir)
    ctx = chart_context(plan)
    files = {
        "timeline": render(timeline.figure(plan)),
        "roofline": render(roofline.figure(plan, ctx=ctx)),
        "topology": render(topology.figure(plan, ctx=ctx)),
    }
    return write(files, out_dir)
