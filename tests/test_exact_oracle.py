"""The planner against the ground-truth oracle (tests/oracle_exhaustive.py): brute force
over concrete plans priced by the validator's cost model, not the planner's tables.

Latency objective on seeded random small instances (2-5 layers, two device kinds,
domains of 1/2/3/4/6/8/12 devices, multi-node fast domains, SRAM-only and two-tier kinds,
leading dense runs), sometimes an SLO set exactly at the oracle's optimum. What must
always hold: the oracle's plan is valid and never worse than the planner's (no valid plan
the planner finds beats a true exhaustive search). What issue 11 asks, equality to 1e-6
relative: ``MAX_DISAGREE`` is the number allowed to differ (0; the README says exactly
what ``optimal`` means).
"""

from __future__ import annotations

import pytest
from oracle_exhaustive import exhaustive, random_instance

from autoplan.errors import InfeasibleError
from autoplan.search.planner import plan

TOL = 1e-6


def compare(seed: int) -> str:
    """'agree', or what differs."""
    model, topo, _spec, work, placement, rng = random_instance(seed)
    # the plan's engine is vLLM: one TP per pipeline, disaggregated pools without PP, EP
    # under TP attention offered
    rules = {"uniform_tp": True, "pp1": True, "ep_under_tp": True}
    best = exhaustive(model, topo, work, placement, **rules)
    slo: dict = {}
    if best is not None and rng.random() < 0.4:
        slo = rng.choice([{"tpot_slo_ms": best.tpot_ms}, {"ttft_slo_ms": best.ttft_ms}])
        best = exhaustive(model, topo, work, placement, **rules, **slo)
        assert best is not None
    try:
        p = plan(model, topo, isl=work.isl, osl=work.osl, batch=work.batch,
                 dtype=work.precision.weight, kv_dtype=work.precision.kv, placement=placement,
                 max_memory_fraction=work.max_memory_fraction, time_limit_s=60, **slo)
    except InfeasibleError:
        assert best is None or slo, f"seed {seed}: the planner finds no plan, the oracle one"
        return "agree" if best is None else "planner infeasible at an SLO the optimum meets"
    assert best is not None, f"seed {seed}: the planner's plan beats an exhaustive search"
    rel = (p.e2e_ms - best.e2e_ms) / best.e2e_ms
    assert rel >= -TOL, f"seed {seed}: planner {p.e2e_ms} below the oracle {best.e2e_ms}"
    if rel > TOL:
        return f"worse by {rel:.2%}"
    if p.devices != best.devices:
        assert p.devices > best.devices, f"seed {seed}: oracle tie-break missed fewer devices"
        return "more devices at the same latency"
    return "agree"


# Disagreements on the default-suite seeds (0-79) and on seeds 1000-1499 (`-m slow`):
# none (measured at the commit that cut inside leading dense runs, priced hand-offs from
# another kind's stage at their own launch, and spread attention-DP stages over the nodes
# of a multi-node domain). The ratchet holds both at 0.
MAX_DISAGREE = {"default": 0, "slow": 0}


def _run(seeds) -> list[tuple[int, str]]:
    return [(s, r) for s in seeds if (r := compare(s)) != "agree"]


def test_oracle_default_subset() -> None:
    bad = _run(range(80))
    print(f"{len(bad)} of 80 disagree: {bad}")
    assert len(bad) <= MAX_DISAGREE["default"], bad


@pytest.mark.slow
def test_oracle_large() -> None:
    bad = _run(range(1000, 1500))
    print(f"{len(bad)} of 500 disagree: {bad}")
    assert len(bad) <= MAX_DISAGREE["slow"], bad
