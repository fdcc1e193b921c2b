"""Issue 13: safe with untrusted plans, names and files.

Whatever a plan, a model config, a topology YAML or a CSV holds, autoplan writes no
script or manifest that runs something the plan does not say, destroys no file it was
not asked to write, does not hang or eat memory on a strange file, and answers bad input
with one line ``autoplan: error: ...`` and exit 2 (3: infeasible), never a traceback.

One section per class of the issue's "Found" list; each test failed before its fix.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.export import export
from autoplan.plan_schema import Plan

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
COLOC = "llama31-70b-h100x8-latency"
DISAGG = "llama31-70b-h100x8-batch16-disaggregated"
EVIL = "$(touch PWNED)`touch PWNED2`;touch PWNED3 'x\" \\"  # printable, hostile


def run(argv: list) -> tuple[int, str, str]:
    """``autoplan.cli.main`` in-process; any exception escaping it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_line(rc: int, err: str, expect: int = 2, *words: str) -> None:
    """Exit ``expect`` with one stderr line ``autoplan: error: ...`` holding ``words``."""
    assert "Traceback" not in err, err
    assert rc == expect, (rc, err[-2000:])
    lines = [ln for ln in err.splitlines() if not ln.lstrip().startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("autoplan: error: "), err[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


@cache
def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.plan.json").read_text())


def write_plan(path: Path, plan: dict, **json_kw) -> Path:
    path.write_text(json.dumps(plan, **json_kw))
    return path


TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 1000}


def h100_kind() -> dict:
    kinds = yaml.safe_load((ROOT / "hardware" / "device_kinds.yaml").read_text())
    kind = dict(kinds["device_kinds"]["h100-sxm"])
    kind.pop("calibration", None)
    kind["calibrate_like"] = "h100-sxm"
    return kind


def topology(name: str = "two-nodes", kind: str = "h100-sxm", link: str = "nvlink",
             tier: str | None = None, nodes: int = 2, per_node: int = 2) -> dict:
    """Two nodes of two devices, on a fabric and a network; a custom kind if not built in."""
    t: dict = {"name": name, "nodes": [
        {"name": "node", "count": nodes, "devices": {"kind": kind, "count": per_node},
         "fabric": {"kind": link, "bandwidth_bytes_per_s": 450e9, "latency_s": 2e-6,
                    "tensor_parallel": True}}],
        "networks": [{"name": "ib", "kind": link, "bandwidth_bytes_per_s": 50e9,
                      "latency_s": 5e-6}]}
    if kind != "h100-sxm":
        k = h100_kind()
        if tier is not None:
            k["memory_tiers"] = [dict(k["memory_tiers"][0], name=tier)]
        t["device_kinds"] = {kind: k}
    return t


# ================================================================ 1-3. names at input


@pytest.mark.parametrize("where", ["kind", "link", "tier", "name"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "\x1b[31m", "a\tb", "a\u2028b", "x" * 256])
def test_topology_names_are_printable_and_bounded(where, bad, tmp_path):
    args = {"kind": {"kind": bad}, "link": {"link": bad}, "tier": {"kind": "k", "tier": bad},
            "name": {"name": bad}}[where]
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(topology(**args)))
    rc, _, err = run(["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", f,
                      "--json", "--time-limit-s", "5"])
    one_line(rc, err, 2, "topology")
    assert "printable" in err or "bytes" in err


def test_file_names_with_newlines_are_refused(tmp_path):
    """A config folder or topology file whose name has a newline: the name would be the
    plan's model or topology, and a line of its own in launch.sh."""
    folder = tmp_path / "m\n$(touch PWNED)"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    rc, _, err = run(["plan", "--model", folder, "--topology", "h100-sxm-x1", "--json"])
    one_line(rc, err, 2, "printable")
    topo = tmp_path / "t\n$(touch PWNED).yaml"
    topo.write_text(yaml.safe_dump(topology()))
    rc, _, err = run(["plan", "--model", folder.parent / "x.json", "--topology", topo])
    assert rc == 2
    (tmp_path / "ok.json").write_text(json.dumps(TINY))
    rc, _, err = run(["plan", "--model", tmp_path / "ok.json", "--topology", topo, "--json"])
    one_line(rc, err, 2, "--topology", "printable")
    assert not list(tmp_path.rglob("PWNED*"))


PLAN_FIELDS = {
    "model": ("inputs", "model"), "topology": ("inputs", "topology"),
    "dtype": ("inputs", "dtype"), "kv_dtype": ("inputs", "kv_dtype"),
    "device_kind": ("prefill", "stages", 0, "device_kind"),
    "device": ("prefill", "stages", 0, "devices", 0),
    "replica_device": ("decode", "replica_devices", 0, 0, 0),
}


@pytest.mark.parametrize("field", sorted(PLAN_FIELDS))
@pytest.mark.parametrize("command", ["validate", "explain", "chart", "export"])
def test_plan_names_with_control_characters_are_refused(field, command, tmp_path):
    p = copy.deepcopy(golden(COLOC))
    *path, last = PLAN_FIELDS[field]
    node = p
    for k in path:
        node = node[k]
    node[last] = f"{node[last]}\n{EVIL}"
    f = write_plan(tmp_path / "p.json", p)
    extra = {"export": ["--to", "vllm", "--out", tmp_path / "o"], "explain": ["--no-solve"],
             "chart": ["--out", tmp_path / "o"]}.get(command, [])
    rc, out, err = run([command, f, *extra])
    one_line(rc, err, 2, "plan")
    assert out == "" and not (tmp_path / "o").exists()
