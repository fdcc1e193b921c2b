"""Writing output files: atomically, only where the user asked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from autoplan.errors import InputError


def check_writable(path: str | Path) -> None:
    """Refuse an output path :func:`write_atomic` cannot write (call it before the work)."""
    p = Path(path)
    if "\0" in str(p):
        raise InputError(f"cannot write {str(p)!r}: the name has a NUL character")
    if p.is_dir():
        raise InputError(f"cannot write {str(p)!r}: it is a directory")
    if not p.parent.is_dir():
        raise InputError(f"cannot write {str(p)!r}: folder {str(p.parent)!r} does not exist")


def check_folder(path: str | Path) -> Path:
    """Refuse an output folder that exists as something else (call it before the work)."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise InputError(f"cannot write into {str(d)!r}: it exists and is not a folder")
    return d


def make_folder(path: str | Path) -> Path:
    """The output folder ``path``, created with its parents if need be."""
    d = check_folder(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder {str(d)!r}: "
                         f"{e.strerror or e.__class__.__name__}") from None
    return d


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file and a
    rename: never half-written.

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
        binary = isinstance(data, bytes)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            f.write(data)
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
