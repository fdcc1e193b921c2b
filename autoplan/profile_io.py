"""Write calibration profiles (the YAML that ``--profile`` and the catalog read)."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import yaml

from autoplan.errors import InputError
from autoplan.topology import Calibration

HEADER = """\
# Calibration profile: the named cost-model parameters of each device kind
# (autoplan/topology.py:Calibration), fitted by `autoplan calibrate` (least squares on
# log(predicted / measured), bounded, with a weak pull toward the prior) to the rows of
#   {data}{only}
# Refit with:
#   {command}
"""


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def calibrate_command(measurements: str, out: str, *, engine: str | None = None,
                      topology: str | None = None, prior: str | None = None) -> str:
    """The `autoplan calibrate` command line that writes ``out`` (options that change
    the profile only, in a fixed order, so that a refit reproduces the header)."""
    args = ["autoplan", "calibrate", measurements]
    for flag, value in (("--engine", engine), ("--topology", topology), ("--prior", prior)):
        if value:
            args += [flag, value]
    return shlex.join(args + ["-o", out])


def profile_yaml(cals: dict[str, Calibration], data: str, command: str,
                 engine: str | None = None) -> str:
    """The profile YAML: ``profile: fitted``, ``engine`` (when the fit used one engine's
    rows) and ``device_kinds``, values to 4 significant digits."""
    body: dict = {"profile": "fitted"}
    if engine:
        body["engine"] = engine
    body["device_kinds"] = {}
    for kind in sorted(cals):
        d = cals[kind].model_dump(exclude={"source"})
        body["device_kinds"][kind] = {k: _sig(v) for k, v in d.items()}
        body["device_kinds"][kind]["source"] = cals[kind].source or f"fitted to {data}"
    only = f" (engine {engine} only)" if engine else ""
    return (HEADER.format(data=data, only=only, command=command)
            + yaml.safe_dump(body, sort_keys=False))


def check_writable(path: str | Path) -> None:
    """Refuse an output path :func:`write_atomic` cannot write (call it before the work)."""
    p = Path(path)
    if "\0" in str(p):
        raise InputError(f"cannot write {str(p)!r}: the name has a NUL character")
    if p.is_dir():
        raise InputError(f"cannot write {str(p)!r}: it is a directory")
    if not p.parent.is_dir():
        raise InputError(f"cannot write {str(p)!r}: folder {str(p.parent)!r} does not exist")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written.

    On failure the old file (if any) is left as it was, no temporary file remains, and an
    unwritable path is an :class:`InputError`.
    """
    p = Path(path)
    check_writable(p)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as e:
        raise InputError(
            f"cannot write {str(p)!r}: {e.strerror or e.__class__.__name__}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp creates 0600; give the file the mode a plain write would (or keep the
        # replaced file's)
        os.chmod(tmp, p.stat().st_mode & 0o777 if p.exists() else 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise InputError(
                f"cannot write {str(p)!r}: {e.strerror or e.__class__.__name__}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
