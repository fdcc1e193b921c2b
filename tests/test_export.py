"""``autoplan export``: engine launch configs parsed back and checked against the plan.

Every command line of a written ``launch.sh`` is split with shlex and its flags checked
against the engine's documented flag set; the Dynamo YAML is loaded and its GPU counts
compared with the plan. Pools an engine cannot run (LPU chips, different TP per stage,
two GPU vendors in one pipeline) are left out with a warning.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from autoplan.catalog import load_model
from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.export import export
from autoplan.export.flags import (
    DYNAMO_VLLM_FLAGS,
    RAY_START_FLAGS,
    SGLANG_ENV,
    SGLANG_FLAGS,
    SGLANG_KV_CACHE_DTYPES,
    SGLANG_ROUTER_FLAGS,
    VLLM_DP_LB_DOC,
    VLLM_DTYPES,
    VLLM_ENV,
    VLLM_FLAGS,
    VLLM_KV_CACHE_DTYPES,
)
from autoplan.plan_schema import Plan

GOLDEN = Path(__file__).parent / "golden"
NAMES = sorted(p.name[: -len(".plan.json")] for p in GOLDEN.glob("*.plan.json"))
LPU = "llama31-70b-fp8-h100x8-lpu576-disaggregated"
DISAGG = "llama31-70b-h100x8-batch16-disaggregated"
COLOC = "llama31-70b-h100x8-latency"
UNEVEN = ["llama31-405b-h100-4node", "deepseek-v3-h100-4node"]  # cuts 55/71 and 45/16
THROUGHPUT = "llama31-70b-h100x8-throughput"  # colocated, 2 replicas of TP4 on node0
DEVICES = "llama31-8b-h100-4node-devices"  # colocated, 9 replicas of TP1 over node0, node1
MULTI = [THROUGHPUT, DEVICES]
SERVER_ROLES = ("server", "prefill", "decode")


def load(name: str) -> Plan:
    return Plan.load(GOLDEN / f"{name}.plan.json")


# ---------------------------------------------------------------- parsing helpers


def parse_flags(tokens: list[str], repeat: bool = False) -> dict[str, list]:
    """``--flag v1 v2 --other`` -> {flag: [v1, v2], other: []}; ``--k=v`` split at '='.

    With ``repeat`` a flag may come back (the router's ``--prefill``, ``--decode``) and
    each value is the list of one use's arguments.
    """
    out: dict[str, list] = {}
    cur: list[str] = []
    for t in tokens:
        if t.startswith("--"):
            key, _, val = t.partition("=")
            assert repeat or key not in out, f"flag {key} given twice"
            cur = [val] if val else []
            if repeat:
                out.setdefault(key, []).append(cur)
            else:
                out[key] = cur
        else:
            assert out, f"stray argument {t!r}"
            cur.append(t)
    return out


def parse_script(text: str) -> list[tuple[dict[str, str], list[str]]]:
    """(env, argv) of every command line of a launch.sh (comments and shell syntax dropped)."""
    cmds = []
    for line in text.splitlines():
        toks = shlex.split(line, comments=True)
        if toks and toks[-1] == "&":
            toks = toks[:-1]
        env = {}
        while toks and "=" in toks[0] and toks[0].split("=", 1)[0].isupper():
            k, v = toks.pop(0).split("=", 1)
            env[k] = v
        if toks and toks[0] in ("vllm", "python", "ray"):
            cmds.append((env, toks))
    return cmds


def servers(text: str, engine: str) -> list[dict]:
    """Server command lines with their role (server / prefill / decode) and parsed flags."""
    out = []
    for env, argv in parse_script(text):
        if engine == "vllm" and argv[:2] == ["vllm", "serve"]:
            flags = parse_flags(argv[3:])
            role = "server"
            if "--kv-transfer-config" in flags:
                kv = json.loads(flags["--kv-transfer-config"][0])
                role = {"kv_producer": "prefill", "kv_consumer": "decode"}[kv["kv_role"]]
            out.append({"env": env, "argv": argv, "flags": flags, "role": role,
                        "model": argv[2]})
        elif engine == "sglang" and argv[:3] == ["python", "-m", "sglang.launch_server"]:
            flags = parse_flags(argv[3:])
            role = flags.get("--disaggregation-mode", ["server"])[0]
            out.append({"env": env, "argv": argv, "flags": flags, "role": role,
                        "model": flags["--model-path"][0]})
    return out


def one(flags: dict, key: str) -> str:
    assert len(flags[key]) == 1, (key, flags[key])
    return flags[key][0]


def local_indices(stages) -> list[int]:
    return [int(d.rsplit(".d", 1)[1]) for s in stages for d in s.devices]


def hosts_of(stages) -> list[str]:
    return list(dict.fromkeys(d.rsplit(".d", 1)[0] for s in stages for d in s.devices))


def split_dev(dev: str) -> tuple[str, int]:
    host, idx = dev.rsplit(".d", 1)
    return host, int(idx)


def expected_pins(stage_devices: list[list[str]]) -> dict[str, list[int]]:
    """One replica's devices as host -> local GPU indices, in stage (rank) order."""
    out: dict[str, list[int]] = {}
    for devs in stage_devices:
        for d in devs:
            h, k = split_dev(d)
            out.setdefault(h, []).append(k)
    return out


def parse_groups(text: str) -> list[tuple[str, dict[str, str], list[str]]]:
    """(case group, env, argv) of every command of a launch.sh."""
    out, group = [], None
    for line in text.splitlines():
        m = re.match(r"^  (\S+)\)$", line)
        if m:
            group = m.group(1)
            continue
        for env, argv in parse_script(line):
            out.append((group, env, argv))
    return out


def is_server(argv: list[str]) -> bool:
    return argv[:2] == ["vllm", "serve"] or argv[:3] == ["python", "-m", "sglang.launch_server"]


def visible(env: dict[str, str]) -> list[int] | None:
    v = env.get("CUDA_VISIBLE_DEVICES", env.get("HIP_VISIBLE_DEVICES"))
    return None if v is None else [int(x) for x in v.split(",")]


def pinned_servers(text: str, engine: str) -> list[dict]:
    """Every server (replica) of a launch.sh, read from the text alone: its role, head group
    and port, and the devices it is pinned to as host -> local indices (every node of a
    multi-node SGLang server; the Ray head and workers of a multi-host vLLM server)."""
    cmds = parse_groups(text)
    out: dict[tuple, dict] = {}
    for group, env, argv in cmds:
        if not is_server(argv):
            continue
        flags = parse_flags(argv[3:])
        (parsed,) = servers(shlex.join(argv), engine)
        role = parsed["role"]
        port = one(flags, "--port")
        if engine == "vllm" and "RAY_ADDRESS" in env:
            addr = env["RAY_ADDRESS"]
            head_host, ray_port = addr.rsplit(":", 1)
            assert group == head_host
            pins: dict[str, list[int]] = {}
            for g, e, a in cmds:
                head = a == ["ray", "start", "--head", f"--port={ray_port}"] and g == head_host
                if head or a == ["ray", "start", f"--address={addr}"]:
                    assert g not in pins, (g, addr)
                    pins[g] = visible(e)
            key = (role, group, port)
        elif "--dist-init-addr" in flags:
            key = (role, one(flags, "--dist-init-addr"), port)
            pins = {group: visible(env)}
        else:
            key = (role, group, port)
            pins = {group: visible(env)} if visible(env) is not None else {}
        entry = out.setdefault(key, {"role": role, "group": group, "port": int(port),
                                     "pins": {}, "ranks": []})
        for h, idx in pins.items():
            assert h not in entry["pins"], (key, h)
            entry["pins"][h] = idx
        if "--node-rank" in flags:
            entry["ranks"].append(int(one(flags, "--node-rank")))
            if one(flags, "--node-rank") == "0":
                entry["group"] = group
    return list(out.values())


def parse_groups_labels(text: str) -> list[str]:
    return re.findall(r"^  (\S+)\)$", text, flags=re.MULTILINE)


def listening_ports(text: str) -> dict[str, list[int]]:
    """Ports each group (host) listens on: servers, SGLang bootstrap and dist-init (on the
    head), NIXL side channels and Ray heads."""
    ports: dict[str, list[int]] = {}
    for group, env, argv in parse_groups(text):
        mine = ports.setdefault(group, [])
        if is_server(argv):
            flags = parse_flags(argv[3:])
            mine.append(int(one(flags, "--port")))
            if "--disaggregation-bootstrap-port" in flags:
                mine.append(int(one(flags, "--disaggregation-bootstrap-port")))
            if flags.get("--node-rank") == ["0"]:  # the head listens on --dist-init-addr
                mine.append(int(one(flags, "--dist-init-addr").rsplit(":", 1)[1]))
            if "VLLM_NIXL_SIDE_CHANNEL_PORT" in env:
                mine.append(int(env["VLLM_NIXL_SIDE_CHANNEL_PORT"]))
        elif argv[:3] == ["ray", "start", "--head"]:
            mine.append(int(argv[3].split("=", 1)[1]))
        elif argv[:3] == ["python", "-m", "sglang_router.launch_router"]:
            mine.append(int(one(parse_flags(argv[3:], repeat=True), "--port")[0]))
    return ports


def designs_by_role(plan: Plan, colocated: str = "server") -> dict[str, list[tuple]]:
    """Per exported role, every design's (PhasePlan, batch): the plan's first design and
    its more designs (a colocated pool's role is named ``colocated``)."""
    i = plan.inputs
    out = ({colocated: [(plan.prefill, i.batch)]} if plan.placement == "colocated"
           else {"prefill": [(plan.prefill, i.prefill_batch or i.batch)],
                 "decode": [(plan.decode, i.batch)]})
    for m in plan.more_designs:
        out[colocated if m.pool == "colocated" else m.pool].append(
            (m.prefill if m.pool != "decode" else m.decode, m.batch))
    return out


def check_pinning(plan: Plan, exp, engine: str) -> list[dict]:
    """Each exported replica is pinned to exactly replica_devices[r] (host and GPU index);
    no device is pinned twice across all servers; ports are unique per host."""
    text = exp.files["launch.sh"]
    srv = pinned_servers(text, engine)
    # per role, the replicas of all its designs (the first, and the plan's more designs)
    phases = {r: [ph for ph, _ in ds] for r, ds in designs_by_role(plan).items()}
    for role, designs in phases.items():
        mine = [s for s in srv if s["role"] == role]
        if not mine:
            continue
        assert all(ph.replicas == len(ph.replica_devices) for ph in designs)
        assert len(mine) == sum(ph.replicas for ph in designs)
        wants: dict[int, list] = {}  # replica index -> its pins in each design
        for ph in designs:
            for r, rep in enumerate(ph.replica_devices):
                want = expected_pins(rep)
                wants.setdefault(r, []).append(want)
                match = [m for m in mine if m["pins"] == want]
                assert len(match) == 1, (role, r, want, [m["pins"] for m in mine])
                assert match[0]["group"] == next(iter(want))  # the head: the first host
                if len(want) > 1 and "--dist-init-addr" in text:
                    assert sorted(match[0]["ranks"]) == list(range(len(want)))
        # the Command list tags each command with the replica the text pins it to
        for c in exp.commands:
            if c.role == role and c.replica in wants:
                assert any(c.host in w for w in wants[c.replica]), (role, c.replica, c.host)
                if visible(c.env) is not None:
                    assert any(visible(c.env) == w.get(c.host) for w in wants[c.replica])
    # no device pinned twice, over every server of every pool
    all_pins = [(h, k) for s in srv for h, idx in s["pins"].items() for k in idx]
    twice = [d for d, n in Counter(all_pins).items() if n > 1]
    assert not twice, twice
    # ports unique per host, and the router's port is no server's port anywhere
    ports = listening_ports(text)
    for group, ps in ports.items():
        assert len(ps) == len(set(ps)), (group, sorted(ps))
    router = set(ports.get("router", []))
    assert not router & {p for g, ps in ports.items() if g != "router" for p in ps}
    return srv


# Flags that take no value (store_true switches of the engines' parsers).
SWITCHES = frozenset({"--enable-expert-parallel", "--enable-dp-attention"})


def check_documented(engine: str, text: str) -> None:
    """Every flag of every command is in the engine's documented set, values in range."""
    for env, argv in parse_script(text):
        assert set(env) <= (SGLANG_ENV if engine == "sglang" else VLLM_ENV), set(env)
        if argv[:2] == ["vllm", "serve"]:
            flags = parse_flags(argv[3:])
            assert set(flags) <= VLLM_FLAGS, set(flags) - VLLM_FLAGS
            assert all(len(v) == (f not in SWITCHES) for f, v in flags.items())
            if "--kv-cache-dtype" in flags:
                assert one(flags, "--kv-cache-dtype") in VLLM_KV_CACHE_DTYPES
            if "--dtype" in flags:
                assert one(flags, "--dtype") in VLLM_DTYPES
            if "--quantization" in flags:
                assert one(flags, "--quantization") == "fp8"
        elif argv[:3] == ["python", "-m", "sglang.launch_server"]:
            flags = parse_flags(argv[3:])
            assert set(flags) <= SGLANG_FLAGS, set(flags) - SGLANG_FLAGS
            assert all(len(v) == (f not in SWITCHES) for f, v in flags.items())
            if "--kv-cache-dtype" in flags:
                assert one(flags, "--kv-cache-dtype") in SGLANG_KV_CACHE_DTYPES
            if "--disaggregation-mode" in flags:
                assert one(flags, "--disaggregation-mode") in ("prefill", "decode")
        elif argv[:3] == ["python", "-m", "sglang_router.launch_router"]:
            assert set(parse_flags(argv[3:], repeat=True)) <= SGLANG_ROUTER_FLAGS
        elif argv[:2] == ["ray", "start"]:
            assert set(parse_flags(argv[2:])) <= RAY_START_FLAGS
            assert set(env) <= {"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}
        else:
            raise AssertionError(f"unexpected command {argv[:3]}")
        assert argv[0] != "python" or engine == "sglang"


def bash_syntax_ok(text: str, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        return
    f = tmp_path / "launch.sh"
    f.write_text(text)
    r = subprocess.run(["bash", "-n", str(f)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- vLLM / SGLang vs the plan


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("name", NAMES)
def test_script_matches_plan(engine, name, tmp_path):
    plan = load(name)
    exp = export(plan, engine)
    text = exp.files["launch.sh"]
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    bash_syntax_ok(text, tmp_path)
    check_documented(engine, text)
    layers = load_model(plan.inputs.model).num_layers
    # per role, its designs: the first (the plan's batch) and the more designs (their own)
    phases = designs_by_role(plan)
    srv = servers(text, engine)
    exported = {s["role"] for s in srv}

    def shape(c) -> tuple[int, int, int]:
        f = c["flags"]
        tp = int(one(f, "--tp-size" if engine == "sglang" else "--tensor-parallel-size"))
        pp = int(one(f, "--pp-size" if engine == "sglang" else "--pipeline-parallel-size"))
        # SGLang's --tp-size counts every GPU of a stage (attention DP inside it); vLLM's
        # is one DP rank's, its --data-parallel-size the ranks
        dp = (int(one(f, "--data-parallel-size")) if "--data-parallel-size" in f else 1) \
            if engine == "vllm" else 1
        return tp, pp, dp

    for role, designs in phases.items():
        runs_here = all(s.device_kind != "lpu" for ph, _ in designs for s in ph.stages)
        assert (role in exported) == runs_here, (role, exported)
        if not runs_here:
            continue
        by_shape = {}
        for phase, batch in designs:  # a design's servers are known by their shape
            st = phase.stages[0]
            want = (st.tp * st.attention_dp if engine == "sglang" else st.tp,
                    len(phase.stages), st.attention_dp if engine == "vllm" else 1)
            assert want not in by_shape  # designs of one pool differ in shape
            by_shape[want] = (phase, batch)
        cmds_of = {k: [c for c in srv if c["role"] == role and shape(c) == k]
                   for k in by_shape}
        assert sum(map(len, cmds_of.values())) == len([c for c in srv if c["role"] == role])
        for key, (phase, batch) in by_shape.items():
            cmds, st = cmds_of[key], phase.stages[0]
            assert key[0] * key[1] * key[2] == phase.devices
            for c in cmds:
                f = c["flags"]
                if engine == "vllm":
                    assert ("--enable-expert-parallel" in f) == (st.ep > 1)
                else:
                    assert int(one(f, "--ep-size")) == st.ep if st.ep > 1 else "--ep-size" not in f
                    assert ("--enable-dp-attention" in f) == (st.attention_dp > 1)
                    if st.attention_dp > 1:
                        assert int(one(f, "--dp-size")) == st.attention_dp
            var = "SGLANG_PP_LAYER_PARTITION" if engine == "sglang" else "VLLM_PP_LAYER_PARTITION"
            for c in cmds:
                assert c["model"] == plan.inputs.model
                if len(phase.stages) > 1:
                    cuts = [int(x) for x in c["env"][var].split(",")]
                    assert cuts == [s.layers[1] - s.layers[0] for s in phase.stages]
                    assert sum(cuts) == layers
                else:
                    assert var not in c["env"]
                f = c["flags"]
                # a whole KV block above isl + osl (vLLM block 16, SGLang page 16)
                n = int(one(f, "--max-model-len" if engine == "vllm" else "--context-length"))
                assert n % 16 == 0 and plan.inputs.isl + plan.inputs.osl < n \
                    <= plan.inputs.isl + plan.inputs.osl + 16
                seqs = int(one(f, "--max-num-seqs" if engine == "vllm" else
                               "--max-running-requests"))
                planned = batch
                if engine == "vllm":  # per DP rank: each rank is an engine core of its own
                    planned = -(-planned // st.attention_dp)
                if plan.inputs.objective == "latency":
                    assert seqs >= planned  # what memory allows at the SLO (test_max_seqs_*)
                else:
                    assert seqs == planned
            # one server command per replica and node (a multi-host vLLM server is one
            # command on the head, its other hosts join with `ray start`)
            per_replica = (len(hosts_of(phase.stages))
                           if engine == "sglang" else 1)
            assert len(cmds) == phase.replicas * per_replica
    # every replica pinned to its replica_devices; no device twice; ports unique per host
    check_pinning(plan, exp, engine)
    assert "unpinned" not in parse_groups_labels(text)
    assert not any("without device pinning" in w for w in exp.warnings)
    # distinct servers on one host listen on distinct ports (a multi-node server repeats its own)
    seen: dict[tuple[str, str], tuple] = {}
    for c in exp.commands:
        if c.role in ("server", "prefill", "decode") and c.host is not None:
            port = c.argv[c.argv.index("--port") + 1]
            key = (c.host, port)
            assert seen.setdefault(key, (c.role, c.replica)) == (c.role, c.replica), key


@pytest.mark.parametrize("name", UNEVEN)
def test_vllm_multinode_uses_ray_and_pins_each_host(name):
    plan = load(name)
    exp = export(plan, "vllm")
    text = exp.files["launch.sh"]
    assert any("Ray cluster" in w for w in exp.warnings)
    cmds = parse_script(text)
    (serve,) = [(e, a) for e, a in cmds if a[:2] == ["vllm", "serve"]]
    flags = parse_flags(serve[1][3:])
    assert one(flags, "--distributed-executor-backend") == "ray"
    heads = [(e, a) for e, a in cmds if a[:3] == ["ray", "start", "--head"]]
    workers = [(e, a) for e, a in cmds if a[:2] == ["ray", "start"] and "--head" not in a]
    assert len(heads) == 1 and len(workers) == len(hosts_of(plan.prefill.stages)) - 1
    port = heads[0][1][3].split("=")[1]
    assert serve[0]["RAY_ADDRESS"].endswith(f":{port}")
    assert all(a[2] == f"--address={serve[0]['RAY_ADDRESS']}" for _, a in workers)
    # the Ray nodes together offer exactly the plan's devices
    pinned = sum(len(e["CUDA_VISIBLE_DEVICES"].split(",")) for e, _ in heads + workers)
    assert pinned == plan.prefill.devices


@pytest.mark.parametrize("name", UNEVEN)
def test_sglang_multinode_one_command_per_node(name):
    plan = load(name)
    text = export(plan, "sglang").files["launch.sh"]
    cmds = servers(text, "sglang")
    hosts = hosts_of(plan.prefill.stages)
    assert len(cmds) == len(hosts)
    assert [int(one(c["flags"], "--node-rank")) for c in cmds] == list(range(len(hosts)))
    assert {one(c["flags"], "--nnodes") for c in cmds} == {str(len(hosts))}
    assert len({one(c["flags"], "--dist-init-addr") for c in cmds}) == 1
    assert sum(len(c["env"]["CUDA_VISIBLE_DEVICES"].split(",")) for c in cmds) \
        == plan.prefill.devices


def test_vllm_disaggregated_kv_transfer_and_disjoint_devices():
    plan = load(DISAGG)
    exp = export(plan, "vllm")
    srv = servers(exp.files["launch.sh"], "vllm")
    by_role = {s["role"]: s for s in srv}
    assert set(by_role) == {"prefill", "decode"}
    for role, phase in (("prefill", plan.prefill), ("decode", plan.decode)):
        s = by_role[role]
        kv = json.loads(one(s["flags"], "--kv-transfer-config"))
        assert kv["kv_connector"] == "NixlConnector"
        assert kv["kv_role"] == {"prefill": "kv_producer", "decode": "kv_consumer"}[role]
        assert [int(x) for x in s["env"]["CUDA_VISIBLE_DEVICES"].split(",")] \
            == local_indices(phase.stages)
    pre, dec = by_role["prefill"], by_role["decode"]
    assert not set(pre["env"]["CUDA_VISIBLE_DEVICES"].split(",")) \
        & set(dec["env"]["CUDA_VISIBLE_DEVICES"].split(","))
    assert one(pre["flags"], "--port") != one(dec["flags"], "--port")
    assert pre["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"] != dec["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    text = exp.files["launch.sh"]
    assert f"--prefiller-ports {one(pre['flags'], '--port')}" in text
    assert f"--decoder-ports {one(dec['flags'], '--port')}" in text


def test_sglang_disaggregated_router_points_at_the_servers():
    exp = export(load(DISAGG), "sglang")
    text = exp.files["launch.sh"]
    srv = {s["role"]: s for s in servers(text, "sglang")}
    assert set(srv) == {"prefill", "decode"}
    for s in srv.values():
        assert one(s["flags"], "--disaggregation-transfer-backend") == "nixl"
    (router,) = [a for _, a in parse_script(text) if a[:3] == ["python", "-m",
                                                               "sglang_router.launch_router"]]
    rf = parse_flags(router[3:], repeat=True)
    assert rf["--pd-disaggregation"] == [[]]
    ((url, boot),) = rf["--prefill"]
    assert url.endswith(":" + one(srv["prefill"]["flags"], "--port"))
    assert boot == one(srv["prefill"]["flags"], "--disaggregation-bootstrap-port")
    ((dec_url,),) = rf["--decode"]
    assert dec_url.endswith(":" + one(srv["decode"]["flags"], "--port"))


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo"])
def test_lpu_pool_is_not_exported_and_said_so(engine):
    plan = load(LPU)
    exp = export(plan, engine)
    (w,) = [w for w in exp.warnings if "lpu" in w]
    assert "cannot run on lpu devices" in w and "decode pool" in w and "not exported" in w
    assert f"{plan.decode.devices} lpu devices in {len(plan.decode.stages)} stages" in w
    roles = {c.role for c in exp.commands}
    assert "decode" not in roles and "prefill" in roles
    (pre,) = [c for c in exp.commands if c.role == "prefill"]
    tp_flag = "--tp-size" if engine == "sglang" else "--tensor-parallel-size"
    assert pre.argv[pre.argv.index(tp_flag) + 1] == str(plan.prefill.devices) == "8"
    if engine != "dynamo":
        assert any("cannot serve requests by themselves" in x for x in exp.warnings)
        assert "WARNING: " + w in exp.files["launch.sh"]


# ---------------------------------------------------------------- Dynamo


@pytest.mark.parametrize("name", NAMES)
def test_dynamo_yaml_loads_and_gpu_counts_match(name):
    """The v1beta1 DynamoGraphDeployment of vLLM workers against the plan (the CRD's field
    set and the other backends: tests/test_export_engines.py)."""
    plan = load(name)
    exp = export(plan, "dynamo", backend="vllm")
    doc = yaml.safe_load(exp.files["deployment.yaml"])
    assert doc["apiVersion"] == "nvidia.com/v1beta1"
    assert doc["kind"] == "DynamoGraphDeployment"
    comps = {c["name"]: c for c in doc["spec"]["components"]}
    assert comps["Frontend"]["type"] == "frontend"
    phases = ({"VllmWorker": plan.prefill} if plan.placement == "colocated" else
              {"VllmPrefillWorker": plan.prefill, "VllmDecodeWorker": plan.decode})
    layers = load_model(plan.inputs.model).num_layers
    for svc_name, phase in phases.items():
        if any(s.device_kind == "lpu" for s in phase.stages):
            assert svc_name not in comps
            continue
        svc = comps[svc_name]
        (c,) = svc["podTemplate"]["spec"]["containers"]
        assert c["name"] == "main"
        nodes = svc.get("multinode", {}).get("nodeCount", 1)
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) * nodes == phase.devices
        assert nodes == len(hosts_of(phase.stages))
        assert svc["replicas"] == phase.replicas
        assert c["command"] == ["python3", "-m", "dynamo.vllm"]
        assert all(isinstance(a, str) for a in c["args"])
        flags = parse_flags(c["args"])
        ok = DYNAMO_VLLM_FLAGS | {"--kv-transfer-config"}
        assert set(flags) <= ok, set(flags) - ok
        assert one(flags, "--model") == plan.inputs.model
        dp = int(one(flags, "--data-parallel-size")) if "--data-parallel-size" in flags else 1
        assert int(one(flags, "--tensor-parallel-size")) * dp \
            * int(one(flags, "--pipeline-parallel-size")) == phase.devices
        if plan.placement == "disaggregated":
            mode = one(flags, "--disaggregation-mode")
            assert mode == svc["type"] == svc_name[4:-6].lower()
            assert ("--kv-transfer-config" in flags) == (mode == "prefill")
        envs = {e["name"]: e["value"] for e in c.get("env", [])}
        if len(phase.stages) > 1:
            cuts = [int(x) for x in envs["VLLM_PP_LAYER_PARTITION"].split(",")]
            assert cuts == [s.layers[1] - s.layers[0] for s in phase.stages]
            assert sum(cuts) == layers
        else:
            assert "VLLM_PP_LAYER_PARTITION" not in envs


# ---------------------------------------------------------------- what engines cannot express

# The plans below are edited by hand to reach what an engine cannot run; they no longer
# validate, so these tests export them with check=False (the builders themselves).


def with_decode(plan: Plan, stages: list[dict], replicas: int = 1,
                more: list[list[list[str]]] | None = None) -> Plan:
    """``plan`` with these decode stages; ``more``: the devices of replicas 2.. per stage
    (replica_devices lists the first replica and these, whatever ``replicas`` says)."""
    base = plan.decode.stages[0]
    new = [base.model_copy(update={"index": k, **s}) for k, s in enumerate(stages)]
    rd = [[list(s.devices) for s in new]] + [[list(d) for d in rep] for rep in more or []]
    dec = plan.decode.model_copy(update={"stages": new, "replicas": replicas,
                                         "devices": sum(len(s.devices) for s in new),
                                         "replica_devices": rd})
    return plan.model_copy(update={"decode": dec})


def with_replicas(plan: Plan, more: list[list[list[str]]]) -> Plan:
    """A colocated ``plan`` with extra replicas on these devices (per replica, per stage)."""
    ph = plan.prefill.model_copy(update={
        "replicas": 1 + len(more),
        "replica_devices": [[list(s.devices) for s in plan.prefill.stages], *more]})
    return plan.model_copy(update={"prefill": ph, "decode": ph})


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo"])
def test_different_tp_per_stage_is_not_exported(engine):
    plan = with_decode(load(DISAGG), [
        {"layers": (0, 40), "tp": 1, "devices": ["node0.d4"]},
        {"layers": (40, 80), "tp": 2, "devices": ["node0.d5", "node0.d6"]},
    ])
    exp = export(plan, engine, check=False)
    (w,) = [w for w in exp.warnings if "tensor-parallel degree" in w]
    assert "decode pool" in w and "TP 1, 2" in w and "not exported" in w
    assert {c.role for c in exp.commands} == {"prefill"}


def test_mixed_gpu_vendors_not_exported_same_vendor_kinds_exported():
    two = [{"layers": (0, 40), "tp": 2, "devices": ["node0.d4", "node0.d5"]},
           {"layers": (40, 80), "tp": 2, "devices": ["node0.d6", "node0.d7"]}]
    amd = with_decode(load(DISAGG), [dict(two[0], device_kind="h100-sxm"),
                                     dict(two[1], device_kind="mi300x")])
    exp = export(amd, "vllm", check=False)
    assert any("mixes GPU vendors" in w and "not exported" in w for w in exp.warnings)
    assert {c.role for c in exp.commands} == {"prefill"}
    nv = with_decode(load(DISAGG), [dict(two[0], device_kind="h100-sxm"),
                                    dict(two[1], device_kind="h200")])
    # (SGLang: vLLM refuses a PP-2 decode pool over NIXL, test_vllm_nixl_with_pp_...)
    exp = export(nv, "sglang", check=False)
    assert any("mixes device kinds (h100-sxm, h200)" in w for w in exp.warnings)
    dec = [s for s in servers(exp.files["launch.sh"], "sglang") if s["role"] == "decode"]
    assert len(dec) == 1 and dec[0]["env"]["SGLANG_PP_LAYER_PARTITION"] == "40,40"
    assert dec[0]["env"]["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"


def test_amd_pool_selects_gpus_with_hip_visible_devices():
    plan = load(COLOC)
    stages = [s.model_copy(update={"device_kind": "mi300x"}) for s in plan.prefill.stages]
    ph = plan.prefill.model_copy(update={"stages": stages})
    plan = plan.model_copy(update={"prefill": ph, "decode": ph})
    (s,) = servers(export(plan, "vllm", check=False).files["launch.sh"], "vllm")
    assert s["env"]["HIP_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert "CUDA_VISIBLE_DEVICES" not in s["env"]


def test_colocated_plan_nothing_expressible_raises():
    plan = load(COLOC)
    stages = [s.model_copy(update={"device_kind": "lpu"}) for s in plan.prefill.stages]
    ph = plan.prefill.model_copy(update={"stages": stages})
    plan = plan.model_copy(update={"prefill": ph, "decode": ph})
    for engine in ("vllm", "sglang", "dynamo"):
        with pytest.raises(InputError, match="can express no part of this plan"):
            export(plan, engine, check=False)


def test_unmappable_device_ids_are_not_pinned():
    plan = with_decode(load(DISAGG), [{"layers": (0, 80), "tp": 4,
                                      "devices": ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]}])
    exp = export(plan, "vllm", check=False)
    assert any("do not name a host" in w for w in exp.warnings)
    dec = [s for s in servers(exp.files["launch.sh"], "vllm") if s["role"] == "decode"]
    assert len(dec) == 1 and "CUDA_VISIBLE_DEVICES" not in dec[0]["env"]
    assert "unpinned)" in exp.files["launch.sh"]


def test_replicas_without_consistent_replica_devices_are_not_pinned():
    # replicas says 2 but replica_devices lists one: replica 2 is exported unpinned
    plan = with_decode(load(DISAGG), [{"layers": (0, 80), "tp": 4, "devices":
                                      ["node0.d4", "node0.d5", "node0.d6", "node0.d7"]}],
                       replicas=2)
    exp = export(plan, "sglang", check=False)
    (w,) = [w for w in exp.warnings if "2 replicas" in w]
    assert "replica_devices lists 1 replica" in w and "without device pinning" in w
    dec = [s for s in servers(exp.files["launch.sh"], "sglang") if s["role"] == "decode"]
    assert len(dec) == 2
    assert dec[0]["env"]["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert "CUDA_VISIBLE_DEVICES" not in dec[1]["env"]
    assert one(dec[0]["flags"], "--port") != one(dec[1]["flags"], "--port")
    (router,) = [a for _, a in parse_script(exp.files["launch.sh"]) if "sglang_router" in a[2]]
    decode_urls = [u for (u,) in parse_flags(router[3:], repeat=True)["--decode"]]
    assert decode_urls == [f"http://node0:{one(dec[0]['flags'], '--port')}",
                           f"http://HOST:{one(dec[1]['flags'], '--port')}"]
    # a device in two replicas, or a replica shaped unlike the stages: the same fallback
    for more in ([[["node0.d4", "node0.d1", "node0.d2", "node0.d3"]]],
                 [[["node0.d0", "node0.d1"]]]):
        plan = with_decode(load(DISAGG), [{"layers": (0, 80), "tp": 4, "devices":
                                          ["node0.d4", "node0.d5", "node0.d6", "node0.d7"]}],
                           replicas=2, more=more)
        exp = export(plan, "vllm", check=False)
        assert any("replica_devices" in w and "without device pinning" in w
                   for w in exp.warnings), exp.warnings
        dec = [s for s in servers(exp.files["launch.sh"], "vllm") if s["role"] == "decode"]
        assert [visible(s["env"]) for s in dec] == [[4, 5, 6, 7], None]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_disaggregated_replicas_each_pinned_and_routed(engine):
    plan = with_decode(load(DISAGG), [{"layers": (0, 80), "tp": 2,
                                      "devices": ["node0.d4", "node0.d5"]}],
                       replicas=2, more=[[["node0.d6", "node0.d7"]]])
    exp = export(plan, engine, check=False)
    assert not any("pinning" in w for w in exp.warnings), exp.warnings
    srv = check_pinning(plan, exp, engine)
    dec = sorted((s for s in srv if s["role"] == "decode"), key=lambda s: s["port"])
    assert [s["pins"] for s in dec] == [{"node0": [4, 5]}, {"node0": [6, 7]}]
    text = exp.files["launch.sh"]
    if engine == "sglang":
        (router,) = [a for _, a in parse_script(text) if "sglang_router" in a[2]]
        urls = [u for (u,) in parse_flags(router[3:], repeat=True)["--decode"]]
        assert urls == [f"http://node0:{s['port']}" for s in dec]
    else:
        assert f"--decoder-hosts node0 node0 --decoder-ports {dec[0]['port']} " \
            f"{dec[1]['port']}" in text
        nixl = [e["VLLM_NIXL_SIDE_CHANNEL_PORT"] for _, e, a in parse_groups(text)
                if is_server(a)]
        assert len(nixl) == 3 == len(set(nixl))


@pytest.mark.parametrize("name", MULTI)
def test_colocated_replicas_router_line(name):
    plan = load(name)
    n = plan.prefill.replicas
    assert n > 1
    # SGLang: one router over every replica's URL, in replica order
    exp = export(plan, "sglang", check=False)
    text = exp.files["launch.sh"]
    srv = check_pinning(plan, exp, "sglang")
    routers = [(g, a) for g, _, a in parse_groups(text) if "sglang_router.launch_router" in a]
    ((group, router),) = routers
    assert group == "router"
    rf = parse_flags(router[3:], repeat=True)
    assert "--pd-disaggregation" not in rf
    (urls,) = rf["--worker-urls"]
    want = []
    for rep in plan.prefill.replica_devices:
        (s,) = [s for s in srv if s["pins"] == expected_pins(rep)]
        want.append(f"http://{s['group']}:{s['port']}")
    assert urls == want and len(set(urls)) == n
    for s in servers(text, "sglang"):  # reachable from the router's host
        assert one(s["flags"], "--host") == "0.0.0.0"
    # vLLM: no router; a comment lists the same URLs for an external load balancer
    exp = export(plan, "vllm", check=False)
    text = exp.files["launch.sh"]
    check_pinning(plan, exp, "vllm")
    assert not [a for _, a in parse_script(text) if a[0] == "python"]
    assert "load balancer" in text and VLLM_DP_LB_DOC in text
    comments = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    vllm_urls = [f"http://{s['group']}:{s['port']}"
                 for rep in plan.prefill.replica_devices
                 for s in pinned_servers(text, "vllm") if s["pins"] == expected_pins(rep)]
    assert " ".join(vllm_urls) in comments


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_multi_host_replicas_each_pinned(engine):
    """Two replicas of a 2-stage pipeline over node0+node1 and node2+node3."""
    plan = load("llama31-405b-h100-4node")
    more = [[[d.replace("node0", "node2") for d in plan.prefill.stages[0].devices],
             [d.replace("node1", "node3") for d in plan.prefill.stages[1].devices]]]
    plan = with_replicas(plan, more)
    exp = export(plan, engine, check=False)
    assert not any("pinning" in w for w in exp.warnings), exp.warnings
    srv = check_pinning(plan, exp, engine)
    assert sorted(s["group"] for s in srv) == ["node0", "node2"]
    cmds = parse_script(exp.files["launch.sh"])
    if engine == "vllm":
        heads = [a for _, a in cmds if a[:3] == ["ray", "start", "--head"]]
        assert len(heads) == 2 and len({a[3] for a in heads}) == 2
        addrs = [e["RAY_ADDRESS"] for e, a in cmds if a[:2] == ["vllm", "serve"]]
        assert sorted(a.split(":")[0] for a in addrs) == ["node0", "node2"]
    else:
        inits = {one(s["flags"], "--dist-init-addr")
                 for s in servers(exp.files["launch.sh"], "sglang")}
        assert sorted(a.split(":")[0] for a in inits) == ["node0", "node2"]
    # Dynamo keeps one worker service with replicas: 2 (Kubernetes places the pods)
    doc = yaml.safe_load(export(plan, "dynamo", check=False).files["deployment.yaml"])
    (worker,) = [c for c in doc["spec"]["components"] if c["name"] == "VllmWorker"]
    assert worker["replicas"] == 2


def test_replicas_on_one_host_get_distinct_ports_and_devices():
    """Eight TP1 replicas on node0: eight servers, GPUs 0..7 once each, ports distinct."""
    plan = load(DEVICES)
    ph = plan.prefill
    ph = ph.model_copy(update={"replicas": 8,
                               "replica_devices": [[[f"node0.d{k}"]] for k in range(8)]})
    plan = plan.model_copy(update={"prefill": ph, "decode": ph})
    for engine in ("vllm", "sglang"):
        exp = export(plan, engine, check=False)
        srv = check_pinning(plan, exp, engine)
        assert sorted(k for s in srv for k in s["pins"]["node0"]) == list(range(8))
        assert len({s["port"] for s in srv}) == 8


def test_precision_flags():
    plan = load(LPU)  # fp8 weights, fp8 KV
    (v,) = servers(export(plan, "vllm", check=False).files["launch.sh"], "vllm")
    assert one(v["flags"], "--quantization") == "fp8"
    assert one(v["flags"], "--kv-cache-dtype") == "fp8"
    (s,) = servers(export(plan, "sglang", check=False).files["launch.sh"], "sglang")
    assert one(s["flags"], "--kv-cache-dtype") == "fp8_e4m3"
    int4 = plan.model_copy(update={"inputs": plan.inputs.model_copy(update={"dtype": "int4"})})
    exp = export(int4, "vllm", check=False)
    assert any("int4 has no single vLLM flag" in w for w in exp.warnings)
    (v,) = servers(exp.files["launch.sh"], "vllm")
    assert "--quantization" not in v["flags"] and "--dtype" not in v["flags"]


# ---------------------------------------------------------------- command line


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("engine,fname", [("vllm", "launch.sh"), ("sglang", "launch.sh"),
                                          ("dynamo", "deployment.yaml")])
def test_cli_writes_files(engine, fname, tmp_path, capsys):
    src = str(GOLDEN / f"{DISAGG}.plan.json")
    out = tmp_path / "deploy"
    rc, stdout, err = run(capsys, ["export", src, "--to", engine, "--out", str(out)])
    assert rc == 0, err
    assert err == ""
    assert [p.name for p in out.iterdir()] == [fname]
    text = (out / fname).read_text()
    assert text == export(load(DISAGG), engine).files[fname]
    mode = (out / fname).stat().st_mode
    assert bool(mode & stat.S_IXUSR) == fname.endswith(".sh")
    assert str(out / fname) in stdout
    rc, stdout, err = run(capsys, ["export", src, "--to", engine])
    assert rc == 0 and stdout == text


def test_cli_lpu_warnings_on_stderr(tmp_path, capsys):
    rc, _out, err = run(capsys, ["export", str(GOLDEN / f"{LPU}.plan.json"), "--to", "vllm",
                                 "--out", str(tmp_path)])
    assert rc == 0
    lines = err.strip().splitlines()
    assert lines and all(x.startswith("autoplan: warning: ") for x in lines)
    assert any("lpu" in x for x in lines)


@pytest.mark.parametrize("argv", [
    ["export", str(GOLDEN / f"{COLOC}.plan.json"), "--to", "tensorrt"],
    ["export", "no/such/plan.json", "--to", "vllm"],
    ["export", str(GOLDEN / "cases.yaml"), "--to", "vllm"],
])
def test_cli_bad_input_exits_2_and_writes_nothing(argv, tmp_path, capsys):
    out = tmp_path / "deploy"
    rc, stdout, err = run(capsys, argv + ["--out", str(out)])
    assert rc == 2
    assert not out.exists()
    assert stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("autoplan: error: ")


def test_cli_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    rc, _, err = run(capsys, ["export", str(GOLDEN / f"{COLOC}.plan.json"), "--to", "vllm",
                              "--out", str(f)])
    assert rc == 2 and "not a folder" in err
    assert f.read_text() == "x"
