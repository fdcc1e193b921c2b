"""Robustness fuzz (hypothesis): bad model files, topology files and command lines.

Whatever the input, the CLI never shows a traceback: it exits 0 (a sane result), 2 (bad
input) or 3 (infeasible), prints one line ``autoplan: error: ...`` on failure, and leaves
no half-written output file (``-o`` files are written atomically). YAML is safe-loaded:
``!!python/...`` tags are refused and alias bombs fail fast.

Four families (derandomized, so CI is deterministic): 400 mutated model configs, 400
mutated topologies through ``estimate`` plus 60 through ``plan``, 300 random command
lines, and (issue 13) 450 plans with drawn names exported to each engine (150 each) plus
300 plan files with odd fields through ``validate`` and ``export`` -- 1,910 generated
cases -- plus a few fixed cases and the atomic-write test.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import shlex
import tempfile
import time
from functools import cache
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from autoplan import files
from autoplan.catalog import builtin_device_kinds, catalog_root, list_models, list_topologies
from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.export import export
from autoplan.inputs.model import _SUPPORTED, model_from_config
from autoplan.plan_schema import Plan

FUZZ = {"deadline": None, "derandomize": True, "database": None, "print_blob": False,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.filter_too_much,
                                  HealthCheck.function_scoped_fixture]}

MODEL = "meta-llama/Llama-3.1-8B"
# A line the solver prints on stderr while it works (`plan` without --json).
PROGRESS = re.compile(r"^\s*\[")


# ---------------------------------------------------------------- helpers


def run(argv: list) -> tuple[int, str, str]:
    """``autoplan.cli.main`` in-process; any exception escaping it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def check(rc: int, out: str, err: str, expect: int | None = None, label: str = "",
          progress: bool = False) -> None:
    """No traceback; rc 0/2/3 (``expect`` if given); on failure exactly one stderr line
    ``autoplan: error: ...`` (after the solver's progress lines when ``progress``)."""
    assert "Traceback" not in out + err, err
    assert rc in (0, 2, 3), (label, rc, err)
    if expect is not None:
        assert rc == expect, (label, rc, err[-500:])
    if rc != 0:
        lines = err.splitlines()
        if progress:
            lines = [ln for ln in lines if not PROGRESS.match(ln)]
        assert len(lines) == 1, err[-2000:]
        assert lines[0].startswith("autoplan: error:"), lines[0]


def sane_estimate(out: str) -> None:
    est = json.loads(out)
    for k in ("ttft_ms", "tpot_ms", "e2e_ms", "peak_memory_fraction"):
        assert math.isfinite(est[k]) and est[k] >= 0, (k, est[k])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(work: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work))


# ---------------------------------------------------------------- shared pools

# Values no validator should take for a positive integer (0 is left out: some keys are
# counts where 0 is valid, e.g. n_shared_experts).
BAD_INT = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=1 << 25, max_value=10 ** 300),
    st.floats(allow_nan=True),  # 32.0 too: a dimension is a JSON integer
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.5, True, False, "32", "",
                     "many", [], [32], {}, {"value": 32}]),
    st.text(max_size=12),
)
BAD_CONTEXT = st.one_of(BAD_INT.filter(lambda v: not (isinstance(v, int) and 0 < v <= 1 << 62)),
                        st.integers(min_value=(1 << 62) + 1, max_value=10 ** 300))
BAD_FLAG = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                     st.sampled_from([[], [True], {}, {"a": True}, "true", "yes"]))
JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
    | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


# ================================================================ 1. model config files


@cache
def _configs() -> dict[str, dict]:
    root = catalog_root() / "models"
    return {n: json.loads((root / f"{n}.json").read_text(encoding="utf-8")) for n in list_models()}


# Optional keys the loader reads with a default, tried on every config.
OPTIONAL_KEYS = ("head_dim", "num_key_value_heads", "tie_word_embeddings", "attention_bias",
                 "multi_query", "parallel_attn", "bias", "new_decoder_architecture",
                 "decoder_sparse_step", "mlp_only_layers", "shared_expert_intermediate_size",
                 "n_shared_experts", "first_k_dense_replace", "moe_layer_freq", "q_lora_rank",
                 "n_routed_experts", "enable_bias", "ffn_hidden_size", "model_type")


def _accepts(cfg: dict, key: str, value) -> bool:
    c = dict(cfg)
    if value is _DELETE:
        c.pop(key, None)
    else:
        c[key] = value
    try:
        model_from_config(c)
        return True
    except InputError:
        return False


_DELETE = object()


@cache
def _key_classes() -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per shipped config: (required keys, positive-integer keys, true/false keys)."""
    out = {}
    for name, cfg in _configs().items():
        keys = sorted(set(cfg) | set(OPTIONAL_KEYS))
        required = [k for k in cfg if not _accepts(cfg, k, _DELETE)]
        ints, flags = [], []
        for k in keys:
            if k == "model_type":
                continue
            if _accepts(cfg, k, True) and _accepts(cfg, k, False) and not _accepts(cfg, k, "maybe"):
                flags.append(k)
            elif not any(_accepts(cfg, k, v) for v in (-7, True, 1.5, "64", {})):
                ints.append(k)  # (a mapping such as rope_scaling takes {})
        out[name] = (required, ints, flags)
    return out


def test_model_key_classes_cover_the_architecture_keys():
    # The fuzz below derives its key lists from the loader; pin the obvious ones.
    for name, (required, ints, flags) in _key_classes().items():
        assert "vocab_size" in required and "vocab_size" in ints, name
        for alternatives in (("hidden_size", "n_embed"), ("num_attention_heads", "n_head"),
                             ("num_hidden_layers", "n_layer")):
            assert set(alternatives) & set(ints), (name, alternatives)
        assert "tie_word_embeddings" in flags, name


def _dump(cfg) -> bytes:
    return json.dumps(cfg, indent=2).encode()


@st.composite
def bad_model_files(draw):
    """(label, file bytes or "DIR", expected rc: 2, or None when the mutant may be valid)."""
    name = draw(st.sampled_from(sorted(_configs())))
    cfg = copy.deepcopy(_configs()[name])
    required, ints, flags = _key_classes()[name]
    kind = draw(st.sampled_from(
        ["delete", "bad_int", "bad_int", "bad_flag", "arch", "truncate", "bytes", "non_utf8",
         "not_object", "dir", "empty", "deep", "huge_literal", "wild", "wild"]))
    if kind == "delete":
        for k in draw(st.lists(st.sampled_from(required), min_size=1, max_size=3)):
            cfg.pop(k, None)
        return kind, _dump(cfg), 2
    if kind == "bad_int":
        key = draw(st.sampled_from(ints))
        # a context length is bounded by 2^62, not by the dimensions' 2^24
        cfg[key] = draw(BAD_CONTEXT if key == "max_position_embeddings" else BAD_INT)
        return f"{kind}:{key}", _dump(cfg), 2
    if kind == "bad_flag":
        key = draw(st.sampled_from(flags))
        cfg[key] = draw(BAD_FLAG)
        return f"{kind}:{key}", _dump(cfg), 2
    if kind == "arch":
        mt = draw(st.one_of(
            st.text(min_size=1, max_size=20).filter(lambda s: s.lower() not in _SUPPORTED),
            st.sampled_from(["gpt2", "t5", "mamba", "LLAMA2", "llama ", "bert"]),
            st.integers(), st.lists(st.text(max_size=3), max_size=2)))
        cfg["model_type"] = mt
        return kind, _dump(cfg), 2
    text = _dump(cfg)
    if kind == "truncate":
        return kind, text[:draw(st.integers(0, len(text) - 1))], 2
    if kind == "bytes":
        return kind, draw(st.binary(max_size=300)), 2
    if kind == "non_utf8":
        at = draw(st.integers(0, len(text)))
        return kind, text[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                       b"\x80\x80"])) + text[at:], 2
    if kind == "not_object":
        return kind, json.dumps(draw(st.one_of(
            st.lists(JSON_ANY, max_size=3), st.integers(), st.text(max_size=8), st.none(),
            st.booleans(), st.just([cfg])))).encode(), 2
    if kind == "dir":
        return kind, "DIR", 2
    if kind == "empty":
        return kind, draw(st.sampled_from([b"", b" ", b"\n", b"\xef\xbb\xbf"])), 2
    if kind == "deep":
        n = draw(st.integers(500, 50_000))
        return kind, draw(st.sampled_from([b"[" * n + b"]" * n,
                                           b'{"a":' * n + b"1" + b"}" * n])), 2
    if kind == "huge_literal":  # an integer literal beyond Python's 4300-digit limit
        key = draw(st.sampled_from(ints))
        cfg[key] = "@HUGE@"
        digits = "1" + "0" * draw(st.integers(4300, 6000))
        return kind, _dump(cfg).replace(b'"@HUGE@"', digits.encode()), 2
    # wild: any key (known, optional or random) set to any JSON value, or removed
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from(sorted(set(cfg) | set(OPTIONAL_KEYS))),
                             st.text(max_size=8)))
        if draw(st.booleans()):
            cfg.pop(key, None)
        else:
            cfg[key] = draw(JSON_ANY)
    return kind, _dump(cfg), None


@settings(max_examples=400, **FUZZ)
@given(case=bad_model_files())
def test_fuzz_bad_model_files(case, work):
    label, data, expect = case
    if data == "DIR":
        path = work / "model-dir.json"
        path.mkdir(exist_ok=True)
    else:
        path = work / "config.json"
        path.write_bytes(data)
    rc, out, err = run(["estimate", "--model", path, "--topology", "h100-sxm-x8", "--tp", "1",
                        "--json"])
    check(rc, out, err, expect, label)
    if rc == 0:
        sane_estimate(out)
    else:
        assert out == ""


# ================================================================ 2. topology files


@cache
def _topologies() -> dict[str, dict]:
    root = catalog_root() / "topologies"
    return {n: yaml.safe_load((root / f"{n}.yaml").read_text(encoding="utf-8"))
            for n in list_topologies()}


SMALL_TOPOLOGIES = ("h100-sxm-x8", "h100-sxm-x1", "a100-sxm-80gb-x8", "l40s-x8", "h200-x8")

BAD_BW = st.one_of(st.floats(max_value=1e5), st.floats(min_value=1e17),
                   st.integers(max_value=0), st.integers(min_value=10 ** 17),
                   st.sampled_from([float("nan"), float("inf"), None, "fast", "", [], {},
                                    [1e9], True, False]))
BAD_LATENCY = st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.5),
                        st.integers(min_value=2), st.integers(max_value=-1),
                        st.sampled_from([float("nan"), float("inf"), None, "slow", [], {}]))
BAD_COUNT = st.one_of(st.integers(max_value=0), st.integers(min_value=65537),
                      st.floats().filter(lambda x: not (math.isfinite(x) and x == int(x)
                                                        and 1 <= x <= 65536)),
                      st.sampled_from([None, "eight", "", [], {}, [8], False, 2.5]))
BAD_BOOL = st.one_of(st.integers(min_value=2), st.integers(max_value=-1),
                     st.sampled_from(["maybe", "", "2", None, [], {}, 0.5, float("nan")]))
BAD_NAME = st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2),
                     st.sampled_from(["", "1node", "a b", "a.b", "node/1", "-x", "é"]))
# Text appended after a valid document that no YAML parser accepts.
YAML_BREAKERS = ["\n---\nsecond: document\n", "\n[unclosed, list\n", "\n{a: 1\n", "\n\tname: x\n",
                 "\n'unterminated\n", '\n"unterminated\n', "\nkey: [1, 2\n", "\n: : :\n  - [\n",
                 "\n*undefined_alias\n", "\n&a &b x: 1\n"]
# Tags safe_load must refuse; TOUCH is replaced by a marker file's path.
EVIL_TAGS = ['!!python/object/apply:os.system ["touch TOUCH"]',
             '!!python/object/apply:subprocess.check_output [["touch", "TOUCH"]]',
             '!!python/object/new:os.system ["touch TOUCH"]',
             "!!python/name:os.system", "!!python/module:os",
             '!!python/object:argparse.Namespace {a: 1}', "!!python/tuple [1, 2]",
             "!!set {a, b}", "!!omap [a: 1]", "!unknown_tag x"]
LAUGHS = ('lol0: &l0 "{leaf}"\n' + "".join(
    f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10)))


def _ydump(doc, **kw) -> str:
    """yaml.safe_dump, with libyaml's emitter when there is one (the fuzz's hot spot)."""
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), **kw)


def _fields(d: dict) -> list[tuple]:
    """(path, kind) of every numeric, boolean and name field in a topology."""
    out = []
    for i, g in enumerate(d["nodes"]):
        out += [(("nodes", i, "devices", "count"), "count"), (("nodes", i, "name"), "name"),
                (("nodes", i, "devices", "kind"), "kind")]
        if "count" in g:
            out.append((("nodes", i, "count"), "count"))
        if g.get("fabric"):
            out += [(("nodes", i, "fabric", "bandwidth_bytes_per_s"), "bw"),
                    (("nodes", i, "fabric", "latency_s"), "latency"),
                    (("nodes", i, "fabric", "tensor_parallel"), "bool")]
    for i, _ in enumerate(d.get("networks") or []):
        out += [(("networks", i, "bandwidth_bytes_per_s"), "bw"),
                (("networks", i, "latency_s"), "latency"), (("networks", i, "name"), "name"),
                (("networks", i, "tensor_parallel"), "bool")]
    for k in d.get("device_kinds") or {}:
        out += [(("device_kinds", k, "memory_tiers", 0, "capacity_bytes"), "capacity"),
                (("device_kinds", k, "memory_tiers", 0, "bandwidth_bytes_per_s"), "bw"),
                (("device_kinds", k, "peak_flops_per_s", "bf16"), "flops")]
    out += [(("name",), "topname")]
    return out


def _set(d, path, value):
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value


def _with_custom_kind(d: dict) -> dict:
    """The topology with its first node group on a custom kind copied from a built-in."""
    kind = d["nodes"][0]["devices"]["kind"]
    spec = builtin_device_kinds()[kind].model_dump(mode="json", exclude_none=True)
    d.setdefault("device_kinds", {})["custom-kind"] = spec
    spec["calibrate_like"] = kind
    d["nodes"][0]["devices"]["kind"] = "custom-kind"
    return d


GOOD_BY_KIND = {"count": st.integers(1, 16), "bw": st.floats(1e6, 1e16),
                "latency": st.floats(0, 1), "bool": st.booleans(),
                "capacity": st.floats(1e3, 1e15), "flops": st.floats(1e9, 1e19)}
BAD_BY_KIND = {"count": BAD_COUNT, "bw": BAD_BW, "latency": BAD_LATENCY, "bool": BAD_BOOL,
               "name": BAD_NAME,
               "capacity": st.one_of(st.floats(max_value=0), st.floats(min_value=1.1e15),
                                     st.sampled_from([float("nan"), None, "big", [], {}, False])),
               "flops": st.one_of(st.floats(max_value=1e8), st.floats(min_value=1e20),
                                  st.sampled_from([None, "fast", [], {}])),
               "kind": st.one_of(st.text(max_size=12).filter(
                                     lambda s: s not in builtin_device_kinds()),
                                 st.integers(), st.none(), st.just([])),
               "topname": st.one_of(st.integers(), st.none(), st.just([]), st.just({}))}


@st.composite
def bad_topology_files(draw, bases=None):
    """(label, file bytes or "DIR", expected rc: 2, or None when the mutant may be valid,
    base name)."""
    base = draw(st.sampled_from(bases or sorted(_topologies())))
    d = copy.deepcopy(_topologies()[base])
    kind = draw(st.sampled_from(
        ["field", "field", "field", "custom_kind", "unknown_field", "duplicate", "nodes",
         "no_fabric", "disconnected", "syntax", "tag", "laughs", "recursive", "deep",
         "huge_number", "not_mapping", "non_utf8", "dir", "truncate", "wild", "wild", "benign",
         "benign"]))

    def done(label, expect, doc=None):
        text = _ydump(d if doc is None else doc, sort_keys=False).encode()
        return label, text, expect, base

    if kind in ("field", "custom_kind"):
        if kind == "custom_kind":
            d = _with_custom_kind(d)
            fields = [f for f in _fields(d) if f[0][0] == "device_kinds"]
        else:
            fields = _fields(d)
        path, what = draw(st.sampled_from(fields))
        bad = BAD_BY_KIND[what]
        if what == "kind":  # unknown to both the built-in and the file's own kinds
            own = set(d.get("device_kinds") or {})
            bad = bad.filter(lambda s: not isinstance(s, str) or s not in own)
        _set(d, path, draw(bad))
        return done(f"{kind}:{'.'.join(map(str, path))}", 2)
    if kind == "benign":  # other valid values: may still be refused, never a crash
        if draw(st.booleans()):
            d = _with_custom_kind(d)
        for _ in range(draw(st.integers(1, 3))):
            path, what = draw(st.sampled_from([f for f in _fields(d) if f[1] in GOOD_BY_KIND]))
            _set(d, path, draw(GOOD_BY_KIND[what]))
        return done(kind, None)
    if kind == "unknown_field":
        where = draw(st.sampled_from(["top", "node", "devices", "fabric", "network"]))
        key = draw(st.text(min_size=1, max_size=10).filter(lambda s: s not in {
            "name", "description", "sources", "device_kinds", "nodes", "networks", "count",
            "devices", "fabric", "kind", "bandwidth_bytes_per_s", "latency_s",
            "tensor_parallel", "source", "node_groups"}))
        target = {"top": d, "node": d["nodes"][0], "devices": d["nodes"][0]["devices"],
                  "fabric": d["nodes"][0].get("fabric") or d["nodes"][0],
                  "network": (d.get("networks") or [d["nodes"][0]])[0]}[where]
        target[key] = draw(JSON_ANY)
        return done(f"{kind}:{where}", 2)
    if kind == "duplicate":
        how = draw(st.sampled_from(["group", "network", "node_name"]))
        g = d["nodes"][0]
        if how == "group" or (how == "network" and not d.get("networks")):
            d["nodes"].append(copy.deepcopy(g))
        elif how == "network":
            d["networks"].append(copy.deepcopy(d["networks"][0]))
        else:  # group "x" with 11 nodes and group "x1" both make node "x10"
            g["count"] = 11
            twin = copy.deepcopy(g)
            twin["name"], twin["count"] = g["name"] + "1", 1
            d["nodes"].append(twin)
            d["networks"] = [{"name": "eth", "kind": "ethernet", "bandwidth_bytes_per_s": 1e10,
                              "latency_s": 1e-5}]
        return done(f"{kind}:{how}", 2)
    if kind == "nodes":
        d["nodes"] = draw(st.sampled_from([[], None, {}, "node", [None], [[]], [1]]))
        if draw(st.booleans()):
            del d["nodes"]
        return done(kind, 2)
    if kind == "no_fabric":  # several devices per node and nothing joining them
        g = d["nodes"][0]
        g.pop("fabric", None)
        g["devices"]["count"] = max(2, g["devices"]["count"])
        d.pop("networks", None)
        return done(kind, 2)
    if kind == "disconnected":
        twin = copy.deepcopy(d["nodes"][0])
        twin["name"] = "island"
        d["nodes"].append(twin)
        d.pop("networks", None)
        return done(kind, 2)
    if kind == "syntax":
        text = _ydump(d, sort_keys=False) + draw(st.sampled_from(YAML_BREAKERS))
        return kind, text.encode(), 2, base
    if kind == "tag":
        path, _ = draw(st.sampled_from(_fields(d)))
        _set(d, path, "@TAG@")
        tag = draw(st.sampled_from(EVIL_TAGS))
        text = _ydump(d, sort_keys=False, width=10 ** 6)
        return kind, text.replace("'@TAG@'", tag).replace("@TAG@", tag).encode(), 2, base
    if kind == "laughs":
        target = draw(st.sampled_from(["name", "description", "sources", "nodes",
                                       "device_kinds", "networks"]))
        leaf = draw(st.sampled_from(["ha", "h100-sxm", "1e9"]))
        body = {k: v for k, v in d.items() if k != target}
        text = LAUGHS.format(leaf=leaf) + _ydump(body, sort_keys=False) + f"{target}: *l9\n"
        return kind, text.encode(), 2, base
    if kind == "recursive":
        target = draw(st.sampled_from(["sources", "nodes", "networks", "device_kinds"]))
        body = {k: v for k, v in d.items() if k != target}
        rec = draw(st.sampled_from(["&r [*r]", "&r {a: *r}", "&r [1, [2, *r]]"]))
        return kind, (_ydump(body, sort_keys=False) + f"{target}: {rec}\n").encode(), 2, base
    if kind == "deep":
        n = draw(st.integers(200, 20_000))
        body = {k: v for k, v in d.items() if k != "nodes"}
        deep = draw(st.sampled_from(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n]))
        return kind, (_ydump(body, sort_keys=False) + f"nodes: {deep}\n").encode(), 2, base
    if kind == "huge_number":
        path, what = draw(st.sampled_from([f for f in _fields(d) if f[1] in ("count", "bw")]))
        _set(d, path, "@NUM@")
        num = draw(st.sampled_from(["1" + "0" * 5000, "1e400", "0x" + "f" * 300,
                                    "9" * 40, "1_000_000_000_000_000_000", ".inf", "-.inf",
                                    ".nan"]))
        text = _ydump(d, sort_keys=False).replace("'@NUM@'", num).replace("@NUM@", num)
        return kind, text.encode(), 2, base
    if kind == "not_mapping":
        doc = draw(st.sampled_from(["", "---\n", "~", "5", "[1, 2]", "- name: x", "'text'",
                                    "--- 1\n--- 2\n", "!!str x"]))
        return kind, doc.encode(), 2, base
    if kind == "non_utf8":
        text = _ydump(d, sort_keys=False).encode()
        at = draw(st.integers(0, len(text)))
        return kind, text[:at] + b"\xff\xfe" + text[at:], 2, base
    if kind == "dir":
        return kind, "DIR", 2, base
    if kind == "truncate":
        text = _ydump(d, sort_keys=False).encode()
        return kind, text[:draw(st.integers(0, len(text) - 1))], None, base
    # wild: random fields set to random values, or removed
    for _ in range(draw(st.integers(1, 3))):
        path, _ = draw(st.sampled_from(_fields(d)))
        if draw(st.booleans()):
            _set(d, path, draw(JSON_ANY))
        else:
            parent = d
            for p in path[:-1]:
                parent = parent[p]
            parent.pop(path[-1], None)
    return done(kind, None)


def _write_topology(work: Path, data) -> Path:
    if data == "DIR":
        path = work / "topology-dir.yaml"
        path.mkdir(exist_ok=True)
        return path
    path = work / "topology.yaml"
    path.write_bytes(data)
    return path


def _kind_flag(base: str) -> list[str]:
    nodes = _topologies()[base]["nodes"]
    kinds = {g["devices"]["kind"] for g in nodes}
    return ["--device-kind", nodes[0]["devices"]["kind"]] if len(kinds) > 1 else []


@settings(max_examples=400, **FUZZ)
@given(case=bad_topology_files())
def test_fuzz_bad_topology_files_estimate(case, work):
    label, data, expect, base = case
    path = _write_topology(work, data)
    marker = Path("TOUCH")
    t0 = time.perf_counter()
    rc, out, err = run(["estimate", "--model", MODEL, "--topology", path, "--json",
                        *_kind_flag(base)])
    elapsed = time.perf_counter() - t0
    check(rc, out, err, expect, label)
    assert not marker.exists()  # a python/ tag never ran
    assert elapsed < 5, (label, elapsed)  # alias bombs and deep nesting fail fast
    if rc == 0:
        sane_estimate(out)
    else:
        assert out == ""


@settings(max_examples=60, **FUZZ)
@given(case=bad_topology_files(bases=list(SMALL_TOPOLOGIES)))
def test_fuzz_bad_topology_files_plan(case, work):
    label, data, expect, _ = case
    path = _write_topology(work, data)
    rc, out, err = run(["plan", "--model", MODEL, "--topology", path, "--time-limit-s", "5",
                        "--json"])
    check(rc, out, err, expect, label)
    if rc == 0:
        plan = json.loads(out)
        assert math.isfinite(plan["e2e_ms"]) and plan["e2e_ms"] > 0
    else:
        assert out == ""


def test_yaml_breakers_are_not_yaml():
    base = _ydump(_topologies()["h100-sxm-x8"], sort_keys=False)
    for b in YAML_BREAKERS:
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(base + b)


def test_python_tags_do_not_run(work):
    marker = work / "pwned"
    text = (f'name: x\nnodes: !!python/object/apply:os.system ["touch {marker}"]\n'
            f"description: !!python/object/apply:subprocess.check_output [[touch, {marker}]]\n")
    path = work / "evil.yaml"
    path.write_text(text)
    rc, out, err = run(["estimate", "--model", MODEL, "--topology", path])
    check(rc, out, err, 2)
    assert "YAML" in err
    assert not marker.exists()


def test_error_is_one_line_even_with_newlines_in_names(work):
    d = _fresh(work)
    model = d / "a\nb.json"
    model.write_text('{"model_type": "gpt2"}')
    topo = d / "t.yaml"
    topo.write_text('name: x\nnodes: [{name: n, devices: {kind: h100-sxm, count: 1},'
                    ' "k\\ny": 1}]\n')
    for argv in (["estimate", "--model", model, "--topology", "h100-sxm-x8"],
                 ["estimate", "--model", MODEL, "--topology", topo]):
        rc, out, err = run(argv)
        check(rc, out, err, 2)


def test_billion_laughs_fails_fast(work):
    path = work / "laughs.yaml"
    path.write_text(LAUGHS.format(leaf="ha") + "name: x\nnodes: *l9\nsources: *l9\n")
    t0 = time.perf_counter()
    rc, out, err = run(["plan", "--model", MODEL, "--topology", path])
    assert time.perf_counter() - t0 < 2
    check(rc, out, err, 2)


# ================================================================ 3. command lines

# Each flag's value is good or bad; how often bad is drawn per command line (from all
# good, which plans and writes -o, to chaos).
BAD_INTS = st.one_of(st.integers(max_value=0), st.integers(min_value=1 << 24),
                     st.sampled_from(["", "abc", "1.5", "1e3", "nan", "inf", "0x10", "٣",
                                      "1_000", "--json"]))
BAD_FLOATS = st.one_of(st.floats(max_value=0), st.floats(min_value=1e9),
                       st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e-400", "-0", "1,5",
                                        "--json"]))
GOOD = {
    "--isl": st.sampled_from([1, 7, 128, 2048]), "--osl": st.sampled_from([1, 2, 64, 256]),
    "--batch": st.sampled_from([1, 2, 16, 64]), "--tp": st.sampled_from([1, 1, 2, 4, 8]),
    "--pp": st.sampled_from([1, 1, 2, 32]),
    "--dtype": st.sampled_from(["bf16", "fp16", "fp8", "int8", "int4"]),
    "--kv-dtype": st.sampled_from(["bf16", "fp16", "fp8"]),
    "--max-memory-fraction": st.sampled_from([0.9, 1, 0.5, 0.05, 1e-6]),
    "--ttft-slo-ms": st.sampled_from([1000, 1000, 50, 1e-3]),
    "--tpot-slo-ms": st.sampled_from([100, 100, 10, 1e-3]),
    "--request-rate": st.sampled_from([0.1, 1, 1e6]),
    "--time-limit-s": st.sampled_from([5, 1, 1e-3]),
    "--device-kind": st.sampled_from(["h100-sxm"]),
    "--objective": st.sampled_from(["latency", "latency", "throughput", "devices"]),
    "--placement": st.sampled_from(["auto", "colocated", "disaggregated"]),
    "--engine": st.sampled_from(["e"]), "--topology-cal": st.sampled_from(["h100-sxm-x8"]),
    "--profile": st.sampled_from(["default"]),
}
BAD = {
    "--isl": BAD_INTS, "--osl": BAD_INTS, "--batch": BAD_INTS,
    "--tp": st.one_of(BAD_INTS, st.sampled_from([3, 16, 64])),
    "--pp": st.one_of(BAD_INTS, st.sampled_from([33, 64])),
    "--dtype": st.sampled_from(["fp7", "", "BF16", "float", "int2"]),
    "--kv-dtype": st.sampled_from(["int4", "fp7", ""]),
    "--max-memory-fraction": st.one_of(BAD_FLOATS, st.sampled_from([1.0001, 2, "inf"])),
    "--ttft-slo-ms": BAD_FLOATS, "--tpot-slo-ms": BAD_FLOATS, "--request-rate": BAD_FLOATS,
    "--time-limit-s": BAD_FLOATS, "--device-kind": st.sampled_from(["lpu", "", "tpu"]),
    "--objective": st.sampled_from(["nope", "", "LATENCY"]),
    "--placement": st.sampled_from(["x", "", "both"]), "--engine": st.sampled_from(["zz", ""]),
    "--topology-cal": st.sampled_from(["nosuch", "h100x8-lpu576"]),
    "--profile": st.sampled_from(["nosuch", "FILE"]),
}
JUNK = ["--frobnicate", "-x", "--tp=", "--json=1", "extra", "--", "-", "--model", "--isl"]


@st.composite
def command_lines(draw, work: Path):
    """(argv, -o target or None, whether the target is a fresh path, an existing file)."""
    d = _fresh(work)
    garbage = d / "garbage.bin"
    garbage.write_bytes(draw(st.binary(max_size=64)))
    text_garbage = d / "garbage.txt"  # validate: non-UTF-8 plans are a known bug (below)
    text_garbage.write_text(draw(st.text(max_size=64)), encoding="utf-8")
    existing = d / "existing.out"
    existing.write_text("old contents\n")
    bad_files = st.sampled_from([d / "missing" / "x.json", d, garbage, "", "-", "nosuch",
                                 catalog_root() / "models" / f"{MODEL}.json",
                                 catalog_root() / "topologies" / "h100-sxm-x8.yaml"])
    p_bad = draw(st.sampled_from([0, 0, 2, 5, 10, 30, 60]))  # percent of bad values

    def value(flag):
        if draw(st.integers(0, 99)) < p_bad:
            v = draw(BAD[flag])
            return draw(bad_files) if v == "FILE" else v
        return draw(GOOD[flag])

    cmd = draw(st.sampled_from(["estimate", "estimate", "estimate", "plan", "plan", "plan",
                                "validate", "calibrate", "schema", "models", "topologies",
                                "nosuch", "", "--help"]))
    topo = draw(st.sampled_from(["h100-sxm-x8", "h100-sxm-x1"]))
    pairs: list[list] = []
    if cmd in ("estimate", "plan"):
        bad = draw(st.integers(0, 99)) < p_bad
        pairs += [["--model", draw(st.one_of(bad_files, st.sampled_from(
                      ["nosuch/model", "meta-llama", "../models/x", MODEL + ".json"])))
                   if bad else MODEL],
                  ["--topology", draw(st.one_of(bad_files, st.sampled_from(
                      ["nosuch", "../topologies/x", "h100x8-lpu576"]))) if bad else topo]]
        pairs += [[f, value(f)] for f in ("--isl", "--osl", "--batch", "--dtype", "--kv-dtype",
                                          "--max-memory-fraction", "--profile")]
    if cmd == "estimate":
        pairs += [[f, value(f)] for f in ("--tp", "--pp", "--device-kind")]
        if topo == "h100-sxm-x1":  # one device: TP and PP of 1 unless the value is bad
            pairs = [[f, 1] if f in ("--tp", "--pp") and v in (2, 4, 8, 32) else [f, *v]
                     for f, *v in pairs]
        pairs += [["--breakdown"], ["--json"]]
    if cmd == "plan":
        objective = value("--objective")
        if topo == "h100-sxm-x8" and objective in ("throughput", "devices"):
            objective = "latency"  # the slower objectives only on the one-device system
        pairs += [["--objective", objective], ["--json"]]
        pairs += [[f, value(f)] for f in ("--placement", "--time-limit-s")]
        pairs += [[f, value(f)] for f in ("--ttft-slo-ms", "--tpot-slo-ms")
                  if draw(st.integers(0, 2)) == 0]
        if objective in ("throughput", "devices") or draw(st.integers(0, 9)) == 0:
            pairs.append(["--request-rate", value("--request-rate")])
    if cmd == "validate":
        pairs.append([draw(st.sampled_from(["PLAN", "PLAN", "TAMPERED"]))
                      if draw(st.integers(0, 99)) >= p_bad else
                      draw(bad_files.filter(lambda f: f != garbage)) if draw(st.booleans()) else
                      text_garbage])
    if cmd == "calibrate":
        pairs.append([draw(st.sampled_from(["CSV", "BADCSV"]))
                      if draw(st.integers(0, 99)) >= p_bad else draw(bad_files)])
        pairs += [["--engine", value("--engine")], ["--topology", value("--topology-cal")],
                  ["--no-loo"], ["--json"]]
        if draw(st.integers(0, 99)) < p_bad:
            pairs.append(["--prior", draw(bad_files)])
    if cmd in ("models", "topologies"):
        pairs.append(["--json"])
    # drop some flags (required ones too, now and then)
    pairs = [p for p in pairs if draw(st.integers(0, 99)) >= max(p_bad, 3) // 3]
    out_target = None
    if cmd in ("plan", "calibrate") and draw(st.integers(0, 2)) or draw(st.integers(0, 20)) == 0:
        out_target = draw(st.sampled_from([d / "new.out", d / "new.out", existing,
                                           d / "missing" / "x.out", d,
                                           d / "sub" / ".." / "new2.out", "\0bad"]))
        pairs.append([draw(st.sampled_from(["-o", "--out"])), out_target])
    pairs = draw(st.permutations(pairs))
    argv = [cmd] if cmd else []
    for p in pairs:
        argv += p
    if draw(st.integers(0, 99)) < p_bad:
        at = draw(st.integers(0, len(argv)))
        argv[at:at] = draw(st.lists(st.sampled_from(JUNK), min_size=1, max_size=2))
    fresh = out_target is not None and out_target not in (existing, d, "\0bad")
    return argv, out_target, fresh, existing


@pytest.fixture(scope="module")
def cli_files(work) -> dict[str, Path]:
    """A real plan and a tampered one (validate), a small good CSV and a bad one."""
    plan = work / "plan.json"
    rc, _, err = run(["plan", "--model", MODEL, "--topology", "h100-sxm-x8", "--json", "-o", plan])
    assert rc == 0, err
    p = json.loads(plan.read_text())
    p["ttft_ms"] = p["ttft_ms"] * 2
    p["prefill"]["stages"][0]["devices"] = ["node0.d0", "node0.d0"]
    tampered = work / "tampered.json"
    tampered.write_text(json.dumps(p))
    head = "id,engine,model,device_kind,tp,pp,weight_dtype,batch,isl,context,metric,value\n"
    csv_ok = work / "rows.csv"
    csv_ok.write_text(head + f"r1,e,{MODEL},h100-sxm,1,1,bf16,1,2048,,ttft_ms,40\n"
                      f"r2,e,{MODEL},h100-sxm,1,1,bf16,1,,2048,tpot_ms,8\n")
    csv_bad = work / "bad.csv"
    csv_bad.write_text(head + f"r1,e,{MODEL},h100-sxm,inf,1,bf16,1,2048,,ttft_ms,40\nr2,e\n")
    return {"PLAN": plan, "TAMPERED": tampered, "CSV": csv_ok, "BADCSV": csv_bad}


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_fuzz_command_lines(data, work, cli_files):
    argv, out_target, fresh, existing = data.draw(command_lines(work))
    argv = [cli_files.get(a, a) if isinstance(a, str) else a for a in argv]
    rc, out, err = run(argv)
    progress = argv[:1] == ["plan"] and "--json" not in argv
    check(rc, out, err, progress=progress)
    if out_target is None or out_target == "\0bad":
        return
    target = Path(out_target)
    folder = target.parent if target.parent.is_dir() else existing.parent
    leftovers = [f.name for f in folder.iterdir() if f.name.startswith(f".{target.name}.")]
    assert not leftovers, leftovers  # no temporary file left behind
    if rc != 0:
        if fresh:
            assert not target.exists(), argv
        assert existing.read_text() == "old contents\n"  # the old file is untouched
    elif target.is_file() and target.read_text() != "old contents\n":  # written: complete
        if argv[0] == "plan":
            assert json.loads(target.read_text())["e2e_ms"] > 0
        else:
            assert "device_kinds" in yaml.safe_load(target.read_text())


# ---------------------------------------------------------------- fixed command-line cases


@pytest.mark.parametrize("argv", [
    ["plan", "--model", MODEL, "--topology", "h100-sxm-x8", "--json", "-o", "{d}/no/such/p.json"],
    ["plan", "--model", MODEL, "--topology", "h100-sxm-x8", "--json", "-o", "{d}"],
    ["calibrate", "{csv}", "--no-loo", "-o", "{d}/no/such/p.yaml"],
    ["calibrate", "{csv}", "--no-loo", "-o", "{d}"],
])
def test_unwritable_output_is_one_line_exit_2(argv, work, cli_files):
    d = _fresh(work)
    argv = [a.format(d=d, csv=cli_files["CSV"]) for a in argv]
    rc, out, err = run(argv)
    check(rc, out, err, 2)
    assert "cannot write" in err
    assert sorted(p.name for p in d.iterdir()) == []


def test_outputs_are_written_whole_and_alone(work, cli_files):
    d = _fresh(work)
    (d / "plan.json").write_text("old\n")
    rc, out, err = run(["plan", "--model", MODEL, "--topology", "h100-sxm-x1", "--json",
                        "-o", d / "plan.json"])
    check(rc, out, err, 0)
    assert json.loads((d / "plan.json").read_text()) == json.loads(out)
    rc, out, err = run(["calibrate", cli_files["CSV"], "--no-loo", "--json",
                        "-o", d / "profile.yaml"])
    check(rc, out, err, 0)
    assert "h100-sxm" in yaml.safe_load((d / "profile.yaml").read_text())["device_kinds"]
    assert sorted(p.name for p in d.iterdir()) == ["plan.json", "profile.yaml"]


# Bugs the fuzz found in planner.py, solver.py and validate.py, fixed there: each input
# once raised a traceback.
KNOWN_BUGS = {
    "ttft-slo-inf": ["plan", "--model", MODEL, "--topology", "h100-sxm-x1", "--json",
                     "--ttft-slo-ms", "inf"],  # planner.plan: int(inf) OverflowError
    "tpot-slo-1e300": ["plan", "--model", MODEL, "--topology", "h100-sxm-x1", "--json",
                       "--tpot-slo-ms", "1e300"],  # solver.solve: SLO beyond int64
    "request-rate-inf": ["plan", "--model", MODEL, "--topology", "h100-sxm-x1", "--json",
                         "--objective", "devices", "--request-rate", "inf"],  # Fraction(inf)
    "validate-deep-json": ["validate", "{deep}"],  # Plan.load: RecursionError
    "validate-huge-int": ["validate", "{huge}"],  # Plan.load: ValueError (4300 digits)
    "validate-non-utf8": ["validate", "{latin}"],  # Plan.load: UnicodeDecodeError
}


@pytest.mark.parametrize("case", sorted(KNOWN_BUGS))
def test_fixed_bugs(case, work):
    d = _fresh(work)
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "huge.json").write_text('{"inputs": 1' + "0" * 5000 + "}")
    (d / "latin.json").write_bytes(b'{"inputs": "\xe9"}')
    argv = [a.format(deep=d / "deep.json", huge=d / "huge.json", latin=d / "latin.json")
            for a in KNOWN_BUGS[case]]
    rc, out, err = run(argv)
    check(rc, out, err)


# ================================================================ atomic writes


@pytest.mark.parametrize("fail_at", ["write", "replace"])
@pytest.mark.parametrize("had_old", [True, False])
def test_write_atomic_leaves_old_or_new_file(fail_at, had_old, tmp_path, monkeypatch):
    target = tmp_path / "out.yaml"
    if had_old:
        target.write_text("old\n")
    if fail_at == "replace":
        def boom(*a, **k):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(files.os, "replace", boom)
    else:
        real_fdopen = os.fdopen

        def fdopen(fd, *a, **k):
            f = real_fdopen(fd, *a, **k)
            real_write = f.write

            def write(text):
                real_write(text[: len(text) // 2])
                raise OSError(5, "Input/output error")
            f.write = write
            return f
        monkeypatch.setattr(files.os, "fdopen", fdopen)
    with pytest.raises(InputError, match="cannot write"):
        files.write_atomic(target, "new contents\n" * 1000)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.yaml"] if had_old else [])
    if had_old:
        assert target.read_text() == "old\n"
    files.write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.yaml"]


def test_write_atomic_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(tmp_path / "out.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_refuses_unwritable_paths(tmp_path):
    for bad in (tmp_path, tmp_path / "no" / "such" / "x.json"):
        with pytest.raises(InputError, match="cannot write"):
            files.write_atomic(bad, "x")
    assert list(tmp_path.iterdir()) == []


# ================================================================ 4. plans and names (issue 13)

# Names a plan carries into generated text (model, topology, device kind, link) drawn
# from shell, YAML and terminal metacharacters, control characters and long runs; and
# plan files with fields set to odd values. A valid name must come out of every export
# only inside a quoted shell word, a one-line comment or a YAML value; an invalid one is
# refused with one line before anything is written.

HOSTILE = list("ab-_./:@ $(){}[]`'\";&|<>*?!#~=,\\^%+") + [
    "\u00e9", "\u4e2d", "$(touch PWNED)", "`touch PWNED`", "$x$", "'; touch PWNED; '",
    "${IFS}", "\\n", "--", "a: b", "- c", "&a *a", "!!python/object x"]
CONTROL = ["\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\u2028", "\u0085",
           "\n$(touch PWNED)\n"]
PRINTABLE_NAMES = st.lists(st.sampled_from(HOSTILE), max_size=10).map("".join)
NAMES = st.one_of(PRINTABLE_NAMES, PRINTABLE_NAMES, PRINTABLE_NAMES,
                  st.lists(st.sampled_from(HOSTILE + CONTROL), max_size=10).map("".join),
                  st.sampled_from(["", "-x", "--trust-remote-code", "x" * 256, "y" * 5000]))
PLAN_BASES = ["llama31-70b-h100x8-latency", "llama31-70b-h100x8-batch16-disaggregated",
              "llama31-405b-h100-4node", "llama31-8b-h100-4node-devices"]


def _name_ok(name: str, limit: int) -> bool:
    """What a name may be (the rule of autoplan.inputs.names, restated): printable text of
    1 to ``limit`` UTF-8 bytes."""
    return bool(name) and name.isprintable() and len(name.encode()) <= limit


def _replace(node, old: str, new: str):
    """``node`` with every string equal to ``old`` (keys too) replaced by ``new``."""
    if isinstance(node, dict):
        return {(new if k == old else k): _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return new if node == old else node


def script_is_plan_only(exp) -> None:
    """Every line of a launch.sh is fixed shell syntax, a one-line comment, or one of the
    export's commands as ``Command.line()`` writes it (values quoted): plan text is never
    shell syntax. Split on newlines only, as bash does."""
    from autoplan.export.script import FILE
    from tests.test_safety import group_of

    text = exp.files[FILE]
    labels = list(dict.fromkeys(group_of(c) for c in exp.commands))
    cmds = {c.line() + suffix for c in exp.commands for suffix in ("", " &")}
    known = " ".join(labels)
    fixed = {"#!/usr/bin/env bash", "set -euo pipefail", 'case "$GROUP" in', "    ;;", "esac",
             "wait", 'GROUP="${1:-}"', 'GROUP="${1:-$DEFAULT_GROUP}"',
             f"GROUP=\"${{1:-{labels[0]}}}\"", f"DEFAULT_GROUP={shlex.quote(labels[0])}",
             "HOST_IP=\"${HOST_IP:-$(hostname -I | awk '{print $1}')}\"  "
             "# address the KV-transfer side channel listens on",
             f"  *) echo {shlex.quote(f'{FILE}: unknown group ')}\"'$GROUP'\""
             f"{shlex.quote(f' (expected one of: {known})')} >&2; exit 2 ;;"}
    fixed |= {f"  {shlex.quote(g)})" for g in labels}
    for line in text.split("\n")[:-1]:
        if line.startswith(("# ", "    # ")) or line == "#":
            assert line.isprintable(), line
            continue
        assert line in fixed or line.strip() in cmds, line
    for c in exp.commands:  # and each command reads back as its argv
        words = shlex.split(c.line())
        assert words[len(c.env):] == c.argv


def manifest_is_data(exp, model: str) -> None:
    text = exp.files["deployment.yaml"]
    comments = [ln for ln in text.split("\n") if ln.startswith("#")]
    assert not any(model in ln for ln in comments if len(model) > 3)
    doc = yaml.safe_load(text)
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    argv = exp.commands[0].argv
    for comp in doc["spec"]["components"]:
        args = comp["podTemplate"]["spec"]["containers"][0].get("args")
        if args:
            assert args[args.index("--model") + 1] == argv[argv.index("--model") + 1] == model


@pytest.mark.parametrize("engine", ["vllm", "sglang", "dynamo"])
@settings(max_examples=150, **FUZZ)
@given(model=NAMES, kind=NAMES, topo=NAMES, link=NAMES, org=st.booleans(),
       base=st.sampled_from(PLAN_BASES))
def test_fuzz_names_in_plans(engine, model, kind, topo, link, org, base, work):
    """150 plans per engine whose names are drawn: valid ones export to scripts and manifests that
    hold them only as data; invalid ones (control characters, too long, empty) are one
    line, exit 2, nothing written; a model that reads as a flag is refused by export."""
    from tests.test_safety import hostile_plan

    model = f"org/{model}" if org else model
    want = {"model": (model, 4096), "kind": ("k" + kind, 255), "topo": ("t" + topo, 255),
            "link": ("l" + link, 255)}
    ok = {k: _name_ok(v, limit) for k, (v, limit) in want.items()}
    safe = {k: (v if ok[k] else f"placeholder-{k}") for k, (v, _) in want.items()}
    plan = hostile_plan(base, model=safe["model"], kind=safe["kind"], topo=safe["topo"],
                        link=safe["link"])
    for k, good in ok.items():
        if not good:
            plan = _replace(plan, safe[k], want[k][0])
    d = _fresh(work)
    f = d / "plan.json"
    f.write_text(json.dumps(plan))
    out = d / "out"
    rc, stdout, err = run(["export", f, "--to", engine, "--out", out])
    check(rc, stdout, err)
    flag = model.startswith("-")
    # Dynamo refuses a model with '$' (Kubernetes expands $(NAME) in a worker's args)
    dollar = engine == "dynamo" and "$" in model
    if not all(ok.values()) or flag or dollar:
        event("names refused")
        assert rc == 2 and not out.exists(), (want, err)
        return
    event(f"names exported ({engine})")
    assert rc == 0, err
    exp = export(Plan.load(f), engine)
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == exp.files
    if engine == "dynamo":
        manifest_is_data(exp, model)
    else:
        script_is_plan_only(exp)


# Odd values for any field of a plan file.
ODD = st.one_of(JSON_ANY, BAD_INT, st.sampled_from([
    float("nan"), float("inf"), -1, 0, 10 ** 400, 1 << 63, 10 ** 9, "", "\n$(touch PWNED)",
    "--trust-remote-code", "$(touch PWNED).d0", "x" * 300, [], [[]], [[[]]], {}, None]))


def _leaves(node, path=()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node[:3]) for p in _leaves(v, (*path, i))] + [path]
    return [path]


@st.composite
def odd_plans(draw):
    from tests.test_safety import golden

    p = copy.deepcopy(golden(draw(st.sampled_from(PLAN_BASES))))
    leaves = [x for x in _leaves(p) if x]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(leaves))
        parent = p
        try:
            for k in path[:-1]:
                parent = parent[k]
            if draw(st.integers(0, 9)) == 0 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(ODD)
        except (KeyError, IndexError, TypeError):
            continue
    return p


@settings(max_examples=300, **FUZZ)
@given(plan=odd_plans(), command=st.sampled_from(["validate", "vllm", "sglang", "dynamo"]))
def test_fuzz_plan_files(plan, command, work):
    """300 plan files with one to three fields set to odd values (NaN, 10^400, names with
    newlines or shell syntax, empty lists, missing keys): validate and export answer 0 or
    one line and exit 2, write nothing on failure, and what they export is plan-only."""
    d = _fresh(work)
    f = d / "plan.json"
    f.write_text(json.dumps(plan))
    out = d / "out"
    argv = ["validate", f] if command == "validate" else ["export", f, "--to", command,
                                                           "--out", out]
    rc, stdout, err = run(argv)
    check(rc, stdout, err)
    event(f"plan file {command}: {'ok' if rc == 0 else 'refused'}")
    assert not list(d.rglob("PWNED*"))
    if rc != 0:
        assert not out.exists()
    elif command in ("vllm", "sglang"):
        script_is_plan_only(export(Plan.load(f), command))
