"""The checkpoint's weight format (autoplan/inputs/checkpoint.py): read from the config's
quantization_config, the default of --dtype, and the FP8 kernel table it selects."""

from __future__ import annotations

import json

import pytest

import autoplan
from autoplan.catalog import load_model, load_topology
from autoplan.cost.estimate import estimate
from autoplan.cost.kernel_ops import gemm_key, moe_key
from autoplan.errors import InputError
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
    ([1, 2], "'quantization_config' must be an object"),
    ("fp8", "'quantization_config' must be an object"),
    ({}, "no readable 'quant_method'"),
    ({"quant_method": "fp8; rm -rf /"}, "no readable 'quant_method'"),
    ({"quant_method": "x" * 65}, "no readable 'quant_method'"),
    ({"quant_method": "fp8", "weight_block_size": [0, 128]}, "two positive integers"),
    ({"quant_method": "fp8", "weight_block_size": "128"}, "two positive integers"),
    ({"quant_method": "fp8", "weight_block_size": [True, 128]}, "two positive integers"),
    ({"quant_method": "gptq", "bits": "4"}, "'bits' must be an integer"),
])
def test_malformed_quantization_config_is_one_line(q, words, tmp_path):
    with pytest.raises(InputError, match="quantization_config"):
        model_from_config(dict(LLAMA, quantization_config=q))
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(LLAMA, quantization_config=q)))
    rc, out, err = run(["estimate", "--model", p, "--topology", "h100-sxm-x1"])
    one_line(rc, err, 2, words)
    assert out == ""


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
        one_line(rc, err, 2, "quant_method 'mxfp4'", "--dtype")
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
