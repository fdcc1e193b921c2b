"""Fit :class:`autoplan.inputs.kernels.KernelProfile` parameters from measured kernel tables.

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

    autoplan calibrate --kernels hardware/data/aic-kernels --engine ENGINE -o hardware/profiles/ENGINE.yaml

This module imports nothing from autoplan except :mod:`autoplan.cost.kernels` (its sibling,
moved with it), :mod:`autoplan.errors` and the table reader
:mod:`autoplan.calibrate.kernel_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoplan.calibrate.kernel_tables import numeric, select, table
from autoplan.cost import kernels as kc
from autoplan.inputs import kernels as km

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
    sel = select(data_dir, "gemm", system, engine)
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
        mm = numeric(sel, "m")[m]
        nn = numeric(sel, "n")[m]
        kk = numeric(sel, "k")[m]
        tt = numeric(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(mm, nn, kk)), tt)
        mm, nn, kk = mm[idx], nn[idx], kk[idx]
        keep = np.ones(len(tt), dtype=bool)
        why = ""
        if kind in L2_BYTES:
            wb = nn * kk * km.WEIGHT_BYTES[key]
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
    sel = select(data_dir, "attention_decode", system, engine)
    out = {}
    kind = SYSTEMS[system]
    if system == "a100_sxm" and engine == "trtllm":
        notes.append("decode_attention: A100 TRT-LLM 1.0.0 generation-attention table excluded entirely: it implies "
                     "1.0-1.65x the HBM peak for KV reads of 256 MB-2 GB (not physical)")
        return out
    for raw, key in (("bfloat16", "bf16"), ("fp8", "fp8")):
        m = (sel["kv_dtype"] == raw) & (numeric(sel, "head_dim") == 128)
        if not m.any():
            continue
        b = numeric(sel, "batch")[m]
        step = numeric(sel, "kv_len")[m]
        h = numeric(sel, "num_heads")[m]
        kh = numeric(sel, "num_kv_heads")[m]
        tt = numeric(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(b, step, h, kh)), tt)
        b, step, h, kh = b[idx], step[idx], h[idx], kh[idx]
        ctx = step + 1.0  # attended length: the cached tokens plus the new one
        kvb = b * ctx * kh * 128 * 2 * km.KV_BYTES[key]
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
    sel = select(data_dir, "attention_prefill", system, engine)
    out = {}
    for key in ("bf16", "fp8"):
        attn = sel["attn_dtype"]
        m = ((attn == "fp8") if key == "fp8" else (attn != "fp8")) & (numeric(sel, "head_dim") == 128)
        if not m.any():
            continue
        b = numeric(sel, "batch")[m]
        s = numeric(sel, "isl")[m]
        h = numeric(sel, "num_heads")[m]
        kh = numeric(sel, "num_kv_heads")[m]
        tt = numeric(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(b, s, h, kh)), tt)
        b, s, h, kh = b[idx], s[idx], h[idx], kh[idx]
        ds = Dataset(f"prefill_attention_{key}", tt, [(int(x), int(y)) for x, y in zip(h, kh)],
                     {"batch": b, "isl": s, "heads": h, "flops": kc.prefill_flops(b, s, h)}, _version(sel))
        out[ds.cls] = ds
    return out


def _mla_sets(data_dir, system, engine, notes):
    sel = select(data_dir, "mla", system, engine)
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
            h = numeric(sel, "num_heads")[m]
            b = numeric(sel, "batch")[m]
            s = numeric(sel, "isl")[m]
            kv = numeric(sel, "kv_len")[m]
            tt = numeric(sel, "latency_s")[m]
            keys, tt, idx = _min_by_key(list(zip(h, b, s, kv)), tt)
            h, b, s, kv = h[idx], b[idx], s[idx], kv[idx]
            if phase == "decode":
                ctx = kv + (1.0 if scope == "kernel" else 0.0)  # kernel tables index step as 2^k - 1
                f = {"batch": b, "ctx": ctx, "heads": h,
                     "kv_bytes": b * ctx * km.MLA_LATENT_DIM * km.KV_BYTES[key],
                     "flops": 2.0 * b * h * ctx * (km.MLA_LATENT_DIM + km.MLA_VALUE_DIM)}
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


#: Engines whose MoE kernel under expert parallelism (moe_ep > 1) is fitted apart from the
#: TP path (profile block ``moe_ep``). vLLM 0.24 and SGLang 0.5.14 run one Triton fused-MoE
#: kernel whose tile configuration is looked up by the *local* weight shape,
#: ``E, _, N = w2_shape`` (``try_get_optimal_moe_config`` in vLLM's
#: ``vllm/model_executor/layers/fused_moe/fused_moe.py`` and SGLang's
#: ``python/sglang/srt/layers/moe/fused_moe_triton/``), and the tuned tables they ship are
#: keyed by the models' full expert counts (e.g. ``E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json``);
#: E/ep local experts find no tuned table and run the default tiles. The measured rows
#: show it: with ep > 1 the same per-expert GEMM reaches 0.1-0.4 of peak where ep = 1
#: reaches 0.3-0.7. TensorRT-LLM's CUTLASS MoE reaches the same plateau at every (tp, ep)
#: of its tables, so one parameter set prices both.
MOE_EP_CLASS_ENGINES = ("vllm", "sglang")


MOE_EP_CLASS_NOTE = ("moe: moe_ep > 1 rows fitted apart (block moe_ep): this engine's Triton fused-MoE kernel looks up "
                     "its tile configuration by the local weight shape (E/ep local experts, inter/tp), its tuned "
                     "tables are keyed by the models' full expert counts, so under EP it runs default tiles (the "
                     "ep > 1 rows reach 0.1-0.4 of peak where ep = 1 reaches 0.3-0.7), and with its expert map every "
                     "rank holds every token and walks all experts' blocks (a cost per token x expert of the model)")


def _moe_sets(data_dir, system, engine, notes):
    sel = select(data_dir, "moe", system, engine)
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
        tok = numeric(sel, "num_tokens")[m]
        hid = numeric(sel, "hidden")[m]
        inter = numeric(sel, "inter")[m]
        topk = numeric(sel, "topk")[m]
        ex = numeric(sel, "experts")[m]
        tp = numeric(sel, "moe_tp")[m]
        ep = numeric(sel, "moe_ep")[m]
        tt = numeric(sel, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(model, tok, hid, inter, topk, ex, tp, ep)), tt)
        model, tok, hid, inter, topk, ex, tp, ep = (a[idx] for a in (model, tok, hid, inter, topk, ex, tp, ep))
        fl, byts, rows, assign, hit, tex = kc.moe_shape(tok, hid, inter, topk, ex, tp, ep, km.WEIGHT_BYTES[key])
        ds = Dataset(f"moe_{key}", tt, [(str(a), int(b), int(c)) for a, b, c in zip(model, tp, ep)],
                     {"tokens": tok, "flops": fl, "bytes": byts, "rows": rows, "assign": assign, "hit": hit,
                      "token_experts": tex,
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


ELEMENTWISE_STAND_IN = {"sglang": "vllm"}
"""Engines whose element-wise price comes from another engine's rows of the same GPU.
The element-wise rows time each engine's stand-alone FP8 quantise kernel, the closest
measured stand-in for the norm, activation and embedding kernels of a layer (the
tables have no norm rows: FINDINGS.md, section 3). SGLang's is a slow kernel (7-8 us
floor, about 0.08 of HBM bandwidth: a 235 MB RMSNorm of 8,192 tokens would take 0.6 ms),
while the norm and activation kernels its layers run are CUDA kernels (FlashInfer's or
sgl-kernel's ``fused_add_rmsnorm``, sgl-kernel's ``rmsnorm`` and ``silu_and_mul``:
python/sglang/srt/layers/layernorm.py and activation.py,
https://github.com/sgl-project/sglang), of the same kind as vLLM's
CUDA kernels (csrc/layernorm_kernels.cu, csrc/activation_kernels.cu); vLLM's quantise
kernel (1.7-1.9 us floor) stands in for both."""


def _elementwise_sets(data_dir, system, engine, notes):
    source = ELEMENTWISE_STAND_IN.get(engine, engine)
    sel = select(data_dir, "elementwise", system, source)
    m = sel["op"] == "scale_matrix"
    if not m.any():
        return {}
    mm = numeric(sel, "m")[m]
    kk = numeric(sel, "k")[m]
    tt = numeric(sel, "latency_s")[m]
    keys, tt, idx = _min_by_key(list(zip(mm, kk)), tt)
    mm, kk = mm[idx], kk[idx]
    byts = mm * kk * 3.0  # read BF16, write FP8
    version = _version(sel)
    if source != engine:
        notes.append(f"elementwise: fitted to the {source} rows of this GPU (the element-wise rows time each "
                     f"engine's stand-alone FP8 quantise kernel; {engine}'s is far slower (7-8 us floor, ~0.08 of HBM "
                     f"bandwidth) than the CUDA norm and activation kernels its layers run, like {source}'s): "
                     f"the held-out errors of this class are on those rows")
        version = ""  # not this engine's measurement
    ds = Dataset("elementwise", tt, [int(x) for x in kk], {"rows": mm, "cols": kk, "bytes": byts}, version)
    kind = SYSTEMS[system]
    if kind in L2_BYTES:
        keep = ~((byts > PEAKS[kind][2] * 1e-6) & (byts <= L2_BYTES[kind]))
        notes.append(f"elementwise: L40S rows moving 0.86-96 MB excluded (served by the 96 MB L2; "
                     f"{int((~keep).sum())} rows)")
        ds = ds.take(keep)
    return {"elementwise": ds}


_CUSTOM_SOURCE = {"trtllm": "TRTLLM", "vllm": "vLLM_custom_graph", "sglang": "SGLang_CustomAllReduce_graph"}


def _comm_sets(data_dir, system, engine, notes):
    tab = table(data_dir, "comm")
    out = {}
    is_ar = (tab["system"] == system) & (tab["op"] == "all_reduce")
    for impl in km.ALLREDUCE_IMPLS:
        if impl == "custom":
            m = is_ar & (tab["framework"] == engine) & (tab["kernel_source"] == _CUSTOM_SOURCE[engine])
        else:
            m = is_ar & (tab["framework"] == "nccl") & (tab["aic_pinned"] == "yes") & (tab["dtype"] == "half")
        if not m.any():
            continue
        g = numeric(tab, "num_gpus")[m]
        mb = numeric(tab, "message_bytes")[m]
        tt = numeric(tab, "latency_s")[m]
        keys, tt, idx = _min_by_key(list(zip(g, mb)), tt)
        g, mb = g[idx], mb[idx]
        glitch = _allreduce_glitches(g, mb, tt)
        if glitch.any():
            notes.append(f"allreduce {impl}: {int(glitch.sum())} rows excluded that took more than "
                         f"{AR_GLITCH_RATIO:g}x both neighbouring sizes at the same GPU count (e.g. SGLang 0.5.14 "
                         f"on 8 H100 at 1 KB: 38.1 us between 3.3 us at 512 B and 3.5 us at 2 KB): a larger message "
                         f"does all of a smaller one's work, so such a row is not the kernel's time")
        vers = ",".join(sorted(set(tab["version"][m])))
        out[f"allreduce_{impl}"] = Dataset(f"allreduce_{impl}", tt, [int(x) for x in mb], {"gpus": g, "bytes": mb},
                                           vers).take(~glitch)
    return out


#: A measured all-reduce size slower than this many times both its smaller and its larger
#: measured neighbour (same implementation and GPU count) is a glitch, not a kernel time.
AR_GLITCH_RATIO = 3.0


def _allreduce_glitches(gpus: np.ndarray, mb: np.ndarray, t: np.ndarray) -> np.ndarray:
    bad = np.zeros(len(t), dtype=bool)
    for gc in set(gpus.tolist()):
        ii = np.where(gpus == gc)[0]
        ii = ii[np.argsort(mb[ii])]
        for a, i, b in zip(ii[:-2], ii[1:-1], ii[2:]):
            if t[i] > AR_GLITCH_RATIO * max(t[a], t[b]):
                bad[i] = True
    return bad
