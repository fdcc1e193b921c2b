"""Projections a quantized checkpoint keeps 16-bit (autoplan/inputs/unquantized.py): the
config's modules_to_not_convert / ignore / exclude_modules matched to the layers that
hold them, priced in 16 bits, and kept exact by the planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoplan.catalog import load_topology
from autoplan.cost.estimate import estimate
from autoplan.cost.roofline import model_weight_bytes
from autoplan.errors import InputError
from autoplan.inputs.model import model_from_config
from autoplan.inputs.workload import Precision
from autoplan.search.planner import plan
from tests.test_safety import one_line, run

H, F, HEADS, KV, V, L = 64, 128, 4, 2, 100, 4
LLAMA = {"model_type": "llama", "hidden_size": H, "intermediate_size": F,
         "num_hidden_layers": L, "num_attention_heads": HEADS, "num_key_value_heads": KV,
         "vocab_size": V}
# Hand-counted parameters of one layer's projections (head_dim 16, 2 KV heads).
ATTN = H * H + 2 * H * (KV * H // HEADS) + H * H
MLP = 3 * H * F
NORMS = 2 * H  # two RMSNorm vectors per layer
ENDS = 2 * V * H + H  # embedding, LM head (untied), final norm: 16-bit under any format


def model(q: dict | None, cfg=LLAMA, name="toy"):
    return model_from_config(dict(cfg, **({"quantization_config": q} if q else {})), name)


def fp8(**lists) -> dict:
    return {"quant_method": "fbgemm_fp8", **lists}


# Meta's FP8 recipe for Llama-3.1-405B (The Llama 3 Herd of Models, 2024, section 6.2):
# attention not quantized, nor the first and last layers.
META = [f"model.layers.{i}.self_attn.{p}_proj" for i in range(L) for p in "qkvo"]
META += [f"model.layers.{i}.mlp.{p}_proj" for i in (0, L - 1) for p in ("gate", "up", "down")]
META += ["lm_head"]
META_16 = (("mlp_down", (0, L - 1)), ("mlp_up", (0, L - 1)), ("o_proj", tuple(range(L))),
           ("qkv_proj", tuple(range(L))))


def test_meta_recipe_is_priced_16_bit_where_listed():
    m = model(fp8(modules_to_not_convert=META))
    assert m.checkpoint.sixteen_bit == META_16 and m.checkpoint.unquantized_modules == 0
    assert [m.layer_kind(i) for i in range(L)] == [
        "dense:mlp_down,mlp_up,o_proj,qkv_proj", "dense:o_proj,qkv_proj",
        "dense:o_proj,qkv_proj", "dense:mlp_down,mlp_up,o_proj,qkv_proj"]
    # one byte: the MLPs of the L - 2 inner layers; two bytes: everything else
    one = (L - 2) * MLP
    two = L * (ATTN + NORMS) + 2 * MLP + ENDS
    assert model_weight_bytes(m, Precision("fp8")) == one + 2 * two
    plain = model(fp8())
    assert model_weight_bytes(plain, Precision("fp8")) == L * MLP + L * ATTN + 2 * (L * NORMS + ENDS)
    # served in 16 bits, or quantized on load to another format: the lists do not apply
    for dtype in ("bf16", "int4"):
        assert model_weight_bytes(m, Precision(dtype)) == model_weight_bytes(plain, Precision(dtype))


@pytest.mark.parametrize("lists", [
    {"ignore": ["re:.*self_attn.*", "re:model.layers.(0|3).mlp.*", "lm_head"]},  # compressed-tensors
    {"exclude_modules": ["*self_attn*", "model.layers.0.mlp*", "model.layers.3.mlp.*"]},  # ModelOpt
    {"modules_to_not_convert": ["self_attn", "model.layers.0.mlp", "layers.3.mlp"]},  # components
    {"modules_to_not_convert": ["self_attn.qkv_proj", "o_proj", "layers.0.mlp.gate_up_proj",
                                "layers.0.mlp.down_proj", "model.layers.3.mlp"]},  # fused names
])
def test_every_list_convention_names_the_same_modules(lists):
    assert model(fp8(**lists)).checkpoint.sixteen_bit == META_16


def test_a_layer_index_names_that_layer_only():
    m = model(fp8(modules_to_not_convert=["model.layers.1", "layers.1."]),
              dict(LLAMA, num_hidden_layers=12))
    assert m.checkpoint.sixteen_bit == (("mlp_down", (1,)), ("mlp_up", (1,)), ("o_proj", (1,)),
                                        ("qkv_proj", (1,)))


def test_some_shards_of_a_fused_gemm_are_refused(tmp_path):
    with pytest.raises(InputError, match="leaves unquantized q_proj of layer 2 but not k_proj, v_proj"):
        model(fp8(modules_to_not_convert=["model.layers.2.self_attn.q_proj"]))
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config=fp8(
        modules_to_not_convert=["model.layers.0.mlp.up_proj"]))))
    rc, _, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1"])
    one_line(rc, err, 2, "up_proj of layer 0", "not gate_proj")


MIXTRAL = {"model_type": "mixtral", "hidden_size": H, "intermediate_size": F,
           "num_hidden_layers": 3, "num_attention_heads": HEADS, "num_key_value_heads": KV,
           "vocab_size": V, "num_local_experts": 8, "num_experts_per_tok": 2}


def test_one_expert_listed_keeps_its_layers_experts_16_bit():
    # vLLM runs a layer's experts as one fused module of one format
    m = model(fp8(modules_to_not_convert=["model.layers.1.block_sparse_moe.experts.3.w2"]), MIXTRAL)
    assert m.checkpoint.sixteen_bit == (("experts_down", (1,)), ("experts_up", (1,)))
    plain = model(fp8(), MIXTRAL)
    assert model_weight_bytes(m, Precision("fp8")) - model_weight_bytes(plain, Precision("fp8")) \
        == 8 * MLP  # the layer's eight experts, one byte more each
    pattern = model(fp8(ignore=["re:.*layers.1.*experts.*"]), MIXTRAL)
    assert pattern.checkpoint.sixteen_bit == m.checkpoint.sixteen_bit


def test_entries_naming_nothing_modelled_are_counted_and_said(tmp_path):
    # a vision tower, a layer past the model (an MTP layer), a pattern that could backtrack
    # for ever, and the LM head and router (16-bit anyway, not counted)
    lists = fp8(modules_to_not_convert=["vision_tower", "model.layers.7.mlp", "re:(a+)+$",
                                        "lm_head", "re:.*mlp.gate$"])
    m = model(lists)
    assert m.checkpoint.sixteen_bit == () and m.checkpoint.unquantized_modules == 3
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config=lists)))
    rc, _, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1"])
    assert rc == 0 and "3 entries of the checkpoint's quantization_config lists" in err
    rc, _, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1", "--dtype", "bf16"])
    assert rc == 0 and "entries" not in err  # served in 16 bits: nothing to say
    p.write_text(json.dumps(dict(LLAMA, quantization_config=fp8(modules_to_not_convert=META))))
    rc, _, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1"])
    assert rc == 0 and "warning" not in err


def test_decode_streams_the_16_bit_bytes():
    kind = load_topology("h100-sxm-x1").kinds["h100-sxm"]
    bw = kind.tiers_fastest_first()[0].bandwidth_bytes_per_s
    m, plain = model(fp8(modules_to_not_convert=META)), model(fp8())
    big = estimate(m, load_topology("h100-sxm-x1"), tp=1, isl=64, osl=8)
    small = estimate(plain, load_topology("h100-sxm-x1"), tp=1, isl=64, osl=8)
    assert big.tpot_ms > small.tpot_ms
    assert big.tpot_ms / 1e3 >= model_weight_bytes(m, Precision("fp8")) / bw


def test_the_planner_refuses_a_differing_inner_layer_and_keeps_ends_exact(tmp_path):
    odd = model(fp8(modules_to_not_convert=["model.layers.2.mlp"]))
    topo = load_topology("h100-sxm-x8")
    with pytest.raises(InputError, match="layer 2's weight formats differ from layer 1's"):
        plan(odd, topo, isl=64, osl=8)
    # the message names the odd layer, not the first of the run, when that is the odd one
    first_odd = model(fp8(modules_to_not_convert=["model.layers.1.mlp"]), dict(LLAMA, num_hidden_layers=6))
    with pytest.raises(InputError, match="layer 1's weight formats differ from layer 2's"):
        plan(first_odd, topo, isl=64, osl=8)
    assert estimate(odd, topo, tp=1, isl=64, osl=8).tpot_ms > 0  # estimate prices any layout
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config=fp8(modules_to_not_convert=META))))
    out = tmp_path / "plan.json"
    rc, _, err = run(["plan", "--model", p, "--topology", "h100-sxm-x8", "--isl", "64",
                      "--osl", "8", "-o", out])
    assert rc == 0, err
    spec = json.loads(out.read_text())
    rc, text, err = run(["validate", out])
    assert rc == 0 and "equal to the plan" in text, err
    # a plan whose embedded spec names a projection or a layer that is not there
    assert _set_sixteen(spec, META_16) > 0  # the plan embeds the spec with its 16-bit layers
    for bad in ([["attention", [0]]], [["o_proj", [0, L]]], [["o_proj", [1, 0]]]):
        doc = json.loads(json.dumps(spec))
        _set_sixteen(doc, bad)
        out.write_text(json.dumps(doc))
        rc, _, err = run(["validate", out])
        one_line(rc, err, 2, "sixteen_bit")


def _set_sixteen(doc, value) -> int:
    """Put ``value`` as the checkpoint's sixteen_bit wherever the plan embeds the spec;
    how many places held one equal to ``value`` before (as lists)."""
    same = 0

    def walk(node):
        nonlocal same
        if isinstance(node, dict):
            if "sixteen_bit" in node:
                same += node["sixteen_bit"] == json.loads(json.dumps(value))
                node["sixteen_bit"] = value
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    return same


def test_a_modelopt_export_is_read_from_its_hf_quant_config(tmp_path):
    from autoplan.catalog import load_model

    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    side = tmp_path / "hf_quant_config.json"
    side.write_text(json.dumps({"producer": {"name": "modelopt", "version": "0.15.1"},
                                "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8",
                                                 "exclude_modules": ["lm_head", "model.layers.0.*"]}}))
    ck = load_model(str(tmp_path)).checkpoint
    assert (ck.dtype, ck.kv_dtype, ck.quant_method) == ("fp8", "fp8", "modelopt")
    assert ck.sixteen_bit == tuple((op, (0,)) for op in ("mlp_down", "mlp_up", "o_proj", "qkv_proj"))
    # a config that states its format wins over the sidecar
    (tmp_path / "config.json").write_text(json.dumps(dict(LLAMA, quantization_config=fp8())))
    assert load_model(str(tmp_path)).checkpoint.quant_method == "fbgemm_fp8"
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    for text, words in (("{not json", ("ModelOpt quantization config", "not valid JSON")),
                        ('{"quantization": 3}', ("has no 'quantization' object",))):
        side.write_text(text)
        rc, _, err = run(["estimate", "--model", tmp_path, "--topology", "h100-sxm-x1"])
        one_line(rc, err, 2, *words)
    side.write_text(json.dumps({"quantization": {"quant_algo": "NVFP4"}}))
    rc, _, err = run(["estimate", "--model", tmp_path, "--topology", "h100-sxm-x1"])
    one_line(rc, err, 2, "ModelOpt quant_algo 'NVFP4'", "--dtype")


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "deepseek-ai/DeepSeek-V3",
                                  "Qwen/Qwen3-235B-A22B", "mistralai/Mixtral-8x7B-v0.1",
                                  "tiiuae/falcon-180B", "bigscience/bloom"])
def test_the_projections_named_are_the_graphs(name):
    from autoplan.catalog import load_model
    from autoplan.graphs.model_graph import layer_ops
    from autoplan.inputs.unquantized import PROJECTIONS, _projections

    m = load_model(name)
    for i in range(m.num_layers):
        graph = {o.name for o in layer_ops(m, m.layer_kind(i))} & PROJECTIONS
        assert _projections(m, i) == graph, i


def test_gptq_names_what_it_quantizes():
    gptq = {"quant_method": "gptq", "bits": 4, "modules_in_block_to_quantize": [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"]]}
    m = model(gptq)
    assert m.checkpoint.dtype == "int4"
    assert m.checkpoint.sixteen_bit == (("mlp_down", tuple(range(L))), ("mlp_up", tuple(range(L))))
    # a plain list names the same; one shard of a fused GEMM alone is refused
    flat = dict(gptq, modules_in_block_to_quantize=["self_attn", "nowhere.proj"])
    assert model(flat).checkpoint.sixteen_bit == m.checkpoint.sixteen_bit
    assert model(flat).checkpoint.unquantized_modules == 1
    with pytest.raises(InputError, match="quantizes q_proj of layer 0 but not k_proj, v_proj"):
        model(dict(gptq, modules_in_block_to_quantize=["self_attn.q_proj"]))
    assert model({"quant_method": "gptq", "bits": 4}).checkpoint.sixteen_bit == ()


def test_modelopt_lists_nested_in_its_quantization_block_are_read():
    # vLLM's ModelOpt config reads quantization.exclude_modules of a config.json
    nested = {"quant_method": "modelopt", "quantization": {"quant_algo": "FP8", "exclude_modules":
                                                           ["lm_head", "model.layers.*.self_attn*"]}}
    top = {"quant_method": "modelopt", "quant_algo": "FP8", "exclude_modules": ["lm_head", "model.layers.*.self_attn*"]}
    m = model(nested)
    assert m.checkpoint.sixteen_bit == model(top).checkpoint.sixteen_bit
    assert dict(m.checkpoint.sixteen_bit) == {"o_proj": tuple(range(L)), "qkv_proj": tuple(range(L))}


@pytest.mark.parametrize("value", ["self_attn", {"a": 1}, 5, [1, None], [["model.layers.0"]]])
def test_a_list_that_is_not_a_list_of_names_is_refused(value):
    with pytest.raises(InputError, match="modules_to_not_convert must be a list of module names"):
        model(fp8(modules_to_not_convert=value))
    with pytest.raises(InputError, match="quantization.exclude_modules must be a list"):
        model({"quant_method": "modelopt", "quantization": {"quant_algo": "FP8", "exclude_modules": value}})
    if not (isinstance(value, list) and value and isinstance(value[0], list)):
        with pytest.raises(InputError, match="modules_in_block_to_quantize must be a list"):
            model({"quant_method": "gptq", "bits": 4, "modules_in_block_to_quantize": value})


def test_a_gptq_list_over_the_limit_is_refused_not_cut():
    with pytest.raises(InputError, match="names 20002 modules; autoplan reads at most 20000"):
        model({"quant_method": "gptq", "bits": 4,
               "modules_in_block_to_quantize": ["junk"] * 20000 + ["self_attn", "mlp"]})


def test_a_gptq_list_leaves_the_fused_experts_to_the_method():
    # vLLM's GPTQ MoE method does not read modules_in_block_to_quantize: experts stay 4-bit
    gptq = {"quant_method": "gptq", "bits": 4, "modules_in_block_to_quantize": [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"]]}
    assert model(gptq, MIXTRAL).checkpoint.sixteen_bit == ()


def test_backtracking_patterns_and_huge_expert_counts_load_at_once(tmp_path):
    # alternatives and optional atoms backtrack like quantified groups: not run, counted
    for pat in ["re:" + "(?:.|.)" * 30 + "X", "re:" + ".?" * 34 + "X"]:
        assert model(fp8(ignore=[pat])).checkpoint.unquantized_modules == 1
    # a pattern over a million experts is tried on the first ones and those it spells
    many = dict(MIXTRAL, num_local_experts=10**6)
    m = model(fp8(ignore=["re:nomatch", "re:.*layers.2.*experts.777777.*"]), many)
    assert m.checkpoint.sixteen_bit == (("experts_down", (2,)), ("experts_up", (2,)))
    # thousands of expert indices in plain entries: refused in one line
    big = dict(MIXTRAL, num_local_experts=20000, num_hidden_layers=64)
    with pytest.raises(InputError, match="expert module names"):
        model(fp8(ignore=[f"x.{j}" for j in range(19999)]), big)


def test_fp8_reads_modules_to_not_convert_only_without_ignored_layers():
    # vLLM's Fp8Config: ignored_layers, else modules_to_not_convert
    both = {"quant_method": "fp8", "ignored_layers": ["model.layers.0.mlp.down_proj"],
            "modules_to_not_convert": ["model.layers.1.mlp.down_proj"]}
    assert model(both).checkpoint.sixteen_bit == (("mlp_down", (0,)),)
    alone = dict(both, ignored_layers=[])
    assert model(alone).checkpoint.sixteen_bit == (("mlp_down", (1,)),)


def test_mla_down_projections_are_one_fused_gemm():
    # vLLM runs DeepSeek's q_a_proj and kv_a_proj_with_mqa as fused_qkv_a_proj
    cfg = json.loads((Path(__file__).resolve().parents[1] / "models/deepseek-ai/DeepSeek-V3.json").read_text())
    q = dict(cfg["quantization_config"])
    with pytest.raises(InputError, match="q_a_proj of layer 0 but not kv_a_proj_with_mqa"):
        model_from_config(dict(cfg, quantization_config=dict(
            q, modules_to_not_convert=["model.layers.0.self_attn.q_a_proj"])), "ds")
    both = model_from_config(dict(cfg, quantization_config=dict(q, modules_to_not_convert=[
        "model.layers.0.self_attn.q_a_proj", "model.layers.0.self_attn.kv_a_proj_with_mqa"])), "ds")
    assert both.checkpoint.sixteen_bit == (("kv_a_proj", (0,)), ("q_a_proj", (0,)))
