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

from autoplan.cli import options as O
from autoplan.errors import AutoplanError, Interrupted

_click_exc = O.click_exceptions

app = O.app


@app.command("estimate")
def estimate_cmd(
    model: str = O.MODEL,
    topology: str = O.TOPOLOGY,
    tp: int = typer.Option(1, "--tp", metavar="N", help="tensor-parallel degree"),
    pp: int = typer.Option(1, "--pp", metavar="N", help="pipeline-parallel degree"),
    ep: int = typer.Option(1, "--ep", metavar="N",
                           help="expert-parallel degree of the MoE layers (MoE models)"),
    attention_dp: int = typer.Option(1, "--attention-dp", metavar="N",
                                     help="data-parallel attention ranks of --tp devices each "
                                          "(MoE models)"),
    device_kind: str | None = typer.Option(None, "--device-kind", metavar="KIND",
                                              help="device kind, when the topology has several"),
    isl: int = O.ISL,
    osl: int = O.OSL,
    batch: int = typer.Option(1, "--batch", metavar="N", help="requests run together (decode batch)"),
    prefill_batch: int | None = O.PREFILL_BATCH,
    dtype: O.DType | None = O.DTYPE,
    kv_dtype: O.DType | None = O.KV_DTYPE,
    max_memory_fraction: float = O.MAX_MEMORY_FRACTION,
    nodes: int | None = O.NODES,
    network: str | None = O.NETWORK,
    engine: O.Engine = O.ENGINE,
    profile: str | None = O.PROFILE,
    host_terms: str | None = O.HOST_TERMS,
    breakdown: bool = typer.Option(False, "--breakdown", help="per-operator times"),
    offline: bool = typer.Option(False, "--offline", help="TTFT of an offline latency benchmark "
                                 "(trtllm-bench latency): without the server's handling of the "
                                 "request (the engine's request_overhead_s)"),
    as_json: bool = O.JSON,
) -> None:
    """Predict TTFT, TPOT, end-to-end latency and memory of one configuration."""
    from autoplan.catalog import load_profile
    from autoplan.cost.estimate import estimate
    from autoplan.render.terminal import print_estimate

    est = estimate(
        model, topology, tp, pp, device_kind=device_kind, isl=isl, osl=osl, batch=batch,
        dtype=dtype, kv_dtype=kv_dtype, max_memory_fraction=max_memory_fraction,
        breakdown=breakdown, profile=load_profile(profile) if profile else None,
        engine=_engine(engine), nodes=nodes, network=network, prefill_batch=prefill_batch,
        ep=ep, attention_dp=attention_dp, serving=not offline,
        host_terms=O.host_terms_of(host_terms, _engine(engine)),
    )
    _warn_pricing(est.engine, est.pricing, est.host_terms)
    _warn_profile(profile, [est.device_kind])
    _warn_unquantized(model, est.dtype)
    if as_json:
        typer.echo(json.dumps(est.model_dump(mode="json", exclude_none=True), indent=2))
    else:
        print_estimate(est)


@app.command("plan")
def plan_cmd(
    model: str = O.MODEL,
    topology: str = O.TOPOLOGY,
    isl: int = O.ISL,
    osl: int = O.OSL,
    batch: int | None = O.PLAN_BATCH,
    prefill_batch: int | None = O.PLAN_PREFILL_BATCH,
    dtype: O.DType | None = O.DTYPE,
    kv_dtype: O.DType | None = O.KV_DTYPE,
    objective: O.Objective = O.OBJECTIVE,
    placement: O.Placement = O.PLACEMENT,
    ttft_slo_ms: float | None = typer.Option(None, "--ttft-slo-ms", metavar="MS",
                                             help="time-to-first-token limit"),
    tpot_slo_ms: float | None = typer.Option(None, "--tpot-slo-ms", metavar="MS",
                                             help="time-per-output-token limit"),
    request_rate: float | None = typer.Option(
        None, "--request-rate", metavar="REQ/S",
        help="requests per second to serve (with --objective devices or throughput)"),
    max_memory_fraction: float = O.MAX_MEMORY_FRACTION,
    max_devices: int | None = typer.Option(None, "--max-devices", metavar="N",
                                           help="use at most this many devices"),
    time_limit_s: float = O.TIME_LIMIT_S,
    nodes: int | None = O.NODES,
    network: str | None = O.NETWORK,
    engine: O.Engine = O.ENGINE,
    profile: str | None = O.PROFILE,
    host_terms: str | None = O.HOST_TERMS,
    out: str | None = typer.Option(None, "-o", "--out", metavar="FILE",
                                   help="write the plan JSON here"),
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
        max_devices=max_devices, engine=_engine(engine), nodes=nodes, network=network,
        host_terms=O.host_terms_of(host_terms, _engine(engine)))
    if out is not None:
        check_writable(out)  # before minutes of solving, not after ('' is an error)
    try:
        p = plan(req)
    except KeyboardInterrupt:  # Ctrl-C before the search found any plan
        raise Interrupted("no plan found yet; nothing written") from None
    _warn_pricing(p.inputs.engine, p.pricing, p.inputs.host_terms)
    _warn_unquantized(model, p.inputs.dtype)
    _warn_profile(profile, sorted({s.device_kind for ph in (p.prefill, p.decode)
                                   for s in ph.stages}))
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
def validate_cmd(plan_file: str = typer.Argument(..., metavar="PLAN.json",
                                                 help="plan JSON")) -> None:
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
    plan_file: str = typer.Argument(..., metavar="PLAN.json", help="plan JSON"),
    solve: bool = typer.Option(True, "--solve/--no-solve",
                               help="also re-solve the other placement with the planner"),
    time_limit_s: float = typer.Option(10.0, "--time-limit-s", metavar="SECONDS",
                                      help="re-solve time limit"),
    as_json: bool = O.JSON,
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
    plan_file: str = typer.Argument(..., metavar="PLAN.json",
                                    help="plan JSON (autoplan plan -o PLAN.json)"),
    to: str = typer.Option(..., "--to", metavar="ENGINE",
                           help="engine to launch the plan on: vllm, sglang, trtllm or dynamo"),
    backend: str | None = typer.Option(None, "--backend", metavar="ENGINE",
                                       help="Dynamo's workers: vllm, sglang or trtllm "
                                       "(default: the plan's engine)"),
    out: str | None = typer.Option(None, "--out", metavar="DIR",
                                   help="write the files into this folder"),
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
    plan_file: str = typer.Argument(..., metavar="PLAN.json", help="plan JSON"),
    out: str = typer.Option("charts", "--out", "-o", metavar="DIR",
                            help="directory for the PNG and SVG files"),
) -> None:
    """Draw a plan: pipeline timeline, roofline of its operators, placement on the topology."""
    from autoplan.plan_schema import Plan
    from autoplan.render import chart_all

    for path in chart_all(Plan.load(plan_file), out):
        typer.echo(str(path))


@app.command("schema")
def schema_cmd() -> None:
    """Print the plan's JSON Schema."""
    from autoplan.plan_schema import Plan

    typer.echo(json.dumps(Plan.model_json_schema(), indent=2))


def _engine(name: str) -> str | None:
    """The --engine value: an engine name, or none for the roofline calibration."""
    from autoplan.catalog import check_engine

    return None if name.strip().lower() in ("none", "roofline") else check_engine(name)


def _warn_profile(profile: str | None, kinds: list[str]) -> None:
    """Say on stderr when --profile has no figures for a device kind it was asked to
    price: those kinds keep the engine's (or the roofline's) figures."""
    if not profile:
        return
    from autoplan.catalog import load_profile

    missing = [k for k in kinds if k not in load_profile(profile)]
    if missing:
        print(f"autoplan: warning: profile {profile!r} does not cover {', '.join(missing)}; "
              "those devices keep --engine's figures", file=sys.stderr)


def _warn_unquantized(model: str, dtype: str) -> None:
    """Say on stderr when entries of the checkpoint's unquantized-module lists were not
    applied (:mod:`autoplan.inputs.unquantized`): they name nothing autoplan models, or
    are patterns it does not run."""
    from autoplan.catalog import load_model

    ck = load_model(model).checkpoint
    if not ck.unquantized_modules or dtype != ck.dtype:
        return
    n = ck.unquantized_modules
    print(f"autoplan: warning: {n} entr{'ies' if n > 1 else 'y'} of the checkpoint's "
          f"quantization_config lists of unquantized modules name no layer projection "
          f"autoplan models, or are patterns it does not run; not applied (what they name, "
          f"if anything, is priced in {dtype})", file=sys.stderr)


def _warn_pricing(engine: str | None, pricing: dict[str, str], host_terms=None) -> None:
    """Say on stderr which data priced each kind when it is not the engine's own, and
    which host terms replaced the shipped ones."""
    for kind, source in sorted(pricing.items()):
        if engine is not None and ("borrowed" in source or "kernel data" in source):
            print(f"autoplan: note: {kind} is priced by {source}", file=sys.stderr)
    if host_terms is not None:
        where = " ".join((host_terms.fitted_to or "given").split())
        print(f"autoplan: note: {engine}'s host terms are --host-terms' "
              f"({host_terms.host_step_s * 1e3:.3g} ms per step, "
              f"{host_terms.request_overhead_s * 1e3:.3g} ms per request; {where}), not "
              "hardware/engines.yaml's", file=sys.stderr)


from autoplan.cli import catalog_cmds, pareto_cmd, sweep_cmd  # noqa: F401  (register their commands)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn every expected failure into one line and a code."""
    if sys.stderr is None:  # started with stderr closed: its lines go nowhere
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process's own stderr)
    if sys.stdout is None:  # started with stdout closed (>&-): nothing can be written
        print("autoplan: error: cannot write the output: standard output is closed",
              file=sys.stderr)
        return 2
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        # an output encoding without a character autoplan prints (ASCII, Latin-1) shows
        # it as '?' (stderr: its escape, as Python's own default there) instead of failing
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)
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
        msg = " ".join(e.format_message().split()).replace("Value error, ", "")
        print(f"autoplan: error: {msg}", file=sys.stderr)
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
    except SystemExit as e:
        # rich's Console meets a broken pipe by pointing stdout at /dev/null and raising
        # SystemExit(1) from the BrokenPipeError: the same case as above
        if isinstance(e.__context__, BrokenPipeError):
            return 141
        raise
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
