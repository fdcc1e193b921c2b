"""Reading input files (plans, model configs, topologies, profiles, measurement CSVs):
one helper, so that every one is a regular file of bounded size before a byte is read.

A FIFO would block the read forever, ``/dev/zero`` would fill memory, a folder, a
socket or a symbolic-link loop would raise an OS error; each gets a one-line
:class:`~autoplan.errors.InputError` that says what the path is, not "does not exist".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from autoplan.errors import InputError, first_error

MAX_INPUT_BYTES = 64 << 20
"""The largest input file read (64 MiB; real plans, configs and topologies are KBs)."""

_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0))


def show(path: str | Path, most: int = 120) -> str:
    """A path for a message: its repr, shortened when long (names may be 4 KB)."""
    text = repr(str(path))
    return text if len(text) <= most else f"{text[: most - 5]}...{text[-2:]}"


def show_value(value: object, most: int = 40) -> str:
    """A value read from an input, for a message: its repr, cut to ``most`` characters."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def config_int(value: object, key: str, maximum: int) -> int:
    """``value`` of a model config's ``key`` if it is a positive integer of at most
    ``maximum`` (a JSON true or 2.0 is not); else an InputError naming the key."""
    from autoplan.errors import InputError

    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"model config key {key!r} must be a positive integer, got {show_value(value)}")
    if value > maximum:
        raise InputError(f"model config key {key!r} must be at most {maximum}, got {show_value(value)}")
    return value


def what_is(mode: int) -> str:
    """What a file of ``mode`` is, for a message."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def os_reason(e: OSError) -> str:
    """Why an OS call on a path failed, in words."""
    return {errno.ENOENT: "it does not exist",
            errno.ELOOP: "it is a loop of symbolic links",
            errno.ENAMETOOLONG: "the name is too long",
            errno.ENOTDIR: "a folder in the path is not a folder",
            errno.EACCES: "permission denied",
            errno.EISDIR: "it is a directory"}.get(e.errno, e.strerror or e.__class__.__name__)


def path_state(path: str | Path) -> str:
    """``file`` (a regular file, through symbolic links), ``folder``, ``missing``, or
    ``other`` (a FIFO, a device, a socket, a symbolic-link loop, a dangling link, a name
    too long: something a read of it must refuse by name). Never raises."""
    p = str(path)
    if not p or "\0" in p:
        return "other"
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            try:
                os.lstat(p)  # a dangling symbolic link is something, not nothing
            except OSError:
                return "missing"
        return "other"
    except ValueError:
        return "other"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "folder" if stat.S_ISDIR(st.st_mode) else "other"


def read_bytes(path: str | Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); else an InputError
    naming ``what`` (``plan``, ``model config``, ...) and what the path is."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    p = str(path)
    if not p:
        raise InputError(f"cannot read {what} '': an empty path")
    if "\0" in p:
        raise InputError(f"cannot read {what} {show(p)}: the name has a NUL character")
    try:
        fd = os.open(p, _OPEN_FLAGS)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except OSError as e:
        raise InputError(f"cannot read {what} {show(p)}: {os_reason(e)}") from None
    try:
        st = os.fstat(fd)  # of what was opened: no race with a swap after a stat
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"cannot read {what} {show(p)}: it is {what_is(st.st_mode)}, "
                             f"not a regular file")
        if st.st_size > limit:
            raise InputError(f"{what} {show(p)} is {st.st_size} bytes, more than the "
                             f"{limit} bytes autoplan reads")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise InputError(f"{what} {show(p)} is more than the {limit} bytes autoplan reads")
        return b"".join(chunks)
    except OSError as e:
        raise InputError(f"cannot read {what} {show(p)}: {os_reason(e)}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, what: str, limit: int | None = None) -> str:
    """:func:`read_bytes` decoded as UTF-8 (a leading byte-order mark, as Excel's "CSV
    UTF-8" writes, is dropped)."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what} {show(path)} is not UTF-8 text") from None


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""


def _unique_pairs(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"key {k[:60]!r} appears twice in one object")
        out[k] = v
    return out


def loads_json(text: str):
    """``json.loads``, refusing an object with a repeated key (as YAML inputs do): the
    last of two would otherwise win silently, unlike what a reader of the file sees
    first. Raises DuplicateKey, json.JSONDecodeError or ValueError / RecursionError."""
    import json

    return json.loads(text, object_pairs_hook=_unique_pairs)



def read_json(path: str | Path, what: str):
    """A JSON file (:func:`read_text`, :func:`loads_json`); every failure is one
    :class:`InputError` naming ``what``, the file and the problem."""
    import json

    text = read_text(path, what)
    try:
        return loads_json(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {show(path)} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except DuplicateKey as e:
        raise InputError(f"{what} {show(path)}: {e}") from None
    except (ValueError, RecursionError) as e:  # over-long integer literal, nesting too deep
        raise InputError(f"{what} {show(path)} is not valid JSON: {first_error(e)}") from None
