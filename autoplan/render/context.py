"""What every chart of a plan reads besides the plan: its model and topology (the plan
checked by the validator first), and its title line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoplan.cost.context import plan_context
from autoplan.plan_schema import Plan
from autoplan.render.labels import plain
from autoplan.rules.validate import check

if TYPE_CHECKING:  # pragma: no cover
    from autoplan.graphs.topology import Topology
    from autoplan.inputs.model import ModelSpec

PHASES = ("prefill", "decode")


def chart_context(plan: Plan) -> tuple[ModelSpec, Topology]:
    """The plan's model and topology; a plan the validator rejects is an InputError naming
    its first broken rule (charts of it would draw what the cost model does not price)."""
    ctx = plan_context(check(plan))
    return ctx.model, ctx.topo


def title(plan: Plan) -> str:
    """The line under each chart's title: model, topology and the workload."""
    i = plan.inputs
    return plain(f"{i.model} on {i.topology} ({plan.placement}, {i.dtype}, batch {i.batch}, "
                 f"isl {i.isl}, osl {i.osl})")
