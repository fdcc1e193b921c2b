"""Model input: parameter counts against published figures, the operator graph, family
parsing, missing-key errors and weight bytes per format."""

from __future__ import annotations

import copy

import networkx as nx
import pytest

from autoplan.catalog import builtin_device_kinds, default_calibrations, list_models, load_model
from autoplan.cost.roofline import stage_memory
from autoplan.errors import InputError
from autoplan.graphs.model_graph import build_model_graph, parameter_count
from autoplan.inputs.dtypes import DTYPES
from autoplan.inputs.model import model_from_config
from autoplan.inputs.workload import Precision

MODELS = list_models()


def test_catalog_is_not_empty():
    assert len(MODELS) >= 10


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_published(name, model_json):
    published = model_json(name)["_autoplan"]["published_parameters"]
    counted = parameter_count(load_model(name))
    rel = counted / published - 1
    print(f"{name}: counted {counted:,} published {published:,.0f} ({rel:+.3%})")
    assert abs(rel) <= 0.01


def _llama_formula(cfg: dict) -> int:
    """Parameters of a Llama-family config, written out from the architecture."""
    h, f, L, v = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
                  cfg["vocab_size"])
    nq = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nq)
    hd = cfg.get("head_dim") or h // nq
    attn = h * nq * hd + 2 * h * nkv * hd + nq * hd * h  # q, k, v, o
    mlp = 3 * h * f  # gate, up, down
    per_layer = attn + mlp + 2 * h  # two RMSNorms
    head = v * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return head + L * per_layer + h  # final norm


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("meta-llama/")])
def test_llama_count_equals_closed_form(name, model_json):
    assert parameter_count(load_model(name)) == _llama_formula(model_json(name))


def test_opt_125m_count_matches_transformers():
    # facebook/opt-125m config; transformers reports 125,239,296 parameters for it.
    cfg = {
        "model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048,
        "word_embed_proj_dim": 768, "do_layer_norm_before": True, "enable_bias": True,
    }
    count = parameter_count(model_from_config(cfg))
    print(f"opt-125m: {count:,}")
    assert count == 125_239_296


@pytest.mark.parametrize("name", MODELS)
def test_weight_bytes_at_tp1_equal_params_times_bytes(name):
    """On one device in bf16 every parameter is stored once, at two bytes."""
    m = load_model(name)
    kind = builtin_device_kinds()["h100-sxm"].model_copy(
        update={"calibration": default_calibrations()["h100-sxm"]})
    mem = stage_memory(m, kind, 1, range(m.num_layers), True, True, 1, 16, 16, Precision())
    expected = 2 * parameter_count(m)
    print(f"{name}: weights {mem.weights_bytes:,.0f} B, 2 x params {expected:,} B")
    assert mem.weights_bytes == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- operator graph


@pytest.fixture(scope="module")
def graphs():
    return {n: (load_model(n), build_model_graph(load_model(n))) for n in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_graph_is_dag_with_all_params(name, graphs):
    m, g = graphs[name]
    assert nx.is_directed_acyclic_graph(g)
    assert nx.is_weakly_connected(g)
    total = sum(d["params"] for _, d in g.nodes(data=True))
    # The graph has an lm_head node even when it is tied to the embedding table; the
    # parameter count holds a tied matrix once.
    tied_head = m.hidden_size * m.vocab_size if m.tie_word_embeddings else 0
    assert total == parameter_count(m) + tied_head


@pytest.mark.parametrize("name", MODELS)
def test_graph_has_every_layer_in_order(name, graphs):
    m, g = graphs[name]
    layers = {d["layer"] for _, d in g.nodes(data=True)}
    assert set(range(m.num_layers)) <= layers
    assert layers - set(range(m.num_layers)) == {-1, m.num_layers}
    order = [g.nodes[n]["layer"] for n in nx.topological_sort(g)]
    assert order == sorted(order), "operators must run layer by layer"
    for i in range(m.num_layers):
        assert f"L{i}.attention" in g
    assert "embedding" in g and "lm_head" in g


# ---------------------------------------------------------------- families


def test_mixtral_moe(model_json):
    name = "mistralai/Mixtral-8x7B-v0.1"
    cfg, m = model_json(name), load_model(name)
    assert m.moe is not None
    assert m.moe.num_experts == cfg["num_local_experts"]
    assert m.moe.top_k == cfg["num_experts_per_tok"]
    assert m.moe.expert_intermediate_size == cfg["intermediate_size"]
    assert set(m.moe.moe_layers) == set(range(cfg["num_hidden_layers"]))
    assert m.num_kv_heads == cfg["num_key_value_heads"]


def test_qwen3_moe(model_json):
    name = "Qwen/Qwen3-235B-A22B"
    cfg, m = model_json(name), load_model(name)
    assert m.moe is not None
    assert m.moe.num_experts == cfg["num_experts"]
    assert m.moe.top_k == cfg["num_experts_per_tok"]
    assert m.moe.expert_intermediate_size == cfg["moe_intermediate_size"]
    step = cfg["decoder_sparse_step"]
    expected = {i for i in range(cfg["num_hidden_layers"])
                if i % step == 0 and i not in cfg["mlp_only_layers"]}
    assert set(m.moe.moe_layers) == expected
    assert m.head_dim == cfg["head_dim"]
    assert m.qk_norm


def test_deepseek_v3_moe_and_mla(model_json, graphs):
    name = "deepseek-ai/DeepSeek-V3"
    cfg, (m, g) = model_json(name), graphs[name]
    assert m.moe is not None and m.mla is not None
    assert m.moe.num_experts == cfg["n_routed_experts"]
    assert m.moe.top_k == cfg["num_experts_per_tok"]
    assert m.moe.num_shared_experts == cfg["n_shared_experts"]
    assert m.moe.expert_intermediate_size == cfg["moe_intermediate_size"]
    k = cfg["first_k_dense_replace"]
    assert k > 0
    for i in range(cfg["num_hidden_layers"]):
        assert m.layer_kind(i) == ("dense" if i < k else "moe"), i
    for i in range(k):
        assert f"L{i}.mlp_up" in g and f"L{i}.experts_up" not in g
        assert g.nodes[f"L{i}.mlp_up"]["op"].n == 2 * cfg["intermediate_size"]
    assert f"L{k}.experts_up" in g and f"L{k}.mlp_up" not in g
    assert g.nodes[f"L{k}.experts_up"]["op"].experts == cfg["n_routed_experts"]
    for key in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                "v_head_dim"):
        assert getattr(m.mla, key) == cfg[key]


def test_falcon_180b_parallel_attention_plain_mlp(model_json, graphs):
    name = "tiiuae/falcon-180B"
    cfg, (m, g) = model_json(name), graphs[name]
    assert m.parallel_attention is True
    assert m.gated_mlp is False
    assert m.norm == "layernorm"
    assert m.num_kv_heads == cfg["num_kv_heads"]
    assert m.num_attention_heads == cfg["num_attention_heads"]
    assert m.head_dim * m.num_attention_heads == cfg["hidden_size"]
    # A plain (non-gated) MLP: one up matrix of the FFN width, not gate+up.
    assert g.nodes["L0.mlp_up"]["op"].n == m.intermediate_size
    assert m.tie_word_embeddings  # FalconConfig default, the file has no key


def test_bloom_plain_mlp_layernorm(model_json, graphs):
    name = "bigscience/bloom"
    cfg, (m, g) = model_json(name), graphs[name]
    assert m.gated_mlp is False
    assert m.norm == "layernorm"
    assert m.linear_bias
    assert m.hidden_size == cfg["n_embed"]
    assert m.num_layers == cfg["n_layer"]
    assert m.num_kv_heads == m.num_attention_heads == cfg["num_attention_heads"]
    assert g.nodes["L0.mlp_up"]["op"].n == 4 * cfg["n_embed"]
    # LayerNorm carries a weight and a bias vector.
    assert g.nodes["L0.attn_norm"]["params"] == 2 * cfg["n_embed"]


OPT_CFG = {
    "model_type": "opt", "hidden_size": 256, "ffn_dim": 1024, "num_hidden_layers": 3,
    "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 512,
    "word_embed_proj_dim": 256, "do_layer_norm_before": True, "enable_bias": True,
    "dropout": 0.1, "activation_function": "relu",
}


def test_opt_learned_positions():
    m = model_from_config(copy.deepcopy(OPT_CFG))
    assert m.family == "opt"
    # OPT's learned position table has max_position_embeddings + 2 rows (offset 2).
    assert m.learned_positions == OPT_CFG["max_position_embeddings"] + 2
    assert m.intermediate_size == OPT_CFG["ffn_dim"]
    assert m.gated_mlp is False and m.norm == "layernorm" and m.linear_bias
    assert m.num_kv_heads == m.num_attention_heads
    g = build_model_graph(m)
    assert g.nodes["position_embedding"]["params"] == m.learned_positions * OPT_CFG["hidden_size"]
    assert g.nodes["L0.mlp_up"]["op"].n == OPT_CFG["ffn_dim"]


# ---------------------------------------------------------------- missing keys

BASE_CONFIGS = {
    "llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100},
    "mixtral": {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
                "num_local_experts": 4, "num_experts_per_tok": 2},
    "deepseek_v3": {"model_type": "deepseek_v3", "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
                    "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
                    "v_head_dim": 8, "q_lora_rank": 32},
    "falcon": {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "vocab_size": 100},
    "bloom": {"model_type": "bloom", "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": 100},
    "opt": dict(OPT_CFG),
}


@pytest.mark.parametrize("family", sorted(BASE_CONFIGS))
def test_base_configs_parse(family):
    m = model_from_config(copy.deepcopy(BASE_CONFIGS[family]))
    assert m.num_layers == 2 or family == "opt"


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size"])
@pytest.mark.parametrize("family", sorted(BASE_CONFIGS))
def test_missing_key_is_named(family, key):
    cfg = copy.deepcopy(BASE_CONFIGS[family])
    del cfg[key]
    with pytest.raises(InputError) as ei:
        model_from_config(cfg)
    assert key in str(ei.value)


def test_missing_key_named_by_file_loader(tmp_path):
    import json

    from autoplan.inputs.model import load_model_file

    cfg = copy.deepcopy(BASE_CONFIGS["llama"])
    del cfg["num_hidden_layers"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="num_hidden_layers"):
        load_model_file(p)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B", "mistralai/Mixtral-8x7B-v0.1",
                                  "bigscience/bloom"])
def test_weight_bytes_scale_with_dtype(name):
    m = load_model(name)
    kind = builtin_device_kinds()["h100-sxm"].model_copy(
        update={"calibration": default_calibrations()["h100-sxm"]})
    w = {d: stage_memory(m, kind, 2, range(m.num_layers), True, True, 1, 16, 16,
                         Precision(weight=d)).weights_bytes for d in DTYPES}
    expected = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
    # The embedding table, the LM head (one table if tied) and MoE routers stay 16-bit
    # under quantized weights (engines quantize the layers' projections only), on each
    # of the 2 TP ranks: the vocabulary split, the routers whole. Norm vectors stay
    # 16-bit too; they are a negligible share of the weights.
    tables = 1 if m.tie_word_embeddings else 2
    sixteen = tables * m.vocab_size * m.hidden_size * 2 / 2
    if m.moe is not None:
        sixteen += m.num_layers * m.hidden_size * m.moe.num_experts * 2
    for d, ratio in expected.items():
        want = ratio / 2.0 * (w["bf16"] - sixteen) + sixteen
        assert w[d] == pytest.approx(want, rel=1e-3), d
    assert w["int4"] < w["int8"] < w["bf16"]
