"""The ``autoplan`` command line. It parses flags, calls the API and renders; no logic.

Errors: bad input prints one line and exits 2; an infeasible request exits 3. No
traceback reaches the user, and files are written only when the command succeeds.
"""

from __future__ import annotations

import errno
import json
import os
import sys

import typer

from autoplan.errors import AutoplanError, Interrupted

try:  # typer >= 0.24 vendors click as typer._click
    from typer._click import exceptions as _click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as _click_exc


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Plan how to split an LLM across devices, and predict its latency.",
)


@app.command("estimate")
def estimate_cmd(
    model: str = typer.Option(..., "--model", help="HF id of a shipped model or a config.json path"),
    topology: str = typer.Option(..., "--topology", help="shipped topology name or YAML path"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel degree"),
    pp: int = typer.Option(1, "--pp", help="pipeline-parallel degree"),
    device_kind: str | None = typer.Option(None, "--device-kind",
                                              help="device kind, when the topology has several"),
    isl: int = typer.Option(2048, "--isl", help="input (prompt) tokens per request"),
    osl: int = typer.Option(128, "--osl", help="output tokens per request"),
    batch: int = typer.Option(1, "--batch", help="requests run together"),
    dtype: str = typer.Option("bf16", "--dtype", help="weights and GEMM format: bf16 fp16 fp8 int8 int4"),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV-cache format"),
    max_memory_fraction: float = typer.Option(0.9, "--max-memory-fraction",
                                              help="usable fraction of device memory"),
    nodes: int | None = typer.Option(None, "--nodes", help="copies of a single-node topology joined by a network (e.g. --topology h200-x8 --nodes 2)"),
    network: str | None = typer.Option(None, "--network", help="network joining --nodes (hardware/networks.yaml; default: the node's NIC)"),
    engine: str = typer.Option("vllm", "--engine", help="serving engine whose measured kernels price the figures: vllm, sglang, trtllm, or none (the 2023 roofline calibration)"),
    profile: str | None = typer.Option(None, "--profile", help="calibration profile YAML"),
    breakdown: bool = typer.Option(False, "--breakdown", help="per-operator times"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Predict TTFT, TPOT, end-to-end latency and memory of one configuration."""
    from autoplan.catalog import load_profile
    from autoplan.cost.estimate import estimate
    from autoplan.render.terminal import print_estimate

    est = estimate(
        model, topology, tp, pp, device_kind=device_kind, isl=isl, osl=osl, batch=batch,
        dtype=dtype, kv_dtype=kv_dtype, max_memory_fraction=max_memory_fraction,
        breakdown=breakdown, profile=load_profile(profile) if profile else None,
        engine=_engine(engine), nodes=nodes, network=network,
    )
    _warn_pricing(est.engine, est.pricing)
    if as_json:
        typer.echo(json.dumps(est.model_dump(mode="json", exclude_none=True), indent=2))
    else:
        print_estimate(est)


@app.command("plan")
def plan_cmd(
    model: str = typer.Option(..., "--model", help="HF id of a shipped model or a config.json path"),
    topology: str = typer.Option(..., "--topology", help="shipped topology name or YAML path"),
    isl: int = typer.Option(2048, "--isl"),
    osl: int = typer.Option(256, "--osl"),
    batch: int = typer.Option(1, "--batch", help="sequences decoded together per replica"),
    prefill_batch: int | None = typer.Option(
        None, "--prefill-batch", help="prompts prefilled together (default: --batch)"),
    dtype: str = typer.Option("bf16", "--dtype"),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype"),
    objective: str = typer.Option("latency", "--objective", help="latency | throughput | devices"),
    placement: str = typer.Option("auto", "--placement", help="auto | colocated | disaggregated"),
    ttft_slo_ms: float | None = typer.Option(None, "--ttft-slo-ms"),
    tpot_slo_ms: float | None = typer.Option(None, "--tpot-slo-ms"),
    request_rate: float | None = typer.Option(None, "--request-rate"),
    max_memory_fraction: float = typer.Option(0.9, "--max-memory-fraction"),
    max_devices: int | None = typer.Option(None, "--max-devices",
                                           help="use at most this many devices"),
    time_limit_s: float = typer.Option(30.0, "--time-limit-s"),
    nodes: int | None = typer.Option(None, "--nodes", help="copies of a single-node topology joined by a network (e.g. --topology h200-x8 --nodes 2)"),
    network: str | None = typer.Option(None, "--network", help="network joining --nodes (hardware/networks.yaml; default: the node's NIC)"),
    engine: str = typer.Option("vllm", "--engine", help="serving engine whose measured kernels price the figures: vllm, sglang, trtllm, or none (the 2023 roofline calibration)"),
    profile: str | None = typer.Option(None, "--profile", help="calibration profile YAML"),
    out: str | None = typer.Option(None, "-o", "--out", help="write the plan JSON here"),
    as_json: bool = typer.Option(False, "--json", help="print the plan JSON"),
) -> None:
    """Find the best deployment: pipeline cuts, TP per stage, prefill/decode placement."""
    from autoplan.files import check_writable, write_atomic
    from autoplan.inputs.request import Request
    from autoplan.render.terminal import print_plan
    from autoplan.search.planner import plan

    req = Request.build(
        model=model, topology=topology, isl=isl, osl=osl, batch=batch,
        prefill_batch=prefill_batch, dtype=dtype, kv_dtype=kv_dtype, objective=objective,
        placement=placement, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms,
        request_rate=request_rate, max_memory_fraction=max_memory_fraction,
        time_limit_s=time_limit_s, progress=not as_json, profile=profile,
        max_devices=max_devices, engine=_engine(engine), nodes=nodes, network=network)
    if out is not None:
        check_writable(out)  # before minutes of solving, not after ('' is an error)
    try:
        p = plan(req)
    except KeyboardInterrupt:  # Ctrl-C before the search found any plan
        raise Interrupted("no plan found yet; nothing written") from None
    _warn_pricing(p.inputs.engine, p.pricing)
    text = p.model_dump_json(indent=2)
    if out is not None:
        write_atomic(out, text + "\n")
    if as_json:
        typer.echo(text)
    else:
        print_plan(p)
    if p.stop_reason == "interrupted":  # exit 130, the best plan so far kept
        gap = "unknown" if p.gap is None else f"{p.gap:.2%}"
        where = f"written to {out}" if out is not None else "printed"
        raise Interrupted(f"the best plan found so far ({p.status}, gap {gap}) is {where}")


@app.command("validate")
def validate_cmd(plan_file: str = typer.Argument(..., help="plan JSON")) -> None:
    """Recompute a plan's figures without the solver and check its rules."""
    from autoplan.errors import InputError
    from autoplan.rules.validate import validate

    rep = validate(plan_file)
    if not rep.ok:
        raise InputError(rep.summary())
    f = rep.figures
    typer.echo(f"valid: TTFT {f.ttft_ms:.3f} ms, TPOT {f.tpot_ms:.3f} ms, e2e {f.e2e_ms:.1f} ms, "
               f"KV transfer {f.kv_transfer_ms:.3f} ms (recomputed, equal to the plan)")


@app.command("explain")
def explain_cmd(
    plan_file: str = typer.Argument(..., help="plan JSON"),
    solve: bool = typer.Option(True, "--solve/--no-solve",
                               help="also re-solve the other placement with the planner"),
    time_limit_s: float = typer.Option(10.0, "--time-limit-s", help="re-solve time limit"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Why this plan wins: its nearest alternatives, their figures and what rules them out."""
    from autoplan.explain import explain
    from autoplan.render.terminal import print_explain

    e = explain(plan_file, solve=solve, time_limit_s=time_limit_s)
    if as_json:
        typer.echo(e.model_dump_json(indent=2))
    else:
        print_explain(e)


@app.command("export")
def export_cmd(
    plan_file: str = typer.Argument(..., help="plan JSON (autoplan plan -o PLAN.json)"),
    to: str = typer.Option(..., "--to", help="engine: vllm | sglang | trtllm | dynamo"),
    backend: str | None = typer.Option(None, "--backend", help="Dynamo's workers: vllm | "
                                       "sglang | trtllm (default: the plan's engine)"),
    out: str | None = typer.Option(None, "--out", help="write the files into this folder"),
) -> None:
    """Engine launch configs: vLLM / SGLang / TensorRT-LLM launch.sh, Dynamo deployment.yaml."""
    from autoplan.export import check_engine, export, write_export
    from autoplan.plan_schema import Plan

    engine = check_engine(to)
    exp = export(Plan.load(plan_file), engine, backend=backend)
    for w in exp.warnings:
        print(f"autoplan: warning: {w}", file=sys.stderr)
    if out is not None:
        for path in write_export(exp, out):
            typer.echo(f"wrote {path}")
    else:
        for name, text in exp.files.items():
            if len(exp.files) > 1:
                typer.echo(f"# ==> {name} <==")
            typer.echo(text, nl=False)


@app.command("chart")
def chart_cmd(
    plan_file: str = typer.Argument(..., help="plan JSON"),
    out: str = typer.Option("charts", "--out", "-o", help="directory for the PNG and SVG files"),
) -> None:
    """Draw a plan: pipeline timeline, roofline of its operators, placement on the topology."""
    from autoplan.plan_schema import Plan
    from autoplan.render import chart_all

    for path in chart_all(Plan.load(plan_file), out):
        typer.echo(str(path))


@app.command("pareto")
def pareto_cmd(
    model: str = typer.Option(..., "--model", help="HF id of a shipped model or a config.json path"),
    topology: str = typer.Option(..., "--topology", help="shipped topology name or YAML path"),
    isl: int = typer.Option(2048, "--isl"),
    osl: int = typer.Option(256, "--osl"),
    batch: int = typer.Option(1, "--batch"),
    prefill_batch: int | None = typer.Option(None, "--prefill-batch"),
    dtype: str = typer.Option("bf16", "--dtype"),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype"),
    placement: str = typer.Option("auto", "--placement", help="auto | colocated | disaggregated"),
    ttft_slo_ms: str | None = typer.Option(None, "--ttft-slo-ms", help="values to sweep: 200,500"),
    tpot_slo_ms: str | None = typer.Option(None, "--tpot-slo-ms", help="values to sweep: 10,20,40"),
    max_devices: str | None = typer.Option(None, "--max-devices", help="budgets to sweep: 1,2,4,8"),
    max_memory_fraction: float = typer.Option(0.9, "--max-memory-fraction"),
    time_limit_s: float = typer.Option(30.0, "--time-limit-s", help="per point"),
    nodes: int | None = typer.Option(None, "--nodes", help="copies of a single-node topology joined by a network (e.g. --topology h200-x8 --nodes 2)"),
    network: str | None = typer.Option(None, "--network", help="network joining --nodes (hardware/networks.yaml; default: the node's NIC)"),
    engine: str = typer.Option("vllm", "--engine", help="serving engine whose measured kernels price the figures: vllm, sglang, trtllm, or none (the 2023 roofline calibration)"),
    profile: str | None = typer.Option(None, "--profile", help="calibration profile YAML"),
    workers: int | None = typer.Option(None, "--workers", help="processes (default: CPUs)"),
    out: str = typer.Option("pareto", "--out", help="directory for pareto.csv and the chart"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Sweep SLO targets and device budgets; write the TTFT-TPOT-devices front."""
    from autoplan.catalog import load_model, load_topology
    from autoplan.errors import InputError
    from autoplan.files import check_folder
    from autoplan.render.terminal import print_pareto
    from autoplan.sweep.pareto import parse_list, sweep, write

    ttfts = parse_list(ttft_slo_ms, "--ttft-slo-ms")
    tpots = parse_list(tpot_slo_ms, "--tpot-slo-ms")
    budgets = parse_list(max_devices, "--max-devices", int)
    if ttfts == tpots == budgets == [None]:
        raise InputError("nothing to sweep: give --tpot-slo-ms, --ttft-slo-ms or --max-devices "
                         "as comma-separated values")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    load_model(model)  # bad inputs fail here, once, not in every worker
    load_topology(topology, None, None, nodes, network)
    check_folder(out)  # before the sweep, not after
    base = {"model": model, "topology": topology, "isl": isl, "osl": osl, "batch": batch,
                "prefill_batch": prefill_batch, "dtype": dtype, "kv_dtype": kv_dtype,
                "placement": placement, "max_memory_fraction": max_memory_fraction,
                "time_limit_s": time_limit_s, "profile": profile, "engine": _engine(engine),
                "nodes": nodes, "network": network}
    rows = sweep(base, ttfts, tpots, budgets, workers=workers, progress=not as_json)
    paths = write(rows, out, f"{model} on {topology}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_pareto(rows)
        for p in paths:
            typer.echo(str(p))


@app.command("schema")
def schema_cmd() -> None:
    """Print the plan's JSON Schema."""
    from autoplan.plan_schema import Plan

    typer.echo(json.dumps(Plan.model_json_schema(), indent=2))


@app.command("calibrate")
def calibrate_cmd(
    measurements: str | None = typer.Argument(
        None, help="CSV of measured TTFT/TPOT rows (columns: hardware/data/SOURCE.md)"),
    kernels: str | None = typer.Option(
        None, "--kernels", help="folder of measured kernel tables (hardware/data/aic-kernels): "
        "fit an engine's kernel profile for every device kind with data (needs --engine)"),
    out: str | None = typer.Option(None, "-o", "--out", help="write the fitted profile YAML"),
    topology: str | None = typer.Option(
        None, "--topology", help="topology (name or YAML) pricing the rows of its device "
        "kinds; other rows use the smallest shipped system that holds them"),
    prior: str | None = typer.Option(None, "--prior", help="prior profile (default: shipped)"),
    engine: str | None = typer.Option(
        None, "--engine", help="fit only rows of this engine; the profile records it"),
    leave_one_out: bool = typer.Option(True, "--loo/--no-loo", help="report leave-one-out error"),
    as_json: bool = typer.Option(False, "--json"),
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


def _calibrate_kernels(data_dir: str, engine: str | None, out: str | None,
                       measurements: str | None, as_json: bool) -> None:
    """``calibrate --kernels``: an engine's kernel profile from measured kernel rows alone,
    with the median / p90 error per operator class on fitted and held-out rows."""
    from autoplan.calibrate.kernel_fit import fit_engine_report
    from autoplan.calibrate.kernel_profiles import profile_yaml
    from autoplan.catalog import check_engine
    from autoplan.errors import InputError
    from autoplan.files import check_writable, write_atomic
    from autoplan.render.terminal import print_kernel_fit

    if measurements is not None:
        raise InputError("calibrate --kernels takes no measurements CSV (the kernel rows are "
                         "the data)")
    if engine is None:
        raise InputError("calibrate --kernels needs --engine (vllm, sglang or trtllm)")
    check_engine(engine)
    if out:
        check_writable(out)
    profiles, reports = fit_engine_report(data_dir, engine)
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
def models_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the shipped models."""
    from autoplan.catalog import list_models, load_model
    from autoplan.graphs.model_graph import parameter_count

    rows = []
    for name in list_models():
        m = load_model(name)
        rows.append({"id": name, "family": m.family, "layers": m.num_layers,
                     "parameters_b": round(parameter_count(m) / 1e9, 2),
                     "moe": m.moe is not None, "mla": m.mla is not None})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        extra = ", ".join(x for x in ("MoE" if r["moe"] else "", "MLA" if r["mla"] else "") if x)
        typer.echo(f"{r['id']:<34} {r['family']:<10} {r['layers']:>4} layers "
                   f"{r['parameters_b']:>8.2f}B {extra}")


@app.command("topologies")
def topologies_cmd(
    as_json: bool = typer.Option(False, "--json"),
    show: str | None = typer.Option(None, "--show", help="print the YAML of this topology (a shipped name or a file)"),
    nodes: int | None = typer.Option(None, "--nodes", help="with --show: copies of a single-node topology"),
    network: str | None = typer.Option(None, "--network", help="with --show --nodes: the network joining them"),
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


def _engine(name: str) -> str | None:
    """The --engine value: an engine name, or none for the roofline calibration."""
    from autoplan.catalog import check_engine

    return None if name.strip().lower() in ("none", "roofline") else check_engine(name)


def _warn_pricing(engine: str | None, pricing: dict[str, str]) -> None:
    """Say on stderr which data priced each kind when it is not the engine's own."""
    for kind, source in sorted(pricing.items()):
        if engine is not None and ("borrowed" in source or "kernel data" in source):
            print(f"autoplan: note: {kind} is priced by {source}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn every expected failure into one line and a code."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="autoplan")
        sys.stdout.flush()  # an output that cannot be written fails here, not at exit
    except Interrupted as e:
        print(f"autoplan: interrupted: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except AutoplanError as e:  # one line, even when a name in the message has a newline
        print(f"autoplan: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except typer.Exit as e:
        if e.exit_code == 130:
            print("autoplan: interrupted", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("autoplan: interrupted", file=sys.stderr)
        return 130
    except _click_exc.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `autoplan`: show the help
            print(e.format_message())
            return 0
        print(f"autoplan: error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return 2
    except _click_exc.ClickException as e:
        print(f"autoplan: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("autoplan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        _drop_stdout()
        return 141
    except OSError as e:  # the output itself (a full disk, /dev/full), or an OS error
        if e.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
            _drop_stdout()
            what = "cannot write the output"
        else:
            what = f"{e.filename!r}" if e.filename else "system error"
        print(f"autoplan: error: {what}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
    if isinstance(rv, int) and rv:  # typer turns a KeyboardInterrupt into Exit(130)
        if rv == 130:
            print("autoplan: interrupted", file=sys.stderr)
        return rv
    return 0


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what could not
    be written does not print an error at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
