"""Kernel cost profiles (autoplan/cost/kernels.py) fitted from measured kernel tables
(autoplan/calibrate/kernel_fit.py, hardware/data/aic-kernels): the shipped YAMLs are the refit, the
held-out accuracy target on H100 and H200, all-reduce accuracy, and physics bounds.

Held-out rows are never fitted: each class holds out every third distinct shape key
(autoplan/calibrate/kernel_data.py:held_out_mask). Classes that miss the target are listed in KNOWN_MISSES with the
measured figures; they are asserted to still miss (strictly), so the list stays honest.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import yaml

from autoplan.calibrate import kernel_data as kd
from autoplan.calibrate import kernel_fit as kf
from autoplan.calibrate import kernel_profiles as kp
from autoplan.cost import kernels as kc
from autoplan.errors import InputError
from autoplan.inputs import kernels as km

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "hardware" / "data" / "aic-kernels"
PROFILES = ROOT / "hardware" / "profiles"
TARGET_KINDS = {"h100-sxm": "h100_sxm", "h200": "h200_sxm"}
MEDIAN_MAX, P90_MAX, ALLREDUCE_MAX = 0.08, 0.20, 0.15

#: (engine, kind, class): held-out median / p90 measured, and why the form misses.
KNOWN_MISSES = {
    ("vllm", "h100-sxm", "moe_bf16"): "5.4/23.3%: Mixtral BF16 at MoE TP 1 (local N 14336) reaches 0.52 of peak on H100 "
                                      "where TP 2/4/8 reach 0.68/0.60/0.58 and TP 1 on H200 0.69 (a tuned Triton "
                                      "table for that (E, N, device) appears to be missing); TP 2 is held out",
    ("sglang", "h200", "gemm_fp8"): "6.1/21.7%: sgl-kernel's FP8 scaled_mm steps up between m 128 and 256 (n 256, "
                                    "k 7168: 11.9 -> 29.9 us, few output tiles each walking all of k); a split at "
                                    "m <= 64-128 saves only 1.7% of training p90 (under the 2% regime penalty)",
    ("sglang", "h200", "gemm_fp8_block"): "8.2/25.0%: DeepGEMM rows with m*n of about 3-4.2 M outputs run 2-3x the "
                                          "smooth curve and above the next larger m (16384x16384 at m 256: 326 us, "
                                          "m 512: 208 us), on H100 too",
    ("sglang", "h100-sxm", "moe_bf16"): "22/62%: SGLang on H100 runs Mixtral at MoE TP 1 at 0.2 of peak (as its EP "
                                        "rows: default tiles), TP 2-8 at 0.55, and TP 1 on H200 at 0.57; TP 1 and 8 "
                                        "fit, TP 2 and 4 are held out, so TP 8 alone (27 rows) is left to fit ep = 1",
}
#: (engine, kind, impl, gpus): worst held-out all-reduce size, within 16 KB-256 MB.
KNOWN_ALLREDUCE_MISSES = {
    ("sglang", "h100-sxm", "custom", 2): "26% at 16 MB (custom -> NCCL switch between 16 and 32 MB, in the gap "
                                         "between the training sizes 8 and 32 MB: no training row places it; the "
                                         "16 MB rows of H100/H200 lie on the custom line, A100's well above it)",
    ("sglang", "h200", "custom", 2): "25% at 16 MB",
    ("sglang", "h200", "custom", 8): "17% at 256 KB (the 512 KB training size, 14.9 us, is slower than 1 MB, "
                                     "13.1 us: one-shot past its best size pulls the first regime), 16% at 16 MB",
}


@lru_cache(maxsize=None)
def shipped(engine: str) -> dict[str, km.KernelProfile]:
    return km.load_kernel_profiles(PROFILES / f"{engine}.yaml")


@lru_cache(maxsize=None)
def heldout(system: str, engine: str):
    return kf.heldout_rows(DATA, system, engine)


#: How far a refit's latencies may drift from the shipped profile's, per class over all of
#: its rows (fitted and held out): median / p90 of |refit / shipped - 1|. The fits are
#: least squares from fixed starts; a new NumPy or SciPy moves a flat direction of some
#: fits (a half-saturation count at its bound, 368 tokens or 1e6, pricing rows alike to
#: 0.5%), so the shipped profile is compared by what it predicts, not digit by digit.
DRIFT_MEDIAN, DRIFT_P90 = 0.005, 0.02


def _structure(got, want, where: str, bad: list[str]) -> None:
    """Same keys, list lengths and non-float values (regimes, notes, names) as shipped."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            bad.append(f"{where}: keys {sorted(map(str, got))} != {sorted(map(str, want))}")
            return
        for k in want:
            _structure(got[k], want[k], f"{where}.{k}", bad)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            bad.append(f"{where}: {got!r} != {want!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            _structure(g, w, f"{where}[{i}]", bad)
    elif isinstance(want, float) and not isinstance(want, bool):
        if not isinstance(got, (int, float)) or not math.isfinite(float(got)):
            bad.append(f"{where}: refit {got!r}, shipped {want!r}")
    elif got != want:
        bad.append(f"{where}: refit {got!r} != shipped {want!r}")


def _drift(engine: str, refit: dict[str, km.KernelProfile], bad: list[str]) -> None:
    """Classes whose refit latencies drift from the shipped profile's past DRIFT_*."""
    ship = shipped(engine)
    for system, kind in kd.SYSTEMS.items():
        for cls, ds in kf.all_rows(DATA, system, engine).items():
            d = np.abs(kf.predict_rows(refit[kind], cls, ds) / kf.predict_rows(ship[kind], cls, ds) - 1)
            med, p90 = float(np.median(d)), float(np.percentile(d, 90))
            if not (med <= DRIFT_MEDIAN and p90 <= DRIFT_P90):
                bad.append(f"{engine}/{kind} {cls}: refit latencies {med:.2%} / {p90:.2%} "
                           f"(median / p90) from the shipped profile's ({len(d)} rows)")


def _is_the_refit(engine: str, refit: dict[str, km.KernelProfile]) -> list[str]:
    ship = shipped(engine)
    assert list(ship) == list(kd.SYSTEMS.values()) == list(refit)
    bad: list[str] = []
    for kind, p in refit.items():
        _structure(p.model_dump(), ship[kind].model_dump(), f"{engine}/{kind}", bad)
    if not bad:
        _drift(engine, refit, bad)
    return bad


@pytest.mark.parametrize("engine", kd.ENGINES)
def test_shipped_yaml_is_the_refit(engine):
    profiles, _ = kf.fit_engine_report(DATA, engine)
    bad = _is_the_refit(engine, profiles)
    assert not bad, "\n".join(bad[:20])
    header = (PROFILES / f"{engine}.yaml").read_text(encoding="utf-8")
    assert kp.REFIT_COMMAND.format(engine=engine) in header and "NVIDIA CORPORATION & AFFILIATES" in header


def test_peaks_are_autoplans_datasheet_figures():
    kinds = yaml.safe_load((ROOT / "hardware" / "device_kinds.yaml").read_text(encoding="utf-8"))["device_kinds"]
    for kind, (p16, p8, bw) in kd.PEAKS.items():
        d = kinds[kind]
        fp8 = d["peak_flops_per_s"].get("fp8")
        assert float(d["peak_flops_per_s"]["bf16"]) == p16, kind
        assert (None if fp8 is None else float(fp8)) == p8, kind
        assert float(d["memory_tiers"][0]["bandwidth_bytes_per_s"]) == bw, kind


def test_data_copy_keeps_attribution():
    text = (DATA / "SOURCE.md").read_text(encoding="utf-8")
    for line in kd.ATTRIBUTION.splitlines():
        assert line in text.replace("> ", "")
    assert (DATA / "LICENSE-Apache-2.0.txt").is_file()
    assert "copy of the project's shared data" in text


def _errors(engine: str, kind: str) -> dict[str, np.ndarray]:
    p = shipped(engine)[kind]
    out = {}
    for cls, ds in heldout(TARGET_KINDS[kind], engine).items():
        if cls.startswith("allreduce_") or not len(ds.t):
            continue
        out[cls] = np.abs(kf.predict_rows(p, cls, ds) / ds.t - 1.0)
    return out


@pytest.mark.parametrize("kind", sorted(TARGET_KINDS))
@pytest.mark.parametrize("engine", kd.ENGINES)
def test_heldout_accuracy_target(engine, kind):
    """Median |error| <= 8% and p90 <= 20% per operator class on held-out rows, priced
    with the shipped YAML through the public functions."""
    errs = _errors(engine, kind)
    assert {"gemm_bf16", "decode_attention_bf16", "prefill_attention_bf16", "elementwise"} <= set(errs)
    misses, fixed = [], []
    for cls, e in sorted(errs.items()):
        med, p90 = float(np.median(e)), float(np.percentile(e, 90))
        ok = med <= MEDIAN_MAX and p90 <= P90_MAX
        known = (engine, kind, cls) in KNOWN_MISSES
        if not ok and not known:
            misses.append(f"{cls}: {med:.1%}/{p90:.1%} over {len(e)} rows")
        if ok and known:
            fixed.append(f"{cls}: now {med:.1%}/{p90:.1%}; drop it from KNOWN_MISSES")
    assert not misses and not fixed, "\n".join(misses + fixed)


@pytest.mark.parametrize("kind", sorted(TARGET_KINDS))
@pytest.mark.parametrize("engine", kd.ENGINES)
def test_allreduce_heldout_within_15_percent(engine, kind):
    """Custom (the engine's graph-captured call) and NCCL all-reduce, 2/4/8 GPUs, held-out
    sizes from 16 KB to 256 MB."""
    p = shipped(engine)[kind]
    rows = heldout(TARGET_KINDS[kind], engine)
    bad, fixed = [], []
    for impl in ("custom", "nccl"):
        ds = rows[f"allreduce_{impl}"]
        assert set(ds.f["gpus"].astype(int)) == {2, 4, 8}
        for g in (2, 4, 8):
            m = ds.f["gpus"] == g
            assert m.sum() >= 4
            e = np.abs(kc.allreduce_time_s(p, impl, g, ds.f["bytes"][m]) / ds.t[m] - 1.0)
            known = (engine, kind, impl, g) in KNOWN_ALLREDUCE_MISSES
            if e.max() > ALLREDUCE_MAX and not known:
                bad.append(f"{impl} {g} GPUs: {e.max():.1%} at {int(ds.f['bytes'][m][e.argmax()])} B")
            if known:
                assert e.max() <= 0.30, (impl, g, e.max())
                if e.max() <= ALLREDUCE_MAX:
                    fixed.append(f"{impl} {g} GPUs: now {e.max():.1%}; drop it from KNOWN_ALLREDUCE_MISSES")
    assert not bad and not fixed, "\n".join(bad + fixed)


# ---------------------------------------------------------------- physics


def _all_profiles():
    for engine in kd.ENGINES:
        for kind, p in shipped(engine).items():
            yield engine, kind, p


def test_decode_attention_grows_with_kv_bytes_and_never_beats_hbm():
    ctx = np.array([1, 16, 256, 1024, 4096, 16384, 65536, 131072], dtype=float)
    for engine, kind, p in _all_profiles():
        _, _, bw = kd.PEAKS[kind]
        for kvd in p.decode_attention:
            for batch in (1, 8, 64, 512):
                for heads in (1, 8):
                    t = kc.decode_attention_time_s(p, bw, batch, ctx, heads, 128, kvd)
                    kv_bytes = batch * ctx * heads * 128 * 2 * km.KV_BYTES[kvd]
                    assert np.all(t >= kv_bytes / bw), (engine, kind, kvd, batch, heads)
                    assert np.all(np.diff(t) >= 0), (engine, kind, kvd, batch, heads)
            more = kc.decode_attention_time_s(p, bw, np.array([1, 2, 8, 64, 512]), 4096, 8, 128, kvd)
            assert np.all(np.diff(more) >= 0), (engine, kind, kvd)


def test_gemm_never_beats_the_roofline_at_peak():
    m = np.array([1, 4, 16, 64, 256, 1024, 4096, 16384], dtype=float)
    shapes = [(32, 4096), (1024, 1024), (4096, 4096), (8192, 8192), (28672, 8192), (65536, 16384)]
    for engine, kind, p in _all_profiles():
        p16, p8, bw = kd.PEAKS[kind]
        for dtype in p.gemm:
            peak = p16 if dtype == "bf16" else p8
            wb = km.WEIGHT_BYTES[dtype]
            for n, k in shapes:
                t = kc.gemm_time_s(p, peak, bw, m, n, k, dtype)
                roof = np.maximum(2 * m * n * k / peak, n * k * wb / bw)
                assert np.all(t >= roof), (engine, kind, dtype, n, k)
                assert np.all(np.diff(t) >= 0), (engine, kind, dtype, n, k)


def test_other_classes_respect_peaks():
    for engine, kind, p in _all_profiles():
        p16, p8, bw = kd.PEAKS[kind]
        s = np.array([16, 256, 4096, 16384], dtype=float)
        for dtype in p.prefill_attention:
            peak = p8 if dtype == "fp8" else p16
            t = kc.prefill_attention_time_s(p, peak, 1, s, 32, 128, dtype)
            assert np.all(t >= kc.prefill_flops(1, s, 32) / peak) and np.all(np.diff(t) > 0), (engine, kind)
        for dtype in p.moe:
            peak = p16 if dtype == "bf16" else p8
            tok = np.array([1, 16, 256, 4096], dtype=float)
            t = kc.moe_time_s(p, peak, bw, tok, 4096, 14336, 2, 8, 1, 1, dtype)
            fl, wbytes, *_ = kc.moe_shape(tok, 4096, 14336, 2, 8, 1, 1, km.WEIGHT_BYTES[dtype])
            assert np.all(t >= np.maximum(fl / peak, wbytes / bw)), (engine, kind, dtype)
        if p.elementwise is not None:  # beyond any L2 the bytes come from DRAM
            rows = np.array([1, 64, 1024, 16384, 65536])
            t = kc.elementwise_time_s(p, bw, rows, 8192, 4.0)
            assert np.all(np.diff(t) > 0), (engine, kind)
            assert t[-1] >= rows[-1] * 8192 * 4.0 / bw, (engine, kind)
        for impl, ar in p.allreduce.items():
            for g in ar.regimes:
                mb = np.geomspace(1024, 2**30, 21)
                t = kc.allreduce_time_s(p, impl, g, mb)
                assert np.all(t > 0) and np.all(np.isfinite(t)), (engine, kind, impl, g)


def test_pricing_function_contract():
    p = shipped("trtllm")["h100-sxm"]
    t = kc.gemm_time_s(p, 989.4e12, 3.35e12, 1, 8192, 8192)
    assert isinstance(t, float) and 30e-6 < t < 80e-6  # 134 MB of weights at ~0.8 of 3.35 TB/s
    assert kc.allreduce_time_s(p, "custom", 1, 1 << 20) == 0.0
    with pytest.raises(InputError, match="not fitted at 3 GPUs"):
        kc.allreduce_time_s(p, "custom", 3, 1 << 20)
    with pytest.raises(InputError, match="no GEMM parameters for 'fp8'"):
        kc.gemm_time_s(shipped("vllm")["a100-sxm-80gb"], 312e12, 2.039e12, 1, 1024, 1024, "fp8")
    with pytest.raises(InputError, match="no element-wise parameters"):
        kc.elementwise_time_s(shipped("vllm")["a100-sxm-80gb"], 2.039e12, 1, 4096)


def test_calibrate_kernels_command_rewrites_the_shipped_profile(tmp_path):
    """The refit command in each profile's header, run as a user would, writes the
    shipped file: its header byte for byte, and the same profiles (structure exact,
    latencies within DRIFT_*; vLLM, the others are checked above)."""
    from autoplan.cli import main

    out = tmp_path / "vllm.yaml"
    assert main(["calibrate", "--kernels", str(ROOT / "hardware/data/aic-kernels"),
                 "--engine", "vllm", "-o", str(out), "--json"]) == 0
    written, ship = out.read_text(), (PROFILES / "vllm.yaml").read_text()
    cut = "# Held-out |predicted/measured - 1|"  # the report's figures follow, as fitted
    assert cut in ship and written.split(cut)[0] == ship.split(cut)[0]
    bad = _is_the_refit("vllm", km.load_kernel_profiles(out))
    assert not bad, "\n".join(bad[:20])


def test_calibrate_kernels_refuses_a_fifo_table_without_hanging(tmp_path, capsys):
    """A kernel table that is a FIFO (or not a regular file) is one line, exit 2: the
    reader checks before it reads, so nothing blocks."""
    import os

    from autoplan.cli import main

    os.mkfifo(tmp_path / "gemm.csv.gz")
    assert main(["calibrate", "--kernels", str(tmp_path), "--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FIFO" in err


@pytest.mark.parametrize("engine", kd.ENGINES)
def test_moe_expert_count_terms_only_where_the_rows_hold_two_counts(engine):
    """The MoE terms in the model's expert count (per model expert, per token x model
    expert) are identifiable only from rows of models with different expert counts. A
    class fitted on one model's rows (Mixtral's 8 experts alone) prices its per-token cost
    per token instead; else Qwen3's 128 experts would take 16x a term no row measured.
    Where two counts are measured (Mixtral and DeepSeek-V3) both terms are fitted and the
    per-token term is not (one per-token term, not two). There the TP path's
    per-token-expert term fits under 0.1 ns on every Hopper and Blackwell class, with the
    same kernels as the one-model classes: the evidence that the one-model fits' 1-3 ns
    were per-token cost misread; SGLang 0.5.10's Triton MoE on A100 fits 2.5 ns. The EP
    path of vLLM and SGLang (fitted apart) keeps the terms: there the expert map walks
    every expert, and the two-count fits give it about 2 ns."""
    profiles = shipped(engine)
    for system, kind in kd.SYSTEMS.items():
        sets, _, _ = kf._class_sets(str(DATA), system, engine, [])
        p = profiles[kind]
        for cls, ds in sets.items():
            if not cls.startswith("moe_") or not len(ds.t):
                continue
            key = cls.removeprefix("moe_")
            counts = np.unique(ds.f["experts"])
            # the TP path (and engines that fit one set); the EP-path blocks of the engines
            # that fit it apart keep the expert-count terms (their expert map walks every
            # expert: about 2 ns per token and expert where two counts are measured)
            block = p.moe.get(key)
            if block is not None:
                if len(counts) == 1:
                    assert block.per_model_expert_s == block.per_token_expert_s == 0.0, (kind, cls)
                else:
                    assert block.per_token_s == 0.0, (kind, cls)
                    if kind in ("h100-sxm", "h200", "b200", "gb200"):
                        assert block.per_token_expert_s < 1e-10, (kind, cls)
            ep_block = p.moe_ep.get(key)
            if ep_block is not None:
                assert ep_block.per_token_s == 0.0, (kind, cls)


@pytest.mark.parametrize("system,engine,cls", [("a100_sxm", "sglang", "moe_bf16"),
                                               ("gb200", "vllm", "moe_fp8_block")])
def test_a_one_shape_moe_fit_prices_another_expert_shape(system, engine, cls):
    """A class with Mixtral-8x7B's rows alone (BF16 and per-tensor FP8 on Hopper and
    Blackwell) prices every other MoE model by extrapolation. Fitted as such a class is
    (per-expert and per-assignment costs held at 0) on Mixtral's rows, it prices
    DeepSeek-V3's measured rows (32x the experts, 1/7 the width) of the same kernel to a
    median 20% and p90 50%; with those costs free it misses by 29% / 202% and 85% / 361%."""
    e = kf.moe_shape_transfer(DATA, system, engine, cls, "Mixtral-8x7B")
    assert e is not None and len(e) >= 60
    assert np.median(e) <= 0.20 and np.percentile(e, 90) <= 0.50, (np.median(e), np.percentile(e, 90))
