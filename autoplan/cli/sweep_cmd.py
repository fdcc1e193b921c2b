"""``autoplan sweep CASES.yaml``: the cases of a fleet, on a process pool or Ray."""

from __future__ import annotations

import typer

from autoplan.cli.options import app, show_rows


@app.command("sweep")
def sweep_cmd(
    cases_file: str = typer.Argument(..., metavar="CASES.yaml",
                                     help="models x topologies x SLOs x engines (format: "
                                          "autoplan/sweep/cases.py, README)"),
    workers: int | None = typer.Option(None, "--workers", metavar="N",
                                       help="local processes (default: CPUs); with --ray "
                                            "'local': the CPUs of the local Ray instance"),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="run the cases on this Ray cluster (ray://HOST:10001, "
                                        "auto, or local); needs pip install 'autoplan[ray]'"),
    out: str = typer.Option("sweep", "--out", "-o", metavar="DIR",
                            help="directory for sweep.csv and the chart"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Plan every case of a fleet (models x topologies x SLOs x engines); write one CSV
    and a TTFT-TPOT chart."""
    from autoplan.errors import InputError
    from autoplan.files import check_folder
    from autoplan.render.terminal import print_sweep
    from autoplan.sweep.cases import check_axes, load_cases, sweep_cases, write
    from autoplan.sweep.engine import import_ray
    from autoplan.sweep.output import check_solved

    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    cases = load_cases(cases_file)
    if ray is None:
        check_axes(cases)
    else:  # on a Ray cluster a path may exist on the workers only: they load it
        import_ray()  # a missing extra is one line, before anything runs
    check_folder(out)
    rows = sweep_cases(cases, workers=workers, ray_address=ray, progress=not as_json)
    paths = write(rows, out, f"{len(rows)} cases of {cases_file}")
    show_rows(rows, paths, print_sweep, as_json)
    check_solved(rows, str(paths[0]))
