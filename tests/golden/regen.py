"""Regenerate the golden plans (run on purpose only; review the diff before committing).

    python tests/golden/regen.py [NAME ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from golden_cases import load_cases, run_case  # noqa: E402

from autoplan.files import write_atomic

if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    for name, case in load_cases().items():
        if wanted and name not in wanted:
            continue
        plan = run_case(case)
        write_atomic(HERE / f"{name}.plan.json", plan.model_dump_json(indent=2) + "\n")
        print(f"{name}: {plan.status}, e2e {plan.e2e_ms:.1f} ms, {plan.devices} devices")
