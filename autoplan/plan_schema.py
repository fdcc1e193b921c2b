"""The deployment plan: a stable, documented schema (``autoplan schema`` exports it).

Names carry units. Layer ranges are ``[first, end)`` over the model's decoder layers;
the embedding rides on the stage holding layer 0 and the LM head on the stage holding
the last layer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

_STRICT = ConfigDict(extra="forbid")


class PlanInputs(BaseModel):
    """Everything needed to recompute the plan."""

    model_config = _STRICT
    model: str
    topology: str
    isl: int = Field(ge=1)
    osl: int = Field(ge=1)
    batch: int = Field(ge=1)
    dtype: str
    kv_dtype: str
    objective: Literal["latency", "throughput", "devices"]
    placement: Literal["disaggregated", "colocated", "auto"]
    ttft_slo_ms: float | None = None
    tpot_slo_ms: float | None = None
    request_rate: float | None = None
    max_memory_fraction: float = Field(gt=0, le=1)


class Stage(BaseModel):
    model_config = _STRICT
    index: int
    layers: tuple[int, int] = Field(description="[first, end) decoder layers")
    device_kind: str
    tp: int = Field(ge=1)
    devices: list[str]
    time_ms: float = Field(description="one forward pass of the phase through this stage")
    memory_fraction: float = Field(description="peak device memory used / capacity")
    bottleneck: Literal["compute", "memory", "communication"]


class PhasePlan(BaseModel):
    model_config = _STRICT
    replicas: int = Field(ge=1)
    devices: int = Field(description="devices of one replica")
    time_ms: float = Field(description="prefill: pipeline time of a batch; decode: TPOT")
    bottleneck: Literal["compute", "memory", "communication"]
    stages: list[Stage]


class Plan(BaseModel):
    """A deployment plan: what runs where, what it costs, and how sure the solver is."""

    model_config = _STRICT
    schema_version: int = SCHEMA_VERSION
    inputs: PlanInputs
    placement: Literal["disaggregated", "colocated"]
    status: Literal["optimal", "feasible", "infeasible"]
    objective: float = Field(description="solver objective: TTFT + (osl-1) TPOT in ms")
    best_bound: float = Field(description="solver's proven lower bound on the objective, ms")
    gap: float = Field(description="(objective - best_bound) / objective")
    solve_seconds: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tokens_per_s: float
    kv_transfer_ms: float
    devices: int = Field(description="devices used by all phases and replicas")
    prefill: PhasePlan
    decode: PhasePlan


TIMING_FIELDS = ("solve_seconds",)
