"""What every chart of a plan reads besides the plan: its model and topology (the plan
checked by the validator first), and its title line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoplan.errors import InputError
from autoplan.plan_schema import Plan

if TYPE_CHECKING:  # pragma: no cover
    from autoplan.graphs.topology import Topology
    from autoplan.inputs.model import ModelSpec

PHASES = ("prefill", "decode")


def chart_context(plan: Plan) -> tuple[ModelSpec, Topology]:
    """The plan's model and topology; a plan the validator rejects is an InputError naming
    its first broken rule (charts of it would draw what the cost model does not price)."""
    from autoplan.catalog import load_model, load_topology
    from autoplan.rules.validate import validate

    rep = validate(plan)
    if not rep.ok:
        raise InputError(f"plan is invalid: {rep.errors[0]}"
                         + (f" (and {len(rep.errors) - 1} more)" if len(rep.errors) > 1 else ""))
    # TODO(plan_context): the shared plan_context(plan) loader replaces these two lines.
    # A plan priced with its own calibration profile carries it (newer plans).
    return (load_model(plan.inputs.model),
            load_topology(plan.inputs.topology, getattr(plan.inputs, "calibration", None)))


def title(plan: Plan) -> str:
    """The line under each chart's title: model, topology and the workload."""
    i = plan.inputs
    return (f"{i.model} on {i.topology} ({plan.placement}, {i.dtype}, batch {i.batch}, "
            f"isl {i.isl}, osl {i.osl})")
