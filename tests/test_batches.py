"""Batch sizes as decisions (autoplan.search.batches).

- physics: the two properties the batch search's bound rests on, over shipped models,
  device kinds and engines: a stage's time never falls as its batch grows, and the
  longest stage that fits never grows;
- the memory bound of the batch axes: past it nothing fits;
- an independent oracle: the brute force over every pipeline of the tables of EVERY
  batch size in the range (no bound assumed) equals the menu's choice, on seeded random
  small instances, for the throughput and devices objectives;
- end to end: a throughput plan without --batch is no worse than the same command at
  any fixed batch, and records what it chose.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from test_oracle import instance

from autoplan.catalog import load_model, load_topology
from autoplan.inputs.workload import Precision, Workload
from autoplan.rules.validate import validate
from autoplan.search.batches import batch_limits, build_menu
from autoplan.search.brute import brute_force_replicated
from autoplan.search.planner import plan
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, solve
from autoplan.search.tables import INF, build_tables

POOLS = ("colocated", "decode", "prefill")

CASES = [
    ("meta-llama/Llama-3.1-8B", "h100-sxm-x8", "vllm", "bf16"),
    ("meta-llama/Llama-3.1-70B", "h200-x8", "trtllm", "bf16"),
    ("meta-llama/Llama-3.1-70B", "b200-x8", "sglang", "fp8"),
    ("mistralai/Mixtral-8x7B-v0.1", "a100-sxm-80gb-x8", "vllm", "bf16"),
    ("Qwen/Qwen3-235B-A22B", "h200-x8", "sglang", "fp8"),
    ("deepseek-ai/DeepSeek-V3", "h200-x8", "trtllm", "fp8"),
    ("meta-llama/Llama-3.1-8B", "l40s-x8", None, "bf16"),
    ("meta-llama/Llama-3.1-70B", "h100x8-lpu576", "vllm", "fp8"),
]


def _tables(model, topo, b: int, p: int, isl: int, osl: int, dtype: str):
    work = Workload(isl, osl, b, Precision(dtype, "bf16", dtype if dtype == "fp8" else "bf16"),
                    0.9, p)
    return build_tables(model, topo, work, POOLS, packing=False, lower=False)


def _grid() -> list[int]:
    # every batch up to 40, then a widening grid to 1024
    return list(range(1, 41)) + [48, 63, 64, 65, 96, 127, 128, 129, 192, 256, 384, 512, 1024]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].split('/')[1]}-{c[1]}-{c[2]}")
def test_stage_times_never_fall_as_the_batch_grows(case):
    name, topo_name, engine, dtype = case
    model, topo = load_model(name), load_topology(topo_name, None, engine)
    grid = _grid()
    for axis in ("batch", "prefill_batch"):
        prev = None
        for x in grid:
            b, p = (x, 1) if axis == "batch" else (1, x)
            t = _tables(model, topo, b, p, 2048, 256, dtype)
            if prev is not None:
                for pool, tab in t.pools.items():
                    old = prev.pools[pool]
                    # what fits at a batch fits at every smaller one
                    assert np.all(tab.max_len <= old.max_len), (axis, x, pool)
                    for ph, arr in tab.time_t.items():
                        fin = arr < INF
                        assert np.all(old.time_t[ph][fin] < INF), (axis, x, pool, ph)
                        assert np.all(arr[fin] >= old.time_t[ph][fin]), (axis, x, pool, ph)
                    # (a config with no stage at this batch, e.g. a colocated one whose
                    # step budget cannot carry it, has no hand-offs to compare)
                    alive = tab.max_len.any(axis=0)
                    for ph, arr in tab.hop_t.items():
                        assert np.all(arr[alive] >= old.hop_t[ph][alive]), (axis, x, pool, ph)
                assert np.all(t.kv_t >= prev.kv_t) or axis == "batch"
            prev = t


def test_nothing_fits_past_the_memory_bound():
    model, topo = load_model("meta-llama/Llama-3.1-70B"), load_topology("h200-x8")
    work = Workload(4000, 500, 1, Precision(), 0.9, 1)
    b_hi, p_hi = batch_limits(model, topo, work, None)
    assert 1 < b_hi < p_hi  # decode holds isl + osl per sequence, prefill isl
    for pool, b, p in (("decode", b_hi + 1, 1), ("prefill", 1, p_hi + 1),
                       ("colocated", b_hi + 1, 1)):
        t = build_tables(model, topo, dataclasses.replace(work, batch=b, prefill_batch=p),
                         (pool,), packing=False, lower=False)
        assert solve(t, (pool,), 500, Limits(time_limit_s=30), goal="devices"
                     if pool == "prefill" else {"decode": "phase", "colocated": "rate"}[pool]
                     ).status == "infeasible"


N_INSTANCES = 48
MOST = (24, 6)  # the batch range of the oracle: every decode batch to 24, prefill to 6


@pytest.mark.parametrize("chunk", range(4))
def test_batch_search_equals_brute_force_over_every_batch(chunk):
    """The menu's choice against every pipeline of the tables of every batch in the
    range, every replica count (colocated pools keep their prefill batch: see Menu)."""
    checked = 0
    for seed in range(3000 + chunk, 3000 + N_INSTANCES, 4):
        model, topo, work, pools, _ = instance(seed, max_layers=6)
        rng = random.Random(seed)
        work = dataclasses.replace(work, batch=1, prefill_batch=1)
        mode = "colocated" if pools == ("colocated",) else "disaggregated"
        uniform = seed % 2 == 0
        searched = ("batch", "prefill_batch") if rng.random() < 0.7 else ("batch",)
        menu = build_menu(model, topo, work, pools, uniform, searched, None, most=MOST)
        limits = Limits(time_limit_s=60)
        if rng.random() < 0.5:  # an SLO that binds somewhere inside the range
            mid = build_tables(model, topo, dataclasses.replace(work, batch=8, prefill_batch=2),
                               pools, uniform_tp=uniform)
            free = solve(mid, pools, work.osl, limits)
            if free.status != "infeasible":
                limits = Limits(tpot_slo_t=int(free.tpot_t * rng.choice([1.0, 1.3])),
                                time_limit_s=60)
        objective = rng.choice(["throughput", "throughput", "devices"])
        tables = []
        b_range = range(1, MOST[0] + 1)
        p_range = range(1, MOST[1] + 1) if "prefill_batch" in searched else [1]
        if mode == "colocated":
            pairs = [(b, 1) for b in b_range]
        else:
            pairs = [(b, 1) for b in b_range] + [(1, p) for p in p_range if p > 1]
        for b, p in pairs:
            tables.append(build_tables(model, topo, dataclasses.replace(work, batch=b,
                                       prefill_batch=p), pools, uniform_tp=uniform))
        rate = None
        if objective == "devices":
            top = brute_force_replicated(tables[0], mode, work.osl, limits, "throughput",
                                         more=tuple(tables[1:]))
            if top is None:
                continue
            rate = float(top[0]) * rng.choice([0.3, 0.9])
        expected = brute_force_replicated(tables[0], mode, work.osl, limits, objective, rate,
                                          more=tuple(tables[1:]))
        best, _, _, _ = plan_replicated(menu, [mode], work.osl, limits, objective, rate)
        got = None if best is None else (best.rate, best.devices)
        if best is not None and best.link_binds:
            continue  # a documented limit of the replica choice (test_oracle.py)
        assert got == expected, f"seed {seed} {mode} {objective} {searched}: {got} != {expected}"
        if best is not None:
            assert best.optimal and not menu.breach
        checked += 1
    assert checked >= N_INSTANCES // 8


SLO = {"ttft_slo_ms": 1000.0, "tpot_slo_ms": 20.0}


def _plan(**kw):
    return plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=2048, osl=256,
                objective="throughput", **SLO, **kw)


def test_throughput_plan_chooses_its_batches_and_beats_every_fixed_batch():
    free = _plan()
    assert free.status == "optimal" and validate(free).ok
    assert "batch" in free.inputs.searched
    chosen = free.inputs.batch
    assert chosen > 1  # one sequence at a time cannot be the best throughput of 8 GPUs
    for b in sorted({1, 8, chosen - 1, chosen + 1, 2 * chosen}):
        try:
            fixed = _plan(batch=b)
        except Exception as e:  # a batch the SLOs or memory refuse
            assert "SLO" in str(e) or "memory" in str(e)
            continue
        assert free.objective >= fixed.objective * (1 - 1e-9), (b, chosen)
    same = _plan(batch=chosen, prefill_batch=free.inputs.prefill_batch)
    assert same.objective == pytest.approx(free.objective, rel=1e-12)
    assert same.inputs.searched == []


def test_latency_plans_keep_batch_one():
    p = plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", isl=2048, osl=256)
    assert p.inputs.batch == 1 and p.inputs.searched == []


def test_explain_re_solves_with_the_batches_still_decisions():
    from autoplan.explain.context import Context
    from autoplan.explain.neighbours import request_of

    free = _plan()
    req = request_of(Context.of(free))
    assert req.batch is None and req.prefill_batch is None
    assert set(req.searched) == {"batch", "prefill_batch"}
    fixed = _plan(batch=free.inputs.batch, prefill_batch=free.inputs.prefill_batch)
    again = request_of(Context.of(fixed))
    assert (again.batch, again.prefill_batch) == (free.inputs.batch, free.inputs.prefill_batch)
