"""Pricing functions of the per-kernel cost model: one function per operator class,
over a :class:`~autoplan.inputs.kernels.KernelProfile` of one (device kind, engine).
See :mod:`autoplan.inputs.kernels` for the conventions."""

from __future__ import annotations

import math

import numpy as np

from autoplan.errors import InputError
from autoplan.inputs.kernels import (
    KV_BYTES,
    MLA_HIDDEN,
    MLA_LATENT_DIM,
    MLA_Q_LORA_RANK,
    MLA_QK_HEAD_DIM,
    MLA_V_HEAD_DIM,
    MLA_VALUE_DIM,
    WEIGHT_BYTES,
    KernelProfile,
)


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


def moe_core(eta, h, eta_m, x_half, fixed, per_assign, per_expert, q, per_model_expert, per_token_expert, peak_flops,
             hbm_bw, flops, wbytes_total, rows, assign, experts_hit, experts, token_experts, per_token=0.0):
    rows = np.asarray(rows, dtype=float)
    experts_hit = np.asarray(experts_hit, dtype=float)
    compute = flops / (peak_flops * eta * rows / (rows + h))
    memory = wbytes_total / (hbm_bw * eta_m * experts_hit / (experts_hit + x_half))
    return (fixed + _smax3(compute, memory, per_assign * assign + per_expert * experts_hit, q)
            + per_model_expert * np.asarray(experts, dtype=float) + per_token_expert * np.asarray(token_experts, dtype=float)
            + per_token * np.asarray(token_experts, dtype=float) / np.asarray(experts, dtype=float))


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


def moe_shape(tokens, hidden, inter, topk, experts, moe_tp=1, moe_ep=1, wbytes=2.0):
    """(flops, weight bytes, rows per hit expert, assignments, experts hit, token-experts)
    of one GPU's share of a fused MoE layer under balanced routing; the last counts all
    tokens x all experts of the model (see :class:`~autoplan.inputs.kernels.MoeParams`)."""
    tokens = np.asarray(tokens, dtype=float)
    local_e = np.asarray(experts, dtype=float) / moe_ep
    local_i = np.asarray(inter, dtype=float) / moe_tp
    assign = tokens * topk / moe_ep
    hit = np.clip(np.minimum(experts, tokens * topk) / moe_ep, 1.0, local_e)
    rows = assign / hit
    flops = 6.0 * assign * hidden * local_i
    byts = hit * 3.0 * hidden * local_i * wbytes
    token_experts = tokens * np.asarray(experts, dtype=float)
    return flops, byts, rows, assign, hit, token_experts


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
    (the new one included), ``num_kv_heads`` KV heads on this GPU; calls reading at most
    ``small_kv_max_bytes`` priced by the profile's ``small_kv`` regime where it has one."""
    d = _pick(p.decode_attention, kv_dtype, "decode-attention", p)
    batch = np.asarray(batch, dtype=float)
    ctx = np.asarray(kv_len, dtype=float)
    per_token = batch * num_kv_heads * head_dim * 2.0 * KV_BYTES.get(kv_dtype, 2.0)
    kv_bytes = per_token * ctx

    def path(r, c):
        return decode_core(r.floor_s, r.memory_efficiency, r.startup_bytes, r.per_sequence_head_s, r.context_latency_s,
                           r.context_half_tokens, r.overlap_exponent, hbm_bw, per_token * c, batch * num_kv_heads, c)

    if d.small_kv is None:
        return _out(path(d, ctx))
    # past the switch: never below the same call at the switch's bytes (its context scaled)
    th = d.small_kv_max_bytes
    return _out(np.where(kv_bytes <= th, path(d.small_kv, ctx),
                         np.maximum(path(d, ctx), path(d.small_kv, ctx * th / np.maximum(kv_bytes, 1.0)))))


def causal_pairs(isl, context_before=0.0):
    """(query, key) pairs of causal attention of ``isl`` new tokens after
    ``context_before`` cached tokens of the same sequence (a prefill chunk)."""
    s = np.asarray(isl, dtype=float)
    return s * np.asarray(context_before, dtype=float) + s * (s + 1.0) / 2.0


def prefill_flops(batch, isl, num_heads, head_dim=128, context_before=0.0):
    """Causal attention FLOPs (QK^T and PV) of ``isl`` new tokens per sequence."""
    return (4.0 * np.asarray(batch, dtype=float) * num_heads * head_dim
            * causal_pairs(isl, context_before))


def prefill_attention_time_s(p: KernelProfile, peak_flops: float, batch, isl, num_heads,
                             head_dim: int = 128, dtype: str = "bf16", context_before=0.0):
    """One layer's causal prefill attention; ``dtype`` is the attention compute format
    (``fp8`` for FP8 FMHA, else ``bf16``) and ``peak_flops`` its peak. A chunk after
    ``context_before`` cached tokens does its FLOPs over them too, at the efficiency of
    its ``isl`` new tokens (the measured kernels start from an empty cache)."""
    a = _pick(p.prefill_attention, dtype, "prefill-attention", p)
    fl = prefill_flops(batch, isl, num_heads, head_dim, context_before)
    units = np.asarray(batch, dtype=float) * num_heads
    return _out(prefill_core(a.efficiency, a.half_tokens, a.fixed_s, a.per_sequence_head_s, peak_flops,
                             fl, isl, units))


def mla_decode_time_s(p: KernelProfile, peak_flops: float, hbm_bw: float, batch, kv_len, num_heads,
                      kv_dtype: str = "bf16"):
    """One layer's DeepSeek-V3 MLA generation attention kernel (absorbed form, projections
    not included) with ``num_heads`` heads on this GPU and ``kv_len`` cached tokens.
    Where the profile has a small-batch path, batches of at most ``small_batch_max`` run
    on it, and a larger batch never costs less than ``small_batch_max`` sequences on it
    (more sequences do all of the fewer's work: :func:`_past_switch`)."""
    d = _pick(p.mla_decode, kv_dtype, "MLA decode", p)
    batch = np.asarray(batch, dtype=float)
    ctx = np.asarray(kv_len, dtype=float)

    def path(r, b):
        kv_bytes = b * ctx * MLA_LATENT_DIM * KV_BYTES.get(kv_dtype, 2.0)
        flops = 2.0 * b * num_heads * ctx * (MLA_LATENT_DIM + MLA_VALUE_DIM)
        return mla_decode_core(r.floor_s, r.memory_efficiency, r.compute_efficiency, r.per_sequence_head_s,
                               r.per_sequence_s, r.context_latency_s, r.context_half_tokens, r.overlap_exponent,
                               peak_flops, hbm_bw, kv_bytes, flops, b * num_heads, ctx, b)

    if d.small_batch is None:
        return _out(path(d, batch))
    return _out(_past_switch(batch, d.small_batch_max, lambda b: path(d.small_batch, b), lambda b: path(d, b)))


def _past_switch(x, th, short, long):
    """``short(x)`` up to the switch ``th``, beyond it ``long(x)`` but never below
    ``short(th)``: the long path's curve is fitted on lengths past the switch only, and
    a longer sequence or a larger batch is never cheaper than the largest one the short
    path runs."""
    return np.where(x <= th, short(x), np.maximum(long(x), short(np.full_like(x, th))))


def mla_prefill_flops(batch, isl, num_heads, context_before=0.0):
    return (2.0 * np.asarray(batch, dtype=float) * num_heads * (MLA_QK_HEAD_DIM + MLA_V_HEAD_DIM)
            * causal_pairs(isl, context_before))


def mla_prefill_time_s(p: KernelProfile, peak_flops: float, batch, isl, num_heads, kv_dtype: str = "bf16",
                       context_before=0.0):
    """One layer's DeepSeek-V3 MLA context attention over ``isl`` new tokens per sequence
    (after ``context_before`` cached tokens: a chunk, as :func:`prefill_attention_time_s`);
    sequences of at most ``short_max_tokens`` new tokens on the engine's short path where
    the profile has one (and longer ones never below it, as in :func:`mla_decode_time_s`)."""
    a = _pick(p.mla_prefill, kv_dtype, "MLA prefill", p)
    units = np.asarray(batch, dtype=float) * num_heads

    def path(r, s):
        fl = mla_prefill_flops(batch, s, num_heads, context_before)
        return prefill_core(r.efficiency, r.half_tokens, r.fixed_s, r.per_sequence_head_s, peak_flops, fl, s, units)

    isl = np.asarray(isl, dtype=float)
    if a.short is None:
        return _out(path(a, isl))
    return _out(_past_switch(np.broadcast_to(isl, np.broadcast(isl, units).shape).astype(float), a.short_max_tokens,
                             lambda s: path(a.short, s), lambda s: path(a, s)))


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
    (split ``moe_ep`` ways); ``peak_flops`` the peak of ``dtype``. With ``moe_ep > 1`` the
    profile's ``moe_ep`` parameters price it where the engine's EP kernel has its own."""
    key = "bf16" if dtype == "fp16" else dtype
    g = _pick(p.moe, dtype, "MoE", p)
    shape = moe_shape(tokens, hidden, inter, topk, experts, moe_tp, moe_ep, WEIGHT_BYTES.get(dtype, 2.0))
    t = _moe_params_time(g, peak_flops, hbm_bw, shape, experts)
    if key in p.moe_ep:
        t = np.where(np.asarray(moe_ep) > 1, _moe_params_time(p.moe_ep[key], peak_flops, hbm_bw, shape, experts), t)
    return _out(t)


def _moe_params_time(g, peak_flops, hbm_bw, shape, experts):
    fl, byts, rows, assign, hit, tex = shape
    return moe_core(g.efficiency, g.half_rows, g.memory_efficiency, g.expert_half_count, g.fixed_s,
                    g.per_assignment_s, g.per_expert_s, g.overlap_exponent, g.per_model_expert_s,
                    g.per_token_expert_s, peak_flops, hbm_bw, fl, byts, rows, assign, hit, experts, tex,
                    g.per_token_s)


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
