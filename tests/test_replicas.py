"""Throughput and devices objectives, replicas, device budgets, Pareto sweeps, Ctrl-C.

The exact optimum of the replica choice is checked against brute force in
test_oracle.py; here: the plans are valid, their figures obey the rate model, and the
objectives relate to each other as they must.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from functools import cache

import pytest
import yaml

from autoplan.cli import main
from autoplan.errors import InfeasibleError
from autoplan.rules.validate import validate
from autoplan.search.front import pareto_front
from autoplan.search.planner import plan

M8 = "meta-llama/Llama-3.1-8B"
SLO = {"ttft_slo_ms": 1000.0, "tpot_slo_ms": 20.0}


@cache
def _plan(**kw):
    return plan(M8, "h100-sxm-x8", isl=2048, osl=256, **kw)


def test_throughput_plan_is_valid_and_replicated():
    p = _plan(batch=8, objective="throughput", **SLO)
    rep = validate(p)
    assert rep.ok, rep.errors
    assert p.status == "optimal" and p.objective_unit == "tokens/s"
    assert p.prefill.replicas * p.prefill.devices + (
        0 if p.placement == "colocated" else p.decode.replicas * p.decode.devices) == p.devices
    assert p.devices <= 8
    assert max(p.prefill.replicas, p.decode.replicas) > 1  # 8B fits one GPU: replicate
    # Deployment rate: the slower phase (and the KV link), tokens = requests * osl.
    assert p.requests_per_s <= min(p.prefill.requests_per_s, p.decode.requests_per_s) * (1 + 1e-12)
    assert p.throughput_tokens_per_s == pytest.approx(p.requests_per_s * 256, rel=1e-12)
    assert p.ttft_ms <= SLO["ttft_slo_ms"] and p.tpot_ms <= SLO["tpot_slo_ms"]
    # The solver's objective is the table (rounded-up) figure: within 1% of the exact one.
    assert p.objective == pytest.approx(p.throughput_tokens_per_s, rel=1e-2)
    assert p.objective <= p.throughput_tokens_per_s * (1 + 1e-9)


def test_throughput_objective_beats_the_latency_plan_on_throughput():
    lat = _plan(batch=8, **SLO)
    thr = _plan(batch=8, objective="throughput", **SLO)
    assert thr.throughput_tokens_per_s >= lat.throughput_tokens_per_s * (1 - 1e-9)
    assert lat.e2e_ms <= thr.e2e_ms * (1 + 1e-9)  # and the latency plan is the faster one


def test_devices_objective_reaches_the_rate_with_the_fewest_devices():
    rate = 12.0
    p = _plan(batch=8, objective="devices", request_rate=rate, **SLO)
    assert validate(p).ok
    assert p.requests_per_s >= rate and p.objective == p.devices
    # One device fewer cannot serve the rate (the budget makes the planner prove it).
    with pytest.raises(InfeasibleError) as e:
        _plan(batch=8, objective="devices", request_rate=rate, max_devices=p.devices - 1, **SLO)
    assert "requests/s" in str(e.value) or "devices" in str(e.value)
    # More than the whole cluster can serve: infeasible, with what is achievable.
    top = _plan(batch=8, objective="throughput", **SLO)
    with pytest.raises(InfeasibleError) as e:
        _plan(batch=8, objective="devices", request_rate=top.requests_per_s * 1.5, **SLO)
    assert e.value.achievable["requests_per_s"] == pytest.approx(top.requests_per_s, rel=2e-2)


def test_prefill_batch_sets_the_prefill_pass():
    big = _plan(batch=8, prefill_batch=8, objective="throughput", placement="disaggregated",
                **SLO)
    one = _plan(batch=8, prefill_batch=1, objective="throughput", placement="disaggregated",
                **SLO)
    # One prompt per pass: the pass is shorter (TTFT), decode is unchanged.
    assert one.ttft_ms < big.ttft_ms
    assert one.inputs.prefill_batch == 1 and validate(one).ok
    assert big.inputs.searched == one.inputs.searched == []
    # Not given, the prefill batch is a decision: no worse than either fixed one.
    free = _plan(batch=8, objective="throughput", **SLO)
    assert free.inputs.searched == ["prefill_batch"] or free.placement == "colocated"
    assert free.objective >= max(big.objective, one.objective) * (1 - 1e-9)
    assert validate(free).ok


def test_prefill_batch_does_not_govern_a_colocated_pool():
    """In-flight batching prefills prompts in chunks of the engine's step budget as they
    arrive: a colocated pool's figures do not depend on the prefill batch."""
    a = _plan(batch=8, objective="throughput", placement="colocated", **SLO)
    b = _plan(batch=8, prefill_batch=1, objective="throughput", placement="colocated", **SLO)
    assert (a.ttft_ms, a.tpot_ms, a.throughput_tokens_per_s) == (
        b.ttft_ms, b.tpot_ms, b.throughput_tokens_per_s)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_device_budget_is_respected_and_monotone(objective):
    kw = {"objective": objective, "batch": 8, **SLO}
    plans = [_plan(max_devices=b, **kw) for b in (1, 2, 4, 8)]
    for b, p in zip((1, 2, 4, 8), plans):
        assert p.devices <= b and validate(p).ok
    if objective == "latency":  # more devices never hurt the optimum
        e2e = [p.objective for p in plans]
        assert all(a >= b - 1e-9 for a, b in zip(e2e, e2e[1:]))
    else:
        tok = [p.objective for p in plans]
        assert all(a <= b + 1e-9 for a, b in zip(tok, tok[1:]))


def test_latency_objective_refuses_a_request_rate(capsys):
    rc = main(["plan", "--model", M8, "--topology", "h100-sxm-x8", "--request-rate", "3"])
    assert rc == 2 and "request-rate" in capsys.readouterr().err
    rc = main(["plan", "--model", M8, "--topology", "h100-sxm-x8", "--objective", "devices"])
    assert rc == 2


def test_pareto_sweep_writes_the_front(tmp_path, capsys):
    out = tmp_path / "par"
    rc = main(["pareto", "--model", M8, "--topology", "h100-sxm-x8", "--batch", "8",
               "--tpot-slo-ms", "2,4,20", "--max-devices", "1,2,8", "--workers", "2",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == 9
    assert [(float(r["tpot_slo_ms"]), int(r["max_devices"])) for r in rows] == [
        (a, b) for a in (2, 4, 20) for b in (1, 2, 8)]
    ok = [r for r in rows if r["status"] != "infeasible"]
    assert ok and any(r["status"] == "infeasible" for r in rows)
    for r in ok:
        assert float(r["tpot_ms"]) <= float(r["tpot_slo_ms"]) and int(r["devices"]) <= int(r["max_devices"])
    pts = [{"ttft_ms": float(r["ttft_ms"]), "tpot_ms": float(r["tpot_ms"]),
            "devices": int(r["devices"])} for r in ok]
    on = [p for p, r in zip(pts, ok) if r["on_front"] == "True"]
    assert on == pareto_front(pts)
    assert (out / "pareto.png").stat().st_size > 1000


def test_pareto_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "par"
    for args in (["--max-devices", "2,x"], ["--tpot-slo-ms", "-1"], []):
        rc = main(["pareto", "--model", M8, "--topology", "h100-sxm-x8", "--out", str(out), *args])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def _mixed_topology(path):
    nv = {"kind": "nvlink", "bandwidth_bytes_per_s": 450e9, "latency_s": 2e-6,
          "tensor_parallel": True}
    data = {"name": "mixed-64", "nodes": [
        {"name": k.replace("-", ""), "count": 2, "devices": {"kind": k, "count": 8}, "fabric": nv}
        for k in ("h100-sxm", "h200", "b200", "a100-sxm-80gb")],
        "networks": [{"name": "ib", "kind": "infiniband", "bandwidth_bytes_per_s": 50e9,
                      "latency_s": 3e-6}]}
    path.write_text(yaml.safe_dump(data))


def test_ctrl_c_prints_the_best_plan_so_far(tmp_path):
    """A long throughput solve (four device classes, hundreds of CP-SAT solves) gets
    SIGINT once its first design is on the front: it stops, writes and prints the best
    plan found so far with its status, and exits 130 (issue 13: Ctrl-C is never 0)."""
    topo = tmp_path / "mixed.yaml"
    _mixed_topology(topo)
    out = tmp_path / "plan.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoplan", "plan", "--model", "meta-llama/Llama-3.1-405B",
         "--topology", str(topo), "--batch", "16", "--prefill-batch", "1", "--objective",
         "throughput", "--ttft-slo-ms", "2000", "--tpot-slo-ms", "100", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"})
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        seen.append(line)
        if "[decode front]" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    p = json.loads(out.read_text())
    assert p["stop_reason"] == "interrupted" and p["status"] == "feasible"
    assert validate(p).ok
    assert "TTFT" in stdout


@pytest.mark.parametrize("case", ["llama31-70b-h100x8-latency", "llama31-70b-h100x8-throughput"])
def test_plan_explain_chart_export_chain(tmp_path, case):
    """Issue 4's chain from the command line, in fresh processes, on golden inputs:
    plan -o, explain, chart, export; each exits 0 and writes what it says."""
    cases = yaml.safe_load(open("tests/golden/cases.yaml"))
    c = cases[case]
    args = ["--model", c["model"], "--topology", c["topology"], "--isl", str(c["isl"]),
            "--osl", str(c["osl"])]
    for k in ("batch", "prefill_batch", "objective", "ttft_slo_ms", "tpot_slo_ms"):
        if k in c:
            args += [f"--{k.replace('_', '-')}", str(c[k])]
    plan_json = tmp_path / "plan.json"

    def run(*a):
        p = subprocess.run([sys.executable, "-m", "autoplan", *a], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "160"}, timeout=300)
        assert p.returncode == 0, (a, p.stderr)
        assert "Traceback" not in p.stderr
        return p

    run("plan", *args, "-o", str(plan_json))
    golden = json.loads(open(f"tests/golden/{case}.plan.json").read())
    got = json.loads(plan_json.read_text())
    assert got["prefill"]["stages"] == golden["prefill"]["stages"]
    assert "why this plan" in run("explain", str(plan_json), "--no-solve").stdout
    run("chart", str(plan_json), "--out", str(tmp_path / "charts"))
    assert {p.name for p in (tmp_path / "charts").iterdir()} >= {
        "timeline.png", "timeline.svg", "roofline.png", "roofline.svg", "topology.png",
        "topology.svg"}
    run("export", str(plan_json), "--to", "vllm", "--out", str(tmp_path / "vllm"))
    assert "vllm serve" in (tmp_path / "vllm" / "launch.sh").read_text()
