"""Cost of a concrete pipeline: stages with layer ranges, TP groups and devices.

Shared by ``estimate`` (even stages on a given TP/PP), the planner's tables and the
validator, so every figure autoplan prints comes from this one place.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from autoplan.cost.expert_parallel import expert_parallel_parts
from autoplan.cost.kernel_ops import allreduce_s
from autoplan.cost.memo import memo
from autoplan.cost.roofline import (
    REQUEST,
    Bound,
    Phase,
    Shape,
    StageMemory,
    activation_message_bytes,
    allreduces_per_layer,
    part_cost,
    residency,
    stage_memory,
)
from autoplan.graphs.model_graph import head_ops, layer_ops, tail_ops
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import EngineFacts
from autoplan.inputs.workload import Precision, Workload


@dataclass(frozen=True)
class StagePlacement:
    """Layers ``[first, end)`` on ``len(devices)`` devices of ``kind``.

    The devices are ``dp`` data-parallel attention ranks of ``tp`` devices each (``tp``
    is the attention TP degree of one rank; ``dp`` 1: one TP group of all of them), and
    the MoE layers' experts are sharded over ``ep`` ranks of ``size / ep`` devices
    (expert TP). Dense stages have ``dp = ep = 1``.
    """

    first: int
    end: int
    kind: str
    devices: tuple[str, ...]
    dp: int = 1
    ep: int = 1

    @property
    def size(self) -> int:
        """Devices of the stage."""
        return len(self.devices)

    @property
    def tp(self) -> int:
        """Attention TP degree of one data-parallel rank."""
        return len(self.devices) // self.dp

    @property
    def expert_parallel(self) -> bool:
        """The stage runs data-parallel attention or expert parallelism."""
        return self.dp > 1 or self.ep > 1


@dataclass
class StageCost:
    time_s: float
    compute_s: float  # roofline time of compute-bound operators (with their overheads)
    memory_s: float  # roofline time of memory-bound operators (with their overheads)
    comm_s: float  # tensor-parallel all-reduces
    memory: StageMemory
    capacity_bytes: float
    ops: dict[str, dict[str, float]] = field(default_factory=dict)
    # Physical floor of the pass on one rank: its FLOPs at the device's peak or its bytes
    # at the fastest tier's bandwidth, whichever is longer (no overheads, free links).
    floor_s: float = 0.0
    # The engine's host time in the pass (host_step_s; a REQUEST pass: request_overhead_s)
    host_s: float = 0.0

    @property
    def bottleneck(self) -> Bound:
        return _argmax(self.compute_s, self.memory_s, self.comm_s)

    @property
    def memory_fraction(self) -> float:
        return self.memory.total_bytes / self.capacity_bytes


@dataclass
class PhaseCost:
    time_s: float
    stages: list[StageCost]
    hops_s: list[float]

    @property
    def compute_s(self) -> float:
        return sum(s.compute_s for s in self.stages)

    @property
    def memory_s(self) -> float:
        return sum(s.memory_s for s in self.stages)

    @property
    def comm_s(self) -> float:
        return sum(s.comm_s for s in self.stages) + sum(self.hops_s)

    @property
    def host_s(self) -> float:
        return sum(s.host_s for s in self.stages)

    @property
    def bottleneck(self) -> Bound:
        return _argmax(self.compute_s, self.memory_s, self.comm_s)

    @property
    def slowest_stage_s(self) -> float:
        return max(s.time_s for s in self.stages)

    @property
    def floor_s(self) -> float:
        """The pass's physical floor: every stage at its devices' peak compute or
        bandwidth, stages one after another, hand-offs free."""
        return sum(s.floor_s for s in self.stages)


def _argmax(compute: float, memory: float, comm: float) -> Bound:
    # Ties resolve in this fixed order so the label is deterministic.
    best: Bound = "compute"
    if memory > compute:
        best = "memory"
    if comm > max(compute, memory):
        best = "communication"
    return best


def request_host_s(topo: Topology, st: StagePlacement) -> float:
    """The server's handling of one request, on the stage holding layer 0 (host time the
    GPU does not wait for: the API server works beside the engine), else 0."""
    facts = host_facts(topo, st.kind)
    return facts.request_overhead_s if st.first == 0 and facts is not None else 0.0


def host_facts(topo: Topology, kind: str) -> EngineFacts | None:
    """The engine whose host time a pipeline starting on a stage of ``kind`` pays: the
    kind's own; a GPU kind the engine prices without kernel data of its own (roofline
    calibration) is served by the same engine as the topology's other kinds (one engine
    serves a plan); None on a chip of its own vendor runtime (the LPU) or without one."""
    own = topo.kinds[kind].calibration.engine  # type: ignore[union-attr]
    if own is not None or topo.kinds[kind].own_runtime:
        return own
    for k in topo.kind_names:
        facts = topo.kinds[k].calibration.engine  # type: ignore[union-attr]
        if facts is not None:
            return facts
    return None


def stage_cost(model: ModelSpec, topo: Topology, st: StagePlacement, shape: Shape,
               precision: Precision, mem: StageMemory, breakdown: bool = False) -> StageCost:
    """Time of one forward pass of ``shape`` through one stage."""
    kind = topo.kinds[st.kind]
    facts = host_facts(topo, st.kind)
    if shape == REQUEST:  # the server's handling of a request: host time, no GPU work
        host = request_host_s(topo, st)
        ops = {"request_handling": {"time_s": host, "flops": 0.0, "bytes": 0.0, "count": 1}}
        return StageCost(host, 0.0, 0.0, 0.0, mem, kind.capacity_bytes,
                         ops if breakdown and host else {}, 0.0, host)
    res = residency(kind, mem.weights_bytes, mem.kv_bytes)
    counts = memo(("layer kinds", id(model), st.first, st.end), (model,),
                  lambda: Counter(model.layer_kind(i) for i in range(st.first, st.end)))
    if st.expert_parallel:
        parts = expert_parallel_parts(model, topo, st, counts, shape, precision, res)
    else:
        msg = activation_message_bytes(model, shape, precision)
        ar = memo(("allreduce", id(topo), st.devices, msg), (topo,),
                  lambda: allreduce_s(topo, st.devices, msg))
        parts = []
        # A part's cost depends on the stage only through these (memoised: the tables
        # price the same layers at every role and length).
        at = (id(model), id(kind), st.tp, shape, precision, _res_key(res), ar)

        def part(name: str, ops, n_ar: int = 0):
            return memo(("part", name, *at), (model, kind), lambda: part_cost(
                ops, model, kind, st.tp, shape, precision, res, ar, n_ar))

        for lk in sorted(counts):
            parts.append((counts[lk], part(lk, layer_ops(model, lk),
                                           allreduces_per_layer(model) if st.tp > 1 else 0)))
        if st.first == 0:
            parts.append((1, part("head", head_ops(model), 1 if st.tp > 1 else 0)))
        if st.end == model.num_layers:
            parts.append((1, part("tail", tail_ops(model))))
    compute = memory = comm = flops = moved = 0.0
    ops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for n, c in parts:
        comm += n * c.comm_s
        for o in c.ops:
            flops += n * o.flops
            moved += n * o.bytes
            if o.bound == "compute":
                compute += n * o.time_s
            else:
                memory += n * o.time_s
            if breakdown:
                d = ops[o.name]
                d["time_s"] += n * o.time_s
                d["flops"] += n * o.flops
                d["bytes"] += n * o.bytes
                d["count"] += n
    # The engine's host time per forward pass (scheduling, sampling, graph launch): once
    # per pass, charged to the stage that starts it.
    host = facts.host_step_s if st.first == 0 and facts is not None else 0.0
    if breakdown and host:  # the engine's host time, an entry of its own
        ops["host_step"].update(time_s=host, flops=0.0, bytes=0.0, count=1)
    cap = kind.capacity_bytes
    floor = max(flops / kind.peak_flops(precision.weight)[0],
                moved / kind.tiers_fastest_first()[0].bandwidth_bytes_per_s)
    return StageCost(compute + memory + comm + host, compute, memory, comm, mem, cap,
                     {k: dict(v) for k, v in ops.items()}, floor, host)


def _res_key(res) -> tuple[float, float, float]:
    return res.weight_s_per_byte, res.kv_s_per_byte, res.act_s_per_byte


def pipeline_cost(model: ModelSpec, topo: Topology, stages: list[StagePlacement], phase: Phase,
                  shape: Shape, precision: Precision, memories: list[StageMemory],
                  breakdown: bool = False) -> PhaseCost:
    """One forward pass through every stage in order, with the hand-offs between them."""
    costs = [stage_cost(model, topo, st, shape, precision, m, breakdown)
             for st, m in zip(stages, memories)]
    msg = activation_message_bytes(model, shape, precision)
    hops = [topo.p2p_time_s(a.devices[0], b.devices[0], msg) for a, b in zip(stages, stages[1:])]
    return PhaseCost(sum(c.time_s for c in costs) + sum(hops), costs, hops)


def weighted_pipeline_cost(model: ModelSpec, topo: Topology, stages: list[StagePlacement],
                           passes: list[tuple[float, Shape]], precision: Precision,
                           memories: list[StageMemory], breakdown: bool = False) -> PhaseCost:
    """A figure that is a weighted sum of forward passes (a colocated server's TPOT or
    TTFT under in-flight batching, :mod:`autoplan.cost.inflight`): every stage's times,
    operators, floor and hand-offs are the same weighted sums of its passes'."""
    costs = [pipeline_cost(model, topo, stages, "decode", sh, precision, memories, breakdown)
             for _, sh in passes]
    ws = [w for w, _ in passes]
    out = [_weighted([c.stages[i] for c in costs], ws) for i in range(len(stages))]
    hops = [sum(w * c.hops_s[i] for w, c in zip(ws, costs)) for i in range(len(stages) - 1)]
    return PhaseCost(sum(c.time_s for c in out) + sum(hops), out, hops)


def weighted_stage_time_s(model: ModelSpec, topo: Topology, st: StagePlacement,
                          passes: list[tuple[float, Shape]], precision: Precision,
                          mem: StageMemory) -> float:
    """One stage's share of a weighted sum of passes (the tables' entry)."""
    return sum(w * stage_cost(model, topo, st, sh, precision, mem).time_s for w, sh in passes)


def _weighted(costs: list[StageCost], ws: list[float]) -> StageCost:
    ops: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for w, c in zip(ws, costs):
        for name, d in c.ops.items():
            for k, v in d.items():
                ops[name][k] += w * v
    first = costs[0]
    return StageCost(sum(w * c.time_s for w, c in zip(ws, costs)),
                     sum(w * c.compute_s for w, c in zip(ws, costs)),
                     sum(w * c.memory_s for w, c in zip(ws, costs)),
                     sum(w * c.comm_s for w, c in zip(ws, costs)),
                     first.memory, first.capacity_bytes, {k: dict(v) for k, v in ops.items()},
                     sum(w * c.floor_s for w, c in zip(ws, costs)),
                     sum(w * c.host_s for w, c in zip(ws, costs)))


def memories_for(model: ModelSpec, topo: Topology, stages: list[StagePlacement], batch: int,
                 max_context: int, prefill_tokens: int, precision: Precision) -> list[StageMemory]:
    return [
        stage_memory(model, topo.kinds[st.kind], st.tp, range(st.first, st.end),
                     st.first == 0, st.end == model.num_layers, batch, max_context,
                     prefill_tokens, precision, st.dp, st.ep)
        for st in stages
    ]


def even_cuts(num_layers: int, pp: int) -> list[tuple[int, int]]:
    """``pp`` contiguous ranges as even as possible; earlier stages take the remainder."""
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        out.append((start, start + n))
        start += n
    return out


def pool_memory_args(pool: str, work: Workload,
                     largest_pass: int | None = None) -> tuple[int, int, int]:
    """(sequences whose KV is held, their context, tokens of the largest forward pass)
    for a pool's memory. A colocated pool holds its batch's KV at full context and the
    activations of its largest step (``largest_pass``: a mixed step of in-flight
    batching, :func:`autoplan.cost.inflight.largest_pass_tokens`)."""
    if pool == "prefill":
        return work.pb, work.isl, work.pb * work.isl
    if pool == "decode":
        return work.batch, work.isl + work.osl, work.batch
    assert largest_pass is not None, "a colocated pool's memory needs its largest step"
    return work.batch, work.isl + work.osl, largest_pass
