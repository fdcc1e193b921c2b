"""Cost-model accuracy against published measurements.

    python bench/accuracy.py [--profile NAME|PATH] [--heldout CSV]

Prints a markdown table of every row of ``hardware/data/calibration.csv`` (the rows the
shipped profile was fitted to) and ``hardware/data/heldout.csv`` (published rows never
used by any fit: other models, devices, engines and shapes), each with the prediction
of the shipped default profile (or ``--profile``) and its error, then the median and
max |error| of (1) the calibration rows in-sample, (2) the calibration rows
leave-one-out (each row predicted by a fit to the others of its device kind) and
(3) the held-out rows, all of them and the subsets with a model or a device kind that
no calibration row has. Error = predicted / measured - 1. Nothing is tuned on the
held-out rows. Throughput rows (tokens/s at a batch) are not in these files yet: the
CSV reader takes ``ttft_ms`` and ``tpot_ms`` only until a throughput model exists.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autoplan.calibration import (
    Measurement,
    default_data_path,
    predict,
    read_measurements,
    system_for,
)
from autoplan.catalog import catalog_root, load_profile, prior_path
from autoplan.fit import fit_all


def heldout_path() -> Path:
    return catalog_root() / "hardware" / "data" / "heldout.csv"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _stats(name: str, errs: list[float]) -> str:
    if not errs:
        return f"| {name} | 0 | | |"
    a = [abs(e) for e in errs]
    return f"| {name} | {len(a)} | {statistics.median(a):.1%} | {max(a):.1%} |"


def _split(m: Measurement) -> str:
    if m.tp:
        return f"{m.tp}" + (f"x{m.pp}" if m.pp and m.pp > 1 else "")
    _, tp, pp = system_for(m)
    return f"{tp}x{pp}*"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", help="profile name or YAML (default: the shipped default)")
    ap.add_argument("--calibration", default=str(default_data_path()))
    ap.add_argument("--heldout", default=str(heldout_path()))
    args = ap.parse_args(argv)

    cal_rows = read_measurements(args.calibration)
    held = read_measurements(args.heldout) if args.heldout else []
    profile = load_profile(args.profile) if args.profile else None
    fits = fit_all(cal_rows, load_profile(prior_path()), leave_one_out=True)
    loo = {r.id: r.leave_one_out for f in fits for r in f.rows}
    models = {m.model for m in cal_rows}
    kinds = {m.device_kind for m in cal_rows}

    print("| id | engine | model | device | tp | batch | isl | ctx | metric | measured | "
          "predicted | error | LOO error | set |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    in_sample, loo_errs, held_all, held_new, held_model, held_kind = [], [], [], [], [], []
    for i, m in enumerate(cal_rows + held):
        p = predict(m, profile)
        err = p / m.value - 1
        lerr = None
        if i < len(cal_rows):
            in_sample.append(err)
            if loo.get(m.id) is not None:
                lerr = loo[m.id] / m.value - 1
                loo_errs.append(lerr)
            tag = "calibration"
        else:
            new = [w for w, cond in (("new model", m.model not in models),
                                     ("new device", m.device_kind not in kinds)) if cond]
            held_all.append(err)
            if new:
                held_new.append(err)
            if "new model" in new:
                held_model.append(err)
            if "new device" in new:
                held_kind.append(err)
            tag = "held out" + (f" ({', '.join(new)})" if new else "")
        print(f"| {m.id} | {m.engine} | {m.model.split('/')[-1]} | {m.device_kind} | "
              f"{_split(m)} | {m.batch} | {m.isl or ''} | {m.context or ''} | "
              f"{m.metric.removesuffix('_ms')} | {m.value:g} | {p:.4g} | {_pct(err)} | "
              f"{_pct(lerr)} | {tag} |")
    print()
    print("| rows | n | median \\|error\\| | max \\|error\\| |")
    print("|---|---|---|---|")
    print(_stats("calibration, in-sample", in_sample))
    print(_stats("calibration, leave-one-out", loo_errs))
    print(_stats("held out, all", held_all))
    print(_stats("held out, new model or device", held_new))
    print(_stats("held out, new model", held_model))
    print(_stats("held out, new device kind", held_kind))
    print()
    print(f"profile: {args.profile or 'default (hardware/calibration.yaml)'}; "
          "* = split not published, autoplan's assumed TP x PP; "
          "throughput rows: none (throughput model pending)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
