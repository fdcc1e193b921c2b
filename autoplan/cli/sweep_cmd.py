"""``autoplan sweep CASES.yaml``: the cases of a fleet, on a process pool or Ray."""

from __future__ import annotations
