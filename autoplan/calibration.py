"""Measurement rows (TTFT / TPOT) and the cost model's prediction for each.

The CSV format is the one of ``hardware/data/calibration.csv``: columns ``id, engine,
model, device_kind, tp, pp, weight_dtype, batch, isl, context, metric, value`` (extra
columns such as ``source`` and ``notes`` are ignored). ``metric`` is ``ttft_ms`` or
``tpot_ms``. Used by the accuracy test and benchmark, and by ``autoplan calibrate``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from autoplan.catalog import catalog_root, list_topologies, load_model, load_topology
from autoplan.cost import valid_tps
from autoplan.errors import InputError
from autoplan.estimate import estimate
from autoplan.topology import Calibration, Topology

REQUIRED = ("id", "engine", "model", "device_kind", "tp", "pp", "weight_dtype", "batch", "isl",
            "context", "metric", "value")


@dataclass(frozen=True)
class Measurement:
    id: str
    engine: str
    model: str
    device_kind: str
    tp: int | None
    pp: int | None
    weight_dtype: str
    batch: int
    isl: int | None
    context: int | None
    metric: str
    value: float


def default_data_path() -> Path:
    return catalog_root() / "hardware" / "data" / "calibration.csv"


def read_measurements(path: str | Path) -> list[Measurement]:
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{p.name}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as e:
        raise InputError(f"cannot read measurements {str(p)!r}: {e.__class__.__name__}") from None
    out = []
    for n, r in enumerate(rows, start=2):
        try:
            m = Measurement(
                id=r["id"] or f"row{n}", engine=r["engine"], model=r["model"],
                device_kind=r["device_kind"], tp=_int(r["tp"]), pp=_int(r["pp"]),
                weight_dtype=r["weight_dtype"] or "bf16", batch=_int(r["batch"]) or 1,
                isl=_int(r["isl"]), context=_int(r["context"]), metric=r["metric"],
                value=float(r["value"]),
            )
        except ValueError as e:
            raise InputError(f"{p.name} line {n}: {e}") from None
        if m.metric not in ("ttft_ms", "tpot_ms"):
            raise InputError(f"{p.name} line {n}: metric must be ttft_ms or tpot_ms")
        if m.metric == "ttft_ms" and not m.isl:
            raise InputError(f"{p.name} line {n}: a ttft_ms row needs isl")
        if m.metric == "tpot_ms" and not (m.context or m.isl):
            raise InputError(f"{p.name} line {n}: a tpot_ms row needs context or isl")
        if not m.value > 0:
            raise InputError(f"{p.name} line {n}: value must be positive")
        out.append(m)
    return out


def _int(s: str) -> int | None:
    s = (s or "").strip()
    return int(float(s)) if s else None


def system_for(m: Measurement, profile: dict[str, Calibration] | None = None,
               topology: str | None = None) -> tuple[Topology, int, int]:
    """The topology, TP and PP a measurement row ran on.

    With TP/PP given: the smallest shipped topology of that device kind that has the
    devices. Without (unpublished splits): the largest shipped system of that kind, the
    largest valid TP inside its fast domain, and as many stages as the devices allow.
    """
    cands = []
    for name in ([topology] if topology else list_topologies()):
        t = load_topology(name, profile)
        if m.device_kind in t.kind_names and len(t.kind_names) == 1:
            cands.append(t)
    if not cands:
        raise InputError(f"no topology has device kind {m.device_kind!r}")
    model = load_model(m.model)
    if m.tp:
        tp, pp = m.tp, m.pp or 1
        fit = [t for t in cands if len(t.devices) >= tp * pp and t.max_fast_domain(m.device_kind) >= tp]
        if not fit:
            raise InputError(f"no topology of {m.device_kind} has {tp * pp} devices")
        return min(fit, key=lambda t: (len(t.devices), t.name)), tp, pp
    topo = max(cands, key=lambda t: (len(t.devices), t.name))
    tp = max(valid_tps(model, topo.max_fast_domain(m.device_kind)))
    pp = min(len(topo.devices) // tp, model.num_layers)
    return topo, tp, pp


def predict(m: Measurement, profile: dict[str, Calibration] | None = None) -> float:
    """The cost model's figure (ms) for a measurement row."""
    return predict_on(m, *system_for(m, profile))


def predict_on(m: Measurement, topo: Topology, tp: int, pp: int) -> float:
    """The cost model's figure (ms) for a row on a given system."""
    kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") or m.device_kind == "lpu" else "bf16"
    if m.metric == "ttft_ms":
        est = estimate(m.model, topo, tp, pp, isl=m.isl, osl=1, batch=m.batch,
                       dtype=m.weight_dtype, kv_dtype=kv, max_memory_fraction=1.0)
        return est.ttft_ms
    ctx = m.context or m.isl
    est = estimate(m.model, topo, tp, pp, isl=m.isl or ctx, osl=1, batch=m.batch,
                   dtype=m.weight_dtype, kv_dtype=kv, decode_context=ctx,
                   max_memory_fraction=1.0)
    return est.tpot_ms
