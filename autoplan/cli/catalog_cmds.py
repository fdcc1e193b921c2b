"""``autoplan calibrate``, ``models`` and ``topologies``: the commands about the catalog
and its calibration rather than one plan."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections import Counter

import typer

from autoplan.cli import options as O
from autoplan.cli.options import app

AUTO_LOO_ROWS = 24
"""Rows of one device kind up to which calibrate reports leave-one-out errors unasked
(each row is one more fit of its kind; 100 rows took over a minute here)."""

@app.command("calibrate")
def calibrate_cmd(
    measurements: str | None = typer.Argument(
        None, metavar="MEASUREMENTS.csv",
        help="CSV of measured TTFT/TPOT rows (columns: hardware/data/SOURCE.md)"),
    kernels: str | None = typer.Option(
        None, "--kernels", metavar="DIR", help="folder of measured kernel tables (hardware/data/aic-kernels): "
        "fit an engine's kernel profile for every device kind with data (needs --engine)"),
    out: str | None = typer.Option(None, "-o", "--out", metavar="FILE",
                                   help="write the fitted profile YAML"),
    topology: str | None = typer.Option(
        None, "--topology", metavar="NAME|PATH", help="topology (name or YAML) pricing the rows of its device "
        "kinds; other rows use the smallest shipped system that holds them"),
    prior: str | None = typer.Option(None, "--prior", metavar="NAME|PATH",
                                     help="prior profile (default: shipped)"),
    engine: str | None = typer.Option(
        None, "--engine", metavar="ENGINE", help="fit only rows of this engine; the profile records it"),
    leave_one_out: bool | None = typer.Option(
        None, "--loo/--no-loo", help="report leave-one-out error: one more fit per row "
        f"(default: when no device kind has more than {AUTO_LOO_ROWS} rows)"),
    host_terms: bool = typer.Option(
        False, "--host-terms", help="fit the engines' host terms (host_step_s, request_overhead_s "
        "of hardware/engines.yaml) to the current-engine rows of MEASUREMENTS.csv (a method "
        "column: serving / latency); --engine: that engine only"),
    as_json: bool = O.JSON,
) -> None:
    """Fit the cost model's calibration parameters to measurements; write a profile.

    Shipped profiles, taken by estimate and plan as --profile NAME: default
    (hardware/calibration.yaml, all rows of hardware/data/calibration.csv) and one per
    engine in hardware/profiles/ (trtllm-0.5, splitwise-sim, groq, gpt-fast), each
    refit by the command in its header.
    """
    if kernels is not None:
        _calibrate_kernels(kernels, engine, out, measurements, as_json)
        return
    if host_terms:
        _calibrate_host_terms(measurements, engine, out, as_json)
        return
    if measurements is None:
        from autoplan.errors import InputError

        raise InputError("calibrate needs a measurements CSV, or --kernels DIR --engine E")
    from autoplan.calibrate.fit import fit_all
    from autoplan.calibrate.measurements import read_measurements
    from autoplan.calibrate.profile_io import calibrate_command, profile_yaml
    from autoplan.catalog import load_profile, prior_path
    from autoplan.errors import InputError
    from autoplan.files import check_writable, write_atomic
    from autoplan.render.terminal import print_fit

    if out is not None:
        check_writable(out)  # before the fit ('' is an error)
    rows = read_measurements(measurements)
    if engine:
        rows = [r for r in rows if r.engine == engine]
        if not rows:
            raise InputError(f"no rows of engine {engine!r} in {measurements}")
    priors = load_profile(prior or prior_path())
    if leave_one_out is None:  # every row refits its kind: minutes for a few hundred rows
        most = max(Counter(r.device_kind for r in rows).values())
        leave_one_out = most <= AUTO_LOO_ROWS
        if not leave_one_out:
            print(f"autoplan: note: leave-one-out skipped: {most} rows of one device kind "
                  f"would take {most} more fits (--loo runs it)", file=sys.stderr)
    fits = fit_all(rows, priors, leave_one_out=leave_one_out, topology=topology)
    cals = {}
    for f in fits:
        ids = ", ".join(r.id for r in f.rows)
        cals[f.kind] = f.calibration.model_copy(update={"source": f"fitted to rows {ids}"})
    if out is not None:
        cmd = calibrate_command(measurements, out, engine=engine, topology=topology, prior=prior)
        write_atomic(out, profile_yaml(cals, measurements, cmd, engine=engine))
    if as_json:
        typer.echo(json.dumps([{"kind": f.kind, "calibration": f.calibration.model_dump(),
                                "rows": [r.__dict__ for r in f.rows]} for f in fits], indent=2))
    else:
        print_fit(fits)


def _calibrate_host_terms(measurements: str | None, engine: str | None, out: str | None,
                          as_json: bool) -> None:
    """``calibrate --host-terms``: each engine's host terms from its end-to-end rows
    (:mod:`autoplan.calibrate.host_fit`); printed (the shipped ones are kept in
    hardware/engines.yaml with their documentation), and with ``-o FILE`` written as a
    ``--host-terms`` file for estimate, plan and pareto (:mod:`autoplan.inputs.host_terms`)."""
    from autoplan.calibrate.host_fit import fit_host_terms
    from autoplan.calibrate.profile_io import calibrate_command, host_terms_yaml
    from autoplan.catalog import ENGINES, check_engine
    from autoplan.errors import InputError
    from autoplan.files import check_writable, write_atomic
    from autoplan.inputs.host_terms import HostTerms

    if measurements is None:
        raise InputError("calibrate --host-terms needs a measurements CSV "
                         "(hardware/data/engines-e2e.csv)")
    if out is not None:
        check_writable(out)  # before the fit ('' is an error)
    fits = [fit_host_terms(measurements, e) for e in ([check_engine(engine)] if engine
                                                      else ENGINES)]
    fits = [f for f in fits if f is not None]
    if not fits:
        raise InputError(f"no rows of {engine or 'vllm, sglang or trtllm'} in {measurements}")
    if out is not None:
        cmd = calibrate_command(measurements, out, engine=engine, host_terms=True)
        terms = {f.engine: HostTerms(host_step_s=f.host_step_s,
                                     request_overhead_s=f.request_overhead_s,
                                     fitted_to=f"rows {f.fitted_to} of {measurements}")
                 for f in fits}
        write_atomic(out, host_terms_yaml(terms, cmd))
    if as_json:
        typer.echo(json.dumps([{"engine": f.engine, "host_step_s": f.host_step_s,
                                "request_overhead_s": f.request_overhead_s,
                                "rows": [{"id": r.id, "metric": r.metric, "method": r.method,
                                          "measured_ms": r.measured, "without_ms": r.base,
                                          "fitted_ms": r.fitted} for r in f.rows]}
                               for f in fits], indent=2))
        return
    for f in fits:
        typer.echo(f"{f.engine}: host_step_s {f.host_step_s:.4g}  request_overhead_s "
                   f"{f.request_overhead_s:.4g}  (rows {f.fitted_to})")
        for r in f.rows:
            typer.echo(f"  {r.id:<6} {r.method:<8} {r.metric:<8} measured {r.measured:9.3f} ms  "
                       f"without {r.base:9.3f} ({r.base / r.measured - 1:+.1%})  fitted "
                       f"{r.fitted:9.3f} ({r.fitted / r.measured - 1:+.1%})")


def _calibrate_kernels(data_dir: str, engine: str | None, out: str | None,
                       measurements: str | None, as_json: bool) -> None:
    """``calibrate --kernels``: an engine's kernel profile from measured kernel rows alone,
    with the median / p90 error per operator class on fitted and held-out rows."""
    from autoplan.calibrate.kernel_fit import fit_engine_report
    from autoplan.calibrate.kernel_profiles import profile_yaml
    from autoplan.catalog import check_engine
    from autoplan.errors import InputError
    from autoplan.files import check_writable, write_atomic
    from autoplan.inputs.reading import os_reason, show, what_is
    from autoplan.render.terminal import print_kernel_fit

    if measurements is not None:
        raise InputError("calibrate --kernels takes no measurements CSV (the kernel rows are "
                         "the data)")
    if engine is None:
        raise InputError("calibrate --kernels needs --engine (vllm, sglang or trtllm)")
    check_engine(engine)
    try:
        mode = os.stat(data_dir).st_mode
        why = (None if stat.S_ISDIR(mode) else "it is a file" if stat.S_ISREG(mode)
               else f"it is {what_is(mode)}")
    except OSError as e:
        why = os_reason(e)
    except ValueError:
        why = "the name has a NUL character"
    if why is not None:
        raise InputError(f"--kernels {show(data_dir)}: {why}; give the folder of kernel "
                         f"tables (hardware/data/aic-kernels)")
    if out:
        check_writable(out)
    profiles, reports = fit_engine_report(data_dir, engine)
    # the device kinds with data: a kind whose tables hold no row of this engine is not
    # written as an empty profile (it would price nothing and claim to)
    reports = {k: r for k, r in reports.items() if r.classes}
    profiles = {k: p for k, p in profiles.items() if k in reports}
    if not reports:
        raise InputError(f"--kernels {show(data_dir)}: no kernel row of engine {engine} to "
                         f"fit (the tables hold no row whose framework is {engine})")
    if out:
        write_atomic(out, profile_yaml(profiles, reports, engine))
    if as_json:
        typer.echo(json.dumps({kind: {c: {"fit_rows": cr.n_fit, "fit_median": cr.median_fit,
                                          "fit_p90": cr.p90_fit, "heldout_rows": cr.n_held,
                                          "heldout_median": cr.median_held,
                                          "heldout_p90": cr.p90_held}
                                      for c, cr in sorted(r.classes.items())}
                               for kind, r in reports.items()}, indent=2))
    else:
        print_kernel_fit(engine, reports)


@app.command("models")
def models_cmd(as_json: bool = O.JSON) -> None:
    """List the shipped models."""
    from autoplan.catalog import list_models, load_model
    from autoplan.graphs.model_graph import parameter_count

    rows = []
    for name in list_models():
        m = load_model(name)
        rows.append({"id": name, "family": m.family, "layers": m.num_layers,
                     "parameters_b": round(parameter_count(m) / 1e9, 2),
                     "moe": m.moe is not None, "mla": m.mla is not None,
                     "weights": m.checkpoint.dtype or m.checkpoint.quant_method,
                     "fp8_block_scaled": m.checkpoint.fp8_block_scaled})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        extra = ", ".join(x for x in ("MoE" if r["moe"] else "", "MLA" if r["mla"] else "") if x)
        weights = f"{r['weights']}{' (block)' if r['fp8_block_scaled'] else ''}"
        typer.echo(f"{r['id']:<34} {r['family']:<10} {r['layers']:>4} layers "
                   f"{r['parameters_b']:>8.2f}B {weights:<12} {extra}".rstrip())


@app.command("topologies")
def topologies_cmd(
    as_json: bool = O.JSON,
    show: str | None = typer.Option(None, "--show", metavar="NAME|PATH",
                                    help="print the YAML of this topology (a shipped name or "
                                         "a file)"),
    nodes: int | None = typer.Option(None, "--nodes", metavar="N",
                                     help="with --show: copies of a single-node topology"),
    network: str | None = typer.Option(None, "--network", metavar="NAME",
                                       help="with --show --nodes: the network joining them"),
) -> None:
    """List the shipped topologies, or print one's YAML (--show NAME [--nodes N])."""
    from autoplan.catalog import cluster_spec, list_topologies, load_topology, topology_spec

    if show is not None:
        import yaml

        spec = topology_spec(show)
        if nodes is not None or network is not None:
            spec = cluster_spec(spec, 1 if nodes is None else nodes, network)
        typer.echo(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True),
                                  sort_keys=False), nl=False)
        return
    if nodes is not None or network is not None:
        from autoplan.errors import InputError

        raise InputError("--nodes and --network go with --show NAME")

    rows = []
    for name in list_topologies():
        t = load_topology(name)
        kinds = {k: len(t.devices_of_kind(k)) for k in t.kind_names}
        rows.append({"name": name, "devices": kinds,
                     "fast_domain": {k: t.max_fast_domain(k) for k in t.kind_names},
                     "description": t.spec.description})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        devs = " + ".join(f"{n}x {k}" for k, n in r["devices"].items())
        typer.echo(f"{r['name']:<18} {devs:<28} {r['description']}")
