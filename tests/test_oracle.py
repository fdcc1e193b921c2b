"""CP-SAT against the brute-force enumerator on seeded random small instances.

Each instance: a random decoder (2-12 layers, GQA or MHA), two device kinds in small
fast domains (at most 16 devices), a random workload and memory limit, sometimes an SLO,
colocated or disaggregated. Both search the same integer tables; the optimal objective
(latency, then fewer devices) must be equal, and infeasibility must agree.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from autoplan.catalog import builtin_device_kinds, default_calibrations
from autoplan.graphs.topology import build_topology
from autoplan.inputs.model import model_from_config
from autoplan.inputs.topology import TopologySpec
from autoplan.inputs.workload import Precision, Workload
from autoplan.search.brute import brute_force, brute_force_replicated
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, solve
from autoplan.search.tables import build_tables

N_INSTANCES = 320
KINDS = ["h100-sxm", "a100-sxm-80gb", "l40s", "lpu", "a100-sxm-40gb"]


def instance(seed: int, max_layers: int = 12):
    rng = random.Random(seed)
    layers = rng.randint(2, max_layers)
    heads = rng.choice([8, 16])
    hidden = heads * rng.choice([64, 128])
    model = model_from_config({
        "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": hidden * rng.choice([2, 3, 4]), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": rng.choice([2, 4, heads]),
        "vocab_size": rng.choice([1000, 32000])}, name=f"rand{seed}")
    budget = rng.choice([4, 6, 8, 8, 12, 16])
    nodes = []
    for i, kind in enumerate(rng.sample(KINDS, 2)):
        per = rng.choice([1, 2, 4])
        count = max(1, rng.randint(1, max(1, budget // 2)) // per)
        nodes.append({"name": f"g{i}", "count": count, "devices": {"kind": kind, "count": per},
                      "fabric": {"kind": "fast", "tensor_parallel": True, "latency_s": 2e-6,
                                 "bandwidth_bytes_per_s": rng.choice([50e9, 300e9])}})
    spec = TopologySpec.model_validate({
        "name": f"rand{seed}", "nodes": nodes,
        "networks": [{"name": "eth", "kind": "eth", "bandwidth_bytes_per_s": 12.5e9,
                      "latency_s": 5e-6}]})
    topo = build_topology(spec, builtin_device_kinds(), default_calibrations())
    work = Workload(rng.choice([128, 512, 2048]), rng.choice([16, 128]), rng.choice([1, 4, 32]),
                    Precision(rng.choice(["bf16", "fp8"]), "bf16", "bf16"),
                    rng.choice([0.9, 0.5, 0.2]))
    pools = rng.choice([("colocated",), ("prefill", "decode")])
    return model, topo, work, pools, rng


@pytest.mark.parametrize("chunk", range(8))
def test_cpsat_equals_brute_force(chunk: int) -> None:
    agree = infeasible = 0
    for seed in range(chunk, N_INSTANCES, 8):
        model, topo, work, pools, rng = instance(seed)
        # A quarter of the instances force the per-length form on every config, so both
        # forms of the stage variables meet the oracle.
        # Half of them with an engine's one TP degree per pipeline (hardware/engine_rules.yaml).
        tables = build_tables(model, topo, work, pools, force_per_length=seed % 4 == 3,
                              uniform_tp=seed % 2 == 1)
        limits = Limits(time_limit_s=60)
        if rng.random() < 0.3:  # sometimes bind an SLO: a fraction of the unconstrained optimum
            free = solve(tables, pools, work.osl, limits)
            if free.status != "infeasible":
                limits = Limits(tpot_slo_t=int(free.tpot_t * rng.choice([0.8, 1.0, 1.5])),
                                time_limit_s=60)
        res = solve(tables, pools, work.osl, limits)
        scale = sum(c.devices for c in tables.classes) + 1
        expected = brute_force(tables, pools, work.osl, limits)
        got = None if res.status == "infeasible" else round(res.objective_t * scale)
        assert res.status in ("optimal", "infeasible"), f"seed {seed}: {res.status}"
        assert got == expected, f"seed {seed} {pools}: CP-SAT {got} != brute force {expected}"
        agree += 1
        infeasible += expected is None
    assert agree == len(range(chunk, N_INSTANCES, 8))


N_REPLICATED = 100


@pytest.mark.parametrize("chunk", range(4))
def test_replica_choice_equals_brute_force(chunk: int) -> None:
    """Throughput and devices objectives: Pareto fronts + replica choice against every
    pipeline pair and every replica count, on the same integer tables."""
    for seed in range(1000 + chunk, 1000 + N_REPLICATED, 4):
        model, topo, work, pools, rng = instance(seed, max_layers=8)
        # Prompts prefilled together: the batch, one, or a few.
        work = dataclasses.replace(work, prefill_batch=rng.choice([None, None, 1, 2]))
        mode = "colocated" if pools == ("colocated",) else "disaggregated"
        tables = build_tables(model, topo, work, pools, uniform_tp=seed % 2 == 0)
        objective = rng.choice(["throughput", "devices"])
        limits = Limits(time_limit_s=60)
        if rng.random() < 0.4:
            free = solve(tables, pools, work.osl, limits)
            if free.status != "infeasible":
                limits = Limits(tpot_slo_t=int(free.tpot_t * rng.choice([1.0, 1.5, 3.0])),
                                time_limit_s=60)
        rate = None
        if objective == "devices":
            top = brute_force_replicated(tables, mode, work.osl, limits, "throughput")
            if top is None:
                continue
            rate = float(top[0]) * rng.choice([0.2, 0.5, 0.99])
        expected = brute_force_replicated(tables, mode, work.osl, limits, objective, rate)
        best, _, _, _ = plan_replicated(tables, [mode], work.osl, limits, objective, rate)
        got = None if best is None else (best.rate, best.devices)
        if best is not None and best.link_binds:  # a valid choice, never above the optimum
            assert expected is not None and _better_or_equal(expected, got, objective)
            continue
        assert got == expected, f"seed {seed} {mode} {objective}: {got} != brute force {expected}"
        if best is not None:
            # Proven unless the KV link budget binds (then designs that widen the link
            # are not enumerated, and the plan says so: status feasible, link_bound).
            assert best.optimal != best.link_binds


def _better_or_equal(a, b, objective: str) -> bool:
    """(rate, devices) ``a`` is at least as good as ``b`` for the objective."""
    if objective == "devices":
        return (a[1], -a[0]) <= (b[1], -b[0])
    return (-a[0], a[1]) <= (-b[0], b[1])
