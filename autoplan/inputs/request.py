"""A planning request as one validated object.

The CLI builds it from flags, :func:`autoplan.plan` takes it (its keyword arguments
build one), ``explain`` copies it to re-solve. Every bound is checked here, by pydantic,
and a bad value is one line naming the flag.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoplan.errors import InputError
from autoplan.inputs.checkpoint import served_dtype, served_kv_dtype
from autoplan.inputs.dtypes import DTYPES
from autoplan.inputs.host_terms import HostTerms
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.names import MAX_PATH_BYTES, check_name
from autoplan.inputs.topology import MAX_DEVICES, Calibration
from autoplan.inputs.workload import MAX_BATCH, MAX_TOKENS, Precision, Workload

SLO_CAP_MS = 365 * 86400 * 1e3
"""SLOs above a year constrain nothing; they are capped there (integer tables)."""

MAX_REQUEST_RATE = 1e9
"""Requests per second far beyond any deployment (the replica counts stay integers)."""

MAX_TIME_LIMIT_S = 7 * 86400


def default_kv_dtype(dtype: str) -> str:
    """The KV-cache format when none is given: the weights' format for 16-bit and fp8
    weights, bf16 otherwise (integer weight formats keep a bf16 cache)."""
    return dtype if dtype in ("bf16", "fp16", "fp8") else "bf16"


class Request(BaseModel):
    """What to plan for and how to search."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: str | ModelSpec = Field(description="HF id of a shipped model, a config.json "
                                   "path or folder, or a ModelSpec")
    topology: Any = Field(description="shipped topology name, YAML path, or a Topology")
    isl: int = Field(2048, ge=1, le=MAX_TOKENS, description="prompt tokens per request")
    osl: int = Field(256, ge=1, le=MAX_TOKENS, description="output tokens per request")
    batch: int | None = Field(None, ge=1, le=MAX_BATCH, description="sequences decoded "
                              "together per replica (absent: 1 for latency plans; the "
                              "throughput and devices objectives choose it)")
    prefill_batch: int | None = Field(None, ge=1, le=MAX_BATCH, description="prompts "
                                      "prefilled together (absent: the batch for latency "
                                      "plans; the throughput and devices objectives "
                                      "choose it)")
    dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] | None = Field(
        None, description="weight and GEMM format (absent: the checkpoint's, from its "
        "quantization_config; autoplan.inputs.checkpoint)")
    kv_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] | None = None
    objective: Literal["latency", "throughput", "devices"] = "latency"
    placement: Literal["auto", "colocated", "disaggregated"] = "auto"
    ttft_slo_ms: float | None = Field(None, gt=0)
    tpot_slo_ms: float | None = Field(None, gt=0)
    request_rate: float | None = Field(None, gt=0, le=MAX_REQUEST_RATE,
                                       description="requests per second")
    max_memory_fraction: float = Field(0.9, gt=0, le=1)
    max_devices: int | None = Field(None, ge=1, le=MAX_DEVICES)
    time_limit_s: float = Field(30.0, gt=0, le=MAX_TIME_LIMIT_S)
    progress: bool = False
    profile: str | dict[str, Calibration] | None = None
    nodes: int | None = Field(None, ge=1, le=4096, description="copies of a single-node "
                              "topology joined by a network")
    network: str | None = Field(None, max_length=64, description="the network joining "
                                "--nodes (hardware/networks.yaml)")
    engine: Literal["vllm", "sglang", "trtllm"] | None = Field(
        "vllm", description="serving engine whose measured kernels price the plan (None: "
        "the 2023 roofline calibration)")
    host_terms: HostTerms | None = Field(
        None, description="the engine's host terms in place of the shipped ones (a "
        "deployment's own fit: autoplan calibrate ROWS.csv --host-terms -o FILE)")

    @field_validator("model", "topology")
    @classmethod
    def _name(cls, v: Any) -> Any:
        # a name or path reaches the plan and the launch scripts made from it
        return check_name(v, MAX_PATH_BYTES) if isinstance(v, str) else v

    @field_validator("ttft_slo_ms", "tpot_slo_ms", "request_rate", "time_limit_s",
                     "max_memory_fraction", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        # before the bounds: NaN fails every comparison, and "should be > 0, got nan"
        # names the wrong rule
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Request:
        if self.objective == "devices" and self.request_rate is None:
            raise ValueError("objective 'devices' needs --request-rate (requests per second)")
        if self.objective == "latency" and self.request_rate is not None:
            raise ValueError("--request-rate applies to the devices and throughput "
                             "objectives; with latency the plan is one replica")
        return self

    @classmethod
    def build(cls, **fields: Any) -> Request:
        """A request from keyword arguments; InputError names the first bad flag."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise InputError(_flag_error(e)) from None

    def served(self, model: ModelSpec) -> Request:
        """This request with the weight format settled: ``dtype`` as given, else the
        checkpoint's format (:func:`autoplan.inputs.checkpoint.served_dtype`)."""
        if self.dtype is not None:
            return self
        ckpt = model.checkpoint
        return self.model_copy(update={"dtype": served_dtype(ckpt, None),
                                       "kv_dtype": served_kv_dtype(ckpt, None, self.kv_dtype)})

    @property
    def weight(self) -> str:
        """The weight format: ``dtype`` as given, else the checkpoint's (a model given as
        a name is read by the planner first: :meth:`served`)."""
        if self.dtype is not None:
            return self.dtype
        if isinstance(self.model, ModelSpec):
            return self.served(self.model).weight
        raise ValueError("the request's weight format is not settled: call served(model)")

    @property
    def kv(self) -> str:
        if self.dtype is None and isinstance(self.model, ModelSpec):
            return self.served(self.model).kv
        return self.kv_dtype or default_kv_dtype(self.weight)

    @property
    def precision(self) -> Precision:
        return Precision(weight=self.weight, activation="bf16", kv=self.kv)

    @property
    def searched(self) -> tuple[str, ...]:
        """The batch sizes the planner chooses: those not given, for the throughput and
        devices objectives (latency plans run batch 1 unless given)."""
        if self.objective == "latency":
            return ()
        return tuple(k for k in ("batch", "prefill_batch") if getattr(self, k) is None)

    @property
    def workload(self) -> Workload:
        """The workload with the batches given; searched ones at their smallest (1)."""
        b = self.batch or 1
        pb = self.prefill_batch
        if pb is None and "prefill_batch" in self.searched:
            pb = 1
        return Workload(self.isl, self.osl, b, self.precision, self.max_memory_fraction, pb)


def _flag_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = [str(x) for x in err.get("loc", ()) if not str(x).isdigit()]
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if err.get("type") == "literal_error" and loc and loc[0] in ("dtype", "kv_dtype"):
        msg = f"expected one of {', '.join(DTYPES)}"
    if not loc:
        return msg
    flag = "--" + loc[0].replace("_", "-")
    got = err.get("input")
    shown = f", got {got!r}" if isinstance(got, (int, float, str)) and len(repr(got)) < 60 else ""
    return f"{flag}: {msg}{shown}"
