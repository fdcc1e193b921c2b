"""The weight format a checkpoint ships in, read from its ``config.json``.

An engine serves a checkpoint in the format its weights are stored in: a config with a
``quantization_config`` holds quantized weights, and the engine runs that format's
kernels without being told (vLLM, SGLang and TensorRT-LLM read ``quantization_config``
at load). So the format is a fact of the model file, and it is the default of
``--dtype``; a ``--dtype`` given says how the weights will be served instead (vLLM's
``--quantization fp8`` quantizes 16-bit weights on load, per tensor).

Formats read (``quant_method`` of ``quantization_config``):

- ``fp8`` (Hugging Face fine-grained FP8, DeepSeek-V3's format): FP8 weights; with
  ``weight_block_size`` ``[128, 128]`` the weights carry one scale per 128x128 block and
  the activations one per 128 channels of a token, which engines run on block-scaled
  kernels (DeepGEMM, CUTLASS blockwise), a kernel table of its own (``fp8_block``).
  Source: Transformers docs, "Fine-grained FP8"
  (https://huggingface.co/docs/transformers/quantization/finegrained_fp8): "The weights
  are quantized to 8-bits for each 2D block (weight_block_size=(128, 128))". Qwen's
  ``-FP8`` checkpoints use it: "The quantization method is fine-grained fp8
  quantization with block size of 128" (Qwen3 model cards, e.g. Qwen/Qwen3-235B-A22B-FP8,
  as copied in github.com/akash-network/awesome-akash
  @2199af2993737009b86d6424d705f30a290e7b86 Qwen3-235B-A22B-FP8/README.md).
- ``fbgemm_fp8`` (Meta's FP8 Llama 3.1 checkpoints: per-channel FP8): FP8, not blocked.
- ``compressed-tensors`` (llm-compressor): the first ``config_groups`` entry's
  ``weights``: ``type`` float with ``num_bits`` 8 is FP8 (``strategy`` block: blocked),
  ``type`` int with 8 or 4 bits is int8 / int4.
- ``modelopt`` (NVIDIA ModelOpt): ``quant_algo`` FP8 is FP8 (per tensor).
- ``gptq``, ``awq`` and their Marlin variants: ``bits`` 4 or 8 is int4 / int8.
- ``bitsandbytes``: ``load_in_4bit`` / ``load_in_8bit``.

Without a ``quantization_config`` the weights are 16-bit: ``float16`` in ``torch_dtype``
(or ``dtype``, its newer name) is fp16, anything else bf16 (engines serve a float32
checkpoint in 16 bits). A format outside this list (NVFP4, MXFP4, GGUF, ...) is not one
autoplan prices: such a model needs ``--dtype``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autoplan.errors import InputError
from autoplan.inputs.dtypes import DTYPES, DType
from autoplan.inputs.reading import show_value

_METHOD = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class CheckpointFormat(BaseModel):
    """How a checkpoint's weights are stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: DType | None = Field("bf16", description="the weights' format; None: a "
                                "quantization autoplan does not price (--dtype needed)")
    fp8_block_scaled: bool = Field(False, description="FP8 weights with one scale per "
                                   "128x128 block (engines' block-scaled FP8 kernels)")
    quant_method: str | None = Field(None, pattern=_METHOD.pattern,
                                     description="the config's quantization_config "
                                     "quant_method, as given")


BF16 = CheckpointFormat()


def _bits(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"model config quantization_config key {key!r} must be an "
                         f"integer, got {show_value(value)}")
    return value


def _int_format(bits: int | None) -> DType | None:
    return {4: "int4", 8: "int8"}.get(bits) if bits is not None else None  # type: ignore[return-value]


def _compressed_tensors(q: dict[str, Any]) -> tuple[DType | None, bool]:
    groups = q.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return None, False
    first = groups[sorted(groups)[0]]
    weights = first.get("weights") if isinstance(first, dict) else None
    if not isinstance(weights, dict):
        return None, False
    bits = _bits(weights.get("num_bits"), "num_bits")
    kind = weights.get("type")
    if kind == "float" and bits == 8:
        return "fp8", weights.get("strategy") == "block"
    if kind == "int":
        return _int_format(bits), False
    return None, False


def checkpoint_format(cfg: dict[str, Any]) -> CheckpointFormat:
    """The weight format of a parsed ``config.json`` (module docstring)."""
    q = cfg.get("quantization_config")
    if q is None:
        torch_dtype = cfg.get("torch_dtype", cfg.get("dtype"))
        return CheckpointFormat(dtype="fp16" if torch_dtype == "float16" else "bf16")
    if not isinstance(q, dict):
        raise InputError("model config key 'quantization_config' must be an object, got "
                         f"{show_value(q)}")
    method = q.get("quant_method")
    if not isinstance(method, str) or not _METHOD.match(method):
        raise InputError("model config quantization_config has no readable 'quant_method' "
                         f"(got {show_value(method)})")
    m = method.lower()
    dtype: DType | None = None
    block = False
    if m == "fp8":
        wbs = q.get("weight_block_size")
        if wbs is not None and not (isinstance(wbs, list) and len(wbs) == 2
                                    and all(isinstance(v, int) and not isinstance(v, bool)
                                            and v > 0 for v in wbs)):
            raise InputError("model config quantization_config 'weight_block_size' must be "
                             f"two positive integers, got {show_value(wbs)}")
        dtype, block = "fp8", wbs is not None
    elif m == "fbgemm_fp8":
        dtype = "fp8"
    elif m == "compressed-tensors":
        dtype, block = _compressed_tensors(q)
    elif m == "modelopt":
        dtype = "fp8" if str(q.get("quant_algo", "")).upper() == "FP8" else None
    elif m in ("gptq", "awq", "gptq_marlin", "awq_marlin", "marlin"):
        dtype = _int_format(_bits(q.get("bits", q.get("w_bit")), "bits"))
    elif m == "bitsandbytes":
        dtype = "int4" if q.get("load_in_4bit") is True else (
            "int8" if q.get("load_in_8bit") is True else None)
    return CheckpointFormat(dtype=dtype, fp8_block_scaled=block, quant_method=method)


def served_dtype(fmt: CheckpointFormat, dtype: str | None) -> str:
    """The weight format to price: ``dtype`` when given, else the checkpoint's."""
    if dtype is not None:
        return dtype
    if fmt.dtype is None:
        raise InputError(f"the model's quantization_config (quant_method "
                         f"{fmt.quant_method!r}) is not a weight format autoplan prices; "
                         f"give --dtype ({', '.join(DTYPES)})")
    return fmt.dtype
