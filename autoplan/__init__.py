"""autoplan: exact LLM deployment planning over a calibrated roofline cost model.

The public surface (internals may move behind it):

- :func:`estimate`: latency and memory of one given configuration;
- :func:`plan`: the provably best deployment for a :class:`Request` (or keyword
  arguments that build one);
- :func:`validate` / :func:`evaluate`: a plan's rules and figures, recomputed;
- :func:`explain`: the plan's nearest alternatives, priced and judged;
- :func:`chart`: the timeline, roofline and topology charts of a plan;
- :func:`export`: launch configs of a plan for a serving engine;
- :class:`Plan`: the plan schema (``Plan.load(path)``, ``plan.phase(name)``).
"""

import os as _os
import sys as _sys

try:  # a second of imports: Ctrl-C during them, when it is the CLI starting, is one line
    from autoplan.cost.estimate import Estimate, estimate
    from autoplan.cost.evaluate import Figures, evaluate
    from autoplan.errors import AutoplanError, InfeasibleError, InputError
    from autoplan.explain import Explanation, explain
    from autoplan.export import Export, write_export
    from autoplan.export import export as _export
    from autoplan.inputs.request import Request
    from autoplan.plan_schema import Plan
    from autoplan.render import chart_all as _chart_all
    from autoplan.rules.validate import Report, validate
    from autoplan.search.planner import plan
except KeyboardInterrupt:
    # `python -m autoplan` (argv[0] is "-m" while the package loads) or the `autoplan`
    # script; a program importing the library gets its KeyboardInterrupt as usual.
    if _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "") in (
            "autoplan", "autoplan.exe", "autoplan-script.py"):
        print("autoplan: interrupted", file=_sys.stderr)
        raise SystemExit(130) from None
    raise

__all__ = ["AutoplanError", "Estimate", "Explanation", "Export", "Figures", "InfeasibleError",
           "InputError", "Plan", "Report", "Request", "chart", "estimate", "evaluate",
           "explain", "export", "plan", "validate", "write_export"]
__version__ = "0.1.0"


def chart(plan, out="charts"):
    """``autoplan chart PLAN --out DIR``: the timeline, roofline and topology charts of a
    plan (a Plan, its dict or a plan file), PNG and SVG; returns the paths written."""
    return _chart_all(plan, out)


def export(plan, to: str, *, out=None, check: bool = True) -> Export:
    """``autoplan export PLAN --to ENGINE [--out DIR]``: launch configs of a plan (a Plan,
    its dict or a plan file); with ``out`` the files are written there too."""
    exp = _export(plan, to, check=check)
    if out is not None:
        write_export(exp, out)
    return exp
