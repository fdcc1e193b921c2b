"""The checkpoint's weight format (autoplan/inputs/checkpoint.py): read from the config's
quantization_config, the default of --dtype, and the FP8 kernel table it selects."""

from __future__ import annotations

import json

import pytest

import autoplan
from autoplan.catalog import load_model, load_topology
from autoplan.cost.estimate import estimate
from autoplan.cost.kernel_ops import gemm_key, moe_key
from autoplan.graphs.model_graph import parameter_count
from autoplan.inputs.checkpoint import checkpoint_format
from autoplan.inputs.model import model_from_config
from tests.test_safety import one_line, run

LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}


def fmt(q=None, **top):
    cfg = dict(LLAMA, **top)
    if q is not None:
        cfg["quantization_config"] = q
    m = checkpoint_format(cfg)
    return m.dtype, m.fp8_block_scaled


@pytest.mark.parametrize("q, top, expect", [
    (None, {}, ("bf16", False)),
    (None, {"torch_dtype": "float16"}, ("fp16", False)),
    (None, {"dtype": "float16"}, ("fp16", False)),  # transformers' newer key
    (None, {"torch_dtype": "float32"}, ("bf16", False)),  # engines serve 16-bit
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, {}, ("fp8", True)),
    ({"quant_method": "fp8", "activation_scheme": "static"}, {}, ("fp8", False)),
    ({"quant_method": "fbgemm_fp8"}, {}, ("fp8", False)),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, {}, ("fp8", False)),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, {}, (None, False)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "channel"}}}}, {}, ("fp8", False)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}}}},
     {}, ("fp8", True)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {
        "num_bits": 4, "type": "int", "strategy": "group"}}}}, {}, ("int4", False)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {
        "num_bits": 4, "type": "float"}}}}, {}, (None, False)),  # NVFP4
    ({"quant_method": "gptq", "bits": 4}, {}, ("int4", False)),
    ({"quant_method": "awq", "bits": 4}, {}, ("int4", False)),
    ({"quant_method": "gptq", "bits": 8}, {}, ("int8", False)),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, {}, ("int4", False)),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, {}, ("int8", False)),
    ({"quant_method": "mxfp4"}, {}, (None, False)),
])
def test_format_read_from_quantization_config(q, top, expect):
    assert fmt(q, **top) == expect


@pytest.mark.parametrize("q, words", [
    ([1, 2], "not an object"),
    ("fp8", "not an object"),
    ({}, "without a readable quant_method"),
    ({"quant_method": "fp8; rm -rf /"}, "without a readable quant_method"),
    ({"quant_method": "x" * 65}, "without a readable quant_method"),
    ({"quant_method": "fp8", "weight_block_size": [0, 128]}, "weight_block_size"),
    ({"quant_method": "fp8", "weight_block_size": "128"}, "weight_block_size"),
    ({"quant_method": "fp8", "weight_block_size": [True, 128]}, "weight_block_size"),
    ({"quant_method": "gptq", "bits": "4"}, "gptq of '4' bits"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 4, "type": "float"}}}}, "compressed-tensors 'float' weights of 4 bits"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "ModelOpt quant_algo 'NVFP4'"),
])
def test_an_unreadable_or_unpriced_format_needs_dtype_and_loads_with_it(q, words, tmp_path):
    # the model itself is readable: --dtype says how it is served (it used to refuse to load)
    m = model_from_config(dict(LLAMA, quantization_config=q))
    assert m.checkpoint.dtype is None
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config=q)))
    rc, out, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1"])
    one_line(rc, err, 2, words, "give --dtype")
    assert out == ""
    rc, out, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1", "--dtype", "bf16"])
    assert rc == 0, err


@pytest.mark.parametrize("q, block", [
    ({"quant_method": "fp8", "weight_block_size": [128.0, 128.0]}, True),  # JSON writers differ
    ({"quant_method": "modelopt", "quantization": {"quant_algo": "FP8"}}, False),  # nested form
])
def test_format_variants_in_use(q, block):
    assert fmt(q) == ("fp8", block)


def test_the_kv_cache_of_a_checkpoint_is_its_own():
    # engines keep an FP8 checkpoint's KV cache in 16 bits (--kv-cache-dtype auto) unless
    # its config quantizes the cache; with --dtype given the cache follows --dtype
    base = dict(LLAMA, quantization_config={"quant_method": "fp8"})
    assert checkpoint_format(base).kv_dtype == "bf16"
    ct = {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "channel"}}},
        "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor"}}
    assert checkpoint_format(dict(LLAMA, quantization_config=ct)).kv_dtype == "fp8"
    mo = {"quant_method": "modelopt", "quantization": {"quant_algo": "FP8",
                                                       "kv_cache_quant_algo": "FP8"}}
    assert checkpoint_format(dict(LLAMA, quantization_config=mo)).kv_dtype == "fp8"
    assert checkpoint_format(dict(LLAMA, torch_dtype="float16")).kv_dtype == "fp16"
    e = estimate("Qwen/Qwen3-8B-FP8", "h100-sxm-x1")
    assert (e.dtype, e.kv_dtype) == ("fp8", "bf16")
    assert estimate("Qwen/Qwen3-8B-FP8", "h100-sxm-x1", dtype="fp8").kv_dtype == "fp8"
    p = autoplan.plan("Qwen/Qwen3-8B-FP8", "h100-sxm-x1", isl=512, osl=64)
    assert (p.inputs.dtype, p.inputs.kv_dtype) == ("fp8", "bf16")


def test_shipped_formats():
    assert load_model("deepseek-ai/DeepSeek-V3").checkpoint.dtype == "fp8"
    assert load_model("deepseek-ai/DeepSeek-V3").checkpoint.fp8_block_scaled
    q8 = load_model("Qwen/Qwen3-8B-FP8")
    assert (q8.checkpoint.dtype, q8.checkpoint.fp8_block_scaled) == ("fp8", True)
    base = load_model("Qwen/Qwen3-8B")
    assert (base.checkpoint.dtype, base.checkpoint.fp8_block_scaled) == ("bf16", False)
    # the FP8 checkpoint is the same model: same shape, same parameters
    assert parameter_count(q8) == parameter_count(base)


def test_default_dtype_is_the_checkpoints():
    # DeepSeek-V3 ships FP8 (671 GB): on 8 H200 (141 GiB each) it fits at 90% without
    # --dtype; priced in bf16 (1.34 TB) it cannot
    e = estimate("deepseek-ai/DeepSeek-V3", "h200-x8", tp=8, isl=1000, osl=100)
    assert e.dtype == "fp8" and e.fits
    assert not estimate("deepseek-ai/DeepSeek-V3", "h200-x8", tp=8, isl=1000, osl=100,
                        dtype="bf16").fits
    # weights stream once per decode step: TPOT at least the FP8 weight bytes over HBM
    kind = next(iter(load_topology("h200-x8").kinds.values()))
    bw = max(t.bandwidth_bytes_per_s for t in kind.memory_tiers)
    active = 37e9  # DeepSeek-V3 activates about 37B parameters per token (its paper)
    assert e.tpot_ms / 1e3 > active * 1.0 / 8 / bw
    p = autoplan.plan("deepseek-ai/DeepSeek-V3", "h200-x8", isl=1000, osl=100)
    assert p.inputs.dtype == "fp8"
    rep = autoplan.validate(p)
    assert rep.ok, rep.errors
    # a dtype given wins over the checkpoint's
    assert estimate("Qwen/Qwen3-8B-FP8", "h100-sxm-x1", dtype="bf16").dtype == "bf16"


def test_unpriced_format_needs_dtype(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config={"quant_method": "mxfp4"})))
    for cmd in (["estimate"], ["plan"]):
        rc, out, err = run([*cmd, "--model", p, "--topology", "h100-sxm-x1"])
        one_line(rc, err, 2, "quant_method 'mxfp4'", "give --dtype")
        assert out == ""
    rc, out, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1", "--dtype", "int4"])
    assert rc == 0, err


def test_block_scaled_checkpoint_prices_block_fp8_kernels():
    # SGLang's kernel tables hold per-tensor (sgl-kernel scaled_mm) and block-scaled
    # (DeepGEMM) FP8 GEMMs; the checkpoint's scaling picks the table
    topo = load_topology("h100-sxm-x1", None, "sglang")
    kp = next(iter(topo.kinds.values())).calibration.kernels
    assert {"fp8", "fp8_block"} <= set(kp.gemm)
    block, tensor = load_model("Qwen/Qwen3-8B-FP8"), load_model("Qwen/Qwen3-8B")
    assert gemm_key(kp, block, "fp8") == "fp8_block"
    assert gemm_key(kp, tensor, "fp8") == "fp8"
    assert gemm_key(kp, block, "bf16") == "bf16"
    ds = load_model("deepseek-ai/DeepSeek-V3")
    assert moe_key(kp, ds, "fp8") == "fp8_block"
    a = estimate(block, "h100-sxm-x1", engine="sglang", batch=4, isl=233, osl=221)
    b = estimate(tensor, "h100-sxm-x1", engine="sglang", batch=4, isl=233, osl=221, dtype="fp8")
    assert a.dtype == b.dtype == "fp8"
    assert a.tpot_ms != b.tpot_ms  # other kernels, same bytes
    assert a.memory[0].weights_gb == pytest.approx(b.memory[0].weights_gb)


@pytest.mark.parametrize("model, flag", [
    ("deepseek-ai/DeepSeek-V3", False),  # stored in FP8: the engine reads its config
    ("Qwen/Qwen3-8B-FP8", False),
    ("meta-llama/Llama-3.1-8B", True),  # 16-bit weights quantized on load
])
def test_export_leaves_a_stored_format_to_the_checkpoint(model, flag):
    from autoplan.export import export

    topo = "h200-x8" if "DeepSeek" in model else "h100-sxm-x1"
    p = autoplan.plan(model, topo, dtype="fp8", isl=512, osl=64)
    for engine in ("vllm", "sglang"):
        script = export(p, engine).files["launch.sh"]
        assert ("--quantization fp8" in script) is flag, (engine, model)


def test_a_spec_from_an_older_plan_keeps_its_pricing():
    # plans written before the checkpoint field embed DeepSeek specs without it; their
    # FP8 weights were block-scaled by family then, and still are
    from autoplan.inputs.model import ModelSpec

    for name, block in (("deepseek-ai/DeepSeek-V3", True), ("meta-llama/Llama-3.1-8B", False)):
        d = load_model(name).model_dump()
        d.pop("checkpoint")
        old = ModelSpec.model_validate(d)
        assert old.checkpoint.fp8_block_scaled is block
        assert ModelSpec.model_validate_json(old.model_dump_json()) == old


def test_a_folder_named_like_a_shipped_profile_does_not_hide_it(tmp_path, monkeypatch):
    (tmp_path / "groq").mkdir()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology",
                        "lpu-576", "--profile", "groq"])
    assert rc == 0, err


def test_gptq_config_says_whether_the_lm_head_is_quantized():
    head = lambda q: checkpoint_format(dict(LLAMA, quantization_config=q)).lm_head_quantized  # noqa: E731
    assert head({"quant_method": "gptq", "bits": 4, "lm_head": True})
    assert not head({"quant_method": "gptq", "bits": 4})
    assert not head({"quant_method": "gptq", "bits": 4, "lm_head": "yes"})  # not a bool
    assert not head({"quant_method": "awq", "bits": 4, "lm_head": True})  # AWQ never does
    assert not head({"quant_method": "fp8", "weight_block_size": [128, 128]})


def test_embedding_and_lm_head_stay_16_bit_under_quantized_weights():
    # engines quantize linear layers only: an FP8 checkpoint holds its other weights in
    # one byte and its embedding table and LM head (vocab x hidden each, untied) in two
    from autoplan.cost.roofline import model_weight_bytes
    from autoplan.inputs.workload import Precision

    m = load_model("Qwen/Qwen3-8B-FP8")
    assert not m.tie_word_embeddings
    vh = m.vocab_size * m.hidden_size
    p = parameter_count(m)
    fp8 = model_weight_bytes(m, Precision("fp8"))
    # (p - 2 vh) one-byte weights and 2 vh two-byte ones (the norms, also 16-bit, are
    # 3e-5 of p)
    assert fp8 == pytest.approx(p - 2 * vh + 2 * 2 * vh, rel=1e-4)
    assert model_weight_bytes(m, Precision("bf16")) == 2 * p
    e8 = estimate(m, "h100-sxm-x1", batch=1, isl=128, osl=64)
    e16 = estimate(m, "h100-sxm-x1", batch=1, isl=128, osl=64, dtype="bf16")
    assert e8.memory[0].weights_gb * 1e9 == pytest.approx(fp8, rel=1e-3)
    # a decode step streams every weight but the embedding table (it gathers one row)
    kind = next(iter(load_topology("h100-sxm-x1").kinds.values()))
    bw = max(t.bandwidth_bytes_per_s for t in kind.memory_tiers)
    streamed = (p - 2 * vh) * 1 + vh * 2
    assert e8.tpot_ms / 1e3 > streamed / bw
    assert e8.tpot_ms < e16.tpot_ms


def test_a_quantized_lm_head_is_priced_in_the_weights_format(tmp_path):
    from autoplan.cost.roofline import model_weight_bytes
    from autoplan.inputs.workload import Precision

    cfg = dict(LLAMA, vocab_size=32000, hidden_size=1024, intermediate_size=2048,
               num_attention_heads=8)
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    plain = model_from_config(dict(cfg, quantization_config=q))
    quant = model_from_config(dict(cfg, quantization_config=dict(q, lm_head=True)))
    vh = 32000 * 1024
    w = Precision("int4")
    # int4 is half a byte: the quantized LM head saves 1.5 bytes per element
    assert model_weight_bytes(plain, w) - model_weight_bytes(quant, w) == pytest.approx(1.5 * vh)
    # a format given over the checkpoint's is quantized on load: its LM head stays 16-bit
    assert model_weight_bytes(quant, Precision("fp8")) == model_weight_bytes(plain,
                                                                             Precision("fp8"))
    # tied: one table, 16-bit, whatever the weights' format
    tied = model_from_config(dict(cfg, tie_word_embeddings=True, quantization_config=q))
    assert model_weight_bytes(plain, w) - model_weight_bytes(tied, w) == pytest.approx(2 * vh)


def test_an_moe_router_stays_16_bit():
    # engines build the MoE router without a quantization config: counted by hand for a
    # two-layer Mixtral of 4 experts (hidden 64, expert width 128, vocab 100)
    from autoplan.cost.roofline import model_weight_bytes
    from autoplan.inputs.workload import Precision

    m = model_from_config({"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128,
                           "num_hidden_layers": 2, "num_attention_heads": 4,
                           "num_key_value_heads": 4, "vocab_size": 100,
                           "num_local_experts": 4, "num_experts_per_tok": 2})
    attention, experts, router, norms = 4 * 64 * 64, 4 * 3 * 64 * 128, 64 * 4, 2 * 64
    one_byte = 2 * (attention + experts)
    two_bytes = 2 * (router + norms) + 100 * 64 * 2 + 64  # + embedding, LM head, final norm
    assert parameter_count(m) == one_byte + two_bytes
    assert model_weight_bytes(m, Precision("fp8")) == one_byte + 2 * two_bytes
