"""bench/engine_accuracy.py's end-to-end table over the shipped measurement files.

The table reads four CSVs, two of which (the 2023 rows) state no ``method`` column; a
row-reading change once made the whole report fail on them. The table must price every
row of an engine autoplan prices, and its held-out summary must count every held-out row.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import engine_accuracy

from autoplan.calibrate.host_fit import engine_of, read_methods
from autoplan.errors import InputError

DATA = engine_accuracy.DATA


def test_the_e2e_table_prices_every_row_of_every_shipped_file():
    lines = engine_accuracy.e2e_table()
    rows = [ln for ln in lines if ln.startswith("| ") and ln.count("|") >= 17]
    priced = [ln for ln in rows if "not priced" not in ln and not ln.startswith("| id ")]
    n = 0
    for name in ("heldout-engines.csv", "engines-e2e.csv", "calibration.csv", "heldout.csv"):
        with open(DATA / name, newline="") as f:
            n += sum(1 for r in csv.DictReader(f) if engine_of(r["engine"]) is not None)
    assert len(priced) == n
    held = [ln for ln in lines if ln.startswith("| all | all | all |")]
    with open(DATA / "heldout-engines.csv", newline="") as f:
        assert held and held[0].split(" | ")[3] == str(sum(1 for _ in csv.DictReader(f)))


def test_a_file_without_a_method_column_is_refused_only_where_it_is_needed(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("id,engine,model\nr1,vllm-0.11,Qwen/Qwen3-8B\n")
    assert read_methods(p, required=False) == {}
    try:
        read_methods(p)
    except InputError as e:
        assert "no method column" in str(e)
    else:
        raise AssertionError("a method-less CSV was accepted for fitting host terms")
