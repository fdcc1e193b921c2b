"""Deployable by construction (issue 11 scope 5): with an engine (vLLM, SGLang,
TensorRT-LLM) every pipeline runs one TP degree on its GPU stages, the engines' shape
rule in hardware/engine_rules.yaml; ``engine=None`` keeps free shapes."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from autoplan.catalog import engine_rules, uniform_tp
from autoplan.cost.context import plan_context
from autoplan.errors import InputError
from autoplan.export import export
from autoplan.graphs.topology import Topology
from autoplan.plan_schema import Plan
from autoplan.rules import rules
from autoplan.rules.validate import validate
from autoplan.search.planner import plan

GOLDEN = Path(__file__).parent / "golden"
# Free shapes mix TP 1 stages with a TP 4 or TP 8 one here (the 94 layers do not split
# evenly over the two nodes); no engine can start that pipeline.
CASE = {"model": "Qwen/Qwen3-235B-A22B", "topology": "h200-2node", "time_limit_s": 30}


@lru_cache(maxsize=2)
def _plan(engine: str | None) -> Plan:
    return plan(CASE["model"], CASE["topology"], engine=engine,
                time_limit_s=CASE["time_limit_s"])


def _tps(p: Plan) -> dict[str, set[int]]:
    return {ph: {s.tp for s in p.phase(ph).stages} for ph in ("prefill", "decode")}


def test_engine_rules_are_data_with_sources() -> None:
    got = engine_rules()
    assert set(got) == {"vllm", "sglang", "trtllm"}
    for name, er in got.items():
        assert er.uniform_tp and uniform_tp(name)
        for r in er.rules:
            assert r.source.startswith("https://") and r.engine_version, (name, r.name)
    assert uniform_tp(None) is False
    nixl = [r for r in got["vllm"].rules if "Nixl" in r.says]
    assert nixl and "autoplan/export/limits.py" in nixl[0].says


def test_engine_plan_has_one_tp_per_pipeline_and_exports_every_pool() -> None:
    p = _plan("vllm")
    assert all(len(t) == 1 for t in _tps(p).values()), _tps(p)
    assert validate(p).ok
    for eng in ("vllm", "sglang", "trtllm"):
        exp = export(p, eng)
        assert exp.commands
        assert not [w for w in exp.warnings if "tensor-parallel degree" in w], exp.warnings


def test_free_shapes_may_mix_tp_and_validate_allows_it() -> None:
    p = _plan(None)
    assert p.inputs.engine is None
    assert any(len(t) > 1 for t in _tps(p).values()), _tps(p)
    assert validate(p).ok
    # free shapes export without the mixed pool: vLLM says why (here it is the only pool)
    try:
        warned = export(p, "vllm").warnings
    except InputError as e:  # no pool left to export
        warned = [str(e)]
    assert any("tensor-parallel degree" in w for w in warned), warned


def test_validate_refuses_a_mixed_tp_plan_under_an_engine() -> None:
    d = json.loads(_plan(None).model_dump_json())
    d["inputs"]["engine"] = "vllm"  # tampered: a free-shape plan claimed for vLLM
    rep = validate(d)
    assert not rep.ok
    assert any(e.startswith("uniform TP:") for e in rep.errors), rep.errors


def test_rule_exempts_own_runtime_kinds() -> None:
    """The GPU-prefill + LPU-decode golden keeps its mixed-TP LPU decode under vLLM."""
    g = Plan.load(GOLDEN / "llama31-70b-fp8-h100x8-lpu576-disaggregated.plan.json")
    assert g.inputs.engine == "vllm"
    dec = g.decode.stages
    assert len({s.tp for s in dec}) > 1
    topo: Topology = plan_context(g).topo
    assert rules.uniform_tp("decode", topo, [s.device_kind for s in dec],
                            [s.tp for s in dec], "vllm") == []
    assert rules.uniform_tp("decode", topo, ["h100-sxm", "h100-sxm"], [8, 4], "vllm")
    assert rules.uniform_tp("decode", topo, ["h100-sxm", "h100-sxm"], [8, 4], None) == []


def test_explain_rules_out_a_mixed_tp_alternative_by_name() -> None:
    from autoplan.cost.evaluate import evaluate
    from autoplan.explain.context import Context
    from autoplan.explain.judge import broken_rules
    ctx = Context.of(_plan("vllm"))
    free = plan_context(_plan(None))
    # a pipeline of TP 1 and TP 4 or 8 stages: a shape vLLM cannot run
    mixed = next(st for st in (free.pre, free.dec) if len({s.tp for s in st}) > 1)
    fig = evaluate(ctx.model, ctx.topo, ctx.work, "colocated", mixed, mixed)
    devices = len({d for s in mixed for d in s.devices})
    errs = broken_rules(ctx, "colocated", mixed, mixed, fig, devices)
    assert any(e.startswith("uniform TP:") for e in errs), errs
    assert not [e for e in broken_rules(ctx, "colocated", ctx.pre, ctx.pre, ctx.base,
                                        ctx.base_devices) if e.startswith("uniform TP")]


def test_vllm_runs_disaggregated_pools_without_pp_and_validate_names_the_rule():
    """vLLM's NIXL KV transfer does not run with PP > 1 (hardware/engine_rules.yaml): with
    --engine vllm every disaggregated pool is one stage and exports; TensorRT-LLM's plan
    pipelines its prefill, and the same plan read as vLLM's breaks the rule."""
    from autoplan.export import export
    from autoplan.search.planner import plan

    kw = dict(isl=4000, osl=500, ttft_slo_ms=2000, tpot_slo_ms=30, objective="throughput",
              placement="disaggregated", batch=64, prefill_batch=1)
    trt = plan("meta-llama/Llama-3.1-70B", "h200-2node", engine="trtllm", **kw)
    assert len(trt.prefill.stages) > 1  # pipelined prefill: the best rate per device
    v = plan("meta-llama/Llama-3.1-70B", "h200-2node", engine="vllm", **kw)
    assert len(v.prefill.stages) == 1 and len(v.decode.stages) == 1
    assert validate(v).ok and "launch.sh" in export(v, "vllm").files
    as_vllm = trt.model_copy(update={"inputs": trt.inputs.model_copy(update={"engine": "vllm"})})
    errs = validate(as_vllm).errors
    assert any(e.startswith("disaggregated PP:") and "prefill" in e for e in errs), errs
