"""autoplan: exact LLM deployment planning over a calibrated roofline cost model."""

from autoplan.errors import AutoplanError, InfeasibleError, InputError
from autoplan.estimate import Estimate, estimate
from autoplan.plan_schema import Plan
from autoplan.planner import plan
from autoplan.validate import validate

__all__ = ["AutoplanError", "Estimate", "InfeasibleError", "InputError", "Plan", "estimate", "plan", "validate"]
__version__ = "0.1.0"
