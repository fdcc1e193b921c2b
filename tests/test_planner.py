"""Planner behaviour: validator agreement, tampering, determinism, CLI = API, errors."""

from __future__ import annotations

import copy
import json

import pytest

from autoplan.cli import main
from autoplan.errors import InfeasibleError
from autoplan.rules.validate import validate
from autoplan.search.planner import plan

ARGS = dict(isl=1024, osl=64, batch=1)


@pytest.fixture(scope="module")
def p70():
    return plan("meta-llama/Llama-3.1-70B", "h100-sxm-x8", **ARGS)


@pytest.fixture(scope="module")
def p8_disagg():
    return plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", placement="disaggregated", **ARGS)


def test_plan_figures_equal_validator(p70, p8_disagg):
    for p in (p70, p8_disagg):
        rep = validate(p)
        assert rep.ok, rep.errors
        assert rep.figures.ttft_ms == p.ttft_ms and rep.figures.tpot_ms == p.tpot_ms
        assert p.e2e_ms == pytest.approx(p.ttft_ms + (p.inputs.osl - 1) * p.tpot_ms)


def test_every_layer_placed_once_and_memory_under_limit(p70, p8_disagg):
    for p in (p70, p8_disagg):
        for phase in (p.prefill, p.decode):
            covered = [i for s in phase.stages for i in range(*s.layers)]
            assert covered == list(range(80 if "70B" in p.inputs.model else 32))
            assert all(s.memory_fraction <= p.inputs.max_memory_fraction for s in phase.stages)
            devs = [d for s in phase.stages for d in s.devices]
            assert len(devs) == len(set(devs))


def test_solver_objective_is_an_upper_bound_of_the_exact_latency(p70):
    # Tables round each stage up to the microsecond and charge the worst hand-off.
    assert p70.objective >= p70.e2e_ms - 1e-9
    assert p70.objective <= p70.e2e_ms * 1.01


@pytest.mark.parametrize("tamper, rule", [
    (lambda d: d["prefill"]["stages"][0].update(layers=[0, 79]), "layer coverage"),
    (lambda d: d["decode"]["stages"][0].update(time_ms=1.0), "figures"),
    (lambda d: d.update(ttft_ms=d["ttft_ms"] * 0.9), "figures: ttft_ms"),
    (lambda d: d["prefill"]["stages"][0]["devices"].__setitem__(1, "node0.d0"), "device disjointness"),
    (lambda d: d["prefill"]["stages"][0].update(tp=4), "TP"),
    (lambda d: d["inputs"].update(max_memory_fraction=0.05), "memory headroom"),
])
def test_tampered_plan_fails_naming_the_rule(p70, tamper, rule):
    d = json.loads(p70.model_dump_json())
    d = copy.deepcopy(d)
    tamper(d)
    rep = validate(d)
    assert not rep.ok
    assert any(e.startswith(rule) for e in rep.errors), rep.errors


def test_disaggregated_tp_groups_inside_domains_and_disjoint(p8_disagg):
    pre = {d for s in p8_disagg.prefill.stages for d in s.devices}
    dec = {d for s in p8_disagg.decode.stages for d in s.devices}
    assert not pre & dec
    assert p8_disagg.kv_transfer_ms > 0
    assert p8_disagg.ttft_ms == pytest.approx(
        sum(s.time_ms for s in p8_disagg.prefill.stages) + p8_disagg.kv_transfer_ms, rel=0.05)


def test_same_inputs_same_plan():
    a = plan("meta-llama/Llama-3.1-8B", "h100-sxm-4node", **ARGS).model_dump()
    b = plan("meta-llama/Llama-3.1-8B", "h100-sxm-4node", **ARGS).model_dump()
    a.pop("solve_seconds")
    b.pop("solve_seconds")
    assert a == b


def test_cli_plan_equals_api(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "--model", "meta-llama/Llama-3.1-8B", "--topology", "h100-sxm-x8",
               "--isl", "1024", "--osl", "64", "--json", "-o", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    api = json.loads(plan("meta-llama/Llama-3.1-8B", "h100-sxm-x8", **ARGS).model_dump_json())
    for d in (printed, written, api):
        d.pop("solve_seconds")
    assert printed == written == api
    assert main(["validate", str(out)]) == 0


def test_slo_is_respected_or_infeasible_with_reason():
    free = plan("meta-llama/Llama-3.1-70B", "h100-sxm-x8", **ARGS)
    tight = plan("meta-llama/Llama-3.1-70B", "h100-sxm-x8", tpot_slo_ms=free.tpot_ms * 1.5, **ARGS)
    assert tight.tpot_ms <= free.tpot_ms * 1.5
    with pytest.raises(InfeasibleError) as e:
        plan("meta-llama/Llama-3.1-70B", "h100-sxm-x8", tpot_slo_ms=free.tpot_ms * 0.3, **ARGS)
    assert e.value.reason == "slo" and "TPOT" in str(e.value)
    assert e.value.achievable["tpot_ms"] >= free.tpot_ms * 0.99


def test_infeasible_memory_exits_3(capsys):
    rc = main(["plan", "--model", "meta-llama/Llama-3.1-405B", "--topology", "h100-sxm-x8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and err[0].startswith("autoplan: error: memory")


def test_bad_plan_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["validate", str(bad)]) == 2
    assert main(["validate", str(tmp_path / "missing.json")]) == 2


def test_schema_names_the_documented_fields(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for key in ("status", "objective", "best_bound", "gap", "solve_seconds", "ttft_ms", "tpot_ms",
                "e2e_ms", "throughput_tokens_per_s", "kv_transfer_ms", "prefill", "decode"):
        assert key in schema["properties"]


@pytest.mark.parametrize("model,topo,dtype", [
    ("meta-llama/Llama-3.1-70B", "h100x8-lpu576", "fp8"),
    ("deepseek-ai/DeepSeek-V3", "h100-sxm-4node", "fp8"),
])
def test_table_times_bound_real_stages_tightly(model, topo, dtype):
    """Every table entry is the exact time of a stage of that role and length wherever
    it sits (a middle stage carries neither the embedding nor the LM head), rounded up
    by less than one table tick (10 ns) per layer."""
    import random

    from autoplan.catalog import load_model, load_topology
    from autoplan.cost.pipeline import StagePlacement, memories_for, pool_memory_args, stage_cost
    from autoplan.cost.roofline import phase_shape
    from autoplan.inputs.workload import Precision, Workload
    from autoplan.search.tables import ROLES, TICKS_PER_S, build_tables

    m, t = load_model(model), load_topology(topo, None, "vllm")
    work = Workload(2048, 256, 4, Precision(dtype, "bf16", dtype), 0.9)
    tab = build_tables(m, t, work, ("decode",))
    pool = tab.pools["decode"]
    kv_batch, ctx, tokens = pool_memory_args("decode", work)
    shape = phase_shape("decode", 4, 2048, 256)
    rng = random.Random(0)
    L, P = m.num_layers, tab.prefix
    checked = 0
    for cfg in tab.configs:
        r = ROLES.index("mid")
        best = int(pool.max_len[r, cfg.index])
        for ln in sorted({1, best}) if best else []:
            first = rng.randint(P + 1, L - 1 - ln)  # anywhere strictly inside
            st = StagePlacement(first, first + ln, cfg.kind, cfg.group, cfg.dp, cfg.ep)
            mem = memories_for(m, t, [st], kv_batch, ctx, tokens, work.precision)[0]
            exact = stage_cost(m, t, st, shape, work.precision, mem).time_s * TICKS_PER_S
            got = int(pool.time_t["decode"][r, cfg.index, ln])
            assert exact <= got < exact + ln + 1, (cfg, ln, exact, got)
            assert mem.total_bytes <= t.kinds[cfg.kind].capacity_bytes * 0.9
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("model,topo,placement", [
    # a pipeline across kinds: GPU stage, then LPU stages
    ("meta-llama/Llama-3.1-70B", "h100x8-lpu576", "colocated"),
    ("meta-llama/Llama-3.1-70B", "h100x8-lpu576", "disaggregated"),
    # one fast domain over 72 nodes: hops cross nodes
    ("meta-llama/Llama-3.1-8B", "lpu-576", "disaggregated"),
])
def test_solver_objective_bounds_the_exact_latency_and_slos_hold(model, topo, placement):
    """The tables are upper bounds of every stage, hand-off (within and across device
    classes) and KV transfer, so the solver's objective is never below the validator's
    exact e2e, and a plan that meets an SLO in the tables meets it exactly."""
    from autoplan.search.planner import plan

    p = plan(model, topo, dtype="fp8", placement=placement)
    assert validate(p).ok
    assert p.objective >= p.e2e_ms * (1 - 1e-12)
    assert p.objective <= p.e2e_ms * 1.02  # and not far above it
    # An SLO just above the table pessimism: the plan meets it exactly too.
    tight = plan(model, topo, dtype="fp8", placement=placement, tpot_slo_ms=p.tpot_ms * 1.03)
    rep = validate(tight)
    assert rep.ok, rep.errors


def test_tp_groups_pack_whenever_a_packing_exists():
    """TP sizes that do not divide each other (12-device domains: 3, 4, 6) defeat first
    fit; the exact search packs every multiset a brute-force assignment can pack."""
    import itertools
    import random

    from autoplan.search.assign import _pack

    rng = random.Random(0)
    for _ in range(300):
        sizes = sorted((rng.choice([1, 2, 3, 4, 6, 12]) for _ in range(rng.randint(1, 7))),
                       reverse=True)
        bins = rng.choice([1, 2, 3])
        got = _pack(sizes, 12, bins)
        feasible = any(all(sum(s for s, b in zip(sizes, assign) if b == k) <= 12
                           for k in range(bins))
                       for assign in itertools.product(range(bins), repeat=len(sizes)))
        assert (got is not None) == feasible, (sizes, bins)
        if got is not None:
            assert all(sum(s for s, b in zip(sizes, got) if b == k) <= 12 for k in range(bins))
    # The case first fit gets wrong: 6+4+4+4+3+3 = 24 into two domains of 12.
    assert _pack([6, 4, 4, 4, 3, 3], 12, 2) is not None
