"""Held-out reports of a kernel fit, per class and per device kind, and the rounding of
fitted values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


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

def _errors(pred: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.abs(pred / t - 1.0)
