"""Hostile inputs a review found accepted, silently or with a traceback; each test failed
before its fix (the contract: tests/test_safety.py's docstring)."""

from __future__ import annotations

import copy

import pytest

from autoplan.plan_schema import Plan
from tests.test_safety import COLOC, golden, one_line, run, write_plan

MIXED = "llama31-70b-h200-2node-throughput-mixed"
LLAMA = ["--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x8"]


# ---------------------------------------------------------------- plan figures

def _set(plan: dict, path: tuple, value) -> dict:
    p = copy.deepcopy(plan)
    node = p
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return p


# Each phase's own figures (not its stages'): the validator compared them only for the
# more designs, so a hand-edited time, rate, bubble share or device count validated and
# reached explain, chart and the terminal.
@pytest.mark.parametrize("base", [COLOC, MIXED])
@pytest.mark.parametrize("path, value, words", [
    (("prefill", "time_ms"), 0.5, "prefill time_ms"),
    (("decode", "time_ms"), 1.0, "decode time_ms"),
    (("prefill", "requests_per_s"), -1.0, "prefill requests_per_s"),
    (("decode", "requests_per_s"), 1e308, "decode requests_per_s"),
    (("prefill", "bubble_fraction"), 0.5, "prefill bubble_fraction"),
    (("decode", "bubble_fraction"), -3.0, "decode bubble_fraction"),
    (("prefill", "devices"), 3, "prefill devices 3"),
    (("decode", "devices"), 7, "decode devices 7"),
    (("decode", "bottleneck"), "communication", "decode bottleneck"),
])
def test_phase_figures_are_checked(base, path, value, words, tmp_path):
    f = write_plan(tmp_path / "p.json", _set(golden(base), path, value))
    rc, out, err = run(["validate", f])
    one_line(rc, err, 2, "plan is invalid", words)


# A plan file's JSON types as written: pydantic's lax mode read "8", 8.0 and true as
# counts, so a hand-edited plan with strings where numbers go validated and exported.
@pytest.mark.parametrize("path, value, words", [
    (("inputs", "isl"), "2048", "inputs.isl"),
    (("inputs", "batch"), True, "inputs.batch"),
    (("decode", "stages", 0, "tp"), "8", "decode.stages.0.tp"),
    (("decode", "stages", 0, "tp"), 8.0, "decode.stages.0.tp"),
    (("decode", "stages", 0, "layers"), ["0", "80"], "decode.stages.0.layers.0"),
    (("inputs", "max_memory_fraction"), "0.9", "inputs.max_memory_fraction"),
    (("schema_version",), 2, "schema_version 2"),
    (("schema_version",), True, "schema_version"),
])
@pytest.mark.parametrize("command", ["validate", "export"])
def test_plan_files_keep_their_json_types(path, value, words, command, tmp_path):
    f = write_plan(tmp_path / "p.json", _set(golden(COLOC), path, value))
    extra = ["--to", "vllm", "--out", tmp_path / "out"] if command == "export" else []
    rc, out, err = run([command, f, *extra])
    one_line(rc, err, 2, words)
    assert out == "" and not (tmp_path / "out").exists()


def test_plan_files_that_keep_their_types_still_load(tmp_path):
    f = write_plan(tmp_path / "p.json", golden(COLOC), indent=1)
    assert Plan.load(f) == Plan.load(golden(COLOC))
    rc, out, err = run(["validate", f])
    assert rc == 0, err


# ---------------------------------------------------------------- flags

# --network without --nodes was dropped unread: a typo answered with a plan.
@pytest.mark.parametrize("command", ["estimate", "plan"])
@pytest.mark.parametrize("name", ["foo", ""])
def test_an_unknown_network_is_refused_without_nodes(command, name):
    rc, out, err = run([command, *LLAMA, "--network", name])
    one_line(rc, err, 2, "unknown network")
    assert out == ""


def test_a_known_network_on_one_node_is_accepted():
    rc, out, err = run(["estimate", *LLAMA, "--network", "ib-ndr", "--json"])
    assert rc == 0, err
