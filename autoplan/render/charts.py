"""Charts of a plan (``autoplan chart PLAN.json --out DIR``), PNG and SVG, by matplotlib.

- :func:`timeline`: per phase, the pipeline's stages over time with micro-batches
  flowing through them (GPipe schedule) and the idle time (bubbles) shaded;
- :func:`roofline`: per device kind of the plan, its roofline (peak FLOP/s of the plan's
  GEMM format, fastest memory tier's bandwidth, ridge point marked) with the plan's
  operators as points, recomputed by the cost model (:func:`operator_points`);
- :func:`topology`: the topology graph with the placement coloured by phase and stage
  (devices grouped by node when there are too many to draw one by one);
- :func:`pareto`: TTFT against TPOT of candidate plans, coloured by devices, with the
  non-dominated front (:func:`pareto_front`) connected.

Every function renders all its figures in memory first and only then writes each file
through a temporary name and a rename, so a failure leaves nothing half-written.
matplotlib is imported lazily (``pip install 'autoplan[charts]'``) and used through
:class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global state.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from autoplan.errors import InputError
from autoplan.plan_schema import Plan

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from autoplan.graphs.topology import Topology
    from autoplan.inputs.model import ModelSpec

PHASES = ("prefill", "decode")
PHASE_COLOR = {"prefill": "#1f77b4", "decode": "#ff7f0e"}
PHASE_MARKER = {"prefill": "o", "decode": "^"}
ROLE_COLOR = {"prefill": "#1f77b4", "decode": "#ff7f0e", "both": "#9467bd",
              "unused": "#d9d9d9"}
ROLE_LABEL = {"prefill": "prefill", "decode": "decode", "both": "prefill & decode",
              "unused": "unused"}
SWITCH_COLOR = "#7f7f7f"
BUBBLE_COLOR = "#eeeeee"
DPI = 100
# Above this many devices the topology chart draws one vertex per node, not per device.
MAX_DEVICES_DRAWN = 64
# Above this many nodes it draws one vertex per fast domain instead.
MAX_GROUPS_DRAWN = 160
GEMM_KINDS = ("gemm", "qkv", "moe_gemm")


# ----------------------------------------------------------------------------- helpers


def _mpl():
    """(Figure, FigureCanvasAgg), or a one-line InputError naming the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("charts need matplotlib: pip install 'autoplan[charts]'") from None
    return Figure, FigureCanvasAgg


def _figure(width_in: float, height_in: float) -> Figure:
    Figure, FigureCanvasAgg = _mpl()
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure) -> dict[str, bytes]:
    """The figure as PNG and SVG bytes (SVG ids and metadata fixed: reproducible files)."""
    import matplotlib

    # Lay out once, then freeze the positions: both formats share it and it is not redone.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    out = {}
    # Text stays text in the SVG (searchable, small); ids are salted for reproducibility.
    with matplotlib.rc_context({"svg.hashsalt": "autoplan", "svg.fonttype": "none"}):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=DPI, metadata=meta)
            out[ext] = buf.getvalue()
    return out


def _check_out_dir(out_dir: str | Path) -> Path:
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise InputError(f"chart output {str(d)!r} exists and is not a directory")
    return d


def _write(files: dict[str, dict[str, bytes]], out_dir: str | Path) -> list[Path]:
    """Write ``{stem: {ext: bytes}}`` under ``out_dir``, each file atomically."""
    d = _check_out_dir(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create chart directory {str(d)!r}: "
                         f"{e.__class__.__name__}") from None
    written = []
    for stem, data in files.items():
        for ext, blob in data.items():
            p = d / f"{stem}.{ext}"
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=d)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, p)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            written.append(p)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _context(plan: Plan) -> tuple[ModelSpec, Topology]:
    """The plan's model and topology, with the stages checked against them."""
    from autoplan.catalog import load_model, load_topology

    model = load_model(plan.inputs.model)
    # A plan priced with its own calibration profile carries it (newer plans).
    topo = load_topology(plan.inputs.topology, getattr(plan.inputs, "calibration", None))
    known = set(topo.devices)
    for ph in PHASES:
        for r, groups in enumerate(_replica_devices(getattr(plan, ph))):
            for k, group in enumerate(groups):
                for dev in group:
                    if dev not in known:
                        raise InputError(f"plan: {ph} replica {r} stage {k} names unknown "
                                         f"device {dev}")
        for s in getattr(plan, ph).stages:
            if not 0 <= s.layers[0] < s.layers[1] <= model.num_layers:
                raise InputError(f"plan: {ph} stage {s.index} layers {list(s.layers)} are not "
                                 f"within the {model.num_layers} layers of {model.name}")
            if s.device_kind not in topo.kinds:
                raise InputError(f"plan: {ph} stage {s.index} device kind {s.device_kind!r} "
                                 f"is not in topology {topo.name!r}")
            if not s.devices or len(s.devices) != s.tp:
                raise InputError(f"plan: {ph} stage {s.index} has tp {s.tp} but "
                                 f"{len(s.devices)} devices")
            for dev in s.devices:
                if dev not in known:
                    raise InputError(f"plan: {ph} stage {s.index} names unknown device {dev}")
                if topo.device_kind_of(dev) != s.device_kind:
                    raise InputError(f"plan: {dev} is not a {s.device_kind}")
    return model, topo


def _title(plan: Plan) -> str:
    i = plan.inputs
    return (f"{i.model} on {i.topology} ({plan.placement}, {i.dtype}, batch {i.batch}, "
            f"isl {i.isl}, osl {i.osl})")


def _ranges(idx: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    xs = sorted(set(idx))
    out, k = [], 0
    while k < len(xs):
        j = k
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[k]) if j == k else f"{xs[k]}-{xs[j]}")
        k = j + 1
    return ",".join(out)


# ----------------------------------------------------------------------------- timeline


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
    pp = getattr(plan, phase)
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
    pp = getattr(plan, phase)
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
    return f"S{s.index}  L{s.layers[0]}-{s.layers[1] - 1}  {s.device_kind} TP{s.tp}"


def _timeline_figure(plan: Plan | dict | str | Path) -> Figure:
    """The timeline Figure: one panel per phase, y = stages, x = time (ms)."""
    from matplotlib.patches import Patch

    plan = Plan.load(plan)
    counts = [len(getattr(plan, ph).stages) for ph in PHASES]
    height = min(40.0, max(5.0, 2.2 + 0.32 * sum(counts) + 1.2 * len(PHASES)))
    fig = _figure(12, height)
    axes = fig.subplots(len(PHASES), 1, height_ratios=[c + 1.5 for c in counts])
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    for ax, ph in zip(axes, PHASES):
        pp = getattr(plan, ph)
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
        reps = getattr(pp, "replicas", 1)
        steady = getattr(pp, "bubble_fraction", None)
        steady = None if steady is None else max(0.0, steady)  # the plan may hold -0.0
        ax.set_title(f"{ph}: {n} stage{'s' * (n != 1)}"
                     + (f" (one of {reps} replicas)" if reps > 1 else "")
                     + f", {sch.micro_batches} micro-batch{'es' * (sch.micro_batches != 1)}, "
                     f"makespan {sch.makespan_ms:.3g} ms{unsplit}; "
                     f"bubble {sch.bubble_fraction:.1%}"
                     + (f" (plan, steady state: {steady:.1%})" if steady is not None else ""),
                     fontsize=9, loc="left")
    fig.legend(handles=[Patch(facecolor=cmap(0), label="micro-batch (its number inside)"),
                        Patch(facecolor=cmap(1), label="next micro-batch"),
                        Patch(facecolor=BUBBLE_COLOR, edgecolor="#bbbbbb", hatch="///",
                              label="bubble (stage idle)")],
               loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(f"Pipeline timeline (GPipe)\n{_title(plan)}", fontsize=11)
    return fig


def timeline(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``timeline.png`` and ``timeline.svg``; return their paths."""
    return _write({"timeline": _render(_timeline_figure(plan))}, out_dir)


# ----------------------------------------------------------------------------- roofline


class OpPoint(NamedTuple):
    phase: str
    kind: str
    op: str
    intensity: float  # FLOP per byte moved
    flops_per_s: float  # achieved, per device
    op_kind: str = ""  # gemm, qkv, moe_gemm, attention, norm, elementwise, embedding


class Roofline(NamedTuple):
    kind: str
    peak_flops_per_s: float  # GEMM format of the plan (after fallback)
    ran_in: str
    bandwidth_bytes_per_s: float  # fastest memory tier
    compute_efficiency: float  # calibrated fraction of the peak a large GEMM reaches
    memory_efficiency: float
    activation_peak_flops_per_s: float  # peak of non-GEMM operators (activation format)

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the memory roof meets the compute roof."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s


def rooflines(plan: Plan | dict | str | Path, topo: Topology | None = None) -> dict[str, Roofline]:
    """The roofline of each device kind the plan uses, in stage order."""
    from autoplan.inputs.dtypes import bytes_per_element

    plan = Plan.load(plan)
    if topo is None:
        _, topo = _context(plan)
    work_act = "bf16"
    out: dict[str, Roofline] = {}
    for ph in PHASES:
        for s in getattr(plan, ph).stages:
            if s.device_kind in out:
                continue
            k = topo.kinds[s.device_kind]
            peak, ran_in = k.peak_flops(plan.inputs.dtype)
            cal = topo.calibration(s.device_kind)
            eff = cal.compute_efficiency
            if bytes_per_element(ran_in) < 2:
                eff *= cal.low_precision_efficiency
            out[s.device_kind] = Roofline(
                s.device_kind, peak, ran_in, k.tiers_fastest_first()[0].bandwidth_bytes_per_s,
                eff, cal.memory_efficiency, k.peak_flops(work_act)[0])
    return out


def _op_kinds(model: ModelSpec) -> dict[str, str]:
    from autoplan.graphs.model_graph import head_ops, layer_ops, tail_ops

    ops = list(head_ops(model)) + list(tail_ops(model))
    for lk in {model.layer_kind(i) for i in range(model.num_layers)}:
        ops += list(layer_ops(model, lk))
    return {o.name: o.kind for o in ops}


def _stage_breakdowns(plan: Plan, model: ModelSpec, topo: Topology):
    """Yield (phase, stage, StageCost with per-operator breakdown), as ``evaluate`` prices."""
    from autoplan.cost.evaluate import phase_cost, placements, workload_of

    work = workload_of(plan)
    for ph in PHASES:
        stages = placements(getattr(plan, ph))
        cost = phase_cost(model, topo, work, plan.placement, ph, stages, breakdown=True)
        for st, sc in zip(stages, cost.stages):
            yield ph, st, sc


def operator_points(plan: Plan | dict | str | Path, *, _ctx=None) -> list[OpPoint]:
    """The plan's operators on the roofline: per phase, device kind and operator, the
    FLOPs, bytes and time summed over the phase's stages of that kind (per device, as the
    cost model prices one TP rank), as (phase, kind, op, FLOP/byte, achieved FLOP/s).
    Operators without FLOPs (embedding gathers) have no place on a roofline and are left
    out."""
    plan = Plan.load(plan)
    model, topo = _ctx or _context(plan)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for ph, st, cost in _stage_breakdowns(plan, model, topo):
        for name, d in cost.ops.items():
            a = acc[(ph, st.kind, name)]
            a[0] += d["flops"]
            a[1] += d["bytes"]
            a[2] += d["time_s"]
    kinds = _op_kinds(model)
    return [OpPoint(ph, kind, op, f / b, f / t, kinds.get(op, ""))
            for (ph, kind, op), (f, b, t) in acc.items() if f > 0 and b > 0 and t > 0]


def _place_labels(fig: Figure, labels: list[tuple]) -> None:
    """Annotate points ``(ax, x, y, text, color, bold)``, each at the first of a few offsets
    where it overlaps no label, point or the axes' edge (else where it overlaps least)."""
    renderer = fig.canvas.get_renderer()
    taken: dict[Any, list] = defaultdict(list)
    for ax, x, y, *_ in labels:  # the points themselves are obstacles
        px, py = ax.transData.transform((x, y))
        taken[ax].append((px - 4, py - 4, px + 4, py + 4))
    offsets = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
               (-5, -3, "right", "top"), (5, 11, "left", "bottom"), (5, -11, "left", "top"),
               (-5, 11, "right", "bottom"), (-5, -11, "right", "top"),
               (0, 16, "center", "bottom"), (0, -16, "center", "top"),
               (5, 20, "left", "bottom"), (5, -20, "left", "top")]

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    # GEMMs first: their names matter most.
    for ax, x, y, text, color, bold in sorted(labels, key=lambda t: not t[5]):
        box_ax = ax.get_window_extent(renderer)
        ann = ax.annotate(text, (x, y), fontsize=6.5, color=color, textcoords="offset points",
                          xytext=offsets[0][:2], fontweight="bold" if bold else "normal",
                          linespacing=1.0,
                          bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                                "alpha": 0.75, "edgecolor": "none"})
        best = None
        for dx, dy, ha, va in offsets:
            ann.set_position((dx, dy))
            ann.set_ha(ha)
            ann.set_va(va)
            bb = ann.get_window_extent(renderer)
            b = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            cost = sum(overlap(b, o) for o in taken[ax])
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


def _clusters(points: list[OpPoint], dx: float = 0.06, dy: float = 0.06) -> list[list[OpPoint]]:
    """Points within ``dx`` / ``dy`` decades of a group's first point share one label."""
    groups: list[tuple[float, float, list[OpPoint]]] = []
    for p in sorted(points, key=lambda p: (p.intensity, p.flops_per_s, p.op)):
        lx, ly = math.log10(p.intensity), math.log10(p.flops_per_s)
        for gx, gy, members in groups:
            if abs(gx - lx) <= dx and abs(gy - ly) <= dy:
                members.append(p)
                break
        else:
            groups.append((lx, ly, [p]))
    return [g[2] for g in groups]


def _fmt_flops(x: float) -> str:
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP/s"


def _roofline_figure(plan: Plan | dict | str | Path, *, _ctx=None) -> Figure:
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    plan = Plan.load(plan)
    ctx = _ctx or _context(plan)
    roofs = rooflines(plan, ctx[1])
    points = operator_points(plan, _ctx=ctx)
    n = len(roofs)
    fig = _figure(7.5 * n if n > 1 else 10, 7)
    axes = fig.subplots(1, n, squeeze=False)[0]
    op_labels: list[tuple] = []
    for ax, (kind, r) in zip(axes, roofs.items()):
        pts = [p for p in points if p.kind == kind]
        xs = [p.intensity for p in pts] + [r.ridge]
        ys = [p.flops_per_s for p in pts]
        xlo = 10 ** math.floor(math.log10(min(xs) / 2))
        xhi = 10 ** math.ceil(math.log10(max(xs) * 3))
        ylo = 10 ** math.floor(math.log10(min(ys + [r.peak_flops_per_s * 1e-3]) / 2))
        yhi = 10 ** math.ceil(math.log10(r.peak_flops_per_s * 2))
        x = np.logspace(math.log10(xlo), math.log10(xhi), 400)
        ax.loglog(x, np.minimum(r.peak_flops_per_s, x * r.bandwidth_bytes_per_s), color="black",
                  linewidth=2,
                  label=f"roofline: {r.ran_in} peak {_fmt_flops(r.peak_flops_per_s)}, "
                        f"{r.bandwidth_bytes_per_s / 1e12:.3g} TB/s")
        ax.loglog(x, np.minimum(r.peak_flops_per_s * r.compute_efficiency,
                                x * r.bandwidth_bytes_per_s * r.memory_efficiency),
                  color="black", linewidth=1, linestyle="--",
                  label=f"calibrated ceiling ({r.compute_efficiency:.0%} of peak, "
                        f"{r.memory_efficiency:.0%} of bandwidth)")
        if not math.isclose(r.activation_peak_flops_per_s, r.peak_flops_per_s):
            ax.axhline(r.activation_peak_flops_per_s, color="grey", linewidth=1, linestyle=":",
                       label=f"bf16 peak (non-GEMM operators) "
                             f"{_fmt_flops(r.activation_peak_flops_per_s)}")
        ax.axvline(r.ridge, color="#d62728", linewidth=0.8, linestyle=":")
        ax.plot([r.ridge], [r.peak_flops_per_s], marker="D", color="#d62728", markersize=7,
                linestyle="none", label=f"ridge point: {r.ridge:.3g} FLOP/byte")
        for ph in PHASES:
            sel = [p for p in pts if p.phase == ph]
            if not sel:
                continue
            ax.scatter([p.intensity for p in sel], [p.flops_per_s for p in sel],
                       marker=PHASE_MARKER[ph], color=PHASE_COLOR[ph], s=40, zorder=3,
                       edgecolors="black", linewidths=0.4, label=f"{ph} operators")
            for group in _clusters(sel):
                names = [p.op for p in group]
                op_labels.append((ax, group[0].intensity, group[0].flops_per_s,
                               "\n".join(", ".join(names[k:k + 3])
                                         for k in range(0, len(names), 3)),
                               PHASE_COLOR[ph], all(p.op_kind in GEMM_KINDS for p in group)))
        ax.set_xlim(xlo, xhi)
        ax.set_ylim(ylo, yhi)
        ax.xaxis.set_minor_locator(NullLocator())  # decades only: legible, and quick to draw
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("attainable FLOP/s per device")
        ax.set_title(f"{kind} ({plan.inputs.dtype} GEMMs)", fontsize=10)
        ax.grid(True, which="major", color="#dddddd", linewidth=0.5)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + [Line2D([], [], linestyle="none", label="bold names: GEMMs")],
                  labels + ["bold names: GEMMs"], loc="lower right", fontsize=7,
                  framealpha=0.9)
    fig.suptitle(f"Roofline: the plan's operators, per device\n{_title(plan)}", fontsize=11)
    # Lay the axes out, freeze them, then place the names where they overlap least.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    _place_labels(fig, op_labels)
    return fig


def roofline(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``roofline.png`` and ``roofline.svg``; return their paths."""
    return _write({"roofline": _render(_roofline_figure(plan))}, out_dir)


# ----------------------------------------------------------------------------- topology


def _replica_devices(phase) -> list[list[list[str]]]:
    """Devices per replica, per stage: the plan's ``replica_devices`` when it lists them,
    else the stages' devices as the only replica."""
    reps = getattr(phase, "replica_devices", None)
    return [list(map(list, r)) for r in reps] if reps else [[s.devices for s in phase.stages]]


def device_roles(plan: Plan) -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """Device -> (role, prefill stage indices, decode stage indices) for the devices any
    replica uses; role is ``prefill``, ``decode`` or ``both``."""
    stages: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"prefill": [], "decode": []})
    for ph in PHASES:
        phase = getattr(plan, ph)
        for groups in _replica_devices(phase):
            for s, group in zip(phase.stages, groups):
                for d in group:
                    stages[d][ph].append(s.index)
    out = {}
    for d, st in stages.items():
        p, q = tuple(st["prefill"]), tuple(st["decode"])
        out[d] = ("both" if p and q else "prefill" if p else "decode", p, q)
    return out


def device_replicas(plan: Plan) -> dict[str, tuple[int, ...]]:
    """Device -> the replica indices (of either phase) it serves in."""
    out: dict[str, set[int]] = defaultdict(set)
    for ph in PHASES:
        for r, groups in enumerate(_replica_devices(getattr(plan, ph))):
            for group in groups:
                for d in group:
                    out[d].add(r)
    return {d: tuple(sorted(v)) for d, v in out.items()}


def _stage_text(p: Iterable[int], q: Iterable[int]) -> str:
    parts = []
    p, q = sorted(set(p)), sorted(set(q))
    if p and p == q:
        return "S" + _ranges(p)
    if p:
        parts.append("P" + _ranges(p))
    if q:
        parts.append("D" + _ranges(q))
    return " ".join(parts)


def _grid(n: int, aspect: float) -> tuple[int, int]:
    cols = max(1, min(n, math.ceil(math.sqrt(n * aspect))))
    return cols, math.ceil(n / cols)


def _shade(role: str, stage: int | None) -> tuple[float, float, float]:
    """The role's colour; odd stages a lighter tint, so neighbouring stages stand apart."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(ROLE_COLOR[role])
    if role == "unused" or stage is None or stage % 2 == 0:
        return r, g, b
    return tuple(c + (1.0 - c) * 0.45 for c in (r, g, b))  # type: ignore[return-value]


def _topology_figure(plan: Plan | dict | str | Path, *, _ctx=None) -> Figure:
    """The topology Figure: devices (or, on big topologies, nodes or fast domains) coloured
    by the phase they serve, odd stages lighter, labelled with their stage indices.

    Each role's vertices are one collection with gid ``"<level>-<role>"`` (level
    ``device``, ``node`` or ``fast domain``); legend labels carry the devices per role.
    """
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    plan = Plan.load(plan)
    _, topo = _ctx or _context(plan)
    roles = device_roles(plan)
    reps = device_replicas(plan)
    n_reps = {ph: len(_replica_devices(getattr(plan, ph))) for ph in PHASES}
    many_replicas = max(n_reps.values()) > 1
    g = topo.graph
    devices = topo.devices
    counts = {r: 0 for r in ROLE_COLOR}
    for d in devices:
        counts[roles[d][0] if d in roles else "unused"] += 1

    # Clusters of the layout: nodes; drawn one vertex per device, per node or per domain.
    nodes = {g.nodes[d]["node"] for d in devices}
    if len(devices) <= MAX_DEVICES_DRAWN:
        level = "device"
        group_of = {d: g.nodes[d]["node"] for d in devices}
    elif len(nodes) <= MAX_GROUPS_DRAWN:
        level = "node"
        group_of = {d: g.nodes[d]["node"] for d in devices}
    else:
        level = "fast domain"
        group_of = {d: f"domain{dom.index}" for dom in topo.fast_domains for d in dom.devices}
    members: dict[str, list[str]] = {}
    for d in devices:
        members.setdefault(group_of[d], []).append(d)
    names = list(members)
    cols, rows = _grid(len(names), 3.0 if level == "device" else 1.6)
    cell = 3.0 if level == "device" else 1.0
    pos_group = {nm: ((k % cols) * cell, -(k // cols) * cell) for k, nm in enumerate(names)}

    # Network switches (not inside a node) in a row above the grid.
    nets = [n for n, a in g.nodes(data=True) if a["type"] == "switch" and a.get("node") is None]
    span = (cols - 1) * cell
    top = cell * (1.0 if level == "device" else 1.5)
    pos_net = {n: ((k + 1) * span / (len(nets) + 1) if span else k * cell, top)
               for k, n in enumerate(nets)}

    per_col, per_row = (1.9, 1.9) if level == "device" else (1.05, 0.8)
    fig = _figure(min(26.0, max(10.0, per_col * cols + 4.5)),
                  min(30.0, max(6.0, per_row * rows + 3.0)))
    ax = fig.add_subplot()
    ax.set_axis_off()

    def stage_of(items: Iterable[str]) -> tuple[str, int | None, str]:
        """(role, first stage index for the shade, stage label) of some devices."""
        used = [d for d in items if d in roles]
        rs = {roles[d][0] for d in used}
        role = "unused" if not rs else rs.pop() if len(rs) == 1 else "both"
        p = [i for d in used for i in roles[d][1]]
        q = [i for d in used for i in roles[d][2]]
        first = min(p or q) if (p or q) else None
        text = _stage_text(p, q) if used else ""
        if text and many_replicas:
            text += "\nr" + _ranges(r for d in used for r in reps[d])
        return role, first, text

    xy: dict[str, tuple[float, float]] = dict(pos_net)
    segs = []
    items: list[str]
    if level == "device":
        items = list(devices)
        for nm, devs in members.items():
            cx, cy = pos_group[nm]
            r = 0.9 if len(devs) > 1 else 0.0
            for j, d in enumerate(devs):
                ang = math.pi / 2 - 2 * math.pi * j / len(devs)
                xy[d] = (cx + r * math.cos(ang), cy + r * math.sin(ang))
            if f"{nm}.fabric" in g:
                xy[f"{nm}.fabric"] = (cx, cy)
            ax.text(cx, cy - 1.25, nm, ha="center", va="top", fontsize=8, fontweight="bold")
        segs = [(xy[u], xy[v]) for u, v in g.edges() if u in xy and v in xy]
    else:
        items = names
        xy.update(pos_group)
        linked = {(group_of[a], b) for u, v in g.edges() for a, b in ((u, v), (v, u))
                  if a in group_of and b in pos_net}
        # From the top edge of each group's box to the switch.
        segs = [((xy[a][0], xy[a][1] + 0.3 * cell), xy[b]) for a, b in sorted(linked)]
    ax.add_collection(LineCollection(segs, colors="#888888", zorder=1,
                                     linewidths=0.6 if level == "device" else 0.4,
                                     alpha=0.35 if level == "device" else 0.12))

    fabs = [n for n in xy if n in g and g.nodes[n]["type"] == "switch" and g.nodes[n].get("node")]
    if fabs:
        ax.scatter([xy[n][0] for n in fabs], [xy[n][1] for n in fabs], marker="s", s=60,
                   color=SWITCH_COLOR, zorder=2, label="node fabric switch")
        for n in fabs:
            ax.text(xy[n][0], xy[n][1] + 0.15, g.nodes[n]["kind"], ha="center", va="bottom",
                    fontsize=6, color="#555555", zorder=4)
    if nets:
        ax.scatter([xy[n][0] for n in nets], [xy[n][1] for n in nets], marker="s", s=160,
                   color="#444444", zorder=2, label="network switch")
        for n in nets:
            bw = next(iter(g.edges(n, data=True)))[2]["bandwidth_bytes_per_s"]
            ax.text(xy[n][0], xy[n][1] + 0.12 * cell, f"{n.removeprefix('net.')}\n"
                    f"{g.nodes[n]['kind']}, {bw / 1e9:.3g} GB/s per device", ha="center",
                    va="bottom", fontsize=7)

    info = {it: stage_of([it] if level == "device" else members[it]) for it in items}
    handles = []
    for role, base in ROLE_COLOR.items():
        sel = [it for it in items if info[it][0] == role]
        colors = [_shade(role, info[it][1]) for it in sel]
        if level == "device":
            coll = ax.scatter([xy[i][0] for i in sel], [xy[i][1] for i in sel], s=300,
                              c=colors or None, edgecolors="black", linewidths=0.6, zorder=3)
        else:
            w, h = 0.84 * cell, 0.6 * cell
            coll = PatchCollection([Rectangle((xy[i][0] - w / 2, xy[i][1] - h / 2), w, h)
                                    for i in sel], facecolors=colors, edgecolors="black",
                                   linewidths=0.6, zorder=3)
            ax.add_collection(coll)
        coll.set_gid(f"{level}-{role}")
        n_dev = counts[role]
        if n_dev or role == "unused":
            label = f"{ROLE_LABEL[role]}: {n_dev} device{'s' * (n_dev != 1)}"
            if level != "device":
                label += f" in {len(sel)} {level}{'s' * (len(sel) != 1)}"
            handles.append(Line2D([], [], marker="o" if level == "device" else "s",
                                  linestyle="none", markersize=10, markerfacecolor=base,
                                  markeredgecolor="black", label=label))
    for it in items:
        role, _, text = info[it]
        if level == "device":
            if text:
                ax.text(xy[it][0], xy[it][1], text, ha="center", va="center", zorder=4,
                        fontsize=6.5 if len(text) <= 3 else 5, linespacing=1.0)
            continue
        devs = members[it]
        used = sum(d in roles for d in devs)
        lines = [it] + ([text] if text else [])
        if used and used < len(devs):
            lines.append(f"{used}/{len(devs)} used")
        ax.text(xy[it][0], xy[it][1], "\n".join(lines), ha="center", va="center", zorder=4,
                fontsize=6.5 if cols <= 12 else 5.5, linespacing=1.1)

    h0, _ = ax.get_legend_handles_labels()
    handles = h0 + handles
    handles.append(Line2D([], [], linestyle="none",
                          label="odd stages lighter; S = stage of both phases,\n"
                                "P = prefill stage, D = decode stage"
                                + (", r = replica" if many_replicas else "")))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              framealpha=0.9)
    xs = [p[0] for p in xy.values()]
    ys = [p[1] for p in xy.values()]
    pad = 1.5 if level == "device" else 0.6
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(min(ys) - pad, max(ys) + pad * (1.6 if nets else 1))
    ax.set_aspect("equal", adjustable="box")
    grouped = ("" if level == "device" else
               f"\none box per {level} ({max(len(m) for m in members.values())} devices), "
               f"with its edges to the networks it joins")
    replicas = ("" if not many_replicas else
                f"; replicas: prefill {n_reps['prefill']}, decode {n_reps['decode']}")
    fig.suptitle(f"Topology {topo.name}: {len(devices)} devices, placement by phase and stage"
                 f"{replicas}\n{_title(plan)}{grouped}", fontsize=10)
    return fig


def topology(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``topology.png`` and ``topology.svg``; return their paths."""
    return _write({"topology": _render(_topology_figure(plan))}, out_dir)


# ----------------------------------------------------------------------------- pareto

PARETO_KEYS = ("ttft_ms", "tpot_ms", "devices")


def _check_rows(rows: Any) -> list[dict]:
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
    rows = _check_rows(rows)
    # Sorted by the objectives, a row can only be dominated by one before it.
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i][k] for k in PARETO_KEYS))
    front: list[int] = []
    for i in order:
        if not any(_dominates(rows[j], rows[i]) for j in front):
            front.append(i)
    keep = set(front)
    return [r for i, r in enumerate(rows) if i in keep]


def _front_2d(rows: list[dict]) -> list[dict]:
    """The (TTFT, TPOT) staircase: rows not beaten on both latencies, by TTFT."""
    best = math.inf
    out = []
    for r in sorted(rows, key=lambda r: (r["ttft_ms"], r["tpot_ms"])):
        if r["tpot_ms"] < best:
            out.append(r)
            best = r["tpot_ms"]
    return out


def _pareto_figure(rows: list[dict], title: str = "") -> Figure:
    rows = _check_rows(rows)
    if not rows:
        raise InputError("pareto: no rows to chart")
    front = pareto_front(rows)
    stair = _front_2d(front)
    fig = _figure(10, 7)
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
                 + (f"\n{title}" if title else ""), fontsize=11)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    names = []
    for r in front:
        lab = r.get("label")
        txt = f"{lab} ({r['devices']:g} dev)" if lab else f"{r['devices']:g} dev"
        names.append((ax, r["ttft_ms"], r["tpot_ms"], txt, "black", False))
    _place_labels(fig, names)
    return fig


def pareto(rows: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """Write ``pareto.png`` and ``pareto.svg`` (TPOT against TTFT); return their paths.

    ``rows`` are mappings with ``ttft_ms``, ``tpot_ms``, ``devices`` and optional ``label``.
    """
    return _write({"pareto": _render(_pareto_figure(rows, title))}, out_dir)


# ----------------------------------------------------------------------------- all


def chart_all(plan: Plan | dict | str | Path, out_dir: str | Path = "charts") -> list[Path]:
    """Write the timeline, roofline and topology charts of a plan (PNG and SVG each).

    Everything is rendered before the first file is written: bad input writes nothing.
    """
    plan = Plan.load(plan)
    _check_out_dir(out_dir)
    ctx = _context(plan)
    files = {
        "timeline": _render(_timeline_figure(plan)),
        "roofline": _render(_roofline_figure(plan, _ctx=ctx)),
        "topology": _render(_topology_figure(plan, _ctx=ctx)),
    }
    return _write(files, out_dir)
