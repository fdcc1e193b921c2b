"""autoplan: exact LLM deployment planning over a calibrated roofline cost model."""

from autoplan.errors import AutoplanError, InfeasibleError, InputError
from autoplan.estimate import Estimate, estimate

__all__ = ["AutoplanError", "InfeasibleError", "InputError", "Estimate", "estimate"]
__version__ = "0.1.0"
