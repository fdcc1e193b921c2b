"""Plans made from a user's own files work from any folder (issue 9, drift bugs 2-4),
and the validator checks the device budget and the request rate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoplan.plan_schema import Plan
from autoplan.rules.validate import validate
from autoplan.search.planner import plan

REPO = Path(__file__).resolve().parent.parent


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoplan", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _user_files(folder: Path, name_or_path: str | None) -> None:
    folder.mkdir(parents=True)
    cfg = json.loads((REPO / "models/meta-llama/Llama-3.1-8B.json").read_text())
    if name_or_path:
        cfg["_name_or_path"] = name_or_path
    (folder / "config.json").write_text(json.dumps(cfg))
    topo = (REPO / "topologies/h100-sxm-x8.yaml").read_text()
    (folder / "mytopo.yaml").write_text(topo.replace("name: h100-sxm-x8", "name: my-h100s"))


@pytest.mark.parametrize("given", [None, "acme/llama-8b-ft"])
def test_plan_from_user_files_works_from_another_folder(tmp_path, given):
    a, b = tmp_path / "A", tmp_path / "B"
    _user_files(a, given)
    b.mkdir()
    r = _cli(a, "plan", "--model", "./config.json", "--topology", "./mytopo.yaml",
             "--objective", "throughput", "--max-devices", "4", "-o", "plan.json", "--json")
    assert r.returncode == 0, r.stderr
    p = Plan.load(a / "plan.json")
    # The name an engine loads the model by: _name_or_path, else the folder (never "config").
    assert p.inputs.model == (given or str(a.resolve()))
    assert p.inputs.model_spec is not None and p.inputs.topology_spec is not None
    # Moved away from its files (they are gone): every command still works.
    shutil.move(str(a / "plan.json"), str(b / "plan.json"))
    shutil.rmtree(a)
    for args in (["validate", "plan.json"], ["explain", "plan.json", "--no-solve"],
                 ["chart", "plan.json", "--out", "charts"],
                 ["export", "plan.json", "--to", "vllm", "--out", "exp"]):
        r = _cli(b, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    script = (b / "exp" / "launch.sh").read_text()
    assert f"vllm serve {given or str(a.resolve())}" in script
    assert "vllm serve config" not in script


def test_model_folder_is_accepted_as_model(tmp_path):
    _user_files(tmp_path / "snap", None)
    p = plan(str(tmp_path / "snap"), "h100-sxm-x8", isl=512, osl=64)
    assert p.inputs.model == str((tmp_path / "snap").resolve())
    assert validate(p).ok


def test_hub_snapshot_folder_is_named_by_its_repo(tmp_path):
    snap = tmp_path / "models--acme--tiny-llama" / "snapshots" / "0123abcd"
    _user_files(snap, None)
    p = plan(str(snap / "config.json"), "h100-sxm-x8", isl=512, osl=64)
    assert p.inputs.model == "acme/tiny-llama"


def test_edited_embedded_topology_is_refused(tmp_path):
    _user_files(tmp_path / "A", None)
    p = plan(str(tmp_path / "A/config.json"), str(tmp_path / "A/mytopo.yaml"), isl=512, osl=64)
    d = json.loads(p.model_dump_json())
    d["inputs"]["topology_spec"]["nodes"][0]["devices"]["count"] = 4
    with pytest.raises(Exception, match="topology_sha256"):
        validate(d)


def test_validate_checks_the_device_budget():
    p = plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=512, osl=64,
             objective="throughput", max_devices=4)
    assert p.devices <= 4 and validate(p).ok
    tampered = p.model_copy(update={"inputs": p.inputs.model_copy(update={"max_devices": 2})})
    rep = validate(tampered)
    assert not rep.ok and rep.errors[0].startswith("device budget:"), rep.errors


def test_validate_checks_the_request_rate():
    p = plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=512, osl=64,
             objective="devices", request_rate=5.0)
    assert validate(p).ok and p.requests_per_s >= 5.0
    more = p.model_copy(update={"inputs": p.inputs.model_copy(
        update={"request_rate": p.requests_per_s * 1.5})})
    rep = validate(more)
    assert not rep.ok and any(e.startswith("request rate:") for e in rep.errors), rep.errors


def test_nodes_shortcut_builds_a_cluster_and_plans_on_it():
    from autoplan import estimate
    from autoplan.cli import main

    p = plan("meta-llama/Llama-3.1-70B", "h200-x8", nodes=2, isl=2048, osl=64,
             objective="throughput", ttft_slo_ms=2000, tpot_slo_ms=30)
    spec = p.inputs.topology_spec
    assert p.inputs.topology == "h200-x8-2node" and spec.nodes[0].count == 2
    assert spec.networks[0].bandwidth_bytes_per_s == 50e9  # the H200 node's 400 Gb/s NIC
    assert validate(p).ok and p.devices == 16
    e = estimate("meta-llama/Llama-3.1-70B", "h200-x8", tp=8, pp=2, nodes=2, isl=512, osl=8)
    assert e.devices == 16 and len({s.devices[0].split(".")[0] for s in e.memory}) == 2
    assert main(["topologies", "--show", "h200-x8", "--nodes", "4", "--network", "ib-xdr"]) == 0
    rc = main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h200-2node",
               "--nodes", "2"])
    assert rc == 2  # already two nodes: one line, exit 2
