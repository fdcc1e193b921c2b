"""The engines' host terms, fitted to end-to-end rows of current engines.

Two named parameters per engine (``hardware/engines.yaml``), the only ones of the
engine-aware model fitted to end-to-end rows (the kernel costs come from measured
kernels, ``hardware/profiles/<engine>.yaml``):

- ``host_step_s``: host time of every forward pass (scheduler, sampling, CUDA-graph
  launch), added to the pass's kernel time (:func:`autoplan.cost.pipeline.stage_cost`);
- ``request_overhead_s``: the server's handling of one request before its first token
  streams back (HTTP, chat template, tokenisation, admission, detokenisation), added to
  the TTFT of serving measurements only (``method`` ``serving``; an offline latency
  benchmark such as ``trtllm-bench latency`` has none): :data:`autoplan.cost.roofline.REQUEST`.

Rows: a measurement CSV with a ``method`` column (``serving`` or ``latency``), the engine
family in ``engine`` (``vllm-0.21`` is vLLM). A serving row at concurrency > 1 is priced
as a colocated server under in-flight batching at batch = concurrency
(:mod:`autoplan.cost.inflight`), its output length from its mean decode context
(``context = isl + osl / 2``); every other row as one pass of its shape. Both terms enter
every prediction additively, so each row's prediction is ``base + a * host_step_s + b *
request_overhead_s`` exactly; the fit is least squares on ``log(predicted / measured)``
within physical bounds, deterministic (a fixed start at 0, a trust-region solver). An
engine without rows of a kind keeps 0 for the term they would fit (``b = 0`` for every
row leaves ``request_overhead_s`` at its start).

``autoplan calibrate ROWS.csv --host-terms`` prints the fit (``-o FILE``: a deployment's own
terms for ``--host-terms FILE``, :mod:`autoplan.inputs.host_terms`); ``tests/test_engines.py``
reruns it and compares with the shipped ``hardware/engines.yaml``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from autoplan.calibrate.measurements import Measurement, read_measurements, system_for
from autoplan.catalog import ENGINES, catalog_root, engine_facts, load_model, load_topology
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.host_terms import HostTerms
from autoplan.inputs.reading import read_text

TERMS = ("host_step_s", "request_overhead_s")
BOUNDS = {"host_step_s": (0.0, 5e-3), "request_overhead_s": (0.0, 0.2)}
_STEP = 1e-3  # the finite step that measures each term's coefficient (exact: additive)


def data_path() -> Path:
    """The fitting set of the host terms (current engines' end-to-end rows)."""
    return catalog_root() / "hardware" / "data" / "engines-e2e.csv"


def engine_of(row_engine: str) -> str | None:
    """The engine of a row's engine name (``vllm-0.21`` -> vllm; NIM runs TensorRT-LLM;
    None: not an engine autoplan prices)."""
    e = row_engine.lower()
    for name in ENGINES:
        if e.startswith(name):
            return name
    return "trtllm" if e.startswith("nim") else None


def read_methods(path: str | Path, required: bool = True) -> dict[str, str]:
    """The ``method`` column of a measurement CSV (``serving`` / ``latency``) by row id.
    A CSV without the column is an error when ``required`` (fitting host terms needs it),
    else every row's method is empty (the older rows, which state none)."""
    text = read_text(Path(path), "measurements")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if "method" not in (reader.fieldnames or []):
        if not required:
            return {}
        raise InputError(f"{Path(path).name}: no method column (serving or latency per row), "
                         "which --host-terms needs")
    return {r.get("id", ""): (r.get("method") or "") for r in reader}


def serving_osl(rows: list[Measurement], methods: dict[str, str]) -> dict[str, int]:
    """Output length of each serving row at concurrency > 1, from the mean decode context
    of its run's TPOT row (``context = isl + osl / 2``; a TTFT row takes its pair's)."""
    def key(r: Measurement) -> tuple:
        return (r.engine, r.model, r.device_kind, r.tp, r.weight_dtype, r.batch, r.isl)

    ctx = {key(r): r.context for r in rows if r.metric == "tpot_ms" and r.context}
    out = {}
    for r in rows:
        c = ctx.get(key(r))
        if methods.get(r.id) == "serving" and r.batch > 1 and c and r.isl:
            out[r.id] = max(1, round(2 * (c - r.isl)))
    return out


def price(m: Measurement, engine: str, method: str, osl: int | None = None,
          terms: dict[str, float] | None = None) -> float:
    """The engine-aware model's figure (ms) for one published row: ``osl`` given, a
    serving row at concurrency > 1 as a colocated server under in-flight batching at
    batch = concurrency; else one pass of its shape, its TTFT with the server's request
    handling when ``method`` is ``serving``. ``terms`` override the engine's host terms."""
    topo0, tp, pp = system_for(m)
    topo = load_topology(topo0.name, None, engine, host_terms=None if terms is None else
                         HostTerms(**terms))
    kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") else "bf16"
    if osl is not None:
        return _serving(m, topo, tp, pp, osl, kv)
    from autoplan.cost.estimate import estimate

    ctx = m.context or m.isl
    est = estimate(m.model, topo, tp, pp, device_kind=m.device_kind, isl=m.isl or ctx,
                   osl=1, batch=m.batch, dtype=m.weight_dtype, kv_dtype=kv,
                   decode_context=None if m.metric == "ttft_ms" else ctx,
                   max_memory_fraction=1.0, serving=method == "serving")
    return est.ttft_ms if m.metric == "ttft_ms" else est.tpot_ms


def _serving(m: Measurement, topo: Topology, tp: int, pp: int, osl: int, kv: str) -> float:
    from autoplan.cost.estimate import place_even_pipeline
    from autoplan.cost.evaluate import evaluate
    from autoplan.inputs.workload import Precision, Workload

    model = load_model(m.model)
    stages = place_even_pipeline(model, topo, m.device_kind, tp, pp)
    work = Workload(m.isl, osl, m.batch, Precision(m.weight_dtype, "bf16", kv), 1.0)
    fig = evaluate(model, topo, work, "colocated", stages, stages)
    return fig.ttft_ms if m.metric == "ttft_ms" else fig.tpot_ms


@dataclass
class HostRow:
    id: str
    metric: str
    method: str
    measured: float
    base: float  # both terms 0
    coef: tuple[float, float]  # ms per second of each term
    fitted: float = 0.0

    def at(self, x: tuple[float, float]) -> float:
        return self.base + self.coef[0] * x[0] + self.coef[1] * x[1]


@dataclass
class HostFit:
    engine: str
    host_step_s: float
    request_overhead_s: float
    rows: list[HostRow] = field(default_factory=list)

    @property
    def fitted_to(self) -> str:
        return ", ".join(r.id for r in self.rows)


def host_rows(path: str | Path, engine: str) -> list[HostRow]:
    """Every row of ``engine``'s family in ``path``, with its prediction at zero host
    terms and each term's coefficient."""
    rows = read_measurements(path)
    methods = read_methods(path)
    osls = serving_osl(rows, methods)
    zero = dict.fromkeys(TERMS, 0.0)
    out = []
    for m in rows:
        if engine_of(m.engine) != engine:
            continue
        method = methods.get(m.id, "")
        if method not in ("serving", "latency"):
            raise InputError(f"row {m.id}: method must be serving or latency, got {method!r}")
        base = price(m, engine, method, osls.get(m.id), zero)
        coef = tuple((price(m, engine, method, osls.get(m.id), {**zero, t: _STEP}) - base) / _STEP
                     for t in TERMS)
        out.append(HostRow(m.id, m.metric, method, m.value, base, coef))  # type: ignore[arg-type]
    return out


def fit_host_terms(path: str | Path, engine: str) -> HostFit | None:
    """``engine``'s host terms fitted to its rows in ``path`` (None: it has none)."""
    rows = host_rows(path, engine)
    if not rows:
        return None
    lo = np.array([BOUNDS[t][0] for t in TERMS])
    hi = np.array([BOUNDS[t][1] for t in TERMS])

    def residuals(z: np.ndarray) -> np.ndarray:
        x = lo + z * (hi - lo)
        return np.array([math.log(r.at(tuple(x)) / r.measured) for r in rows])

    # A fixed interior start (the solver leaves a start on a bound in place) and the
    # exact Jacobian (each term's coefficient over the prediction).
    def jac(z: np.ndarray) -> np.ndarray:
        x = tuple(lo + z * (hi - lo))
        return np.array([[c * s / r.at(x) for c, s in zip(r.coef, hi - lo)] for r in rows])

    res = least_squares(residuals, np.full(len(TERMS), 0.01), jac=jac, bounds=(0.0, 1.0),
                        method="trf", x_scale=1.0, max_nfev=500)
    x = lo + np.where(res.x < 1e-9, 0.0, res.x) * (hi - lo)
    x = tuple(float(f"{v:.4g}") for v in x)
    for r in rows:
        r.fitted = r.at(x)  # type: ignore[arg-type]
    return HostFit(engine, x[0], x[1], rows)


def shipped_terms(engine: str) -> dict[str, float]:
    f = engine_facts()[engine]
    return {t: getattr(f, t) for t in TERMS}
