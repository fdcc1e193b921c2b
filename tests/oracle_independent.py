"""An independent brute force over concrete plans, judged by ``autoplan.validate``.

Written apart from ``autoplan/search/brute.py`` and ``tests/oracle_exhaustive.py``: it
writes an HF-style ``config.json`` and a topology YAML for a seeded small instance, asks
``autoplan.plan`` for its plan, then enumerates concrete plans itself and hands each
candidate, as a plan JSON document, to the public validator. The validator (and the
``evaluate`` behind it) is the only judge of what is valid and what it costs: the
enumeration is deliberately wider than the planner's rules (every group size up to the
node count of a kind, any node first in a group, TP groups over any nodes; with ``wide``
every EP dividing the group, on any group size), and whatever ``validate`` refuses is
dropped.

Latency: every contiguous cut of the layers into stages; per stage a kind, a group
(devices taken per node, the first free ones of each node: a node's devices are alike,
every node may come first), a (TP, attention DP, EP) shape; colocated (one pipeline for
both phases) and disaggregated (a prefill pipeline and a decode pipeline on disjoint
devices). Pools are priced alone with the public ``evaluate``; pairs are ranked by
``TTFT + (osl - 1) TPOT`` and validated in that order until one passes.

Throughput (fixed batch): one design per pool with replica counts, priced the same way;
the deployment rate is what ``validate`` recomputes from the plan.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import autoplan
from autoplan.cost.evaluate import evaluate
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import InputError
from autoplan.plan_schema import PlanInputs
from autoplan.search.planner import _resolve

KINDS = ["h100-sxm", "a100-sxm-80gb", "l40s", "h200"]
SLOW = 1 + 1e-9  # prefilters are a superset of what validate accepts


# -- instances ----------------------------------------------------------------------------

@dataclass
class Instance:
    model: Path
    topology: Path
    kw: dict  # plan() keyword arguments (isl, osl, batch, ...)
    moe: bool = False
    about: str = ""


def random_instance(seed: int, folder: Path, big: bool = False) -> Instance:
    """A tiny dense or MoE model, 1-2 node groups of 1-4 devices (a multi-node NVLink
    domain sometimes), a workload whose memory headroom or SLOs bind sometimes."""
    rng = random.Random(seed)
    layers = rng.randint(2, 4 if big else 3)
    heads = rng.choice([4, 6, 8, 12])
    kvh = rng.choice([h for h in (1, 2, 3, 4, heads) if heads % h == 0])
    hidden = heads * rng.choice([64, 128])
    cfg = {"_name_or_path": f"oracle/r{seed}", "hidden_size": hidden,
           "intermediate_size": hidden * rng.choice([2, 4]), "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kvh,
           "vocab_size": rng.choice([1000, 1000, 32000]), "model_type": "llama"}
    moe = rng.random() < 0.35
    if moe:
        dense = rng.choice([0, 0, 1]) if layers > 1 else 0
        cfg.update(model_type="qwen2_moe", num_experts=rng.choice([4, 8]),
                   num_experts_per_tok=2, moe_intermediate_size=hidden,
                   mlp_only_layers=list(range(dense)))
    model = folder / f"r{seed}.json"
    model.write_text(json.dumps(cfg), encoding="utf-8")
    groups, nets = [], []
    budget = 6 if big else 4
    for i, kind in enumerate(rng.sample(KINDS, rng.choice([1, 1, 2]))):
        per = rng.choice([1, 2, 3, 4] if big else [1, 2, 3])
        count = rng.choice([1, 2])
        while per * count > budget and count > 1:
            count -= 1
        per = min(per, budget) if per * count <= budget else max(1, budget // count)
        if per * count < 1:
            break
        budget -= per * count
        g = {"name": f"g{i}", "count": count, "devices": {"kind": kind, "count": per}}
        if per > 1:
            g["fabric"] = {"kind": "nvl", "tensor_parallel": True, "latency_s": 2e-6,
                           "bandwidth_bytes_per_s": rng.choice([50e9, 300e9])}
        groups.append(g)
        if count > 1 and rng.random() < 0.35:
            nets.append({"name": f"nv{i}", "kind": "nvnet", "tensor_parallel": True,
                         "node_groups": [f"g{i}"], "latency_s": 4e-6,
                         "bandwidth_bytes_per_s": rng.choice([25e9, 100e9])})
        if budget <= 0:
            break
    nets.append({"name": "eth", "kind": "eth", "bandwidth_bytes_per_s": 12.5e9,
                 "latency_s": 5e-6})
    topo = folder / f"t{seed}.yaml"
    topo.write_text(yaml.safe_dump({"name": f"t{seed}", "nodes": groups, "networks": nets}),
                    encoding="utf-8")
    kw = {"isl": rng.choice([128, 512, 2048]), "osl": rng.choice([8, 64]),
          "batch": rng.choice([1, 1, 4, 16]), "dtype": rng.choice(["bf16", "fp8"]),
          "max_memory_fraction": rng.choice([0.9, 0.9, 0.9, 0.05]),
          "placement": rng.choice(["auto", "auto", "colocated", "disaggregated"]),
          "engine": rng.choice(["vllm", "vllm", "sglang", "trtllm", None]),
          "time_limit_s": 60}
    about = f"{layers}L h{heads}/{kvh} {'moe' if moe else 'dense'}; " + ", ".join(
        f"{g['count']}x{g['devices']['count']} {g['devices']['kind']}" for g in groups)
    return Instance(model, topo, kw, moe, about)


# -- enumeration ------------------------------------------------------------------------

@dataclass
class Space:
    ctx_model: object
    topo: object
    work: object
    engine: str | None
    wide: bool = False  # every (TP, DP, EP) validate accepts, beyond the planner's space
    nodes: list[tuple[str, list[str]]] = field(default_factory=list)  # (kind, devices)
    domain: dict[str, int] = field(default_factory=dict)


def make_space(inputs: PlanInputs, work, wide: bool = False) -> Space:
    from autoplan.catalog import topology_from_spec
    from autoplan.cost.context import model_of
    topo = topology_from_spec(inputs.topology_spec, inputs.calibration, inputs.engine)
    sp = Space(model_of(inputs), topo, work, inputs.engine, wide)
    by_node: dict[str, list[str]] = {}
    for d in topo.devices:
        by_node.setdefault(topo.graph.nodes[d]["node"], []).append(d)
    sp.nodes = [(topo.device_kind_of(ds[0]), ds) for ds in by_node.values()]
    sp.domain = {d: dom.index for dom in topo.fast_domains for d in dom.devices}
    return sp


def shapes(sp: Space, g: int) -> list[tuple[int, int, int]]:
    """(tp, dp, ep) of a group of g devices: TP g, and for MoE every tp*dp = g with the
    experts over the whole group (EP g) or, with attention DP, split like a TP group over
    all of it (EP 1), on a group of a size the model's TP allows: the planner's documented
    space (README "Limits, honestly"; ``autoplan/search/configs.py`` ep_shapes).
    ``sp.wide``: any EP dividing g, on any group size, which validate also accepts.
    SGLang's EP under TP attention is outside the documented space (README "What optimal
    means")."""
    from autoplan.cost.roofline import valid_tps

    out = [(g, 1, 1)]
    if sp.ctx_model.moe is None:
        return out
    tp_size = g in valid_tps(sp.ctx_model, g)
    for tp in range(1, g + 1):
        if g % tp:
            continue
        dp = g // tp
        for ep in range(1, g + 1):
            if g % ep or (tp, dp, ep) == (g, 1, 1):
                continue
            if not sp.wide and not (tp_size and (ep == g or ep == 1 and dp > 1)):
                continue
            if sp.engine == "sglang" and tp == g and ep > 1:
                continue
            out.append((tp, dp, ep))
    return out


def groups(sp: Space, kind: str, g: int, busy: frozenset[str]):
    """Device tuples of g free devices of ``kind``: counts per node, the first free
    devices of each, each used node in turn first."""
    free = [[d for d in ds if d not in busy] for k, ds in sp.nodes if k == kind]
    free = [f for f in free if f]

    def rec(i, left, acc):
        if left == 0:
            yield acc
            return
        if i == len(free):
            return
        for c in range(min(left, len(free[i])), -1, -1):
            yield from rec(i + 1, left - c, acc + ([free[i][:c]] if c else []))

    for parts in rec(0, g, []):
        if len({sp.domain.get(p[0], -1) for p in parts}) > 1 and g > 1:
            continue  # several fast domains: a TP group cannot span them
        for first in range(len(parts)):
            yield tuple(itertools.chain(parts[first], *parts[:first], *parts[first + 1:]))


def pipelines(sp: Space, busy: frozenset[str] = frozenset(), max_devices: int | None = None):
    """Every pipeline (a list of StagePlacement) over free devices."""
    L = sp.ctx_model.num_layers
    kinds = sorted({k for k, _ in sp.nodes})

    def rec(a, stages, used):
        if a == L:
            yield list(stages)
            return
        for b in range(a + 1, L + 1):
            for kind in kinds:
                avail = sum(1 for k, ds in sp.nodes if k == kind for d in ds
                            if d not in used)
                for g in range(1, avail + 1):
                    for tp, dp, ep in shapes(sp, g):
                        for devs in groups(sp, kind, g, used):
                            st = StagePlacement(a, b, kind, devs, dp, ep)
                            yield from rec(b, stages + [st], used | set(devs))

    for p in rec(0, [], frozenset(busy)):
        if max_devices is None or sum(s.size for s in p) <= max_devices:
            yield p


def tp_of(s: StagePlacement) -> int:
    return s.size // s.dp


# -- plan documents -------------------------------------------------------------------

def _stage_doc(k, s, fig, phase):
    return {"index": k, "layers": [s.first, s.end], "device_kind": s.kind, "tp": tp_of(s),
            "ep": s.ep, "attention_dp": s.dp, "devices": list(s.devices),
            "time_ms": fig.stage_ms[phase][k], "memory_fraction": fig.stage_fraction[phase][k],
            "bottleneck": fig.stage_bottleneck[phase][k]}


def _phase_doc(stages, fig, phase, reps):
    return {"replicas": len(reps), "devices": sum(s.size for s in stages),
            "time_ms": fig.prefill_ms if phase == "prefill" else fig.tpot_ms,
            "bottleneck": fig.phase_bottleneck[phase],
            "requests_per_s": fig.phase_requests_per_s[phase],
            "bubble_fraction": fig.bubble_fraction[phase],
            "stages": [_stage_doc(k, s, fig, phase) for k, s in enumerate(stages)],
            "replica_devices": [[list(g) for g in r] for r in reps]}


def plan_doc(inputs: dict, placement: str, pre, dec, fig, pre_reps=None, dec_reps=None,
             objective=0.0, unit="ms") -> dict:
    pre_reps = pre_reps or [[s.devices for s in pre]]
    dec_reps = dec_reps or [[s.devices for s in dec]]
    used = {d for r in pre_reps + dec_reps for g in r for d in g}
    return {"inputs": inputs, "placement": placement, "status": "feasible",
            "objective": objective, "objective_unit": unit, "best_bound": None, "gap": None,
            "solve_seconds": 0.0, "ttft_ms": fig.ttft_ms, "tpot_ms": fig.tpot_ms,
            "e2e_ms": fig.e2e_ms, "throughput_tokens_per_s": fig.throughput_tokens_per_s,
            "requests_per_s": fig.requests_per_s, "kv_transfer_ms": fig.kv_transfer_ms,
            "devices": len(used),
            "prefill": _phase_doc(pre, fig, "prefill", pre_reps),
            "decode": _phase_doc(dec, fig, "decode", dec_reps)}


def price(sp: Space, placement, pre, dec, replicas=(1, 1)):
    try:
        return evaluate(sp.ctx_model, sp.topo, sp.work, placement, pre, dec, replicas)
    except InputError:
        return None


def fits(fig, phase, mmf) -> bool:
    return max(fig.stage_fraction[phase]) <= mmf * SLOW


def _dummy(sp: Space, kinds: tuple[str, ...]):
    """A pipeline of the given kinds (its figures unused: a pool priced alone)."""
    L = sp.ctx_model.num_layers
    dev = {k: next(ds[0] for kk, ds in sp.nodes if kk == k) for k in kinds}
    if len(kinds) == 1:
        return [StagePlacement(0, L, kinds[0], (dev[kinds[0]],))]
    return [StagePlacement(0, 1, kinds[0], (dev[kinds[0]],)),
            StagePlacement(1, L, kinds[1], (dev[kinds[1]],))]


def template_inputs(inst: Instance, **over) -> tuple[dict, object]:
    """The plan inputs the planner records for this request (a portable, embedded model
    and topology), and the workload it prices."""
    req = autoplan.Request(model=str(inst.model), topology=str(inst.topology),
                           **{**inst.kw, **over})
    m, _, inputs = _resolve(req)
    return inputs, req.served(m).workload


# -- latency ---------------------------------------------------------------------------

@dataclass
class Found:
    value: float | None  # e2e ms (latency) or tokens/s (throughput); None: nothing valid
    doc: dict | None
    priced: int = 0
    validated: int = 0


def _slo_ok(v: float, slo: float | None) -> bool:
    return slo is None or v <= slo * SLOW


def latency_oracle(inst: Instance, wide: bool = False, **over) -> Found:
    """The lowest ``TTFT + (osl - 1) TPOT`` over every concrete plan validate accepts
    (``wide``: MoE stages of every EP, see :func:`shapes`)."""
    inputs, work = template_inputs(inst, **over)
    sp = make_space(inputs, work, wide)
    doc_in = inputs.model_dump(mode="json")
    mmf, osl = inputs.max_memory_fraction, inputs.osl
    ttft_slo, tpot_slo, maxd = inputs.ttft_slo_ms, inputs.tpot_slo_ms, inputs.max_devices
    modes = (["colocated", "disaggregated"] if inputs.placement == "auto"
             else [inputs.placement])
    cands: list[tuple[float, int, int, str, object, object]] = []
    found = Found(None, None)
    pipes = list(pipelines(sp, max_devices=maxd))
    if "colocated" in modes:
        for p in pipes:
            fig = price(sp, "colocated", p, p)
            found.priced += 1
            if fig is None or not fits(fig, "prefill", mmf) or not _slo_ok(
                    fig.ttft_ms, ttft_slo) or not _slo_ok(fig.tpot_ms, tpot_slo):
                continue
            cands.append((fig.e2e_ms, sum(s.size for s in p), len(cands), "colocated", p, p))
    if "disaggregated" in modes and len(sp.topo.devices) > 1:
        ksets = sorted({tuple(sorted({s.kind for s in p})) for p in pipes})
        dec_cache: dict = {}

        def dec_price(q):
            key = tuple(q)
            if key not in dec_cache:
                fig = price(sp, "disaggregated", _dummy(sp, ksets[0]), q)
                found.priced += 1
                ok = fig is not None and fits(fig, "decode", mmf) and _slo_ok(fig.tpot_ms,
                                                                             tpot_slo)
                dec_cache[key] = (q, fig.tpot_ms) if ok else None
            return dec_cache[key]

        for p in pipes:
            used = frozenset(d for s in p for d in s.devices)
            ttft = {}
            for K in ksets:
                fig = price(sp, "disaggregated", p, _dummy(sp, K))
                found.priced += 1
                if fig is not None and fits(fig, "prefill", mmf) and _slo_ok(fig.ttft_ms,
                                                                            ttft_slo):
                    ttft[K] = fig.ttft_ms
            if not ttft:
                continue
            # the decode pool on the devices left (a node's free devices are alike)
            left = None if maxd is None else maxd - len(used)
            for q in pipelines(sp, used, left):
                K = tuple(sorted({s.kind for s in q}))
                got = dec_price(q) if K in ttft else None
                if got is not None:
                    n = len(used) + sum(s.size for s in q)
                    cands.append((ttft[K] + (osl - 1) * got[1], n, len(cands),
                                  "disaggregated", p, got[0]))
    cands.sort(key=lambda c: c[:3])
    bad: set = set()
    for value, _n, _i, placement, p, q in cands:
        if ("prefill", tuple(p)) in bad or ("decode", tuple(q)) in bad:
            continue
        fig = price(sp, placement, p, q)
        doc = plan_doc(doc_in, placement, p, q, fig, objective=fig.e2e_ms)
        rep = autoplan.validate(doc)
        found.validated += 1
        if rep.ok:
            assert math.isclose(rep.figures.e2e_ms, value, rel_tol=1e-9), (rep.figures.e2e_ms,
                                                                            value)
            found.value, found.doc = rep.figures.e2e_ms, doc
            return found
        # a rule of one pool alone (its shape, its engine): drop that pipeline everywhere
        for pool, pipe in (("prefill", p), ("decode", q)):
            other = "decode" if pool == "prefill" else "prefill"
            if placement == "disaggregated" and all(
                    pool in e and other not in e for e in rep.errors):
                bad.add((pool, tuple(pipe)))
    return found


# -- throughput and devices (colocated, batch given) ---------------------------------------

def _designs_doc(doc_in, sp, pipes, figs, unit, objective):
    """A colocated deployment of one replica per pipeline: the first as the plan's
    design, the others as more designs."""
    doc = plan_doc(doc_in, "colocated", pipes[0], pipes[0], figs[0], objective=objective,
                   unit=unit)
    doc["more_designs"] = [
        {"pool": "colocated", "batch": sp.work.batch, "ttft_ms": f.ttft_ms, "tpot_ms": f.tpot_ms,
         "prefill": _phase_doc(p, f, "prefill", [[s.devices for s in p]]),
         "decode": _phase_doc(p, f, "decode", [[s.devices for s in p]])}
        for p, f in zip(pipes[1:], figs[1:])]
    doc["devices"] = sum(s.size for p in pipes for s in p)
    return doc


def packings(inst: Instance, **over):
    """Every colocated deployment (disjoint pipelines, each its own replica, priced on
    its own devices): yields (requests/s summed, devices, pipelines, figures), and the
    plan inputs."""
    inputs, work = template_inputs(inst, placement="colocated", **over)
    sp = make_space(inputs, work)
    mmf = inputs.max_memory_fraction
    cache: dict = {}

    def good(p):
        key = tuple(p)
        if key not in cache:
            fig = price(sp, "colocated", p, p)
            ok = (fig is not None and fits(fig, "prefill", mmf)
                  and _slo_ok(fig.ttft_ms, inputs.ttft_slo_ms)
                  and _slo_ok(fig.tpot_ms, inputs.tpot_slo_ms))
            cache[key] = fig if ok else None
        return cache[key]

    out = []

    def rec(used, pipes, figs, last):
        if pipes:
            out.append((sum(f.requests_per_s for f in figs), len(used), list(pipes), list(figs)))
        for p in pipelines(sp, used):
            key = (p[0].devices, tuple(p))
            if last is not None and key <= last:
                continue  # each set of pipelines once (ordered by first device)
            fig = good(p)
            if fig is not None:
                rec(used | {d for s in p for d in s.devices}, pipes + [p], figs + [fig], key)

    rec(frozenset(), [], [], None)
    return out, inputs, sp


def throughput_oracle(inst: Instance, **over) -> Found:
    """The most output tokens/s of a colocated deployment validate accepts."""
    outs, inputs, sp = packings(inst, **over)
    doc_in = inputs.model_dump(mode="json")
    found = Found(None, None, priced=len(outs))
    for rate, n, pipes, figs in sorted(outs, key=lambda o: (-o[0], o[1])):
        if inputs.max_devices is not None and n > inputs.max_devices:
            continue
        doc = _designs_doc(doc_in, sp, pipes, figs, "tokens/s", rate * inputs.osl)
        rep = autoplan.validate(_fill_rate(doc, sp, pipes, figs, inputs))
        found.validated += 1
        if rep.ok:
            found.value, found.doc = rep.figures.throughput_tokens_per_s, doc
            assert math.isclose(found.value, rate * inputs.osl, rel_tol=1e-9)
            return found
    return found


def devices_oracle(inst: Instance, rate: float, **over) -> Found:
    """The fewest devices of a colocated deployment validate accepts at ``rate``."""
    outs, inputs, sp = packings(inst, objective="devices", request_rate=rate, **over)
    doc_in = inputs.model_dump(mode="json")
    found = Found(None, None, priced=len(outs))
    for r, n, pipes, figs in sorted(outs, key=lambda o: (o[1], -o[0])):
        if r < rate * (1 - 1e-9):
            continue
        doc = _designs_doc(doc_in, sp, pipes, figs, "devices", n)
        rep = autoplan.validate(_fill_rate(doc, sp, pipes, figs, inputs))
        found.validated += 1
        if rep.ok:
            found.value, found.doc = n, doc
            return found
    return found


def _fill_rate(doc, sp, pipes, figs, inputs):
    """The deployment's rate figures (the sum over its designs) in the document."""
    rate = sum(f.requests_per_s for f in figs)
    doc["requests_per_s"] = rate
    doc["throughput_tokens_per_s"] = rate * inputs.osl
    doc["tokens_per_s_per_device"] = rate * inputs.osl / doc["devices"]
    return doc


def whole_fraction(inst: Instance) -> float:
    """The memory fraction of the whole model on one device of the smallest kind
    (colocated): a headroom below it forces pipeline cuts."""
    inputs, work = template_inputs(inst, max_memory_fraction=1.0)
    sp = make_space(inputs, work)
    L = sp.ctx_model.num_layers
    out = 0.0
    for kind, ds in sp.nodes:
        p = [StagePlacement(0, L, kind, (ds[0],))]
        fig = price(sp, "colocated", p, p)
        if fig is not None:
            out = max(out, fig.stage_fraction["prefill"][0])
    return out
