"""The pipeline timeline chart: per phase, the stages over time with micro-batches flowing
through them (GPipe schedule) and the idle time (bubbles) shaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from autoplan.plan_schema import Plan
from autoplan.render.context import PHASES, title
from autoplan.render.figure import new_figure, write_figure
from autoplan.render.labels import plain

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

BUBBLE_COLOR = "#eeeeee"


class Schedule(NamedTuple):
    """A GPipe schedule of one phase: ``start[i][k]`` of micro-batch ``k`` on stage ``i``."""

    micro_batches: int
    stage_ms: list[float]  # one micro-batch on each stage
    hop_ms: float  # one micro-batch's hand-off between neighbouring stages
    start: list[list[float]]
    makespan_ms: float
    bubble_fraction: float


def micro_batches(plan: Plan, phase: str) -> int:
    """Micro-batches drawn for ``phase``: the plan's ``micro_batches`` if it has one; else
    prefill splits into as many as it has stages (the prompt chunked, GPipe-style) and
    decode into as many as it has sequences, at most one per stage."""
    pp = plan.phase(phase)
    m = getattr(pp, "micro_batches", None)
    if m:
        return max(1, int(m))
    s = len(pp.stages)
    return s if phase == "prefill" else max(1, min(plan.inputs.batch, s))


def schedule(plan: Plan, phase: str, m: int | None = None) -> Schedule:
    """GPipe schedule of ``m`` micro-batches through the phase's stages.

    Each micro-batch takes ``time_ms / m`` on a stage; the plan's hand-off time (phase
    time minus the stages' sum) is spread evenly over the stage boundaries, also split
    ``m`` ways. With ``m = 1`` the makespan is the plan's phase time exactly. The bubble
    fraction is the share of stage-time the stages sit idle within the makespan.
    """
    pp = plan.phase(phase)
    m = m or micro_batches(plan, phase)
    t = [s.time_ms for s in pp.stages]
    n = len(t)
    hop = max(0.0, pp.time_ms - sum(t)) / (n - 1) / m if n > 1 else 0.0
    tau = [x / m for x in t]
    start = [[0.0] * m for _ in range(n)]
    finish = [[0.0] * m for _ in range(n)]
    for k in range(m):
        for i in range(n):
            ready = finish[i - 1][k] + hop if i else 0.0
            free = finish[i][k - 1] if k else 0.0
            start[i][k] = max(ready, free)
            finish[i][k] = start[i][k] + tau[i]
    makespan = finish[-1][-1] if n else 0.0
    bubble = 1.0 - sum(t) / (n * makespan) if makespan > 0 else 0.0
    return Schedule(m, tau, hop, start, makespan, max(0.0, bubble))


def _stage_label(s) -> str:
    par = (f"xDP{s.attention_dp}" if s.attention_dp > 1 else "") + (
        f" EP{s.ep}" if s.ep > 1 else "")
    return f"S{s.index}  L{s.layers[0]}-{s.layers[1] - 1}  {plain(s.device_kind)} TP{s.tp}{par}"


def figure(plan: Plan | dict | str | Path) -> Figure:
    """The timeline Figure: one panel per phase, y = stages, x = time (ms)."""
    from matplotlib.patches import Patch

    plan = Plan.load(plan)
    counts = [len(plan.phase(ph).stages) for ph in PHASES]
    height = min(40.0, max(5.0, 2.2 + 0.32 * sum(counts) + 1.2 * len(PHASES)))
    fig = new_figure(12, height)
    axes = fig.subplots(len(PHASES), 1, height_ratios=[c + 1.5 for c in counts])
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    for ax, ph in zip(axes, PHASES):
        pp = plan.phase(ph)
        sch = schedule(plan, ph)
        n = len(pp.stages)
        ys = list(range(n))
        for i, s in enumerate(pp.stages):
            # Idle background over the whole makespan; busy micro-batches drawn over it.
            ax.broken_barh([(0.0, sch.makespan_ms)], (i - 0.4, 0.8), facecolors=BUBBLE_COLOR,
                           edgecolor="#bbbbbb", hatch="///", linewidth=0.0)
            bars = [(sch.start[i][k], sch.stage_ms[i]) for k in range(sch.micro_batches)]
            colors = [cmap(k % 20) for k in range(sch.micro_batches)]
            ax.broken_barh(bars, (i - 0.4, 0.8), facecolors=colors, edgecolor="white",
                           linewidth=0.5)
            if sch.micro_batches <= 32:
                for k, (x0, w) in enumerate(bars):
                    if w > sch.makespan_ms * 0.025:
                        ax.text(x0 + w / 2, i, str(k), ha="center", va="center", fontsize=8,
                                color="black")
        ax.set_yticks(ys, [_stage_label(s) for s in pp.stages],
                      fontsize=8 if n <= 24 else 6)
        ax.set_ylim(n - 0.5, -0.5)  # stage 0 on top
        ax.set_xlim(0, sch.makespan_ms * 1.01 if sch.makespan_ms > 0 else 1)
        ax.set_xlabel("time (ms)")
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)
        unsplit = (f" (plan prices one unsplit pass: {pp.time_ms:.3g} ms)"
                   if sch.micro_batches > 1 else "")
        reps = pp.replicas
        steady = max(0.0, pp.bubble_fraction)  # the plan may hold -0.0
        ax.set_title(f"{ph}: {n} stage{'s' * (n != 1)}"
                     + (f" (one of {reps} replicas)" if reps > 1 else "")
                     + f", {sch.micro_batches} micro-batch{'es' * (sch.micro_batches != 1)}, "
                     f"makespan {sch.makespan_ms:.3g} ms{unsplit}; "
                     f"bubble {sch.bubble_fraction:.1%}"
                     + f" (plan, steady state: {steady:.1%})",
                     fontsize=9, loc="left")
    fig.legend(handles=[Patch(facecolor=cmap(0), label="micro-batch (its number inside)"),
                        Patch(facecolor=cmap(1), label="next micro-batch"),
                        Patch(facecolor=BUBBLE_COLOR, edgecolor="#bbbbbb", hatch="///",
                              label="bubble (stage idle)")],
               loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(f"Pipeline timeline (GPipe)\n{title(plan)}", fontsize=11)
    return fig


def chart(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``timeline.png`` and ``timeline.svg``; return their paths."""
    return write_figure("timeline", figure(plan), out_dir)
