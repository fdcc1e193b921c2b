"""The command line: same numbers as the API, catalog listings, and one-line errors with
exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autoplan import estimate
from autoplan.catalog import catalog_root, list_models, list_topologies
from autoplan.cli import main

FIELDS = ("ttft_ms", "tpot_ms", "e2e_ms", "fits", "peak_memory_fraction")


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- CLI == API

CASES = [
    dict(model="meta-llama/Llama-3.1-8B", topology="h100-sxm-x1"),
    dict(model="meta-llama/Llama-3.1-70B", topology="h100-sxm-x8", tp=4, pp=2, isl=1024,
         osl=64, batch=4, dtype="fp8"),
    dict(model="mistralai/Mixtral-8x7B-v0.1", topology="h100-sxm-4node", tp=8, pp=2,
         kv_dtype="fp8"),
    dict(model="meta-llama/Llama-3.1-70B", topology="h100x8-lpu576", tp=64, pp=9,
         device_kind="lpu", dtype="fp8", isl=128, osl=128),
    dict(model="meta-llama/Llama-3.1-8B", topology="l40s-x8", tp=2, max_memory_fraction=0.5),
]


def _argv(case: dict) -> list[str]:
    argv = ["estimate", "--model", case["model"], "--topology", case["topology"]]
    for k, v in case.items():
        if k not in ("model", "topology"):
            argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def _api(case: dict, **extra):
    kw = {k: v for k, v in case.items() if k not in ("model", "topology", "tp", "pp")}
    return estimate(case["model"], case["topology"], case.get("tp", 1), case.get("pp", 1),
                    **kw, **extra).model_dump(mode="json")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['model'].split('/')[1]}-{c['topology']}")
def test_cli_json_equals_api(case, capsys):
    rc, out, err = run(capsys, _argv(case) + ["--json"])
    assert rc == 0, err
    assert err == ""
    got = json.loads(out)
    want = _api(case)
    for k in FIELDS:
        assert k in got
        assert got[k] == want[k], k
    for ph in ("prefill", "decode"):
        assert got[ph]["bottleneck"] == want[ph]["bottleneck"]
        assert got[ph]["bottleneck"] in ("compute", "memory", "communication")
        assert got[ph]["time_ms"] == want[ph]["time_ms"]
        assert "operators" not in got[ph]
    assert got["memory"] == want["memory"]
    for k in ("tp", "pp", "devices", "isl", "osl", "batch", "dtype", "kv_dtype", "device_kind"):
        assert got[k] == want[k], k


def test_cli_breakdown_adds_operators(capsys):
    case = dict(model="meta-llama/Llama-3.1-70B", topology="h100-sxm-x8", tp=8)
    rc, out, err = run(capsys, _argv(case) + ["--json", "--breakdown"])
    assert rc == 0, err
    got = json.loads(out)
    want = _api(case, breakdown=True)
    for ph in ("prefill", "decode"):
        ops = got[ph]["operators"]
        assert ops, ph
        assert ops == want[ph]["operators"]
        names = {o["name"] for o in ops}
        assert {"qkv_proj", "attention", "o_proj", "mlp_up", "mlp_down", "lm_head"} <= names
        for o in ops:
            assert set(o) == {"name", "count", "time_ms", "flops", "bytes"}
            assert o["time_ms"] >= 0 and o["count"] >= 1
        # Operator times plus the all-reduces make up the phase.
        total = sum(o["time_ms"] for o in ops) + got[ph]["communication_ms"]
        assert total == pytest.approx(got[ph]["time_ms"], rel=1e-9)
        assert ops == sorted(ops, key=lambda o: -o["time_ms"])
    # One attention per layer per phase.
    att = next(o for o in got["decode"]["operators"] if o["name"] == "attention")
    assert att["count"] == 80


def test_cli_text_output(capsys):
    rc, out, err = run(capsys, ["estimate", "--model", "meta-llama/Llama-3.1-8B",
                                "--topology", "h100-sxm-x1"])
    assert rc == 0, err
    assert "meta-llama/Llama-3.1-8B" in out and "h100-sxm-x1" in out
    assert "fits" in out


def test_models_lists_catalog(capsys):
    rc, out, err = run(capsys, ["models", "--json"])
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["id"] for r in rows] == list_models()
    rc, out, _ = run(capsys, ["models"])
    assert rc == 0
    for name in list_models():
        assert name in out


def test_topologies_lists_catalog(capsys, topology_yaml):
    rc, out, err = run(capsys, ["topologies", "--json"])
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list_topologies()
    for r in rows:
        y = topology_yaml(r["name"])
        n = sum(g.get("count", 1) * g["devices"]["count"] for g in y["nodes"])
        assert sum(r["devices"].values()) == n
    rc, out, _ = run(capsys, ["topologies"])
    assert rc == 0
    for name in list_topologies():
        assert name in out


# ---------------------------------------------------------------- errors

LLAMA = ["--model", "meta-llama/Llama-3.1-8B"]
H1 = ["--topology", "h100-sxm-x1"]


@pytest.fixture
def files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"model_type": "llama", "hidden_size": 64,')
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                   "intermediate_size": 128, "num_attention_heads": 4,
                                   "vocab_size": 100}))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nnodes: [ {name: n,\n  devices: {kind: h100-sxm\n")
    zero_bw = tmp_path / "zero.yaml"
    zero_bw.write_text(
        "name: zero\nnodes:\n  - name: node\n    devices: {kind: h100-sxm, count: 2}\n"
        "    fabric: {kind: nvlink, bandwidth_bytes_per_s: 0, latency_s: 1.0e-6, "
        "tensor_parallel: true}\n")
    return {"bad_json": str(bad_json), "missing": str(missing), "bad_yaml": str(bad_yaml),
            "zero_bw": str(zero_bw)}


ERRORS = {
    "unknown model": (["--model", "nosuch/model", *H1], "nosuch/model"),
    "unknown topology": ([*LLAMA, "--topology", "nosuch-topology"], "nosuch-topology"),
    "malformed json": (["--model", "{bad_json}", *H1], "JSON"),
    "missing key": (["--model", "{missing}", *H1], "num_hidden_layers"),
    "malformed yaml": ([*LLAMA, "--topology", "{bad_yaml}"], "YAML"),
    "zero bandwidth": ([*LLAMA, "--topology", "{zero_bw}", "--tp", "2"], "bandwidth"),
    "tp not dividing heads": ([*LLAMA, "--topology", "h100-sxm-x8", "--tp", "3"], "3"),
    "tp beyond fast domain": (["--model", "meta-llama/Llama-3.1-70B", "--topology",
                               "h100-sxm-4node", "--tp", "16"], "16"),
    "too many devices": (["--model", "meta-llama/Llama-3.1-70B", "--topology", "h100-sxm-x8",
                          "--tp", "8", "--pp", "2"], "16"),
    "unknown flag": ([*LLAMA, *H1, "--frobnicate"], "frobnicate"),
    "bad dtype": ([*LLAMA, *H1, "--dtype", "fp7"], "fp7"),
    "negative isl": ([*LLAMA, *H1, "--isl", "-5"], "isl"),
    "zero batch": ([*LLAMA, *H1, "--batch", "0"], "batch"),
    "non-integer tp": ([*LLAMA, *H1, "--tp", "two"], "tp"),
    "missing --model": ([*H1], "model"),
    "device kind needed": ([*LLAMA, "--topology", "h100x8-lpu576"], "device-kind"),
    "unknown device kind": ([*LLAMA, "--topology", "h100x8-lpu576", "--device-kind", "tpu"],
                            "tpu"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_exits_2_with_one_line(case, capsys, files):
    args, needle = ERRORS[case]
    argv = ["estimate", *(a.format(**files) for a in args), "--json"]
    rc, out, err = run(capsys, argv)
    print(f"{case}: rc={rc} stderr={err!r}")
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("autoplan: error:")
    assert needle.lower() in lines[0].lower()
    assert out == ""


# ---------------------------------------------------------------- real process


def _python_m(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoplan", *args], capture_output=True,
                          text=True, timeout=60, cwd=catalog_root())


def test_subprocess_estimate_json():
    p = _python_m("estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                  "h100-sxm-x8", "--tp", "2", "--json")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    got = json.loads(p.stdout)
    want = estimate("meta-llama/Llama-3.1-8B", "h100-sxm-x8", 2).model_dump(mode="json")
    for k in FIELDS:
        assert got[k] == want[k]


@pytest.mark.parametrize("args", [
    ("--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x8", "--tp", "3"),
    ("--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1", "--frobnicate"),
], ids=["tp3", "unknown-flag"])
def test_subprocess_error_exit_code(args):
    p = _python_m("estimate", *args, "--json")
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoplan: error:"), p.stderr
