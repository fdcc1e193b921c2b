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
from collections import Counter

import pytest
from oracle_independent import (
    devices_oracle,
    latency_oracle,
    random_instance,
    throughput_oracle,
    whole_fraction,
)

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
    rng = random.Random(seed + 7)
    if rng.random() < 0.4:  # memory binds: pipeline cuts (uneven ones among them)
        frac = whole_fraction(inst)
        if frac > 0:
            inst.kw["max_memory_fraction"] = min(1.0, frac * rng.choice([0.7, 0.8, 0.9]))
    best = latency_oracle(inst)
    over: dict = {}
    if best.value is not None and rng.random() < 0.5:
        key, val = rng.choice([("ttft_slo_ms", best.doc["ttft_ms"]),
                               ("tpot_slo_ms", best.doc["tpot_ms"])])
        over = {key: val * rng.choice([1.0, 1.0, 0.9999])}  # at the optimum, or just below
        best = latency_oracle(inst, **over)
    p = _plan(inst, **over)
    where = f"seed {seed} ({inst.about}; {inst.kw}, {over})"
    if p is None:
        assert best.value is None, f"{where}: planner infeasible, a valid plan {best.value}"
        return "infeasible "
    assert best.value is not None, f"{where}: planner's valid plan missed by the brute force"
    assert p.e2e_ms >= best.value * (1 - REL), f"{where}: planner below brute force"
    if p.status == "optimal":
        assert p.e2e_ms <= best.value * (1 + REL), (
            f"{where}: optimal {p.e2e_ms} but a valid plan has {best.value}")
    return f"{p.status} {shape(p)}"


def shape(p) -> str:
    """What a plan exercises (for the coverage counts the tests print)."""
    tags = {p.placement}
    for ph in (p.prefill, p.decode):
        st = ph.stages
        tags |= {"pp"} if len(st) > 1 else set()
        tags |= {"uneven"} if len({s.layers[1] - s.layers[0] for s in st}) > 1 else set()
        tags |= {"ep"} if any(s.ep > 1 for s in st) else set()
        tags |= {"dp"} if any(s.attention_dp > 1 for s in st) else set()
        tags |= {"replicas"} if ph.replicas > 1 else set()
        tags |= {"kinds"} if len({s.device_kind for s in st}) > 1 else set()
    tags |= {"designs"} if p.more_designs else set()
    return ",".join(sorted(tags))


def check_throughput(seed: int, folder, devices: bool = False) -> str:
    inst = random_instance(seed, folder)
    inst.kw["placement"] = "colocated"
    rng = random.Random(seed + 11)
    if rng.random() < 0.4:  # memory binds: pipelines of several stages, fewer replicas
        frac = whole_fraction(inst)
        if frac > 0:
            inst.kw["max_memory_fraction"] = min(1.0, frac * rng.choice([0.55, 0.8]))
    where = f"seed {seed} ({inst.about}; {inst.kw})"
    best = throughput_oracle(inst, objective="throughput")
    if devices:
        if best.value is None:
            return "infeasible"
        # rates off the deployments' own rates: at a rate one of them serves exactly, the
        # throughput tables (stage times rounded up, README "What optimal means") miss it
        rate = best.value / inst.kw["osl"] * random.Random(seed).choice([0.23, 0.47, 0.71, 0.93])
        best = devices_oracle(inst, rate)
        p = _plan(inst, objective="devices", request_rate=rate)
        assert p is not None and best.value is not None, where
        assert p.devices >= best.value, f"{where}: planner under the brute force's devices"
        if p.status == "optimal":
            assert p.devices == best.value, f"{where}: {p.devices} devices, {best.value} do"
        return f"{p.status} {shape(p)}"
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
    return f"{p.status} {shape(p)}"




def _count(results) -> Counter:
    c: Counter = Counter()
    for r in results:
        status, _, tags = r.partition(" ")
        c[status] += 1
        c.update(t for t in tags.split(",") if t)
    print(dict(c))
    return c


def test_latency_default(tmp_path) -> None:
    c = _count([check_latency(s, tmp_path) for s in range(80)]
               + [check_latency(s, tmp_path, big=True) for s in range(100, 115)])
    assert c["disaggregated"] and c["ep"], c  # the seeds reach these shapes


def test_throughput_devices_default(tmp_path) -> None:
    _count([check_throughput(s, tmp_path) for s in range(30)]
           + [check_throughput(s, tmp_path, devices=True) for s in range(30)])


@pytest.mark.slow
def test_independent_many(tmp_path) -> None:
    _count([check_latency(s, tmp_path) for s in range(1000, 1300)]
           + [check_latency(s, tmp_path, big=True) for s in range(2000, 2100)])
    _count([check_throughput(s, tmp_path) for s in range(3000, 3150)]
           + [check_throughput(s, tmp_path, devices=True) for s in range(3000, 3150)])


@pytest.mark.parametrize("seed", [1023])
def test_dp_with_ep_1_is_searched(tmp_path, seed) -> None:
    """Seed 1023 (3 MoE layers, SGLang, 2x2 L40S): prefill DP2 x EP1 (the MoE split over
    both devices) validates at e2e 27.21 ms; the planner offered attention DP only with
    EP = the group and claimed `optimal` at 27.74 ms until it searched EP 1 too."""
    inst = random_instance(seed, tmp_path)
    best = latency_oracle(inst, wide=True)
    p = _plan(inst)
    assert p.status == "optimal" and p.e2e_ms <= best.value * (1 + REL)


def test_dp_ep_groups_take_the_models_tp_sizes(tmp_path) -> None:
    """Seed 3: 2 MoE layers of 6 heads / 3 KV heads, 1x3 a100 + 1x1 h100, engine none,
    ISL 128, OSL 8, batch 16. Outside the documented space, a DP2 x EP2 prefill on two of
    the three A100s (a group of 2, not a TP size of this model) validates at e2e 2.2169 ms;
    inside it the planner's `optimal` 2.2307 ms is the brute force's best."""
    inst = random_instance(3, tmp_path)
    p = _plan(inst)
    assert p.status == "optimal"
    assert p.e2e_ms == pytest.approx(latency_oracle(inst).value, rel=REL)
    assert latency_oracle(inst, wide=True).value < p.e2e_ms * (1 - 1e-3)
