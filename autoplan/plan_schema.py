"""The deployment plan: a stable, documented schema (``autoplan schema`` exports it).

Names carry units. Layer ranges are ``[first, end)`` over the model's decoder layers;
the embedding rides on the stage holding layer 0 and the LM head on the stage holding
the last layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from autoplan.errors import InputError, first_error
from autoplan.inputs.dtypes import DType
from autoplan.inputs.host_terms import HostTerms
from autoplan.inputs.model import MAX_LAYERS, ModelSpec
from autoplan.inputs.names import Name, PathName
from autoplan.inputs.reading import DuplicateKey, loads_json, read_text, show_value
from autoplan.inputs.request import MAX_REQUEST_RATE
from autoplan.inputs.topology import MAX_DEVICES, Calibration, TopologySpec
from autoplan.inputs.workload import MAX_BATCH, MAX_TOKENS

SCHEMA_VERSION = 1

# Every number finite, every count bounded: a plan file is untrusted input, and what it
# claims (a billion replicas, 10^400 tokens) must not reach the loops and the floats.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

MAX_PLAN_BYTES = 64 << 20
"""The largest plan file read (a plan of MAX_DEVICES devices is a few MB)."""


class PlanInputs(BaseModel):
    """Everything needed to recompute the plan."""

    model_config = _STRICT
    model: PathName
    topology: PathName
    isl: int = Field(ge=1, le=MAX_TOKENS)
    osl: int = Field(ge=1, le=MAX_TOKENS)
    batch: int = Field(ge=1, le=MAX_BATCH, description="sequences decoded together per replica")
    prefill_batch: int | None = Field(
        default=None, ge=1, le=MAX_BATCH, description="prompts prefilled together (absent: batch)")
    step_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="token budget of one step of a "
        "colocated server's in-flight batching (prefill chunks and decode tokens); absent: "
        "the engine's default (hardware/engines.yaml). prefill_batch governs disaggregated "
        "prefill pools only")
    searched: list[Literal["batch", "prefill_batch"]] = Field(
        default_factory=list, max_length=2, description="the batch sizes the planner chose "
        "(throughput and devices objectives without --batch / --prefill-batch; a "
        "colocated pool has no prefill batch: in-flight batching chunks its prompts); "
        "batch and prefill_batch hold the values chosen")
    dtype: DType
    kv_dtype: DType
    objective: Literal["latency", "throughput", "devices"]
    placement: Literal["disaggregated", "colocated", "auto"]
    ttft_slo_ms: float | None = Field(default=None, gt=0)
    tpot_slo_ms: float | None = Field(default=None, gt=0)
    request_rate: float | None = Field(default=None, gt=0, le=MAX_REQUEST_RATE)
    max_devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES, description="device budget")
    max_memory_fraction: float = Field(gt=0, le=1)
    calibration: dict[str, Calibration] | None = Field(
        default=None, description="calibration profile the plan was priced with, per device "
        "kind (absent: the shipped defaults)")
    engine: str | None = Field(
        default=None, description="serving engine whose measured kernels priced the plan "
        "(hardware/profiles/<engine>.yaml); absent: the roofline calibration of plans made "
        "before engine profiles")
    model_spec: ModelSpec | None = Field(
        default=None, description="the model's resolved shape, embedded when the model is "
        "not the catalog's (a config.json): the plan recomputes anywhere")
    topology_spec: TopologySpec | None = Field(
        default=None, description="the topology's content, embedded when it is not the "
        "catalog's (a topology YAML)")
    topology_sha256: str | None = Field(
        default=None, max_length=64, description="SHA-256 of topology_spec's canonical JSON; "
        "validate refuses an embedded topology that does not match it")
    host_terms: HostTerms | None = Field(
        default=None, description="the engine's host terms the plan was priced with in place "
        "of the shipped ones (--host-terms FILE: a deployment's own fit); absent: the "
        "shipped terms of hardware/engines.yaml")

    @model_serializer(mode="wrap")
    def _omit_shipped_host_terms(self, handler):
        # present only where given: plans priced with the shipped terms read as before
        out = handler(self)
        if isinstance(out, dict) and out.get("host_terms") is None:
            out.pop("host_terms", None)
        return out


class Stage(BaseModel):
    model_config = _STRICT
    index: int = Field(ge=0, le=MAX_LAYERS)
    layers: tuple[Annotated[int, Field(ge=0, le=MAX_LAYERS)],
                  Annotated[int, Field(ge=0, le=MAX_LAYERS)]] = Field(
        description="[first, end) decoder layers")
    device_kind: Name
    tp: int = Field(ge=1, le=MAX_DEVICES, description="attention tensor-parallel degree of "
                    "one data-parallel rank (the stage's devices are tp * attention_dp)")
    ep: int = Field(default=1, ge=1, le=MAX_DEVICES, description="expert-parallel degree of "
                    "the stage's MoE layers: routed experts sharded over ep ranks of "
                    "devices / ep devices each (1: experts split like the attention)")
    attention_dp: int = Field(default=1, ge=1, le=MAX_DEVICES, description="data-parallel "
                              "attention ranks, each with its own share of the batch and "
                              "its own KV cache (MoE models)")
    devices: list[Name] = Field(max_length=MAX_DEVICES)
    time_ms: float = Field(ge=0, le=1e15,
                           description="one forward pass of the phase through this stage")
    memory_fraction: float = Field(ge=0, le=1e6, description="peak device memory used / capacity")
    bottleneck: Literal["compute", "memory", "communication"]

    @model_serializer(mode="wrap")
    def _omit_unused_parallelism(self, handler):
        # ep and attention_dp appear only where used: plans of dense models (and TP-only
        # MoE plans) read exactly as before these fields existed.
        out = handler(self)
        for name in ("ep", "attention_dp"):
            if isinstance(out, dict) and out.get(name) == 1:
                del out[name]
        return out


class PhasePlan(BaseModel):
    model_config = _STRICT
    replicas: int = Field(ge=1, le=MAX_DEVICES, description="identical copies of this pipeline")
    devices: int = Field(ge=1, le=MAX_DEVICES, description="devices of one replica")
    time_ms: float = Field(ge=0, le=1e15,
                           description="prefill: pipeline time of a batch; decode: TPOT")
    bottleneck: Literal["compute", "memory", "communication"]
    requests_per_s: float = Field(
        description="requests per second all replicas of this phase serve: prefill "
        "batch / slowest stage (batches pipelined through the stages), decode batch / "
        "(osl * TPOT), colocated batch / e2e")
    bubble_fraction: float = Field(
        description="share of stage-time a replica's devices idle in steady state: "
        "1 - mean stage time / the period (prefill: slowest stage; decode and "
        "colocated: the whole pass, one batch in flight)")
    stages: list[Stage] = Field(max_length=MAX_LAYERS, description="the first replica's stages")
    replica_devices: list[list[list[Name]]] = Field(
        max_length=MAX_DEVICES,
        description="devices of every replica (the first included), per stage")


class MoreDesign(BaseModel):
    """One more replica design of a pool, beside the plan's first (``prefill`` /
    ``decode``): a deployment may run replicas of several designs per pool where one
    design leaves devices idle (autoplan.search.mix)."""

    model_config = _STRICT
    pool: Literal["prefill", "decode", "colocated"]
    batch: int = Field(ge=1, le=MAX_BATCH, description="the batch it runs: prefill "
                       "designs their prefill batch, decode and colocated designs their "
                       "decode batch")
    kv_to: list[Name] = Field(default_factory=list, max_length=64, description="prefill "
                              "designs: the device kinds of the decode designs their KV "
                              "goes to (sorted)")
    ttft_ms: float | None = Field(default=None, description="prefill and colocated "
                                  "designs: TTFT of the requests it prefills")
    tpot_ms: float | None = Field(default=None, description="decode and colocated "
                                  "designs: TPOT of the sequences it decodes")
    prefill: PhasePlan | None = Field(default=None, description="prefill and colocated "
                                      "designs: its pipeline priced for prefill")
    decode: PhasePlan | None = Field(default=None, description="decode and colocated "
                                     "designs: its pipeline priced for decode")


class Plan(BaseModel):
    """A deployment plan: what runs where, what it costs, and how sure the solver is."""

    model_config = _STRICT
    schema_version: int = SCHEMA_VERSION
    inputs: PlanInputs
    placement: Literal["disaggregated", "colocated"]
    status: Literal["optimal", "feasible", "infeasible"]
    objective: float = Field(description="the solver's objective in objective_unit: latency "
                             "TTFT + (osl-1) TPOT; throughput output tokens/s; devices")
    objective_unit: Literal["ms", "tokens/s", "devices"]
    best_bound: float | None = Field(
        description="solver's proven bound on the objective; null when the search stopped "
        "before proving one (time limit, Ctrl-C, a cap on the designs enumerated)")
    gap: float | None = Field(ge=0, description="|objective - best_bound| / objective; "
                              "null (unknown) when no bound is proven")
    solve_seconds: float
    stop_reason: Literal["completed", "time_limit", "interrupted", "front_limit",
                         "link_bound", "iteration_limit", "batch_bound",
                         "dense_run_limit"] = Field(
        default="completed", description="why the search ended: completed (status optimal "
        "or infeasible), the time limit, Ctrl-C, the cap on designs per front, the cap on "
        "exact checks of the latency search (iteration_limit), a batch size whose "
        "stage times fell below a smaller batch's (batch_bound: the batch search's bound "
        "does not hold, none is known), a leading dense run too long to cut anywhere "
        "(dense_run_limit: it rides on the first stage, no bound), or the KV link budget binding (replica designs that widen the link are not enumerated, so "
        "the choice is not proven)")
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tokens_per_s: float = Field(
        description="output tokens/s of the whole deployment: osl * requests_per_s")
    requests_per_s: float = Field(
        description="requests/s the deployment sustains: the smaller phase's, capped by "
        "the KV link budget between the pools")
    kv_transfer_ms: float
    ttft_floor_ms: float | None = Field(
        default=None, description="physical floor of TTFT on the plan's prefill devices: "
        "each stage at its devices' peak FLOP/s or memory bandwidth, whichever binds, "
        "stages in sequence, no overheads, free links (no KV hand-off)")
    tpot_floor_ms: float | None = Field(
        default=None, description="physical floor of TPOT on the decode devices, as "
        "ttft_floor_ms (weights and KV read at peak bandwidth, or FLOPs at peak)")
    tokens_per_s_per_device: float | None = Field(
        default=None, description="throughput_tokens_per_s / devices")
    tokens_per_s_per_user: float | None = Field(
        default=None, description="output tokens per second one request sees: 1000 / TPOT")
    devices: int = Field(ge=1, le=MAX_DEVICES, description="devices used by all phases and replicas")
    prefill: PhasePlan
    decode: PhasePlan
    pricing: dict[str, str] = Field(
        default_factory=dict, description="per device kind used, what priced it: the "
        "engine's measured kernels of which kind (borrowed where the kind has none), or "
        "the roofline calibration")
    more_designs: list[MoreDesign] = Field(
        default_factory=list, max_length=MAX_DEVICES, description="replica designs beside "
        "the first of each pool (prefill, decode): absent when one design per pool "
        "serves. ttft_ms, tpot_ms and e2e_ms are the first designs'; requests_per_s, "
        "throughput and devices the whole deployment's")

    @model_serializer(mode="wrap")
    def _omit_no_more_designs(self, handler):
        out = handler(self)  # plans of one design per pool read as before
        if isinstance(out, dict) and not out.get("more_designs"):
            out.pop("more_designs", None)
        return out

    def phase(self, name: str) -> PhasePlan:
        """The plan of one phase, ``prefill`` or ``decode``."""
        if name not in ("prefill", "decode"):
            raise InputError(f"unknown phase {name!r}; use prefill or decode")
        return self.prefill if name == "prefill" else self.decode

    @classmethod
    def load(cls, plan: Plan | dict | str | Path) -> Plan:
        """A plan from a Plan, its dict, or a JSON file; bad input raises InputError."""
        if isinstance(plan, cls):
            return plan
        strict = isinstance(plan, (str, Path))
        if strict:
            p = Path(plan)
            text = read_text(p, "plan", MAX_PLAN_BYTES)  # a regular file, bounded
            try:
                plan = loads_json(text)
            except json.JSONDecodeError as e:
                raise InputError(f"plan {str(p)!r} is not valid JSON: {e.msg}") from None
            except DuplicateKey as e:
                raise InputError(f"plan {str(p)!r}: {e}") from None
            except (ValueError, RecursionError) as e:  # over-long integers, deep nesting
                raise InputError(f"plan {str(p)!r} is not a plan: {e.__class__.__name__}") from None
        if isinstance(plan, dict) and plan.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise InputError(f"plan: schema_version {show_value(plan['schema_version'])} is not "
                             f"{SCHEMA_VERSION}, the version this autoplan reads")
        try:
            if strict:  # a file's JSON types as written: "8" or true is not a count
                return cls.model_validate_json(text, strict=True)
            return cls.model_validate(plan)
        except ValidationError as e:
            raise InputError(f"plan: {first_error(e)}") from None


TIMING_FIELDS = ("solve_seconds",)
