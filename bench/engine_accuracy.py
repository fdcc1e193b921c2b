"""Accuracy of the engine-aware cost model (``--engine``), for ``bench/accuracy.py``.

(a) Kernel level: every engine's kernel profile refitted from ``hardware/data/aic-kernels``
    exactly as shipped, its median / p90 |error| per device kind and operator class on
    the kernel rows held out of the fit (every 3rd distinct shape of a class, never fitted).
(b) End to end: published TTFT / TPOT rows priced with the engine profile of their engine
    family (vllm-*, sglang-*, trtllm-*; NIM rows run TensorRT-LLM) on the smallest shipped
    system that holds their TP x PP: ``hardware/data/heldout-engines.csv`` (current
    engines, 2024-2026, held out: nothing is fitted to them) and the older rows of
    ``calibration.csv`` / ``heldout.csv`` (2023 engines, for comparison; the kernel
    profiles are not fitted to them either). Error = predicted / measured - 1.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from autoplan.calibrate.kernel_fit import fit_engine_report
from autoplan.calibrate.measurements import Measurement, read_measurements, system_for
from autoplan.catalog import ENGINES, catalog_root
from autoplan.cost.estimate import estimate
from autoplan.errors import AutoplanError

DATA = catalog_root() / "hardware" / "data"


def engine_of(row_engine: str) -> str | None:
    """The engine profile of a row's engine name (None: no profile of that family)."""
    e = row_engine.lower()
    for name in ENGINES:
        if e.startswith(name):
            return name
    return "trtllm" if e.startswith("nim") else None


def price(m: Measurement, engine: str, osl: int | None = None) -> float:
    """The engine-aware model's figure (ms) for one published row. ``osl``: a serving
    row at concurrency > 1, priced as a colocated server under in-flight batching at
    batch = concurrency (``autoplan.cost.inflight``); else one pass of its shape."""
    topo, tp, pp = system_for(m)
    if osl is not None:
        return _serving(m, engine, topo.name, tp, pp, osl)
    kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") else "bf16"
    ctx = m.context or m.isl
    est = estimate(m.model, topo.name, tp, pp, device_kind=m.device_kind, isl=m.isl or ctx,
                   osl=1, batch=m.batch, dtype=m.weight_dtype, kv_dtype=kv,
                   decode_context=None if m.metric == "ttft_ms" else ctx,
                   max_memory_fraction=1.0, engine=engine)
    return est.ttft_ms if m.metric == "ttft_ms" else est.tpot_ms


def _serving(m: Measurement, engine: str, topo_name: str, tp: int, pp: int, osl: int) -> float:
    from autoplan.catalog import load_model, load_topology
    from autoplan.cost.estimate import place_even_pipeline
    from autoplan.cost.evaluate import evaluate
    from autoplan.inputs.workload import Precision, Workload

    model = load_model(m.model)
    topo = load_topology(topo_name, None, engine)
    kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") else "bf16"
    stages = place_even_pipeline(model, topo, m.device_kind, tp, pp)
    work = Workload(m.isl, osl, m.batch, Precision(m.weight_dtype, "bf16", kv), 1.0)
    fig = evaluate(model, topo, work, "colocated", stages, stages)
    return fig.ttft_ms if m.metric == "ttft_ms" else fig.tpot_ms


def serving_osl(rows: list[Measurement], methods: dict[str, str]) -> dict[str, int]:
    """Output length of each serving row at concurrency > 1, from its published mean
    decode context (``context = isl + osl / 2``, the TPOT row of the same run; a TTFT
    row takes its pair's)."""
    ctx = {(r.engine, r.model, r.device_kind, r.tp, r.weight_dtype, r.batch, r.isl): r.context
           for r in rows if r.metric == "tpot_ms" and r.context}
    out = {}
    for r in rows:
        c = ctx.get((r.engine, r.model, r.device_kind, r.tp, r.weight_dtype, r.batch, r.isl))
        if methods.get(r.id) == "serving" and r.batch > 1 and c and r.isl:
            out[r.id] = max(1, round(2 * (c - r.isl)))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _stats(errs: list[float]) -> str:
    if not errs:
        return "- | - | - | -"
    a = sorted(abs(e) for e in errs)
    p90 = a[min(len(a) - 1, math.ceil(0.9 * len(a)) - 1)]
    return (f"{len(a)} | {statistics.median(a) * 100:.1f}% | {p90 * 100:.1f}% | "
            f"{a[-1] * 100:.1f}%")


def kernel_table() -> list[str]:
    out = ["### (a) Kernel level: held-out kernel rows, median / p90 |error|", "",
           "| engine | device kind | " + " | ".join(["class", "held-out rows",
                                                    "median", "p90"]) + " |",
           "|---|---|---|---|---|---|"]
    for engine in ENGINES:
        _, reports = fit_engine_report(DATA / "aic-kernels", engine)
        for kind, r in reports.items():
            for c, cr in sorted(r.classes.items()):
                out.append(f"| {engine} | {kind} | {c} | {cr.n_held} | "
                           f"{cr.median_held * 100:.1f}% | {cr.p90_held * 100:.1f}% |")
    return out


def e2e_table(files: list[Path] | None = None) -> list[str]:
    files = files or [DATA / "heldout-engines.csv", DATA / "calibration.csv",
                      DATA / "heldout.csv"]
    out = ["### (b) End to end: published rows priced with their engine's profile", "",
           "| id | engine | profile | model | device | tp | batch | isl | ctx | metric | "
           "measured ms | predicted ms | error | set |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[float]] = {}
    for f in files:
        current = f.name == "heldout-engines.csv"
        methods = _methods(f)
        rows = read_measurements(f)
        osls = serving_osl(rows, methods) if current else {}
        for m in rows:
            eng = engine_of(m.engine)
            if eng is None:
                continue
            try:
                p = price(m, eng, osls.get(m.id))
            except AutoplanError as e:
                out.append(f"| {m.id} | {m.engine} | {eng} | {m.model} | {m.device_kind} | "
                           f"{m.tp} | {m.batch} | {m.isl} | {m.context or ''} | {m.metric} | "
                           f"{m.value:g} | - | not priced: {e} | {f.name} |")
                continue
            err = p / m.value - 1
            if not current:
                era = "2023 engines"
            elif methods.get(m.id) == "latency":
                era = "current, latency benchmark (like for like)"
            elif m.batch == 1:
                era = "current, serving at concurrency 1"
            else:
                era = "current, serving at concurrency > 1 (in-flight batching)"
            groups.setdefault((era, eng), []).append(err)
            groups.setdefault((era, f"{eng} {m.metric.removesuffix('_ms')}"), []).append(err)
            out.append(f"| {m.id} | {m.engine} | {eng} | {m.model.split('/')[-1]} | "
                       f"{m.device_kind} | {m.tp} | {m.batch} | {m.isl} | {m.context or ''} | "
                       f"{m.metric.removesuffix('_ms')} | {m.value:g} | {p:.4g} | {_pct(err)} "
                       f"| {f.name} |")
    out += ["", "| rows | engine | n | median \\|error\\| | p90 \\|error\\| | max \\|error\\| |",
            "|---|---|---|---|---|---|"]
    for (era, eng), errs in sorted(groups.items()):
        out.append(f"| {era} | {eng} | {_stats(errs)} |")
    for era in sorted({era for era, _ in groups if era.startswith("current")}):
        alle = [e for (g, eng), errs in groups.items() if g == era and " " not in eng
                for e in errs]
        out.append(f"| {era} | all | {_stats(alle)} |")
    return out


def _methods(path: Path) -> dict[str, str]:
    """The ``method`` column of a measurement CSV (latency / serving), by row id."""
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        return {r.get("id", ""): r.get("method", "") for r in csv.DictReader(fh)}


def report() -> str:
    return "\n".join(kernel_table() + [""] + e2e_table())
