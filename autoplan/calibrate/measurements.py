"""Measurement rows (TTFT / TPOT) and the cost model's prediction for each.

The CSV format is documented in ``hardware/data/SOURCE.md``: columns ``id, engine,
model, device_kind, tp, pp, weight_dtype, batch, isl, context, metric, value`` found by
name in any order (all must be in the header; extra columns such as ``source`` and
``notes`` are ignored). ``metric`` is ``ttft_ms`` or ``tpot_ms``, ``value`` in ms.
Used by the accuracy test and benchmark, and by ``autoplan calibrate``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from autoplan.catalog import catalog_root, list_topologies, load_model, load_topology
from autoplan.cost.estimate import estimate
from autoplan.cost.roofline import valid_tps
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.names import MAX_NAME_BYTES, MAX_PATH_BYTES, check_name
from autoplan.inputs.reading import read_text
from autoplan.inputs.topology import MAX_DEVICES, Calibration
from autoplan.inputs.workload import MAX_BATCH, MAX_TOKENS

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
    # a regular file of bounded size, UTF-8 with or without Excel's byte-order mark
    text = read_text(p, "measurements")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{p.name}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise InputError(f"{p.name}: not a readable CSV file: {e}") from None
    if not rows:
        raise InputError(f"{p.name}: no measurement rows, only the header")
    out, seen = [], {}
    for n, r in enumerate(rows, start=2):
        if any(r[c] is None for c in REQUIRED):
            raise InputError(f"{p.name} line {n}: the row has fewer fields than the header")
        if None in r:  # an unquoted comma shifts the fields after it
            raise InputError(f"{p.name} line {n}: the row has more fields than the header "
                             "(quote a field that holds a comma)")
        for col in ("id", "engine", "model", "device_kind", "weight_dtype", "metric"):
            if r[col]:  # printed in tables and written into profiles' comments
                try:
                    check_name(r[col], MAX_PATH_BYTES if col == "model" else MAX_NAME_BYTES)
                except ValueError as e:
                    raise InputError(f"{p.name} line {n}: {col} {e}") from None
        try:
            m = Measurement(
                id=r["id"] or f"row{n}", engine=r["engine"], model=r["model"],
                device_kind=r["device_kind"], tp=_int(r["tp"], "tp", MAX_DEVICES),
                pp=_int(r["pp"], "pp", MAX_DEVICES),
                weight_dtype=r["weight_dtype"] or "bf16",
                batch=_int(r["batch"], "batch", MAX_BATCH) or 1,
                isl=_int(r["isl"], "isl", MAX_TOKENS),
                context=_int(r["context"], "context", MAX_TOKENS), metric=r["metric"],
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
        if not (m.value > 0 and math.isfinite(m.value)):
            raise InputError(f"{p.name} line {n}: value must be a positive, finite number")
        if m.id in seen:  # rows are priced and fitted by id
            raise InputError(f"{p.name} line {n}: id {m.id[:40]!r} repeats line {seen[m.id]}")
        seen[m.id] = n
        out.append(m)
    return out


def _int(s: str, column: str, most: int) -> int | None:
    """A positive whole number of at most ``most`` (``2`` or ``2.0``; not ``2.5``, which
    would silently round), or None for an empty cell."""
    s = (s or "").strip()
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{column} must be a whole number, got {s[:40]!r}") from None
    if not math.isfinite(v) or not v.is_integer() or v < 1:
        raise ValueError(f"{column} must be a positive whole number, got {s[:40]!r}")
    if v > most:
        raise ValueError(f"{column} must be at most {most}, got {s[:40]!r}")
    return int(v)


def system_for(m: Measurement, profile: dict[str, Calibration] | None = None,
               topology: str | Topology | None = None) -> tuple[Topology, int, int]:
    """The topology, TP and PP a measurement row ran on.

    ``topology`` (a name, a YAML path or a loaded topology), when it has the row's
    device kind, is the system: it must hold the row's TP x PP devices of that kind.
    Otherwise, with TP/PP given: the smallest shipped single-kind topology of that
    device kind that has the devices. Without (unpublished splits): the largest such
    system, the largest valid TP inside its fast domain, and as many stages as the
    devices allow.
    """
    if topology is not None:
        t = topology if isinstance(topology, Topology) else load_topology(topology, profile)
        if m.device_kind in t.kind_names:
            return _split(m, [t], t.name)
    cands = [t for t in (_shipped() if profile is None else _load_shipped(profile))
             if m.device_kind in t.kind_names and len(t.kind_names) == 1]
    if not cands:
        raise InputError(f"no topology has device kind {m.device_kind!r}")
    return _split(m, cands, None)


@lru_cache(maxsize=1)
def _shipped() -> tuple[Topology, ...]:
    return _load_shipped(None)


def _load_shipped(profile: dict[str, Calibration] | None) -> tuple[Topology, ...]:
    return tuple(load_topology(name, profile) for name in list_topologies())


def _split(m: Measurement, cands: list[Topology], named: str | None) -> tuple[Topology, int, int]:
    kind = m.device_kind
    model = load_model(m.model)
    if m.tp:
        tp, pp = m.tp, m.pp or 1
        fit = [t for t in cands
               if len(t.devices_of_kind(kind)) >= tp * pp and t.max_fast_domain(kind) >= tp]
        if not fit:
            where = f"topology {named!r} cannot" if named else "no shipped topology can"
            raise InputError(f"{where} hold row {m.id} (TP {tp} x PP {pp} devices "
                             f"of {kind}, TP inside one fast domain)")
        return min(fit, key=lambda t: (len(t.devices), t.name)), tp, pp
    topo = max(cands, key=lambda t: (len(t.devices), t.name))
    tp = max(valid_tps(model, topo.max_fast_domain(kind)))
    pp = min(len(topo.devices_of_kind(kind)) // tp, model.num_layers)
    return topo, tp, pp


def systems_for(rows: list[Measurement],
                topology: str | Topology | None = None) -> dict[str, tuple[Topology, int, int]]:
    """``system_for`` of every row, by id. A ``topology`` that has none of the rows'
    device kinds is an input error (it would price nothing)."""
    topo = None
    if topology is not None:
        topo = topology if isinstance(topology, Topology) else load_topology(topology)
        kinds = sorted({m.device_kind for m in rows})
        if not set(kinds) & set(topo.kind_names):
            raise InputError(f"topology {topo.name!r} ({', '.join(topo.kind_names)}) has none "
                             f"of the rows' device kinds ({', '.join(kinds)})")
    return {m.id: system_for(m, topology=topo) for m in rows}


def predict(m: Measurement, profile: dict[str, Calibration] | None = None,
            topology: str | Topology | None = None) -> float:
    """The cost model's figure (ms) for a measurement row."""
    return predict_on(m, *system_for(m, profile, topology))


def predict_on(m: Measurement, topo: Topology, tp: int, pp: int) -> float:
    """The cost model's figure (ms) for a row on a given system (an error names the row:
    its isl and context are the --isl and --osl a message speaks of)."""
    try:
        return _predict_on(m, topo, tp, pp)
    except InputError as e:
        raise InputError(f"row {m.id!r} ({m.metric}, isl {m.isl}, context {m.context}): "
                         f"{e}") from None


def _predict_on(m: Measurement, topo: Topology, tp: int, pp: int) -> float:
    kv = m.weight_dtype if m.weight_dtype in ("bf16", "fp16") or m.device_kind == "lpu" else "bf16"
    if m.metric == "ttft_ms":
        est = estimate(m.model, topo, tp, pp, device_kind=m.device_kind, isl=m.isl, osl=1,
                       batch=m.batch, dtype=m.weight_dtype, kv_dtype=kv, max_memory_fraction=1.0)
        return est.ttft_ms
    ctx = m.context or m.isl
    est = estimate(m.model, topo, tp, pp, device_kind=m.device_kind, isl=m.isl or ctx, osl=1,
                   batch=m.batch, dtype=m.weight_dtype, kv_dtype=kv, decode_context=ctx,
                   max_memory_fraction=1.0)
    return est.tpot_ms
