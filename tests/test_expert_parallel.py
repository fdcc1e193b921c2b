"""Expert parallelism (EP) and data-parallel attention (DP) for MoE models: the physics of
the all-to-all, expert memory and DP-rank attention, the plan schema and the validator's
rules, the exports' flags and refusals, and the planner's EP space against the oracles."""

from __future__ import annotations

import csv
import gzip
import json
import random
import sys
from pathlib import Path

import pytest

from autoplan import estimate, plan
from autoplan.catalog import builtin_device_kinds, default_calibrations, load_model, load_topology
from autoplan.cli import main
from autoplan.cost.expert_parallel import hot_rank_factor
from autoplan.cost.kernel_ops import ALLTOALL_BUS_EFFICIENCY, alltoall_s
from autoplan.errors import InfeasibleError, InputError
from autoplan.export import export
from autoplan.graphs.topology import build_topology
from autoplan.inputs.dtypes import bytes_per_element
from autoplan.inputs.model import model_from_config
from autoplan.inputs.topology import TopologySpec
from autoplan.inputs.workload import Precision, Workload
from autoplan.plan_schema import Plan
from autoplan.rules.validate import validate
from autoplan.search.brute import brute_force, brute_force_replicated
from autoplan.search.replicas import plan_replicated
from autoplan.search.solver import Limits, solve
from autoplan.search.tables import build_tables

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
EP_PLAN = GOLDEN / "deepseek-v3-fp8-h200-2node-ep-throughput.plan.json"
DENSE_PLAN = GOLDEN / "llama31-70b-h100x8-throughput.plan.json"
DSV3 = "deepseek-ai/DeepSeek-V3"
QWEN = "Qwen/Qwen3-235B-A22B"
KW = dict(isl=4000, osl=500, dtype="fp8", engine="sglang")


def est(model=DSV3, topo="h200-x8", tp=8, dp=1, ep=1, batch=256, **kw):
    return estimate(model, topo, tp=tp, attention_dp=dp, ep=ep, batch=batch,
                    **{**KW, "prefill_batch": 8, **kw})


def op_ms(e, phase: str, name: str) -> float:
    return next(o.time_ms for o in getattr(e, phase).operators if o.name == name)


# ---------------------------------------------------------------- the all-to-all


def test_alltoall_grows_with_bytes_and_the_network_is_slower_than_nvlink():
    topo = load_topology("h200-4node", None, "sglang")
    devs = topo.devices_of_kind("h200")
    one_node, two_nodes = devs[:8], devs[:16]
    assert {topo.domain_of[d] for d in one_node} != {topo.domain_of[d] for d in two_nodes}
    sizes = [1e4, 1e6, 1e7, 1e8]
    inside = [alltoall_s(topo, one_node, b) for b in sizes]
    across = [alltoall_s(topo, two_nodes, b) for b in sizes]
    assert inside == sorted(inside) and across == sorted(across)
    assert all(a > i for a, i in zip(across, inside))
    # Across nodes, 8 of the 15 peers sit behind the per-GPU NIC: at least that share of
    # the bytes at the NIC's rate (the slowest link of the path to another node).
    nic = topo.path(two_nodes[0], two_nodes[8])[0]
    assert nic < topo.path(one_node[0], one_node[1])[0]
    for b, t in zip(sizes, across):
        assert t >= b * 8 / 15 / nic
    assert alltoall_s(topo, one_node[:1], 1e9) == 0.0 and alltoall_s(topo, one_node, 0) == 0.0


@pytest.mark.parametrize("topo_name,system", [("h200-x8", "h200_sxm"), ("h100-sxm-x8", "h100_sxm"),
                                              ("b200-x8", "b200_sxm"),
                                              ("a100-sxm-80gb-x8", "a100_sxm")])
def test_alltoall_matches_nccl_tests_on_8_gpus(topo_name, system):
    """Against the nccl-tests alltoall rows of the kernel data (an independent measurement):
    each rank sends 1/8 of ``message_bytes`` to every rank, 7/8 of it off-device."""
    measured: dict[int, float] = {}
    with gzip.open(REPO / "hardware" / "data" / "aic-kernels" / "comm.csv.gz", "rt") as f:
        for r in csv.DictReader(f):
            if (r["system"], r["op"], r["num_gpus"], r["dtype"]) == (system, "alltoall", "8",
                                                                       "half"):
                b = int(r["message_bytes"])
                measured[b] = min(measured.get(b, 1.0), float(r["latency_s"]))
    topo = load_topology(topo_name, None, "vllm")
    devs = topo.devices_of_kind(topo.kind_names[0])[:8]
    big = {b: t for b, t in measured.items() if b >= 8 << 20}
    assert len(big) >= 5
    for b, t in big.items():
        assert 0.75 <= alltoall_s(topo, devs, b * 7 / 8) / t <= 1.35, (b, t)
    assert 0.5 < ALLTOALL_BUS_EFFICIENCY < 1


def test_decode_communication_grows_with_the_batch():
    comm = [est(tp=1, dp=8, ep=8, batch=b).decode.communication_ms for b in (8, 64, 256)]
    assert comm == sorted(comm) and comm[0] < comm[-1]


def test_hot_rank_factor_is_a_binomial_extreme():
    # Simulated routing: the busiest of ep ranks over the mean, uniform assignments.
    rng = random.Random(0)
    for n, ep in ((2048, 8), (256, 16), (20000, 32)):
        over = []
        for _ in range(200):
            counts = [0] * ep
            for _ in range(n):
                counts[rng.randrange(ep)] += 1
            over.append(max(counts) / (n / ep))
        mean = sum(over) / len(over)
        assert 0.85 * mean <= hot_rank_factor(n, ep) <= 1.25 * mean, (n, ep, mean)
    assert hot_rank_factor(100, 1) == 1.0


# ---------------------------------------------------------------- memory and attention


def test_expert_memory_per_device_falls_as_one_over_ep():
    """One EP rank per device (attention DP = EP, TP 1): everything but the routed experts
    is the same on every device, the experts are 1/ep of all of them."""
    m = load_model(DSV3)
    moe_layers = sum(m.layer_kind(i) == "moe" for i in range(m.num_layers))
    experts_gb = (moe_layers * m.moe.num_experts * 3 * m.hidden_size
                  * m.moe.expert_intermediate_size * bytes_per_element("fp8")) / 1e9
    w = {ep: est(tp=1, dp=ep, ep=ep, batch=8).memory[0].weights_gb for ep in (2, 4, 8)}
    assert w[2] - w[4] == pytest.approx(experts_gb / 2 - experts_gb / 4, rel=1e-9)
    assert w[4] - w[8] == pytest.approx(experts_gb / 4 - experts_gb / 8, rel=1e-9)


def test_dp_attention_holds_each_ranks_own_kv():
    # MLA: the latent cache is replicated on every TP rank; a DP rank holds its sequences.
    tp8, dp8 = est(tp=8), est(tp=1, dp=8, ep=8)
    assert tp8.memory[0].kv_cache_gb == pytest.approx(8 * dp8.memory[0].kv_cache_gb, rel=1e-9)
    # GQA with 4 KV heads: TP 4 splits the heads, DP 4 the sequences (the same share);
    # TP 8 replicates each head on two ranks, DP 8 does not.
    q = {(t, d): est(QWEN, tp=t, dp=d, ep=t * d).memory[0].kv_cache_gb
         for t, d in ((4, 1), (1, 4), (8, 1), (1, 8))}
    assert q[4, 1] == pytest.approx(q[1, 4], rel=1e-9)
    assert q[8, 1] == pytest.approx(2 * q[1, 8], rel=1e-9)


def test_dp_rank_attention_is_a_replica_at_its_share_of_the_batch():
    """Attention of one DP rank (TP 1, 32 of 256 sequences) costs what TP 1 at batch 32
    does: the same kernel on the same sequences."""
    dp = est(tp=1, dp=8, ep=8, batch=256, breakdown=True)
    one = est(tp=1, batch=32, breakdown=True)
    assert op_ms(dp, "decode", "attention") == pytest.approx(op_ms(one, "decode", "attention"),
                                                             rel=1e-12)
    tp8 = est(tp=8, batch=256, breakdown=True)
    assert op_ms(dp, "decode", "attention") < op_ms(tp8, "decode", "attention")


def test_deepseek_dp8_ep8_beats_tp8_per_gpu_where_its_bytes_are_fewer():
    """Batch 256 on 8 H200: a decode step reads every resident byte of a device (weights,
    every expert being hit by 2048 assignments, and the KV cache). Where DP 8 x EP 8
    holds fewer bytes per device than TP 8 (the latent cache not replicated 8 times
    outweighs attention weights replicated per rank), its step is faster per GPU."""
    tp8, dp8 = est(tp=8), est(tp=1, dp=8, ep=8)

    def resident(e):
        r = e.memory[0]
        return r.weights_gb + r.kv_cache_gb

    assert tp8.devices == dp8.devices == 8
    assert (1 - 8 / 256) ** (256 * 8) < 1e-12  # every expert is hit at batch 256
    if resident(dp8) < resident(tp8):
        assert dp8.tpot_ms < tp8.tpot_ms
        assert 256 / dp8.tpot_ms / dp8.devices > 256 / tp8.tpot_ms / tp8.devices


# ---------------------------------------------------------------- schema and validate


def test_dense_plans_carry_no_ep_fields_and_ep_plans_round_trip():
    dense = json.loads(DENSE_PLAN.read_text())
    assert all("ep" not in s and "attention_dp" not in s
               for ph in ("prefill", "decode") for s in dense[ph]["stages"])
    plan = Plan.load(EP_PLAN)
    st = plan.decode.stages[0]
    assert (st.tp, st.attention_dp, st.ep) == (1, 8, 8) and len(st.devices) == 8
    again = Plan.model_validate(json.loads(plan.model_dump_json()))
    assert again == plan
    assert validate(plan).ok


def _edited(path: Path, **stage) -> dict:
    d = json.loads(path.read_text())
    for ph in ("prefill", "decode"):
        for s in d[ph]["stages"]:
            s.update(stage)
    return d


def test_validate_prices_ep_and_names_broken_rules():
    # The same devices priced as TP 1 x DP 8 without EP: other figures.
    rep = validate(_edited(EP_PLAN, ep=1))
    assert not rep.ok and any(e.startswith("figures:") for e in rep.errors)
    rep = validate(_edited(EP_PLAN, ep=3))
    assert any(e.startswith("expert parallelism:") and "EP 3" in e for e in rep.errors)
    rep = validate(_edited(EP_PLAN, attention_dp=4))
    assert any(e.startswith("TP:") for e in rep.errors)
    # TensorRT-LLM (the plan's engine) runs attention DP with TP 1 per rank only.
    rep = validate(_edited(EP_PLAN, tp=2, attention_dp=4))
    assert any(e.startswith("expert parallelism:") and "TP 1 per rank" in e
               for e in rep.errors), rep.errors
    dense = validate(_edited(DENSE_PLAN, ep=2))
    assert any(e.startswith("expert parallelism:") and "dense" in e for e in dense.errors)


# ---------------------------------------------------------------- exports


def _argv(text: str, head: str) -> list[str]:
    line = next(x for x in text.splitlines() if head in x and not x.lstrip().startswith("#"))
    return line.split()


def test_exports_emit_each_engines_ep_flags():
    plan = Plan.load(EP_PLAN)
    v = _argv(export(plan, "vllm").files["launch.sh"], "vllm serve")
    assert v[v.index("--tensor-parallel-size") + 1] == "1"
    assert v[v.index("--data-parallel-size") + 1] == "8" and "--enable-expert-parallel" in v
    s = _argv(export(plan, "sglang").files["launch.sh"], "sglang.launch_server")
    assert s[s.index("--tp-size") + 1] == "8" and s[s.index("--dp-size") + 1] == "8"
    assert s[s.index("--ep-size") + 1] == "8" and "--enable-dp-attention" in s
    exp = export(plan, "trtllm")
    t = _argv(exp.files["launch.sh"], "trtllm-serve serve")
    assert t[t.index("--tp_size") + 1] == "8" and t[t.index("--ep_size") + 1] == "8"
    opts = next(v for k, v in exp.files.items() if k.startswith("extra-llm-api"))
    assert "moe_expert_parallel_size: 8" in opts and "enable_attention_dp: true" in opts


def _wide(path: Path) -> dict:
    """The EP golden as one replica of DP 16 x EP 16 over both of its 8-GPU hosts."""
    d = json.loads(path.read_text())
    devs = [x for rep in d["prefill"]["replica_devices"] for x in rep[0]]
    for ph in ("prefill", "decode"):
        d[ph]["replicas"], d[ph]["devices"] = 1, len(devs)
        d[ph]["stages"][0].update(devices=devs, attention_dp=len(devs), ep=len(devs), tp=1)
        d[ph]["replica_devices"] = [[devs]]
    return d


def test_vllm_runs_data_parallelism_over_hosts_one_server_per_host():
    plan = Plan.model_validate(_wide(EP_PLAN))
    text = export(plan, "vllm", check=False).files["launch.sh"]
    lines = [x.split() for x in text.splitlines()
             if "vllm serve" in x and not x.lstrip().startswith("#")]
    assert len(lines) == 2  # one per host
    head, worker = lines
    for a in lines:
        assert a[a.index("--data-parallel-size") + 1] == "16"
        assert a[a.index("--data-parallel-size-local") + 1] == "8"
        assert a[a.index("--data-parallel-address") + 1] == "node0"
        assert a[a.index("--data-parallel-rpc-port") + 1] == head[
            head.index("--data-parallel-rpc-port") + 1]
        assert "--enable-expert-parallel" in a and a[a.index("--tensor-parallel-size") + 1] == "1"
    assert "--headless" not in head and "--port" in head
    assert "--headless" in worker and worker[worker.index("--data-parallel-start-rank") + 1] == "8"
    assert "--port" not in worker


def test_trtllm_runs_a_server_over_hosts_as_one_mpi_world():
    plan = Plan.model_validate(_wide(EP_PLAN))
    exp = export(plan, "trtllm", check=False)
    line = next(x for x in exp.files["launch.sh"].splitlines()
                if "mpirun" in x and not x.lstrip().startswith("#"))
    a = line.split()
    assert a[a.index("-np") + 1] == "16" and a[a.index("-H") + 1] == "node0:8,node1:8"
    k = a.index("trtllm-llmapi-launch")
    assert a[k + 1:k + 3] == ["trtllm-serve", "serve"]
    assert a[a.index("--tp_size") + 1] == "16" and a[a.index("--ep_size") + 1] == "16"
    assert any("one MPI world" in w for w in exp.warnings)


def test_exports_refuse_shapes_an_engine_cannot_run():
    half_ep = Plan.model_validate({**_edited(EP_PLAN, ep=4), "inputs": {
        **json.loads(EP_PLAN.read_text())["inputs"], "engine": "sglang"}})
    for kw in ({"engine": "vllm"}, {"engine": "dynamo", "backend": "vllm"}):
        with pytest.raises(InputError, match=r"colocated pool.*EP 4.*EP = TP x DP"):
            export(half_ep, check=False, **kw)
    s = _argv(export(half_ep, "sglang", check=False).files["launch.sh"], "sglang.launch_server")
    assert s[s.index("--ep-size") + 1] == "4"
    tp2 = Plan.model_validate(_edited(EP_PLAN, tp=2, attention_dp=4))
    with pytest.raises(InputError, match=r"colocated pool.*attention DP 4.*TP 1 per rank"):
        export(tp2, "trtllm", check=False)


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv,says", [
    (["--model", "meta-llama/Llama-3.1-8B", "--tp", "1", "--attention-dp", "8", "--ep", "8"],
     "dense model"),
    (["--model", DSV3, "--tp", "1", "--attention-dp", "8", "--ep", "3", "--dtype", "fp8"],
     "EP 3 does not divide"),
    (["--model", "mistralai/Mixtral-8x7B-v0.1", "--tp", "1", "--attention-dp", "16", "--ep", "16"],
     "does not divide the 8 routed experts"),
])
def test_cli_bad_ep_is_one_line_exit_2(argv, says, capsys):
    rc = main(["estimate", "--topology", "h200-4node", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and says in err and "\n" not in err and "Traceback" not in err


def test_cli_estimate_with_ep(capsys):
    rc = main(["estimate", "--model", DSV3, "--topology", "h200-x8", "--tp", "1",
               "--attention-dp", "8", "--ep", "8", "--dtype", "fp8", "--batch", "64", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and (out["tp"], out["attention_dp"], out["ep"], out["devices"]) == (1, 8, 8, 8)


# ---------------------------------------------------------------- the planner's space


def _moe_instance(seed: int):
    rng = random.Random(seed)
    heads = rng.choice([8, 16])
    hidden = heads * 64
    experts = rng.choice([4, 8, 16])
    model = model_from_config({
        "model_type": "mixtral", "hidden_size": hidden, "intermediate_size": hidden * 2,
        "num_hidden_layers": rng.randint(2, 6), "num_attention_heads": heads,
        "num_key_value_heads": rng.choice([2, heads]), "vocab_size": 1000,
        "num_local_experts": experts, "num_experts_per_tok": 2}, name=f"moe{seed}")
    per = rng.choice([2, 4, 8])
    spec = TopologySpec.model_validate({
        "name": f"moe{seed}",
        "nodes": [{"name": "g", "count": rng.choice([1, 2]),
                   "devices": {"kind": "h100-sxm", "count": per},
                   "fabric": {"kind": "fast", "tensor_parallel": True, "latency_s": 2e-6,
                              "bandwidth_bytes_per_s": 300e9}}],
        "networks": [{"name": "ib", "kind": "ib", "bandwidth_bytes_per_s": 50e9,
                      "latency_s": 5e-6}]})
    topo = build_topology(spec, builtin_device_kinds(), default_calibrations())
    work = Workload(rng.choice([128, 512]), rng.choice([16, 64]), rng.choice([8, 64, 256]),
                    Precision("bf16", "bf16", "bf16"), 0.9, rng.choice([None, 1, 4]))
    pools = rng.choice([("colocated",), ("prefill", "decode")])
    return model, topo, work, pools, rng


@pytest.mark.parametrize("chunk", range(2))
def test_cpsat_equals_brute_force_with_ep_configs(chunk):
    seen_ep = seen_wide = 0
    for seed in range(chunk, 40, 2):
        model, topo, work, pools, rng = _moe_instance(seed)
        tables = build_tables(model, topo, work, pools, uniform_tp=seed % 2 == 0)
        eps = [c for c in tables.configs if c.dp > 1]
        dom = {c.cls: tables.classes[c.cls].domain_size for c in eps}
        # EP over the whole group (it divides the experts), or EP 1 (the MoE split like a
        # TP group over all its devices) inside one domain; whole domains: DP = EP only
        assert all((c.ep == c.size and model.moe.num_experts % c.ep == 0
                    or c.ep == 1 and c.size <= dom[c.cls])
                   and (c.size <= dom[c.cls] or c.size % dom[c.cls] == 0 and c.tp == 1)
                   for c in eps)
        assert any(c.ep == 1 for c in eps) == bool(eps)
        seen_ep += bool(eps)
        seen_wide += any(c.size > dom[c.cls] for c in eps)
        limits = Limits(time_limit_s=60)
        res = solve(tables, pools, work.osl, limits)
        scale = sum(c.devices for c in tables.classes) + 1
        expected = brute_force(tables, pools, work.osl, limits)
        got = None if res.status == "infeasible" else round(res.objective_t * scale)
        assert got == expected, f"seed {seed}: CP-SAT {got} != brute force {expected}"
        mode = "colocated" if pools == ("colocated",) else "disaggregated"
        want = brute_force_replicated(tables, mode, work.osl, limits, "throughput")
        best, _, _, _ = plan_replicated(tables, [mode], work.osl, limits, "throughput", None)
        if best is not None and not best.link_binds:
            assert (best.rate, best.devices) == want, f"seed {seed}"
    assert seen_ep > 10 and seen_wide > 2  # groups inside a domain and over whole domains


def test_dense_models_get_no_ep_configs():
    m = load_model("meta-llama/Llama-3.1-8B")
    topo = load_topology("h200-x8", None, "sglang")
    w = Workload(512, 64, 8, Precision("bf16", "bf16", "bf16"), 0.9)
    t = build_tables(m, topo, w, ("colocated",))
    assert all(c.dp == 1 and c.ep == 1 for c in t.configs)


def test_wide_ep_groups_take_whole_domains():
    """Throughput tables offer attention DP x EP over several whole nodes (TP 1 per rank);
    the assignment gives each such stage whole free domains, or says it cannot."""
    from autoplan.search.assign import assign_devices

    m = load_model(DSV3)
    topo = load_topology("h200-4node", None, "trtllm")
    w = Workload(4000, 500, 256, Precision("fp8", "bf16", "fp8"), 0.9, 8)
    t = build_tables(m, topo, w, ("colocated",), uniform_tp=True, engine="trtllm")
    n = t.classes[0].domain_size
    wide = [c for c in t.configs if c.size > n]
    assert {c.size for c in wide} == {2 * n, 4 * n}
    assert all((c.tp, c.dp, c.ep) == (1, c.size, c.size) for c in wide)
    cfg = next(c for c in wide if c.size == 2 * n)
    got = assign_devices(t, {"colocated": [("only", cfg.index, t.units)]}, {"colocated": 2})
    groups = [set(rep[0]) for rep in got["colocated"]]
    assert len(groups) == 2 and not groups[0] & groups[1]
    for g in groups:
        doms = {topo.domain_of[d] for d in g}
        assert len(doms) == 2 and sum(len(topo.fast_domains[k].devices) for k in doms) == len(g)
    with pytest.raises(InfeasibleError, match="whole domains"):
        assign_devices(t, {"colocated": [("only", cfg.index, t.units)]}, {"colocated": 3})
    # The latency tables (exact packing of other sizes) keep groups inside one domain.
    lat = build_tables(m, topo, w, ("colocated",), packing=True, lower=True)
    assert all(c.size <= n for c in lat.configs)


def test_a_colocated_pipeline_runs_one_attention_dp_degree():
    # one step schedule for the whole pipeline (evaluate prices the widest DP's step mix
    # on every stage): a mix of DP degrees in one colocated pipeline is refused
    from autoplan.cost.pipeline import StagePlacement
    from autoplan.rules import rules

    lpu = StagePlacement(0, 1, "lpu", ("l0",), 1, 1)
    gpu = StagePlacement(1, 4, "l40s", ("g0", "g1", "g2", "g3"), 4, 1)
    errs = rules.colocated_dp([lpu, gpu], "colocated")
    assert len(errs) == 1 and "1, 4" in errs[0]
    assert rules.colocated_dp([lpu, gpu], "disaggregated") == []
    assert rules.colocated_dp([gpu], "colocated") == []
    # the instance where the planner built such a pipeline (an LPU stage at DP 1 before an
    # L40S stage at DP 4 x EP 1), whose widest step mix overflowed the LPU's SRAM
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from oracle_exhaustive import random_instance

    model, topo, _spec, work, placement, _rng = random_instance(1085)
    p = plan(model, topo, isl=work.isl, osl=work.osl, batch=work.batch,
             dtype=work.precision.weight, kv_dtype=work.precision.kv, placement=placement,
             max_memory_fraction=work.max_memory_fraction, time_limit_s=60)
    if p.placement == "colocated":
        assert len({s.attention_dp for s in p.prefill.stages}) == 1
