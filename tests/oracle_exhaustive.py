"""Ground-truth oracle: brute force over CONCRETE plans, priced by the cost model.

Independent of the planner's tables: it enumerates every contiguous cut of the layers
(leading dense runs included), for every stage every device kind and every TP the
model's heads allow that fits one fast domain (for MoE models also every attention
DP x EP layout of such a group: TP ``t`` per rank, ``g / t > 1`` ranks, experts over
all ``g`` devices, ``g`` dividing the experts), memory checked per stage as the
validator does, with concrete device ids: a TP group takes, in one fast domain, any
number of free devices from each of the domain's nodes (the first free ones of each
node: devices of a node are alike), so stages may share a node, share a domain or
cross the network. Identical fully-free domains are tried once (they are symmetric).
Colocated: one pipeline serves both phases (in-flight batching: TTFT and TPOT are the
weighted step mix of :mod:`autoplan.cost.inflight`); disaggregated: a prefill pipeline, then a
decode pipeline on the devices left. Objective: ``TTFT + (osl - 1) * TPOT`` (ms), then
fewer devices; SLOs as hard limits. Pruning is by partial sums only (every term is
non-negative), so the search is exact. The winner is re-priced by
:func:`autoplan.cost.evaluate.evaluate` and checked by the shared rules.

Exponential: a handful of layers and at most a dozen or two devices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from autoplan.catalog import topology_from_spec
from autoplan.cost.evaluate import evaluate
from autoplan.cost.inflight import largest_pass_tokens, pool_passes
from autoplan.cost.kv import kv_stage_time_s
from autoplan.cost.pipeline import StagePlacement, pool_memory_args, weighted_stage_time_s
from autoplan.cost.roofline import activation_message_bytes, stage_memory, valid_tps
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec, model_from_config
from autoplan.inputs.topology import TopologySpec
from autoplan.inputs.workload import Precision, Workload
from autoplan.rules import rules

REL = 1e-9  # float noise when comparing objectives


@dataclass
class Best:
    e2e_ms: float
    devices: int
    placement: str
    pre: list[StagePlacement]
    dec: list[StagePlacement]
    ttft_ms: float
    tpot_ms: float


class _Search:
    def __init__(self, model: ModelSpec, topo: Topology, work: Workload,
                 ttft_slo_ms: float | None, tpot_slo_ms: float | None,
                 max_devices: int | None = None, uniform_tp: bool = False,
                 pp1: bool = False, ep_under_tp: bool = False):
        self.model, self.topo, self.work = model, topo, work
        self.pp1 = pp1  # disaggregated pools with a GPU stage: one stage (see exhaustive)
        self.ep_under_tp = ep_under_tp  # EP over a TP group's devices (attention DP 1) too
        # an engine runs the plan: one TP degree per pipeline on its engine-run kinds
        self.uniform_tp = uniform_tp
        self.ttft_slo = None if ttft_slo_ms is None else ttft_slo_ms * 1e-3 * (1 + 1e-9)
        self.tpot_slo = None if tpot_slo_ms is None else tpot_slo_ms * 1e-3 * (1 + 1e-9)
        self.max_devices = max_devices
        self.osl = work.osl
        self.L = model.num_layers
        self.best: tuple[float, int] | None = None
        self.best_plan = None
        self._mem: dict = {}
        self._stage: dict = {}
        self.node_of = {d: topo.graph.nodes[d]["node"] for d in topo.devices}
        # domains: list of (kind, [[devices of node 1], [devices of node 2], ...])
        self.domains = []
        for dom in topo.fast_domains:
            nodes: dict[str, list[str]] = {}
            for d in dom.devices:
                nodes.setdefault(self.node_of[d], []).append(d)
            self.domains.append((dom.kind, list(nodes.values())))
        self.tps = {k: valid_tps(model, topo.max_fast_domain(k)) for k in topo.kind_names}
        # (tp, dp, ep) layouts of a stage per kind: TP over its group, and for an MoE
        # model attention DP x EP over the same group (EP over all of it, as vLLM runs it,
        # or, with attention DP, EP 1: the MoE split like a TP group over all of it)
        self.shapes_of = {k: [(t, 1, 1) for t in v] + self._ep_layouts(v)
                          for k, v in self.tps.items()}
        # Per pool and phase, the weighted forward passes of its figure (a colocated pool's
        # in-flight step mix; None: it cannot sustain the batch) and their messages.
        # A colocated pool's DP ranks schedule alone: its mix depends on the DP degree.
        self._passes: dict = {}
        self._msgs: dict = {}

    def _ep_layouts(self, sizes: list[int]) -> list[tuple[int, int, int]]:
        moe = self.model.moe
        if moe is None:
            return []
        out = []
        for g in sizes:
            if g < 2:
                continue
            # attention DP with the MoE split over the whole group like a TP group (EP 1)
            out += [(t, g // t, 1) for t in valid_tps(self.model, g) if g % t == 0 and g > t]
            if g > moe.num_experts or moe.num_experts % g:
                continue
            out += [(t, g // t, g) for t in valid_tps(self.model, g) if g % t == 0
                    and (g > t or self.ep_under_tp)]
        return out

    def passes(self, pool: str, dp: int = 1):
        if (pool, dp) not in self._passes:
            self._passes[pool, dp] = pool_passes(self.topo, self.work, pool, dp)
        return self._passes[pool, dp]

    def msgs(self, pool: str, dp: int, ph: str) -> list[tuple[float, float]]:
        if (pool, dp, ph) not in self._msgs:
            self._msgs[pool, dp, ph] = [
                (w, activation_message_bytes(self.model, sh, self.work.precision))
                for w, sh in self.passes(pool, dp)[ph]]
        return self._msgs[pool, dp, ph]

    # -- pricing (the functions evaluate uses) ----------------------------------------
    def fits(self, pool: str, a: int, b: int, kind: str, shape: tuple[int, int, int]):
        key = (pool, a, b, kind, shape)
        if self.passes(pool, shape[1]) is None:  # its server cannot sustain the batch
            return None
        if key not in self._mem:
            kv_batch, ctx, tokens = pool_memory_args(pool, self.work,
                                                     largest_pass_tokens(self.passes(pool, shape[1])))
            k = self.topo.kinds[kind]
            tp, dp, ep = shape
            mem = stage_memory(self.model, k, tp, range(a, b), a == 0, b == self.L, kv_batch,
                               ctx, tokens, self.work.precision, dp, ep)
            ok = mem.total_bytes / k.capacity_bytes <= self.work.max_memory_fraction + 1e-12
            self._mem[key] = mem if ok else None
        return self._mem[key]

    def stage_time(self, pool: str, ph: str, a: int, b: int, kind: str,
                   devs: tuple[str, ...], shape: tuple[int, int, int]) -> float:
        key = (pool, ph, a, b, kind, devs, shape)
        if key not in self._stage:
            st = StagePlacement(a, b, kind, devs, shape[1], shape[2])
            mem = self.fits(pool, a, b, kind, shape)
            self._stage[key] = weighted_stage_time_s(self.model, self.topo, st,
                                                     self.passes(pool, shape[1])[ph],
                                                     self.work.precision, mem)
        return self._stage[key]

    # -- device groups ------------------------------------------------------------------
    def groups(self, kind: str, tp: int, busy: set[str]):
        """Candidate TP groups: per domain of ``kind``, every split of ``tp`` over its
        nodes, each node giving its first free devices; fully-free identical domains
        once."""
        seen_free = set()
        for kd, nodes in self.domains:
            if kd != kind:
                continue
            free = [[d for d in n if d not in busy] for n in nodes]
            if sum(len(f) for f in free) < tp:
                continue
            if all(len(f) == len(n) for f, n in zip(free, nodes)):
                sig = tuple(len(n) for n in nodes)
                if sig in seen_free:
                    continue
                seen_free.add(sig)
            yield from self._splits(free, 0, tp, ())

    def _splits(self, free, i, left, acc):
        if left == 0:
            yield tuple(sorted(acc, key=self.topo.devices.index))
            return
        if i == len(free):
            return
        # Nodes with the same free devices (none taken, same size) are alike only if
        # none is used yet; keep it simple and exact: try every count on every node.
        for c in range(min(left, len(free[i])), -1, -1):
            yield from self._splits(free, i + 1, left - c, acc + tuple(free[i][:c]))

    # -- search -------------------------------------------------------------------------
    def run(self, placement: str):
        if placement == "colocated":
            self._pipe("colocated", 0, [], set(), 0.0, 0.0, None)
        else:
            self._pipe("prefill", 0, [], set(), 0.0, 0.0, None)

    def _better(self, e2e: float, devices: int) -> bool:
        if self.best is None:
            return True
        b, n = self.best
        if e2e < b * (1 - REL):
            return True
        return e2e <= b * (1 + REL) and devices < n

    def _prunable(self, partial: float, devices: int) -> bool:
        if self.best is None:
            return False
        b, n = self.best
        return partial > b * (1 + REL) or (partial >= b * (1 - REL) and devices >= n)

    def _pipe(self, pool, a, stages, busy, t_pre, t_dec, pre_done):
        """Extend ``pool``'s pipeline from layer ``a``. ``t_pre`` / ``t_dec``: prefill and
        decode time so far (s); ``pre_done``: (prefill stages, their time) once the
        prefill pipeline is complete (disaggregated)."""
        osl = self.osl
        partial = t_pre + (osl - 1) * t_dec
        if pre_done is not None:
            partial += pre_done[1]
        if self._prunable(partial * 1e3, len(busy)):
            return
        if self.max_devices is not None and len(busy) > self.max_devices:
            return
        if a == self.L:
            self._complete(pool, stages, busy, t_pre, t_dec, pre_done)
            return
        phases = {"colocated": ("prefill", "decode"), "prefill": ("prefill",),
                  "decode": ("decode",)}[pool]
        prev = stages[-1].devices[0] if stages else None
        fixed = next(((s.tp, s.dp, s.ep) for s in stages if self.uniform_tp
                      and not self.topo.kinds[s.kind].own_runtime), None)
        for b in range(a + 1, self.L + 1):
            for kind in self.topo.kind_names:
                free = not self.uniform_tp or self.topo.kinds[kind].own_runtime
                for shape in self.shapes_of[kind]:
                    if not free and fixed is not None and shape != fixed:
                        continue
                    if self.fits(pool, a, b, kind, shape) is None:
                        continue
                    for devs in self.groups(kind, shape[0] * shape[1], busy):
                        dt = {}
                        for ph in phases:
                            hop = (sum(w * self.topo.p2p_time_s(prev, devs[0], msg)
                                       for w, msg in self.msgs(pool, shape[1], ph))
                                   if prev is not None else 0.0)
                            dt[ph] = self.stage_time(pool, ph, a, b, kind, devs, shape) + hop
                        np_, nd = t_pre + dt.get("prefill", 0.0), t_dec + dt.get("decode", 0.0)
                        if self.ttft_slo is not None and pool != "decode" and np_ > self.ttft_slo:
                            continue
                        if self.tpot_slo is not None and pool != "prefill" and nd > self.tpot_slo:
                            continue
                        st = StagePlacement(a, b, kind, devs, shape[1], shape[2])
                        if (self.pp1 and pool != "colocated" and stages
                                and any(not self.topo.kinds[x.kind].own_runtime
                                        for x in stages + [st])):
                            continue  # the engine runs disaggregated pools without PP
                        self._pipe(pool, b, stages + [st], busy | set(devs), np_, nd, pre_done)

    def _complete(self, pool, stages, busy, t_pre, t_dec, pre_done):
        if pool == "prefill":
            # Start the decode pipeline on the devices left. KV is added at the end.
            self._pipe("decode", 0, [], busy, 0.0, 0.0, (stages, t_pre))
            return
        if pool == "colocated":
            ttft, tpot, pre, dec = t_pre, t_dec, stages, stages
            if len({s.dp for s in stages}) > 1:
                return  # one step schedule: one attention-DP degree (rules.colocated_dp)
        else:
            pre, t_p = pre_done
            dec = stages
            kinds = sorted({s.kind for s in dec})
            kv = max(kv_stage_time_s(self.model, self.topo, self.work, s.end - s.first, s.size,
                                     s.kind, kd) for s in pre for kd in kinds)
            ttft, tpot = t_p + kv, t_dec
        if self.ttft_slo is not None and ttft > self.ttft_slo:
            return
        e2e = (ttft + (self.osl - 1) * tpot) * 1e3
        if self._better(e2e, len(busy)):
            self.best = (e2e, len(busy))
            self.best_plan = ("colocated" if pool == "colocated" else "disaggregated",
                              list(pre), list(dec))


def exhaustive(model: ModelSpec, topo: Topology, work: Workload, placement: str = "auto",
               ttft_slo_ms: float | None = None, tpot_slo_ms: float | None = None,
               max_devices: int | None = None, uniform_tp: bool = False,
               pp1: bool = False, ep_under_tp: bool = False) -> Best | None:
    """The best concrete plan (latency objective), or None when none is valid.
    ``uniform_tp``: one TP degree per pipeline on GPU kinds (a plan with an engine);
    ``pp1``: disaggregated pools with a GPU stage have one stage (vLLM's NIXL);
    ``ep_under_tp``: MoE stages may also put the experts over a TP group's devices
    (attention DP 1), as the planner offers for vLLM and TensorRT-LLM."""
    s = _Search(model, topo, work, ttft_slo_ms, tpot_slo_ms, max_devices, uniform_tp, pp1,
                ep_under_tp)
    modes = ["colocated", "disaggregated"] if placement == "auto" else [placement]
    if len(topo.devices) < 2 and "disaggregated" in modes:
        modes.remove("disaggregated")
    for mode in modes:
        s.run(mode)  # a colocated shape whose server cannot sustain the batch never fits
    if s.best_plan is None:
        return None
    mode, pre, dec = s.best_plan
    fig = evaluate(model, topo, work, mode, pre, dec)
    errs = rules.pipeline("prefill", model, topo, pre) + rules.pipeline("decode", model, topo, dec)
    phases = ("prefill",) if mode == "colocated" else ("prefill", "decode")
    errs += rules.memory(fig, work.max_memory_fraction, phases)
    errs += rules.slos(fig, ttft_slo_ms, tpot_slo_ms)
    assert not errs, errs
    assert abs(fig.e2e_ms - s.best[0]) <= 1e-9 * s.best[0] + 1e-12, (fig.e2e_ms, s.best)
    used = {d for st in pre + dec for d in st.devices}
    return Best(fig.e2e_ms, len(used), mode, pre, dec, fig.ttft_ms, fig.tpot_ms)


# -- random small instances ---------------------------------------------------------------

GPU_KINDS = ["h100-sxm", "a100-sxm-80gb", "l40s", "a100-sxm-40gb", "h200"]
TWO_TIER = {"description": "test kind: SRAM in front of HBM", "calibrate_like": "lpu",
            "peak_flops_per_s": {"fp16": 300e12, "bf16": 300e12, "int8": 600e12},
            "memory_tiers": [
                {"name": "sram", "capacity_bytes": 0.25e9, "bandwidth_bytes_per_s": 60e12},
                {"name": "hbm", "capacity_bytes": 2.0e9, "bandwidth_bytes_per_s": 2e12}]}


def random_instance(seed: int):
    """(model, topology, workload, placement, rng): a tiny model, 2 kinds, domains of
    2/3/4/6/8/12 devices, sometimes multi-node domains, an SRAM-only or two-tier kind."""
    rng = random.Random(seed)
    layers = rng.randint(2, 5)
    heads = rng.choice([4, 6, 8, 12, 16])
    kv = rng.choice([h for h in (1, 2, 3, 4, 6, 8, heads) if heads % h == 0])
    hidden = heads * rng.choice([64, 128, 256])
    cfg = {"hidden_size": hidden, "intermediate_size": hidden * rng.choice([2, 3, 4]),
           "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": rng.choice([1000, 32000])}
    if rng.random() < 0.3:  # MoE with a leading dense run
        dense = rng.randint(1, max(1, layers - 1))
        cfg.update(model_type="qwen2_moe", num_experts=8, num_experts_per_tok=2,
                   moe_intermediate_size=hidden, mlp_only_layers=list(range(dense)))
    else:
        cfg["model_type"] = "llama"
    model = model_from_config(cfg, name=f"rand{seed}")
    special = rng.choice(["lpu", "tier2", None, None])
    kinds = rng.sample(GPU_KINDS, 2 if special is None else 1)
    if special:
        kinds.append(special)
    rng.shuffle(kinds)
    nodes, nets, device_kinds = [], [], {}
    total = 0
    for i, kind in enumerate(kinds):
        per = rng.choice([1, 2, 3, 4, 6, 8, 12])
        count = rng.choice([1, 1, 2, 3]) if per <= 4 else 1
        if total + per * count > 16:
            per, count = rng.choice([1, 2]), 1
        total += per * count
        nodes.append({"name": f"g{i}", "count": count, "devices": {"kind": kind, "count": per},
                      **({"fabric": {"kind": "fast", "tensor_parallel": True, "latency_s": 2e-6,
                                     "bandwidth_bytes_per_s": rng.choice([50e9, 300e9])}}
                         if per > 1 else {})})
        if count > 1 and rng.random() < 0.4:  # the nodes form one multi-node fast domain
            nets.append({"name": f"nv{i}", "kind": "fastnet", "tensor_parallel": True,
                         "node_groups": [f"g{i}"], "latency_s": 4e-6,
                         "bandwidth_bytes_per_s": rng.choice([25e9, 100e9])})
        if kind == "tier2":
            device_kinds["tier2"] = TWO_TIER
    nets.append({"name": "eth", "kind": "eth", "bandwidth_bytes_per_s": 12.5e9,
                 "latency_s": 5e-6})
    spec = TopologySpec.model_validate({"name": f"rand{seed}", "nodes": nodes,
                                        "networks": nets, "device_kinds": device_kinds})
    topo = topology_from_spec(spec, None, "vllm")
    dtype = rng.choice(["bf16", "fp8"])
    work = Workload(rng.choice([128, 512, 2048]), rng.choice([16, 128]), rng.choice([1, 4, 32]),
                    Precision(dtype, "bf16", "bf16"), rng.choice([0.9, 0.5, 0.2, 0.05]))
    placement = rng.choice(["colocated", "disaggregated", "auto"])
    # An FP8 checkpoint that keeps some projections 16-bit (its own generator, so the
    # instances above stay those of earlier commits): the first or last layer's MLP, all
    # attention, or the first MoE layer's experts, which the planner must price exactly.
    qrng = random.Random(seed + 7_000_003)
    if dtype == "fp8" and qrng.random() < 0.5:
        first = cfg.get("mlp_only_layers", [])
        keep = qrng.choice([["model.layers.0.mlp"], [f"model.layers.{layers - 1}.mlp"],
                            ["self_attn", "lm_head"],
                            ["re:.*self_attn.*", f"model.layers.{layers - 1}.mlp.down_proj",
                             f"model.layers.{layers - 1}.mlp.gate_proj",
                             f"model.layers.{layers - 1}.mlp.up_proj"],
                            [f"model.layers.{len(first)}.mlp.experts.1.down_proj"]])
        cfg["quantization_config"] = {"quant_method": "fbgemm_fp8",
                                      "modules_to_not_convert": keep}
        model = model_from_config(cfg, name=f"rand{seed}")
    return model, topo, spec, work, placement, rng
