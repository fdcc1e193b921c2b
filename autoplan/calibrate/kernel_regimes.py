"""Regimes by length in the kernel fit: an engine that runs short sequences on another
kernel path (a different kernel, or tiles chosen by length) shows a step in latency at one
length that one smooth curve cannot follow. The fit places the switch at a measured
length (for KV bytes, a power of two between measured sizes), the way the all-reduce regimes are placed by message size
(:func:`autoplan.calibrate.kernel_fit._ar_fit`): each candidate split fits both sides on
their own training rows and is kept when it lowers the p90 training error by more than
:data:`REGIME_PENALTY` (a split that only refits noise does not)."""

from __future__ import annotations

import math

import numpy as np

from autoplan.calibrate.kernel_report import _errors, _rounded, _rsig
from autoplan.inputs import kernels as km

#: Training p90 |error| an extra regime must save to be kept (the all-reduce fit's 2%).
REGIME_PENALTY = 0.02

#: Distinct measured lengths each side of a split must span.
MIN_LENGTHS = 3

#: Keys whose measured values form a continuum (KV bytes of every batch x context x heads
#: row): candidate switches are the powers of two between them, not every measured value.
POWER_OF_TWO_KEYS = ("kv_bytes",)


def split_by_length(fit, spec, ds, x_all, key: str = "isl"):
    """(threshold, x_long, x_short) for the rows of ``ds`` split at ``ds.f[key] <=
    threshold``, or (None, x_all, None) when one curve is as good. ``fit(spec, ds)`` fits
    the spec's parameters to rows; ``x_all`` is its fit to every row. Each side needs
    three rows per parameter and :data:`MIN_LENGTHS` distinct lengths."""
    need = 3 * len(spec.names)
    values = sorted(set(ds.f[key].tolist()))
    # each side spans at least MIN_LENGTHS measured lengths: a side of one or two lengths
    # fits that length's rows and says nothing about the curve the other lengths follow
    lengths = values[MIN_LENGTHS - 1:len(values) - MIN_LENGTHS]
    if key in POWER_OF_TWO_KEYS:  # a continuum of measured sizes: switches at powers of two
        lo, hi = lengths[0], lengths[-1]
        lengths = [2.0 ** e for e in range(math.ceil(math.log2(lo)), math.floor(math.log2(hi)) + 1)]

    def p90(pred):
        return float(np.percentile(_errors(pred, ds.t), 90))

    best = (p90(spec.pred(x_all, ds)), None, x_all, None)
    for th in lengths[:-1]:
        short = ds.f[key] <= th
        if short.sum() < need or (~short).sum() < need:
            continue
        xs, xl = fit(spec, ds.take(short)), fit(spec, ds.take(~short))
        score = p90(np.where(short, spec.pred(xs, ds), spec.pred(xl, ds))) + REGIME_PENALTY
        if score < best[0] - 1e-12:
            best = (score, th, xl, xs)
    return best[1:]


#: Classes fitted with a regime by length: group -> (row feature, profile field of the
#: threshold, profile field of the regime, its class). Decode attention switches by the KV
#: bytes one call reads (L2 residency in the measurements, split-KV choices), MLA prefill
#: by new tokens per sequence, MLA decode by batch (split-KV scheduling).
LENGTH_REGIMES = {
    "decode_attention": ("kv_bytes", "small_kv_max_bytes", "small_kv", km.DecodeAttentionRegime),
    "mla_prefill": ("isl", "short_max_tokens", "short", km.MlaPrefillRegime),
    "mla_decode": ("batch", "small_batch_max", "small_batch", km.MlaDecodeRegime),
}


def with_length_regime(fit, spec, ds, x_all, group: str):
    """The rounded profile block of ``group`` fitted to ``ds`` with its length regime
    where :func:`split_by_length` keeps one, and the fitted values for the report."""
    key, max_field, regime_field, regime_cls = LENGTH_REGIMES[group]
    th, x, xs = split_by_length(fit, spec, ds, x_all, key)
    block = spec.build(x)
    params = {n: _rsig(float(v)) for n, v in zip(spec.names, x)}
    if th is None:
        return _rounded(block), params
    short = spec.build(xs)
    regime = _rounded(regime_cls(**{k: getattr(short, k) for k in regime_cls.model_fields}))
    # the switch is a measured length (or a power of two) and stays exact: rounded to 4
    # digits, 2^25 bytes would fall below the rows measured at exactly 2^25
    params[max_field] = float(th)
    params.update({f"{regime_field}.{n}": _rsig(float(v)) for n, v in zip(spec.names, xs)})
    return _rounded(block).model_copy(update={max_field: float(th), regime_field: regime}), params
