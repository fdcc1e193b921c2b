"""Cost-model accuracy against published measurements, per serving engine.

    python bench/accuracy.py             # the engine-aware model (--engine): kernels, end to end
    python bench/accuracy.py --roofline [--profile NAME|PATH] [--heldout CSV]

Without ``--roofline``: ``bench/engine_accuracy.py`` (kernel-level held-out error per
device kind x engine x operator class, and end-to-end error on published rows by engine).
With ``--roofline``, the 2023 roofline calibration profiles:

Rows: the calibration rows of every shipped profile (``hardware/data/calibration.csv``
for the default profile, and for each per-engine profile in ``hardware/profiles/`` the
rows of its engine in the CSV named by the ``autoplan calibrate`` command in its header,
e.g. ``hardware/data/gpt-fast.csv``) and ``hardware/data/heldout.csv`` (published rows
never used by any fit). Each row is priced twice:

* with the default profile (``hardware/calibration.yaml``, or ``--profile``), and
* with the shipped profile of its engine (``hardware/profiles/<engine>.yaml``, fitted
  only to calibration rows of that engine) when one exists, else the default profile.

The summary gives the median and max |error| (error = predicted / measured - 1) of
(a) the calibration rows in-sample, (b) leave-one-out (each row predicted by a fit, with
the same command, to the other rows of its device kind), (c) the held-out rows priced
with the default profile and (d) the held-out rows priced with their engine's profile,
each split into rows with a model / a device kind that the profile's own fitted rows do
not have, and into TTFT and TPOT. It then lists the held-out rows whose profile changed.
Nothing is tuned on the held-out rows. Throughput rows (tokens/s at a batch) are not in
these files yet: the CSV reader takes ``ttft_ms`` and ``tpot_ms`` only until a
throughput model exists.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from autoplan.calibrate.fit import fit_all
from autoplan.calibrate.measurements import (
    Measurement,
    default_data_path,
    predict,
    read_measurements,
    system_for,
)
from autoplan.catalog import (
    catalog_root,
    list_profiles,
    load_profile,
    prior_path,
    profile_engine,
    profile_path,
)
from autoplan.inputs.topology import Calibration

DEFAULT = "default"


def heldout_path() -> Path:
    return catalog_root() / "hardware" / "data" / "heldout.csv"


@dataclass
class Profile:
    """A shipped profile and the rows it was fitted to (from its header command)."""
    name: str
    engine: str | None
    cals: dict[str, Calibration]
    rows: list[Measurement]
    loo: dict[str, float | None] = field(default_factory=dict)

    @property
    def models(self) -> set[str]:
        return {m.model for m in self.rows}

    @property
    def kinds(self) -> set[str]:
        return {m.device_kind for m in self.rows}


def refit_args(name: str) -> dict[str, str | None]:
    """The data CSV and options of the ``autoplan calibrate`` command in a shipped
    profile's header (paths relative to the catalog root)."""
    text = profile_path(name).read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("#   autoplan calibrate"))
    argv = shlex.split(line.lstrip("# "))[2:]
    out: dict[str, str | None] = {"data": None, "--engine": None, "--topology": None,
                                  "--prior": None}
    i = 0
    while i < len(argv):
        if argv[i] in out:
            out[argv[i]] = argv[i + 1]
            i += 2
        elif argv[i] in ("-o", "--out"):
            i += 2
        else:
            out["data"] = argv[i]
            i += 1
    return out


def load_shipped(name: str) -> Profile:
    """A shipped profile with its fitted rows and their leave-one-out predictions."""
    a = refit_args(name)
    rows = read_measurements(catalog_root() / a["data"])
    if a["--engine"]:
        rows = [m for m in rows if m.engine == a["--engine"]]
    prior = load_profile(catalog_root() / a["--prior"] if a["--prior"] else prior_path())
    topo = str(catalog_root() / a["--topology"]) if a["--topology"] and "/" in a["--topology"] \
        else a["--topology"]
    fits = fit_all(rows, prior, leave_one_out=True, topology=topo)
    p = Profile(name, profile_engine(name), load_profile(name), rows)
    p.loo = {r.id: r.leave_one_out for f in fits for r in f.rows}
    return p


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


def _new(m: Measurement, p: Profile) -> list[str]:
    """What is new about row ``m`` to profile ``p`` (its model, its device kind)."""
    return [w for w, cond in (("new model", m.model not in p.models),
                              ("new device", m.device_kind not in p.kinds)) if cond]


def _held_stats(label: str, rows: list[tuple[Measurement, float, list[str]]]) -> list[str]:
    sel = {
        "all": lambda m, n: True,
        "new model or device": lambda m, n: bool(n),
        "new model": lambda m, n: "new model" in n,
        "new device kind": lambda m, n: "new device" in n,
        "TTFT": lambda m, n: m.metric == "ttft_ms",
        "TPOT": lambda m, n: m.metric == "tpot_ms",
        "TPOT, new model or device": lambda m, n: m.metric == "tpot_ms" and bool(n),
    }
    for engine in sorted({m.engine for m, _, _ in rows}):
        sel[f"engine {engine}"] = lambda m, n, engine=engine: m.engine == engine
    return [_stats(f"{label}, {k}", [e for m, e, n in rows if f(m, n)]) for k, f in sel.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", help="profile name or YAML for the default-profile columns "
                    "(default: the shipped default)")
    ap.add_argument("--heldout", default=str(heldout_path()))
    ap.add_argument("--roofline", action="store_true", help="report the 2023 roofline "
                    "calibration profiles instead of the engine-aware model")
    args = ap.parse_args(argv)
    if not args.roofline:
        import engine_accuracy

        print(engine_accuracy.report())
        return 0

    profiles = {name: load_shipped(name) for name in list_profiles()}
    default = profiles[DEFAULT]
    data = refit_args(DEFAULT)["data"]
    assert data and (catalog_root() / data).resolve() == default_data_path().resolve()
    base = load_profile(args.profile) if args.profile else None  # None: shipped default
    by_engine = {p.engine: p for p in profiles.values() if p.engine}

    def engine_profile(m: Measurement) -> Profile:
        return by_engine.get(m.engine, default)

    # calibration rows: those of the default profile, then those only an engine's
    # profile was fitted to (e.g. hardware/data/gpt-fast.csv)
    cal_rows = list(default.rows)
    seen = {m.id for m in cal_rows}
    for p in profiles.values():
        cal_rows += [m for m in p.rows if m.id not in seen]
        seen |= {m.id for m in p.rows}
    held = read_measurements(args.heldout) if args.heldout else []
    assert not {m.id for m in held} & seen, "a held-out row id is also a calibration row"

    print("| id | engine | model | device | tp | batch | isl | ctx | metric | measured | "
          "default: predicted | error | LOO | profile | predicted | error | LOO | set |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    in_def, in_eng, loo_def, loo_eng = [], [], [], []
    held_def, held_eng, changed = [], [], []
    for i, m in enumerate(cal_rows + held):
        calibration = i < len(cal_rows)
        ep = engine_profile(m)
        pd = predict(m, base)
        pe = pd if ep is default and base is None else predict(m, ep.cals)
        ed, ee = pd / m.value - 1, pe / m.value - 1
        ld = le = None
        if calibration:
            if m.id in {r.id for r in default.rows}:
                in_def.append(ed)
                if default.loo.get(m.id) is not None:
                    ld = default.loo[m.id] / m.value - 1
                    loo_def.append(ld)
            if m.id in {r.id for r in ep.rows}:
                in_eng.append(ee)
                if ep.loo.get(m.id) is not None:
                    le = ep.loo[m.id] / m.value - 1
                    loo_eng.append(le)
            fitted = [p.name for p in profiles.values() if m.id in {r.id for r in p.rows}]
            tag = "calibration (" + ", ".join(fitted) + ")"
        else:
            nd, ne = _new(m, default), _new(m, ep)
            held_def.append((m, ed, nd))
            held_eng.append((m, ee, ne))
            if ep is not default:
                changed.append((m, ep.name, ed, ee, ne))
            tag = "held out" + (f" ({', '.join(ne)})" if ne else "")
        print(f"| {m.id} | {m.engine} | {m.model.split('/')[-1]} | {m.device_kind} | "
              f"{_split(m)} | {m.batch} | {m.isl or ''} | {m.context or ''} | "
              f"{m.metric.removesuffix('_ms')} | {m.value:g} | {pd:.4g} | {_pct(ed)} | "
              f"{_pct(ld)} | {ep.name} | {pe:.4g} | {_pct(ee)} | {_pct(le)} | {tag} |")
    print()
    print("| rows | n | median \\|error\\| | max \\|error\\| |")
    print("|---|---|---|---|")
    print(_stats("(a) calibration, in-sample, default profile", in_def))
    print(_stats("(a) calibration, in-sample, engine profile", in_eng))
    print(_stats("(b) calibration, leave-one-out, default profile", loo_def))
    print(_stats("(b) calibration, leave-one-out, engine profile", loo_eng))
    for line in _held_stats("(c) held out, default profile", held_def):
        print(line)
    for line in _held_stats("(d) held out, engine profile", held_eng):
        print(line)
    print()
    print("Held-out rows priced with their engine's profile instead of the default "
          "(error default -> engine profile; new = not among that profile's fitted rows):")
    print()
    for name in sorted({c[1] for c in changed}):
        mine = [c for c in changed if c[1] == name]
        print(f"- {name} ({len(mine)} rows, fitted to "
              f"{', '.join(m.id for m in profiles[name].rows)}): "
              + ", ".join(f"{m.id} {_pct(ed)} -> {_pct(ee)}" + (f" ({', '.join(n)})" if n else "")
                          for m, _, ed, ee, n in mine))
    kept = sorted({m.engine for m, _, _ in held_eng} - set(by_engine))
    print(f"- default (no shipped profile of engine {', '.join(kept)}): "
          + ", ".join(m.id for m, _, _ in held_eng if m.engine not in by_engine))
    print()
    print(f"default profile: {args.profile or 'hardware/calibration.yaml'}; engine profiles: "
          + ", ".join(f"{p.engine} (hardware/profiles/{p.name}.yaml)" for p in by_engine.values())
          + "; new model/device is judged against the rows that fitted the profile that "
          "priced the row; * = split not published, autoplan's assumed TP x PP; "
          "throughput rows: none (throughput model pending)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
