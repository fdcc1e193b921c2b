"""Fit a device kind's calibration parameters to measured TTFT / TPOT rows.

Least squares on the log of predicted over measured (relative error, symmetric in over-
and under-prediction), each parameter inside physical bounds and pulled weakly toward
its prior value so that a handful of rows cannot drive a parameter to a bound it has no
evidence for. Rows of different device kinds do not share parameters, so each kind is
fitted on its own rows. Deterministic: a fixed start (the prior) and a deterministic
trust-region solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from autoplan.calibrate.measurements import Measurement, predict_on, systems_for
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.topology import Calibration

# Fitted parameters, their bounds and the scale used to normalise them.
BOUNDS: dict[str, tuple[float, float]] = {
    "compute_efficiency": (0.3, 0.95),
    "compute_half_tokens": (0.0, 1024.0),
    "low_precision_efficiency": (0.5, 1.0),
    "memory_efficiency": (0.5, 0.95),
    "kernel_overhead_s": (0.0, 60e-6),
    "collective_launch_s": (0.0, 100e-6),
}
PRIOR_WEIGHT = 0.05
# A solution this close to a bound (as a fraction of the bound's span) is put on the
# bound: the last digits of such a value are solver noise, not evidence, and would
# make the written profile depend on the platform's floating-point details.
SNAP = 1e-6


@dataclass
class RowFit:
    id: str
    measured: float
    before: float
    after: float
    leave_one_out: float | None = None


@dataclass
class KindFit:
    kind: str
    calibration: Calibration
    rows: list[RowFit]


def _vec(cal: Calibration) -> np.ndarray:
    return np.array([getattr(cal, k) for k in BOUNDS], dtype=float)


def _cal(base: Calibration, x: np.ndarray) -> Calibration:
    return base.model_copy(update=dict(zip(BOUNDS, (float(v) for v in x))))


def fit_kind(kind: str, rows: list[Measurement], prior: Calibration,
             systems: dict[str, tuple[Topology, int, int]]) -> Calibration:
    """Parameters for ``kind`` that best explain ``rows`` (all of that kind)."""
    lo = np.array([b[0] for b in BOUNDS.values()])
    hi = np.array([b[1] for b in BOUNDS.values()])
    span = hi - lo
    x0 = np.clip(_vec(prior), lo, hi)

    def residuals(z: np.ndarray) -> np.ndarray:
        x = lo + z * span
        cal = _cal(prior, x)
        r = [math.log(predict_on(m, *_with(systems[m.id], kind, cal)) / m.value) for m in rows]
        return np.concatenate([np.array(r), PRIOR_WEIGHT * (z - (x0 - lo) / span)])

    z0 = (x0 - lo) / span
    res = least_squares(residuals, z0, bounds=(0.0, 1.0), method="trf", x_scale=1.0,
                        diff_step=1e-3, max_nfev=200)
    z = np.where(res.x < SNAP, 0.0, np.where(res.x > 1.0 - SNAP, 1.0, res.x))
    return _cal(prior, lo + z * span)


def _with(system: tuple[Topology, int, int], kind: str,
          cal: Calibration) -> tuple[Topology, int, int]:
    topo, tp, pp = system
    return topo.with_calibration({kind: cal}), tp, pp


def prior_for(kind: str, priors: dict[str, Calibration], topo: Topology) -> Calibration:
    """The prior of ``kind``: its own, else that of the kind it is calibrated like."""
    if kind in priors:
        return priors[kind]
    like = topo.kinds[kind].calibrate_like
    if like in priors:
        return priors[like]
    raise InputError(f"the prior profile has no parameters for {kind}"
                     + (f" (nor for {like}, which it is calibrated like)" if like else ""))


def fit_all(rows: list[Measurement], priors: dict[str, Calibration],
            leave_one_out: bool = True, topology: str | Topology | None = None) -> list[KindFit]:
    """Fit every device kind present in ``rows``; optionally leave-one-out errors.

    ``topology`` prices the rows of its device kinds (see ``calibration.system_for``).
    """
    systems = systems_for(rows, topology)
    out = []
    for kind in sorted({m.device_kind for m in rows}):
        mine = [m for m in rows if m.device_kind == kind]
        prior = prior_for(kind, priors, systems[mine[0].id][0])
        fitted = fit_kind(kind, mine, prior, systems)
        fits = []
        for m in mine:
            before = predict_on(m, *_with(systems[m.id], kind, prior))
            after = predict_on(m, *_with(systems[m.id], kind, fitted))
            loo = None
            if leave_one_out and len(mine) > 1:
                rest = [r for r in mine if r.id != m.id]
                cal = fit_kind(kind, rest, prior, systems)
                loo = predict_on(m, *_with(systems[m.id], kind, cal))
            fits.append(RowFit(m.id, m.value, before, after, loo))
        out.append(KindFit(kind, fitted, fits))
    return out
