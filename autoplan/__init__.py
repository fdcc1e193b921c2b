"""autoplan: exact LLM deployment planning over a calibrated roofline cost model."""

from autoplan.cost.estimate import Estimate, estimate
from autoplan.errors import AutoplanError, InfeasibleError, InputError
from autoplan.plan_schema import Plan
from autoplan.rules.validate import validate
from autoplan.search.planner import plan

__all__ = ["AutoplanError", "Estimate", "InfeasibleError", "InputError", "Plan", "estimate", "plan", "validate"]
__version__ = "0.1.0"
