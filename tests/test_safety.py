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


# ---------------------------------------------------------------- hostile but valid plans


def hostile_plan(name: str, *, model: str | None = None, kind: str | None = None,
                 topo: str | None = None, link: str | None = None) -> dict:
    """Golden plan ``name`` with its model, device kind, topology or link names replaced
    (model and topology then embedded): the same figures, so it still validates."""
    from autoplan.catalog import builtin_device_kinds, load_model, load_topology
    from autoplan.cost.context import spec_hash
    from autoplan.inputs.topology import TopologySpec

    p = copy.deepcopy(golden(name))
    i = p["inputs"]
    if model is not None:
        if i["model_spec"] is None:
            i["model_spec"] = load_model(i["model"]).model_dump(mode="json")
        i["model"] = model
    if kind is not None or topo is not None or link is not None:
        spec = (i["topology_spec"] if i["topology_spec"] is not None
                else load_topology(i["topology"]).spec.model_dump(mode="json"))
        if kind is not None:
            old = {g["devices"]["kind"] for g in spec["nodes"]}
            assert len(old) == 1, "one device kind"
            (old,) = old
            k = spec["device_kinds"].pop(old, None) or builtin_device_kinds()[old].model_dump(
                mode="json", exclude={"calibration"})
            spec["device_kinds"][kind] = {**k, "calibration": None, "calibrate_like": old}
            for g in spec["nodes"]:
                g["devices"]["kind"] = kind
            for ph in ("prefill", "decode"):
                for s in p[ph]["stages"]:
                    s["device_kind"] = kind
        if link is not None:
            for g in spec["nodes"]:
                if g.get("fabric"):
                    g["fabric"]["kind"] = link
            for n in spec["networks"]:
                n["kind"] = link
        if topo is not None:
            spec["name"] = topo
            i["topology"] = topo
        i["topology_spec"] = spec
        i["topology_sha256"] = spec_hash(TopologySpec.model_validate(spec))
    return p


def test_hostile_plans_validate():
    from autoplan.rules.validate import validate

    for name in (COLOC, DISAGG, "llama31-405b-h100-4node"):
        rep = validate(hostile_plan(name, model="org/m" + EVIL, kind="k" + EVIL,
                                    topo="t" + EVIL, link="l" + EVIL))
        assert rep.ok, rep.errors


# ================================================================ 1. launch.sh, 2. Dynamo, 3. flags

BROKEN = {  # schema-valid plans the validator refuses
    "reversed layers": lambda p: p["prefill"]["stages"][0].update(layers=[80, 0]),
    "empty stages": lambda p: p["decode"].update(stages=[]),
    "empty devices": lambda p: p["prefill"]["stages"][0].update(devices=[]),
    "unknown device": lambda p: p["prefill"]["stages"][0]["devices"].__setitem__(
        0, "$(touch PWNED).d0"),
    "unknown host": lambda p: p["decode"]["replica_devices"][0][0].__setitem__(
        0, "evil/gpu0"),
    "stale figures": lambda p: p.update(ttft_ms=p["ttft_ms"] / 2),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", ["export", "explain", "chart"])
def test_commands_refuse_plans_validate_refuses(case, command, tmp_path):
    p = copy.deepcopy(golden(COLOC))
    BROKEN[case](p)
    Plan.model_validate(p)  # schema-valid
    f = write_plan(tmp_path / "p.json", p)
    out = tmp_path / "out"
    extra = {"export": ["--to", "vllm", "--out", out], "explain": ["--no-solve"],
             "chart": ["--out", out]}[command]
    rc, stdout, err = run([command, f, *extra])
    one_line(rc, err, 2, "plan is invalid")
    assert stdout == "" and not out.exists() and not list(tmp_path.rglob("PWNED*"))
    if command == "export":
        with pytest.raises(InputError, match="plan is invalid"):
            export(p, "sglang")


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo"])
@pytest.mark.parametrize("model", ["--trust-remote-code", "-x", "--model=evil"])
def test_export_refuses_a_model_that_reads_as_a_flag(engine, model, tmp_path):
    f = write_plan(tmp_path / "p.json", hostile_plan(COLOC, model=model))
    rc, out, err = run(["export", f, "--to", engine])
    one_line(rc, err, 2, "flag")
    assert out == ""
    with pytest.raises(InputError, match="flag"):
        export(Plan.load(f), engine, check=False)


# ---------------------------------------------------------------- running launch.sh

ENGINE_STUBS = ("vllm", "python", "python3", "ray", "trtllm-serve", "mpirun")
ENV_SEEN = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "VLLM_PP_LAYER_PARTITION",
            "SGLANG_PP_LAYER_PARTITION", "VLLM_NIXL_SIDE_CHANNEL_PORT",
            "VLLM_NIXL_SIDE_CHANNEL_HOST", "RAY_ADDRESS")
STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
                        "env": {{k: os.environ[k] for k in {env!r} if k in os.environ}}}}) + "\\n")
"""


def stub_bin(tmp: Path) -> Path:
    """Stub engines that only record their argv and environment."""
    d = tmp / "bin"
    d.mkdir(exist_ok=True)
    for name in ENGINE_STUBS:
        f = d / name
        f.write_text(STUB.format(python=sys.executable, env=ENV_SEEN))
        f.chmod(0o755)
    return d


def group_of(cmd) -> str:
    if cmd.role == "router":
        return "router"
    return cmd.host if cmd.host is not None else "unpinned"


def run_script(exp, tmp: Path) -> dict[str, list[dict]]:
    """Run launch.sh for every group with stub engines on PATH (the system's tools too:
    an injected `touch` would run); what each group ran, by group."""
    from autoplan.export.script import FILE

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    work = tmp / "run"
    work.mkdir()
    script = work / FILE
    script.write_text(exp.files[FILE])
    log = tmp / "calls.jsonl"
    env = {"PATH": f"{stub_bin(tmp)}:/usr/bin:/bin", "STUB_LOG": str(log),
           "HOST_IP": "10.0.0.7", "HOME": str(work)}
    ran: dict[str, list[dict]] = {}
    for group in dict.fromkeys(group_of(c) for c in exp.commands):
        log.write_text("")
        r = subprocess.run([bash, FILE, group], cwd=work, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
        assert r.returncode == 0, (group, r.stderr)
        ran[group] = [json.loads(ln) for ln in log.read_text().splitlines()]
    r = subprocess.run([bash, FILE, "no-such-group"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "unknown group 'no-such-group'" in r.stderr, r.stderr
    assert sorted(p.name for p in work.iterdir()) == [FILE]  # nothing else was made
    assert not list(tmp.rglob("PWNED*"))
    return ran


def expect_ran(exp, ran: dict[str, list[dict]]) -> None:
    """Each group ran exactly its commands of the export: argv and environment."""
    for group, calls in ran.items():
        want = [{"argv": c.argv, "env": {k: ("10.0.0.7" if v == "$HOST_IP" else v)
                                        for k, v in c.env.items()}}
                for c in exp.commands if group_of(c) == group]
        def key(x):
            return json.dumps(x, sort_keys=True)
        assert sorted(map(key, calls)) == sorted(map(key, want)), group


SCRIPT_PLANS = [COLOC, DISAGG, "llama31-405b-h100-4node", "deepseek-v3-h100-4node",
                "llama31-70b-h100x8-throughput", "llama31-8b-h100-4node-devices"]


# TensorRT-LLM servers spanning hosts start as one MPI world (mpirun, stubbed here).
MULTI_HOST = ("llama31-405b-h100-4node", "deepseek-v3-h100-4node")


@pytest.mark.parametrize("engine,name", [(e, n) for e in ("vllm", "sglang", "trtllm")
                                         for n in SCRIPT_PLANS])
def test_launch_sh_runs_only_the_plan(engine, name, tmp_path):
    """Hostile (printable) model, topology, device-kind and link names in a plan that
    validates: launch.sh, run for every group with stub engines, runs exactly the
    export's commands and nothing else (no PWNED file)."""
    plan = hostile_plan(name, model="org/m" + EVIL, kind="k" + EVIL, topo="t" + EVIL,
                        link="l" + EVIL)
    exp = export(plan, engine)
    expect_ran(exp, run_script(exp, tmp_path))
    model = next(c.argv for c in exp.commands if c.role in ("server", "prefill", "decode"))
    assert "org/m" + EVIL in model  # the name reaches the engine as one argument


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_device_hosts_from_an_unchecked_plan_are_quoted(engine, tmp_path):
    """Device ids whose host part is shell syntax (a plan exported with check=False):
    every group, the Ray address and the catch-all line stay data."""
    text = json.dumps(golden("llama31-405b-h100-4node"))
    for k in range(4):
        text = text.replace(f'"node{k}.d', f'"$(touch PWNED)n{k}`touch PWNED2`.d')
    exp = export(json.loads(text), engine, check=False)
    hosts = {c.host for c in exp.commands} - {None}
    assert hosts and all("$(touch PWNED)" in h for h in hosts)
    expect_ran(exp, run_script(exp, tmp_path))


def test_comment_lines_stay_one_line():
    from autoplan.export.common import comment

    assert comment("a\nb\r\x1b") == "a\\nb\\r\\x1b"
    assert comment("plain $(x)") == "plain $(x)"


@pytest.mark.parametrize("backend", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("name", [COLOC, DISAGG, "llama31-405b-h100-4node"])
def test_dynamo_manifest_is_data(name, backend):
    """The Dynamo YAML is the serializer's: plan text only as values (annotations, args,
    the TensorRT-LLM engine YAML in a ConfigMap), comment lines fixed, whatever the names."""
    evil = "k: [x] {y} # z & *w !t | > " + EVIL
    # a model with '$' is refused (test below); the device kind and topology names keep it
    plan = hostile_plan(name, model="org/" + evil.replace("$", "S"), kind="k" + evil,
                        topo="t" + evil)
    text = export(plan, "dynamo", backend=backend).files["deployment.yaml"]
    clean = export(golden(name), "dynamo", backend=backend).files["deployment.yaml"]
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert comments == [ln for ln in clean.splitlines() if ln.startswith("#")]
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == [d["kind"] for d in yaml.safe_load_all(clean)]
    (doc,) = [d for d in docs if d["kind"] == "DynamoGraphDeployment"]
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert "org/" + evil.replace("$", "S") in doc["metadata"]["annotations"]["autoplan/plan"]
    flag = "--model" if backend == "vllm" else "--model-path"
    for comp in doc["spec"]["components"]:
        args = comp["podTemplate"]["spec"]["containers"][0].get("args")
        if args:
            assert args[args.index(flag) + 1] == "org/" + evil.replace("$", "S")


@pytest.mark.parametrize("model", ["$(HF_TOKEN)", "org/a$b", "org/${HOME}"])
def test_a_model_name_with_a_dollar_is_not_exported_to_dynamo(model, tmp_path):
    """Kubernetes expands $(NAME) in a worker's args from its environment (the HF token
    secret included) and the operator's shell wrap of multinode workers expands $ again:
    no quoting holds for both, so the export refuses the name, writing nothing."""
    f = write_plan(tmp_path / "p.json", hostile_plan(COLOC, model=model))
    rc, out, err = run(["export", f, "--to", "dynamo", "--out", tmp_path / "out"])
    one_line(rc, err, 2, "Dynamo", "contains '$'")
    assert not (tmp_path / "out").exists()


# ================================================================ 4. outputs

PLAN_ARGS = ["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
             "--json", "-o"]


def test_an_output_onto_a_symlink_replaces_the_link_and_leaves_its_target(tmp_path):
    # written through a temporary file and a rename: the link itself is replaced, so a
    # link planted in a shared folder cannot redirect the write onto another file
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    rc, out, err = run([*PLAN_ARGS, tmp_path / "link.json"])
    assert rc == 0, err
    assert not (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "target.json").read_text() == "old"
    assert json.loads((tmp_path / "link.json").read_text())["schema_version"] == 1


def calibrate_args(tmp: Path) -> list:
    csv = tmp / "rows.csv"
    csv.write_text(CSV_HEAD + CSV_ROWS)
    return ["calibrate", csv, "--no-loo", "-o"]


CSV_HEAD = "id,engine,model,device_kind,tp,pp,weight_dtype,batch,isl,context,metric,value\n"
CSV_ROWS = ("r1,e,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,1,2048,,ttft_ms,40\n"
            "r2,e,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,1,,2048,tpot_ms,8\n")


@pytest.mark.parametrize("command", ["plan", "calibrate"])
def test_output_onto_a_fifo_or_device_is_refused(command, tmp_path):
    """`-o` onto a FIFO, or a device node, must not replace it with a regular file (as
    root, `-o /dev/null` would replace the system's /dev/null)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    head = PLAN_ARGS if command == "plan" else calibrate_args(tmp_path)
    for target in (fifo, Path("/dev/null")):
        rc, _out, err = run([*head, target])
        one_line(rc, err, 2, "regular file")
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("command", ["plan", "calibrate", "export", "chart", "pareto"])
def test_empty_output_path_is_an_error(command, tmp_path):
    plan = GOLDEN / f"{COLOC}.plan.json"
    argv = {"plan": [*PLAN_ARGS, ""], "calibrate": [*calibrate_args(tmp_path), ""],
            "export": ["export", plan, "--to", "vllm", "--out", ""],
            "chart": ["chart", plan, "--out", ""],
            "pareto": ["pareto", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                       "h100-sxm-x1", "--max-devices", "1", "--workers", "1", "--out", ""]}
    rc, _out, err = run(argv[command])
    one_line(rc, err, 2, "empty")


def test_pareto_out_under_a_file_is_refused_before_the_sweep(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, out, err = run(["pareto", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                        "h100-sxm-x1", "--max-devices", "1", "--workers", "1", "--json",
                        "--out", f / "sub"])
    one_line(rc, err, 2, "not a folder")
    assert out == "" and f.read_text() == "x"


SIGTERM_WRITER = """
import os, signal, sys
from autoplan import files
real = os.replace
def replace(a, b):
    os.kill(os.getpid(), signal.SIGTERM)  # between the write and the rename
    real(a, b)
files.os.replace = replace
files.write_atomic(sys.argv[1], "new contents\\n" * 1000)
"""


@pytest.mark.parametrize("had_old", [True, False])
def test_sigterm_between_write_and_rename_leaves_no_temporary_file(had_old, tmp_path):
    target = tmp_path / "out.json"
    if had_old:
        target.write_text("old\n")
    r = subprocess.run([sys.executable, "-c", SIGTERM_WRITER, str(target)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode in (143, -15), r
    assert "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.json"] if had_old else [])
    if had_old:
        assert target.read_text() == "old\n"


# ================================================================ 6. hangs, memory, bounds


def odd_paths(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Paths that are not regular files, and the words their message must hold."""
    fifo = tmp / "fifo.json"
    if not fifo.exists():
        os.mkfifo(fifo)
    loop = tmp / "loop.json"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    dangling = tmp / "dangling.yaml"
    if not dangling.is_symlink():
        dangling.symlink_to(tmp / "nowhere")
    return {"fifo": (fifo, "FIFO"), "zero": (Path("/dev/zero"), "device"),
            "loop": (loop, "loop"), "folder": (tmp, "directory"),
            "long": (tmp / ("x" * 300 + ".json"), "too long"),
            "dangling": (dangling, "does not exist")}


@pytest.mark.parametrize("case", ["fifo", "zero", "loop", "folder", "long", "dangling"])
@pytest.mark.parametrize("command", ["validate", "explain", "chart", "export", "calibrate",
                                     "model", "topology", "profile"])
def test_inputs_must_be_regular_files(case, command, tmp_path):
    """No read blocks on a FIFO or runs through /dev/zero; a symlink loop, a folder, a
    name over 255 bytes each get their own line (not "does not exist", no traceback)."""
    path, words = odd_paths(tmp_path)[case]
    if command == "model" and case == "folder":
        words = "without config.json"
    argv = {"validate": ["validate", path], "explain": ["explain", path, "--no-solve"],
            "chart": ["chart", path, "--out", tmp_path / "c"],
            "export": ["export", path, "--to", "vllm"],
            "calibrate": ["calibrate", path, "--no-loo"],
            "model": ["estimate", "--model", path, "--topology", "h100-sxm-x1"],
            "topology": ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", path],
            "profile": ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                        "h100-sxm-x1", "--profile", path]}[command]
    rc, out, err = run(argv)
    one_line(rc, err, 2, words)
    assert out == ""


def test_oversized_inputs_are_refused_before_reading(tmp_path, monkeypatch):
    from autoplan.inputs import reading

    big = tmp_path / "big.json"
    big.write_text(" " * 2000)
    monkeypatch.setattr(reading, "MAX_INPUT_BYTES", 1000)
    rc, _, err = run(["estimate", "--model", big, "--topology", "h100-sxm-x1"])
    one_line(rc, err, 2, "more than the 1000 bytes")


# ================================================================ 5. Ctrl-C


def test_ctrl_c_before_any_plan_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    """With current typer a KeyboardInterrupt became Exit(130), which main returned as 0:
    `autoplan plan -o p.json && autoplan export p.json` went on with a stale plan."""
    from autoplan.search import planner

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(planner, "plan", interrupted)
    old = tmp_path / "p.json"
    old.write_text("stale\n")
    rc, out, err = run([*PLAN_ARGS, old])
    assert rc == 130 and out == ""
    assert err == "autoplan: interrupted: no plan found yet; nothing written\n"
    assert old.read_text() == "stale\n"


def test_ctrl_c_with_a_plan_so_far_writes_it_and_says_so(tmp_path, monkeypatch):
    from autoplan.search import planner

    p = Plan.model_validate({**golden(COLOC), "status": "feasible",
                             "stop_reason": "interrupted"})
    monkeypatch.setattr(planner, "plan", lambda *a, **k: p)
    f = tmp_path / "p.json"
    rc, _out, err = run([*PLAN_ARGS, f])
    assert rc == 130
    assert err.startswith("autoplan: interrupted: the best plan found so far (feasible")
    assert err.rstrip().endswith(f"is written to {f}") and err.count("\n") == 1
    assert Plan.load(f) == p


@pytest.mark.parametrize("where", ["calibrate", "write"])
def test_ctrl_c_elsewhere_exits_130_with_one_line(where, tmp_path, monkeypatch):
    from autoplan import files
    from autoplan.calibrate import fit

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    if where == "calibrate":
        monkeypatch.setattr(fit, "fit_all", interrupted)
    else:
        monkeypatch.setattr(files.os, "replace", interrupted)
    target = tmp_path / "out.yaml"
    target.write_text("old\n")
    rc, _out, err = run([*calibrate_args(tmp_path), target])
    assert (rc, err) == (130, "autoplan: interrupted\n")
    assert target.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


INTERRUPT_IMPORT = """
import sys
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Stop())
"""


@pytest.mark.parametrize("module", ["pydantic", "typer", "networkx"])
@pytest.mark.parametrize("how", ["python -m", "script"])
def test_ctrl_c_during_start_up_imports_prints_no_traceback(module, how, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(INTERRUPT_IMPORT.format(module=module))
    env = {**os.environ, "PYTHONPATH": f"{site}:{ROOT}"}
    if how == "python -m":
        argv = [sys.executable, "-m", "autoplan", "schema"]
    else:  # what the `autoplan` console script does
        argv = [sys.executable, "-c", ("import sys; sys.argv = ['/usr/bin/autoplan', 'schema']; "
                "from autoplan.__main__ import entry; sys.exit(entry())")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
                       check=False)
    assert (r.returncode, r.stderr, r.stdout) == (130, "autoplan: interrupted\n", "")


# ================================================================ 7. tracebacks


def test_output_to_a_full_device_is_one_line(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "autoplan", "schema"], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120, check=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("autoplan: error: cannot write the output") and \
        r.stderr.count("\n") == 1, r.stderr


def test_ctrl_c_in_a_sweep_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    from autoplan.sweep import pareto

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pareto, "_one", interrupted)
    rc, out, err = run(["pareto", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                        "h100-sxm-x1", "--max-devices", "1", "--workers", "1",
                        "--out", tmp_path / "p"])
    assert (rc, out, err) == (130, "", "autoplan: interrupted\n")
    assert not (tmp_path / "p").exists()


# ================================================================ 8. silent or misleading


def test_time_limited_throughput_plan_says_time_limit_and_no_proven_gap(tmp_path):
    """Four device classes (every mixed design enumerated) and a limit that
    stops the fronts (the whole search takes about 0.12 s here): the reason is the time
    limit, and the plan claims no bound (it used to copy the value found into
    best_bound: gap 0.00%)."""
    from tests.test_replicas import _mixed_topology

    topo = tmp_path / "mixed.yaml"
    _mixed_topology(topo)
    f = tmp_path / "p.json"
    rc, _out, err = run(["plan", "--model", "meta-llama/Llama-3.1-405B", "--topology", topo,
                        "--batch", "16", "--prefill-batch", "1", "--objective", "throughput",
                        "--ttft-slo-ms", "2000", "--tpot-slo-ms", "100", "--time-limit-s", "0.05",
                        "--json", "-o", f])
    if rc == 3:  # a slower machine found nothing in the limit: it must say so, not infeasible
        assert "time limit" in err and not f.exists(), err
        return
    assert rc == 0, err
    p = Plan.load(f)
    assert p.status == "feasible" and p.stop_reason == "time_limit"
    assert p.best_bound is None and p.gap is None
    from rich.console import Console

    from autoplan.render.terminal import print_plan

    buf = io.StringIO()
    print_plan(p, Console(file=buf, width=200))
    assert "gap unknown" in buf.getvalue()


def test_latency_plan_interrupted_before_the_other_placement_has_no_proven_gap(monkeypatch):
    """Ctrl-C after the colocated solve: the disaggregated placement was never searched,
    so the colocated bound is no bound on the plan (it claimed gap 0.00%)."""
    from autoplan.search import planner

    calls = []
    real = planner.solve

    def solve(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(planner, "solve", solve)
    monkeypatch.setattr(planner, "interrupted", lambda: bool(calls))
    p = planner.plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", placement="auto")
    assert len(calls) == 1 and p.stop_reason == "interrupted" and p.status == "feasible"
    assert p.best_bound is None and p.gap is None


# ---------------------------------------------------------------- bounds in plans

TAMPER = {  # (path, value, the field or bound the message names)
    "isl 10^400": (("inputs", "isl"), 10 ** 400, "inputs.isl"),
    "batch 2^70": (("inputs", "batch"), 1 << 70, "inputs.batch"),
    "nan slo": (("inputs", "ttft_slo_ms"), float("nan"), "inputs.ttft_slo_ms"),
    "inf slo": (("inputs", "tpot_slo_ms"), float("inf"), "inputs.tpot_slo_ms"),
    "huge rate": (("inputs", "request_rate"), 1e308, "inputs.request_rate"),
    "negative slo": (("inputs", "ttft_slo_ms"), -1.0, "inputs.ttft_slo_ms"),
    "infinite stage time": (("prefill", "stages", 0, "time_ms"), float("inf"), "time_ms"),
    "nan figure": (("ttft_ms",), float("nan"), "ttft_ms"),
    "10^9 replicas": (("decode", "replicas"), 10 ** 9, "decode.replicas"),
    "tp 2^63": (("prefill", "stages", 0, "tp"), 1 << 63, "tp"),
    "budget 2^63": (("inputs", "max_devices"), 1 << 63, "inputs.max_devices"),
    "layer 10^12": (("prefill", "stages", 0, "layers"), [0, 10 ** 12], "layers"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
@pytest.mark.parametrize("command", ["validate", "export", "chart", "explain"])
def test_plan_numbers_are_finite_and_bounded(case, command, tmp_path):
    """A NaN SLO used to validate; 10^400 tokens raised OverflowError; 10^9 replicas
    built a billion export lines; an infinite stage time reached the chart."""
    path, value, named = TAMPER[case]
    p = copy.deepcopy(golden(COLOC))
    node = p
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    f = write_plan(tmp_path / "p.json", p)  # json writes NaN / Infinity tokens
    extra = {"export": ["--to", "vllm"], "chart": ["--out", tmp_path / "c"],
             "explain": ["--no-solve"]}.get(command, [])
    rc, out, err = run([command, f, *extra])
    one_line(rc, err, 2, named)
    assert out == "" and not (tmp_path / "c").exists()


def test_stage_count_beyond_any_model_is_refused_fast(tmp_path):
    p = copy.deepcopy(golden(COLOC))
    st = p["prefill"]["stages"][0]
    p["prefill"]["stages"] = [dict(st, index=k, layers=[k, k + 1], devices=["node0.d0"], tp=1)
                              for k in range(40_000)]
    f = write_plan(tmp_path / "p.json", p)
    rc, _out, err = run(["export", f, "--to", "vllm"])
    one_line(rc, err, 2, "prefill.stages")


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo"])
def test_export_is_linear_in_stages_and_replicas(engine):
    """At the schema's bounds (4096 stages; 4096 replicas of 16 stages) an unchecked
    export takes well under a second (40,000 stages took 34 s: a device count per
    device, and every replica's comment listing every cut)."""
    import time

    p = copy.deepcopy(golden(COLOC))
    st = dict(p["prefill"]["stages"][0], tp=1)
    stages = [dict(st, index=k, layers=[k, k + 1], devices=[f"node{k}.d0"]) for k in range(4096)]
    long = {**p["prefill"], "stages": stages, "replicas": 1, "devices": 4096,
            "replica_devices": [[s["devices"] for s in stages]]}
    wide_stages = stages[:16]
    reps = [[[f"node{r}.d{k}"] for k in range(16)] for r in range(4096)]
    reps[0] = [s["devices"] for s in wide_stages]
    wide = {**p["prefill"], "stages": wide_stages, "replicas": 4096, "devices": 16,
            "replica_devices": reps}
    for phase in (long, wide):
        plan = Plan.model_validate({**p, "prefill": phase, "decode": phase})
        t0 = time.perf_counter()
        exp = export(plan, engine, check=False)
        assert time.perf_counter() - t0 < 5
        assert exp.commands


# ---------------------------------------------------------------- charts


@pytest.mark.parametrize("name", [COLOC, DISAGG, "llama31-405b-h100-4node"])
def test_chart_names_with_dollars_are_text_not_mathtext(name, tmp_path):
    """Device-kind, topology, link and model names with `$...$` were parsed as matplotlib
    mathtext (a ValueError traceback for `$x^{$`)."""
    pytest.importorskip("matplotlib")
    plan = hostile_plan(name, model="org/m$\\sqrt{$ $x$", kind="k$x^{$", topo="t$\\frac$ $",
                        link="l$_$ $")
    f = write_plan(tmp_path / "p.json", plan)
    rc, _out, err = run(["chart", f, "--out", tmp_path / "c"])
    assert rc == 0, err
    svg = {n: (tmp_path / "c" / f"{n}.svg").read_text() for n in ("roofline", "topology")}
    assert "k$x^{$" in svg["roofline"]  # drawn as written (SVG text)
    assert "t$\\frac$ $" in svg["topology"] and "l$_$ $" in svg["topology"]


def test_pareto_chart_title_with_dollars(tmp_path):
    pytest.importorskip("matplotlib")
    from autoplan.render.pareto import chart

    rows = [{"ttft_ms": 10.0, "tpot_ms": 1.0, "devices": 1, "label": "a"},
            {"ttft_ms": 5.0, "tpot_ms": 2.0, "devices": 2, "label": "b"}]
    paths = chart(rows, tmp_path, "m$x^{$ on t")
    assert all(p.exists() for p in paths)


# ---------------------------------------------------------------- YAML and CSV


@pytest.mark.parametrize("text", [
    "name: a\nname: b\n",
    "device_kinds:\n  k: {description: x}\n  k: {description: y}\n",
    "a: {b: 1, b: 2}\n",
    "a: &x 1\nb: *x\na: 3\n",
])
@pytest.mark.parametrize("shipped", [False, True])
def test_duplicate_yaml_keys_are_refused(text, shipped):
    """By the loader of users' files and by the (libyaml) loader of the package's own."""
    from autoplan.inputs.safe_yaml import YAML_ERRORS, safe_load_yaml

    with pytest.raises(YAML_ERRORS, match="duplicate key"):
        safe_load_yaml(text, shipped=shipped)


def test_users_files_keep_the_nesting_limit_and_shipped_files_load_alike(tmp_path):
    """A user's topology path is read by the nesting-limited loader even when it names a
    copy of a shipped file; the package's files parse to the same data either way."""
    from autoplan.catalog import _read_yaml, _shipped, catalog_root
    from autoplan.inputs.safe_yaml import safe_load_yaml

    ship = catalog_root() / "hardware" / "device_kinds.yaml"
    copy = tmp_path / "device_kinds.yaml"
    copy.write_text(ship.read_text())
    assert _shipped(ship) and not _shipped(copy)
    assert _read_yaml(copy) == _read_yaml(ship) == safe_load_yaml(ship.read_text())
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError, match="nesting deeper"):
        _read_yaml(deep)


def test_a_device_kind_defined_twice_is_an_error(tmp_path):
    t = topology(kind="k")
    text = yaml.safe_dump(t)
    k = yaml.safe_dump({"k": t["device_kinds"]["k"]}, default_flow_style=True).strip()[1:-1]
    text = text.replace("device_kinds:\n", f"device_kinds:\n  {k}\n", 1)
    assert text.count("\n  k:") == 2
    f = tmp_path / "t.yaml"
    f.write_text(text)
    rc, _, err = run(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", f])
    one_line(rc, err, 2, "duplicate key")


def test_duplicate_keys_in_a_profile_are_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("device_kinds:\n  h100-sxm: {compute_efficiency: 0.5}\n"
                 "  h100-sxm: {compute_efficiency: 0.6}\n")
    rc, _, err = run(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                      "h100-sxm-x1", "--profile", f])
    one_line(rc, err, 2, "duplicate key")


@pytest.mark.parametrize("case,rows,words", [
    ("header only", "", "no measurement rows"),
    ("tp 2.5", "r1,e,meta-llama/Llama-3.1-8B,h100-sxm,2.5,1,bf16,1,2048,,ttft_ms,40\n",
     "tp must be a positive whole number"),
    ("batch 0.5", "r1,e,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,0.5,2048,,ttft_ms,40\n",
     "batch must be a positive whole number"),
    ("batch 0", "r1,e,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,0,2048,,ttft_ms,40\n",
     "batch must be a positive whole number"),
    ("isl 1e30", "r1,e,meta-llama/Llama-3.1-8B,h100-sxm,1,1,bf16,1,1e30,,ttft_ms,40\n",
     "isl must be at most"),
])
def test_calibrate_refuses_what_it_used_to_take_silently(case, rows, words, tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text(CSV_HEAD + rows)
    out = tmp_path / "p.yaml"
    rc, _, err = run(["calibrate", csv, "--no-loo", "-o", out])
    one_line(rc, err, 2, words)
    assert not out.exists()


def test_calibrate_reads_an_excel_utf8_csv(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the first column was read as
    '\\ufeffid' and the file refused as missing its id column."""
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(CSV_HEAD + CSV_ROWS, encoding="utf-8")
    bom.write_text(CSV_HEAD + CSV_ROWS, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    outs = []
    for f in (plain, bom):
        rc, out, err = run(["calibrate", f, "--no-loo", "--json"])
        assert rc == 0, err
        outs.append(json.loads(out))
    assert outs[0] == outs[1]


# ---------------------------------------------------------------- names and numbers in arguments

LONG = "x" * 300  # one path component over NAME_MAX: ENAMETOOLONG from is_file()


@pytest.mark.parametrize("argv,words", [
    (["estimate", "--model", LONG, "--topology", "h100-sxm-x1"], "too long"),
    (["estimate", "--model", LONG + ".json", "--topology", "h100-sxm-x1"], "too long"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", LONG], "too long"),
    (["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
      "--profile", LONG], "too long"),
    (["calibrate", LONG], "too long"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1", "-o",
      LONG], "too long"),
    (["chart", GOLDEN / f"{COLOC}.plan.json", "--out", Path(LONG) / "c"], "too long"),
    (["estimate", "--model", "a" * 5000, "--topology", "h100-sxm-x1"], "too long"),
    (["plan", "--model", "a" * 5000, "--topology", "h100-sxm-x1"], "4096 bytes"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
      "--prefill-batch", 10 ** 20], "--prefill-batch"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
      "--max-devices", 2 ** 63], "--max-devices"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
      "--objective", "devices", "--request-rate", "1e308"], "--request-rate"),
    (["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x1",
      "--isl", 10 ** 400], "--isl"),
    (["explain", GOLDEN / f"{COLOC}.plan.json", "--time-limit-s", "nan"], "--time-limit-s"),
    (["explain", GOLDEN / f"{COLOC}.plan.json", "--time-limit-s", "1e308"], "--time-limit-s"),
])
def test_odd_arguments_are_one_line(argv, words, tmp_path):
    rc, _out, err = run(argv)
    one_line(rc, err, 2, words)


@pytest.mark.parametrize("field", ["model", "topology"])
def test_long_names_inside_plans_are_one_line(field, tmp_path):
    p = copy.deepcopy(golden(COLOC))
    p["inputs"][field] = LONG
    f = write_plan(tmp_path / "p.json", p)
    for argv in (["validate", f], ["export", f, "--to", "vllm"]):
        rc, _out, err = run(argv)
        one_line(rc, err, 2, "too long")


MARKUP = "[/x] [bold red]y[/] [link=file:///etc/passwd]z"


def test_names_are_not_rich_markup_in_the_terminal(tmp_path):
    """A name with `[/x]` raised rich's MarkupError (a traceback) in explain, plan and
    estimate output; `[link=...]` would have been a live link."""
    from rich.console import Console

    from autoplan.render.terminal import print_plan

    plan = hostile_plan(COLOC, model="org/m" + MARKUP, kind="k" + MARKUP, topo="t" + MARKUP)
    f = write_plan(tmp_path / "p.json", plan)
    rc, out, err = run(["explain", f, "--no-solve"])
    assert rc == 0, err
    assert "org/m" + MARKUP in " ".join(out.split())
    buf = io.StringIO()
    print_plan(Plan.load(f), Console(file=buf, width=400))
    assert "k" + MARKUP in buf.getvalue()
    topo = tmp_path / f"t{MARKUP.replace('/', '|')}.yaml"
    topo.write_text(yaml.safe_dump(topology(nodes=1, per_node=1)))
    rc, out, err = run(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", topo])
    assert rc == 0, err
    csv = tmp_path / "rows.csv"
    csv.write_text(CSV_HEAD + CSV_ROWS.replace("r1,", f'"{MARKUP}",'))
    rc, out, err = run(["calibrate", csv, "--no-loo"])
    assert rc == 0, err
    assert "[/x]" in out and "[bold" in out  # shown, not taken as markup


@pytest.mark.parametrize("command", ["chart", "export"])
def test_a_fifo_among_the_outputs_writes_none_of_them(command, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    blocker = out / ("topology.svg" if command == "chart" else "launch.sh")
    os.mkfifo(blocker)
    plan = GOLDEN / f"{COLOC}.plan.json"
    argv = (["chart", plan, "--out", out] if command == "chart"
            else ["export", plan, "--to", "vllm", "--out", out])
    rc, _, err = run(argv)
    one_line(rc, err, 2, "regular file")
    assert [p.name for p in out.iterdir()] == [blocker.name] and blocker.is_fifo()


def test_profile_header_comments_stay_comments(tmp_path):
    """The CSV's path goes into the profile's header comments: a newline in it added YAML
    keys of its own to the profile."""
    d = tmp_path / "x\ndevice_kinds: {}\nengine: evil\n#"
    d.mkdir()
    csv = d / "rows.csv"
    csv.write_text(CSV_HEAD + CSV_ROWS)
    out = tmp_path / "p.yaml"
    rc, _, err = run(["calibrate", csv, "--no-loo", "-o", out])
    assert rc == 0, err
    text = out.read_text()
    data = yaml.safe_load(text)
    assert "engine" not in data and "h100-sxm" in data["device_kinds"]
    assert all(ln.startswith("#") for ln in text.split("\n")[:6])


def test_a_topology_with_too_many_links_is_refused_fast(tmp_path):
    """64 networks over 65,536 devices: four million graph edges (about a minute and
    many GB to build) before the bound."""
    import time

    t = topology(nodes=4096, per_node=16)
    t["networks"] = [dict(t["networks"][0], name=f"ib{k}") for k in range(64)]
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump(t))
    t0 = time.perf_counter()
    rc, _, err = run(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", f])
    one_line(rc, err, 2, "device links")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("name", MULTI_HOST)
def test_trtllm_servers_across_hosts_start_as_one_mpi_world(name):
    """A TensorRT-LLM server across hosts: one mpirun over its hosts' GPUs, the hostile
    model name one argument of the server it launches."""
    plan = hostile_plan(name, model="org/m" + EVIL, kind="k" + EVIL, topo="t" + EVIL,
                        link="l" + EVIL)
    exp = export(plan, "trtllm")
    mpi = [c.argv for c in exp.commands if c.argv[:1] == ["mpirun"]]
    assert mpi
    for a in mpi:
        k = a.index("trtllm-llmapi-launch")
        assert a[k + 1:k + 4] == ["trtllm-serve", "serve", "org/m" + EVIL]
        hosts = a[a.index("-H") + 1].split(",")
        assert sum(int(h.rsplit(":", 1)[1]) for h in hosts) == int(a[a.index("-np") + 1])
