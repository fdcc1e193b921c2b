"""Charts (`autoplan chart`): each file is a valid PNG / SVG of sensible size, and what it
draws follows the plan (stages, micro-batches, operators against the ridge point, devices
per phase, the Pareto front)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.plan_schema import Plan
from autoplan.render.context import chart_context
from autoplan.render.pareto import chart as pareto_chart
from autoplan.render.roofline import figure as roofline_figure
from autoplan.render.roofline import operator_points, rooflines, stage_breakdowns
from autoplan.render.timeline import chart as timeline_chart
from autoplan.render.timeline import figure as timeline_figure
from autoplan.render.timeline import micro_batches, schedule
from autoplan.render.topology import ROLE_LABEL
from autoplan.render.topology import figure as topology_figure
from autoplan.search.front import pareto_front

GOLDEN = Path(__file__).resolve().parent / "golden"
LPU = GOLDEN / "llama31-70b-fp8-h100x8-lpu576-disaggregated.plan.json"
LATENCY = GOLDEN / "llama31-70b-h100x8-latency.plan.json"
DEEPSEEK = GOLDEN / "deepseek-v3-h100-4node.plan.json"
BATCH16 = GOLDEN / "llama31-70b-h100x8-batch16-disaggregated.plan.json"
REPLICATED = GOLDEN / "llama31-8b-h100-4node-devices.plan.json"
ALL_PLANS = sorted(GOLDEN.glob("*.plan.json"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEMS = ("timeline", "roofline", "topology")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_png(path: Path) -> None:
    w, h = png_size(path)
    assert 400 <= w < 5000 and 300 <= h < 5000, (path.name, w, h)


def check_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 50  # something was drawn
    return root


def svg_text(root: ET.Element) -> str:
    return " ".join("".join(e.itertext()) for e in root.iter() if e.tag.endswith("text"))


@pytest.fixture(scope="module")
def lpu_charts(tmp_path_factory) -> tuple[Path, list[Path]]:
    """`autoplan chart` of the LPU plan: the output directory and the paths it printed."""
    out = tmp_path_factory.mktemp("lpu") / "charts"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["chart", str(LPU), "--out", str(out)]) == 0
    return out, [Path(line) for line in buf.getvalue().splitlines()]


# ----------------------------------------------------------------------------- files


def test_chart_all_writes_valid_png_and_svg(lpu_charts):
    out, paths = lpu_charts
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in STEMS
                                                   for e in ("png", "svg"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temps
    for p in paths:
        assert p.parent == out and p.stat().st_size > 1000
        if p.suffix == ".png":
            check_png(p)
        else:
            check_svg(p)


def test_svg_text_names_the_plan(lpu_charts):
    out, _ = lpu_charts
    plan = Plan.load(LPU)
    timeline = svg_text(check_svg(out / "timeline.svg"))
    for s in plan.decode.stages:
        assert f"S{s.index}" in timeline and f"L{s.layers[0]}-{s.layers[1] - 1}" in timeline
    assert "bubble" in timeline
    roofline = svg_text(check_svg(out / "roofline.svg"))
    assert "ridge point" in roofline and "h100-sxm" in roofline and "lpu" in roofline
    topology = svg_text(check_svg(out / "topology.svg"))
    assert "decode: " in topology and "devices in" in topology
    assert f"D{plan.decode.stages[-1].index}" in topology and "P0" in topology


# ----------------------------------------------------------------------------- timeline


@pytest.mark.parametrize("path", ALL_PLANS, ids=lambda p: p.name.removesuffix(".plan.json"))
def test_timeline_has_one_row_per_stage(path):
    plan = Plan.load(path)
    fig = timeline_figure(plan)
    axes = fig.axes
    assert len(axes) == 2
    for ax, ph in zip(axes, ("prefill", "decode")):
        phase = getattr(plan, ph)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert len(labels) == len(phase.stages)
        for lab, s in zip(labels, phase.stages):
            assert lab.startswith(f"S{s.index} ") and f"TP{s.tp}" in lab
            assert s.device_kind in lab
        sch = schedule(plan, ph)
        # Per stage: one idle background bar and one bar per micro-batch.
        bars = [len(c.get_paths()) for c in ax.collections]
        assert bars == [1, sch.micro_batches] * len(phase.stages)
        title = ax.get_title(loc="left")
        assert title.startswith(f"{ph}: {len(phase.stages)} stage")
        assert f"bubble {sch.bubble_fraction:.1%}" in title


def test_schedule_single_microbatch_is_the_plans_phase_time():
    plan = Plan.load(LPU)
    for ph in ("prefill", "decode"):
        sch = schedule(plan, ph, m=1)
        assert sch.makespan_ms == pytest.approx(getattr(plan, ph).time_ms, rel=1e-12)
    # One token through the LPU stages at batch 1: each stage idles all but its share.
    n = len(plan.decode.stages)
    assert n > 1 and micro_batches(plan, "decode") == 1
    assert schedule(plan, "decode").bubble_fraction >= 1 - 1 / n - 1e-9


def test_schedule_is_gpipe():
    plan = Plan.load(LPU)
    n = len(plan.decode.stages)
    stages = [s.model_copy(update={"time_ms": 2.0}) for s in plan.decode.stages]
    even = plan.model_copy(update={"decode": plan.decode.model_copy(
        update={"stages": stages, "time_ms": 2.0 * n})})
    for m in (1, 4, n):
        sch = schedule(even, "decode", m=m)
        assert sch.makespan_ms == pytest.approx(2.0 / m * (m + n - 1))
        assert sch.bubble_fraction == pytest.approx((n - 1) / (m + n - 1))
        # Micro-batch k enters stage i once it left stage i-1 and stage i is free.
        assert sch.start[3][m - 1] == pytest.approx(2.0 / m * (3 + m - 1))
    assert micro_batches(plan, "prefill") == len(plan.prefill.stages)
    ds = Plan.load(DEEPSEEK)
    assert micro_batches(ds, "prefill") == 2 == len(ds.prefill.stages)


# ----------------------------------------------------------------------------- roofline

GEMM_OPS = {"qkv_proj", "o_proj", "mlp_up", "mlp_down"}


@pytest.mark.parametrize("path", [LATENCY, LPU], ids=["h100x8-bf16", "lpu576-fp8"])
def test_prefill_gemms_right_of_ridge_decode_left(path):
    plan = Plan.load(path)
    roofs = rooflines(plan)
    assert set(roofs) == {s.device_kind for ph in (plan.prefill, plan.decode) for s in ph.stages}
    pts = operator_points(plan)
    seen = {"prefill": set(), "decode": set()}
    for p in pts:
        r = roofs[p.kind]
        assert p.flops_per_s <= r.peak_flops_per_s * (1 + 1e-9)  # under the roof
        assert p.flops_per_s <= p.intensity * r.bandwidth_bytes_per_s * (1 + 1e-9)
        if p.op in GEMM_OPS:
            seen[p.phase].add(p.op)
            if p.phase == "prefill":
                assert p.intensity > r.ridge, p
            else:
                assert p.intensity < r.ridge, p
    assert seen == {"prefill": GEMM_OPS, "decode": GEMM_OPS}
    # The LM head computes logits of the last token only: decode-like even in prefill.
    head = [p for p in pts if p.op == "lm_head" and p.phase == "prefill"]
    assert head and head[0].intensity < roofs[head[0].kind].ridge


def test_roofline_reprices_the_plans_stages():
    plan = Plan.load(LPU)
    model_topo = chart_context(plan)
    got = {"prefill": [], "decode": []}
    for ph, _st, cost in stage_breakdowns(plan, *model_topo):
        got[ph].append(cost.time_s * 1e3)
        assert sum(d["time_s"] for d in cost.ops.values()) + cost.comm_s == pytest.approx(
            cost.time_s)
    for ph, times in got.items():
        assert times == pytest.approx([s.time_ms for s in getattr(plan, ph).stages], rel=1e-6)


def test_roofline_figure_has_a_panel_per_kind_with_the_points():
    plan = Plan.load(LPU)
    fig = roofline_figure(plan)
    axes = fig.axes
    assert [ax.get_title().split()[0] for ax in axes] == ["h100-sxm", "lpu"]
    pts = operator_points(plan)
    for ax in axes:
        kind = ax.get_title().split()[0]
        assert ax.get_xscale() == ax.get_yscale() == "log"
        drawn = sum(len(c.get_offsets()) for c in ax.collections)
        assert drawn == sum(p.kind == kind for p in pts)
        texts = " ".join(t.get_text() for t in ax.texts)
        assert "qkv_proj" in texts and "mlp_down" in texts


# ----------------------------------------------------------------------------- topology


def _offsets_by_gid(fig) -> dict[str, int]:
    out = {}
    for c in fig.axes[0].collections:
        gid = c.get_gid()
        if gid:
            out[gid] = len(c.get_offsets()) if gid.startswith("device-") else len(c.get_paths())
    return out


def _roles(plan) -> dict[str, str]:
    """Device -> prefill / decode / both, from every replica's devices in the plan."""
    used: dict[str, set[str]] = {}
    for ph in ("prefill", "decode"):
        phase = getattr(plan, ph)
        reps = getattr(phase, "replica_devices", None) or [[s.devices for s in phase.stages]]
        for groups in reps:
            for group in groups:
                for d in group:
                    used.setdefault(d, set()).add(ph)
    return {d: "both" if len(p) == 2 else p.pop() for d, p in used.items()}


def _expected_counts(plan, all_devices: int) -> dict[str, int]:
    roles = _roles(plan)
    out = {r: sum(v == r for v in roles.values()) for r in ("prefill", "decode", "both")}
    out["unused"] = all_devices - len(roles)
    return out


@pytest.mark.parametrize("path,devices", [(DEEPSEEK, 32), (BATCH16, 8), (REPLICATED, 32)])
def test_topology_colours_each_device_by_phase(path, devices):
    plan = Plan.load(path)
    expect = _expected_counts(plan, devices)
    if plan.placement == "colocated":
        assert expect["both"] > 0 and expect["prefill"] == expect["decode"] == 0
    else:
        assert expect["prefill"] > 0 and expect["decode"] > 0 and expect["both"] == 0
    fig = topology_figure(plan)
    assert _offsets_by_gid(fig) == {f"device-{r}": n for r, n in expect.items()}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for role, n in expect.items():
        if n:
            assert f"{ROLE_LABEL[role]}: {n} device{'s' * (n != 1)}" in legend
    texts = [t.get_text().split("\n") for t in fig.axes[0].texts]
    labels = {t[0] for t in texts}
    reps = max(plan.prefill.replicas, plan.decode.replicas)
    if reps > 1:  # each device also names its replica
        named = {t[1] for t in texts if len(t) == 2 and re.fullmatch(r"r[0-9,-]+", t[1])}
        assert named == {f"r{r}" for r in range(reps)}
    if plan.placement == "colocated":
        assert {f"S{s.index}" for s in plan.prefill.stages} <= labels
    else:
        assert {f"P{s.index}" for s in plan.prefill.stages} <= labels
        assert {f"D{s.index}" for s in plan.decode.stages} <= labels


def test_topology_groups_big_topologies_by_node():
    plan = Plan.load(LPU)
    roles = _roles(plan)
    expect = _expected_counts(plan, 584)
    node_roles: dict[str, set[str]] = {}
    for d, r in roles.items():
        node_roles.setdefault(d.split(".")[0], set()).add(r)
    nodes = {r: sum(v == {r} for v in node_roles.values()) for r in ("prefill", "decode")}
    assert nodes["prefill"] == 1 and nodes["decode"] >= 54  # 432 LPUs, 8 per node
    unused_nodes = 73 - len(node_roles)
    fig = topology_figure(plan)
    # One box per node: the GPU node (prefill), the LPU nodes of decode stages, the rest.
    assert _offsets_by_gid(fig) == {"node-prefill": 1, "node-decode": nodes["decode"],
                                    "node-both": 0, "node-unused": unused_nodes}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"prefill: {expect['prefill']} devices in 1 node" in legend
    assert f"decode: {expect['decode']} devices in {nodes['decode']} nodes" in legend
    assert f"unused: {expect['unused']} devices in {unused_nodes} nodes" in legend
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "gpu0\nP0" in texts
    stages_named = {line for t in texts for line in t.split("\n") if line.startswith("D")}
    assert stages_named == {f"D{s.index}" for s in plan.decode.stages}


# ----------------------------------------------------------------------------- pareto


def _dominated(r: dict, rows: list[dict]) -> bool:
    keys = ("ttft_ms", "tpot_ms", "devices")
    return any(all(o[k] <= r[k] for k in keys) and any(o[k] < r[k] for k in keys)
               for o in rows if o is not r)


@pytest.mark.parametrize("seed", range(25))
def test_pareto_front_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    grid = rng.choice([4, 50])  # small grids force ties and duplicates
    rows = [{"ttft_ms": rng.randint(1, grid) * 1.5, "tpot_ms": float(rng.randint(1, grid)),
             "devices": rng.choice([1, 2, 4, 8]), "label": str(i)} for i in range(n)]
    front = pareto_front(rows)
    expect = [r for r in rows if not _dominated(r, rows)]
    assert [r["label"] for r in front] == [r["label"] for r in expect]
    assert front and all(not _dominated(r, front) for r in front)


def test_pareto_chart(tmp_path):
    rng = random.Random(7)
    rows = [{"ttft_ms": rng.uniform(20, 400), "tpot_ms": rng.uniform(3, 40),
             "devices": rng.choice([1, 2, 4, 8, 16]), "label": f"c{i}"} for i in range(30)]
    paths = pareto_chart(rows, tmp_path / "p")
    assert sorted(p.name for p in paths) == ["pareto.png", "pareto.svg"]
    check_png(tmp_path / "p" / "pareto.png")
    text = svg_text(check_svg(tmp_path / "p" / "pareto.svg"))
    front = pareto_front(rows)
    assert f"{len(front)} non-dominated" in text
    for r in front:
        assert f"{r['label']} ({r['devices']} dev)" in text
    with pytest.raises(InputError):
        pareto_chart([{"ttft_ms": 1.0, "tpot_ms": "fast", "devices": 1}], tmp_path / "bad")
    with pytest.raises(InputError):
        pareto_chart([], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- CLI


def test_cli_chart_prints_the_written_paths(lpu_charts):
    out, printed = lpu_charts
    assert [p.name for p in printed] == [f"{s}.{e}" for s in STEMS for e in ("png", "svg")]
    assert all(p.is_file() and p.parent == out for p in printed)


def test_one_chart_alone(tmp_path):
    paths = timeline_chart(LATENCY, tmp_path / "a" / "b")  # parents are created
    assert [p.name for p in paths] == ["timeline.png", "timeline.svg"]
    check_png(paths[0])
    check_svg(paths[1])


def test_cli_chart_bad_input_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["chart", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["chart", str(tmp_path / "missing.json"), "--out", str(tmp_path / "a")]) == 2
    # A well-formed plan naming a device the topology lacks.
    data = json.loads(LATENCY.read_text(encoding="utf-8"))
    data["decode"]["stages"][0]["devices"][0] = "node9.d0"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(data), encoding="utf-8")
    assert main(["chart", str(wrong), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "node9.d0" in err
    # The output exists as a file: refused before anything is written.
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["chart", str(LATENCY), "--out", str(blocker)]) == 2
    assert blocker.read_text(encoding="utf-8") == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "file", "wrong.json"]


def test_missing_matplotlib_is_a_one_line_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(InputError, match=r"pip install 'autoplan\[charts\]'"):
        timeline_figure(Plan.load(LATENCY))


def test_importing_autoplan_does_not_import_matplotlib():
    code = ("import sys, autoplan, autoplan.render, autoplan.sweep.pareto, autoplan.cli; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
