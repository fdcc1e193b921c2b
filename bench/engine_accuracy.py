"""Accuracy of the engine-aware cost model (``--engine``), for ``bench/accuracy.py``.

(a) Kernel level: every engine's kernel profile refitted from ``hardware/data/aic-kernels``
    exactly as shipped, its median / p90 |error| per device kind and operator class on
    the kernel rows held out of the fit (every 3rd distinct shape of a class, never fitted).
(b) End to end: published TTFT / TPOT rows priced with the engine profile of their engine
    family (vllm-*, sglang-*, trtllm-*; NIM rows run TensorRT-LLM) on the smallest shipped
    system that holds their TP x PP: ``hardware/data/heldout-engines.csv`` (current
    engines, 2024-2026, held out: nothing is fitted to them), ``engines-e2e.csv`` (the
    rows the engines' host terms are fitted to: in sample) and the older rows of
    ``calibration.csv`` / ``heldout.csv`` (2023 engines, for comparison; the kernel
    profiles are not fitted to them either). Each row is priced with the shipped host
    terms of ``hardware/engines.yaml`` and without them (both 0: the kernel sums); the
    held-out rows are summarised per engine and method (``serving``: TTFT with the
    server's request handling; ``latency``: an offline benchmark, without) before and
    after. Error = predicted / measured - 1.
(d) Maximum-load throughput: ``trtllm-bench throughput`` rows of TensorRT-LLM's
    performance overview (``hardware/data/heldout-throughput.csv``, held out), priced by
    the planner's in-flight model at the batch the benchmark runs
    (``bench/max_throughput.py``).
(e) Maximum-load serving: vLLM 0.11 runs with every prompt sent at once
    (``hardware/data/heldout-serving-throughput.csv``, held out), simulated step by step at
    the batch vLLM's KV cache holds (``bench/serving_throughput.py``).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from autoplan.calibrate import host_fit
from autoplan.calibrate.host_fit import TERMS, engine_of, read_methods, serving_osl
from autoplan.calibrate.kernel_fit import fit_engine_report
from autoplan.calibrate.measurements import Measurement, read_measurements
from autoplan.catalog import ENGINES, catalog_root
from autoplan.errors import AutoplanError

DATA = catalog_root() / "hardware" / "data"
ZERO = dict.fromkeys(TERMS, 0.0)


def price(m: Measurement, engine: str, osl: int | None = None, method: str = "",
          terms: dict[str, float] | None = None) -> float:
    """The engine-aware model's figure (ms) for one published row
    (:func:`autoplan.calibrate.host_fit.price`; ``terms``: host terms instead of the
    shipped ones)."""
    return host_fit.price(m, engine, method, osl, terms)


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
    files = files or [DATA / "heldout-engines.csv", DATA / "engines-e2e.csv",
                      DATA / "calibration.csv", DATA / "heldout.csv"]
    out = ["### (b) End to end: published rows priced with their engine's profile", "",
           ("Predicted with the shipped host terms of `hardware/engines.yaml` (per-step host "
           "time, per-request server time in serving TTFT) and, in the `without` column, with "
           "both at 0 (the kernel sums alone). Rows of `engines-e2e.csv` fitted the host terms "
           "(in sample); every other row fits nothing here."), "",
           ("| id | engine | profile | method | model | device | tp | batch | isl | ctx | metric | "
           "measured ms | without ms | error | predicted ms | error | set |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[float]] = {}
    held: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for f in files:
        current = f.name in ("heldout-engines.csv", "engines-e2e.csv")
        methods = read_methods(f, required=current)
        rows = read_measurements(f)
        osls = serving_osl(rows, methods) if current else {}
        for m in rows:
            eng = engine_of(m.engine)
            if eng is None:
                continue
            method = methods.get(m.id, "")
            try:
                p = price(m, eng, osls.get(m.id), method)
                p0 = price(m, eng, osls.get(m.id), method, ZERO)
            except AutoplanError as e:
                out.append(f"| {m.id} | {m.engine} | {eng} | {method or '-'} | {m.model} | "
                           f"{m.device_kind} | {m.tp} | {m.batch} | {m.isl} | "
                           f"{m.context or ''} | {m.metric} | {m.value:g} | - | | - | "
                           f"not priced: {e} | {f.name} |")
                continue
            err, err0 = p / m.value - 1, p0 / m.value - 1
            if f.name == "engines-e2e.csv":
                era = "current, fitting set of the host terms (in sample)"
            elif not current:
                era = "2023 engines"
            elif method == "latency":
                era = "current, latency benchmark (like for like)"
            elif m.batch == 1:
                era = "current, serving at concurrency 1"
            else:
                era = "current, serving at concurrency > 1 (in-flight batching)"
            metric = m.metric.removesuffix("_ms")
            groups.setdefault((era, eng), []).append(err)
            groups.setdefault((era, f"{eng} {metric}"), []).append(err)
            if f.name == "heldout-engines.csv":
                for key in ((eng, method, "all"), (eng, method, metric), ("all", method, metric),
                            ("all", method, "all"), ("all", "all", "all")):
                    held.setdefault(key, []).append((err0, err))
            out.append(f"| {m.id} | {m.engine} | {eng} | {method or '-'} | "
                       f"{m.model.split('/')[-1]} | {m.device_kind} | {m.tp} | {m.batch} | "
                       f"{m.isl} | {m.context or ''} | {metric} | {m.value:g} | {p0:.4g} | "
                       f"{_pct(err0)} | {p:.4g} | {_pct(err)} | {f.name} |")
    out += ["", "| rows | engine | n | median \\|error\\| | p90 \\|error\\| | max \\|error\\| |",
            "|---|---|---|---|---|---|"]
    for (era, eng), errs in sorted(groups.items()):
        out.append(f"| {era} | {eng} | {_stats(errs)} |")
    for era in sorted({era for era, _ in groups if era.startswith("current")}):
        alle = [e for (g, eng), errs in groups.items() if g == era and " " not in eng
                for e in errs]
        out.append(f"| {era} | all | {_stats(alle)} |")
    out += ["", ("Held-out rows (`heldout-engines.csv`) by engine and method: |error| without "
            "the host terms (before) and with them (after)."), "",
            ("| engine | method | metric | n | before median | before p90 | before max | "
            "after median | after p90 | after max |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(held, key=lambda k: (k[0] == "all", k)):
        pairs = held[key]
        b = _stats([x for x, _ in pairs]).split(" | ")
        a = _stats([y for _, y in pairs]).split(" | ")
        out.append(f"| {' | '.join(key)} | {b[0]} | {' | '.join(b[1:])} | {' | '.join(a[1:])} |")
    return out


def report() -> str:
    import max_throughput
    import serving_throughput

    return "\n".join(kernel_table() + [""] + e2e_table() + [""] + max_throughput.table()
                     + [""] + serving_throughput.table())
