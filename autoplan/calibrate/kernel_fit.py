"""Fitting the per-kernel cost model to measured kernel rows, and its held-out report."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from autoplan.calibrate.kernel_data import (
    AR_RANGE,
    ENGINES,
    LOSS,
    LOSS_SCALE,
    MOE_EP_CLASS_ENGINES,
    MOE_EP_CLASS_NOTE,
    PEAKS,
    SYSTEMS,
    Dataset,
    _comm_sets,
    _decode_sets,
    _elementwise_sets,
    _gemm_sets,
    _mla_sets,
    _moe_sets,
    _prefill_sets,
    held_out_mask,
)
from autoplan.calibrate.kernel_regimes import LENGTH_REGIMES, with_length_regime
from autoplan.calibrate.kernel_report import KindReport, _errors, _report, _rounded, _rsig
from autoplan.calibrate.kernel_specs import (
    MOE_ONE_SHAPE_TERMS,
    decode_spec,
    elementwise_spec,
    fit_spec,
    gemm_spec,
    mla_decode_spec,
    mla_prefill_spec,
    moe_spec,
    pinned,
    prefill_spec,
)
from autoplan.cost import kernels as kc
from autoplan.errors import InputError
from autoplan.inputs import kernels as km


def _moe_identifiable(spec, ds: Dataset, cls: str, notes: list[str]):
    """The MoE spec with the terms the fitted rows cannot identify held at 0. Where the rows
    hold one expert count (one model: the shipped data have Mixtral-8x7B alone for BF16 and
    per-tensor FP8), the model's expert-count terms (``per_token_s`` fitted in their place)
    and the per-expert and per-assignment costs
    (:data:`~autoplan.calibrate.kernel_specs.MOE_SHAPE_TERMS`); else ``per_token_s``
    (:data:`~autoplan.calibrate.kernel_specs.MOE_MODEL_TERMS`).
    The EP / TP subsets some engines fit apart hold the same counts as their union in the
    shipped data (``tests/test_kernel_fit.py`` checks both blocks)."""
    counts = np.unique(ds.f["experts"]) if len(ds.t) else np.array([])
    if len(counts) == 1:
        notes.append(f"{cls}: rows of one expert count ({int(counts[0])}): the terms in the "
                     "model's experts are not identifiable; per_token_s is fitted in their "
                     "place, per_model_expert_s and per_token_expert_s are 0; per_expert_s and "
                     "per_assignment_s are 0 too: with one expert shape the bytes and FLOPs grow with the "
                     "experts hit and the assignments alike, so a cost per expert or per assignment would "
                     "stand for bytes and FLOPs and not transfer to finer experts")
        return pinned(spec, MOE_ONE_SHAPE_TERMS)
    return pinned(spec, ("per_token_ps",))


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


def _ar_fit(ds: Dataset, gpus: int, continuous: bool = False, max_regimes: int = 4, min_sizes: int = 2):
    """Regimes by message size for one GPU count: 1-4 segments of consecutive measured
    sizes minimising the p90 training error (robust to a single glitched size) plus 2%
    per extra regime; each segment is a + 2(t-1)/t * M / B over its sizes.

    With ``continuous`` (NCCL) neighbouring segments share their boundary size: NCCL
    picks the algorithm and protocol (ring/tree x LL/LL128/Simple) its tuning model
    predicts fastest for each size, so the measured time bends at a switch but does not
    jump, and a size between two measured ones lies on the line through them. Otherwise
    (the engines' custom all-reduce, which changes kernel or hands over to NCCL at fixed
    buffer sizes, with a jump) each boundary may share its size or leave a gap between the
    last size of one segment and the first of the next, interpolated in log size
    (``autoplan.cost.kernels.allreduce_core``), whichever fits the training sizes better."""
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
        for cuts in _splits(n, k, min_sizes - 1):
            for shared in itertools.product((True,) if continuous else (False, True), repeat=k - 1):
                starts = [0, *(c - 1 if sh else c for c, sh in zip(cuts, shared))]
                ends = [*cuts, n]
                if any(e - s_ < min_sizes for s_, e in zip(starts, ends)):
                    continue
                regs = []
                for r_ in range(k):
                    i, j = starts[r_], ends[r_]
                    a, bw = seg(i, j)
                    regs.append((None if r_ == 0 else float(mb[i]), None if r_ == k - 1 else float(mb[j - 1]), a, bw))
                err = float(np.percentile(_errors(kc.allreduce_core(regs, gpus, mb), t), 90))
                score = err + 0.02 * (k - 1)
                if best is None or score < best[0] - 1e-12:
                    best = (score, regs)
    return None if best is None else best[1]  # None: fewer than min_sizes sizes


def _splits(n: int, k: int, m: int):
    """All increasing cut indices splitting range(n) into k segments of at least m each."""
    if k == 1:
        yield ()
        return
    for c in range(m, n - m * (k - 1) + 1):
        for rest in _splits(n - c, k - 1, m):
            yield (c, *(c + r for r in rest))


def predict_rows(p: km.KernelProfile, cls: str, ds: Dataset) -> np.ndarray:
    """Seconds the public pricing functions of :mod:`autoplan.cost.kernels` give for the rows
    of one class (what the report and the tests judge)."""
    P16, P8, BW = PEAKS[p.device_kind]
    f = ds.f
    group, dkey = _split_cls(cls) if not cls.startswith("allreduce_") else ("allreduce", cls.split("_", 1)[1])
    peak = _peak(p.device_kind, dkey) if group in ("gemm", "moe") else P16
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


def all_rows(data_dir: str | Path, system: str, engine: str) -> dict[str, Dataset]:
    """Every row of every class of one (system, engine) that the fit reads, fitted and
    held out alike (the rows a refit is compared on)."""
    sets, comm, _ = _class_sets(str(Path(data_dir)), system, engine, [])
    return {cls: ds for cls, ds in {**sets, **comm}.items() if len(ds.t)}


def _peak(kind: str, dkey: str) -> float | None:
    """The datasheet peak FLOP/s a class of weight format ``dkey`` runs at on ``kind``
    (None: an FP8 class on a GPU without FP8 units)."""
    P16, P8, _ = PEAKS[kind]
    return P8 if dkey in ("fp8", "fp8_block") else P16


def fit_system(data_dir: str | Path, system: str, engine: str) -> tuple[km.KernelProfile, KindReport]:
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

    blocks: dict[str, dict] = {"gemm": {}, "decode_attention": {}, "prefill_attention": {}, "mla_decode": {},
                               "mla_prefill": {}, "moe": {}, "moe_ep": {}}
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
            P = _peak(kind, dkey)
            if P is None:
                notes.append(f"{cls}: no FP8 peak on {kind}; not fitted")
                continue
            spec = gemm_spec(P, BW, dkey) if group == "gemm" else moe_spec(P, BW)
        elif group == "decode_attention":
            spec = decode_spec(BW)
        elif group == "prefill_attention":
            P = _peak(kind, dkey)
            if P is None:
                continue
            spec = prefill_spec(P)
        elif group == "mla_decode":
            spec = mla_decode_spec(P16, BW)
        elif group == "mla_prefill":
            spec = mla_prefill_spec(P16)
        elif group == "elementwise":
            spec = elementwise_spec(BW)
        else:  # pragma: no cover
            raise AssertionError(cls)
        held = held_out_mask(ds.shape)
        fit_ds, held_ds = ds.take(~held), ds.take(held)
        if group == "moe":
            spec = _moe_identifiable(spec, fit_ds, cls, notes)
        if len(fit_ds.t) < 3 * len(spec.names) or not len(held_ds.t):
            notes.append(f"{cls}: {len(fit_ds.t)} usable rows to fit, {len(held_ds.t)} to judge; not fitted")
            continue
        if group == "moe" and engine in MOE_EP_CLASS_ENGINES:
            ep_rows = fit_ds.f["ep"] > 1
            sub = {"tp": fit_ds.take(~ep_rows), "ep": fit_ds.take(ep_rows)}
            # The EP path keeps the terms in the model's experts: its expert map walks every
            # expert for every token, and where two expert counts are measured that term
            # fits at about 2 ns per token and expert (vLLM, H100, block FP8); the TP path's
            # fits it near 0, so only the TP path holds it at 0 on one-model rows. (Lending
            # a one-model class the two-count class's EP terms was tried: held-out p90 of
            # vLLM's BF16 MoE on H200 went from 12% to 38%; not kept.)
            spec_ep = pinned(moe_spec(P, BW), ("per_token_ps",))
            if min(len(d.t) for d in sub.values()) >= 3 * len(spec_ep.names):
                x_tp, x_ep = fit_spec(spec, sub["tp"]), fit_spec(spec_ep, sub["ep"])
                blocks["moe"][dkey] = _rounded(spec.build(x_tp))
                blocks["moe_ep"][dkey] = _rounded(spec_ep.build(x_ep))
                if MOE_EP_CLASS_NOTE not in notes:
                    notes.append(MOE_EP_CLASS_NOTE)
                splits[cls] = (fit_ds, held_ds, {f"{c}.{n}": _rsig(float(v))
                                                 for c, sp, x_ in (("ep1", spec, x_tp), ("ep", spec_ep, x_ep))
                                                 for n, v in zip(sp.names, x_)})
                continue
            notes.append(f"{cls}: too few moe_ep > 1 or moe_ep = 1 rows to fit them apart; one set prices both")
        x = fit_spec(spec, fit_ds)
        block = _rounded(spec.build(x))
        params = dict(zip(spec.names, (_rsig(float(v)) for v in x)))
        if group in LENGTH_REGIMES:
            block, params = with_length_regime(fit_spec, spec, fit_ds, x, group)
        splits[cls] = (fit_ds, held_ds, params)
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
            fit = _ar_fit(ds.take(gm & ~held), int(g), continuous=impl == "nccl")
            if fit is None:
                notes.append(f"{cls}: too few message sizes on {g} GPUs to fit; not fitted")
                continue
            regimes[int(g)] = [km.AllReduceRegime(min_bytes=lo, max_bytes=hi, floor_s=_rsig(a),
                                                  bus_bandwidth=_rsig(b)) for lo, hi, a, b in fit]
        if not regimes:
            continue
        allreduce[impl] = km.AllReduceParams(regimes=regimes)
        inr = (ds.f["bytes"] >= AR_RANGE[0]) & (ds.f["bytes"] <= AR_RANGE[1])
        splits[cls] = (ds.take(~held & inr), ds.take(held & inr),
                       {str(g): [(r.min_bytes, r.max_bytes, r.floor_s, r.bus_bandwidth) for r in rs]
                        for g, rs in regimes.items()})
    versions.discard("")
    rep.version = ",".join(sorted(versions))
    rep.notes = notes
    prof = km.KernelProfile(device_kind=kind, engine=engine, engine_version=rep.version, gemm=blocks["gemm"],
                            decode_attention=blocks["decode_attention"],
                            prefill_attention=blocks["prefill_attention"], mla_decode=blocks["mla_decode"],
                            mla_prefill=blocks["mla_prefill"], mla_fitted_on=scope, moe=blocks["moe"], moe_ep=blocks["moe_ep"],
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


def fit_engine_report(data_dir: str | Path, engine: str) -> tuple[dict[str, km.KernelProfile], dict[str, KindReport]]:
    """Profiles and reports of every device kind for ``engine`` (cached per process)."""
    return _fit_engine_cached(str(Path(data_dir).resolve()), engine)


def fit_engine(data_dir: str | Path, engine: str) -> dict[str, km.KernelProfile]:
    """Fitted :class:`KernelProfile` per autoplan device kind for ``engine``."""
    return dict(fit_engine_report(data_dir, engine)[0])


def moe_shape_transfer(data_dir: str | Path, system: str, engine: str, cls: str, fit_model: str,
                       hold: tuple[str, ...] | None = None) -> np.ndarray | None:
    """|predicted / measured - 1| on the TP-path (moe_ep 1) rows of the models other than
    ``fit_model`` of one MoE class, priced by the MoE spec fitted to ``fit_model``'s TP-path
    rows alone with the terms ``hold`` held at 0 (default: the ones a class of one expert
    count holds, ``MOE_ONE_SHAPE_TERMS``). None where the class lacks either
    side. A check of what a one-shape fit says about another expert shape
    (``bench/moe_transfer.py``)."""
    kind = SYSTEMS[system]
    ds = _moe_sets(str(data_dir), system, engine, []).get(cls)
    P, BW = _peak(kind, _split_cls(cls)[1]), PEAKS[kind][2]
    if ds is None or P is None:
        return None
    model = np.array([s[0] for s in ds.shape])
    tp_path = ds.f["ep"] == 1
    fit, judge = ds.take(tp_path & (model == fit_model)), ds.take(tp_path & (model != fit_model))
    spec = pinned(moe_spec(P, BW), MOE_ONE_SHAPE_TERMS if hold is None else hold)
    if len(fit.t) < 3 * len(spec.names) or not len(judge.t):
        return None
    return _errors(spec.pred(fit_spec(spec, fit), judge), judge.t)
