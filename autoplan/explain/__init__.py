"""``autoplan explain``: why a plan wins, by pricing its nearest alternatives.

``model`` (what it returns), ``context`` (the plan priced once), ``neighbours`` (the
alternatives), ``judge`` (pricing and judging one), ``wording`` (the sentences),
``report`` (the entry point).
"""

from autoplan.explain.model import RULES, Alternative, Explanation
from autoplan.explain.report import explain

__all__ = ["RULES", "Alternative", "Explanation", "explain"]
