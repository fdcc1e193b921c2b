"""Issue 11: the planner's space holds every TP that fits a fast domain (packing, not
divisibility), with the domains' inventory checked exactly."""

from __future__ import annotations

import functools
import itertools

import pytest

from autoplan.cost.estimate import estimate
from autoplan.errors import InputError
from autoplan.search.configs import _is_chain, _patterns
from autoplan.search.planner import plan


def _fits(items: list[int], n: int, bins: int) -> bool:
    items = sorted(items, reverse=True)

    @functools.lru_cache(None)
    def go(i: int, fills: tuple[int, ...]) -> bool:
        if i == len(items):
            return True
        for k, f in enumerate(fills):
            if f + items[i] <= n and (k == 0 or fills[k - 1] != f):
                nf = list(fills)
                nf[k] += items[i]
                if go(i + 1, tuple(sorted(nf))):
                    return True
        return False

    return go(0, (0,) * bins)


@pytest.mark.parametrize("tps", [(1, 2, 4, 8, 16), (1, 3, 6, 12), (2, 4)])
def test_chain_thresholds_are_exact(tps) -> None:
    """Sizes that divide each other fit B domains of n iff, for every size t, the groups
    of size >= t hold at most B * floor(n / t) * t devices (what the solver adds)."""
    assert _is_chain(list(tps))
    for n in range(1, 18):
        for bins in (1, 2, 3):
            for counts in itertools.product(range(4), repeat=len(tps)):
                items = [t for t, c in zip(tps, counts) for _ in range(c)]
                rows = all(sum(s for s in items if s >= t) <= bins * (n // t) * t for t in tps)
                assert rows == _fits(items, n, bins), (tps, n, bins, items)


def test_patterns_cover_every_fill() -> None:
    """Every fill of a domain is dominated by a maximal pattern."""
    tps, n = [1, 2, 3, 4, 6], 12
    pats = _patterns(tps, n, 10**6)
    assert pats is not None and len(set(pats)) == len(pats)
    for counts in itertools.product(*(range(n // t + 1) for t in tps)):
        if sum(c * t for c, t in zip(counts, tps)) <= n:
            assert any(all(c <= p for c, p in zip(counts, pat)) for pat in pats)


def test_405b_nvl72_no_worse_than_any_uniform_tp() -> None:
    """TP 16/32/64 on a 72-GPU NVLink domain are in the space: the plan is no worse than
    any uniform TP x PP that `estimate` prices and fits."""
    args = {"isl": 2048, "osl": 256}
    p = plan("meta-llama/Llama-3.1-405B", "gb200-nvl72", **args)
    best = None
    for tp in (1, 2, 4, 8, 16, 32, 64):
        for pp in range(1, 72 // tp + 1):
            if pp > 9:
                break
            try:
                e = estimate("meta-llama/Llama-3.1-405B", "gb200-nvl72", tp, pp, **args)
            except InputError:
                continue
            if e.fits and (best is None or e.e2e_ms < best.e2e_ms):
                best = e
    assert best is not None and best.tp >= 16  # the uniform optimum needs a TP > 8
    assert p.e2e_ms <= best.e2e_ms * (1 + 1e-9), (p.e2e_ms, best.tp, best.pp, best.e2e_ms)
    assert max(s.tp for s in p.decode.stages) >= 16


def test_tp3_on_a_six_device_domain() -> None:
    """TP 3 (12 heads, 3 KV heads) on a 6-device domain is in the space: the plan equals
    the exhaustive oracle's, which takes TP 3 groups."""
    from oracle_exhaustive import exhaustive

    from autoplan.catalog import topology_from_spec
    from autoplan.inputs.model import model_from_config
    from autoplan.inputs.topology import TopologySpec
    from autoplan.inputs.workload import Precision, Workload
    model = model_from_config({"model_type": "llama", "hidden_size": 1536,
                               "intermediate_size": 6144, "num_hidden_layers": 3,
                               "num_attention_heads": 12, "num_key_value_heads": 3,
                               "vocab_size": 32000}, name="tp3")
    spec = TopologySpec.model_validate({"name": "six", "nodes": [
        {"name": "n", "devices": {"kind": "h100-sxm", "count": 6},
         "fabric": {"kind": "nvl", "tensor_parallel": True, "latency_s": 2e-6,
                    "bandwidth_bytes_per_s": 450e9}}]})
    topo = topology_from_spec(spec, None, "vllm")
    work = Workload(2048, 16, 32, Precision("bf16", "bf16", "bf16"))
    best = exhaustive(model, topo, work, "disaggregated", uniform_tp=True)  # plan: vllm
    p = plan(model, topo, placement="disaggregated", isl=2048, osl=16, batch=32)
    assert {s.tp for s in best.pre + best.dec} & {3}
    assert p.e2e_ms == pytest.approx(best.e2e_ms, rel=1e-6)


def test_405b_4node_cut_balances_memory_on_a_tie() -> None:
    """Issue 11 step 5: layers are identical, so every cut of two TP 8 stages ties
    exactly on TTFT and TPOT; the tie-break takes the most KV headroom on the fullest
    device: 63/63 (was 35/91 at 37% / 89% memory)."""
    from autoplan.search.planner import plan

    p = plan("meta-llama/Llama-3.1-405B", "h100-sxm-4node", isl=2048, osl=256)
    assert p.status == "optimal" and p.gap <= 1e-6
    for ph in (p.prefill, p.decode):
        assert [tuple(s.layers) for s in ph.stages] == [(0, 63), (63, 126)]
        fr = [s.memory_fraction for s in ph.stages]
        assert max(fr) - min(fr) < 0.01


def _spread_topology(nodes: int, per: int):
    from autoplan.catalog import builtin_device_kinds, default_calibrations
    from autoplan.graphs.topology import build_topology
    from autoplan.inputs.topology import TopologySpec

    spec = {"name": f"spread{nodes}x{per}",
            "nodes": [{"name": "n", "count": nodes, "devices": {"kind": "h100-sxm", "count": per},
                       "fabric": {"kind": "nvlink", "bandwidth_bytes_per_s": 450e9,
                                  "latency_s": 2e-6, "tensor_parallel": True}}],
            "networks": [{"name": "fast", "kind": "fastnet", "bandwidth_bytes_per_s": 50e9,
                          "latency_s": 3e-6, "tensor_parallel": True, "node_groups": ["n"]}]}
    return build_topology(TopologySpec.model_validate(spec), builtin_device_kinds(),
                          default_calibrations())


def test_spread_groups_reach_the_cheapest_all_to_all_of_any_placement():
    """On a fast domain over nodes joined by a slower link, the groups the lower-bound
    tables price for an attention-DP stage (`spread_groups`) include one whose all-to-all
    is as cheap as the cheapest over every ordered choice of the domain's devices (brute
    force), also with devices already taken; and they stay a handful on 16 nodes of 8
    (a first version enumerated every partition over the nodes: minutes)."""
    from autoplan.cost.kernel_ops import alltoall_s
    from autoplan.search.configs import spread_domain, spread_groups

    topo = _spread_topology(3, 3)
    dom = topo.fast_domains[0]
    assert spread_domain(topo, dom)
    for busy in (set(), {dom.devices[0], dom.devices[4]}):
        free = [d for d in dom.devices if d not in busy]
        for size in (2, 3, 4, 5):
            brute = min(alltoall_s(topo, g, 1e6) for g in itertools.permutations(free, size))
            groups = spread_groups(topo, dom, size, busy)
            assert all(len(g) == size and not set(g) & busy for g in groups)
            assert min(alltoall_s(topo, g, 1e6) for g in groups) == pytest.approx(brute, rel=1e-12)
    big = _spread_topology(16, 8)
    assert len(spread_groups(big, big.fast_domains[0], 64)) <= 64


def test_a_dense_run_too_long_to_cut_is_said_not_proven():
    """Cuts inside a leading dense run are searched up to MAX_DENSE_CUTS layers; a longer
    run rides on the first stage and the plan claims no optimum (feasible, no bound)."""
    from autoplan.inputs.model import model_from_config
    from autoplan.search.roles import MAX_DENSE_CUTS

    def model(dense: int):
        return model_from_config({
            "model_type": "qwen2_moe", "hidden_size": 512, "intermediate_size": 1024,
            "num_hidden_layers": dense + 2, "num_attention_heads": 8, "num_key_value_heads": 8,
            "vocab_size": 32000, "num_experts": 8, "num_experts_per_tok": 2,
            "moe_intermediate_size": 512, "mlp_only_layers": list(range(dense))},
            name=f"dense{dense}")

    cut = plan(model(MAX_DENSE_CUTS), "h100-sxm-x8", isl=512, osl=16)
    assert cut.status == "optimal" and cut.stop_reason == "completed"
    long = plan(model(MAX_DENSE_CUTS + 1), "h100-sxm-x8", isl=512, osl=16)
    assert long.status == "feasible" and long.stop_reason == "dense_run_limit"
    assert long.best_bound is None and long.gap is None
