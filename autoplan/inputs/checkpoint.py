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
- ``modelopt`` (NVIDIA ModelOpt): ``quant_algo`` FP8 is FP8 (per tensor), at the top of
  ``quantization_config`` or under its ``quantization`` key (both forms are in use), or
  in the export's ``hf_quant_config.json`` beside a config without one (:func:`with_sidecar`).
- ``gptq``, ``awq`` and their Marlin variants: ``bits`` 4 or 8 is int4 / int8.
- ``bitsandbytes``: ``load_in_4bit`` / ``load_in_8bit``.

Without a ``quantization_config`` the weights are 16-bit: ``float16`` in ``torch_dtype``
(or ``dtype``, its newer name) is fp16, anything else bf16 (engines serve a float32
checkpoint in 16 bits). A format outside this list (NVFP4, MXFP4, GGUF, ...), or a
``quantization_config`` that cannot be read, is not one autoplan prices: such a model
needs ``--dtype``, and loads with it.

The KV cache of a checkpoint is kept in its activations' 16-bit format unless its config
quantizes the cache (compressed-tensors ``kv_cache_scheme``, ModelOpt
``kv_cache_quant_algo`` FP8): vLLM's and SGLang's ``--kv-cache-dtype auto``. That is the
default of ``--kv-dtype`` when ``--dtype`` is not given either; with ``--dtype`` given the
KV cache follows it (:func:`autoplan.inputs.request.default_kv_dtype`).

The engines quantize the layers' linear projections only: the embedding table, the LM
head and the MoE routers of a quantized checkpoint stay in its 16-bit activation format
(vLLM's and SGLang's FP8, AWQ and GPTQ methods leave ``VocabParallelEmbedding`` /
``ParallelLMHead`` unquantized and build routers without a quantization config;
ModelOpt's FP8 recipe excludes ``*lm_head*``), except a GPTQ config with ``lm_head``
true, which quantizes the LM head (vLLM's ``GPTQConfig.lm_head_quantized``):
:func:`autoplan.cost.roofline.op_precision`. Other projections a checkpoint leaves
unquantized (``modules_to_not_convert``, ``ignore``, ``exclude_modules``: the attention
of Meta's Llama-3.1-405B-FP8) are matched to the layers that hold them
(:mod:`autoplan.inputs.unquantized`) and priced 16-bit; entries that name nothing autoplan
models are counted (``unquantized_modules``) and ``estimate`` and ``plan`` say so on stderr.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autoplan.errors import InputError
from autoplan.inputs.dtypes import DTYPES, DType
from autoplan.inputs.reading import path_state, read_json, show, show_value
from autoplan.inputs.unquantized import ALWAYS_16, check_sixteen_bit, listed

_METHOD = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class CheckpointFormat(BaseModel):
    """How a checkpoint's weights (and, where its config says, its KV cache) are stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: DType | None = Field("bf16", description="the weights' format; None: a "
                                "quantization autoplan does not price (--dtype needed)")
    fp8_block_scaled: bool = Field(False, description="FP8 weights with one scale per "
                                   "128x128 block (engines' block-scaled FP8 kernels)")
    kv_fp8: bool = Field(False, description="the config quantizes the KV cache to FP8 "
                         "(compressed-tensors kv_cache_scheme, ModelOpt kv_cache_quant_algo)")
    lm_head_quantized: bool = Field(False, description="the LM head is stored in the "
                                    "weights' format too (a GPTQ config's lm_head: true); "
                                    "otherwise it stays 16-bit")
    unquantized_modules: int = Field(0, ge=0, description="entries of the config's "
                                     "unquantized-module lists (modules_to_not_convert, "
                                     "ignore, exclude_modules) that name no module autoplan "
                                     "models, or are patterns it does not run: not applied")
    sixteen_bit: tuple[tuple[str, tuple[int, ...]], ...] = Field(
        (), description="(operator, layers) of the layers' projections the config leaves "
        "16-bit (autoplan.inputs.unquantized), priced in the activations' format when the "
        "checkpoint is served in its own format")
    quant_method: str | None = Field(None, pattern=_METHOD.pattern,
                                     description="the config's quantization_config "
                                     "quant_method, as given")
    unpriced: str | None = Field(None, max_length=200, description="why dtype is None: "
                                 "the format, in words (for the message that asks for --dtype)")

    @field_validator("sixteen_bit")
    @classmethod
    def _projections(cls, v):
        check_sixteen_bit(v)
        return v

    def sixteen_bit_at(self, layer: int) -> tuple[str, ...]:
        """The operators of ``layer`` whose weights this checkpoint keeps 16-bit."""
        return tuple(op for op, layers in self.sixteen_bit if layer in layers)

    @property
    def kv_dtype(self) -> str:
        """The KV cache the engines keep for this checkpoint unless told otherwise: the
        activations' 16-bit format (vLLM's and SGLang's ``--kv-cache-dtype auto``), FP8
        where the config quantizes the cache."""
        return "fp8" if self.kv_fp8 else ("fp16" if self.dtype == "fp16" else "bf16")


BF16 = CheckpointFormat()


def _int(value: Any) -> int | None:
    """An integer (``128.0`` is 128; JSON writers differ); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int_format(bits: int | None) -> DType | None:
    return {4: "int4", 8: "int8"}.get(bits) if bits is not None else None  # type: ignore[return-value]


def _compressed_tensors(q: dict[str, Any]) -> tuple[DType | None, bool, str]:
    groups = q.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return None, False, "compressed-tensors without config_groups weights"
    first = groups[sorted(groups)[0]]
    weights = first.get("weights") if isinstance(first, dict) else None
    if not isinstance(weights, dict):
        return None, False, "compressed-tensors without config_groups weights"
    bits, kind = _int(weights.get("num_bits")), weights.get("type")
    if kind == "float" and bits == 8:
        return "fp8", weights.get("strategy") == "block", ""
    if kind == "int" and _int_format(bits):
        return _int_format(bits), False, ""
    return None, False, f"compressed-tensors {show_value(kind)} weights of {show_value(bits)} bits"


def _unquantized(q: dict[str, Any]) -> int:
    """How many listed unquantized modules (or patterns) are not 16-bit anyway (the
    count before :func:`autoplan.inputs.unquantized.with_unquantized` matches them)."""
    return sum(1 for x in listed(q) if not ALWAYS_16.search(x))


def _unpriced(method: str | None, why: str) -> CheckpointFormat:
    return CheckpointFormat(dtype=None, quant_method=method, unpriced=why[:200])


def checkpoint_format(cfg: dict[str, Any]) -> CheckpointFormat:
    """The weight format of a parsed ``config.json`` (module docstring). A
    ``quantization_config`` autoplan cannot read or does not price leaves the format
    unknown (``dtype`` None), never an error: ``--dtype`` then says how it is served."""
    q = cfg.get("quantization_config")
    if q is None:
        torch_dtype = cfg.get("torch_dtype", cfg.get("dtype"))
        return CheckpointFormat(dtype="fp16" if torch_dtype == "float16" else "bf16")
    if not isinstance(q, dict):
        return _unpriced(None, f"a quantization_config that is not an object ({show_value(q)})")
    method = q.get("quant_method")
    if not isinstance(method, str) or not _METHOD.match(method):
        return _unpriced(None, f"a quantization_config without a readable quant_method "
                               f"({show_value(method)})")
    m = method.lower()
    dtype: DType | None = None
    block, kv, head, why = False, False, False, f"quant_method {method!r}"
    if m == "fp8":
        wbs = q.get("weight_block_size")
        if wbs is None:
            dtype = "fp8"
        elif isinstance(wbs, list) and len(wbs) == 2 and all((_int(v) or 0) > 0 for v in wbs):
            dtype, block = "fp8", True
        else:
            why = f"fp8 with a weight_block_size of {show_value(wbs)}"
    elif m == "fbgemm_fp8":
        dtype = "fp8"
    elif m == "compressed-tensors":
        dtype, block, why = _compressed_tensors(q)
        kv = isinstance(q.get("kv_cache_scheme"), dict) and _int(q["kv_cache_scheme"].get("num_bits")) == 8 \
            and q["kv_cache_scheme"].get("type") == "float"
    elif m == "modelopt":
        inner = q.get("quantization") if isinstance(q.get("quantization"), dict) else q
        algo = str(inner.get("quant_algo", "")).upper()
        dtype = "fp8" if algo == "FP8" else None
        why = f"ModelOpt quant_algo {show_value(inner.get('quant_algo'))}"
        kv = str(inner.get("kv_cache_quant_algo", "")).upper() == "FP8"
    elif m in ("gptq", "awq", "gptq_marlin", "awq_marlin", "marlin"):
        raw = q.get("bits", q.get("w_bit"))
        dtype = _int_format(_int(raw))
        why = f"{method} of {show_value(raw)} bits"
        head = m.startswith("gptq") and q.get("lm_head") is True
    elif m == "bitsandbytes":
        dtype = "int4" if q.get("load_in_4bit") is True else (
            "int8" if q.get("load_in_8bit") is True else None)
    if dtype is None:
        return _unpriced(method, why)
    return CheckpointFormat(dtype=dtype, fp8_block_scaled=block, kv_fp8=kv,
                            lm_head_quantized=head, unquantized_modules=_unquantized(q),
                            quant_method=method)


def with_sidecar(cfg: Any, path: Path) -> Any:
    """``cfg`` with the format of a ModelOpt export's ``hf_quant_config.json`` beside it
    when the config itself has no ``quantization_config``: ModelOpt writes the format
    there (``{"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8",
    "exclude_modules": [...]}}``) and the engines read it from the checkpoint folder
    (TensorRT-LLM's ``ModelOPTQuantConfigReader.from_file``,
    tensorrt_llm/_torch/auto_deploy/models/quant_config_reader.py; SGLang's and vLLM's
    ModelOpt loaders)."""
    if not isinstance(cfg, dict) or "quantization_config" in cfg:
        return cfg
    side = Path(path).parent / "hf_quant_config.json"
    if path_state(side) == "missing":
        return cfg
    doc = read_json(side, "ModelOpt quantization config")
    q = doc.get("quantization") if isinstance(doc, dict) else None
    if not isinstance(q, dict):
        raise InputError(f"ModelOpt quantization config {show(side)} has no 'quantization' object")
    return {**cfg, "quantization_config": {**q, "quant_method": "modelopt"}}


def served_dtype(fmt: CheckpointFormat, dtype: str | None) -> str:
    """The weight format to price: ``dtype`` when given, else the checkpoint's."""
    if dtype is not None:
        return dtype
    if fmt.dtype is None:
        raise InputError(f"the model's checkpoint holds {fmt.unpriced or 'an unknown format'}, "
                         f"not a weight format autoplan prices; give --dtype "
                         f"({', '.join(DTYPES)})")
    return fmt.dtype


def served_kv_dtype(fmt: CheckpointFormat, dtype: str | None, kv_dtype: str | None) -> str | None:
    """The KV format to price when none is given: the checkpoint's (its activations'
    16-bit format unless its config quantizes the cache) where the weight format is the
    checkpoint's too; None (the weight format's default) where ``dtype`` was given."""
    if kv_dtype is not None or dtype is not None:
        return kv_dtype
    return fmt.kv_dtype
