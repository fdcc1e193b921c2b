"""The accuracy benches over the shipped measurement files (bench/accuracy.py's sections).

(b) The end-to-end table reads four CSVs, two of which (the 2023 rows) state no ``method``
column; a row-reading change once made the whole report fail on them. It must price every
row of an engine autoplan prices, and its held-out summary must count every held-out row.
(d) The maximum-load throughput rows run the batch trtllm-bench would (its rounding rules,
worked by hand) and that their memory holds; the peer's command is autoplan's operating
point. (e) The vLLM serving rows run what vLLM's KV cache holds.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

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


# --- (d) maximum-load throughput rows (bench/max_throughput.py) ----------------------------

import max_throughput  # noqa: E402


def test_executor_limits_follow_trtllm_bench_rounding():
    # worked by hand from the rules in the module docstring (trtllm-bench's tuning.py)
    assert max_throughput.executor_limits(10, 1000, 1000) == (64, 2048)  # floors 64 / 2048
    assert max_throughput.executor_limits(100, 1000, 1000) == (128, 2048)  # 32s below 256
    assert max_throughput.executor_limits(300, 1000, 1000) == (384, 2048)  # 128s below 1024
    # 1500 -> 256s: 1536; tokens 1500 * 9 = 13500 -> 1024s: 14336 (above isl + bs)
    assert max_throughput.executor_limits(1500, 8192, 1024) == (1536, 14336)
    # capped at 4096 requests; tokens 8192 -> 1024s
    assert max_throughput.executor_limits(5000, 1024, 1024) == (4096, 8192)
    # chunked prefill off: a whole prompt per step, isl + bs
    assert max_throughput.executor_limits(40, 32768, 1024) == (64, 32832)
    assert max_throughput.executor_limits(40, 32768, 1024, chunked=True) == (64, 2048)


def test_every_throughput_row_runs_a_batch_its_memory_holds():
    from autoplan.catalog import load_model, load_topology
    from autoplan.cost.estimate import place_even_pipeline
    from autoplan.cost.pipeline import memories_for
    from autoplan.inputs.workload import Precision

    rows = max_throughput.read_rows()
    assert len(rows) == 19
    for r in rows:
        p = max_throughput.price(r, 0.95)
        assert 1 <= p.batch == min(p.max_batch_size, p.kv_batch)
        model = load_model(r.model)
        topo = load_topology(max_throughput.TOPOLOGY[r.device_kind], None, "trtllm")
        stages = place_even_pipeline(model, topo, r.device_kind, r.tp, 1, r.attention_dp, r.ep)
        mem = memories_for(model, topo, stages, p.batch * r.attention_dp, r.isl + r.osl,
                           p.max_num_tokens * r.attention_dp,
                           Precision(r.weight_dtype, "bf16", r.kv_dtype))[0]
        cap = topo.kinds[r.device_kind].capacity_bytes
        assert mem.total_bytes <= cap  # the running batch fits the device
        # every running sequence emits at most one token per step
        gpus = r.tp * r.attention_dp
        assert p.predicted <= p.batch * r.attention_dp / (p.tpot_ms / 1e3) / gpus * (
            r.osl / (r.osl - 1))
        assert p.max_num_tokens >= r.isl + p.max_batch_size  # chunked prefill off
    lines = max_throughput.table(0.95, rows, simulate_run=False)
    assert sum(1 for ln in lines if ln.startswith("| t")) == 19


def test_the_peer_prices_each_row_at_autoplans_operating_point(tmp_path):
    # aiconfigurator's `cli estimate` gets the row's mapping and the batch per rank and step
    # budget autoplan's side runs (no aiconfigurator needed to build the command)
    rows = {r.id: r for r in max_throughput.read_rows()}
    dense = max_throughput.price(rows["t01"], 0.95)
    cmd = max_throughput.aic_command(tmp_path / "aic", tmp_path / "m", dense)
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert cmd[1:3] == ["cli", "estimate"]
    assert flags["--batch-size"] == str(dense.batch) and flags["--tp-size"] == "2"
    assert flags["--ctx-tokens"] == str(dense.max_num_tokens)
    assert flags["--system"] == "h200_sxm" and flags["--gemm-quant-mode"] == "fp8"
    assert "--attention-dp-size" not in flags
    dep = max_throughput.price(rows["t16"], 0.95)  # DeepSeek-R1 DEP8: block FP8, MoE TP 1
    flags = dict(zip(*(lambda c: (c[3::2], c[4::2]))(
        max_throughput.aic_command(tmp_path / "aic", tmp_path / "m", dep))))
    assert (flags["--attention-dp-size"], flags["--moe-ep-size"], flags["--moe-tp-size"]) == (
        "8", "8", "1")
    assert flags["--gemm-quant-mode"] == flags["--moe-quant-mode"] == "fp8_block"
    assert flags["--batch-size"] == str(dep.batch) == "384"  # per rank, as aiconfigurator reads it


# --- (e) maximum-load serving rows (bench/serving_throughput.py) ---------------------------

import serving_throughput  # noqa: E402


def test_vllm_runs_the_batch_its_kv_cache_holds_and_every_request_streams():
    rows = serving_throughput.read_rows()
    assert len(rows) == 11
    # vLLM's API-server default: 1024 running sequences on an H100 / H200, 256 on an A100
    assert serving_throughput.max_num_seqs(80e9, "h100-sxm") == 1024
    assert serving_throughput.max_num_seqs(85.9e9, "a100-sxm-80gb") == 256
    assert serving_throughput.max_num_seqs(48e9, "l40s") == 256
    short = {r.id: r for r in rows}
    # a long prompt holds more KV than a short one: fewer sequences run
    long_p, short_p = (serving_throughput.price(short[i]) for i in ("v01", "v02"))
    assert 1 <= long_p.batch < short_p.batch
    assert long_p.batch == min(long_p.kv_batch, 1024, long_p.row.requests)
    # the simulated run emits every output token of the run: its rate times its duration
    assert long_p.predicted * long_p.duration_s == pytest.approx(
        long_p.row.requests * long_p.row.mean_output, rel=1e-9)
    lines = serving_throughput.table(rows[:2])
    assert sum(1 for ln in lines if ln.startswith("| v")) == 2
