"""Per-kernel cost model of one (device kind, serving engine): a :class:`KernelProfile`
and the pure pricing functions the step cost model calls.

Every GPU kernel class has its own fixed cost and its own efficiency curve, fitted from
measured per-kernel latencies of current engines (``autoplan/calibrate/kernel_fit.py``, data in
``hardware/data/aic-kernels/``); there is no single per-kernel overhead. The latencies
are GPU time of CUDA-graph replays (NCCL: nccl-tests, not graphed), so host-side time
(scheduling, sampling, graph launch) is not in these parameters.

Conventions shared by all functions:

* Times are seconds; sizes are bytes; peaks are plain numbers passed by the caller:
  ``peak_flops`` is the dense datasheet peak of the format the kernel computes in (the
  FP8 peak for an FP8 GEMM or FP8 attention, the BF16 peak otherwise), ``hbm_bw`` the
  datasheet memory bandwidth in bytes/s. Efficiencies are fractions of those peaks.
* Shape arguments may be Python numbers or numpy arrays (broadcast); a scalar call
  returns a ``float``.
* dtype keys: ``bf16`` (also used for ``fp16``), ``fp8`` (per-tensor scaled FP8, the
  activation quantisation included) and ``fp8_block`` (128x128 block-scaled FP8,
  DeepSeek style). KV-cache keys: ``bf16`` and ``fp8``.

This module imports nothing from autoplan except :mod:`autoplan.errors`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoplan.errors import InputError

GEMM_DTYPES = ("bf16", "fp8", "fp8_block")


KV_DTYPES = ("bf16", "fp8")


WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp8_block": 1.0}


KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


ALLREDUCE_IMPLS = ("custom", "nccl")


#: DeepSeek-V3 MLA geometry: the latent KV row (kv_lora_rank + rope dim) one cached token
#: holds, and the per-head query/key and value widths of the attention products.
MLA_LATENT_DIM = 576


MLA_VALUE_DIM = 512


MLA_QK_HEAD_DIM = 192


MLA_V_HEAD_DIM = 128


MLA_HIDDEN = 7168


MLA_Q_LORA_RANK = 1536


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _set_together(m: BaseModel, switch: str, regime: str, what: str) -> BaseModel:
    """A second regime and its switch come as a pair (the validator of each such model)."""
    if (getattr(m, switch) is None) != (getattr(m, regime) is None):
        raise ValueError(f"{what}: {switch} and {regime} are set together")
    return m


class GemmParams(_Strict):
    """Dense GEMM ``y[m x n] = x[m x k] W^T`` in one weight format.

    ``t = fixed_s + smax(F / (P * efficiency * k/(k + half_depth) * mn/(mn + half_outputs)
    * (1 - long_kernel_loss * F/(F + long_kernel_flops))),
    bytes / (BW * memory_efficiency))`` with ``F = 2mnk``, ``bytes = n*k*wbytes + m*(n+k)*2`` and
    ``smax(x, y) = (x^q + y^q)^(1/q)``, ``q = overlap_exponent`` (large q is max).
    Few rows are slow because few output tiles fill the GPU: the fill term ``mn/(mn +
    half_outputs)`` carries it (a separate ``m/(m + h)`` factor fitted to ~0 once it is in,
    and together they would make time fall with m at tiny m, so there is none).
    FP8 formats add the activation quantisation pass, not overlapped:
    ``quantization_passes * 3 m k / (BW * memory_efficiency)`` (read BF16, write FP8).
    """

    efficiency: float = Field(gt=0, le=1, description="ceiling fraction of the format's peak FLOP/s, before the depth, fill and long-kernel factors")
    half_depth: float = Field(ge=0, le=65536, description="reduction depth k at which compute efficiency is half the plateau (short K loops do not amortise prologue and epilogue)")
    half_outputs: float = Field(ge=0, le=1e10, description="output elements m*n at which compute efficiency is half the plateau (too few output tiles to fill the GPU)")
    long_kernel_loss: float = Field(ge=0, le=0.9, description="fraction of the plateau lost by very long GEMMs (clocks under sustained load, heuristics)")
    long_kernel_flops: float = Field(gt=0, le=1e16, description="FLOPs of one call at which half of long_kernel_loss is lost")
    memory_efficiency: float = Field(gt=0, le=1, description="fraction of HBM bandwidth when streaming weights")
    fixed_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call (launch tail, epilogue; FP8: also the quantisation kernel's)")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of compute and memory time")
    quantization_passes: float = Field(ge=0, le=8, description="activation quantisation passes over m x k (read BF16, write FP8) timed in the op; 0 for BF16")


class DecodeAttentionRegime(_Strict):
    """One regime of generation attention: the terms of :class:`DecodeAttentionParams`."""

    floor_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call at batch 1 and tiny context")
    memory_efficiency: float = Field(gt=0, le=1, description="asymptotic fraction of HBM bandwidth on KV reads")
    startup_bytes: float = Field(ge=0, le=1e10, description="KV bytes' worth of pipeline start-up in the streaming regime: achieved bandwidth is memory_efficiency * bytes/(bytes + startup_bytes)")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x KV head) that does not scale with context (short-context, large-batch rows)")
    context_latency_s: float = Field(ge=0, le=1e-3, description="extra latency of long contexts at low parallelism (split-KV reduction), saturating")
    context_half_tokens: float = Field(gt=0, le=1e7, description="context length at which half of context_latency_s is reached")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the byte term and the per-(sequence x KV head) term")


class DecodeAttentionParams(DecodeAttentionRegime):
    """Generation-phase attention (one new token per sequence), priced by the KV bytes it
    reads, never as a GEMM.

    ``t = floor_s + context_latency_s * L/(L + context_half_tokens)
    + smax((kv_bytes + startup_bytes) / (BW * memory_efficiency), per_sequence_head_s * batch * kv_heads)``,
    ``kv_bytes = batch * L * kv_heads * head_dim * 2 * kv_bytes_per_elem``.

    Calls reading at most ``small_kv_max_bytes`` are priced by ``small_kv`` (same terms).
    On the Hopper BF16 tables the fit puts that switch at 32 MiB (SGLang on H100: 8 MiB),
    between the measured 33.6 and 67 MB of KV per call: the 50 MB L2 of H100/H200 holds the smaller calls' KV between the
    collector's back-to-back replays (it does not rotate buffers, FINDINGS.md §9), and the
    kernels' split-KV (multi-block) choices change with the work per call; one saturating
    curve put the 8-32 MB rows 20-36% too slow and the 64-256 MB rows 20-35% too fast. A
    call past the switch is never priced below the same call reading the switch's bytes.
    """

    small_kv_max_bytes: float | None = Field(default=None, gt=0, le=1e12, description="largest KV bytes per call priced by small_kv; None: one regime for every size")
    small_kv: DecodeAttentionRegime | None = Field(default=None, description="the same terms for calls reading at most small_kv_max_bytes")

    @model_validator(mode="after")
    def _small_pair(self) -> DecodeAttentionParams:
        return _set_together(self, "small_kv_max_bytes", "small_kv", "decode attention")


class PrefillAttentionParams(_Strict):
    """Context-phase causal attention over ``isl`` new tokens per sequence, no prefix.

    ``t = fixed_s + flops / (P * efficiency * s/(s + half_tokens)) + per_sequence_head_s * batch * heads``,
    ``flops = 4 * batch * heads * head_dim * s(s+1)/2``.
    """

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of peak FLOP/s at long sequences")
    half_tokens: float = Field(ge=0, le=1e6, description="sequence length at which efficiency is half the plateau")
    fixed_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x query head) independent of length")


class MlaDecodeRegime(_Strict):
    """One path of MLA generation attention: the terms of :class:`MlaDecodeParams`."""

    floor_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per call")
    memory_efficiency: float = Field(gt=0, le=1, description="asymptotic fraction of HBM bandwidth on latent KV reads")
    compute_efficiency: float = Field(gt=0, le=1, description="fraction of peak FLOP/s on the QK and PV products")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x head) independent of context")
    per_sequence_s: float = Field(ge=0, le=1e-5, description="work per sequence outside the attention kernel's parallel part (cache write, per-token small kernels of a module)")
    context_latency_s: float = Field(ge=0, le=1e-2, description="extra saturating latency of long contexts")
    context_half_tokens: float = Field(gt=0, le=1e7, description="context length at which half of context_latency_s is reached")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the three terms")


class MlaDecodeParams(MlaDecodeRegime):
    """DeepSeek-V3 MLA generation attention (absorbed form): every query head of a
    sequence reads the same latent KV row of ``576`` elements per cached token.

    ``t = floor_s + per_sequence_s * batch + context_latency_s * L/(L + context_half_tokens)
    + smax(kv_bytes / (BW * memory_efficiency), flops / (P * compute_efficiency),
    per_sequence_head_s * batch * heads)``, ``kv_bytes = batch * L * 576 * kv_bytes_per_elem``,
    ``flops = 2 * batch * heads * L * (576 + 512)``. The MLA decode kernels schedule by batch:
    small batches split each sequence's KV over the SMs and combine the partial results
    (FlashMLA's ``get_mla_metadata`` num_splits, TensorRT-LLM's multi-block mode), large
    batches run one block per sequence and head group, so where the measured rows step
    between the two (on H100/H200 at batch 8-16 for vLLM, 64 for SGLang and TensorRT-LLM) ``small_batch``
    prices batches of at most ``small_batch_max`` with the same terms, the switch placed at
    a measured batch by the fit (``autoplan/calibrate/kernel_regimes.py``).
    """

    small_batch_max: float | None = Field(default=None, gt=0, le=1e6, description="largest batch the small-batch (split-KV) path runs; None: one path for every batch")
    small_batch: MlaDecodeRegime | None = Field(default=None, description="the same terms for batches of at most small_batch_max")

    @model_validator(mode="after")
    def _small_pair(self) -> MlaDecodeParams:
        return _set_together(self, "small_batch_max", "small_batch", "MLA decode")


class MlaPrefillRegime(_Strict):
    """One path of MLA context attention: the terms of :class:`MlaPrefillParams`."""

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of peak FLOP/s")
    half_tokens: float = Field(ge=0, le=1e6, description="sequence length at half the plateau")
    fixed_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per call")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x head) independent of length")


class MlaPrefillParams(MlaPrefillRegime):
    """DeepSeek-V3 MLA context attention (non-absorbed: per head q/k 192 wide, v 128).

    ``t = fixed_s + flops / (P * efficiency * s/(s + half_tokens)) + per_sequence_head_s * batch * heads``,
    ``flops = 2 * batch * heads * (192 + 128) * s(s+1)/2``. Where the engine runs short
    sequences on another path (vLLM 0.24's FP8-KV MLA module: 15-25% slower than the long
    path's curve at 16-128 new tokens, then a step down at 256; the fit finds switches at
    64-512 tokens on most engines and kinds), ``short`` prices
    sequences of at most ``short_max_tokens`` new tokens with the same four terms; the
    fit places the switch at a measured length (``autoplan/calibrate/kernel_regimes.py``).
    """

    short_max_tokens: float | None = Field(default=None, gt=0, le=1e6, description="longest sequence (new tokens) the engine runs on its short-sequence path, priced by short (None: one path for every length)")
    short: MlaPrefillRegime | None = Field(default=None, description="the same four terms for sequences of at most short_max_tokens new tokens")

    @model_validator(mode="after")
    def _short_pair(self) -> MlaPrefillParams:
        return _set_together(self, "short_max_tokens", "short", "MLA prefill")


class MoeParams(_Strict):
    """Fused MoE layer (routing, gate+up, activation, down) of one GPU, as a grouped GEMM.

    Balanced routing, per GPU: ``A = tokens * topk / ep`` token-expert assignments,
    ``X = clip(min(E, tokens*topk) / ep, 1, E/ep)`` local experts hit, ``r = A/X`` rows per
    hit expert, local intermediate ``I = inter/tp``; ``F = 6 A hidden I`` and weight bytes
    ``W = X * 3 * hidden * I * wbytes``.
    ``t = fixed_s + smax3(F / (P * efficiency * r/(r + half_rows)),
    W / (BW * memory_efficiency * X/(X + expert_half_count)),
    per_assignment_s * A + per_expert_s * X) + (per_model_expert_s + per_token_expert_s * tokens) * E
    + per_token_s * tokens``.

    The ``E`` term is work per expert of the whole model, local or not: under EP the
    engines' fused MoE (an expert map, every rank holding every token) aligns, pads and
    walks the blocks of all ``E`` experts, once per call and for every token, so it does
    not shrink with ``ep``; with ``ep = 1`` it is the alignment and the router's scoring
    of ``E`` experts per token. Only rows of models with different ``E`` tell that term
    from work per token that does not grow with ``E``: a class measured on one model fits
    ``per_token_s`` (every token, on every rank) in its place, and ``per_model_expert_s``
    (then a constant, ``fixed_s``'s) is 0, so a model with many more experts is not priced
    by a scaling no row showed.
    """

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of the format's peak FLOP/s")
    half_rows: float = Field(ge=0, le=1e4, description="rows per expert at which efficiency is half the plateau")
    memory_efficiency: float = Field(gt=0, le=1, description="fraction of HBM bandwidth streaming expert weights, many experts hit")
    expert_half_count: float = Field(ge=0, le=1e3, description="experts hit at which weight streaming reaches half of memory_efficiency (few experts: too little parallelism)")
    fixed_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per layer (routing, permute, several launches)")
    per_assignment_s: float = Field(ge=0, le=1e-5, description="routing/permute/unpermute work per token-expert assignment")
    per_expert_s: float = Field(ge=0, le=1e-3, description="work per expert hit not hidden by bandwidth")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the three terms")
    per_model_expert_s: float = Field(ge=0, le=1e-5, description="fixed time per expert of the whole model, local or not (block alignment over all experts)")
    per_token_expert_s: float = Field(ge=0, le=1e-7, description="time per (token x expert of the whole model), local or not (router scores, expert-map scan)")
    per_token_s: float = Field(0.0, ge=0, le=1e-5, description="time per token on every rank, whatever the experts (fitted where the rows hold one model's expert count, in place of per_token_expert_s)")


class ElementwiseParams(_Strict):
    """A small stand-alone element-wise or norm kernel over ``rows x cols`` elements moving
    ``bytes`` (read plus written):
    ``t = fixed_s + bytes / (BW * memory_efficiency) * bytes/(bytes + cache_half_bytes)
    + per_row_s * rows + per_column_s * cols``.
    Fitted on the FP8 quantise kernel (read BF16, write FP8), the only element-wise kernel
    measured. ``cache_half_bytes`` describes how much of a small working set the L2 serves
    in these back-to-back measurements (the same holds for an activation the previous
    kernel just wrote); the row and column terms are per-row serial work (one block per
    row walks its columns) seen in some engines' kernels."""

    fixed_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call")
    memory_efficiency: float = Field(gt=0, le=1, description="fraction of HBM bandwidth on bytes beyond the cache")
    cache_half_bytes: float = Field(ge=0, le=1e10, description="bytes moved at which half the traffic still reaches DRAM")
    per_row_s: float = Field(ge=0, le=1e-6, description="time per row (token) not hidden by bandwidth")
    per_column_s: float = Field(ge=0, le=1e-6, description="time per element of one row (serial walk of a row)")


class AllReduceRegime(_Strict):
    """One algorithm of an all-reduce, used for messages from ``min_bytes`` to ``max_bytes``:
    ``t = floor_s + 2(t-1)/t * M / bus_bandwidth``. Between one regime's ``max_bytes`` and
    the next one's ``min_bytes`` (the engine switches somewhere in that gap) the time is
    interpolated geometrically in log M between the two regimes. Where the two bounds are
    equal the regimes meet at that size (NCCL, whose protocol changes are continuous:
    it picks the one its tuning model predicts fastest)."""

    min_bytes: float | None = Field(gt=0, description="smallest message of this regime; None for the first")
    max_bytes: float | None = Field(gt=0, description="largest message of this regime; None for the last")
    floor_s: float = Field(ge=0, le=1e-2, description="time of an empty message in this regime")
    bus_bandwidth: float = Field(gt=0, le=1e13, description="bus bandwidth in bytes/s (nccl-tests busBW convention)")


class AllReduceParams(_Strict):
    """All-reduce of one implementation inside one NVLink (or PCIe) domain: for each GPU
    count, the regimes the implementation switches between by message size (one-shot,
    two-shot, ring, ...), in increasing size."""

    regimes: dict[int, list[AllReduceRegime]] = Field(description="GPU count -> regimes by size, at least one each")

    @model_validator(mode="after")
    def _ordered(self) -> AllReduceParams:
        for t, rs in self.regimes.items():
            if t < 2 or not rs:
                raise ValueError(f"all-reduce at {t} GPUs: need t >= 2 and at least one regime")
            if rs[0].min_bytes is not None or rs[-1].max_bytes is not None:
                raise ValueError(f"all-reduce at {t} GPUs: the first regime has no min_bytes, the last no max_bytes")
            edges = []
            for k, r in enumerate(rs):
                if (k > 0 and r.min_bytes is None) or (k < len(rs) - 1 and r.max_bytes is None):
                    raise ValueError(f"all-reduce at {t} GPUs: inner regime bounds must be set")
                edges += [e for e in (r.min_bytes, r.max_bytes) if e is not None]
            if edges != sorted(edges):
                raise ValueError(f"all-reduce at {t} GPUs: regime bounds must increase")
        return self


class KernelProfile(_Strict):
    """Kernel-level cost parameters of one (device kind, engine).

    A class whose key is absent has no measurements for this pair (for example FP8 on
    A100); the pricing function then raises :class:`InputError` naming it.
    """

    device_kind: str = Field(description="autoplan device kind (hardware/device_kinds.yaml)")
    engine: str = Field(description="serving engine: trtllm, vllm or sglang")
    engine_version: str = Field(description="engine version of the measurements")
    gemm: dict[str, GemmParams] = Field(description="by weight format: bf16, fp8, fp8_block")
    decode_attention: dict[str, DecodeAttentionParams] = Field(description="by KV-cache dtype: bf16, fp8")
    prefill_attention: dict[str, PrefillAttentionParams] = Field(description="by attention compute dtype: bf16, fp8")
    mla_decode: dict[str, MlaDecodeParams] = Field(description="by KV-cache dtype")
    mla_prefill: dict[str, MlaPrefillParams] = Field(description="by KV-cache dtype")
    mla_fitted_on: Literal["kernel", "module"] = Field(description="the MLA parameters always describe the attention kernel; 'module' says they were fitted on whole-module tables (the engine publishes no kernel table) with the projection GEMMs, priced by this profile's BF16 GEMM parameters, taken out")
    moe: dict[str, MoeParams] = Field(description="by expert weight format: bf16, fp8, fp8_block; with moe_ep absent for a format, these price every (moe_tp, moe_ep)")
    moe_ep: dict[str, MoeParams] = Field(default_factory=dict, description="by expert weight format: the MoE kernel when experts are split over ranks (moe_ep > 1), for engines whose EP path runs a different kernel configuration than their TP path (the profile's notes say why); moe then prices moe_ep = 1 only")
    elementwise: ElementwiseParams | None = Field(description="small element-wise kernel; None where not measured")
    allreduce: dict[str, AllReduceParams] = Field(description="custom: the engine's graph-captured all-reduce call (its own kernels, and what it falls back to for large messages); nccl: nccl-tests (not graphed)")
    notes: list[str] = Field(default_factory=list, description="exclusions and caveats of the fit")


def load_kernel_profiles(path, shipped: bool = False) -> dict[str, KernelProfile]:
    """Read a ``<engine>.yaml`` written by ``autoplan.calibrate.kernel_profiles.profile_yaml``
    (a regular file of bounded size, safe YAML; ``shipped``: one of the package's own)."""
    from pathlib import Path

    from autoplan.errors import first_error
    from autoplan.inputs.reading import read_text
    from autoplan.inputs.safe_yaml import MAX_YAML_BYTES, YAML_ERRORS, safe_load_yaml

    p = Path(path)
    text = read_text(p, "kernel profiles", None if shipped else MAX_YAML_BYTES)
    try:
        doc = safe_load_yaml(text, shipped=shipped)
    except YAML_ERRORS:
        raise InputError(f"kernel profiles {str(p)!r} are not valid YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("device_kinds"), dict) or not isinstance(doc.get("engine"), str):
        raise InputError(f"{p.name}: expected keys 'engine' and 'device_kinds'")
    out = {}
    for kind, block in doc["device_kinds"].items():
        if not isinstance(block, dict):
            raise InputError(f"{p.name}: device kind {kind!r}: expected a mapping")
        try:
            out[kind] = KernelProfile.model_validate({"device_kind": kind, **block})
        except ValueError as e:
            raise InputError(f"{p.name}: device kind {kind!r}: {first_error(e)}") from None
    return out
