"""``autoplan pareto``: the SLO sweep (TTFT-TPOT-devices front, ``--mode slo``) and the
throughput sweep (tokens/s per GPU against tokens/s per user, ``--mode throughput``)."""

from __future__ import annotations

from typing import Literal

import typer

from autoplan.cli import options as O
from autoplan.cli.options import app

Mode = Literal["slo", "throughput"]
MODE = typer.Option(
    "slo", "--mode",
    help="slo: latency plans over an SLO and budget grid, the TTFT-TPOT-devices front; "
         "throughput: throughput plans over TPOT targets, the tokens/s per GPU vs tokens/s "
         "per user front")


@app.command("pareto")
def pareto_cmd(
    model: str = O.MODEL,
    topology: str = O.TOPOLOGY,
    mode: Mode = MODE,
    isl: int = O.ISL,
    osl: int = O.OSL,
    batch: str | None = typer.Option(
        None, "--batch", metavar="N[,N,...]",
        help="sequences decoded together per replica (slo: one value, default 1; "
             "throughput: values to sweep; not given: the planner's own)"),
    prefill_batch: int | None = O.PREFILL_BATCH,
    dtype: O.DType | None = O.DTYPE,
    kv_dtype: O.DType | None = O.KV_DTYPE,
    placement: O.Placement = O.PLACEMENT,
    ttft_slo_ms: str | None = typer.Option(
        None, "--ttft-slo-ms", metavar="MS,MS,...",
        help="TTFT limits to sweep: 200,500 (throughput: one limit, every point)"),
    tpot_slo_ms: str | None = typer.Option(
        None, "--tpot-slo-ms", metavar="MS,MS,...",
        help="TPOT limits to sweep: 10,20,40 (throughput: default a grid from the best "
             "latency plan's TPOT)"),
    tpot_max_ms: float | None = typer.Option(
        None, "--tpot-max-ms", metavar="MS",
        help="throughput: the default grid's largest TPOT (default 10x the fastest)"),
    points: int | None = typer.Option(
        None, "--points", metavar="N", help="throughput: TPOT targets of the default grid (8)"),
    max_devices: str | None = typer.Option(
        None, "--max-devices", metavar="N,N,...",
        help="device budgets to sweep: 1,2,4,8 (throughput: one budget, every point)"),
    max_memory_fraction: float = O.MAX_MEMORY_FRACTION,
    time_limit_s: float = typer.Option(30.0, "--time-limit-s", metavar="SECONDS",
                                      help="solver time limit per point"),
    nodes: int | None = O.NODES,
    network: str | None = O.NETWORK,
    engine: O.Engine = O.ENGINE,
    profile: str | None = O.PROFILE,
    host_terms: str | None = O.HOST_TERMS,
    workers: int | None = typer.Option(None, "--workers", metavar="N",
                                       help="processes (default: CPUs)"),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="solve the points on this Ray cluster (as sweep "
                                        "--ray); needs pip install 'autoplan[ray]'"),
    out: str = typer.Option("pareto", "--out", metavar="DIR",
                            help="directory for the CSV and the chart (pareto.* or "
                                 "pareto-throughput.*)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Sweep SLO targets: the TTFT-TPOT-devices front (--mode slo), or tokens/s per GPU
    against tokens/s per user (--mode throughput)."""
    from autoplan.catalog import load_model, load_topology
    from autoplan.cli import _engine
    from autoplan.errors import InputError
    from autoplan.files import check_folder
    from autoplan.inputs.request import Request
    from autoplan.inputs.topology import MAX_DEVICES
    from autoplan.inputs.workload import MAX_BATCH
    from autoplan.sweep.pareto import parse_list

    ttfts = parse_list(ttft_slo_ms, "--ttft-slo-ms")
    tpots = parse_list(tpot_slo_ms, "--tpot-slo-ms")
    budgets = parse_list(max_devices, "--max-devices", int, MAX_DEVICES)
    batches = parse_list(batch, "--batch", int, MAX_BATCH)
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    base = {"model": model, "topology": topology, "isl": isl, "osl": osl, "dtype": dtype,
            "kv_dtype": kv_dtype, "placement": placement,
            "max_memory_fraction": max_memory_fraction, "time_limit_s": time_limit_s,
            "profile": profile, "engine": _engine(engine), "nodes": nodes, "network": network,
            "host_terms": O.host_terms_of(host_terms, _engine(engine))}
    if prefill_batch is not None:  # given; else the planner's default
        base["prefill_batch"] = prefill_batch
    if mode == "slo":
        _slo_only(tpot_max_ms, points, batches)
        if ttfts == tpots == budgets == [None]:
            raise InputError("nothing to sweep: give --tpot-slo-ms, --ttft-slo-ms or "
                             "--max-devices as comma-separated values")
        if batches != [None]:
            base["batch"] = batches[0]
        first = {"ttft_slo_ms": ttfts[0], "tpot_slo_ms": tpots[0], "max_devices": budgets[0]}
    else:
        _throughput_only(ttfts, budgets, tpots, tpot_max_ms, points)
        base.update(ttft_slo_ms=ttfts[0], max_devices=budgets[0])
        first = {"objective": "throughput", "tpot_slo_ms": tpots[0],
                 **({} if batches == [None] else {"batch": batches[0]})}
    Request.build(**base, **first)  # every flag checked once, not in every worker
    load_model(model)  # bad inputs fail here, once, not in every worker
    load_topology(topology, None, None, nodes, network)
    check_folder(out)  # before the sweep, not after
    if ray is not None:
        from autoplan.sweep.engine import import_ray

        import_ray()  # a missing extra is one line, before anything runs
    run = {"workers": workers, "progress": not as_json, "ray_address": ray}
    if mode == "slo":
        _slo(base, ttfts, tpots, budgets, run, out, f"{model} on {topology}", as_json)
    else:
        title = (f"{model} on {topology}, ISL {isl}, OSL {osl}"
                 + (f", TTFT <= {ttfts[0]:g} ms" if ttfts[0] is not None else ""))
        _throughput(base, tpots, batches, tpot_max_ms, points, run, out, title, as_json)


def _slo_only(tpot_max_ms, points, batches) -> None:
    from autoplan.errors import InputError

    for flag, v in (("--tpot-max-ms", tpot_max_ms), ("--points", points)):
        if v is not None:
            raise InputError(f"{flag} applies to --mode throughput")
    if len(batches) > 1:
        raise InputError("--batch: one value with --mode slo (several: --mode throughput)")


def _throughput_only(ttfts, budgets, tpots, tpot_max_ms, points) -> None:
    import math

    from autoplan.errors import InputError
    from autoplan.inputs.request import SLO_CAP_MS

    for flag, vals in (("--ttft-slo-ms", ttfts), ("--max-devices", budgets)):
        if len(vals) > 1:
            raise InputError(f"{flag}: one value with --mode throughput (it applies to "
                             "every point)")
    if tpots != [None] and (tpot_max_ms is not None or points is not None):
        raise InputError("give --tpot-slo-ms, or --tpot-max-ms / --points for the default "
                         "grid, not both")
    if tpot_max_ms is not None and not (math.isfinite(tpot_max_ms)
                                        and 0 < tpot_max_ms <= SLO_CAP_MS):
        raise InputError(f"--tpot-max-ms must be a positive, finite number of milliseconds "
                         f"(at most {SLO_CAP_MS:g}, a year), got {tpot_max_ms:g}")
    if points is not None and not 1 <= points <= 1000:
        raise InputError(f"--points must be 1 to 1000, got {points}")


def _slo(base, ttfts, tpots, budgets, run, out, title, as_json) -> None:
    from autoplan.render.terminal import print_pareto
    from autoplan.sweep.output import check_solved
    from autoplan.sweep.pareto import sweep, write

    rows = sweep(base, ttfts, tpots, budgets, **run)
    paths = write(rows, out, title)
    O.show_rows(rows, paths, print_pareto, as_json)
    check_solved(rows, str(paths[0]), "point")


def _throughput(base, tpots, batches, tpot_max_ms, points, run, out, title, as_json) -> None:
    from autoplan.render.terminal import print_throughput_front
    from autoplan.sweep import throughput as T
    from autoplan.sweep.output import check_solved

    if tpots == [None]:  # the default grid, from the fastest a user can be served
        fastest = {**base, **({} if batches == [None] else {"batch": min(batches)})}
        tpots = T.grid(T.fastest_tpot_ms(fastest), tpot_max_ms, points or T.DEFAULT_POINTS)
    rows = T.sweep(base, tpots, batches, **run)
    paths = T.write(rows, out, title)
    O.show_rows(T.public(rows), paths, print_throughput_front, as_json)
    check_solved(rows, str(paths[0]), "target")

