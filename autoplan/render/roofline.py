"""The roofline chart: per device kind of the plan, its roofline (peak FLOP/s of the plan's
GEMM format, fastest memory tier's bandwidth, ridge point marked) with the plan's
operators as points, priced by the cost model (:func:`operator_points`)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from autoplan.plan_schema import Plan
from autoplan.render.context import PHASES, chart_context, title
from autoplan.render.figure import freeze_layout, new_figure, write_figure
from autoplan.render.labels import place_labels, plain

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from autoplan.graphs.topology import Topology
    from autoplan.inputs.model import ModelSpec

PHASE_COLOR = {"prefill": "#1f77b4", "decode": "#ff7f0e"}
PHASE_MARKER = {"prefill": "o", "decode": "^"}
GEMM_KINDS = ("gemm", "qkv", "moe_gemm")


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


def rooflines(plan: Plan | dict | str | Path,
              ctx: tuple[ModelSpec, Topology] | None = None) -> dict[str, Roofline]:
    """The roofline of each device kind the plan uses, in stage order, with the ceilings
    the cost model prices a large GEMM against (``ctx``: the plan's checked model and
    topology, when the caller has them)."""
    from autoplan.cost.evaluate import workload_of
    from autoplan.cost.kernel_ops import gemm_ceiling
    from autoplan.cost.roofline import compute_efficiency

    plan = Plan.load(plan)
    model, topo = ctx or chart_context(plan)
    precision = workload_of(plan).precision
    out: dict[str, Roofline] = {}
    for ph in PHASES:
        for s in plan.phase(ph).stages:
            if s.device_kind in out:
                continue
            k = topo.kinds[s.device_kind]
            peak, ran_in = k.peak_flops(precision.weight)
            cal = topo.calibration(s.device_kind)
            # The engine's measured GEMM ceilings where it has kernel data, else the
            # roofline calibration's.
            measured = gemm_ceiling(k, model, precision.weight)
            eff_c, eff_m = measured or (compute_efficiency(cal, ran_in), cal.memory_efficiency)
            out[s.device_kind] = Roofline(
                s.device_kind, peak, ran_in, k.tiers_fastest_first()[0].bandwidth_bytes_per_s,
                eff_c, eff_m, k.peak_flops(precision.activation)[0])
    return out


def _op_kinds(model: ModelSpec) -> dict[str, str]:
    from autoplan.graphs.model_graph import head_ops, layer_ops, tail_ops

    ops = list(head_ops(model)) + list(tail_ops(model))
    for lk in {model.layer_kind(i) for i in range(model.num_layers)}:
        ops += list(layer_ops(model, lk))
    return {o.name: o.kind for o in ops}


def stage_breakdowns(plan: Plan, model: ModelSpec, topo: Topology):
    """Yield (phase, stage, StageCost with per-operator breakdown), as ``evaluate`` prices."""
    from autoplan.cost.evaluate import phase_cost, placements, workload_of

    work = workload_of(plan)
    for ph in PHASES:
        stages = placements(plan.phase(ph))
        cost = phase_cost(model, topo, work, plan.placement, ph, stages, breakdown=True)
        for st, sc in zip(stages, cost.stages):
            yield ph, st, sc


def operator_points(plan: Plan | dict | str | Path, *, ctx=None) -> list[OpPoint]:
    """The plan's operators on the roofline: per phase, device kind and operator, the
    FLOPs, bytes and time summed over the phase's stages of that kind (per device, as the
    cost model prices one TP rank), as (phase, kind, op, FLOP/byte, achieved FLOP/s).
    Operators without FLOPs (embedding gathers) have no place on a roofline and are left
    out. ``ctx``: the plan's (model, topology) when already loaded."""
    plan = Plan.load(plan)
    model, topo = ctx or chart_context(plan)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for ph, st, cost in stage_breakdowns(plan, model, topo):
        for name, d in cost.ops.items():
            a = acc[(ph, st.kind, name)]
            a[0] += d["flops"]
            a[1] += d["bytes"]
            a[2] += d["time_s"]
    kinds = _op_kinds(model)
    return [OpPoint(ph, kind, op, f / b, f / t, kinds.get(op, ""))
            for (ph, kind, op), (f, b, t) in acc.items() if f > 0 and b > 0 and t > 0]


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


def figure(plan: Plan | dict | str | Path, *, ctx=None) -> Figure:
    """The roofline Figure: one log-log panel per device kind, the operators as points.
    ``ctx``: the plan's (model, topology) when already loaded."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    plan = Plan.load(plan)
    ctx = ctx or chart_context(plan)
    roofs = rooflines(plan, ctx)
    points = operator_points(plan, ctx=ctx)
    n = len(roofs)
    fig = new_figure(7.5 * n if n > 1 else 10, 7)
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
        ax.set_title(f"{plain(kind)} ({plan.inputs.dtype} GEMMs)", fontsize=10)
        ax.grid(True, which="major", color="#dddddd", linewidth=0.5)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + [Line2D([], [], linestyle="none", label="bold names: GEMMs")],
                  labels + ["bold names: GEMMs"], loc="lower right", fontsize=7,
                  framealpha=0.9)
    fig.suptitle(f"Roofline: the plan's operators, per device\n{title(plan)}", fontsize=11)
    # Lay the axes out, freeze them, then place the names where they overlap least.
    freeze_layout(fig)
    place_labels(fig, op_labels)
    return fig


def chart(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``roofline.png`` and ``roofline.svg``; return their paths."""
    return write_figure("roofline", figure(plan), out_dir)
