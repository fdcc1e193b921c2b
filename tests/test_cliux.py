"""CLI conventions (issue 14): help and metavars on every option, choices for enums, one
default per flag, -h and --version, tables readable at 80 columns and when piped, the
profile-coverage warning, estimate --prefill-batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from autoplan import estimate
from autoplan.cli import app, main
from autoplan.render.terminal import pct, short_devices

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "llama31-8b-h100-4node-devices.plan.json"
M8 = "meta-llama/Llama-3.1-8B"


def _commands():
    group = typer.main.get_command(app)
    return group, group.commands


def test_every_option_of_every_command_has_help_and_a_readable_metavar():
    _, commands = _commands()
    assert {"estimate", "plan", "explain", "export", "chart", "pareto", "sweep", "calibrate",
            "models", "topologies", "validate", "schema"} <= set(commands)
    missing, ugly = [], []
    for name, cmd in commands.items():
        for p in cmd.params:
            if p.param_type_name == "option" and not p.help:
                missing.append(f"{name} {p.opts[0]}")
            if p.param_type_name == "argument" and not getattr(p, "help", None):
                missing.append(f"{name} {p.name}")
            mv = p.metavar or ""
            if mv.startswith("<") and mv[1:-1] in ("str", "int", "float"):
                ugly.append(f"{name} {p.opts[0]} {mv}")
    assert not missing, missing
    assert not ugly, ugly


@pytest.mark.parametrize("name", ["estimate", "plan", "explain", "export", "chart", "pareto",
                                  "sweep", "calibrate", "models", "topologies", "validate",
                                  "schema"])
def test_help_alias_h_and_no_type_metavars(name, capsys):
    assert main([name, "-h"]) == 0
    out = capsys.readouterr().out
    assert "Usage: autoplan" in out and "<str>" not in out and "<int>" not in out
    assert "-h, --help" in out


def test_enum_choices_are_listed_and_a_bad_one_is_one_line_exit_2(capsys):
    assert main(["plan", "-h"]) == 0
    out = capsys.readouterr().out
    for choices in ("latency|throughput|devices", "auto|colocated|disaggregated",
                    "bf16|fp16|fp8|int8|int4", "vllm|sglang|trtllm|none"):
        assert choices in out, choices
    rc = main(["plan", "--model", M8, "--topology", "h100-sxm-x1", "--objective", "fast"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "'fast' is not one of" in err


def test_osl_and_isl_defaults_are_the_same_everywhere():
    _, commands = _commands()
    for flag in ("--osl", "--isl"):
        defaults = {name: p.default for name, cmd in commands.items() for p in cmd.params
                    if flag in p.opts}
        assert len(set(defaults.values())) == 1, (flag, defaults)
    assert estimate(M8, "h100-sxm-x1").osl == 256


def test_version(capsys):
    from autoplan import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"autoplan {__version__}"


def test_piped_explain_at_80_columns_keeps_every_alternative_name_and_number():
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    env.pop("FORCE_COLOR", None)
    r = subprocess.run([sys.executable, "-m", "autoplan", "explain", str(GOLDEN), "--no-solve",
                        "--json"], capture_output=True, text=True, env=env, check=True)
    names = [a["name"] for a in json.loads(r.stdout)["alternatives"]]
    r = subprocess.run([sys.executable, "-m", "autoplan", "explain", str(GOLDEN), "--no-solve"],
                       capture_output=True, text=True, env=env, check=True)
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    table = [line for line in lines if line.strip()[:1].isdigit() and "  " in line]
    for k, name in enumerate(names, 1):
        row = next((line for line in table if line.split()[0] == str(k)), None)
        assert row is not None, (k, r.stdout)
        first_word = name.split()[0]
        assert first_word[:10] in row, (name, row)
        # the whole name, folded over the row's lines, is in the table's text
        assert all(w[:10] in r.stdout for w in name.split())
    assert "-0%" not in r.stdout


def test_pct_never_prints_minus_zero_and_device_lists_are_short():
    assert pct(-1e-9) == "0%" and pct(0.254) == "25%" and pct(-0.3) == "-30%"
    devs = [f"node0.d{i}" for i in range(8)] + [f"node1.d{i}" for i in range(4)]
    assert short_devices(devs) == "node0.d0-7, node1.d0-3"
    assert short_devices(["node0.d3"]) == "node0.d3"
    assert short_devices(["a", "node0.d1", "node0.d3"]) == "a, node0.d1, node0.d3"


def test_plan_prints_what_its_objective_means(capsys):
    assert main(["plan", "--model", M8, "--topology", "h100-sxm-x1",
                 "--time-limit-s", "5"]) == 0
    out = capsys.readouterr().out
    assert "end-to-end latency of one request" in " ".join(out.split())


def test_a_profile_that_does_not_cover_the_device_kind_is_warned(capsys):
    argv = ["estimate", "--model", M8, "--topology", "h100-sxm-x1", "--json"]
    assert main(argv + ["--profile", "gpt-fast"]) == 0
    err = capsys.readouterr().err
    assert "warning: profile 'gpt-fast' does not cover h100-sxm" in err
    assert main(argv + ["--profile", "default"]) == 0
    assert "does not cover" not in capsys.readouterr().err


def test_estimate_prefill_batch_prices_prefill_at_its_own_batch(capsys):
    argv = ["estimate", "--model", M8, "--topology", "h100-sxm-x1", "--batch", "16", "--json"]
    assert main(argv + ["--prefill-batch", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    api = estimate(M8, "h100-sxm-x1", batch=16, prefill_batch=1)
    assert got["ttft_ms"] == api.ttft_ms and got["prefill_batch"] == 1
    full = estimate(M8, "h100-sxm-x1", batch=16)
    one = estimate(M8, "h100-sxm-x1", batch=1)
    assert api.ttft_ms == pytest.approx(one.ttft_ms) and full.ttft_ms > api.ttft_ms
    assert api.tpot_ms == full.tpot_ms
    assert main(argv + ["--prefill-batch", "0"]) == 2


def test_api_takes_profile_names_like_the_cli():
    a = estimate(M8, "h100-sxm-x1", profile="trtllm-0.5")
    assert a.ttft_ms > 0


def test_python_api_takes_the_cli_argument_names(tmp_path):
    import autoplan

    assert [p.name for p in autoplan.chart(GOLDEN, out=tmp_path / "c")][:1] == ["timeline.png"]
    exp = autoplan.export(GOLDEN, to="vllm", out=tmp_path / "e")
    assert exp.files and all((tmp_path / "e" / name).exists() for name in exp.files)
    e = autoplan.explain(GOLDEN, solve=False, time_limit_s=5)
    assert e.alternatives


def test_piped_progress_is_a_labelled_line_per_phase(capsys):
    assert main(["plan", "--model", M8, "--topology", "h100-sxm-x8", "--time-limit-s", "5",
                 "--batch", "4"]) == 0
    err = capsys.readouterr().err
    # A phase says itself with its first incumbent; the second placement's search is
    # capped by the first's best exact plan, so it may find none and stay silent.
    assert "phase 1/2: colocated placement" in err
    assert all(line.startswith("autoplan: phase ") for line in err.splitlines()
               if "phase" in line)
    incumbents = [line for line in err.splitlines() if "incumbent" in line]
    assert incumbents and all(line.strip().startswith(("[colocated]", "[disaggregated]"))
                              for line in incumbents)


def test_search_progress_is_a_bar_on_a_terminal_and_lines_when_piped(monkeypatch, capsys):
    """On a terminal each search phase is a progress bar (no incumbent lines); piped, a
    labelled line per phase and incumbent."""
    from autoplan import plan
    from autoplan.search import progress

    plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=512, osl=64, progress=True)
    piped = capsys.readouterr().err
    assert "phase 1/2: colocated placement" in piped and "incumbent" in piped
    monkeypatch.setattr(progress, "stderr_is_tty", lambda: True)
    bars = []
    real = progress.PhaseBar.__init__

    def spy(self, title, limit):
        bars.append(title)
        real(self, title, limit)

    monkeypatch.setattr(progress.PhaseBar, "__init__", spy)
    plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=512, osl=64, progress=True)
    tty = capsys.readouterr().err
    assert bars and bars[0].startswith("phase 1/2: colocated placement")
    assert "incumbent" not in tty.replace(bars[0], "")  # the bar, not lines
