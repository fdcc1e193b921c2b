"""bench/aic_plans.py: aiconfigurator's result rows as concrete autoplan plans, priced.

No aiconfigurator needed: the rows are copies of its ``best_config_topn.csv`` for
Llama-3.1-70B / 16 H200 (ISL 4000, OSL 500, TTFT 2000 ms, TPOT 30 ms, trtllm), trimmed
to the columns the bench reads, plus a DeepSeek-V3 attention-DP / EP row.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import aic_plans

AGG = {"tp": 4, "pp": 1, "dp": 1, "moe_tp": 1, "moe_ep": 1, "bs": 28, "global_bs": 28,
       "num_total_gpus": 4, "tokens/s/gpu": 228.764, "tokens/s/gpu_cluster": 228.764,
       "tokens/s/user": 34.332, "tokens/s": 915.056, "ttft": 858.598, "tpot": 29.128,
       "memory": 46.974, "parallel": "tp4pp1dp1etp1ep1"}
DISAGG = {"(p)tp": 1, "(p)pp": 1, "(p)dp": 1, "(p)moe_tp": 1, "(p)moe_ep": 1, "(p)bs": 1,
          "(p)global_bs": 1, "(p)workers": 4, "(d)tp": 4, "(d)pp": 1, "(d)dp": 1,
          "(d)moe_tp": 1, "(d)moe_ep": 1, "(d)bs": 88, "(d)global_bs": 88, "(d)workers": 1,
          "num_total_gpus": 8, "tokens/s/gpu": 256.5, "tokens/s/gpu_cluster": 256.5,
          "tokens/s/user": 40.551, "tokens/s": 2052.0, "ttft": 1578.348, "tpot": 24.66,
          "(p)memory": 136.806, "(d)memory": 67.017}
INPUTS = {"model": "meta-llama/Llama-3.1-70B", "topology": "h200-2node", "isl": 4000,
          "osl": 500, "batch": 1, "prefill_batch": None, "dtype": "bf16", "kv_dtype": "bf16",
          "objective": "throughput", "placement": "auto", "ttft_slo_ms": 2000.0,
          "tpot_slo_ms": 30.0, "max_memory_fraction": 0.9, "engine": "trtllm"}


def _write(folder: Path, mode: str, rows: list[dict]) -> None:
    d = folder / "run" / mode
    d.mkdir(parents=True)
    with (d / "best_config_topn.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def picks(tmp_path):
    _write(tmp_path, "agg", [AGG, {**AGG, "tp": 8, "num_total_gpus": 8,
                                    "tokens/s/gpu_cluster": 205.4}])
    _write(tmp_path, "disagg", [DISAGG])
    return aic_plans.read_picks(tmp_path, 16)


def test_rows_become_picks(picks):
    agg, dis = picks["agg"], picks["disagg"]
    assert (agg.copies, agg.unit_gpus, agg.decode.tp, agg.decode.global_bs) == (4, 4, 4, 28)
    assert agg.summary() == "agg 4x tp4pp1 bs28"
    assert (dis.copies, dis.prefill_workers, dis.decode_workers, dis.used_gpus) == (2, 4, 1, 16)


def test_agg_is_a_colocated_plan(picks):
    plan = aic_plans.to_plan(picks["agg"], INPUTS, "h200-2node")
    assert plan["placement"] == "colocated"
    assert plan["inputs"]["batch"] == 28 and plan["inputs"]["prefill_batch"] == 1
    assert plan["decode"]["replicas"] == 4 and plan["decode"]["stages"][0]["tp"] == 4
    assert plan["prefill"]["replica_devices"] == plan["decode"]["replica_devices"]
    r = aic_plans.price(plan)
    assert r["ok"], r["errors"]
    assert r["figures"]["tpot_ms"] <= 30


def test_disagg_is_two_pools(picks):
    plan = aic_plans.to_plan(picks["disagg"], INPUTS, "h200-2node")
    assert plan["placement"] == "disaggregated"
    assert (plan["prefill"]["replicas"], plan["decode"]["replicas"]) == (8, 2)
    assert plan["devices"] == 16
    # replica by replica: 4 one-GPU prefill workers then a TP4 decode worker in one node
    assert plan["decode"]["replica_devices"][0] == [["node0.d4", "node0.d5", "node0.d6",
                                                     "node0.d7"]]
    r = aic_plans.price(plan)
    # 70B bf16 on one H200: aiconfigurator fits it in 141 GiB, autoplan's 90% headroom not
    assert not r["ok"] and any(e.startswith("memory headroom") for e in r["errors"])
    assert r["figures"]["throughput_tokens_per_s"] > 0


def test_expert_parallel_rows_are_not_priced_yet(tmp_path):
    ep = {**DISAGG, "(p)dp": 16, "(p)moe_ep": 16, "(p)global_bs": 16, "(p)workers": 1,
          "(d)tp": 1, "(d)dp": 16, "(d)moe_ep": 16, "(d)bs": 11, "(d)global_bs": 176,
          "num_total_gpus": 32}
    _write(tmp_path, "disagg", [ep])
    pick = aic_plans.read_picks(tmp_path, 32)["disagg"]
    assert pick.decode.label() == "tp1pp1dp16etp1ep16"
    assert not aic_plans.plain(pick)
    from autoplan.plan_schema import Stage
    if "ep" not in Stage.model_fields:
        assert aic_plans.to_plan(pick, INPUTS, "h200-4node") == aic_plans.NOT_PRICED_EP


def test_autoplan_only_table_has_no_aiconfigurator_rows():
    """``--autoplan-only``: aiconfigurator skipped, its rows absent, autoplan's row whole."""
    import vs_aiconfigurator as bench

    rec = {"case": {"title": "Llama-3.1-70B / 16xH200"},
           "aiconfigurator": {"wall_s": None, "peak_rss_mib": None, "rc": None, "picks": {},
                              "chosen": None, "skipped": True},
           "autoplan": {"summary": "disagg (4x tp1 bs1 + 4x tp2 bs47)", "wall_s": 0.9,
                        "peak_rss_mib": 72.0, "status": "optimal", "solve_seconds": 0.3,
                        "tokens_per_s_per_gpu": 318.5,
                        "priced_by_autoplan": {"ok": True, "tokens_per_s_per_gpu": 318.5}}}
    lines = bench.table([rec]).splitlines()
    assert len(lines) == 3 and "aiconfigurator" not in lines[2]
    assert "| autoplan | 0.9 | 72 | optimal (solver 0.3 s) |" in lines[2]
