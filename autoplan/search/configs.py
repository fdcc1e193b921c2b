"""Device classes and the configs the tables price: which (TP, attention DP, EP) shapes
a class offers, and how their groups pack into its fast domains, exactly."""

from __future__ import annotations

from dataclasses import dataclass

from autoplan.cost.roofline import valid_tps
from autoplan.graphs.topology import FastDomain, Topology
from autoplan.inputs.model import ModelSpec


@dataclass
class DeviceClass:
    index: int
    kind: str
    domain_size: int
    domains: list[FastDomain]

    @property
    def devices(self) -> int:
        return self.domain_size * len(self.domains)


@dataclass(frozen=True)
class Config:
    index: int
    cls: int
    kind: str
    tp: int  # attention TP of one data-parallel rank
    # A representative group: the first devices of the class's first domain (the
    # latency tables also price the node spreads of attention-DP stages, node_groups).
    group: tuple[str, ...]
    dp: int = 1  # data-parallel attention ranks (MoE models)
    ep: int = 1  # expert-parallel degree of the MoE layers

    @property
    def size(self) -> int:
        """Devices of one stage on this config (its group): ``tp * dp``."""
        return self.tp * self.dp

    @property
    def shape(self) -> tuple[int, int, int]:
        """(tp, dp, ep): what an engine runs one of per pipeline."""
        return self.tp, self.dp, self.ep


def device_classes(topo: Topology) -> list[DeviceClass]:
    by: dict[tuple[str, int], list[FastDomain]] = {}
    for d in topo.fast_domains:
        by.setdefault((d.kind, d.size), []).append(d)
    return [DeviceClass(i, k, n, doms) for i, ((k, n), doms) in enumerate(by.items())]


def spread_domain(topo: Topology, dom: FastDomain) -> bool:
    """Devices of ``dom`` see different paths to each other (it spans nodes joined by a
    slower link than inside a node; not an NVL72, whose trays NVLink joins alike)."""
    devs = dom.devices
    return len({topo.path(devs[0], d) for d in devs[1:]}) > 1


def node_groups(topo: Topology, dom: FastDomain, cfg: Config) -> list[tuple[str, ...]]:
    """Groups of a config's stage in ``dom``, one for every way its devices can lie over
    the domain's nodes that the cost model tells apart (:func:`spread_groups`), for
    attention-DP stages, whose expert all-to-all moves data over every link class at
    once, so a spread over nodes can beat one node. A TP group's all-reduce runs at its
    slowest link, so the first devices of the domain (the fewest nodes) are its best; so
    are they on a domain that is not :func:`spread_domain`."""
    if cfg.dp <= 1 or not spread_domain(topo, dom):
        return [dom.devices[:cfg.size]]
    return spread_groups(topo, dom, cfg.size)


def spread_groups(topo: Topology, dom: FastDomain, size: int,
                  busy: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, ...]]:
    """Groups of ``size`` free devices of ``dom``, one per placement the cost model tells
    apart. A stage's collectives are priced from its first device (the all-to-all by how
    many peers each path class from it reaches; the first rank's all-reduce by the
    slowest link among its devices): so a group is the node holding its first device,
    how many devices share that node, and how many sit in each class of other nodes by
    their path from it (fastest class first, nodes in domain order inside a class; devices
    of a node are alike). First nodes alike in what they see (their free devices, and
    each class's paths and free devices) are tried once. A handful of groups however many
    nodes the domain spans."""
    nodes: dict[str, list[str]] = {}
    for d in dom.devices:
        if d not in busy:
            nodes.setdefault(topo.graph.nodes[d]["node"], []).append(d)
    seen: set = set()
    out: list[tuple[str, ...]] = []
    for n0, mine in nodes.items():
        src = mine[0]
        classes: dict[tuple[float, float], list[str]] = {}
        for n, devs in nodes.items():
            if n != n0:
                classes.setdefault(topo.path(src, devs[0]), []).extend(devs)
        order = sorted(classes.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
        profile = (len(mine), tuple((k, len(v)) for k, v in order))
        if profile in seen:
            continue
        seen.add(profile)
        for f in range(min(size, len(mine)), 0, -1):
            for counts in _compositions(size - f, [len(v) for _, v in order]):
                out.append(tuple(mine[:f]) + tuple(
                    d for k, (_, v) in zip(counts, order) for d in v[:k]))
    return out


def _compositions(total: int, caps: list[int]) -> list[list[int]]:
    """Ways to put ``total`` items in bins of ``caps`` (counts per bin, in order)."""
    if not caps:
        return [[]] if total == 0 else []
    return [[k] + rest for k in range(min(total, caps[0]), -1, -1)
            for rest in _compositions(total - k, caps[1:])]


MAX_PATTERNS = 400
"""Most packing patterns (maximal TP-group fills of one domain) the model enumerates for
a class whose TP sizes do not divide each other; beyond, the class keeps the sizes that
divide its domain (the limit is documented)."""


@dataclass(frozen=True)
class Packing:
    """How TP groups of a class pack into its identical domains, exactly.

    ``chain``: the sizes divide each other, so groups of sizes ``tps`` fit in ``B``
    domains of ``n`` iff for every size ``t``: the devices of groups of size >= t are at
    most ``B * floor(n / t) * t`` (one inequality per size; plain counting when every
    size divides ``n``). Otherwise ``patterns``: every maximal fill of one domain (how
    many groups of each size), and how many domains take each."""

    tps: tuple[int, ...]
    patterns: tuple[tuple[int, ...], ...] | None = None  # None: chain


def _is_chain(tps: list[int]) -> bool:
    return all(tps[i + 1] % tps[i] == 0 for i in range(len(tps) - 1))


def _patterns(tps: list[int], n: int, limit: int) -> list[tuple[int, ...]] | None:
    """Maximal multisets of ``tps`` with sum <= n, as counts per size; None past limit."""
    out: list[tuple[int, ...]] = []

    def go(i: int, left: int, acc: list[int]) -> bool:
        if i == len(tps):
            if left < tps[0]:  # maximal: no group of any size fits any more
                out.append(tuple(acc))
            return len(out) <= limit
        for c in range(left // tps[i], -1, -1):
            if not go(i + 1, left - c * tps[i], acc + [c]):
                return False
        return True

    return out if go(0, n, []) else None


def build_configs(model: ModelSpec, classes: list[DeviceClass], packing: bool = False,
                  engine: str | None = None) -> tuple[list[Config], dict[int, Packing]]:
    """Configs per class, and how their groups pack. ``packing``: every TP the model
    allows up to the domain size (TP 16/32/64 in a 72-GPU domain, TP 3 in 6 or 8),
    inventory checked exactly by :class:`Packing`; else only TP dividing the domain
    size (the replica fronts count devices, which is exact only then). MoE models add
    the expert-parallel configs of :func:`ep_shapes` on the same group sizes (so the
    packing of sizes is unchanged); ``engine`` keeps the shapes it runs."""
    out: list[Config] = []
    packs: dict[int, Packing] = {}
    for c in classes:
        n = c.domain_size
        tps = valid_tps(model, n)
        divisors = [t for t in tps if n % t == 0]
        if not packing:
            tps = divisors
        pats = None
        if tps and not _is_chain(tps):
            pats = _patterns(tps, n, MAX_PATTERNS)
            if pats is None:  # too many patterns: the divisors only
                tps = divisors
                pats = None if _is_chain(tps) else _patterns(tps, n, 10**6)
        packs[c.index] = Packing(tuple(tps), None if pats is None else tuple(pats))
        for t in tps:
            out.append(Config(len(out), c.index, c.kind, t, c.domains[0].devices[:t]))
        for size in tps:
            for tp, dp, ep in ep_shapes(model, size, engine):
                out.append(Config(len(out), c.index, c.kind, tp, c.domains[0].devices[:size],
                                  dp, ep))
        if not packing:
            for k in range(2, len(c.domains) + 1):
                for tp, dp, ep in ep_shapes(model, k * n, engine, across=True):
                    group = tuple(d for dom in c.domains[:k] for d in dom.devices)
                    out.append(Config(len(out), c.index, c.kind, tp, group, dp, ep))
    return out, packs


EP_UNDER_TP = ("vllm", "trtllm")
"""Engines whose EP-under-TP-attention stages the planner searches (see :func:`ep_shapes`)."""


def ep_shapes(model: ModelSpec, size: int, engine: str | None = None, across: bool = False
              ) -> list[tuple[int, int, int]]:
    """(tp, dp, ep) shapes of a stage of ``size`` devices beside plain TP ``size``, for an
    MoE model: attention on ``dp`` > 1 ranks of TP ``tp`` (``tp * dp = size``, ``tp`` a
    valid TP), the experts either over all ``size`` devices (EP = size, as vLLM's
    ``--enable-expert-parallel`` runs it and SGLang's and TensorRT-LLM's wide-EP recipes;
    ``size`` must divide the experts) or split like a TP group over all of them (EP 1:
    vLLM's ``--data-parallel-size`` without ``--enable-expert-parallel``, SGLang's
    ``--enable-dp-attention`` without ``--ep-size``, TensorRT-LLM's attention DP with
    ``moe_expert_parallel_size`` 1). The EP degrees between (1 < EP < size, which SGLang
    and TensorRT-LLM can run, not vLLM) are priced by ``estimate`` and ``validate`` and
    not searched. One group of ``size`` devices (a TP size of the model) inside one fast
    domain, like a TP group. With ``engine``, the shapes its rules allow
    (``hardware/engine_rules.yaml``).

    EP under TP attention (``dp = 1``, experts over the TP group's devices, every token on
    every device) is searched for the engines of :data:`EP_UNDER_TP`, whose fitted MoE
    kernels price those rows right (held out, never fitted: vLLM DeepSeek-V3 block-FP8 on
    H100, 4096 tokens at EP 8: 3.45 ms priced, 3.42 ms measured in
    ``hardware/data/aic-kernels/moe.csv.gz``; EP 2-8 at 64-256 tokens within 11%;
    TensorRT-LLM's one parameter set for every TP/EP split); SGLang's EP rows at prefill
    sizes are priced 30% under (EP 8, 4096 tokens, H100: 2.23 vs 3.18 ms), which would
    make the planner pick EP where the measurements say TP is faster: ``estimate`` and
    ``validate`` price it, the planner does not offer it there.

    ``across``: a group of ``size`` devices over several whole fast domains (attention
    DP 16 x EP 16 over two 8-GPU nodes, the wide-EP deployments of DeepSeek-V3): TP 1 per
    rank only (``dp = ep = size``), the all-to-all crossing the network. Such groups take
    whole domains, so device counting stays exact where every other group size divides
    the domain (the throughput and devices tables); the latency tables, which pack other
    sizes exactly, do not offer them."""
    if model.moe is None or size < 2:
        return []
    from autoplan.catalog import engine_rules

    e = model.moe.num_experts
    whole = size <= e and e % size == 0  # the experts shard over all the group's devices
    er = engine_rules().get(engine) if engine is not None else None
    out = []
    for tp in [1] if across else valid_tps(model, size):
        if size % tp:
            continue
        dp = size // tp
        if er is not None and er.attention_dp_all_devices and dp not in (1, size):
            continue
        if dp > 1 and not across:
            out.append((tp, dp, 1))  # the MoE TP over every device of the group
        if whole and (dp > 1 or (not across and engine in EP_UNDER_TP)):
            out.append((tp, dp, size))
    return out
