"""The planner against an independent brute force (tests/oracle_independent.py): concrete
plans enumerated apart from the planner's code, written as plan JSON and judged by
``autoplan.validate`` alone.

Per seeded instance (a 2-4 layer dense or MoE config.json, 1-6 devices of one or two
kinds in one or two NVLink domains, an engine or none, memory headroom and SLOs that
bind sometimes):

- latency: the planner's plan validates, and when it says ``optimal`` its e2e equals
  the lowest e2e of any valid concrete plan to 1e-9 relative; no concrete plan beats it;
  when it says infeasible, no concrete plan is valid;
- throughput and devices (colocated, batch given): the plan validates, its validated
  throughput (devices) equals the best (fewest) of every colocated deployment of
  disjoint replicas; its table objective is never above the validated figure.
"""

from __future__ import annotations

import random

import pytest
from oracle_independent import devices_oracle, latency_oracle, random_instance, throughput_oracle

import autoplan
from autoplan.errors import InfeasibleError

REL = 1e-9


def _plan(inst, **over):
    try:
        p = autoplan.plan(str(inst.model), str(inst.topology), **{**inst.kw, **over})
    except InfeasibleError:
        return None
    rep = autoplan.validate(p)
    assert rep.ok, rep.errors
    return p


def check_latency(seed: int, folder, big: bool = False) -> str:
    inst = random_instance(seed, folder, big)
    best = latency_oracle(inst)
    over: dict = {}
    rng = random.Random(seed + 7)
    if best.value is not None and rng.random() < 0.5:
        key, val = rng.choice([("ttft_slo_ms", best.doc["ttft_ms"]),
                               ("tpot_slo_ms", best.doc["tpot_ms"])])
        over = {key: val * rng.choice([1.0, 1.0, 0.9999])}  # at the optimum, or just below
        best = latency_oracle(inst, **over)
    p = _plan(inst, **over)
    where = f"seed {seed} ({inst.about}; {inst.kw}, {over})"
    if p is None:
        assert best.value is None, f"{where}: planner infeasible, a valid plan {best.value}"
        return "infeasible"
    assert best.value is not None, f"{where}: planner's valid plan missed by the brute force"
    assert p.e2e_ms >= best.value * (1 - REL), f"{where}: planner below brute force"
    if p.status == "optimal":
        assert p.e2e_ms <= best.value * (1 + REL), (
            f"{where}: optimal {p.e2e_ms} but a valid plan has {best.value}")
    return p.status


def check_throughput(seed: int, folder, devices: bool = False) -> str:
    inst = random_instance(seed, folder)
    inst.kw["placement"] = "colocated"
    where = f"seed {seed} ({inst.about}; {inst.kw})"
    best = throughput_oracle(inst, objective="throughput")
    if devices:
        if best.value is None:
            return "infeasible"
        rate = best.value / inst.kw["osl"] * random.Random(seed).choice([0.2, 0.5, 0.9, 1.0])
        best = devices_oracle(inst, rate)
        p = _plan(inst, objective="devices", request_rate=rate)
        assert p is not None and best.value is not None, where
        assert p.devices >= best.value, f"{where}: planner under the brute force's devices"
        if p.status == "optimal":
            assert p.devices == best.value, f"{where}: {p.devices} devices, {best.value} do"
        return p.status
    p = _plan(inst, objective="throughput")
    if p is None:
        assert best.value is None, f"{where}: planner infeasible, a valid plan {best.value}"
        return "infeasible"
    assert best.value is not None, where
    got = p.throughput_tokens_per_s
    assert got <= best.value * (1 + REL), f"{where}: planner above the brute force"
    assert p.objective <= got * (1 + REL), f"{where}: table objective above its figures"
    if p.status == "optimal":
        assert got >= best.value * (1 - REL), f"{where}: optimal {got}, a plan has {best.value}"
    return p.status


def test_latency_default(tmp_path) -> None:
    for seed in range(40):
        check_latency(seed, tmp_path)
    for seed in range(100, 106):
        check_latency(seed, tmp_path, big=True)


def test_throughput_devices_default(tmp_path) -> None:
    for seed in range(15):
        check_throughput(seed, tmp_path)
        check_throughput(seed, tmp_path, devices=True)


@pytest.mark.slow
def test_independent_many(tmp_path) -> None:
    for seed in range(1000, 1300):
        check_latency(seed, tmp_path)
    for seed in range(2000, 2100):
        check_latency(seed, tmp_path, big=True)
    for seed in range(3000, 3150):
        check_throughput(seed, tmp_path)
        check_throughput(seed, tmp_path, devices=True)
