"""Golden plans: the planner's output for fixed inputs, reviewed as diffs.

A change of any figure or placement fails here; regenerate on purpose with
``python tests/golden/regen.py`` and review the diff. Beyond equality each plan must be
optimal, pass the validator, and show the property its case is about.
"""

from __future__ import annotations

import json
import os

import pytest
from golden_cases import GOLDEN, REPO, load_cases, run_case

from autoplan.rules.validate import validate

CASES = load_cases()


def _strip(d: dict) -> dict:
    d = dict(d)
    d.pop("solve_seconds", None)
    return d


@pytest.fixture(scope="module")
def plans():
    return {name: run_case(case) for name, case in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_plan_unchanged(plans, name):
    expected = json.loads((GOLDEN / f"{name}.plan.json").read_text())
    got = json.loads(plans[name].model_dump_json())
    assert _strip(got)["prefill"] == expected["prefill"], f"{name}: prefill differs"
    assert _strip(got)["decode"] == expected["decode"], f"{name}: decode differs"
    for key in ("placement", "status", "devices", "objective", "ttft_ms", "tpot_ms", "e2e_ms",
                "kv_transfer_ms", "throughput_tokens_per_s", "inputs"):
        assert got[key] == expected[key], f"{name}: {key} {got[key]} != {expected[key]}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_plan_optimal_and_valid(plans, name):
    p = plans[name]
    if name == "llama31-70b-fp8-h100x8-lpu576-disaggregated":
        # A documented limit (README "Planner"): the hand-off bound between 8-chip LPU
        # stages is the best pair of the multi-node domain, which 62 TP 8 stages cannot
        # all reach, so the exact checks stop at their cap with an honest gap.
        assert p.status == "feasible" and p.stop_reason == "iteration_limit"
        assert 0 < p.gap < 0.02
    else:
        # The gap is to the lower-bound tables' proven bound (their rounding).
        assert p.status == "optimal" and p.gap <= 1e-6
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        report = validate(p)
    finally:
        os.chdir(cwd)
    assert report.ok, report.errors


def test_lpu_case_puts_decode_on_lpu_and_prefill_on_gpus(plans):
    p = plans["llama31-70b-fp8-h100x8-lpu576-disaggregated"]
    assert {s.device_kind for s in p.decode.stages} == {"lpu"}
    assert "h100-sxm" in {s.device_kind for s in p.prefill.stages}
    # 576 chips hold one fp8 copy, not two: the LPU chips serve only one phase.
    lpu_pre = sum(s.tp for s in p.prefill.stages if s.device_kind == "lpu")
    lpu_dec = sum(s.tp for s in p.decode.stages if s.device_kind == "lpu")
    assert lpu_pre + lpu_dec <= 576 and lpu_pre == 0


def test_tp_follows_the_nvlink_domain(plans):
    narrow = plans["llama31-70b-h100-nvl4"]
    assert max(s.tp for s in narrow.prefill.stages + narrow.decode.stages) <= 4
    wide = plans["llama31-70b-h100x8-latency"]
    assert max(s.tp for s in wide.decode.stages) == 8  # on the full domain TP reaches 8


def test_disaggregated_pools_are_disjoint_and_pay_kv(plans):
    p = plans["llama31-70b-h100x8-batch16-disaggregated"]
    pre = {d for s in p.prefill.stages for d in s.devices}
    dec = {d for s in p.decode.stages for d in s.devices}
    assert not pre & dec
    assert p.kv_transfer_ms > 0
