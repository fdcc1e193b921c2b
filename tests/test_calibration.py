"""Accuracy against the measurement table, and the shipped calibration is reproducible
from it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import statistics

import pytest
import yaml

from autoplan.calibrate.fit import BOUNDS, KindFit, RowFit
from autoplan.calibrate.measurements import (
    default_data_path,
    predict,
    read_measurements,
    systems_for,
)
from autoplan.catalog import (
    catalog_root,
    default_calibrations,
    list_profiles,
    load_profile,
    profile_engine,
    profile_path,
)
from autoplan.cli import main
from autoplan.errors import InputError
from autoplan.inputs.topology import Calibration

DATA = "hardware/data/calibration.csv"  # relative to the catalog root, as in the headers
GPT_FAST = "hardware/data/gpt-fast.csv"


def _header_command(name: str) -> list[str]:
    """The ``autoplan calibrate`` arguments in a shipped profile's header, without -o."""
    text = profile_path(name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.startswith("#   autoplan calibrate")]
    assert len(lines) == 1, name
    argv = shlex.split(lines[0].lstrip("# "))[2:]
    i = argv.index("-o")
    return argv[:i] + argv[i + 2:]


def _fitted_rows(name: str):
    """The rows a shipped profile was fitted to: its header's CSV, its engine only."""
    argv = _header_command(name)
    rows = read_measurements(catalog_root() / argv[0])
    engine = profile_engine(name)
    return [r for r in rows if r.engine == engine] if engine else rows


@pytest.fixture(scope="module")
def rows():
    return read_measurements(default_data_path())


@pytest.fixture(scope="module")
def errors(rows):
    out = {}
    for r in rows:
        p = predict(r)
        out[r.id] = p / r.value - 1
        print(f"{r.id:>6} {r.model:<28} {r.device_kind:<14} {r.metric:<8} measured "
              f"{r.value:>8.2f} predicted {p:>8.2f} error {out[r.id]:+.1%}")
    return out


def test_table_is_read(rows):
    assert len(rows) >= 10
    assert len({r.id for r in rows}) == len(rows)
    assert {r.metric for r in rows} == {"ttft_ms", "tpot_ms"}


def test_median_error_within_15_percent(errors):
    abs_err = sorted(abs(e) for e in errors.values())
    med = statistics.median(abs_err)
    print(f"median |error| {med:.1%}, max {max(abs_err):.1%} over {len(abs_err)} rows")
    assert med <= 0.15


def test_every_row_within_factor_two(errors):
    # A calibrated model should not be off by 2x on any row it was fitted to.
    bad = {k: e for k, e in errors.items() if not 0.5 <= 1 + e <= 2.0}
    assert not bad


def _calibrate(args: list[str]) -> tuple[int, str]:
    """``autoplan calibrate ARGS`` in-process, from the catalog root: (exit code, stdout)."""
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(catalog_root())
    try:
        with contextlib.redirect_stdout(out):
            code = main(["calibrate", *args])
    finally:
        os.chdir(cwd)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def refits(tmp_path_factory):
    """Every shipped profile refit from its shipped data by the command in its header
    (leave-one-out off: it only adds to the report): {name: (yaml text, fits)}."""
    tmp = tmp_path_factory.mktemp("profiles")
    out = {}
    for name in list_profiles():
        dest = tmp / f"{name}.yaml"
        code, text = _calibrate([*_header_command(name), "--no-loo", "--json", "-o", str(dest)])
        assert code == 0, name
        fits = [KindFit(f["kind"], Calibration.model_validate(f["calibration"]),
                        [RowFit(**r) for r in f["rows"]]) for f in json.loads(text)]
        out[name] = (dest.read_text(encoding="utf-8"), fits)
    return out


@pytest.fixture(scope="module")
def refit(refits):
    return refits["default"][1]


def _one_digit_apart(got: float, want: float) -> bool:
    """Equal to the 4 significant digits the profile writes, allowing one step in the
    last digit (a rounding boundary crossed by another platform's floating point)."""
    if got == want:
        return True
    if want == 0 or got == 0:
        return False
    step = 10.0 ** (math.floor(math.log10(abs(want))) - 3)
    return abs(got - want) <= step * 1.000001


def test_shipped_profiles_are_listed():
    names = list_profiles()
    assert names[0] == "default"
    assert {"trtllm-0.5", "splitwise-sim", "groq", "gpt-fast"} <= set(names)
    assert _header_command("default") == [DATA]
    assert _header_command("gpt-fast") == [GPT_FAST, "--engine", "gpt-fast"]
    for name in names[1:]:
        # each per-engine profile records its engine and fits exactly that engine's kinds
        engine = profile_engine(name)
        assert engine == name
        assert _header_command(name)[1:3] == ["--engine", engine]
        rows = _fitted_rows(name)
        assert rows and all(r.engine == engine for r in rows)
        assert set(load_profile(name)) == {r.device_kind for r in rows}
    assert profile_engine("default") is None


@pytest.mark.parametrize("name", ["default", "trtllm-0.5", "splitwise-sim", "groq", "gpt-fast"])
def test_refit_reproduces_shipped_profile(refits, name):
    shipped_text = profile_path(name).read_text(encoding="utf-8")
    shipped, got = yaml.safe_load(shipped_text), yaml.safe_load(refits[name][0])
    # same header command (the output path aside) and the same keys
    cmd = [ln for ln in shipped_text.splitlines() if ln.startswith("#   autoplan calibrate")]
    got_cmd = [ln for ln in refits[name][0].splitlines() if ln.startswith("#   autoplan")]
    assert len(cmd) == 1 and len(got_cmd) == 1
    assert got_cmd[0].rsplit(" -o ", 1)[0] == cmd[0].rsplit(" -o ", 1)[0]
    assert {k: v for k, v in got.items() if k != "device_kinds"} == \
        {k: v for k, v in shipped.items() if k != "device_kinds"}
    assert set(got["device_kinds"]) == set(shipped["device_kinds"])
    bad = []
    for kind, params in shipped["device_kinds"].items():
        for key, want in params.items():
            value = got["device_kinds"][kind][key]
            if key == "source":
                ok = value == want
            else:
                ok = _one_digit_apart(float(value), float(want))
            print(f"{name:<14} {kind:<14} {key:<26} refit {value} shipped {want}")
            if not ok:
                bad.append((kind, key, value, want))
    assert not bad


def test_packaged_data_is_the_shared_table():
    # `autoplan calibrate ../shared/data/calibration.csv` must fit what the packaged copy
    # fits: compare when the project's shared folder is there (not in a clean clone).
    packaged = default_data_path().read_bytes()
    shared = catalog_root().parent / "shared" / "data" / "calibration.csv"
    if shared.is_file():
        assert shared.read_bytes().splitlines()[1:] == packaged.splitlines()[1:]
        assert shared.read_bytes().splitlines()[0] == packaged.splitlines()[0]
    assert len(packaged.splitlines()) == len(read_measurements(default_data_path())) + 1


def test_refit_is_no_worse_than_prior(refits):
    # The fit minimises squared log error plus a pull that is zero at the prior, so its
    # squared log error cannot exceed the prior's.
    for name, (_, fits) in refits.items():
        for f in fits:
            before = sum(math.log(r.before / r.measured) ** 2 for r in f.rows)
            after = sum(math.log(r.after / r.measured) ** 2 for r in f.rows)
            print(f"{name} {f.kind}: sum log^2 error prior {before:.4f} fitted {after:.4f}")
            assert after <= before + 1e-9


def test_fitted_parameters_within_bounds(refits):
    for name, (_, fits) in refits.items():
        for f in fits:
            for key, (lo, hi) in BOUNDS.items():
                assert lo - 1e-12 <= getattr(f.calibration, key) <= hi + 1e-12, (name, f.kind, key)


def test_gpt_fast_profile_leave_one_out():
    # The gpt-fast profile is fitted to 4 rows (one model, TP 1..8 on A100): every row
    # gets a leave-one-out error (a fit to the other three), reported by the command.
    code, text = _calibrate([*_header_command("gpt-fast"), "--json"])
    assert code == 0
    fits = json.loads(text)
    assert [f["kind"] for f in fits] == ["a100-sxm-80gb"]
    rows = fits[0]["rows"]
    assert [r["id"] for r in rows] == ["g01", "g02", "g03", "g04"]
    for r in rows:
        loo = r["leave_one_out"] / r["measured"] - 1
        print(f"{r['id']}: after {r['after'] / r['measured'] - 1:+.1%} leave-one-out {loo:+.1%}")
        assert abs(loo) <= 0.15, r["id"]
    # the fit stays inside the bounds and is pulled toward the prior: the parameters the
    # rows do not inform (compute, at batch 1 decode) stay at the prior's values
    cal = fits[0]["calibration"]
    prior = load_profile(catalog_root() / "hardware" / "prior.yaml")["a100-sxm-80gb"]
    assert cal["compute_efficiency"] == pytest.approx(prior.compute_efficiency, rel=1e-3)
    assert cal["compute_half_tokens"] == pytest.approx(prior.compute_half_tokens, rel=1e-3)


def test_read_measurements_ignores_extra_columns(tmp_path):
    rows = read_measurements(default_data_path())
    with default_data_path().open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    cols = ["measured_by", *reversed(list(table[0])), "gpu_clock_mhz"]
    p = tmp_path / "extra.csv"
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in table:
            w.writerow({**r, "measured_by": "someone", "gpu_clock_mhz": "1980"})
    assert read_measurements(p) == rows
    q = tmp_path / "missing.csv"
    q.write_text("id,engine,model\nx,e,m\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        read_measurements(q)


def test_heldout_table_is_separate_and_sourced():
    cal = read_measurements(default_data_path())
    held_path = catalog_root() / "hardware" / "data" / "heldout.csv"
    held = read_measurements(held_path)
    assert 10 <= len(held) <= 30
    assert len({m.id for m in held}) == len(held)
    assert not {m.id for m in held} & {m.id for m in cal}
    with held_path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            assert r["source"].startswith("https://") and r["notes"], r["id"]
    # every held-out row is priced (its model, kind and split exist in the catalog)
    assert all(predict(m) > 0 for m in held)


def test_engine_data_is_split_by_model_from_heldout():
    # hardware/data/gpt-fast.csv holds the gpt-fast Llama-2-7B rows (fitted by the
    # gpt-fast profile only); every other gpt-fast row is held out, so the held-out
    # gpt-fast rows are of models that profile was not fitted to, and no measurement is
    # in both tables.
    path = catalog_root() / GPT_FAST
    cal = read_measurements(path)
    held = read_measurements(catalog_root() / "hardware" / "data" / "heldout.csv")
    shared = read_measurements(default_data_path())
    assert [m.id for m in cal] == ["g01", "g02", "g03", "g04"]
    assert {m.engine for m in cal} == {"gpt-fast"}
    assert {m.model for m in cal} == {"meta-llama/Llama-2-7b-hf"}
    assert sorted(m.tp for m in cal) == [1, 2, 4, 8]
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            assert r["source"].startswith("https://") and r["notes"], r["id"]
    ids = [m.id for m in cal + held + shared]
    assert len(ids) == len(set(ids))

    def key(m):
        return (m.engine, m.model, m.device_kind, m.tp, m.metric, m.isl, m.context, m.value)

    assert not {key(m) for m in cal} & {key(m) for m in held + shared}
    held_gf = [m for m in held if m.engine == "gpt-fast"]
    assert held_gf and not {m.model for m in held_gf} & {m.model for m in cal}


def test_topology_option_prices_rows_of_its_kinds():
    rows = read_measurements(default_data_path())
    trt = [r for r in rows if r.engine == "trtllm-0.5"]
    systems = systems_for(trt, "h100-sxm-x8")
    assert systems["c39"][0].name == "h100-sxm-x8"            # TP1 row on the named system
    assert systems["c41"][0].name == "h100-sxm-x8"
    assert "a100-sxm-80gb" in systems["c43"][0].kind_names    # other kinds: shipped systems
    with pytest.raises(InputError, match="cannot hold row c41"):
        systems_for(trt, "h100-sxm-x1")                        # TP4 row on one GPU


def test_calibrate_topology_without_the_rows_kinds_exits_2(capsys):
    code, _ = _calibrate([DATA, "--engine", "groq", "--topology", "h100-sxm-x8", "--no-loo"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("autoplan: error: topology 'h100-sxm-x8'") and "lpu" in err
    assert "\n" not in err


def test_profile_by_name_or_path(tmp_path):
    assert load_profile("default") == default_calibrations()
    trt = load_profile("trtllm-0.5")
    assert load_profile(profile_path("trtllm-0.5")) == trt
    assert set(trt) == {"h100-sxm", "a100-sxm-80gb"}
    with pytest.raises(InputError, match="unknown profile 'nope'.*trtllm-0.5"):
        load_profile("nope")
    with pytest.raises(InputError, match="does not exist"):
        load_profile(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: [1]\ndevice_kinds: {}\n", encoding="utf-8")
    with pytest.raises(InputError, match="engine"):
        load_profile(bad)
    # estimate takes a shipped profile name
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--topology",
                     "h100-sxm-x1", "--isl", "2048", "--osl", "2", "--dtype", "fp8",
                     "--profile", "trtllm-0.5", "--json"])
    assert code == 0
    assert json.loads(out.getvalue())["ttft_ms"] > 0


def test_written_profile_is_readable_by_others(tmp_path):
    # written through a temporary file and a rename, but with a plain file's mode
    from autoplan.files import write_atomic

    p = tmp_path / "p.yaml"
    write_atomic(p, "profile: x\n")
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
