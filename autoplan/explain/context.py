"""The plan being explained, priced once, and its objective: what every alternative is
measured against."""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoplan.cost.context import PlanContext, plan_context
from autoplan.cost.deployment import plan_figures
from autoplan.cost.evaluate import Figures, phase_cost
from autoplan.cost.pipeline import StagePlacement
from autoplan.explain.model import REL_TOL
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.workload import Workload
from autoplan.plan_schema import Plan

Terms = dict[str, tuple[float, float, float]]


@dataclass(frozen=True)
class Context(PlanContext):
    """The plan's context (model, topology, workload, stages) and the plan priced."""

    plan: Plan
    base: Figures  # the whole deployment, at the plan's replica counts
    base_terms: Terms
    base_devices: int  # all replicas
    replicas: tuple[int, int]
    inventory: dict[str, int]  # devices of each kind in the topology

    @classmethod
    def of(cls, plan: Plan) -> Context:
        """The plan's model and topology as the validator loads them (embedded specs or
        catalog names, with the plan's calibration), and its figures."""
        pc = plan_context(plan)
        reps = (plan.prefill.replicas, plan.decode.replicas)
        # the whole deployment: its first designs' figures, every design's rate
        base = plan_figures(plan, pc)[0]
        terms = cost_terms(pc.model, pc.topo, pc.work, plan.placement, pc.pre, pc.dec)
        devs = len({d for s in pc.pre + pc.dec for d in s.devices}
                   | {d for ph in (plan.prefill, plan.decode)
                      for r in ph.replica_devices for g in r for d in g}
                   | {d for m in plan.more_designs for ph in (m.prefill, m.decode) if ph
                      for r in ph.replica_devices for g in r for d in g})
        inventory = {k: len(pc.topo.devices_of_kind(k)) for k in pc.topo.kind_names}
        return cls(pc.model, pc.topo, pc.work, pc.pre, pc.dec, plan, base, terms, devs, reps,
                   inventory)

    @property
    def objective(self) -> str:
        return self.plan.inputs.objective

    @property
    def replicated(self) -> bool:
        """Alternatives are whole deployments with replica counts (not one replica)."""
        return self.objective in ("throughput", "devices")

    @property
    def base_value(self) -> float:
        return value(self.objective, self.base, self.base_devices)


def cost_terms(model: ModelSpec, topo: Topology, work: Workload, placement: str,
               pre: list[StagePlacement], dec: list[StagePlacement]) -> Terms:
    """(compute, memory, communication) seconds of each phase's pipeline, summed over stages."""
    out = {}
    for ph, stages in (("prefill", pre), ("decode", dec)):
        c = phase_cost(model, topo, work, placement, ph, stages)
        out[ph] = (c.compute_s, c.memory_s, c.comm_s)
    return out


def unit(objective: str) -> str:
    return {"latency": "ms e2e", "throughput": "tok/s", "devices": "devices"}[objective]


def value(objective: str, fig: Figures, devices: int) -> float:
    if objective == "throughput":
        return fig.throughput_tokens_per_s
    if objective == "devices":
        return float(devices)
    return fig.e2e_ms


def compare(objective: str, v: float, base_v: float, rate: float, base_rate: float) -> str:
    """``better``, ``equal`` or ``worse`` on the objective; devices ties go to the rate."""
    if objective == "devices" and v == base_v:
        v, base_v, objective = rate, base_rate, "throughput"
    if math.isclose(v, base_v, rel_tol=REL_TOL, abs_tol=1e-12):
        return "equal"
    better = v > base_v if objective == "throughput" else v < base_v
    return "better" if better else "worse"


def margin(objective: str, v: float, base_v: float) -> float:
    """How much better ``v`` is than ``base_v``, relative (e2e and throughput)."""
    if base_v == 0:
        return math.inf
    return (v - base_v) / base_v if objective == "throughput" else (base_v - v) / base_v
