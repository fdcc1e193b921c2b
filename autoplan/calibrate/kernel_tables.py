"""Reading the measured kernel tables (``hardware/data/aic-kernels/*.csv.gz``): each a
gzip CSV of bounded size whose columns are named by its header, numbers finite and
bounded; one-line errors name the table, the line or the column."""

from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from autoplan.errors import InputError
from autoplan.inputs.reading import read_bytes

MAX_TABLE_CHARS = 1 << 28  # 256 MiB of CSV text: a gzip bomb stops here


@lru_cache(maxsize=16)
def table(data_dir: str, name: str) -> dict[str, np.ndarray]:
    path = Path(data_dir) / f"{name}.csv.gz"
    raw = read_bytes(path, "kernel table")  # a regular file of bounded size: no FIFO hang
    try:
        text = gzip.decompress(raw).decode("utf-8-sig")  # a spreadsheet's BOM is no column
        if len(text) > MAX_TABLE_CHARS:
            raise ValueError(f"more than {MAX_TABLE_CHARS} characters uncompressed")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        rows = list(reader)
    except (OSError, EOFError, ValueError, csv.Error) as e:
        raise InputError(f"cannot read kernel table {str(path)!r}: {e.__class__.__name__}: "
                         f"{str(e)[:120]}") from None
    if not header:
        raise InputError(f"kernel table {str(path)!r} is empty: no header line")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:  # a dict of columns would keep the last one silently
        raise InputError(f"kernel table {str(path)!r} repeats column {repeated[0][:40]!r}")
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):  # zip(*rows) would cut every column to the shortest row
            raise InputError(f"kernel table {str(path)!r} line {n}: {len(row)} fields, the "
                             f"header has {len(header)}")
    cols = list(zip(*rows)) if rows else [()] * len(header)
    return _Table(name, {h: np.array(c, dtype=object) for h, c in zip(header, cols)})


class _Table(dict):
    """A kernel table's columns by name; a column it lacks is an InputError naming it."""

    def __init__(self, name: str, cols: dict[str, np.ndarray]):
        super().__init__(cols)
        self.name = name

    def __missing__(self, col: str):
        raise InputError(f"kernel table {self.name}.csv.gz has no column {col!r}")


#: Numeric columns that may hold 0 (an MLA prefill's cached prefix); every other shape
#: column counts something of which a kernel has at least one.
_MAY_BE_ZERO = ("kv_len",)

#: Bounds far beyond any kernel measured: a shape of 1e300 would overflow the fit's FLOP
#: counts, a latency of a day is no kernel's.
MAX_SHAPE, MAX_LATENCY_S = 1e12, 86400.0


def numeric(tab: _Table, col: str) -> np.ndarray:
    """A numeric column: finite and bounded; shapes at least 1 (``kv_len``: at least 0),
    ``latency_s`` positive."""
    out = np.array([_number(v) for v in tab[col]], dtype=float)
    top = MAX_LATENCY_S if col == "latency_s" else MAX_SHAPE
    if col == "latency_s":
        low, need = out <= 0, "a positive"
    elif col in _MAY_BE_ZERO:
        low, need = out < 0, "a non-negative"
    else:
        low, need = out < 1, "a positive"
    bad = ~np.isfinite(out) | low | (out > top)
    if bad.any():
        raise InputError(f"kernel table {tab.name}.csv.gz: column {col} holds "
                         f"{str(tab[col][np.argmax(bad)])[:40]!r}, not {need} finite number "
                         f"of at most {top:g}")
    return out


def _number(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


def select(data_dir: str, name: str, system: str, framework: str) -> _Table:
    tab = table(data_dir, name)
    mask = (tab["system"] == system) & (tab["framework"] == framework)
    return _Table(name, {k: v[mask] for k, v in tab.items()})
