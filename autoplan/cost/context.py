"""What pricing a recorded plan needs, rebuilt from the plan alone.

A plan records its model and topology portably: a catalog name, or the resolved model
spec and the topology file's content embedded in ``inputs`` (with the content's hash),
so ``validate``, ``explain``, ``chart`` and ``export`` work from any folder and on any
machine. This is the one place that turns a plan's inputs back into priced objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from autoplan.catalog import load_model, load_topology, topology_from_spec
from autoplan.cost.evaluate import placements, workload_of
from autoplan.cost.pipeline import StagePlacement
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import TopologySpec
from autoplan.inputs.workload import Workload
from autoplan.plan_schema import Plan, PlanInputs


@dataclass(frozen=True)
class PlanContext:
    model: ModelSpec
    topo: Topology
    work: Workload
    pre: list[StagePlacement]
    dec: list[StagePlacement]


def spec_hash(spec: TopologySpec) -> str:
    """SHA-256 of a topology spec's canonical JSON (what a plan records beside it)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def model_of(inputs: PlanInputs) -> ModelSpec:
    """The plan's model: embedded, or the catalog's by name."""
    if inputs.model_spec is not None:
        return inputs.model_spec
    return load_model(inputs.model)


def topology_of(inputs: PlanInputs) -> Topology:
    """The plan's topology: embedded (its hash checked), or the catalog's by name, with
    the calibration the plan was priced with."""
    if inputs.topology_spec is not None:
        if inputs.topology_sha256 != spec_hash(inputs.topology_spec):
            raise InputError("plan: inputs.topology_spec does not match inputs.topology_sha256 "
                             "(the embedded topology was edited)")
        return topology_from_spec(inputs.topology_spec, inputs.calibration, inputs.engine,
                                  inputs.host_terms)
    return load_topology(inputs.topology, inputs.calibration, inputs.engine,
                         host_terms=inputs.host_terms)


def plan_context(plan: Plan) -> PlanContext:
    """Model, topology, workload and stage placements of a plan."""
    i = plan.inputs
    return PlanContext(model_of(i), topology_of(i), workload_of(plan),
                       placements(plan.prefill), placements(plan.decode))
