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
