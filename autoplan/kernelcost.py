"""Per-kernel cost model of one (device kind, serving engine): a :class:`KernelProfile`
and the pure pricing functions the step cost model calls.

Every GPU kernel class has its own fixed cost and its own efficiency curve, fitted from
measured per-kernel latencies of current engines (``autoplan/kernelfit.py``, data in
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

import math
from typing import Literal

import numpy as np
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


# ---------------------------------------------------------------- parameter blocks


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


class DecodeAttentionParams(_Strict):
    """Generation-phase attention (one new token per sequence), priced by the KV bytes it
    reads, never as a GEMM.

    ``t = floor_s + context_latency_s * L/(L + context_half_tokens)
    + smax((kv_bytes + startup_bytes) / (BW * memory_efficiency), per_sequence_head_s * batch * kv_heads)``,
    ``kv_bytes = batch * L * kv_heads * head_dim * 2 * kv_bytes_per_elem``.
    """

    floor_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call at batch 1 and tiny context")
    memory_efficiency: float = Field(gt=0, le=1, description="asymptotic fraction of HBM bandwidth on KV reads")
    startup_bytes: float = Field(ge=0, le=1e10, description="KV bytes' worth of pipeline start-up in the streaming regime: achieved bandwidth is memory_efficiency * bytes/(bytes + startup_bytes)")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x KV head) that does not scale with context (short-context, large-batch rows)")
    context_latency_s: float = Field(ge=0, le=1e-3, description="extra latency of long contexts at low parallelism (split-KV reduction), saturating")
    context_half_tokens: float = Field(gt=0, le=1e7, description="context length at which half of context_latency_s is reached")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the byte term and the per-(sequence x KV head) term")


class PrefillAttentionParams(_Strict):
    """Context-phase causal attention over ``isl`` new tokens per sequence, no prefix.

    ``t = fixed_s + flops / (P * efficiency * s/(s + half_tokens)) + per_sequence_head_s * batch * heads``,
    ``flops = 4 * batch * heads * head_dim * s(s+1)/2``.
    """

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of peak FLOP/s at long sequences")
    half_tokens: float = Field(ge=0, le=1e6, description="sequence length at which efficiency is half the plateau")
    fixed_s: float = Field(ge=0, le=1e-3, description="fixed GPU time per call")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x query head) independent of length")


class MlaDecodeParams(_Strict):
    """DeepSeek-V3 MLA generation attention (absorbed form): every query head of a
    sequence reads the same latent KV row of ``576`` elements per cached token.

    ``t = floor_s + context_latency_s * L/(L + context_half_tokens)
    + smax(kv_bytes / (BW * memory_efficiency), flops / (P * compute_efficiency),
    per_sequence_head_s * batch * heads)``, ``kv_bytes = batch * L * 576 * kv_bytes_per_elem``,
    ``flops = 2 * batch * heads * L * (576 + 512)``.
    """

    floor_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per call")
    memory_efficiency: float = Field(gt=0, le=1, description="asymptotic fraction of HBM bandwidth on latent KV reads")
    compute_efficiency: float = Field(gt=0, le=1, description="fraction of peak FLOP/s on the QK and PV products")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x head) independent of context")
    per_sequence_s: float = Field(ge=0, le=1e-5, description="work per sequence outside the attention kernel's parallel part (cache write, per-token small kernels of a module)")
    context_latency_s: float = Field(ge=0, le=1e-2, description="extra saturating latency of long contexts")
    context_half_tokens: float = Field(gt=0, le=1e7, description="context length at which half of context_latency_s is reached")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the three terms")


class MlaPrefillParams(_Strict):
    """DeepSeek-V3 MLA context attention (non-absorbed: per head q/k 192 wide, v 128).

    ``t = fixed_s + flops / (P * efficiency * s/(s + half_tokens)) + per_sequence_head_s * batch * heads``,
    ``flops = 2 * batch * heads * (192 + 128) * s(s+1)/2``.
    """

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of peak FLOP/s")
    half_tokens: float = Field(ge=0, le=1e6, description="sequence length at half the plateau")
    fixed_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per call")
    per_sequence_head_s: float = Field(ge=0, le=1e-5, description="work per (sequence x head) independent of length")


class MoeParams(_Strict):
    """Fused MoE layer (routing, gate+up, activation, down) of one GPU, as a grouped GEMM.

    Balanced routing, per GPU: ``A = tokens * topk / ep`` token-expert assignments,
    ``X = clip(min(E, tokens*topk) / ep, 1, E/ep)`` local experts hit, ``r = A/X`` rows per
    hit expert, local intermediate ``I = inter/tp``; ``F = 6 A hidden I`` and weight bytes
    ``W = X * 3 * hidden * I * wbytes``.
    ``t = fixed_s + smax3(F / (P * efficiency * r/(r + half_rows)),
    W / (BW * memory_efficiency * X/(X + expert_half_count)),
    per_assignment_s * A + per_expert_s * X)``.
    """

    efficiency: float = Field(gt=0, le=1, description="plateau fraction of the format's peak FLOP/s")
    half_rows: float = Field(ge=0, le=1e4, description="rows per expert at which efficiency is half the plateau")
    memory_efficiency: float = Field(gt=0, le=1, description="fraction of HBM bandwidth streaming expert weights, many experts hit")
    expert_half_count: float = Field(ge=0, le=1e3, description="experts hit at which weight streaming reaches half of memory_efficiency (few experts: too little parallelism)")
    fixed_s: float = Field(ge=0, le=1e-2, description="fixed GPU time per layer (routing, permute, several launches)")
    per_assignment_s: float = Field(ge=0, le=1e-5, description="routing/permute/unpermute work per token-expert assignment")
    per_expert_s: float = Field(ge=0, le=1e-3, description="work per expert hit not hidden by bandwidth")
    overlap_exponent: float = Field(ge=1, le=64, description="q of the smooth max of the three terms")


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
    interpolated geometrically in log M between the two regimes."""

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
    moe: dict[str, MoeParams] = Field(description="by expert weight format: bf16, fp8, fp8_block")
    elementwise: ElementwiseParams | None = Field(description="small element-wise kernel; None where not measured")
    allreduce: dict[str, AllReduceParams] = Field(description="custom: the engine's graph-captured all-reduce call (its own kernels, and what it falls back to for large messages); nccl: nccl-tests (not graphed)")
    notes: list[str] = Field(default_factory=list, description="exclusions and caveats of the fit")


def load_kernel_profiles(path) -> dict[str, KernelProfile]:
    """Read a ``kernels-<engine>.yaml`` written by ``autoplan.kernelfit.profile_yaml``."""
    import yaml
    from pathlib import Path

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read kernel profiles {str(p)!r}: {e.__class__.__name__}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("device_kinds"), dict) or not isinstance(doc.get("engine"), str):
        raise InputError(f"{p.name}: expected keys 'engine' and 'device_kinds'")
    out = {}
    for kind, block in doc["device_kinds"].items():
        if not isinstance(block, dict):
            raise InputError(f"{p.name}: device kind {kind!r}: expected a mapping")
        try:
            out[kind] = KernelProfile.model_validate({"device_kind": kind, **block})
        except ValueError as e:
            raise InputError(f"{p.name}: device kind {kind!r}: {str(e).splitlines()[0]} "
                             f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else ''})") from None
    return out


# ---------------------------------------------------------------- helpers


def _out(x):
    a = np.asarray(x, dtype=float)
    return float(a) if a.ndim == 0 else a


def _smax(x, y, q):
    """Smooth maximum (x^q + y^q)^(1/q), computed stably."""
    m = np.maximum(x, y)
    m = np.where(m > 0, m, 1.0)
    return m * ((x / m) ** q + (y / m) ** q) ** (1.0 / q)


def _smax3(x, y, z, q):
    m = np.maximum(np.maximum(x, y), z)
    m = np.where(m > 0, m, 1.0)
    return m * ((x / m) ** q + (y / m) ** q + (z / m) ** q) ** (1.0 / q)


def _pick(table: dict, key: str, what: str, p: KernelProfile):
    if key == "fp16":
        key = "bf16"
    try:
        return table[key]
    except KeyError:
        raise InputError(f"kernel profile {p.device_kind}/{p.engine}: no {what} parameters for "
                         f"{key!r} (have: {', '.join(sorted(table)) or 'none'})") from None


# ---------------------------------------------------------------- cores (raw floats; the fitter uses these)


def gemm_core(eta, hk, ho, loss, f0, eta_m, fixed, q, quant, peak_flops, hbm_bw, m, n, k, wbytes):
    m = np.asarray(m, dtype=float)
    k = np.asarray(k, dtype=float)
    fl = 2.0 * m * n * k
    compute = fl / (peak_flops * eta * k / (k + hk) * (m * n) / (m * n + ho) * (1.0 - loss * fl / (fl + f0)))
    memory = (n * k * wbytes + m * (n + k) * 2.0) / (hbm_bw * eta_m)
    return fixed + _smax(compute, memory, q) + quant * 3.0 * m * k / (hbm_bw * eta_m)


def decode_core(floor, eta_m, startup, per_unit, ctx_lat, ctx_half, q, hbm_bw, kv_bytes, units, ctx):
    return floor + ctx_lat * ctx / (ctx + ctx_half) + _smax((kv_bytes + startup) / (hbm_bw * eta_m), per_unit * units, q)


def prefill_core(eta, h, fixed, per_unit, peak_flops, flops, s, units):
    s = np.asarray(s, dtype=float)
    return fixed + flops / (peak_flops * eta * s / (s + h)) + per_unit * units


def mla_decode_core(floor, eta_m, eta_c, per_unit, per_seq, ctx_lat, ctx_half, q, peak_flops, hbm_bw, kv_bytes, flops,
                    units, ctx, batch):
    return (floor + per_seq * np.asarray(batch, dtype=float) + ctx_lat * ctx / (ctx + ctx_half)
            + _smax3(kv_bytes / (hbm_bw * eta_m), flops / (peak_flops * eta_c), per_unit * units, q))


def moe_core(eta, h, eta_m, x_half, fixed, per_assign, per_expert, q, peak_flops, hbm_bw, flops, wbytes_total,
             rows, assign, experts_hit):
    rows = np.asarray(rows, dtype=float)
    experts_hit = np.asarray(experts_hit, dtype=float)
    compute = flops / (peak_flops * eta * rows / (rows + h))
    memory = wbytes_total / (hbm_bw * eta_m * experts_hit / (experts_hit + x_half))
    return fixed + _smax3(compute, memory, per_assign * assign + per_expert * experts_hit, q)


def allreduce_core(regimes, gpus, message_bytes):
    """regimes: sequence of (min_bytes, max_bytes, floor_s, bus_bandwidth) in increasing
    size (None: unbounded); in the gap between two regimes the time is interpolated
    geometrically in log size."""
    mb = np.asarray(message_bytes, dtype=float)
    f = 2.0 * (gpus - 1) / gpus
    times = [a + f * mb / bw for _, _, a, bw in regimes]
    out = np.array(times[0], dtype=float, copy=True)
    for k in range(1, len(regimes)):
        lo_edge = regimes[k - 1][1]  # end of the previous regime
        hi_edge = regimes[k][0]  # start of this one
        w = np.clip(np.log(np.maximum(mb, 1.0) / lo_edge) / math.log(hi_edge / lo_edge), 0.0, 1.0) \
            if hi_edge > lo_edge else (mb > lo_edge).astype(float)
        out = np.where(mb > lo_edge, np.exp((1.0 - w) * np.log(out) + w * np.log(times[k])), out)
    return out


# ---------------------------------------------------------------- shape helpers


def moe_shape(tokens, hidden, inter, topk, experts, moe_tp=1, moe_ep=1, wbytes=2.0):
    """(flops, weight bytes, rows per hit expert, assignments, experts hit) of one GPU's
    share of a fused MoE layer under balanced routing."""
    tokens = np.asarray(tokens, dtype=float)
    local_e = np.asarray(experts, dtype=float) / moe_ep
    local_i = np.asarray(inter, dtype=float) / moe_tp
    assign = tokens * topk / moe_ep
    hit = np.clip(np.minimum(experts, tokens * topk) / moe_ep, 1.0, local_e)
    rows = assign / hit
    flops = 6.0 * assign * hidden * local_i
    byts = hit * 3.0 * hidden * local_i * wbytes
    return flops, byts, rows, assign, hit


# ---------------------------------------------------------------- pricing functions


def gemm_time_s(p: KernelProfile, peak_flops: float, hbm_bw: float, m, n, k, dtype: str = "bf16"):
    """One dense GEMM of ``m`` rows (tokens), ``n`` outputs, ``k`` inputs, weights in ``dtype``.
    ``peak_flops`` is the peak of ``dtype`` (FP8 peak for fp8 and fp8_block)."""
    g = _pick(p.gemm, dtype, "GEMM", p)
    wb = WEIGHT_BYTES.get(dtype, 2.0)
    return _out(gemm_core(g.efficiency, g.half_depth, g.half_outputs, g.long_kernel_loss,
                          g.long_kernel_flops, g.memory_efficiency, g.fixed_s, g.overlap_exponent,
                          g.quantization_passes, peak_flops, hbm_bw, m, n, k, wb))


def decode_attention_time_s(p: KernelProfile, hbm_bw: float, batch, kv_len, num_kv_heads,
                            head_dim: int = 128, kv_dtype: str = "bf16"):
    """One layer's generation attention: ``batch`` sequences of ``kv_len`` cached tokens
    (the new one included), ``num_kv_heads`` KV heads on this GPU."""
    d = _pick(p.decode_attention, kv_dtype, "decode-attention", p)
    batch = np.asarray(batch, dtype=float)
    ctx = np.asarray(kv_len, dtype=float)
    kv_bytes = batch * ctx * num_kv_heads * head_dim * 2.0 * KV_BYTES.get(kv_dtype, 2.0)
    return _out(decode_core(d.floor_s, d.memory_efficiency, d.startup_bytes, d.per_sequence_head_s, d.context_latency_s,
                            d.context_half_tokens, d.overlap_exponent, hbm_bw, kv_bytes,
                            batch * num_kv_heads, ctx))


def prefill_flops(batch, isl, num_heads, head_dim=128):
    """Causal attention FLOPs (QK^T and PV) of ``isl`` new tokens per sequence."""
    s = np.asarray(isl, dtype=float)
    return 4.0 * np.asarray(batch, dtype=float) * num_heads * head_dim * s * (s + 1.0) / 2.0


def prefill_attention_time_s(p: KernelProfile, peak_flops: float, batch, isl, num_heads,
                             head_dim: int = 128, dtype: str = "bf16"):
    """One layer's causal prefill attention; ``dtype`` is the attention compute format
    (``fp8`` for FP8 FMHA, else ``bf16``) and ``peak_flops`` its peak."""
    a = _pick(p.prefill_attention, dtype, "prefill-attention", p)
    fl = prefill_flops(batch, isl, num_heads, head_dim)
    units = np.asarray(batch, dtype=float) * num_heads
    return _out(prefill_core(a.efficiency, a.half_tokens, a.fixed_s, a.per_sequence_head_s, peak_flops,
                             fl, isl, units))


def mla_decode_time_s(p: KernelProfile, peak_flops: float, hbm_bw: float, batch, kv_len, num_heads,
                      kv_dtype: str = "bf16"):
    """One layer's DeepSeek-V3 MLA generation attention kernel (absorbed form, projections
    not included) with ``num_heads`` heads on this GPU and ``kv_len`` cached tokens."""
    d = _pick(p.mla_decode, kv_dtype, "MLA decode", p)
    batch = np.asarray(batch, dtype=float)
    ctx = np.asarray(kv_len, dtype=float)
    kv_bytes = batch * ctx * MLA_LATENT_DIM * KV_BYTES.get(kv_dtype, 2.0)
    flops = 2.0 * batch * num_heads * ctx * (MLA_LATENT_DIM + MLA_VALUE_DIM)
    return _out(mla_decode_core(d.floor_s, d.memory_efficiency, d.compute_efficiency, d.per_sequence_head_s,
                                d.per_sequence_s, d.context_latency_s, d.context_half_tokens, d.overlap_exponent,
                                peak_flops, hbm_bw, kv_bytes, flops, batch * num_heads, ctx, batch))


def mla_prefill_flops(batch, isl, num_heads):
    s = np.asarray(isl, dtype=float)
    return 2.0 * np.asarray(batch, dtype=float) * num_heads * (MLA_QK_HEAD_DIM + MLA_V_HEAD_DIM) * s * (s + 1.0) / 2.0


def mla_prefill_time_s(p: KernelProfile, peak_flops: float, batch, isl, num_heads, kv_dtype: str = "bf16"):
    """One layer's DeepSeek-V3 MLA context attention over ``isl`` new tokens per sequence."""
    a = _pick(p.mla_prefill, kv_dtype, "MLA prefill", p)
    fl = mla_prefill_flops(batch, isl, num_heads)
    units = np.asarray(batch, dtype=float) * num_heads
    return _out(prefill_core(a.efficiency, a.half_tokens, a.fixed_s, a.per_sequence_head_s, peak_flops,
                             fl, isl, units))


def mla_projection_gemms(phase: str, batch, isl, num_heads) -> list[tuple]:
    """(m, n, k) of the GEMMs around DeepSeek-V3 MLA attention with ``num_heads`` local
    heads: fused q_a+kv_a, q_b, then for ``decode`` the absorbed per-head W_UK and W_UV
    products (as one GEMM each) or for ``prefill`` kv_b, and o_proj."""
    m = np.asarray(batch, dtype=float) * (1.0 if phase == "decode" else np.asarray(isl, dtype=float))
    h = num_heads
    gemms = [(m, MLA_Q_LORA_RANK + MLA_LATENT_DIM, MLA_HIDDEN), (m, h * MLA_QK_HEAD_DIM, MLA_Q_LORA_RANK)]
    if phase == "decode":
        gemms += [(m, h * MLA_VALUE_DIM, 128), (m, h * 128, MLA_VALUE_DIM)]
    else:
        gemms += [(m, h * 256, MLA_VALUE_DIM)]
    gemms.append((m, MLA_HIDDEN, h * MLA_V_HEAD_DIM))
    return gemms


def mla_projection_time_s(p: KernelProfile, peak_flops: float, hbm_bw: float, phase: str, batch, isl, num_heads):
    """The BF16 projection GEMMs of one DeepSeek-V3 MLA module (``mla_projection_gemms``),
    priced with this profile's BF16 GEMM parameters."""
    return _out(sum(np.asarray(gemm_time_s(p, peak_flops, hbm_bw, m, n, k, "bf16"), dtype=float)
                    for m, n, k in mla_projection_gemms(phase, batch, isl, num_heads)))


def moe_time_s(p: KernelProfile, peak_flops: float, hbm_bw: float, tokens, hidden, inter, topk, experts,
               moe_tp: int = 1, moe_ep: int = 1, dtype: str = "bf16"):
    """One GPU's fused MoE layer for ``tokens`` tokens, balanced routing; ``inter`` is the
    full expert intermediate size (split ``moe_tp`` ways), ``experts`` the total count
    (split ``moe_ep`` ways); ``peak_flops`` the peak of ``dtype``."""
    g = _pick(p.moe, dtype, "MoE", p)
    fl, byts, rows, assign, hit = moe_shape(tokens, hidden, inter, topk, experts, moe_tp, moe_ep,
                                            WEIGHT_BYTES.get(dtype, 2.0))
    return _out(moe_core(g.efficiency, g.half_rows, g.memory_efficiency, g.expert_half_count, g.fixed_s,
                         g.per_assignment_s, g.per_expert_s, g.overlap_exponent, peak_flops, hbm_bw, fl, byts,
                         rows, assign, hit))


def elementwise_core(fixed, eta_m, cache_half, per_row, per_col, hbm_bw, rows, cols, byts):
    byts = np.asarray(byts, dtype=float)
    return (fixed + byts / (hbm_bw * eta_m) * byts / (byts + cache_half)
            + per_row * np.asarray(rows, dtype=float) + per_col * np.asarray(cols, dtype=float))


def elementwise_time_s(p: KernelProfile, hbm_bw: float, rows, cols, bytes_per_element: float = 3.0):
    """One small element-wise/norm kernel over ``rows x cols`` elements (tokens x hidden)
    moving ``bytes_per_element`` bytes per element, read plus written (3 for a BF16 -> FP8
    quantise, 4 for a BF16 norm or activation)."""
    if p.elementwise is None:
        raise InputError(f"kernel profile {p.device_kind}/{p.engine}: no element-wise parameters")
    e = p.elementwise
    byts = np.asarray(rows, dtype=float) * np.asarray(cols, dtype=float) * bytes_per_element
    return _out(elementwise_core(e.fixed_s, e.memory_efficiency, e.cache_half_bytes, e.per_row_s, e.per_column_s,
                                 hbm_bw, rows, cols, byts))


def allreduce_time_s(p: KernelProfile, impl: str, gpus: int, message_bytes):
    """All-reduce of ``message_bytes`` over ``gpus`` GPUs of one domain with ``impl``
    (``custom`` or ``nccl``); ``gpus`` must be a fitted count (1 costs nothing)."""
    if gpus == 1:
        return _out(np.zeros_like(np.asarray(message_bytes, dtype=float)))
    ar = p.allreduce.get(impl)
    if ar is None:
        raise InputError(f"kernel profile {p.device_kind}/{p.engine}: no all-reduce implementation {impl!r}"
                         f" (have: {', '.join(sorted(p.allreduce)) or 'none'})")
    rs = ar.regimes.get(int(gpus))
    if rs is None:
        raise InputError(f"kernel profile {p.device_kind}/{p.engine}: all-reduce {impl!r} not fitted at {gpus} GPUs"
                         f" (fitted: {', '.join(str(t) for t in sorted(ar.regimes))})")
    return _out(allreduce_core([(r.min_bytes, r.max_bytes, r.floor_s, r.bus_bandwidth) for r in rs], int(gpus),
                               message_bytes))
