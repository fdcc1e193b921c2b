"""``autoplan.estimate``: latency and memory of one given parallel configuration.

Both phases run on the same ``tp * pp`` devices (colocated): TP groups are packed into
the fast domains of the chosen device kind in device order, and layers are cut into
``pp`` stages as evenly as possible.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from autoplan.catalog import (
    DEFAULT_ENGINE,
    load_model,
    load_profile,
    load_topology,
    with_host_terms,
)
from autoplan.cost.expert_parallel import check_ep
from autoplan.cost.pipeline import PhaseCost, StagePlacement, even_cuts, memories_for, pipeline_cost
from autoplan.cost.roofline import REQUEST, Bound, check_tp, phase_shape
from autoplan.errors import InputError
from autoplan.graphs.topology import Topology
from autoplan.inputs.checkpoint import served_dtype, served_kv_dtype
from autoplan.inputs.context_length import check_context
from autoplan.inputs.host_terms import HostTerms
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import Calibration
from autoplan.inputs.workload import MAX_BATCH, Precision, check_workload


class OperatorRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int
    time_ms: float
    flops: float
    bytes: float


class PhaseEstimate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_ms: float
    bottleneck: Bound
    compute_ms: float
    memory_ms: float
    communication_ms: float
    host_ms: float = Field(default=0.0, description="the engine's host time in the pass "
                           "(host_step_s per forward pass, hardware/engines.yaml)")
    stage_times_ms: list[float]
    operators: list[OperatorRow] | None = None


class StageMemoryRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: int
    layers: tuple[int, int]
    devices: list[str]
    weights_gb: float
    kv_cache_gb: float
    activations_gb: float
    reserved_gb: float
    capacity_gb: float
    memory_fraction: float


class Estimate(BaseModel):
    """What ``autoplan estimate`` prints with ``--json``."""

    model_config = ConfigDict(extra="forbid")
    model: str
    topology: str
    device_kind: str
    tp: int
    pp: int
    ep: int = 1
    attention_dp: int = 1
    devices: int
    isl: int
    osl: int
    batch: int
    prefill_batch: int  # prompts prefilled together (TTFT); batch by default
    dtype: str
    kv_dtype: str
    ttft_ms: float  # the prefill pass and, serving, the server's request handling
    tpot_ms: float
    e2e_ms: float
    request_ms: float = Field(default=0.0, description="the server's handling of the request "
                              "in TTFT (the engine's request_overhead_s; 0: not serving)")
    decode_context: float
    fits: bool
    peak_memory_fraction: float
    max_memory_fraction: float
    prefill: PhaseEstimate
    decode: PhaseEstimate
    memory: list[StageMemoryRow]
    engine: str | None = Field(default=None, description="serving engine whose measured "
                               "kernels priced the figures (None: the roofline calibration)")
    pricing: dict[str, str] = Field(default_factory=dict, description="per device kind, what "
                                    "priced it: the engine's kernels of which kind, or the "
                                    "roofline calibration")
    host_terms: HostTerms | None = Field(default=None, description="the engine's host terms "
                                         "given in place of the shipped ones (--host-terms)")


def place_even_pipeline(model: ModelSpec, topo: Topology, kind: str, tp: int,
                        pp: int, dp: int = 1, ep: int = 1) -> list[StagePlacement]:
    """``pp`` even stages, each a TP group of ``tp`` devices inside one fast domain (with
    attention DP ``dp``: ``dp`` such groups per stage, in device order, domains crossed
    between groups only; experts over ``ep`` ranks of the stage)."""
    check_tp(model, tp)
    check_ep(model, tp, dp, ep)
    if pp < 1:
        raise InputError(f"pipeline-parallel degree must be >= 1, got {pp}")
    if pp > model.num_layers:
        raise InputError(f"PP {pp} exceeds the {model.num_layers} layers of {model.name}")
    domains = topo.domains_of_kind(kind)
    largest = max(d.size for d in domains)
    if tp > largest:
        raise InputError(
            f"TP {tp} is larger than the fast domain of {kind} in {topo.name} ({largest} devices)"
        )
    total = sum(d.size for d in domains)
    if tp * dp * pp > total:
        shape = f"TP {tp} x PP {pp}" + (f" x attention DP {dp}" if dp > 1 else "")
        raise InputError(
            f"{shape} needs {tp * dp * pp} devices; {topo.name} has {total} of kind {kind}"
        )
    groups = [d.devices[i:i + tp] for d in domains for i in range(0, d.size - tp + 1, tp)]
    if len(groups) < pp * dp:
        what = f"PP {pp}" if dp == 1 else f"PP {pp} x attention DP {dp}"
        raise InputError(
            f"only {len(groups)} TP groups of {tp} fit in the fast domains of {topo.name}; "
            f"{what} needs {pp * dp}"
        )
    return [StagePlacement(a, b, kind, tuple(d for g in groups[s * dp:(s + 1) * dp] for d in g),
                           dp, ep)
            for s, (a, b) in enumerate(even_cuts(model.num_layers, pp))]


def _phase(cost: PhaseCost, breakdown: bool) -> PhaseEstimate:
    ops = None
    if breakdown:
        agg: dict[str, dict[str, float]] = {}
        for st in cost.stages:
            for name, d in st.ops.items():
                a = agg.setdefault(name, {"time_s": 0.0, "flops": 0.0, "bytes": 0.0, "count": 0})
                for k in a:
                    a[k] += d[k]
        ops = [OperatorRow(name=k, count=int(v["count"]), time_ms=v["time_s"] * 1e3,
                           flops=v["flops"], bytes=v["bytes"])
               for k, v in sorted(agg.items(), key=lambda kv: -kv[1]["time_s"])]
    return PhaseEstimate(
        time_ms=cost.time_s * 1e3,
        bottleneck=cost.bottleneck,
        compute_ms=cost.compute_s * 1e3,
        memory_ms=cost.memory_s * 1e3,
        communication_ms=cost.comm_s * 1e3,
        host_ms=cost.host_s * 1e3,
        stage_times_ms=[s.time_s * 1e3 for s in cost.stages],
        operators=ops,
    )


def resolve_kind(topo: Topology, device_kind: str | None) -> str:
    if device_kind is None:
        if len(topo.kind_names) > 1:
            raise InputError(
                f"topology {topo.name} has several device kinds ({', '.join(topo.kind_names)}); "
                "choose one with --device-kind"
            )
        return topo.kind_names[0]
    if device_kind not in topo.kind_names:
        raise InputError(
            f"device kind {device_kind!r} is not in {topo.name} ({', '.join(topo.kind_names)})"
        )
    return device_kind


def estimate(
    model: str | ModelSpec,
    topology: str | Topology,
    tp: int = 1,
    pp: int = 1,
    *,
    device_kind: str | None = None,
    isl: int = 2048,
    osl: int = 256,
    batch: int = 1,
    prefill_batch: int | None = None,
    dtype: str | None = None,
    kv_dtype: str | None = None,
    decode_context: float | None = None,
    max_memory_fraction: float = 0.9,
    breakdown: bool = False,
    profile: str | dict[str, Calibration] | None = None,
    engine: str | None = DEFAULT_ENGINE,
    nodes: int | None = None,
    network: str | None = None,
    ep: int = 1,
    attention_dp: int = 1,
    serving: bool = True,
    host_terms: HostTerms | None = None,
) -> Estimate:
    """Predict TTFT, TPOT, end-to-end latency and memory of one configuration.

    ``model`` is a shipped HF id, a ``config.json`` path or a :class:`ModelSpec`;
    ``topology`` a shipped name, a YAML path or a :class:`Topology`. ``dtype`` is the
    weight and GEMM format (activations stay 16-bit; default: the checkpoint's, from its
    ``quantization_config``, :mod:`autoplan.inputs.checkpoint`), ``kv_dtype`` the KV-cache format
    (default: ``dtype`` for 16- and 8-bit floats, else bf16). ``decode_context``
    overrides the mean decode context (default ``isl + osl / 2``). ``engine`` (vllm,
    sglang, trtllm; None: the 2023 roofline calibration) picks the measured-kernel
    profile; ``profile`` (a name or per-kind calibrations) overrides it per kind.
    ``attention_dp`` data-parallel attention ranks of ``tp`` devices each make a stage
    of ``tp * attention_dp`` devices whose MoE experts are sharded over ``ep`` ranks
    (MoE models; :mod:`autoplan.cost.expert_parallel`). ``serving``: TTFT as a client of
    the engine's server sees it, with the engine's request handling
    (``request_overhead_s``, hardware/engines.yaml); False: the forward passes alone, as an
    offline latency benchmark (``trtllm-bench latency``) measures them. ``host_terms``:
    the engine's host terms in place of the shipped ones (a deployment's own fit,
    :mod:`autoplan.inputs.host_terms`).
    """
    m = model if isinstance(model, ModelSpec) else load_model(model)
    kv_dtype = served_kv_dtype(m.checkpoint, dtype, kv_dtype)
    dtype = served_dtype(m.checkpoint, dtype)
    if isinstance(profile, str):
        profile = load_profile(profile)
    topo = (topology if isinstance(topology, Topology)
            else load_topology(topology, profile, engine, nodes, network))
    if host_terms is not None:
        topo = with_host_terms(topo, host_terms)
    check_workload(isl, osl, batch, max_memory_fraction)
    check_context(m, isl, osl)
    pb = batch if prefill_batch is None else prefill_batch
    if not 1 <= pb <= MAX_BATCH:
        raise InputError(f"--prefill-batch must be between 1 and {MAX_BATCH}, got {pb}")
    kv = kv_dtype or (dtype if dtype in ("bf16", "fp16", "fp8") else "bf16")
    precision = Precision(weight=dtype, activation="bf16", kv=kv)
    kind = resolve_kind(topo, device_kind)
    stages = place_even_pipeline(m, topo, kind, tp, pp, attention_dp, ep)
    mems = memories_for(m, topo, stages, max(batch, pb), isl + osl, pb * isl, precision)
    pre_shape = phase_shape("prefill", pb, isl, osl)
    dec_shape = phase_shape("decode", batch, isl, osl, decode_context)
    pre = pipeline_cost(m, topo, stages, "prefill", pre_shape, precision, mems, breakdown)
    dec = pipeline_cost(m, topo, stages, "decode", dec_shape, precision, mems, breakdown)
    rows = []
    for s, (st, sc) in enumerate(zip(stages, pre.stages)):
        mem = sc.memory
        rows.append(StageMemoryRow(
            stage=s, layers=(st.first, st.end), devices=list(st.devices),
            weights_gb=mem.weights_bytes / 1e9, kv_cache_gb=mem.kv_bytes / 1e9,
            activations_gb=mem.activation_bytes / 1e9, reserved_gb=mem.reserved_bytes / 1e9,
            capacity_gb=sc.capacity_bytes / 1e9, memory_fraction=sc.memory_fraction))
    peak = max(r.memory_fraction for r in rows)
    # the server's handling of the pass's requests, one after another (as a plan's prefill
    # pool prices it: autoplan.cost.inflight.pool_passes)
    request = (pb * pipeline_cost(m, topo, stages, "prefill", REQUEST, precision, mems).time_s
               if serving else 0.0)
    ttft = (pre.time_s + request) * 1e3
    tpot = dec.time_s * 1e3
    return Estimate(
        model=m.name, topology=topo.name, device_kind=kind, tp=tp, pp=pp, ep=ep,
        attention_dp=attention_dp, devices=tp * attention_dp * pp,
        isl=isl, osl=osl, batch=batch, prefill_batch=pb, dtype=dtype, kv_dtype=kv,
        ttft_ms=ttft, tpot_ms=tpot, e2e_ms=ttft + (osl - 1) * tpot, request_ms=request * 1e3,
        decode_context=dec_shape.context_before,
        fits=peak <= max_memory_fraction, peak_memory_fraction=peak,
        max_memory_fraction=max_memory_fraction,
        prefill=_phase(pre, breakdown), decode=_phase(dec, breakdown), memory=rows,
        engine=engine if not isinstance(topology, Topology) else None,
        pricing={kind: topo.calibration(kind).source}, host_terms=host_terms,
    )
