"""``autoplan sweep CASES.yaml``: the cases file, one CSV and chart, the same rows on the
local process pool and on a local Ray instance; pareto runs on the same engine."""

from __future__ import annotations

import csv
import io
import json

import pytest

from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.sweep.cases import Cases, load_cases, sweep_cases

CASES = """\
isl: 512
osl: 64
time_limit_s: 10
models: [meta-llama/Llama-3.1-8B]
topologies: [h100-sxm-x1, {topology: h100-sxm-x8}]
slos: [{}, {tpot_ms: 1}]
engines: [vllm, none]
"""


@pytest.fixture
def cases_file(tmp_path):
    p = tmp_path / "cases.yaml"
    p.write_text(CASES)
    return p


def _figures(rows):
    keys = ("model", "topology", "engine", "ttft_slo_ms", "tpot_slo_ms", "status",
            "placement", "ttft_ms", "tpot_ms", "devices")
    return [{k: r.get(k) for k in keys} for r in rows]


def test_cases_are_every_combination_in_file_order(cases_file):
    c = load_cases(cases_file)
    cases = c.cases()
    assert len(cases) == 1 * 2 * 2 * 2
    assert [(x["topology"], x["tpot_slo_ms"], x["engine"]) for x in cases[:4]] == [
        ("h100-sxm-x1", None, "vllm"), ("h100-sxm-x1", None, None),
        ("h100-sxm-x1", 1.0, "vllm"), ("h100-sxm-x1", 1.0, None)]
    assert all(x["isl"] == 512 and x["osl"] == 64 for x in cases)


@pytest.mark.parametrize("text, words", [
    ("models: [m]\n", "topologies"),
    ("models: [m]\ntopologies: [t]\nengines: [tgi]\n", "engines"),
    ("models: [m]\ntopologies: [t]\nslos: [{ttft: 5}]\n", "ttft"),
    ("models: [m]\ntopologies: [t]\nfrobnicate: 1\n", "frobnicate"),
    ("- a\n", "mapping"),
    ("models: [m\n", "YAML"),
])
def test_a_bad_cases_file_is_one_line_exit_2(tmp_path, capsys, text, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=words):
        load_cases(p)
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoplan: error:")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, words", [
    ("models: [zzz/none]\ntopologies: [h100-sxm-x1]\n", "unknown model 'zzz/none'"),
    ("models: [meta-llama/Llama-3.1-8B]\ntopologies: [no-such-topology]\n", "no-such-topology"),
    ("models: [\"a\\nb\"]\ntopologies: [h100-sxm-x1]\n", "control characters"),
    ("models: [meta-llama/Llama-3.1-8B]\ntopologies: [{topology: \"x\\r\"}]\n",
     "control characters"),
])
def test_a_case_axis_that_does_not_load_is_one_line_before_any_case_runs(tmp_path, capsys,
                                                                          text, words):
    p = tmp_path / "cases.yaml"
    p.write_text(text)
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoplan: error:") and words in err, err
    assert not (tmp_path / "o").exists()


def test_a_sweep_that_solves_no_case_exits_3_with_each_reason_written(tmp_path, capsys):
    p = tmp_path / "cases.yaml"
    p.write_text("models: [meta-llama/Llama-3.1-405B]\ntopologies: [h100-sxm-x1]\n"
                 "time_limit_s: 10\n")
    assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autoplan: error: no case of the sweep was solved (1 infeasible")
    with open(tmp_path / "o" / "sweep.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "infeasible" and "memory" in row["note"]


@pytest.mark.parametrize("mode, name", [("slo", "pareto.csv"),
                                        ("throughput", "pareto-throughput.csv")])
def test_a_front_that_meets_no_target_exits_3_with_each_reason_written(mode, name, tmp_path,
                                                                      capsys):
    # 405B in bf16 on one 80 GB GPU: no point fits
    rc = main(["pareto", "--mode", mode, "--model", "meta-llama/Llama-3.1-405B", "--topology",
               "h100-sxm-x1", "--tpot-slo-ms", "10,20", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and err[-1].startswith("autoplan: error: no ") and "2 infeasible" in err[-1]
    with open(tmp_path / "o" / name) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] == "infeasible" for r in rows)


def test_csv_text_cells_never_read_as_spreadsheet_formulas():
    from autoplan.sweep.output import rows_csv

    text = rows_csv([{"a": "=HYPERLINK(\"x\")", "b": "+1", "c": "@SUM(A1)", "d": "-2+3",
                      "e": -1.5, "f": "org/model"}], "abcdef")
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row == {"a": "'=HYPERLINK(\"x\")", "b": "'+1", "c": "'@SUM(A1)", "d": "'-2+3",
                   "e": "-1.5", "f": "org/model"}


def test_sweep_writes_one_csv_and_the_chart(cases_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(cases_file), "--out", str(out), "--workers", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8
    assert {r["status"] for r in rows[::4]} == {"optimal"}
    assert all(r["status"] == "infeasible" for r in rows if r["tpot_slo_ms"] == 1.0
               and r["topology"] == "h100-sxm-x1")
    with open(out / "sweep.csv") as f:
        got = list(csv.DictReader(f))
    assert [r["model"] for r in got] == [r["model"] for r in rows]
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep.svg").exists()
    # the same rows whichever local backend ran them
    serial = sweep_cases(Cases.model_validate_json(json.dumps(_load(cases_file))), workers=1)
    assert _figures(serial) == _figures(rows)


def _load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_ray_sweep_equals_the_process_pool(cases_file):
    ray = pytest.importorskip("ray")
    cases = load_cases(cases_file)
    pool = sweep_cases(cases, workers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = sweep_cases(cases, ray_address="local")
    finally:
        ray.shutdown()
    assert _figures(on_ray) == _figures(pool)
    assert [r["note"] for r in on_ray] == [r["note"] for r in pool]


def test_sweep_ray_cli_on_a_local_instance(cases_file, tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "r"
    assert main(["sweep", str(cases_file), "--ray", "local", "--workers", "2",
                 "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and (out / "sweep.csv").exists()


def test_missing_ray_extra_is_one_line(cases_file, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["sweep", str(cases_file), "--ray", "local", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == ("autoplan: error: --ray needs the optional extra: pip install "
                   "'autoplan[ray]' (ray>=2.40)\n")


def test_pareto_runs_on_the_sweep_engine(tmp_path, monkeypatch):
    from autoplan.sweep import pareto

    seen = []
    real = pareto.run

    def spy(fn, points, **kw):
        seen.append((fn, len(points)))
        return real(fn, points, **kw)

    monkeypatch.setattr(pareto, "run", spy)
    assert main(["pareto", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
                 "--tpot-slo-ms", "10,20", "--workers", "1", "--time-limit-s", "5",
                 "--out", str(tmp_path / "p"), "--json"]) == 0
    assert seen == [(pareto._one, 2)]


# ------------------------------------------------------------------ pareto --mode throughput

M8 = "meta-llama/Llama-3.1-8B"
TBASE = {"model": M8, "topology": "h100-sxm-x8", "isl": 4000, "osl": 500,
         "ttft_slo_ms": 2000.0, "time_limit_s": 10}
TPOTS = [1.5, 3.0, 5.0, 10.0, 40.0]
BATCHES = [1, 16, 64]
THROUGHPUT = ["pareto", "--mode", "throughput", "--model", M8, "--topology", "h100-sxm-x8",
              "--isl", "4000", "--osl", "500", "--ttft-slo-ms", "2000", "--time-limit-s", "10"]


def _beats(a: dict, b: dict) -> bool:
    x, y = "tokens_per_s_per_user", "tokens_per_s_per_device"
    return a[x] >= b[x] and a[y] >= b[y] and (a[x] > b[x] or a[y] > b[y])


@pytest.fixture(scope="module")
def throughput_rows():
    from autoplan.sweep import throughput

    return throughput.sweep(TBASE, TPOTS, BATCHES, workers=2)


def test_throughput_front_is_the_non_dominated_set(throughput_rows):
    ok = [r for r in throughput_rows if r["status"] not in ("infeasible", "error")]
    assert len(ok) >= 4 and any(r["status"] == "infeasible" for r in throughput_rows)
    front = [r for r in ok if r["on_front"]]
    assert front
    for r in ok:  # on the front exactly when no solved point beats it on both rates
        assert r["on_front"] == (not any(_beats(o, r) for o in ok if o is not r))
    assert not any(r["on_front"] for r in throughput_rows if r not in ok)
    # the front trades one rate for the other: by speed per user, throughput per GPU falls
    by_user = sorted(front, key=lambda r: r["tokens_per_s_per_user"])
    per_gpu = [r["tokens_per_s_per_device"] for r in by_user]
    assert per_gpu == sorted(per_gpu, reverse=True)


def test_throughput_points_are_distinct_valid_plans_equal_to_a_replan(throughput_rows):
    import autoplan
    from autoplan.search.planner import plan
    from autoplan.sweep.throughput import layout

    ok = [r for r in throughput_rows if r["status"] not in ("infeasible", "error")]
    seen = set()
    for r in ok:
        p = r["plan"]
        assert autoplan.validate(p).ok
        assert p.inputs.objective == "throughput" and p.ttft_ms <= 2000
        assert (r["layout"], r["devices"], r["tokens_per_s_per_device"]) == (
            layout(p), p.devices, p.tokens_per_s_per_device)
        assert r["tokens_per_s_per_user"] == pytest.approx(1000 / r["tpot_ms"])
        key = (r["layout"], round(r["ttft_ms"], 6), round(r["tpot_ms"], 6))
        assert key not in seen  # one row per distinct plan
        seen.add(key)
        targets = [float(t) for t in r["targets"].split(";")]
        assert targets[0] == r["tpot_slo_ms"] and targets == sorted(targets)
        for t in targets:  # every target that reached it: the same plan, re-planned alone
            q = plan(**TBASE, objective="throughput", tpot_slo_ms=t, batch=r["batch"])
            assert q.tpot_ms <= t
            assert (layout(q), q.devices, q.ttft_ms, q.tpot_ms, q.tokens_per_s_per_device) == (
                r["layout"], r["devices"], r["ttft_ms"], r["tpot_ms"],
                r["tokens_per_s_per_device"])


def test_every_target_is_one_row_and_unmet_targets_say_why(throughput_rows):
    from autoplan.errors import InfeasibleError
    from autoplan.search.planner import plan

    reached = sorted((r["batch"], float(t)) for r in throughput_rows
                     for t in r["targets"].split(";"))
    assert reached == sorted((b, t) for b in BATCHES for t in TPOTS)
    for r in throughput_rows:
        if r["status"] != "infeasible":
            continue
        assert r["reason"] and r["note"] and "\n" not in r["note"]
        with pytest.raises(InfeasibleError) as e:
            plan(**TBASE, objective="throughput", tpot_slo_ms=r["tpot_slo_ms"],
                 batch=r["batch"])
        assert (e.value.reason, " ".join(str(e.value).split())) == (r["reason"], r["note"])


@pytest.mark.parametrize("seed", range(20))
def test_front_max_keeps_exactly_the_undominated(seed):
    import random

    from autoplan.sweep.throughput import front_max

    rng = random.Random(seed)
    grid = rng.choice([3, 40])  # small grids force ties and equal points
    rows = [{"tokens_per_s_per_user": float(rng.randint(1, grid)),
             "tokens_per_s_per_device": float(rng.randint(1, grid)), "i": i}
            for i in range(rng.randint(1, 50))]
    front = front_max(rows)
    assert front and [r["i"] for r in front] == sorted(r["i"] for r in front)
    for r in rows:
        dominated = any(_beats(o, r) for o in rows)
        assert (r in front) == (not dominated)
        if dominated:  # what leaves the front is beaten by a point on it
            assert any(_beats(f, r) for f in front)


def test_layout_text_reads_the_plan():
    from autoplan.plan_schema import Plan
    from autoplan.sweep.throughput import layout

    p = Plan.load("tests/golden/llama31-70b-h100x8-batch16-disaggregated.plan.json")
    assert layout(p) == "disagg P:TP4 ×1 / D:TP4 ×1 B=16"
    pp = p.model_copy(update={"placement": "colocated"})
    assert layout(pp) == "coloc TP4 ×1 B=16"
    # more designs of a pool follow, each with its replicas and its own batch
    m = Plan.load("tests/golden/llama31-70b-h200-2node-throughput-mixed.plan.json")
    d = m.more_designs[0]
    assert d.pool == "decode"
    assert layout(m).endswith(f" + D:TP{d.decode.stages[0].tp} ×{d.decode.replicas} "
                              f"B={d.batch}")


def test_layout_names_pipelines_mixed_tp_kinds_and_moe_parallelism():
    from types import SimpleNamespace as NS

    from autoplan.sweep.throughput import layout

    def stage(tp, kind="h200", **moe):
        return NS(tp=tp, device_kind=kind, **moe)

    def plan(placement, pre, dec, batch=32, prefill_batch=None):
        return NS(placement=placement, prefill=NS(stages=pre[0], replicas=pre[1]),
                  decode=NS(stages=dec[0], replicas=dec[1]),
                  inputs=NS(batch=batch, prefill_batch=prefill_batch), more_designs=[])

    p = plan("disaggregated", ([stage(4), stage(2)], 2), ([stage(8), stage(8)], 1), 64, 4)
    assert layout(p) == "disagg P:TP4/2·PP2 ×2 / D:TP8·PP2 ×1 B=64 PB=4"
    moe = stage(1, attention_dp=8, ep=8)
    p = plan("disaggregated", ([stage(8, ep=8)], 1), ([moe], 2))
    assert layout(p) == "disagg P:TP8·EP8 ×1 / D:DP8·TP1·EP8 ×2 B=32"
    p = plan("colocated", ([stage(4, "h100")], 1), ([stage(4, "lpu")], 1))
    assert layout(p) == "coloc P:h100 TP4 ×1 / D:lpu TP4 ×1 B=32"


def test_points_without_batch_equal_a_replan_without_batch():
    """No --batch: the planner's own batch (1 today; its choice once it searches), and a
    re-plan at the target with no batch given reaches the same plan."""
    from autoplan.search.planner import plan
    from autoplan.sweep import throughput

    rows = throughput.sweep(TBASE, [3.0, 10.0], [None], workers=1)
    for r in rows:
        assert r["status"] == "optimal"
        for t in r["targets"].split(";"):
            q = plan(**TBASE, objective="throughput", tpot_slo_ms=float(t))
            assert (throughput.layout(q), q.tokens_per_s_per_device, q.tpot_ms) == (
                r["layout"], r["tokens_per_s_per_device"], r["tpot_ms"])
            assert r["batch"] == q.inputs.batch


def test_default_grid_runs_from_the_fastest_tpot(tmp_path, capsys):
    from autoplan.search.planner import plan
    from autoplan.sweep.throughput import grid

    assert grid(2.0, None, 3) == [2.0, 6.32, 20.0]
    assert grid(2.0, 20.05, 3)[-1] == 20.0 and grid(2.0, 50.0, 1) == [2.0]
    assert grid(2.0, 2.0, 5) == [2.0]
    fastest = plan(**TBASE).tpot_ms  # the best latency plan
    out = tmp_path / "t"
    assert main([*THROUGHPUT, "--points", "4", "--workers", "2", "--out", str(out),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    targets = sorted(float(t) for r in rows for t in r["targets"].split(";"))
    assert len(targets) == 4 and fastest <= targets[0] < fastest * 1.01
    assert targets[-1] == pytest.approx(10 * fastest, rel=0.01)
    assert rows[0]["status"] == "optimal"  # the fastest plan meets the first target
    with open(out / "pareto-throughput.csv") as f:
        got = list(csv.DictReader(f))
    assert [r["layout"] for r in got] == [r["layout"] for r in rows]
    assert [r["on_front"] for r in got] == [str(r["on_front"]) for r in rows]
    assert (out / "pareto-throughput.png").stat().st_size > 1000


def test_throughput_csv_is_deterministic_and_the_table_names_reasons(tmp_path, capsys,
                                                                    monkeypatch):
    # wide enough that no layout label wraps inside its cell
    monkeypatch.setenv("COLUMNS", "200")
    args = [*THROUGHPUT, "--tpot-slo-ms", "1.5,3,10", "--batch", "1,16"]
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "b")]) == 0
    a, b = ((tmp_path / d / "pareto-throughput.csv").read_bytes() for d in "ab")
    assert a == b
    rows = list(csv.DictReader(io.StringIO(a.decode())))
    bad = [r for r in rows if r["status"] == "infeasible"]
    assert bad and all(r["reason"] == "slo" and "TPOT" in r["note"] for r in bad)
    assert "infeasible (slo)" in table and "B=1, TPOT <= 1.5 ms: infeasible (slo)" in table
    for r in rows:
        if r["on_front"] == "True":
            assert r["layout"] in table


def test_batch_reaches_the_planner_only_when_given(tmp_path, monkeypatch, capsys):
    from autoplan.search import planner

    calls = []
    real = planner.plan

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(planner, "plan", spy)
    common = [*THROUGHPUT, "--tpot-slo-ms", "5,10", "--workers", "1", "--json"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert len(calls) == 2 and not any("batch" in k or "prefill_batch" in k for k in calls)
    calls.clear()
    assert main([*common, "--batch", "16", "--prefill-batch", "2",
                 "--out", str(tmp_path / "b")]) == 0
    assert [(k["batch"], k["prefill_batch"], k["objective"]) for k in calls] == [
        (16, 2, "throughput")] * 2


def test_throughput_runs_on_the_sweep_engine(tmp_path, monkeypatch):
    from autoplan.sweep import throughput

    seen = []
    real = throughput.run

    def spy(fn, points, **kw):
        seen.append((fn, len(points)))
        return real(fn, points, **kw)

    monkeypatch.setattr(throughput, "run", spy)
    assert main([*THROUGHPUT, "--tpot-slo-ms", "5,10,20", "--workers", "1",
                 "--out", str(tmp_path / "p"), "--json"]) == 0
    assert seen == [(throughput.solve_point, 3)]


@pytest.mark.parametrize("args, words", [
    (["--ttft-slo-ms", "500,2000"], "one value with --mode throughput"),
    (["--max-devices", "2,8"], "one value with --mode throughput"),
    (["--tpot-slo-ms", "5", "--points", "3"], "not both"),
    (["--points", "0"], "--points"),
    (["--tpot-max-ms", "-1"], "positive"),
    (["--batch", "16,x"], "not a number"),
    (["--mode", "fast"], "fast"),
])
def test_bad_throughput_flags_are_one_line_exit_2(tmp_path, capsys, args, words):
    out = tmp_path / "o"
    assert main([*THROUGHPUT, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoplan: error:") and words in err
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--points", "3"], "--mode throughput"),
    (["--batch", "1,16"], "one value with --mode slo"),
])
def test_throughput_flags_are_refused_in_slo_mode(tmp_path, capsys, args, words):
    out = tmp_path / "o"
    assert main(["pareto", "--model", M8, "--topology", "h100-sxm-x8", "--tpot-slo-ms", "5",
                 *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and not out.exists()


def test_unmeetable_ttft_for_the_default_grid_exits_3_writing_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    args = [a if a != "2000" else "0.01" for a in THROUGHPUT]
    assert main([*args, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TTFT" in err and not out.exists()
    assert main([*THROUGHPUT, "--tpot-max-ms", "0.5", "--out", str(out)]) == 3
    assert "below the fastest TPOT" in capsys.readouterr().err and not out.exists()


def test_throughput_chart_names_only_the_front_without_overlap(throughput_rows, tmp_path):
    from autoplan.render.pareto import throughput_chart, throughput_figure
    from autoplan.sweep.throughput import solved

    rows = [{**r, "label": r["layout"]} for r in throughput_rows if solved(r)]
    fig = throughput_figure(rows, "8B")
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.texts]
    assert sorted(names) == sorted(r["layout"] for r in rows if r["on_front"])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "labels overlap"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("tokens/s per user (1000 / TPOT)",
                                                  "tokens/s per GPU")
    paths = throughput_chart(rows, tmp_path / "c")
    assert sorted(p.name for p in paths) == ["pareto-throughput.png", "pareto-throughput.svg"]
    with pytest.raises(InputError):
        throughput_chart([{**rows[0], "on_front": None}], tmp_path / "bad")
    with pytest.raises(InputError):
        throughput_chart([], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_throughput_csv_is_the_same_on_ray(tmp_path):
    ray = pytest.importorskip("ray")
    from autoplan.sweep import throughput

    pool = throughput.to_csv(throughput.sweep(TBASE, [3.0, 10.0], [1, 16], workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = throughput.to_csv(throughput.sweep(TBASE, [3.0, 10.0], [1, 16],
                                                    ray_address="local"))
    finally:
        ray.shutdown()
    assert on_ray == pool


def test_ctrl_c_in_a_throughput_sweep_exits_130_and_writes_nothing(tmp_path, monkeypatch,
                                                                   capsys):
    from autoplan.sweep import throughput

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(throughput, "solve_point", interrupted)
    out = tmp_path / "p"
    assert main([*THROUGHPUT, "--tpot-slo-ms", "5,10", "--workers", "1",
                 "--out", str(out)]) == 130
    assert capsys.readouterr().err == "autoplan: interrupted\n" and not out.exists()


def test_throughput_chart_draws_speeds_near_zero(tmp_path):
    """Margins past x = 0 (a slow point beside fast ones) would put 1000 / 0 on the TPOT
    edge: the axis stays above 0 and every point is inside it."""
    from autoplan.render.pareto import throughput_figure

    rows = [{"tokens_per_s_per_user": u, "tokens_per_s_per_device": g, "devices": 8,
             "on_front": True, "label": f"p{u}"} for u, g in ((1.0, 900.0), (25.0, 40.0))]
    ax = throughput_figure(rows).axes[0]
    left, right = ax.get_xlim()
    assert 0 < left < 1.0 and right > 25.0
