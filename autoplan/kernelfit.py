"""Fit :class:`autoplan.kernelcost.KernelProfile` parameters from measured kernel tables.

Data: the CSVs of ``hardware/data/aic-kernels/`` (measured per-kernel latencies from
aiconfigurator-core 0.12.0; see its ``SOURCE.md`` for provenance, columns and licence).
Every parameter of one (system, engine) is fitted from that pair's kernel rows alone, by
``scipy.optimize.least_squares`` on ``log(predicted / measured)`` with bounds and fixed
starting points (deterministic, no randomness).

**Held-out split, by shape, never at random.** Within each operator class the distinct
shape keys (below) are sorted, and every third one (index 1, 4, 7, ... of the sorted
list) is held out: its rows are never fitted, only judged. The shipped profiles are the
fits on the remaining rows. Keys: GEMM ``(n, k)``; decode/prefill attention
``(num_heads, num_kv_heads)``; MLA ``num_heads``; MoE ``(model, moe_tp, moe_ep)``;
element-wise ``k``; all-reduce the message size.

**Row aggregation.** Where a table holds several rows for one key (repeat runs, or
several kernels the engine can dispatch to for one shape) the minimum latency is kept:
the engine's fastest backend, and for NCCL the cleanest of the repeat runs.

Refit and rewrite the shipped YAMLs with::

    python -m autoplan.kernelfit hardware/data/aic-kernels --write hardware/profiles

This module imports nothing from autoplan except :mod:`autoplan.kernelcost` (its sibling,
moved with it) and :mod:`autoplan.errors`.
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from autoplan import kernelcost as kc
from autoplan.errors import InputError

#: AIC system name -> autoplan device kind.
SYSTEMS = {
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "b200_sxm": "b200",
    "gb200": "gb200",
    "a100_sxm": "a100-sxm-80gb",
    "l40s": "l40s",
}
ENGINES = ("trtllm", "vllm", "sglang")

#: Datasheet peaks autoplan uses (hardware/device_kinds.yaml): BF16 FLOP/s, FP8 FLOP/s
#: (None: no FP8 units), memory bandwidth bytes/s.
PEAKS = {
    "h100-sxm": (989.4e12, 1978.9e12, 3.35e12),
    "h200": (989.4e12, 1978.9e12, 4.8e12),
    "b200": (2.25e15, 4.5e15, 7.7e12),
    "gb200": (2.5e15, 5.0e15, 8.0e12),
    "a100-sxm-80gb": (312.0e12, None, 2.039e12),
    "l40s": (362.05e12, 733.0e12, 864.0e9),
}
L2_BYTES = {"l40s": 96e6}

ATTRIBUTION = (
    "Contains performance data derived from the perf tables of aiconfigurator-core 0.12.0,\n"
    "Copyright (c) 2025-2026 NVIDIA CORPORATION & AFFILIATES, licensed under the Apache License,\n"
    "Version 2.0 (see LICENSE-Apache-2.0.txt). Modified by this project: rows were selected,\n"
    "columns renamed and reordered, latency was converted from milliseconds to seconds (5\n"
    "significant digits), rows with zero latency were dropped, and a repeat index was added.\n"
    "Original tables: aiconfigurator_core/systems/data/ in the aiconfigurator-core 0.12.0 wheel."
)

DTYPE_KEY = {"bfloat16": "bf16", "float16": "bf16", "fp8": "fp8", "fp8_block": "fp8_block"}
HOLDOUT_EVERY = 3
#: least-squares loss on log(pred/measured): soft_l1 with a 10% scale keeps a few
#: engine-heuristic outliers from pulling the fit (it is quadratic below ~10%).
LOSS, LOSS_SCALE = "soft_l1", 0.1
AR_RANGE = (16 * 1024, 256 * 1024 * 1024)  # message sizes the all-reduce target covers

# ---------------------------------------------------------------- reading


@lru_cache(maxsize=16)
def _table(data_dir: str, name: str) -> dict[str, np.ndarray]:
    path = Path(data_dir) / f"{name}.csv.gz"
    try:
        with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
    except (OSError, StopIteration, csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"cannot read kernel table {str(path)!r}: {e.__class__.__name__}: {e}") from None
    cols = list(zip(*rows)) if rows else [()] * len(header)
    return {h: np.array(c, dtype=object) for h, c in zip(header, cols)}


def _num(tab: dict[str, np.ndarray], col: str) -> np.ndarray:
    return np.array([float(v) if v != "" else math.nan for v in tab[col]], dtype=float)


def _select(data_dir: str, name: str, system: str, framework: str) -> dict[str, np.ndarray]:
    tab = _table(data_dir, name)
    mask = (tab["system"] == system) & (tab["framework"] == framework)
    return {k: v[mask] for k, v in tab.items()}


def _min_by_key(keys: list[tuple], t: np.ndarray) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Collapse rows with equal keys to their minimum; returns (keys, t, index of kept row)."""
    best: dict[tuple, int] = {}
    for i, k in enumerate(keys):
        j = best.get(k)
        if j is None or t[i] < t[j]:
            best[k] = i
    order = sorted(best, key=lambda k: tuple(str(x) for x in k))
    idx = np.array([best[k] for k in order], dtype=int)
    return order, t[idx], idx


# ---------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """Rows of one operator class for one (system, engine)."""

    cls: str
    t: np.ndarray  # measured seconds
    shape: list  # shape key per row (the held-out split is over distinct keys)
    f: dict[str, np.ndarray]  # features
    version: str = ""
    excluded: str = ""  # why rows were dropped, if any

    def take(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.cls, self.t[mask], [s for s, m in zip(self.shape, mask) if m],
                       {k: v[mask] for k, v in self.f.items()}, self.version, self.excluded)


def held_out_mask(shape: list) -> np.ndarray:
    keys = sorted(set(shape), key=lambda k: tuple(str(x) if not isinstance(x, (int, float)) else f"{x:020.6f}"
                                                   for x in (k if isinstance(k, tuple) else (k,))))
    held = {k for i, k in enumerate(keys) if i % HOLDOUT_EVERY == 1}
    return np.array([s in held for s in shape], dtype=bool)


def _version(sel: dict[str, np.ndarray]) -> str:
    vs = sorted(set(sel["version"]))
    return ",".join(vs)


def _gemm_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "gemm", system, engine)
    out = {}
    kind = SYSTEMS[system]
    for raw, key in (("bfloat16", "bf16"), ("fp8", "fp8"), ("fp8_block", "fp8_block")):
        m = sel["dtype"] == raw
        if not m.any():
            continue
        if key == "fp8_block" and engine == "vllm":
            notes.append("gemm fp8_block: vLLM 0.24.0 block-FP8 rows excluded: a flat 57-350 us floor from m=1 "
                         "to 4096 on every system (non-kernel work in the timed region; FINDINGS lists Blackwell, "
                         "the Hopper and L40S tables show the same)")
            continue
        mm = _num(sel, "m")[m]
        nn = _num(sel, "n")[m]
        kk = _num(sel, "k")[m]
        tt = _num(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(mm, nn, kk)), tt)
        mm, nn, kk = mm[idx], nn[idx], kk[idx]
        keep = np.ones(len(tt), dtype=bool)
        why = ""
        if kind in L2_BYTES:
            wb = nn * kk * kc.WEIGHT_BYTES[key]
            lo = PEAKS[kind][2] * 1e-6
            keep = ~((wb > lo) & (wb <= L2_BYTES[kind] / 5))
            why = ("L40S rows with weights of 0.86-19.2 MB excluded: the collector's at most 5 weight copies "
                   "stay in the 96 MB L2, so these rows read L2, not DRAM (up to 1.5x DRAM peak)")
            if (~keep).any():
                notes.append(f"gemm {key}: {why} ({int((~keep).sum())} rows)")
        ds = Dataset(f"gemm_{key}", tt, [(int(a), int(b)) for a, b in zip(nn, kk)],
                     {"m": mm, "n": nn, "k": kk}, _version(sel), why)
        out[ds.cls] = ds.take(keep)
    return out


def _decode_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "attention_decode", system, engine)
    out = {}
    kind = SYSTEMS[system]
    if system == "a100_sxm" and engine == "trtllm":
        notes.append("decode_attention: A100 TRT-LLM 1.0.0 generation-attention table excluded entirely: it implies "
                     "1.0-1.65x the HBM peak for KV reads of 256 MB-2 GB (not physical)")
        return out
    for raw, key in (("bfloat16", "bf16"), ("fp8", "fp8")):
        m = (sel["kv_dtype"] == raw) & (_num(sel, "head_dim") == 128)
        if not m.any():
            continue
        b = _num(sel, "batch")[m]
        step = _num(sel, "kv_len")[m]
        h = _num(sel, "num_heads")[m]
        kh = _num(sel, "num_kv_heads")[m]
        tt = _num(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(b, step, h, kh)), tt)
        b, step, h, kh = b[idx], step[idx], h[idx], kh[idx]
        ctx = step + 1.0  # attended length: the cached tokens plus the new one
        kvb = b * ctx * kh * 128 * 2 * kc.KV_BYTES[key]
        keep = np.ones(len(tt), dtype=bool)
        why = ""
        if kind in L2_BYTES:
            keep = ~((kvb > PEAKS[kind][2] * 1e-6) & (kvb <= L2_BYTES[kind]))
            why = ("L40S rows reading 0.86-96 MB of KV excluded: the collector does not rotate buffers, so the KV "
                   "sits in the 96 MB L2 (up to 3.6x DRAM peak)")
            notes.append(f"decode_attention {key}: {why} ({int((~keep).sum())} rows)")
        ds = Dataset(f"decode_attention_{key}", tt, [(int(x), int(y)) for x, y in zip(h, kh)],
                     {"batch": b, "ctx": ctx, "kv_heads": kh, "kv_bytes": kvb}, _version(sel), why)
        out[ds.cls] = ds.take(keep)
    return out


def _prefill_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "attention_prefill", system, engine)
    out = {}
    for key in ("bf16", "fp8"):
        attn = sel["attn_dtype"]
        m = ((attn == "fp8") if key == "fp8" else (attn != "fp8")) & (_num(sel, "head_dim") == 128)
        if not m.any():
            continue
        b = _num(sel, "batch")[m]
        s = _num(sel, "isl")[m]
        h = _num(sel, "num_heads")[m]
        kh = _num(sel, "num_kv_heads")[m]
        tt = _num(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(b, s, h, kh)), tt)
        b, s, h, kh = b[idx], s[idx], h[idx], kh[idx]
        ds = Dataset(f"prefill_attention_{key}", tt, [(int(x), int(y)) for x, y in zip(h, kh)],
                     {"batch": b, "isl": s, "heads": h, "flops": kc.prefill_flops(b, s, h)}, _version(sel))
        out[ds.cls] = ds
    return out


def _mla_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "mla", system, engine)
    out = {}
    ops = set(sel["op"])
    scope = "kernel" if "mla_generation" in ops else "module"
    for phase in ("decode", "prefill"):
        op = {"decode": "mla_generation", "prefill": "mla_context"}[phase]
        if scope == "module":
            op += "_module"
        base = sel["op"] == op
        if scope == "module":
            base &= sel["gemm_dtype"] == "bfloat16"
        for raw, key in (("bfloat16", "bf16"), ("fp8", "fp8")):
            m = base & (sel["kv_dtype"] == raw)
            if not m.any():
                continue
            h = _num(sel, "num_heads")[m]
            b = _num(sel, "batch")[m]
            s = _num(sel, "isl")[m]
            kv = _num(sel, "kv_len")[m]
            tt = _num(sel, "latency_s")[m]
            keys, tt, idx = _min_by_key(list(zip(h, b, s, kv)), tt)
            h, b, s, kv = h[idx], b[idx], s[idx], kv[idx]
            if phase == "decode":
                ctx = kv + (1.0 if scope == "kernel" else 0.0)  # kernel tables index step as 2^k - 1
                f = {"batch": b, "ctx": ctx, "heads": h,
                     "kv_bytes": b * ctx * kc.MLA_LATENT_DIM * kc.KV_BYTES[key],
                     "flops": 2.0 * b * h * ctx * (kc.MLA_LATENT_DIM + kc.MLA_VALUE_DIM)}
            else:
                f = {"batch": b, "isl": s, "heads": h, "flops": kc.mla_prefill_flops(b, s, h)}
            ds = Dataset(f"mla_{phase}_{key}", tt, [int(x) for x in h], f, _version(sel))
            out[ds.cls] = ds
    if scope == "module" and out:
        notes.append("mla: this engine publishes only MLA module tables (attention plus its projection GEMMs); "
                     "the BF16-projection rows were fitted with the projections priced by this profile's BF16 GEMM "
                     "parameters, so the MLA parameters describe the kernel (mla_fitted_on = module); its floor and "
                     "per-sequence terms also carry the module's small kernels (norms, RoPE, cache write)")
        for cls, ds in out.items():
            ds.f["module"] = np.ones(len(ds.t))
    return out, scope


def _moe_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "moe", system, engine)
    out = {}
    if not len(sel["latency_s"]):
        return out
    bal = sel["distribution"] == "balanced"
    if (~bal).any():
        notes.append("moe: power-law routing rows not fitted (the model prices balanced routing)")
    for raw, key in (("bfloat16", "bf16"), ("fp8", "fp8"), ("fp8_block", "fp8_block")):
        m = bal & (sel["dtype"] == raw)
        if not m.any():
            continue
        model = sel["model"][m]
        tok = _num(sel, "num_tokens")[m]
        hid = _num(sel, "hidden")[m]
        inter = _num(sel, "inter")[m]
        topk = _num(sel, "topk")[m]
        ex = _num(sel, "experts")[m]
        tp = _num(sel, "moe_tp")[m]
        ep = _num(sel, "moe_ep")[m]
        tt = _num(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(model, tok, hid, inter, topk, ex, tp, ep)), tt)
        model, tok, hid, inter, topk, ex, tp, ep = (a[idx] for a in (model, tok, hid, inter, topk, ex, tp, ep))
        fl, byts, rows, assign, hit = kc.moe_shape(tok, hid, inter, topk, ex, tp, ep, kc.WEIGHT_BYTES[key])
        ds = Dataset(f"moe_{key}", tt, [(str(a), int(b), int(c)) for a, b, c in zip(model, tp, ep)],
                     {"tokens": tok, "flops": fl, "bytes": byts, "rows": rows, "assign": assign, "hit": hit,
                      "hidden": hid, "inter": inter, "topk": topk, "experts": ex, "tp": tp, "ep": ep},
                     _version(sel))
        ok_hbm = byts / tt <= PEAKS[SYSTEMS[system]][2]
        if (~ok_hbm).any():
            notes.append(f"moe {key}: {int((~ok_hbm).sum())} rows excluded whose expert weights would stream faster "
                         f"than the HBM peak under balanced routing (the collector hits fewer experts than routed; "
                         f"e.g. DeepSeek-V3 at EP 1 runs like EP 2)")
        # a configuration whose latency falls below half of what fewer tokens took is not a kernel time
        shape = [(str(a), int(b), int(c)) for a, b, c in zip(model, tp, ep)]
        bad_cfg = set()
        for cfg in sorted(set(shape)):
            ii = [i for i, sh in enumerate(shape) if sh == cfg]
            ii.sort(key=lambda i: tok[i])
            run = 0.0
            for i in ii:
                if tt[i] < 0.5 * run:
                    bad_cfg.add(cfg)
                run = max(run, tt[i])
        if bad_cfg:
            notes.append(f"moe {key}: configurations {sorted(bad_cfg)} excluded: latency falls below half of what "
                         f"fewer tokens took (e.g. vLLM's FP8 flashinfer-cutlass Mixtral table, 2.7 ms at 8 tokens, "
                         f"1.0 ms at 512): not a kernel time")
        ok = ok_hbm & np.array([sh not in bad_cfg for sh in shape])
        out[ds.cls] = ds.take(ok)
    return out


def _elementwise_sets(data_dir, system, engine, notes):
    sel = _select(data_dir, "elementwise", system, engine)
    m = sel["op"] == "scale_matrix"
    if not m.any():
        return {}
    mm = _num(sel, "m")[m]
    kk = _num(sel, "k")[m]
    tt = _num(sel, "latency_s")[m]
    keys, tt, idx = _min_by_key(list(zip(mm, kk)), tt)
    mm, kk = mm[idx], kk[idx]
    byts = mm * kk * 3.0  # read BF16, write FP8
    if engine == "sglang":
        notes.append("elementwise: SGLang's stand-alone FP8 quantise kernel (7-8 us floor, ~0.1 of HBM bandwidth) is "
                     "what was measured; it is slower than the engine's fused norm/activation kernels are likely to be")
    ds = Dataset("elementwise", tt, [int(x) for x in kk], {"rows": mm, "cols": kk, "bytes": byts}, _version(sel))
    kind = SYSTEMS[system]
    if kind in L2_BYTES:
        keep = ~((byts > PEAKS[kind][2] * 1e-6) & (byts <= L2_BYTES[kind]))
        notes.append(f"elementwise: L40S rows moving 0.86-96 MB excluded (served by the 96 MB L2; "
                     f"{int((~keep).sum())} rows)")
        ds = ds.take(keep)
    return {"elementwise": ds}


_CUSTOM_SOURCE = {"trtllm": "TRTLLM", "vllm": "vLLM_custom_graph", "sglang": "SGLang_CustomAllReduce_graph"}


def _comm_sets(data_dir, system, engine, notes):
    tab = _table(data_dir, "comm")
    out = {}
    is_ar = (tab["system"] == system) & (tab["op"] == "all_reduce")
    for impl in kc.ALLREDUCE_IMPLS:
        if impl == "custom":
            m = is_ar & (tab["framework"] == engine) & (tab["kernel_source"] == _CUSTOM_SOURCE[engine])
        else:
            m = is_ar & (tab["framework"] == "nccl") & (tab["aic_pinned"] == "yes") & (tab["dtype"] == "half")
        if not m.any():
            continue
        g = _num(tab, "num_gpus")[m]
        mb = _num(tab, "message_bytes")[m]
        tt = _num(tab, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(g, mb)), tt)
        g, mb = g[idx], mb[idx]
        vers = ",".join(sorted(set(tab["version"][m])))
        out[f"allreduce_{impl}"] = Dataset(f"allreduce_{impl}", tt, [int(x) for x in mb], {"gpus": g, "bytes": mb},
                                           vers)
    return out


# ---------------------------------------------------------------- model specs


@dataclass
class Spec:
    names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    starts: tuple[tuple[float, ...], ...]
    pred: object  # (x, ds) -> seconds
    build: object  # x -> pydantic block

US = 1e-6


def _gemm_spec(P, BW, key):
    wb = kc.WEIGHT_BYTES[key]
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
        return kc.GemmParams(efficiency=eta, half_depth=hk, half_outputs=ho * 1e6, long_kernel_loss=d,
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


def _decode_spec(BW):
    def pred(x, ds):
        a, eta, sb, cu, dl, l0, q = x
        return kc.decode_core(a * US, eta, sb * 1e6, cu * US, dl * US, l0, q, BW, ds.f["kv_bytes"],
                              ds.f["batch"] * ds.f["kv_heads"], ds.f["ctx"])

    def build(x):
        a, eta, sb, cu, dl, l0, q = x
        return kc.DecodeAttentionParams(floor_s=a * US, memory_efficiency=eta, startup_bytes=sb * 1e6,
                                        per_sequence_head_s=cu * US, context_latency_s=dl * US,
                                        context_half_tokens=l0, overlap_exponent=q)

    return Spec(("floor_us", "memory_efficiency", "startup_MB", "per_sequence_head_us", "context_latency_us",
                 "context_half_tokens", "overlap_exponent"),
                (0.0, 0.05, 0.0, 0.0, 0.0, 1.0, 1.0), (200.0, 1.0, 1e4, 10.0, 500.0, 1e6, 64.0),
                ((8.0, 0.8, 1.0, 0.03, 5.0, 500.0, 2.0), (10.0, 0.7, 10.0, 0.01, 20.0, 30000.0, 1.0)), pred, build)


def _prefill_spec(P, cls=kc.PrefillAttentionParams):
    def pred(x, ds):
        eta, h, a, cu = x
        return ds.f["proj_s"] + kc.prefill_core(eta, h, a * US, cu * US, P, ds.f["flops"], ds.f["isl"], ds.f["batch"] * ds.f["heads"])

    def build(x):
        eta, h, a, cu = x
        return cls(efficiency=eta, half_tokens=h, fixed_s=a * US, per_sequence_head_s=cu * US)

    return Spec(("efficiency", "half_tokens", "fixed_us", "per_sequence_head_us"),
                (0.02, 0.0, 0.0, 0.0), (1.0, 1e5, 500.0, 10.0),
                ((0.6, 1000.0, 12.0, 0.01), (0.4, 300.0, 8.0, 0.05)), pred, build)


def _mla_decode_spec(P, BW):
    def pred(x, ds):
        a, eta_m, eta_c, cu, cs, dl, l0, q = x
        return ds.f["proj_s"] + kc.mla_decode_core(a * US, eta_m, eta_c, cu * US, cs * US, dl * US, l0, q, P, BW,
                                                   ds.f["kv_bytes"], ds.f["flops"], ds.f["batch"] * ds.f["heads"],
                                                   ds.f["ctx"], ds.f["batch"])

    def build(x):
        a, eta_m, eta_c, cu, cs, dl, l0, q = x
        return kc.MlaDecodeParams(floor_s=a * US, memory_efficiency=eta_m, compute_efficiency=eta_c,
                                  per_sequence_head_s=cu * US, per_sequence_s=cs * US, context_latency_s=dl * US,
                                  context_half_tokens=l0, overlap_exponent=q)

    return Spec(("floor_us", "memory_efficiency", "compute_efficiency", "per_sequence_head_us", "per_sequence_us",
                 "context_latency_us", "context_half_tokens", "overlap_exponent"),
                (0.0, 0.05, 0.02, 0.0, 0.0, 0.0, 1.0, 1.0), (2000.0, 1.0, 1.0, 10.0, 10.0, 2000.0, 1e6, 64.0),
                ((10.0, 0.7, 0.5, 0.01, 0.01, 5.0, 1000.0, 2.0), (50.0, 0.5, 0.3, 0.001, 0.1, 20.0, 30000.0, 1.0)),
                pred, build)


def _mla_prefill_spec(P):
    return _prefill_spec(P, kc.MlaPrefillParams)


def _moe_spec(P, BW):
    def pred(x, ds):
        eta, h, eta_m, xh, a, pa, pe, q = x
        return kc.moe_core(eta, h, eta_m, xh, a * US, pa * US, pe * US, q, P, BW, ds.f["flops"], ds.f["bytes"],
                           ds.f["rows"], ds.f["assign"], ds.f["hit"])

    def build(x):
        eta, h, eta_m, xh, a, pa, pe, q = x
        return kc.MoeParams(efficiency=eta, half_rows=h, memory_efficiency=eta_m, expert_half_count=xh,
                            fixed_s=a * US, per_assignment_s=pa * US, per_expert_s=pe * US, overlap_exponent=q)

    return Spec(("efficiency", "half_rows", "memory_efficiency", "expert_half_count", "fixed_us", "per_assignment_us",
                 "per_expert_us", "overlap_exponent"),
                (0.02, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 1.0), (1.0, 1e4, 1.0, 1e3, 5000.0, 10.0, 1000.0, 64.0),
                ((0.5, 50.0, 0.8, 1.0, 30.0, 0.01, 2.0, 2.0), (0.3, 300.0, 0.6, 5.0, 50.0, 0.05, 0.5, 1.3)), pred, build)


def _elementwise_spec(BW):
    def pred(x, ds):
        a, eta, ch, pr, pc = x
        return kc.elementwise_core(a * US, eta, ch * 1e6, pr * 1e-12, pc * 1e-12, BW, ds.f["rows"], ds.f["cols"],
                                   ds.f["bytes"])

    def build(x):
        a, eta, ch, pr, pc = x
        return kc.ElementwiseParams(fixed_s=a * US, memory_efficiency=eta, cache_half_bytes=ch * 1e6,
                                    per_row_s=pr * 1e-12, per_column_s=pc * 1e-12)

    return Spec(("fixed_us", "memory_efficiency", "cache_half_MB", "per_row_ps", "per_column_ps"),
                (0.0, 0.02, 0.0, 0.0, 0.0), (100.0, 1.0, 1e4, 1e6, 1e6), ((2.0, 0.7, 10.0, 10.0, 10.0),), pred, build)


# ---------------------------------------------------------------- fitting


def _fit(spec: Spec, ds: Dataset) -> np.ndarray:
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


def _errors(pred: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.abs(pred / t - 1.0)


def _ar_segment(mb: np.ndarray, t: np.ndarray, f: float) -> tuple[float, float]:
    """(floor_s, bus_bandwidth) of a + f*M/B fitted to one size segment (log residuals)."""
    logt = np.log(t)
    a0 = max(float(np.min(t)) * 0.9, 1e-7)
    slope = max((t[-1] - t[0]) / max(mb[-1] - mb[0], 1.0), 1e-15)
    x0 = np.array([math.log(a0 * 1e6), math.log(max(f / slope, 1e6) / 1e9)])
    lo, hi = np.array([math.log(0.05), math.log(0.05)]), np.array([math.log(1e4), math.log(1e4)])
    x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)

    def resid(x):
        return np.log(math.exp(x[0]) * 1e-6 + f * mb / (math.exp(x[1]) * 1e9)) - logt

    r = least_squares(resid, x0, bounds=(lo, hi), loss=LOSS, f_scale=LOSS_SCALE, max_nfev=200)
    return math.exp(r.x[0]) * 1e-6, math.exp(r.x[1]) * 1e9


def _ar_fit(ds: Dataset, gpus: int, max_regimes: int = 4, min_sizes: int = 2):
    """Regimes by message size for one GPU count: 1-4 segments of consecutive measured
    sizes minimising the p90 training error (robust to a single glitched size) plus 2%
    per extra regime; each segment is a + 2(t-1)/t * M / B over its sizes, and sizes
    between two segments are interpolated (``kernelcost.allreduce_core``)."""
    f = 2.0 * (gpus - 1) / gpus
    order = np.argsort(ds.f["bytes"])
    mb, t = ds.f["bytes"][order], ds.t[order]
    n = len(t)
    best = None
    cache: dict[tuple[int, int], tuple[float, float]] = {}

    def seg(i, j):
        if (i, j) not in cache:
            cache[(i, j)] = _ar_segment(mb[i:j], t[i:j], f)
        return cache[(i, j)]

    for k in range(1, max_regimes + 1):
        for cuts in _splits(n, k, min_sizes):
            bounds = [0, *cuts, n]
            regs = []
            for r_ in range(k):
                i, j = bounds[r_], bounds[r_ + 1]
                a, bw = seg(i, j)
                regs.append((None if r_ == 0 else float(mb[i]), None if r_ == k - 1 else float(mb[j - 1]), a, bw))
            err = float(np.percentile(_errors(kc.allreduce_core(regs, gpus, mb), t), 90))
            score = err + 0.02 * (k - 1)
            if best is None or score < best[0] - 1e-12:
                best = (score, regs)
    return best[1]


def _splits(n: int, k: int, m: int):
    """All increasing cut indices splitting range(n) into k segments of at least m each."""
    if k == 1:
        yield ()
        return
    for c in range(m, n - m * (k - 1) + 1):
        for rest in _splits(n - c, k - 1, m):
            yield (c, *(c + r for r in rest))


@dataclass
class ClassReport:
    cls: str
    n_fit: int
    n_held: int
    median_fit: float
    p90_fit: float
    median_held: float
    p90_held: float
    params: dict = field(default_factory=dict)


@dataclass
class KindReport:
    kind: str
    system: str
    engine: str
    version: str
    classes: dict[str, ClassReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _report(cls, pred_fit, ds_fit, pred_held, ds_held, params) -> ClassReport:
    ef = _errors(pred_fit, ds_fit.t)
    eh = _errors(pred_held, ds_held.t) if len(ds_held.t) else np.array([math.nan])
    return ClassReport(cls, len(ds_fit.t), len(ds_held.t), float(np.median(ef)), float(np.percentile(ef, 90)),
                       float(np.median(eh)), float(np.percentile(eh, 90)), params)


def _rsig(x: float, sig: int = 4) -> float:
    """Round to ``sig`` significant digits (what the YAML stores)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{sig}g}")


def _rounded(block):
    """The same pydantic block with every float rounded to 4 significant digits."""
    data = block.model_dump()

    def r(v):
        if isinstance(v, float):
            return _rsig(v)
        if isinstance(v, dict):
            return {k: r(w) for k, w in v.items()}
        if isinstance(v, list):
            return [r(w) for w in v]
        return v

    return type(block).model_validate(r(data))


def predict_rows(p: kc.KernelProfile, cls: str, ds: Dataset) -> np.ndarray:
    """Seconds the public pricing functions of :mod:`autoplan.kernelcost` give for the rows
    of one class (what the report and the tests judge)."""
    P16, P8, BW = PEAKS[p.device_kind]
    f = ds.f
    group, dkey = _split_cls(cls) if not cls.startswith("allreduce_") else ("allreduce", cls.split("_", 1)[1])
    peak = P8 if dkey in ("fp8", "fp8_block") and group in ("gemm", "moe") else P16
    if group == "prefill_attention" and dkey == "fp8":
        peak = P8
    if group == "gemm":
        return np.asarray(kc.gemm_time_s(p, peak, BW, f["m"], f["n"], f["k"], dkey), dtype=float)
    if group == "decode_attention":
        return np.asarray(kc.decode_attention_time_s(p, BW, f["batch"], f["ctx"], f["kv_heads"], 128, dkey), dtype=float)
    if group == "prefill_attention":
        return np.asarray(kc.prefill_attention_time_s(p, peak, f["batch"], f["isl"], f["heads"], 128, dkey), dtype=float)
    if group in ("mla_decode", "mla_prefill"):
        phase = group.split("_")[1]
        out = np.zeros(len(ds.t))
        for i in range(len(ds.t)):  # heads vary per row; the projection shapes depend on them
            b, h = f["batch"][i], f["heads"][i]
            if phase == "decode":
                t = kc.mla_decode_time_s(p, P16, BW, b, f["ctx"][i], h, dkey)
            else:
                t = kc.mla_prefill_time_s(p, P16, b, f["isl"][i], h, dkey)
            if p.mla_fitted_on == "module":
                t += kc.mla_projection_time_s(p, P16, BW, phase, b, f["isl"][i] if phase == "prefill" else 1, h)
            out[i] = t
        return out
    if group == "moe":
        return np.asarray(kc.moe_time_s(p, peak, BW, f["tokens"], f["hidden"], f["inter"], f["topk"], f["experts"],
                                        f["tp"], f["ep"], dkey), dtype=float)
    if group == "elementwise":
        return np.asarray(kc.elementwise_time_s(p, BW, f["rows"], f["cols"], 3.0), dtype=float)
    if group == "allreduce":
        out = np.zeros(len(ds.t))
        for g in sorted(set(f["gpus"].astype(int))):
            gm = f["gpus"] == g
            out[gm] = kc.allreduce_time_s(p, dkey, int(g), f["bytes"][gm])
        return out
    raise AssertionError(cls)  # pragma: no cover


_GROUPS = ("decode_attention", "prefill_attention", "mla_decode", "mla_prefill", "gemm", "moe")


def _split_cls(cls: str) -> tuple[str, str]:
    if cls == "elementwise":
        return "elementwise", "bf16"
    for g in _GROUPS:
        if cls.startswith(g + "_"):
            return g, cls[len(g) + 1:]
    raise AssertionError(cls)


def _class_sets(data_dir: str, system: str, engine: str, notes: list[str]):
    sets: dict[str, Dataset] = {}
    sets.update(_gemm_sets(data_dir, system, engine, notes))
    sets.update(_decode_sets(data_dir, system, engine, notes))
    sets.update(_prefill_sets(data_dir, system, engine, notes))
    mla, scope = _mla_sets(data_dir, system, engine, notes)
    sets.update(mla)
    sets.update(_moe_sets(data_dir, system, engine, notes))
    sets.update(_elementwise_sets(data_dir, system, engine, notes))
    comm = _comm_sets(data_dir, system, engine, notes)
    return sets, comm, scope


def heldout_rows(data_dir: str | Path, system: str, engine: str) -> dict[str, Dataset]:
    """The held-out rows of every class of one (system, engine), as the fit splits them
    (all-reduce: sizes in the 16 KB-256 MB target range only)."""
    sets, comm, _ = _class_sets(str(Path(data_dir)), system, engine, [])
    out = {cls: ds.take(held_out_mask(ds.shape)) for cls, ds in sets.items() if len(ds.t)}
    for cls, ds in comm.items():
        inr = (ds.f["bytes"] >= AR_RANGE[0]) & (ds.f["bytes"] <= AR_RANGE[1])
        out[cls] = ds.take(held_out_mask(ds.shape) & inr)
    return out


def fit_system(data_dir: str | Path, system: str, engine: str) -> tuple[kc.KernelProfile, KindReport]:
    """Fit one (AIC system, engine) on its training rows; report errors on held-out rows."""
    data_dir = str(Path(data_dir))
    if system not in SYSTEMS:
        raise InputError(f"unknown AIC system {system!r} (known: {', '.join(SYSTEMS)})")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    kind = SYSTEMS[system]
    P16, P8, BW = PEAKS[kind]
    notes: list[str] = []
    sets, comm, scope = _class_sets(data_dir, system, engine, notes)

    def peak_for(dkey):
        if dkey in ("fp8", "fp8_block"):
            if P8 is None:
                return None
            return P8
        return P16

    blocks: dict[str, dict] = {"gemm": {}, "decode_attention": {}, "prefill_attention": {}, "mla_decode": {},
                               "mla_prefill": {}, "moe": {}}
    elementwise = None
    rep = KindReport(kind, system, engine, "")
    versions = set()
    splits: dict[str, tuple[Dataset, Dataset, dict]] = {}
    order = sorted(sets, key=lambda c: (not c.startswith("gemm_"), c))  # GEMMs first: MLA modules use them
    for cls in order:
        ds = sets[cls]
        ds.f.setdefault("proj_s", np.zeros(len(ds.t)))
        if "module" in ds.f:
            g = blocks["gemm"].get("bf16")
            if g is None:
                notes.append(f"{cls}: module rows but no BF16 GEMM fit; not fitted")
                continue
            phase = "decode" if cls.startswith("mla_decode") else "prefill"
            proj = np.zeros(len(ds.t))
            for m_, n_, k_ in kc.mla_projection_gemms(phase, ds.f["batch"], ds.f.get("isl", 1.0), ds.f["heads"]):
                proj += kc.gemm_core(g.efficiency, g.half_depth, g.half_outputs, g.long_kernel_loss,
                                     g.long_kernel_flops, g.memory_efficiency, g.fixed_s, g.overlap_exponent, 0.0,
                                     P16, BW, m_, n_, k_, 2.0)
            ds.f["proj_s"] = proj
        versions.update(ds.version.split(","))
        group, dkey = _split_cls(cls)
        if group in ("gemm", "moe"):
            P = peak_for(dkey)
            if P is None:
                notes.append(f"{cls}: no FP8 peak on {kind}; not fitted")
                continue
            spec = _gemm_spec(P, BW, dkey) if group == "gemm" else _moe_spec(P, BW)
        elif group == "decode_attention":
            spec = _decode_spec(BW)
        elif group == "prefill_attention":
            P = peak_for(dkey)
            if P is None:
                continue
            spec = _prefill_spec(P)
        elif group == "mla_decode":
            spec = _mla_decode_spec(P16, BW)
        elif group == "mla_prefill":
            spec = _mla_prefill_spec(P16)
        elif group == "elementwise":
            spec = _elementwise_spec(BW)
        else:  # pragma: no cover
            raise AssertionError(cls)
        held = held_out_mask(ds.shape)
        fit_ds, held_ds = ds.take(~held), ds.take(held)
        if len(fit_ds.t) < 3 * len(spec.names) or not len(held_ds.t):
            notes.append(f"{cls}: {len(fit_ds.t)} usable rows to fit, {len(held_ds.t)} to judge; not fitted")
            continue
        x = _fit(spec, fit_ds)
        block = _rounded(spec.build(x))
        splits[cls] = (fit_ds, held_ds, dict(zip(spec.names, (_rsig(float(v)) for v in x))))
        if group == "elementwise":
            elementwise = block
        else:
            blocks[group][dkey] = block

    allreduce = {}
    for cls, ds in sorted(comm.items()):
        impl = cls.split("_", 1)[1]
        versions.update(ds.version.split(",") if impl == "custom" else [])
        regimes = {}
        held = held_out_mask(ds.shape)
        for g in sorted(set(ds.f["gpus"].astype(int))):
            gm = ds.f["gpus"] == g
            regs = [(lo, hi, _rsig(a), _rsig(b)) for lo, hi, a, b in _ar_fit(ds.take(gm & ~held), int(g))]
            regimes[int(g)] = [kc.AllReduceRegime(min_bytes=lo, max_bytes=hi, floor_s=a, bus_bandwidth=b)
                               for lo, hi, a, b in regs]
        allreduce[impl] = kc.AllReduceParams(regimes=regimes)
        inr = (ds.f["bytes"] >= AR_RANGE[0]) & (ds.f["bytes"] <= AR_RANGE[1])
        splits[cls] = (ds.take(~held & inr), ds.take(held & inr),
                       {str(g): [(r.min_bytes, r.max_bytes, r.floor_s, r.bus_bandwidth) for r in rs]
                        for g, rs in regimes.items()})
    versions.discard("")
    rep.version = ",".join(sorted(versions))
    rep.notes = notes
    prof = kc.KernelProfile(device_kind=kind, engine=engine, engine_version=rep.version, gemm=blocks["gemm"],
                            decode_attention=blocks["decode_attention"],
                            prefill_attention=blocks["prefill_attention"], mla_decode=blocks["mla_decode"],
                            mla_prefill=blocks["mla_prefill"], mla_fitted_on=scope, moe=blocks["moe"],
                            elementwise=elementwise, allreduce=allreduce, notes=notes)
    for cls, (fit_ds, held_ds, params) in splits.items():
        rep.classes[cls] = _report(cls, predict_rows(prof, cls, fit_ds), fit_ds, predict_rows(prof, cls, held_ds),
                                   held_ds, params)
    rep.classes = dict(sorted(rep.classes.items()))
    return prof, rep


@lru_cache(maxsize=8)
def _fit_engine_cached(data_dir: str, engine: str):
    profiles, reports = {}, {}
    for system, kind in SYSTEMS.items():
        p, r = fit_system(data_dir, system, engine)
        profiles[kind] = p
        reports[kind] = r
    return profiles, reports


def fit_engine_report(data_dir: str | Path, engine: str) -> tuple[dict[str, kc.KernelProfile], dict[str, KindReport]]:
    """Profiles and reports of every device kind for ``engine`` (cached per process)."""
    return _fit_engine_cached(str(Path(data_dir).resolve()), engine)


def fit_engine(data_dir: str | Path, engine: str) -> dict[str, kc.KernelProfile]:
    """Fitted :class:`KernelProfile` per autoplan device kind for ``engine``."""
    return dict(fit_engine_report(data_dir, engine)[0])


# ---------------------------------------------------------------- YAML

DATA_FILES = ("gemm", "attention_decode", "attention_prefill", "mla", "moe", "comm", "elementwise")
SHIPPED_DATA = "hardware/data/aic-kernels"
REFIT_COMMAND = "python -m autoplan.kernelfit hardware/data/aic-kernels --write hardware/profiles"
GENERAL_EXCLUSIONS = (
    "A100 TRT-LLM 1.0.0 decode attention (implies 1.0-1.65x HBM peak): whole table",
    "L40S GEMM rows with weights of 0.86-19.2 MB, decode-attention rows reading 0.86-96 MB of KV and element-wise"
    " rows moving 0.86-96 MB (L2-served)",
    "vLLM 0.24.0 block-FP8 GEMMs on every system (flat 57-350 us floor, non-kernel work timed)",
    "MoE rows whose expert weights would stream faster than HBM peak; MoE configurations whose latency falls below"
    " half of what fewer tokens took; MoE power-law routing rows (balanced routing only)",
    "rows of other dtypes (nvfp4, int4/int8 weight-only, SmoothQuant) and head_dim != 128",
)


def _yaml_block(p: kc.KernelProfile) -> dict:
    d = p.model_dump(mode="python")
    d.pop("device_kind")
    return d


def profile_yaml(profiles: dict[str, kc.KernelProfile], reports: dict[str, KindReport], engine: str,
                 data: str = SHIPPED_DATA) -> str:
    """Deterministic YAML of one engine's profiles, with a header naming the data, the
    refit command, the held-out split, the exclusions, the attribution notice and the
    held-out errors per class."""
    import yaml

    lines = [
        f"# Kernel cost profiles (autoplan/kernelcost.py:KernelProfile) for engine {engine}, one per device kind.",
        "# Fitted by autoplan/kernelfit.py from the measured per-kernel latencies (GPU time of CUDA-graph",
        "# replays; NCCL: nccl-tests) in",
        f"#   {data}/{{{','.join(DATA_FILES)}}}.csv.gz",
        "# by least squares on log(predicted/measured) (soft_l1, bounded, fixed starts).",
        "# Refit with:",
        f"#   {REFIT_COMMAND}",
        "# Held-out split (by shape, not at random): within each class the distinct shape keys are sorted and",
        f"# every {HOLDOUT_EVERY}rd (index 1, 4, 7, ...) is held out and never fitted: GEMM (n, k); attention",
        "# (heads, kv_heads); MLA heads; MoE (model, tp, ep); element-wise k; all-reduce message size.",
        "# These profiles are the fits on the remaining rows. Values are rounded to 4 significant digits.",
        "# Excluded (details per kind under notes):",
    ]
    lines += [f"#   - {x}" for x in GENERAL_EXCLUSIONS]
    lines += ["#", "# Held-out |predicted/measured - 1|, median / p90 (rows):"]
    for kind in profiles:
        r = reports[kind]
        cells = [f"{c} {cr.median_held * 100:.1f}/{cr.p90_held * 100:.1f}% ({cr.n_held})"
                 for c, cr in sorted(r.classes.items())]
        lines.append(f"#   {kind} ({r.system} {r.version}):")
        for i in range(0, len(cells), 3):
            lines.append("#     " + "; ".join(cells[i:i + 3]))
    lines += ["#", "# Attribution (hardware/data/aic-kernels/SOURCE.md):"]
    lines += ["#   " + ln for ln in ATTRIBUTION.splitlines()]
    body = {"engine": engine, "device_kinds": {kind: _yaml_block(p) for kind, p in profiles.items()}}
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=120, allow_unicode=False)
    return "\n".join(lines) + "\n" + text


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m autoplan.kernelfit", description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", help="folder with the AIC kernel CSVs (hardware/data/aic-kernels)")
    ap.add_argument("--engine", action="append", choices=ENGINES, help="engine(s) to fit (default: all)")
    ap.add_argument("--write", metavar="DIR", help="write kernels-<engine>.yaml into DIR")
    a = ap.parse_args(argv)
    for engine in a.engine or ENGINES:
        profiles, reports = fit_engine_report(a.data_dir, engine)
        for kind, r in reports.items():
            for c, cr in sorted(r.classes.items()):
                print(f"{engine:6s} {kind:14s} {c:24s} fit {cr.n_fit:5d} {cr.median_fit * 100:5.1f}/{cr.p90_fit * 100:5.1f}%"
                      f"  held-out {cr.n_held:5d} {cr.median_held * 100:5.1f}/{cr.p90_held * 100:5.1f}%")
        if a.write:
            out = Path(a.write) / f"kernels-{engine}.yaml"
            out.write_text(profile_yaml(profiles, reports, engine), encoding="utf-8")
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
