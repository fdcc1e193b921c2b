"""What ``autoplan explain`` returns: the plan's nearest alternatives and their verdicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from autoplan.rules import rules

Verdict = Literal["worse", "ruled out", "equal", "better"]

RULES = tuple(f"{r}:" for r in rules.RULES) + ("solver:",)
"""Prefixes naming the rule in a ``ruled out`` reason: the validator's rule names
(:data:`autoplan.rules.rules.RULES`), and ``solver:`` for a re-solve that failed."""

REL_TOL = 1e-9

TABLE_TOL = 1e-3
"""The planner proves its choice optimal on integer cost tables whose stage times are
rounded up to whole microseconds (a conservative bound), while ``evaluate`` prices with
exact floats: an alternative may beat an optimal plan by this relative margin without
the plan being suboptimal. Such a ``better`` verdict says so in its reason."""


class StageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: tuple[int, int]
    device_kind: str
    tp: int  # attention TP of one data-parallel rank
    devices: list[str]
    ep: int = 1
    attention_dp: int = 1


class Alternative(BaseModel):
    """One neighbour of the plan, its figures (None when it cannot be priced) and verdict."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    placement: Literal["colocated", "disaggregated"]
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    kv_transfer_ms: float | None = None
    throughput_tokens_per_s: float | None = None
    requests_per_s: float | None = None  # the whole deployment (all replicas)
    devices: int | None = None  # all replicas
    replicas: tuple[int, int] | None = None  # (prefill, decode); colocated: (y, y)
    delta: float | None = None  # alternative - plan, on the plan's objective (its unit)
    verdict: Verdict
    reason: str
    violations: list[str] = []
    prefill: list[StageRef] = []
    decode: list[StageRef] = []


class Explanation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    topology: str
    placement: str
    objective: str
    objective_unit: str
    objective_value: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tokens_per_s: float
    requests_per_s: float
    devices: int
    replicas: tuple[int, int]  # (prefill, decode); colocated: (y, y)
    headline: str
    alternatives: list[Alternative]
    notes: list[str] = []
