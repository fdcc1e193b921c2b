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
    from autoplan.export import Export, export, write_export
    from autoplan.inputs.request import Request
    from autoplan.plan_schema import Plan
    from autoplan.render import chart_all as chart
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
