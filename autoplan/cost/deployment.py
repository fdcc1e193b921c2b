"""A deployment of several replica designs per pool: each design's figures and the rate
of the whole (the rule of :mod:`autoplan.search.mix`, in floating point).

Designs are grouped by where the KV goes: a disaggregated group is the decode designs of
one set of device kinds ``K`` and the prefill designs whose KV goes to ``K``; its rate is
``min(prefill rates, decode rates, KV link budget)`` summed over the designs of each
pool, the link budget being the KV path bandwidth per device (the slowest of the
group's prefill kinds to ``K``) times the smaller pool's devices, over one prompt's KV
bytes. The deployment's rate is the sum over its groups; a colocated deployment's is the
sum of its designs' rates. With one design per pool it is :func:`evaluate`'s rate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from autoplan.cost.evaluate import Figures, evaluate, placements
from autoplan.cost.kv import kv_link_bandwidth, kv_stage_bytes
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload


@dataclass
class Design:
    """A concrete replica design: its pool, first replica's stages, replicas, the
    workload it is priced at (its batch), and (prefill) the kinds its KV goes to."""

    pool: str  # prefill | decode | colocated
    stages: list[StagePlacement]
    replicas: int
    work: Workload
    kv_to: frozenset[str] = frozenset()

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(s.kind for s in self.stages)

    @property
    def devices(self) -> int:
        return self.replicas * sum(s.size for s in self.stages)

    @property
    def group(self) -> frozenset[str]:
        return self.kv_to if self.pool == "prefill" else self.kinds


def design_figures(model: ModelSpec, topo: Topology, placement: str, d: Design,
                   partner: list[StagePlacement] | None) -> Figures:
    """``evaluate`` of one design with all its replicas; a disaggregated design is priced
    beside ``partner``, stages of the other pool (a prefill design's KV hand-off depends
    on the kinds of the decode stages it sends to, nothing else of them)."""
    if placement == "colocated":
        return evaluate(model, topo, d.work, placement, d.stages, d.stages, (d.replicas, 1))
    if d.pool == "prefill":
        return evaluate(model, topo, d.work, placement, d.stages, partner, (d.replicas, 1))
    return evaluate(model, topo, d.work, placement, partner, d.stages, (1, d.replicas))


def design_rate(d: Design, fig: Figures) -> float:
    """Requests/s all replicas of one design serve in its pool."""
    return fig.phase_requests_per_s["decode" if d.pool == "decode" else "prefill"]


def deployment_rate(model: ModelSpec, topo: Topology, placement: str,
                    designs: list[tuple[Design, Figures]]) -> float:
    """Requests/s of the whole deployment (see the module docstring)."""
    if placement == "colocated":
        return sum(design_rate(d, f) for d, f in designs)
    total = 0.0
    for key in sorted({d.group for d, _ in designs}, key=sorted):
        pre = [(d, f) for d, f in designs if d.pool == "prefill" and d.group == key]
        dec = [(d, f) for d, f in designs if d.pool == "decode" and d.group == key]
        if not pre or not dec:
            continue
        rate = min(sum(design_rate(d, f) for d, f in pre),
                   sum(design_rate(d, f) for d, f in dec))
        bw = min(kv_link_bandwidth(topo, d.kinds, key) for d, _ in pre)
        work = pre[0][0].work
        per_request = kv_stage_bytes(model, work, model.num_layers) / work.pb
        link = min(sum(d.devices for d, _ in pre), sum(d.devices for d, _ in dec)) * bw
        total += min(rate, link / per_request)
    return total


def price_more(model: ModelSpec, topo: Topology, placement: str, firsts: list[Design],
               others: list[Design]) -> list[Figures]:
    """Figures of the designs ``others`` beside the plan's first designs ``firsts``: a
    disaggregated design is priced beside the first design of the other pool in its
    group (``firsts`` before ``others``); InputError names a design that has none."""
    every = firsts + others
    out = []
    for k, d in enumerate(others):
        partner = None
        if placement != "colocated":
            other = "decode" if d.pool == "prefill" else "prefill"
            partner = next((e.stages for e in every if e.pool == other and e.group == d.group),
                           None)
            if partner is None:
                raise InputError(f"more_designs[{k}]: a {d.pool} design whose KV "
                                 f"{'goes to' if d.pool == 'prefill' else 'comes from'} "
                                 f"no {other} design of kinds {', '.join(sorted(d.group))}")
        out.append(design_figures(model, topo, placement, d, partner))
    return out


def design_work(work: Workload, pool: str, batch: int) -> Workload:
    """The workload one more design runs: the plan's, with the design's own batch (a
    prefill design's prefill batch, a decode or colocated design's decode batch)."""
    if pool == "prefill":
        return replace(work, prefill_batch=batch)
    return replace(work, batch=batch)


def first_designs(placement: str, pre: list[StagePlacement], dec: list[StagePlacement],
                  replicas: tuple[int, int], work: Workload) -> list[Design]:
    """A plan's first designs (the colocated one, or the prefill one, whose KV goes to the
    first decode design's kinds, and the decode one)."""
    if placement == "colocated":
        return [Design("colocated", pre, replicas[0], work)]
    return [Design("prefill", pre, replicas[0], work, frozenset(s.kind for s in dec)),
            Design("decode", dec, replicas[1], work)]


def with_more_designs(model: ModelSpec, topo: Topology, placement: str, fig: Figures,
                      firsts: list[Design], others: list[Design]
                      ) -> tuple[Figures, list[Figures]]:
    """``fig`` (the first designs' figures) as the whole deployment's: its rate,
    throughput and tokens/s per device over every design; and the more designs' own
    figures (:func:`price_more`)."""
    figs = price_more(model, topo, placement, firsts, others)
    rate = deployment_rate(model, topo, placement,
                           [(d, fig) for d in firsts] + list(zip(others, figs)))
    devices = sum(d.devices for d in firsts + others)
    osl = firsts[0].work.osl
    return (replace(fig, requests_per_s=rate, throughput_tokens_per_s=rate * osl,
                    tokens_per_s_per_device=rate * osl / devices), figs)


def plan_designs(plan, ctx) -> tuple[list[Design], list[Design]]:
    """The first designs and the more designs of a plan (its PlanContext ``ctx``), as the
    cost model prices them."""
    firsts = first_designs(plan.placement, ctx.pre, ctx.dec,
                           (plan.prefill.replicas, plan.decode.replicas), ctx.work)
    others = []
    for d in plan.more_designs:
        ph = d.prefill if d.pool != "decode" else d.decode
        others.append(Design(d.pool, placements(ph), ph.replicas,
                             design_work(ctx.work, d.pool, d.batch), frozenset(d.kv_to)))
    return firsts, others


def plan_figures(plan, ctx, fig: Figures | None = None
                 ) -> tuple[Figures, list[Design], list[Figures]]:
    """A plan's figures as a whole deployment: the first designs' TTFT, TPOT and stage
    figures (``fig``: ``evaluate`` of them at their replica counts, if already priced),
    the whole deployment's rate, throughput and tokens/s per device; and each more
    design with its own figures. InputError names a more design that serves no request."""
    if fig is None:
        fig = evaluate(ctx.model, ctx.topo, ctx.work, plan.placement, ctx.pre, ctx.dec,
                       (plan.prefill.replicas, plan.decode.replicas))
    if not plan.more_designs:
        return fig, [], []
    firsts, others = plan_designs(plan, ctx)
    fig, figs = with_more_designs(ctx.model, ctx.topo, plan.placement, fig, firsts, others)
    return fig, others, figs
