"""The topology chart: the topology graph with the plan's placement coloured by phase and
stage (devices grouped by node, or by fast domain, when there are too many to draw)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from autoplan.plan_schema import Plan
from autoplan.render.context import PHASES, chart_context, title
from autoplan.render.figure import new_figure, write_figure
from autoplan.render.labels import plain

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

ROLE_COLOR = {"prefill": "#1f77b4", "decode": "#ff7f0e", "both": "#9467bd",
              "unused": "#d9d9d9"}
ROLE_LABEL = {"prefill": "prefill", "decode": "decode", "both": "prefill & decode",
              "unused": "unused"}
SWITCH_COLOR = "#7f7f7f"
# Above this many devices the topology chart draws one vertex per node, not per device.
MAX_DEVICES_DRAWN = 64
# Above this many nodes it draws one vertex per fast domain instead.
MAX_GROUPS_DRAWN = 160


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
        phase = plan.phase(ph)
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
        for r, groups in enumerate(_replica_devices(plan.phase(ph))):
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


def figure(plan: Plan | dict | str | Path, *, ctx=None) -> Figure:
    """The topology Figure: devices (or, on big topologies, nodes or fast domains) coloured
    by the phase they serve, odd stages lighter, labelled with their stage indices.

    Each role's vertices are one collection with gid ``"<level>-<role>"`` (level
    ``device``, ``node`` or ``fast domain``); legend labels carry the devices per role.
    """
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    plan = Plan.load(plan)
    _, topo = ctx or chart_context(plan)
    roles = device_roles(plan)
    reps = device_replicas(plan)
    n_reps = {ph: len(_replica_devices(plan.phase(ph))) for ph in PHASES}
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
    fig = new_figure(min(26.0, max(10.0, per_col * cols + 4.5)),
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
            ax.text(xy[n][0], xy[n][1] + 0.15, plain(g.nodes[n]["kind"]), ha="center", va="bottom",
                    fontsize=6, color="#555555", zorder=4)
    if nets:
        ax.scatter([xy[n][0] for n in nets], [xy[n][1] for n in nets], marker="s", s=160,
                   color="#444444", zorder=2, label="network switch")
        for n in nets:
            bw = next(iter(g.edges(n, data=True)))[2]["bandwidth_bytes_per_s"]
            ax.text(xy[n][0], xy[n][1] + 0.12 * cell, f"{n.removeprefix('net.')}\n"
                    f"{plain(g.nodes[n]['kind'])}, {bw / 1e9:.3g} GB/s per device", ha="center",
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
    fig.suptitle(f"Topology {plain(topo.name)}: {len(devices)} devices, placement by phase and stage"
                 f"{replicas}\n{title(plan)}{grouped}", fontsize=10)
    return fig


def chart(plan: Plan | dict | str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``topology.png`` and ``topology.svg``; return their paths."""
    return write_figure("topology", figure(plan), out_dir)
