"""Writing output files: atomically, only where the user asked."""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from autoplan.errors import InputError


def _show(path: str | Path) -> str:
    text = repr(str(path))
    return text if len(text) <= 120 else f"{text[:115]}...{text[-2:]}"


def _why(e: OSError) -> str:
    return {errno.ENOENT: "it does not exist", errno.ELOOP: "it is a loop of symbolic links",
            errno.ENAMETOOLONG: "the name is too long",
            errno.ENOTDIR: "a folder in the path is a file",
            errno.EACCES: "permission denied"}.get(e.errno, e.strerror or type(e).__name__)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


#: Folders of the kernel's own files: an open file descriptor (``/proc/self/fd/1``, which
#: ``/dev/stdout`` and ``/dev/fd/N`` link to) or a process file is not a file to replace.
_KERNEL_FOLDERS = ("/proc/", "/sys/")

_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


def _through_kernel_files(p: Path) -> str | None:
    """The first link target under /proc or /sys on the way from ``p`` (its final name
    followed link by link), if any: the rename of :func:`write_atomic` would replace the
    link (``/dev/stdout`` itself) with a regular file."""
    cur = os.path.abspath(p)
    parent = os.path.dirname(cur)
    real_parent = os.path.realpath(parent)
    if (not (parent + "/").startswith(_KERNEL_FOLDERS) and real_parent != parent
            and real_parent.startswith(_KERNEL_FOLDERS)):
        return os.path.join(real_parent, os.path.basename(cur))  # /dev/fd/1: /proc/self/fd/1
    for hops in range(_MAX_LINKS):
        if hops and cur.startswith(_KERNEL_FOLDERS):
            return cur
        if not os.path.islink(cur):
            return None  # a path into /proc itself: the folder takes no file (probe)
        cur = os.path.abspath(os.path.join(os.path.dirname(cur), os.readlink(cur)))
    return None  # a longer chain: the stat below reports the loop


def check_writable(path: str | Path, probe: bool = True) -> None:
    """Refuse an output path :func:`write_atomic` cannot write, or must not replace: an
    empty name, a folder (or a name ending in ``/``), anything but a regular file (a
    device such as ``/dev/null``, a FIFO, a socket: the rename would put a file in its
    place), a link into /proc or /sys (``/dev/stdout``: an open file descriptor, whose
    link the rename would replace), a missing folder (call it before the work)."""
    s = str(path)
    if not s:
        raise InputError("cannot write '': the output path is empty")
    if "\0" in s:
        raise InputError(f"cannot write {_show(s)}: the name has a NUL character")
    if s.endswith(("/", os.sep)):
        raise InputError(f"cannot write {_show(s)}: a name ending in '/' is a folder; give "
                         f"a file name")
    p = Path(s)
    try:
        kernel = _through_kernel_files(p)
    except OSError:
        kernel = None  # unreadable links: the stat below names the problem
    if kernel is not None:
        raise InputError(f"cannot write {_show(s)}: it leads to {_show(kernel)}, a file of "
                         f"the kernel (an open file descriptor such as /dev/stdout), which "
                         f"autoplan does not replace; give a file name")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"cannot write {_show(s)}: {_why(e)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot write {_show(s)}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"cannot write {_show(s)}: it is {_kind(st.st_mode)}, and autoplan "
                             f"writes only over a regular file or a new one")
    try:
        parent_ok = stat.S_ISDIR(os.stat(p.parent).st_mode)
    except OSError:
        parent_ok = False
    if not parent_ok:
        raise InputError(f"cannot write {_show(s)}: folder {_show(p.parent)} does not exist")
    if not probe:
        return
    # a folder that exists may still refuse new files (read-only, /proc, permissions):
    # the temporary file write_atomic needs is tried now, not after the work
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:64]}.", dir=p.parent)
    except OSError as e:
        raise InputError(f"cannot write {_show(s)}: folder {_show(p.parent)} takes no new "
                         f"file ({e.strerror or type(e).__name__})") from None
    os.close(fd)
    os.unlink(tmp)


def check_folder(path: str | Path) -> Path:
    """Refuse an output folder that exists as something else, or that could not be made
    (a file on its path), before the work; return it."""
    s = str(path)
    if not s:
        raise InputError("cannot write into '': the output folder is empty")
    if "\0" in s:
        raise InputError(f"cannot write into {_show(s)}: the name has a NUL character")
    d = Path(s)
    for up in (d, *d.parents):  # the nearest part of the path that exists: a folder
        try:
            st = os.stat(up)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):  # not there: look further up
                continue
            raise InputError(f"cannot write into {_show(s)}: {_why(e)}") from None
        if not stat.S_ISDIR(st.st_mode):
            what = "it exists and is not a folder" if up == d else f"{_show(up)} is not a folder"
            raise InputError(f"cannot write into {_show(s)}: {what}")
        break
    return d


def make_folder(path: str | Path) -> Path:
    """The output folder ``path``, created with its parents if need be."""
    d = check_folder(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder {_show(d)}: "
                         f"{e.strerror or e.__class__.__name__}") from None
    return d


@contextmanager
def _cleanup_on_terminate():
    """While a temporary file exists: SIGTERM and SIGHUP raise SystemExit (exit 128 + the
    signal) instead of killing the process, so the ``finally`` that removes the file runs.
    Only in the main thread, and only where nobody else handles the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            saved[sig] = signal.signal(sig, _terminate)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file and a
    rename: never half-written.

    On failure the old file (if any) is left as it was, no temporary file remains, and an
    unwritable path is an :class:`InputError`.
    """
    check_writable(path, probe=False)  # the temporary file below is the probe itself
    p = Path(path)
    with _cleanup_on_terminate():
        _write(p, data)


def _write(p: Path, data: str | bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:64]}.", dir=p.parent)
    except OSError as e:
        raise InputError(
            f"cannot write {_show(p)}: {e.strerror or e.__class__.__name__}") from None
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
                f"cannot write {_show(p)}: {e.strerror or e.__class__.__name__}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
