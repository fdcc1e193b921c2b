"""Each kernel class's parameter vector for the fit: its names, bounds and fixed starts,
the prediction of a row from it, the pydantic block it builds, and the bounded
least-squares fit itself (:func:`fit_spec`, on log(predicted / measured)). Used by
:mod:`autoplan.calibrate.kernel_fit`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from autoplan.calibrate.kernel_data import LOSS, LOSS_SCALE, Dataset
from autoplan.cost import kernels as kc
from autoplan.inputs import kernels as km


@dataclass
class Spec:
    names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    starts: tuple[tuple[float, ...], ...]
    pred: object  # (x, ds) -> seconds
    build: object  # x -> pydantic block


US = 1e-6


def gemm_spec(P, BW, key):
    wb = km.WEIGHT_BYTES[key]
    quant = key != "bf16"

    def unpack(x):
        if quant:
            return x
        return (*x, 0.0)

    def pred(x, ds):
        eta, hk, ho, d, f0, eta_m, fixed_us, q, qp = unpack(x)
        return kc.gemm_core(eta, hk, ho * 1e6, d, f0 * 1e12, eta_m, fixed_us * US, q, qp, P, BW, ds.f["m"], ds.f["n"], ds.f["k"], wb)

    def build(x):
        eta, hk, ho, d, f0, eta_m, fixed_us, q, qp = unpack(x)
        return km.GemmParams(efficiency=eta, half_depth=hk, half_outputs=ho * 1e6, long_kernel_loss=d,
                             long_kernel_flops=f0 * 1e12, memory_efficiency=eta_m, fixed_s=fixed_us * US,
                             overlap_exponent=q, quantization_passes=qp)

    names = ("efficiency", "half_depth", "half_outputs_M", "long_kernel_loss", "long_kernel_TFLOP",
             "memory_efficiency", "fixed_us", "overlap_exponent")
    lo = (0.05, 0.0, 0.0, 0.0, 1e-3, 0.05, 0.0, 1.0)
    hi = (1.0, 65536.0, 1e4, 0.9, 1e4, 1.0, 200.0, 64.0)
    starts = ((0.8, 200.0, 0.5, 0.2, 1.0, 0.8, 4.0, 4.0), (0.6, 1000.0, 0.1, 0.05, 10.0, 0.8, 10.0, 2.0))
    if quant:
        names += ("quantization_passes",)
        lo, hi = lo + (0.0,), hi + (8.0,)
        starts = tuple(s + (1.0,) for s in starts)
    return Spec(names, lo, hi, starts, pred, build)


def decode_spec(BW):
    def pred(x, ds):
        a, eta, sb, cu, dl, l0, q = x
        return kc.decode_core(a * US, eta, sb * 1e6, cu * US, dl * US, l0, q, BW, ds.f["kv_bytes"],
                              ds.f["batch"] * ds.f["kv_heads"], ds.f["ctx"])

    def build(x):
        a, eta, sb, cu, dl, l0, q = x
        return km.DecodeAttentionParams(floor_s=a * US, memory_efficiency=eta, startup_bytes=sb * 1e6,
                                        per_sequence_head_s=cu * US, context_latency_s=dl * US,
                                        context_half_tokens=l0, overlap_exponent=q)

    return Spec(("floor_us", "memory_efficiency", "startup_MB", "per_sequence_head_us", "context_latency_us",
                 "context_half_tokens", "overlap_exponent"),
                (0.0, 0.05, 0.0, 0.0, 0.0, 1.0, 1.0), (200.0, 1.0, 1e4, 10.0, 500.0, 1e6, 64.0),
                ((8.0, 0.8, 1.0, 0.03, 5.0, 500.0, 2.0), (10.0, 0.7, 10.0, 0.01, 20.0, 30000.0, 1.0)), pred, build)


def prefill_spec(P, cls=km.PrefillAttentionParams):
    def pred(x, ds):
        eta, h, a, cu = x
        return ds.f["proj_s"] + kc.prefill_core(eta, h, a * US, cu * US, P, ds.f["flops"], ds.f["isl"], ds.f["batch"] * ds.f["heads"])

    def build(x):
        eta, h, a, cu = x
        return cls(efficiency=eta, half_tokens=h, fixed_s=a * US, per_sequence_head_s=cu * US)

    return Spec(("efficiency", "half_tokens", "fixed_us", "per_sequence_head_us"),
                (0.02, 0.0, 0.0, 0.0), (1.0, 1e5, 500.0, 10.0),
                ((0.6, 1000.0, 12.0, 0.01), (0.4, 300.0, 8.0, 0.05)), pred, build)


def mla_decode_spec(P, BW):
    def pred(x, ds):
        a, eta_m, eta_c, cu, cs, dl, l0, q = x
        return ds.f["proj_s"] + kc.mla_decode_core(a * US, eta_m, eta_c, cu * US, cs * US, dl * US, l0, q, P, BW,
                                                   ds.f["kv_bytes"], ds.f["flops"], ds.f["batch"] * ds.f["heads"],
                                                   ds.f["ctx"], ds.f["batch"])

    def build(x):
        a, eta_m, eta_c, cu, cs, dl, l0, q = x
        return km.MlaDecodeParams(floor_s=a * US, memory_efficiency=eta_m, compute_efficiency=eta_c,
                                  per_sequence_head_s=cu * US, per_sequence_s=cs * US, context_latency_s=dl * US,
                                  context_half_tokens=l0, overlap_exponent=q)

    return Spec(("floor_us", "memory_efficiency", "compute_efficiency", "per_sequence_head_us", "per_sequence_us",
                 "context_latency_us", "context_half_tokens", "overlap_exponent"),
                (0.0, 0.05, 0.02, 0.0, 0.0, 0.0, 1.0, 1.0), (2000.0, 1.0, 1.0, 10.0, 10.0, 2000.0, 1e6, 64.0),
                ((10.0, 0.7, 0.5, 0.01, 0.01, 5.0, 1000.0, 2.0), (50.0, 0.5, 0.3, 0.001, 0.1, 20.0, 30000.0, 1.0)),
                pred, build)


def mla_prefill_spec(P):
    return prefill_spec(P, km.MlaPrefillParams)


def moe_spec(P, BW):
    def pred(x, ds):
        eta, h, eta_m, xh, a, pa, pe, q, pme, ptx, pt = x
        return kc.moe_core(eta, h, eta_m, xh, a * US, pa * US, pe * US, q, pme * US, ptx * 1e-12, P, BW,
                           ds.f["flops"], ds.f["bytes"], ds.f["rows"], ds.f["assign"], ds.f["hit"], ds.f["experts"],
                           ds.f["token_experts"], pt * 1e-12)

    def build(x):
        eta, h, eta_m, xh, a, pa, pe, q, pme, ptx, pt = x
        return km.MoeParams(efficiency=eta, half_rows=h, memory_efficiency=eta_m, expert_half_count=xh,
                            fixed_s=a * US, per_assignment_s=pa * US, per_expert_s=pe * US, overlap_exponent=q,
                            per_model_expert_s=pme * US, per_token_expert_s=ptx * 1e-12,
                            per_token_s=pt * 1e-12)

    return Spec(("efficiency", "half_rows", "memory_efficiency", "expert_half_count", "fixed_us", "per_assignment_us",
                 "per_expert_us", "overlap_exponent", "per_model_expert_us", "per_token_expert_ps", "per_token_ps"),
                (0.02, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
                (1.0, 1e4, 1.0, 1e3, 5000.0, 10.0, 1000.0, 64.0, 10.0, 1e5, 1e7),
                ((0.5, 50.0, 0.8, 1.0, 30.0, 0.01, 2.0, 2.0, 0.1, 10.0, 80.0),
                 (0.3, 300.0, 0.6, 5.0, 50.0, 0.05, 0.5, 1.3, 0.1, 10.0, 80.0)), pred, build)


MOE_MODEL_TERMS = ("per_model_expert_us", "per_token_expert_ps")
"""The MoE terms in the model's expert count (a cost per expert of the model, per token
and expert of the model: routing over every expert). Rows of one model hold ``experts``
constant: the first is then ``fixed_s`` and the second a cost per token, and a model
with 16x the experts would take 16x of what no row showed to scale. Such a class fits
``per_token_ps`` (every token, every rank) instead; a class with several expert counts
fits the two and holds ``per_token_ps`` at 0 (one per-token term, not two)."""


MOE_SHAPE_TERMS = ("per_assignment_us", "per_expert_us")
"""The MoE terms a class of one expert shape cannot tell from its bytes and FLOPs: there
the weight bytes are a fixed multiple of the experts hit and the FLOPs of the
assignments, so a cost per expert hit or per assignment fits in their place, and moves to
a model of finer experts as a cost no row measured (Mixtral-8x7B's BF16 rows on B200 under
SGLang fitted 7.4 us per expert: 0.95 ms per layer for Qwen3-235B-A22B's 128 experts at
610 tokens, 4x its expert bytes at the achieved bandwidth). Fitted on Mixtral-8x7B alone
and judged on DeepSeek-V3 (the classes with both: block FP8, A100 BF16), holding them at 0
gives median |error| 15.0% against 17.4% free, max over classes 27.5% against 84.7%
(``bench/moe_transfer.py``). A class with two expert shapes fits them."""

MOE_ONE_SHAPE_TERMS = MOE_MODEL_TERMS + MOE_SHAPE_TERMS
"""What a MoE class whose rows hold one expert count holds at 0."""


def pinned(spec: Spec, names: tuple[str, ...]) -> Spec:
    """``spec`` with the parameters ``names`` held at 0 (not fitted)."""
    free = [i for i, n in enumerate(spec.names) if n not in names]

    def full(x):
        out = np.zeros(len(spec.names))
        out[free] = x
        return out

    def pick(t):
        return tuple(t[i] for i in free)

    return Spec(pick(spec.names), pick(spec.lo), pick(spec.hi), tuple(pick(s) for s in spec.starts),
                lambda x, ds: spec.pred(full(x), ds), lambda x: spec.build(full(x)))


def elementwise_spec(BW):
    def pred(x, ds):
        a, eta, ch, pr, pc = x
        return kc.elementwise_core(a * US, eta, ch * 1e6, pr * 1e-12, pc * 1e-12, BW, ds.f["rows"], ds.f["cols"],
                                   ds.f["bytes"])

    def build(x):
        a, eta, ch, pr, pc = x
        return km.ElementwiseParams(fixed_s=a * US, memory_efficiency=eta, cache_half_bytes=ch * 1e6,
                                    per_row_s=pr * 1e-12, per_column_s=pc * 1e-12)

    return Spec(("fixed_us", "memory_efficiency", "cache_half_MB", "per_row_ps", "per_column_ps"),
                (0.0, 0.02, 0.0, 0.0, 0.0), (100.0, 1.0, 1e4, 1e6, 1e6), ((2.0, 0.7, 10.0, 10.0, 10.0),), pred, build)


def fit_spec(spec: Spec, ds: Dataset) -> np.ndarray:
    lo, hi = np.array(spec.lo), np.array(spec.hi)
    logt = np.log(ds.t)

    def resid(x):
        p = spec.pred(x, ds)
        return np.log(np.maximum(p, 1e-12)) - logt

    best = None
    for x0 in spec.starts:
        x0 = np.clip(np.array(x0, dtype=float), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        r = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", loss=LOSS, f_scale=LOSS_SCALE, max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    # a parameter pinned at a bound (within 1e-6 of the range) is written as the bound
    x = best.x.copy()
    span = hi - lo
    x = np.where(x - lo < 1e-6 * span, lo, x)
    x = np.where(hi - x < 1e-6 * span, hi, x)
    return x
