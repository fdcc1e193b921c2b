"""Exports checked against the engines' current argument definitions, kept as data files
(tests/data/engine_flags/*.yaml, each with its source URLs and version), and one test per
starting problem of issue 14: servers and proxies bound to 0.0.0.0, concurrent sequences
from the plan's batch or from memory, context lengths on a KV block, engine limits refused.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from test_export import designs_by_role

from autoplan.cli import main
from autoplan.cost.context import plan_context
from autoplan.cost.evaluate import placements
from autoplan.cost.pipeline import memories_for
from autoplan.errors import InputError
from autoplan.export import export
from autoplan.plan_schema import Plan

DATA = Path(__file__).parent / "data" / "engine_flags"
GOLDEN = Path(__file__).parent / "golden"
NAMES = sorted(p.name[: -len(".plan.json")] for p in GOLDEN.glob("*.plan.json"))
DISAGG = "llama31-70b-h100x8-batch16-disaggregated"
LATENCY = "llama31-70b-h100x8-latency"  # colocated, batch 1
THROUGHPUT = "llama31-70b-h100x8-throughput"  # batch 32, prefill batch 1
PP_COLOC = "llama31-405b-h100-4node"  # colocated, PP 2 across hosts


def spec(engine: str) -> dict:
    return yaml.safe_load((DATA / f"{engine}.yaml").read_text())


def load(name: str) -> Plan:
    return Plan.load(GOLDEN / f"{name}.plan.json")


def exported(name: str, engine: str):
    """The export of golden plan ``name``, or None where TensorRT-LLM refuses every pool
    (servers across hosts, which MPI/Slurm start: test_trtllm_multi_host_...)."""
    try:
        return export(load(name), engine)
    except InputError as e:
        if engine == "trtllm" and "MPI or Slurm" in str(e):
            return None
        raise


def test_flag_data_files_name_their_sources():
    for f in DATA.glob("*.yaml"):
        d = yaml.safe_load(f.read_text())
        assert d["version"] and d["sources"], f
        assert all(u.startswith("https://") for u in d["sources"]), f


# ---------------------------------------------------------------- parsing


def lines(text: str) -> list[tuple[dict[str, str], list[str]]]:
    """(environment, argv) of every command of a launch.sh (the lines in case groups)."""
    out = []
    for raw in text.splitlines():
        s = raw.strip()
        if not raw.startswith("    ") or s.startswith("#") or s == ";;":
            continue
        toks = shlex.split(s.rstrip("&").strip().replace('"$HOST_IP"', "HOSTIP"))
        env = {}
        while toks and "=" in toks[0] and not toks[0].startswith("-"):
            k, v = toks.pop(0).split("=", 1)
            env[k] = v
        out.append((env, toks))
    return out


def flags_of(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    k = None
    for t in argv:
        if t.startswith("-") and not t.lstrip("-").replace(".", "").isdigit():
            k = t.split("=", 1)[0]
            out.setdefault(k, [])
            if "=" in t:
                out[k].append(t.split("=", 1)[1])
        elif k is not None:
            out[k].append(t)
    return out


def which(argv: list[str]) -> tuple[str, list[str]]:
    """The documented command an argv runs, and its arguments."""
    if argv[:1] == ["mpirun"]:  # an MPI launch of a server over hosts (flags checked apart)
        argv = argv[argv.index("trtllm-llmapi-launch") + 1:]
    if argv[:2] == ["vllm", "serve"]:
        return "vllm serve", argv[3:]
    if argv[:2] == ["ray", "start"]:
        return "ray start", argv[2:]
    if argv[:3] == ["python", "-m", "sglang.launch_server"]:
        return "sglang.launch_server", argv[3:]
    if argv[:3] == ["python", "-m", "sglang_router.launch_router"]:
        return "sglang_router.launch_router", argv[3:]
    if argv[:2] == ["trtllm-serve", "disaggregated"]:
        return "trtllm-serve disaggregated", argv[2:]
    if argv[:2] == ["trtllm-serve", "serve"]:
        return "trtllm-serve", argv[3:]
    raise AssertionError(f"unexpected command {argv[:3]}")


def check_script(engine: str, text: str) -> list[tuple[str, dict]]:
    d = spec(engine)
    found = []
    for env, argv in lines(text):
        assert set(env) <= set(d["env"]), set(env) - set(d["env"])
        if argv[:1] == ["mpirun"]:  # one MPI world over hosts, then the server
            k = argv.index("trtllm-llmapi-launch")
            f = flags_of(argv[1:k])
            assert set(f) <= set(d["commands"]["mpirun"]["flags"]), set(f)
            argv = argv[k + 1:]
        cmd, args = which(argv)
        documented = d["commands"][cmd]
        f = flags_of(args)
        assert set(f) <= set(documented["flags"]), (cmd, set(f) - set(documented["flags"]))
        for flag, choices in documented.get("choices", {}).items():
            for v in f.get(flag, []):
                assert v in choices, (cmd, flag, v)
        found.append((cmd, f))
    return found


def proxy_line(text: str) -> list[str]:
    line = next(raw for raw in text.splitlines() if "toy_proxy_server.py" in raw
                and "--port" in raw)
    return shlex.split(line.lstrip("# "))


# ---------------------------------------------------------------- every script and YAML


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("name", NAMES)
def test_script_flags_are_the_engines_documented_ones(engine, name):
    exp = exported(name, engine)
    if exp is None:
        return
    found = check_script(engine, exp.files["launch.sh"])
    assert found
    if engine == "vllm" and "--port" in exp.files["launch.sh"] and "toy_proxy" in \
            exp.files["launch.sh"]:
        f = flags_of(proxy_line(exp.files["launch.sh"])[2:])
        assert set(f) <= set(spec("vllm")["commands"]["toy_proxy_server.py"]["flags"])
    for cmd, f in found:
        if cmd == "vllm serve" and "--kv-transfer-config" in f:
            kv = json.loads(f["--kv-transfer-config"][0])
            allowed = spec("vllm")["kv_transfer_config"]
            assert kv["kv_connector"] in allowed["kv_connector"]
            assert kv["kv_role"] in allowed["kv_role"]


@pytest.mark.parametrize("name", NAMES)
def test_trtllm_yaml_fields_are_documented(name):
    plan = load(name)
    exp = exported(name, "trtllm")
    if exp is None:
        return
    d = spec("trtllm")
    opts = {n: yaml.safe_load(t) for n, t in exp.files.items()
            if n.startswith("extra-llm-api-")}
    assert opts
    for o in opts.values():
        assert set(o) <= set(d["llm_api"]["keys"]), set(o) - set(d["llm_api"]["keys"])
        assert set(o["kv_cache_config"]) <= set(d["llm_api"]["kv_cache_config"])
        assert o["kv_cache_config"]["dtype"] in d["llm_api"]["kv_cache_dtype"]
        assert o["kv_cache_config"]["dtype"] == ("fp8" if plan.inputs.kv_dtype == "fp8"
                                                 else "auto")
        assert o["max_seq_len"] % d["tokens_per_block"] == 0
        assert o["max_seq_len"] > plan.inputs.isl + plan.inputs.osl
        if "cache_transceiver_config" in o:
            assert o["cache_transceiver_config"]["backend"] in \
                d["llm_api"]["cache_transceiver_backend"]
    # every server reads its pool's file, with the same TP/PP on the line and in the file
    for _env, argv in lines(exp.files["launch.sh"]):
        cmd, args = which(argv)
        if cmd != "trtllm-serve":
            continue
        f = flags_of(args)
        o = opts[f["--extra_llm_api_options"][0].removeprefix("./")]
        assert int(f["--tp_size"][0]) == o["tensor_parallel_size"]
        assert int(f["--pp_size"][0]) == o["pipeline_parallel_size"]
        assert int(f["--max_batch_size"][0]) == o["max_batch_size"]
        assert f["--host"] == ["0.0.0.0"]


def test_trtllm_disaggregated_config():
    plan = load(DISAGG)
    exp = export(plan, "trtllm")
    d = spec("trtllm")["disaggregated"]
    cfg = yaml.safe_load(exp.files["disagg.yaml"])
    assert set(cfg) <= set(d["keys"])
    assert cfg["hostname"] == "0.0.0.0"
    ports = {}
    for _env, argv in lines(exp.files["launch.sh"]):
        cmd, args = which(argv)
        if cmd == "trtllm-serve":
            f = flags_of(args)
            role = "prefill" if "prefill" in f["--extra_llm_api_options"][0] else "decode"
            ports.setdefault(role, []).append(f["--port"][0])
        elif cmd == "trtllm-serve disaggregated":
            assert flags_of(args) == {"-c": ["./disagg.yaml"]}
    for key, role in (("context_servers", "prefill"), ("generation_servers", "decode")):
        s = cfg[key]
        assert set(s) <= set(d["servers"])
        assert s["num_instances"] == len(s["urls"]) == plan.__getattribute__(role).replicas
        assert [u.rsplit(":", 1)[1] for u in s["urls"]] == ports[role]
    pre = yaml.safe_load(exp.files["extra-llm-api-prefill.yaml"])
    assert pre["disable_overlap_scheduler"] is True
    assert pre["cache_transceiver_config"] == {"backend": "DEFAULT"}


def test_trtllm_fp8_kv_cache():
    plan = load("llama31-70b-fp8-h100x8-lpu576-disaggregated")  # fp8 KV, GPU prefill
    exp = export(plan, "trtllm")
    o = yaml.safe_load(exp.files["extra-llm-api-prefill.yaml"])
    assert o["kv_cache_config"]["dtype"] == "fp8"


def test_trtllm_multi_host_replica_is_one_mpi_world():
    """A server over hosts: one mpirun of as many ranks as the replica's GPUs, each
    through trtllm-llmapi-launch, its flags documented (check_script)."""
    plan = load(PP_COLOC)
    exp = export(plan, "trtllm")
    found = check_script("trtllm", exp.files["launch.sh"])
    assert any(cmd == "trtllm-serve" for cmd, _ in found)
    mpi = [x.split() for x in exp.files["launch.sh"].splitlines()
           if "mpirun" in x and not x.lstrip().startswith("#")]
    assert mpi and all(a[a.index("-np") + 1] == str(plan.prefill.devices) for a in mpi)
    assert any("one MPI world" in w for w in exp.warnings)


# ---------------------------------------------------------------- Dynamo v1beta1


def dgd(exp) -> tuple[dict, dict | None]:
    docs = list(yaml.safe_load_all(exp.files["deployment.yaml"]))
    g = [x for x in docs if x["kind"] == "DynamoGraphDeployment"]
    cm = [x for x in docs if x["kind"] == "ConfigMap"]
    assert len(g) == 1 and len(cm) <= 1
    return g[0], cm[0] if cm else None


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("name", NAMES)
def test_dynamo_v1beta1_fields_are_the_crds(backend, name):
    plan = load(name)
    exp = export(plan, "dynamo", backend=backend)
    d = spec("dynamo")
    doc, cm = dgd(exp)
    assert doc["apiVersion"] == d["apiVersion"] == "nvidia.com/v1beta1"
    assert set(doc["spec"]) <= set(d["spec"])
    assert doc["spec"]["backendFramework"] == backend
    assert "services" not in doc["spec"]
    comps = doc["spec"]["components"]
    assert len({c["name"] for c in comps}) == len(comps)
    assert comps[0]["type"] == "frontend"
    gpus = {}
    for c in comps:
        assert set(c) <= set(d["component"]), set(c) - set(d["component"])
        assert c["type"] in d["componentType"]
        assert set(c.get("multinode", {})) <= set(d["multinode"])
        pod = c["podTemplate"]["spec"]
        assert set(pod) <= set(d["podSpec"])
        main_c = [k for k in pod["containers"] if k["name"] == d["main_container"]]
        assert len(main_c) == 1 and main_c[0]["image"]
        for k in pod["containers"]:
            assert set(k) <= set(d["container"]), set(k) - set(d["container"])
        if c["type"] == "frontend":
            continue
        m = main_c[0]
        assert m["command"] == ["python3", "-m", f"dynamo.{backend}"]
        f = flags_of(m["args"])
        if backend == "vllm":
            ok = set(spec("vllm")["commands"]["vllm serve"]["flags"]) \
                | set(d["workers"]["dynamo.vllm"]["extra_flags"])
            ok -= {"--host", "--port", "--distributed-executor-backend"}
        elif backend == "sglang":
            ok = set(spec("sglang")["commands"]["sglang.launch_server"]["flags"]) - {
                "--port", "--nnodes", "--node-rank", "--dist-init-addr"}
        else:
            ok = set(d["workers"]["dynamo.trtllm"]["flags"])
        assert set(f) <= ok, set(f) - ok
        if c["type"] in ("prefill", "decode"):
            assert f["--disaggregation-mode"] == [c["type"]]
        if c["type"] == "prefill":  # the KV connector prefill workers require
            if backend == "vllm":
                kv = json.loads(f["--kv-transfer-config"][0])
                assert kv["kv_connector"] == "NixlConnector"
            elif backend == "sglang":
                assert f["--disaggregation-transfer-backend"] == ["nixl"]
            else:
                eng = yaml.safe_load(cm["data"][Path(f["--extra-engine-args"][0]).name])
                assert eng["cache_transceiver_config"]["backend"] in \
                    spec("trtllm")["llm_api"]["cache_transceiver_backend"]
        if backend == "trtllm":
            eng = yaml.safe_load(cm["data"][Path(f["--extra-engine-args"][0]).name])
            assert set(eng) <= set(spec("trtllm")["llm_api"]["keys"])
            assert [v["configMap"]["name"] for v in pod["volumes"]] == [cm["metadata"]["name"]]
        n = int(m["resources"]["limits"][d["gpu_resource"]])
        gpus.setdefault(c["type"], []).append(n * c.get("multinode", {}).get("nodeCount", 1))
    # one component per design of each pool (the plan's more designs: components of
    # their own), each with one replica's GPUs
    phases = {r: [ph for ph, _ in ds] for r, ds in designs_by_role(plan, "worker").items()}
    for t, phs in phases.items():
        if any(s.device_kind == "lpu" for ph in phs for s in ph.stages):
            assert t not in gpus
        else:
            assert sorted(gpus[t]) == sorted(ph.devices for ph in phs)


def test_dynamo_backend_defaults_to_the_plans_engine_and_checks_the_name():
    plan = load(LATENCY)
    assert plan.inputs.engine == "vllm"
    doc, _ = dgd(export(plan, "dynamo"))
    assert doc["spec"]["backendFramework"] == "vllm"
    with pytest.raises(InputError, match="unknown Dynamo backend"):
        export(plan, "dynamo", backend="tgi")
    with pytest.raises(InputError, match="does not apply"):
        export(plan, "vllm", backend="sglang")


# ---------------------------------------------------------------- the starting problems


def test_vllm_proxy_and_servers_bind_all_interfaces():
    text = export(load(DISAGG), "vllm").files["launch.sh"]
    argv = proxy_line(text)
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    for cmd, f in check_script("vllm", text):
        if cmd == "vllm serve":
            assert f["--host"] == ["0.0.0.0"]


@pytest.mark.parametrize("name", [LATENCY, THROUGHPUT, DISAGG])
def test_sglang_every_server_and_router_binds_all_interfaces(name):
    found = check_script("sglang", export(load(name), "sglang").files["launch.sh"])
    for cmd, f in found:
        assert f["--host"] == ["0.0.0.0"], cmd


def _fits(plan: Plan, role: str, b: int) -> bool:
    """Whether ``b`` sequences' KV fits every stage of ``role``'s pool (cost model)."""
    pc = plan_context(plan)
    w = pc.work
    phase = plan.prefill if role in ("prefill", "server") else plan.decode
    st = placements(phase)
    # A colocated server's largest step is its in-flight step budget.
    from autoplan.cost.inflight import step_budget

    kv, c, tok = {"prefill": (b, w.isl, w.pb * w.isl), "decode": (b, w.isl + w.osl, b),
                  "server": (b, w.isl + w.osl, max(step_budget(pc.topo, w).tokens, b))}[role]
    mems = memories_for(pc.model, pc.topo, st, kv, c, tok, w.precision)
    return all(m.total_bytes <= w.max_memory_fraction * pc.topo.kinds[s.kind].capacity_bytes
               for m, s in zip(mems, st))


@pytest.mark.parametrize("engine,flag", [("vllm", "--max-num-seqs"),
                                         ("sglang", "--max-running-requests")])
def test_max_seqs_of_a_batch_1_latency_plan_is_what_memory_allows(engine, flag):
    plan = load(LATENCY)
    assert plan.inputs.batch == 1 and plan.inputs.objective == "latency"
    found = check_script(engine, export(plan, engine).files["launch.sh"])
    (seqs,) = {int(f[flag][0]) for cmd, f in found if flag in f}
    assert seqs > 1
    assert _fits(plan, "server", seqs) and not _fits(plan, "server", seqs + 1)


def test_max_seqs_of_a_disaggregated_latency_plan_per_pool():
    plan = load(DISAGG)
    found = check_script("vllm", export(plan, "vllm").files["launch.sh"])
    for cmd, f in found:
        if cmd != "vllm serve":
            continue
        role = "prefill" if "kv_producer" in f["--kv-transfer-config"][0] else "decode"
        n = int(f["--max-num-seqs"][0])
        assert n >= plan.inputs.batch
        assert _fits(plan, role, n) and not _fits(plan, role, n + 1)


def test_max_seqs_of_a_throughput_plan_is_its_batch():
    plan = load(THROUGHPUT)
    for engine, flag in (("vllm", "--max-num-seqs"), ("sglang", "--max-running-requests"),
                         ("trtllm", "--max_batch_size")):
        found = check_script(engine, export(plan, engine).files["launch.sh"])
        assert {int(f[flag][0]) for _c, f in found if flag in f} == {plan.inputs.batch}


def test_max_seqs_when_memory_allows_only_the_plans_batch():
    plan = load(LATENCY)
    d = plan.model_dump()
    d["inputs"]["max_memory_fraction"] = min(s.memory_fraction for s in plan.prefill.stages)
    tight = Plan.model_validate(d)
    found = check_script("vllm", export(tight, "vllm", check=False).files["launch.sh"])
    assert {int(f["--max-num-seqs"][0]) for c, f in found if c == "vllm serve"} == {1}


@pytest.mark.parametrize("engine,flag,block", [("vllm", "--max-model-len", 16),
                                               ("sglang", "--context-length", 16),
                                               ("trtllm", "--max_seq_len", 32)])
def test_context_length_is_rounded_up_to_a_block(engine, flag, block):
    plan = load(LATENCY)
    n = plan.inputs.isl + plan.inputs.osl  # 2304: a whole number of blocks already
    assert n % block == 0
    found = check_script(engine, export(plan, engine).files["launch.sh"])
    (got,) = {int(f[flag][0]) for _c, f in found if flag in f}
    assert got == n + block
    if engine == "sglang":
        assert {f["--page-size"][0] for c, f in found if c == "sglang.launch_server"} == {"16"}


def _with_pp(plan: Plan, role: str) -> Plan:
    """``plan`` with ``role``'s single stage split into two stages of half its TP."""
    d = plan.model_dump()
    ph = d[role]
    (st,) = ph["stages"]
    a, b = st["layers"]
    mid = (a + b) // 2
    devs = st["devices"]
    h = len(devs) // 2
    assert h >= 1
    ph["stages"] = [{**st, "index": 0, "layers": (a, mid), "tp": h, "devices": devs[:h]},
                    {**st, "index": 1, "layers": (mid, b), "tp": h, "devices": devs[h:]}]
    ph["replica_devices"] = [[devs[:h], devs[h:]]]
    return Plan.model_validate(d)


@pytest.mark.parametrize("role", ["decode", "prefill"])
def test_vllm_nixl_with_pp_is_refused_with_the_rule(role):
    plan = _with_pp(load(DISAGG), role)
    for kw in ({"engine": "vllm"}, {"engine": "dynamo", "backend": "vllm"}):
        with pytest.raises(InputError, match=f"{role} pool.*PP 2.*NixlConnector"):
            export(plan, check=False, **kw)
    # SGLang and TensorRT-LLM run it
    export(plan, "sglang", check=False)
    export(plan, "trtllm", check=False)


def test_cli_refuses_an_engine_limit_with_exit_2(tmp_path, capsys):
    f = tmp_path / "p.json"
    f.write_text(_with_pp(load(DISAGG), "decode").model_dump_json())
    # the edited plan no longer validates (figures), so the rule shows through the API;
    # the CLI exits 2 on either, writing nothing
    rc = main(["export", str(f), "--to", "vllm", "--out", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("engine,files", [("trtllm", {"launch.sh", "disagg.yaml",
                                                      "extra-llm-api-prefill.yaml",
                                                      "extra-llm-api-decode.yaml"}),
                                          ("dynamo", {"deployment.yaml"})])
def test_cli_writes_trtllm_and_dynamo_backends(engine, files, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["export", str(GOLDEN / f"{DISAGG}.plan.json"), "--to", engine, "--out", str(out)]
    if engine == "dynamo":
        argv += ["--backend", "trtllm"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == files


@pytest.mark.parametrize("engine,flag", [("vllm", "--max-model-len"),
                                         ("sglang", "--context-length"),
                                         ("trtllm", "--max_seq_len")])
def test_context_length_never_exceeds_the_models_context(engine, flag):
    # Llama-2-7B's context is 4096 tokens: a plan of 2048 + 2048 fits it exactly, and the
    # next whole block above (4112 / 4128) is a length vLLM and SGLang refuse to start with
    from autoplan.search.planner import plan as solve

    p = solve(model="meta-llama/Llama-2-7b-hf", topology="h100-sxm-x1", isl=2048, osl=2048)
    found = check_script(engine, export(p, engine).files["launch.sh"])
    assert {int(f[flag][0]) for _c, f in found if flag in f} == {4096}
