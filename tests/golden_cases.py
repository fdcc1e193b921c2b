"""Golden-plan cases shared by the test and the regeneration script."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from autoplan.plan_schema import Plan
from autoplan.search.planner import plan

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = GOLDEN.parent.parent


def load_cases() -> dict[str, dict]:
    return yaml.safe_load((GOLDEN / "cases.yaml").read_text())


def run_case(case: dict) -> Plan:
    """Plan a case from the repository root (topology paths in cases are relative to it)."""
    case = dict(case)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return plan(case.pop("model"), case.pop("topology"), **case)
    finally:
        os.chdir(cwd)
