"""A deployment's own host terms: `calibrate ROWS.csv --host-terms -o FILE`, then
`--host-terms FILE` on estimate / plan, recorded in the plan and reproduced by validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoplan import estimate
from autoplan.calibrate.host_fit import fit_host_terms
from autoplan.catalog import catalog_root
from autoplan.cli import main
from autoplan.inputs.host_terms import HostTerms, load_host_terms
from autoplan.plan_schema import Plan
from autoplan.rules.validate import validate

M8 = "meta-llama/Llama-3.1-8B"
ROWS = catalog_root() / "hardware" / "data" / "engines-e2e.csv"


def _terms_file(tmp_path: Path, step: float, request: float, engine: str = "vllm") -> Path:
    p = tmp_path / "terms.yaml"
    p.write_text(f"host_terms:\n  {engine}:\n    host_step_s: {step}\n"
                 f"    request_overhead_s: {request}\n")
    return p


def test_calibrate_writes_the_fit_it_prints(tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    assert main(["calibrate", str(ROWS), "--host-terms", "--engine", "vllm", "-o", str(out)]) == 0
    terms = load_host_terms(out)
    fit = fit_host_terms(ROWS, "vllm")
    assert set(terms) == {"vllm"}
    assert terms["vllm"].host_step_s == fit.host_step_s
    assert terms["vllm"].request_overhead_s == fit.request_overhead_s
    assert "f01" in terms["vllm"].fitted_to
    assert "autoplan calibrate" in out.read_text().splitlines()[1]


def test_host_terms_add_exactly_their_time(tmp_path):
    # one pass per figure: TTFT gains the per-request and per-step differences, TPOT the
    # per-step one (each term enters every pass once, on the first stage)
    base = estimate(M8, "h100-sxm-x1", isl=1024, osl=128)
    ht = HostTerms(host_step_s=0.002, request_overhead_s=0.1)
    mine = estimate(M8, "h100-sxm-x1", isl=1024, osl=128, host_terms=ht)
    shipped_step = base.decode.host_ms / 1e3
    assert mine.tpot_ms - base.tpot_ms == pytest.approx((0.002 - shipped_step) * 1e3)
    assert mine.ttft_ms - base.ttft_ms == pytest.approx(
        (0.002 - shipped_step) * 1e3 + (100.0 - base.request_ms))
    assert mine.host_terms == ht
    offline = estimate(M8, "h100-sxm-x1", isl=1024, osl=128, host_terms=ht, serving=False)
    assert offline.request_ms == 0 and offline.ttft_ms < mine.ttft_ms


def test_a_plan_records_the_terms_and_validate_reproduces_them(tmp_path):
    terms = _terms_file(tmp_path, 0.001, 0.05)
    out, plain = tmp_path / "p.json", tmp_path / "p0.json"
    args = ["plan", "--model", M8, "--topology", "h100-sxm-x1", "--isl", "512", "--osl", "64"]
    assert main([*args, "--host-terms", str(terms), "-o", str(out)]) == 0
    assert main([*args, "-o", str(plain)]) == 0
    p, p0 = Plan.load(out), Plan.load(plain)
    assert p.inputs.host_terms == HostTerms(host_step_s=0.001, request_overhead_s=0.05)
    assert "host_terms" not in json.loads(plain.read_text())["inputs"]  # shipped: as before
    assert validate(str(out)).ok
    assert p.ttft_ms > p0.ttft_ms + 40  # 50 ms of request handling against 9.1 shipped
    # the recorded terms price the plan: changed by hand, validate disagrees
    d = json.loads(out.read_text())
    d["inputs"]["host_terms"]["request_overhead_s"] = 0.2
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(d))
    assert not validate(str(edited)).ok


@pytest.mark.parametrize("text, says", [
    ("host_terms: 3", "expected one key 'host_terms'"),
    ("[1, 2]", "expected one key 'host_terms'"),
    ("host_terms: {}", "expected one key 'host_terms'"),
    ("host_terms: {vllm: {host_step_s: 0, request_overhead_s: 0}}\nother: 1",
     "expected one key 'host_terms'"),
    ("host_terms: {foo: {host_step_s: 0, request_overhead_s: 0}}", "unknown engine 'foo'"),
    ("host_terms: {vllm: 5}", "expected a mapping"),
    ("host_terms: {vllm: {host_step_s: -1, request_overhead_s: 0}}", "host_step_s"),
    ("host_terms: {vllm: {host_step_s: .nan, request_overhead_s: 0}}", "finite"),
    ("host_terms: {vllm: {host_step_s: 0, request_overhead_s: 1e9}}", "request_overhead_s"),
    ("host_terms: {vllm: {host_step_s: 0}}", "request_overhead_s"),
    ("host_terms: {vllm: {host_step_s: 0, request_overhead_s: 0, x: 1}}", "x"),
    ("host_terms: {vllm: {host_step_s: 'fast', request_overhead_s: 0}}", "host_step_s"),
    ("host_terms: {sglang: {host_step_s: 0, request_overhead_s: 0}}", "no terms for engine vllm"),
    ("host_terms: {vllm: {host_step_s: 0, host_step_s: 1, request_overhead_s: 0}}", "duplicate"),
    ("host_terms: !!python/object:os.system {}", "not valid YAML"),
    ("{{{", "not valid YAML"),
])
def test_bad_host_terms_files_are_one_line_errors(tmp_path, capsys, text, says):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    rc = main(["estimate", "--model", M8, "--topology", "h100-sxm-x1", "--host-terms", str(p)])
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_host_terms_need_an_engine_and_a_readable_file(tmp_path, capsys):
    terms = _terms_file(tmp_path, 0.001, 0.05)
    assert main(["estimate", "--model", M8, "--topology", "h100-sxm-x1", "--engine", "none",
                 "--host-terms", str(terms)]) == 2
    assert "needs --engine" in capsys.readouterr().err
    assert main(["estimate", "--model", M8, "--topology", "h100-sxm-x1",
                 "--host-terms", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["estimate", "--model", M8, "--topology", "h100-sxm-x1",
                 "--host-terms", str(tmp_path)]) == 2
    capsys.readouterr()


def test_calibrate_writes_nothing_when_the_fit_fails(tmp_path):
    out = tmp_path / "never.yaml"
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS.read_text().splitlines()[0] + "\n")  # the header alone
    assert main(["calibrate", str(rows), "--host-terms", "-o", str(out)]) == 2
    assert not out.exists()
