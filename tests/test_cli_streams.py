"""The CLI's standard streams in states a user's shell can leave them in: closed, piped
into a command that stops reading, an encoding without the characters the tables use.
Each is one line (or nothing) on stderr and a documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_safety import one_line, run

ROOT = Path(__file__).resolve().parents[1]
ESTIMATE = ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x8",
            "--tp", "8"]


def _autoplan(args: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "autoplan", *args], text=True, timeout=120,
                          check=False, env=env, cwd=tmp, **kw)


def test_a_closed_stdout_is_one_line(tmp_path):
    r = _autoplan(ESTIMATE, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  # the child starts with file descriptor 1 closed (a shell's >&-)
                  preexec_fn=lambda: os.close(1))
    assert (r.returncode, r.stderr) == (
        2, "autoplan: error: cannot write the output: standard output is closed\n")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_an_output_encoding_without_the_table_characters_prints_the_tables(encoding, tmp_path):
    r = _autoplan(ESTIMATE, tmp_path, capture_output=True,
                  env={"PYTHONIOENCODING": encoding, "COLUMNS": "80"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "TTFT" in r.stdout and "decode" in r.stdout


def test_a_reader_that_stops_early_is_exit_141_and_silent(tmp_path):
    """rich's tables meet the broken pipe (it raises SystemExit(1) from it): the same
    code and silence as the plain-text commands."""
    p = subprocess.Popen([sys.executable, "-m", "autoplan", *ESTIMATE], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"})
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert (p.wait(timeout=120), err) == (141, "")


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e300"])
def test_the_grid_limit_of_a_throughput_front_is_bounded(value, tmp_path):
    rc, out, err = run(["pareto", "--mode", "throughput", "--model", "meta-llama/Llama-3.1-8B",
                        "--topology", "h100-sxm-x1", "--tpot-max-ms", value,
                        "--out", tmp_path / "front"])
    one_line(rc, err, 2, "--tpot-max-ms", "finite")
    assert not (tmp_path / "front").exists()
