"""Integer cost tables the planner optimises over (no solver here).

Device *classes* are identical fast domains (kind, domain size, how many); a *config*
is a (class, TP) pair with TP valid for the model and at most the domain size (with
``packing``; else dividing it), how the groups pack into domains checked exactly. A
*pool* is one pipeline: a prefill pool, a decode pool, or a colocated pool serving both.
For every pool, stage role (only / first / middle / last), config and stage length in
layers, the tables hold the stage's time in integer ticks of 10 ns (rounded up, so the
solver is conservative) for each phase the pool serves, and the longest stage that fits
in memory. Times come from :func:`autoplan.cost.pipeline.stage_cost`, the function the
validator uses, so the solver and the validator price a stage identically.

Layers: a model's leading dense layers before its MoE layers (DeepSeek-V3's first three)
ride on the first stage with the embedding, or (lower-bound tables: the latency search)
are cut anywhere by the roles of :mod:`autoplan.search.roles`; the remaining ``U`` layers
are uniform and are what stages count. The LM head rides on the last stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from autoplan.cost.inflight import largest_pass_tokens, pool_passes
from autoplan.cost.kv import kv_pair_bandwidth, kv_stage_bytes
from autoplan.cost.pipeline import (
    StagePlacement,
    memories_for,
    pool_memory_args,
    stage_cost,
)
from autoplan.cost.roofline import (
    REQUEST,
    Shape,
    activation_message_bytes,
)
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.unquantized import base_kind
from autoplan.inputs.workload import Workload
from autoplan.search import roles as R
from autoplan.search.configs import (
    Config,
    DeviceClass,
    Packing,
    build_configs,
    device_classes,
    node_groups,
)
from autoplan.search.roles import ROLES

POOL_PHASES = {"prefill": ("prefill",), "decode": ("decode",), "colocated": ("prefill", "decode")}


# Table times are integers in ticks of 10 ns, each rounded up (an upper bound).
TICKS_PER_S = 10**8


TICKS_PER_MS = 10**5


INF = 1 << 50


@dataclass
class PoolTable:
    """Costs of one pool type. Arrays are indexed ``[role, config, length]`` (roles in
    the order of ``Tables.roles``; a lead stage's figures at length 0, and its
    ``max_len`` is 1 when it fits)."""

    pool: str
    time_t: dict[str, np.ndarray]  # phase -> int64 array; INF where the stage cannot exist
    max_len: np.ndarray  # [role, config]: longest stage that fits (0: none)
    hop_t: dict[str, np.ndarray]  # phase -> [config]: hand-off into a stage of this config
    # [role, config]: times (and KV hand-offs) are A + B * length, so the solver may use
    # the compact form; False for multi-tier kinds (and when forced, for tests).
    affine: np.ndarray
    # phase -> [class]: what a hand-off into this class from another class costs beyond
    # hop_t (the worst source class); charged once per entry into the class.
    cross_t: dict[str, np.ndarray]
    # [role, config], prefill pools: the server's handling of the requests of a pass in
    # the prefill figure (host time on the stage holding layer 0, rounded down): part of
    # TTFT, not of the time a stage keeps its devices busy (None: no such term)
    request_t: np.ndarray | None = None

    @property
    def busy_t(self) -> np.ndarray:
        """[role, config, length]: the prefill pass a stage keeps its devices busy for,
        which paces a pipelined prefill pool (``time_t["prefill"]`` less request handling,
        which the API server does beside the GPU's work)."""
        t = self.time_t["prefill"]
        return t if self.request_t is None else t - self.request_t[:, :, None]


@dataclass
class Tables:
    model: ModelSpec
    topo: Topology
    work: Workload
    prefix: int  # layers that ride on the first stage with the embedding
    units: int  # uniform layers cut into stages
    classes: list[DeviceClass]
    configs: list[Config]
    pools: dict[str, PoolTable]
    kv_t: np.ndarray  # [role, config, length, decode_kind] KV hand-off of a prefill stage
    kinds: list[str]
    packing: dict[int, Packing] = field(default_factory=dict)  # class -> how groups pack
    # ``lower``: every entry is a LOWER bound of the exact figure (rounded down, hand-offs
    # at the best pair a placement can reach), in ticks of 10 ps; else an upper bound in
    # ticks of 10 ns (the replica fronts).
    lower: bool = False
    ticks_per_s: int = TICKS_PER_S
    # An engine runs the plan: every pipeline uses one TP degree on its engine-run
    # (GPU) stages; kinds of their own runtime (SRAM-only) are free.
    uniform_tp: bool = False
    roles: tuple[str, ...] = ROLES  # the base roles first (their index is ROLES.index)

    def governed(self, c: int) -> bool:
        """Config ``c`` runs under the engine's uniform-TP rule."""
        return self.uniform_tp and not self.topo.kinds[self.configs[c].kind].own_runtime

    @property
    def ticks_per_ms(self) -> float:
        return self.ticks_per_s / 1000

    @property
    def cuts_dense_run(self) -> bool:
        """Stages may cut inside the leading dense run (or there is none): false for the
        replica fronts and past :data:`~autoplan.search.roles.MAX_DENSE_CUTS`."""
        return self.prefix == 0 or len(self.roles) > len(ROLES)

    def layers_of(self, role: str, length: int) -> int:
        return length + R.dense(role, self.prefix)


def leading_dense(model: ModelSpec) -> int:
    """Layers before the uniform run (dense layers ahead of the MoE layers).

    Stages price their real layers, at the positions of :func:`autoplan.search.roles.span`:
    a middle stage of any length lies inside layers ``prefix + 1 .. N - 2``, so those must
    be alike for the tables to hold for every cut; the run's first layer (on the stage
    with the embedding) and the last (with the LM head) may differ, as a checkpoint that
    keeps their projections 16-bit makes them (:mod:`autoplan.inputs.unquantized`)."""
    base = [base_kind(model.layer_kind(i)) for i in range(model.num_layers)]
    p = 0
    while p < len(base) and base[p] != base[-1]:
        p += 1
    if any(k != base[-1] for k in base[p:]):
        # Interleaved dense and MoE layers: the cost model prices each stage from its
        # real layers, but the planner's count form needs a uniform run.
        raise InputError(f"{model.name}: interleaved dense/MoE layers are not supported by the planner")
    run = range(p + 1, model.num_layers - 1)
    kinds = [model.layer_kind(i) for i in run]
    if len(set(kinds)) > 1:
        common = max(kinds, key=kinds.count)  # the most layers' kind (the first on a tie)
        odd = next(i for i, k in zip(run, kinds) if k != common)
        ref = next(i for i, k in zip(run, kinds) if k == common)
        raise InputError(f"{model.name}: layer {odd}'s weight formats differ from layer "
                         f"{ref}'s (the checkpoint keeps other projections 16-bit); the "
                         f"planner needs the layers between the first and the last alike "
                         f"(estimate prices any layout)")
    return p


def _placement(model: ModelSpec, prefix: int, role: str, length: int,
               cfg: Config, group: tuple[str, ...] | None = None) -> StagePlacement:
    first, end = R.span(role, prefix, model.num_layers, length)
    return StagePlacement(first, end, cfg.kind, group or cfg.group, cfg.dp, cfg.ep)


LOWER_TICKS_PER_S = 10**11
"""Resolution of lower-bound tables (10 ps): their rounding is what separates the bound
from the exact figure, so it is fine (about 1e-7 relative on the shipped cases)."""


def build_tables(model: ModelSpec, topo: Topology, work: Workload,
                 pools: tuple[str, ...], force_per_length: bool = False,
                 packing: bool = False, lower: bool = False,
                 uniform_tp: bool = False, engine: str | None = None) -> Tables:
    """``packing``: every TP that fits a domain (see :func:`build_configs`).
    ``lower``: lower-bound tables (see :class:`Tables`): the latency search prunes with
    them and decides on exact figures; they also cut inside a leading dense run (the
    roles of :mod:`autoplan.search.roles`). ``engine``: the expert-parallel shapes it runs."""
    prefix = leading_dense(model)
    units = model.num_layers - prefix
    classes = device_classes(topo)
    configs, packs = build_configs(model, classes, packing, engine)
    kinds = list(topo.kind_names)
    tables = Tables(model, topo, work, prefix, units, classes, configs, {},
                    np.zeros((0,)), kinds, packs, lower,
                    LOWER_TICKS_PER_S if lower else TICKS_PER_S, uniform_tp,
                    R.roles_for(prefix, lower))
    for pool in pools:
        tables.pools[pool] = _pool_table(tables, pool, force_per_length)
    if pp1_disaggregated(engine):
        # The engine runs a disaggregated pool without PP: its stages are `only` ones
        # (kinds of their own runtime, the SRAM chips, stay free).
        for pool in set(pools) & {"prefill", "decode"}:
            tab = tables.pools[pool]
            for c in range(len(configs)):
                if tables.governed(c) or (engine is not None and not uniform_tp
                                          and not topo.kinds[configs[c].kind].own_runtime):
                    tab.max_len[1:, c] = 0
                    for arr in tab.time_t.values():
                        arr[1:, c, :] = INF
    if "prefill" in pools:
        tables.kv_t = _kv_table(tables)
    return tables


def pp1_disaggregated(engine: str | None) -> bool:
    """The engine runs disaggregated pools with one pipeline stage (vLLM's NIXL)."""
    if engine is None:
        return False
    from autoplan.catalog import engine_rules

    er = engine_rules().get(engine)
    return er is not None and er.disaggregated_pp1


def _pool_table(t: Tables, pool: str, force_per_length: bool) -> PoolTable:
    model, work, U = t.model, t.work, t.units
    C = len(t.configs)
    T = t.ticks_per_s
    # Upper bounds round up; lower bounds round down (and one tick more, against float
    # noise in the two-point affine form).
    rnd = (lambda x: math.floor(x) - 1) if t.lower else math.ceil
    nr = len(t.roles)
    max_len = np.zeros((nr, C), dtype=np.int64)
    affine = np.zeros((nr, C), dtype=bool)
    times = {ph: np.full((nr, C, U + 1), INF, dtype=np.int64) for ph in POOL_PHASES[pool]}
    hops = {ph: np.zeros(C, dtype=np.int64) for ph in POOL_PHASES[pool]}
    request = np.zeros((nr, C), dtype=np.int64) if pool == "prefill" else None
    # Each phase's figure is a weighted sum of forward passes: one pass, or a colocated
    # server's step mix under in-flight batching (None: it cannot sustain the batch).
    # A colocated pool's data-parallel ranks schedule alone: the mix depends on the
    # config's DP degree.
    by_dp = {dp: pool_passes(t.topo, work, pool, dp) for dp in sorted({c.dp for c in t.configs})}
    if all(v is None for v in by_dp.values()):
        cross0 = {ph: np.zeros(len(t.classes), dtype=np.int64) for ph in POOL_PHASES[pool]}
        return PoolTable(pool, times, max_len, hops, affine, cross0)
    for cfg in t.configs:
        passes = by_dp[cfg.dp]
        if passes is None:
            continue
        kv_batch, ctx, tokens = pool_memory_args(pool, work, largest_pass_tokens(passes))
        kind = t.topo.kinds[cfg.kind]
        cap = kind.capacity_bytes * work.max_memory_fraction
        groups = (node_groups(t.topo, t.classes[cfg.cls].domains[0], cfg)
                  if t.lower else [cfg.group])
        for r, role in enumerate(t.roles):
            # Memory is affine in the stage length: two evaluations give it exactly.
            fixed = R.fixed_length(role)
            one = U if R.base(role) == "only" else 0  # a fixed role's one length
            mems: dict = {}  # length -> (placement, memory), priced once

            def placed(ln: int, mems: dict = mems):
                if ln not in mems:
                    st = _placement(model, t.prefix, role, ln, cfg)
                    mems[ln] = st, memories_for(model, t.topo, [st], kv_batch, ctx, tokens,
                                                work.precision)[0]
                return mems[ln]

            pts = [(ln, placed(ln)[1]) for ln in ((1, 2) if not fixed else (one,))]
            if fixed:
                ok = pts[0][1].total_bytes <= cap
                best = (U if one else 1) if ok else 0  # a lead stage: 1 when it fits
            else:
                (l1, m1), (l2, m2) = pts
                slope = m2.total_bytes - m1.total_bytes
                base = m1.total_bytes - slope * l1
                best = int(math.floor((cap - base) / slope)) if slope > 0 else U
                # A first or last stage leaves at least one layer for the other end; a
                # middle stage one for each end.
                best = max(0, min(best, U - 2 if role == "mid" else U - 1))
            max_len[r, cfg.index] = best
            if best == 0:
                continue
            multi_tier = len(kind.memory_tiers) > 1
            # A colocated pool's phases share their passes (the same steps): each pass of
            # each stage length is priced once.
            memo: dict[tuple[int, Shape], float] = {}

            def pass_s(ln: int, shape: Shape) -> float:
                # lower bounds: the fastest way the group can lie over its domain's nodes
                if (ln, shape) not in memo:
                    st, mem = placed(ln)
                    memo[ln, shape] = min(
                        stage_cost(model, t.topo, StagePlacement(st.first, st.end, st.kind, g,
                                                                 st.dp, st.ep),
                                   shape, work.precision, mem).time_s for g in groups)
                return memo[ln, shape]

            if request is not None:  # host time, the same at every length
                ln0 = one if fixed else 1
                request[r, cfg.index] = math.floor(sum(
                    w * pass_s(ln0, sh) for w, sh in passes["prefill"] if sh == REQUEST) * T)
            for ph in POOL_PHASES[pool]:
                def exact(ln: int) -> float:  # weighted_stage_time_s, priced once a pass
                    return sum(w * pass_s(ln, sh) for w, sh in passes[ph])
                if fixed:
                    times[ph][r, cfg.index, one] = max(0, rnd(exact(one) * T))
                    continue
                if multi_tier:
                    for ln in range(1, best + 1):
                        times[ph][r, cfg.index, ln] = max(0, rnd(exact(ln) * T))
                    continue
                # On a single memory tier a stage's time is affine in its length: integer
                # A + B * length, each rounded up so it bounds the exact time from above
                # (lower bounds: down; the time is convex in the length, a max of affine
                # terms, so the secant through lengths 1 and 2 stays below it beyond).
                a1 = exact(1)
                b = rnd((exact(2) - a1) * T) if best >= 2 else 0
                b = max(b, 0)
                a = rnd(a1 * T) - b
                for ln in range(1, best + 1):
                    times[ph][r, cfg.index, ln] = a + b * ln
            affine[r, cfg.index] = not multi_tier and not force_per_length
    cross = {ph: np.zeros(len(t.classes), dtype=np.int64) for ph in POOL_PHASES[pool]}
    reach: dict[str, dict] = {}  # source device -> paths to every node
    for ph in POOL_PHASES[pool]:
        # A weighted sum of passes hands off each pass's activations: the weighted sum of
        # each pass's bound is a bound of the sum (each pass's worst or best pair).
        h_sum = np.zeros(C, dtype=float)
        c_by = []
        for dp, passes in by_dp.items():
            if passes is None:
                continue
            mine = np.array([c.dp == dp for c in t.configs])
            c_dp = np.zeros(len(t.classes), dtype=float)
            for w, shape in passes[ph]:
                h, c = _phase_hops(t, activation_message_bytes(model, shape, work.precision),
                                   reach)
                h_sum += np.where(mine, w * h, 0.0)
                c_dp += w * c
            c_by.append(c_dp)
        # an entry into a class: the worst DP degree's (upper bounds), the best (lower)
        c_sum = (np.min if t.lower else np.max)(np.array(c_by), axis=0)
        # Integer ticks again (the parts already are bounds; 1e-6 tick absorbs float noise
        # of the weights, so one pass of weight 1 keeps its ticks).
        fix = (lambda x: np.floor(x + 1e-6)) if t.lower else (lambda x: np.ceil(x - 1e-6))
        hops[ph][:] = fix(h_sum)
        cross[ph][:] = np.maximum(0, fix(c_sum))
    return PoolTable(pool, times, max_len, hops, affine, cross, request)


def _phase_hops(t: Tables, msg: float, reach: dict) -> tuple[np.ndarray, np.ndarray]:
    """Hand-offs of ``msg`` bytes in ticks: into a stage of each config, and the extra of
    an entry into each class (upper bounds; lower bounds with ``t.lower``)."""
    hops = np.zeros(len(t.configs), dtype=np.int64)
    cross = np.zeros(len(t.classes), dtype=np.int64)
    if t.lower:
        _best_hops(t, "", msg, reach, hops, cross)
        return hops, cross
    within = [_hop(t.topo, c.domains[0].devices[0], _devices(c), msg, reach)
              for c in t.classes]
    for cfg in t.configs:
        hops[cfg.index] = math.ceil(within[cfg.cls] * TICKS_PER_S)
    for k, ck in enumerate(t.classes):
        worst = max((_hop(t.topo, cj.domains[0].devices[0], _devices(ck), msg, reach)
                     for j, cj in enumerate(t.classes) if j != k), default=0.0)
        cross[k] = max(0, math.ceil((worst - within[k]) * TICKS_PER_S))
    return hops, cross


def colocated_rate(batch: int, ttft_t: int, tpot_t: int, osl: int) -> Fraction:
    """Requests per second of one colocated replica from its TTFT and TPOT in ticks:
    ``batch`` slots, each held for TTFT + (osl - 1) TPOT (Little's law; the model of
    :mod:`autoplan.cost.inflight`, as ``evaluate`` computes it)."""
    return Fraction(batch * TICKS_PER_S, ttft_t + (osl - 1) * tpot_t)


def class_entries(tab: PoolTable, phase: str, classes: list[int]) -> int:
    """Hand-offs between device classes of a pipeline whose stages (in order) sit on
    ``classes``, beyond the within-class hop, as the solver charges them: stages run
    in class blocks, so every class but the first stage's is entered once, and the
    first stage's class again when it also holds the last stage with another class
    between."""
    first, last = classes[0], classes[-1]
    total = sum(int(tab.cross_t[phase][k]) for k in set(classes) - {first})
    if len(classes) > 1 and first == last and len(set(classes)) > 1:
        total += int(tab.cross_t[phase][first])
    return total


def _best_hops(t: Tables, ph: str, msg: float, reach: dict, hops: np.ndarray,
               cross: np.ndarray) -> None:
    """Lower bounds of the hand-offs (ticks): into a stage of config ``c``, the fastest
    hand-off it can receive: from another stage of its class (the fastest pair that two
    such TP groups can occupy: the same fast domain when a second group of the class's
    smallest TP fits beside it, else another domain) or from a stage of another class
    (the fastest pair of the two; a hop out of another kind may be the faster one, its
    launch is that kind's); into a class from another class, what that hop adds beyond
    the largest such bound of the class's configs."""
    T = t.ticks_per_s
    other = [min((_hop(t.topo, cj.domains[0].devices[0], _devices(ck), msg, reach, min)
                  for j, cj in enumerate(t.classes) if j != k), default=math.inf)
             for k, ck in enumerate(t.classes)]
    for cfg in t.configs:
        c = t.classes[cfg.cls]
        src = c.domains[0].devices[0]
        small = min(x.size for x in t.configs if x.cls == cfg.cls)
        if cfg.size + small <= c.domain_size or len(c.domains) == 1:
            dsts = _devices(c)
        else:
            dsts = [d for dom in c.domains[1:] for d in dom.devices]
        best = min(_hop(t.topo, src, dsts, msg, reach, min), other[cfg.cls])
        hops[cfg.index] = max(0, math.floor(best * T) - 1)
    for k in range(len(t.classes)):
        if other[k] == math.inf:
            continue
        charged = max((int(hops[c.index]) for c in t.configs if c.cls == k), default=0)
        # hop_t charges at least `charged` already; an entry adds the rest.
        cross[k] = max(0, math.floor(other[k] * T) - 1 - charged)


def _devices(c: DeviceClass) -> list[str]:
    return [d for dom in c.domains for d in dom.devices]


def _hop(topo: Topology, src: str, dsts: list[str], msg: float, reach: dict[str, dict],
         pick=max) -> float:
    """The slowest (``pick=max``) or fastest (``min``) hand-off of ``msg`` bytes from ``src``
    to another of ``dsts``: a stage may sit anywhere in its class (device classes are
    symmetric, so one source stands for all)."""
    if src not in reach:
        reach[src] = topo.paths_from(src)
    paths = reach[src]
    launch = topo.calibration(topo.device_kind_of(src)).collective_launch_s
    hop = pick((msg / paths[d][0] + paths[d][1] for d in dsts if d != src), default=None)
    return 0.0 if hop is None else hop + launch


def _kv_table(t: Tables) -> np.ndarray:
    U, C, K = t.units, len(t.configs), len(t.kinds)
    kv = np.zeros((len(t.roles), C, U + 1, K), dtype=np.int64)
    per_layer = kv_stage_bytes(t.model, t.work, 1)
    links = {(a, b): kv_pair_bandwidth(t.topo, a, b) for a in t.kinds for b in t.kinds}
    for cfg in t.configs:
        for r, role in enumerate(t.roles):
            for kd, kind_to in enumerate(t.kinds):
                bw, lat = links[cfg.kind, kind_to]
                # kv_stage_time_s (the validator's) is affine in the stage length:
                # integer A + B * length, each part rounded up (an upper bound; lower
                # bounds: down).
                T = t.ticks_per_s
                rnd = (lambda x: max(0, math.floor(x) - 1)) if t.lower else math.ceil
                b = rnd(per_layer / (cfg.size * bw) * T)
                a = rnd((per_layer * t.layers_of(role, 0) / (cfg.size * bw) + lat) * T)
                kv[r, cfg.index, :, kd] = a + b * np.arange(0, U + 1)  # 0: a lead stage
    return kv
