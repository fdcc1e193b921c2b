"""``autoplan sweep CASES.yaml``: the cases file, one CSV and chart, the same rows on the
local process pool and on a local Ray instance; pareto runs on the same engine."""

from __future__ import annotations

import csv
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
