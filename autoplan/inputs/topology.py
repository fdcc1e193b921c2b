"""Topology input: the pydantic specs of device kinds, memory tiers, calibration
parameters, links, node groups and networks, as a topology YAML spells them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoplan.inputs.dtypes import COMPUTE_FALLBACK, DType
from autoplan.inputs.kernels import KernelProfile
from autoplan.inputs.names import MAX_NAME_BYTES, Name

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Bounds far outside real hardware (1 MB/s .. 1 PB/s links, 1 s hop latency, 64Ki
# devices): they refuse typos and absurd values before they hang the graph build or
# overflow the cost model and the solver's integer tables.
MAX_DEVICES = 1 << 16
MAX_LINKS = 1 << 20  # device-to-switch links (fabrics and networks): the graph's edges


_MIN_BW, _MAX_BW = 1e6, 1e16


_MAX_BYTES = 1e15


_MIN_FLOPS, _MAX_FLOPS = 1e9, 1e19


class MemoryTier(BaseModel):
    """One level of device memory (HBM, GDDR, on-chip SRAM)."""

    model_config = _STRICT
    name: Name
    capacity_bytes: float = Field(gt=0, le=_MAX_BYTES)
    bandwidth_bytes_per_s: float = Field(ge=_MIN_BW, le=_MAX_BW)


class EngineFacts(BaseModel):
    """What a serving engine does around the kernels it runs (hardware/engines.yaml)."""

    model_config = _STRICT
    name: str
    version: str
    # Operators the engine runs inside another kernel (no launch of their own): RoPE
    # inside attention, the residual add inside the next RMSNorm, norms inside the
    # all-reduce (TensorRT-LLM's AllReduce fusion, with TP > 1).
    fused: tuple[str, ...] = ()
    norms_fused_into_allreduce: bool = False
    # Host time per forward pass (scheduling, sampling, graph launch), on top of the
    # kernels' GPU time.
    host_step_s: float = Field(default=0.0, ge=0, le=1)
    # Host time of one request before its first token streams back, on top of its
    # forward passes (HTTP, chat template, tokenisation, admission, detokenisation):
    # TTFT as a client of the engine's server sees it. Not in offline latency benchmarks.
    request_overhead_s: float = Field(default=0.0, ge=0, le=10)
    # The end-to-end rows the two host terms were fitted to (autoplan calibrate
    # --host-terms), or why they are not fitted.
    host_fitted_to: str = ""
    # Custom all-reduce inside one NVLink domain up to this many GPUs (NCCL beyond).
    custom_allreduce_max_gpus: int = Field(default=8, ge=1, le=MAX_DEVICES)
    # In-flight batching of a colocated server: the default token budget of one step
    # (decode tokens plus prefill chunk tokens), and whether a step that carries a prefill
    # chunk also carries the running decodes (False: prefill steps run alone, decodes
    # wait for them).
    # ``step_tokens_by_memory``: [GiB, tokens] pairs, ascending: a device of at least that
    # much memory gets that budget (the engines pick their default by GPU memory);
    # ``step_tokens_by_name``: a budget for kinds whose name contains the key (vLLM's
    # A100 exception).
    step_tokens: int = Field(default=8192, ge=1, le=1 << 24)
    step_tokens_by_memory: tuple[tuple[float, int], ...] = ()
    step_tokens_by_name: dict[str, int] = Field(default_factory=dict)
    mixed_steps: bool = True
    source: str = ""


class EngineRule(BaseModel):
    """One shape rule an engine enforces (hardware/engine_rules.yaml)."""

    model_config = _STRICT
    name: str
    says: str
    engine_version: str
    source: str = Field(min_length=1)


class EngineRules(BaseModel):
    """The shape rules of one serving engine."""

    model_config = _STRICT
    name: str
    uniform_tp: bool = True  # one TP degree for every stage of a pipeline
    # Expert parallelism, where used, spans every device of the server (vLLM: EP = TP x DP).
    ep_all_devices: bool = False
    # Data-parallel attention, where used, is one rank per device (attention TP 1, as
    # TensorRT-LLM's enable_attention_dp runs it).
    attention_dp_all_devices: bool = False
    # Disaggregated pools (prefill, decode) run without pipeline parallelism (vLLM's
    # NixlConnector): one stage per pipeline on the engine's kinds.
    disaggregated_pp1: bool = False
    rules: list[EngineRule] = Field(min_length=1)


class Calibration(BaseModel):
    """Named, fitted parameters that turn a raw roofline into measured times.

    Defaults per device kind live in ``hardware/calibration.yaml`` with the data they
    were fitted to; a topology or a profile may override them.
    """

    model_config = _STRICT
    # Fraction of peak FLOP/s a large GEMM achieves.
    compute_efficiency: float = Field(ge=0.01, le=1)
    # GEMM rows (tokens) at which achieved FLOP/s falls to half of the above:
    # eff(m) = compute_efficiency * m / (m + compute_half_tokens).
    compute_half_tokens: float = Field(ge=0, le=1e6)
    # Fraction of peak memory bandwidth a streaming kernel achieves.
    memory_efficiency: float = Field(ge=0.01, le=1)
    # Multiplier on compute_efficiency for 8- and 4-bit GEMM formats: low-precision
    # kernels reach a smaller share of their (doubled) peak.
    low_precision_efficiency: float = Field(default=1.0, ge=0.01, le=1)
    # Fixed time per kernel launch (launch, tail effects, synchronisation).
    kernel_overhead_s: float = Field(ge=0, le=1)
    # Fixed time of one collective on top of link latency and bandwidth terms.
    collective_launch_s: float = Field(ge=0, le=1)
    # Memory held by the runtime and not available to weights or KV cache.
    reserved_bytes: float = Field(ge=0, le=_MAX_BYTES)
    source: str = ""
    # Per-kernel cost parameters of this kind under one serving engine (an engine
    # profile, hardware/profiles/<engine>.yaml). When set, GPU operators are priced by
    # operator class from them (autoplan/cost/kernels.py): their own fixed costs and
    # efficiency curves, decode attention by the KV bytes it reads, all-reduce by
    # implementation. The roofline fields above then price only what the kernel tables
    # do not cover (integer weight formats).
    kernels: KernelProfile | None = None
    # The engine's operator fusions and host time (hardware/engines.yaml), with kernels.
    engine: EngineFacts | None = None


class DeviceKind(BaseModel):
    """A kind of accelerator: peak compute per format and memory tiers."""

    model_config = _STRICT
    description: str = ""
    source: str = ""
    peak_flops_per_s: dict[DType, float]
    memory_tiers: list[MemoryTier] = Field(min_length=1)
    calibration: Calibration | None = None
    # Kind whose fitted calibration this one borrows until it has measurements of its own.
    calibrate_like: Name | None = None
    # Kind whose measured kernel tables this one borrows (the same chip with another
    # memory: A100 40GB from A100 80GB); a kind with no kernel data and none to borrow
    # keeps the roofline calibration.
    kernels_like: Name | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceKind:
        if not self.peak_flops_per_s:
            raise ValueError("peak_flops_per_s must list at least one format")
        for k, v in self.peak_flops_per_s.items():
            if not v > 0:
                raise ValueError(f"peak_flops_per_s.{k} must be positive")
            if not _MIN_FLOPS <= v <= _MAX_FLOPS:
                raise ValueError(f"peak_flops_per_s.{k} must be between {_MIN_FLOPS:g} and "
                                 f"{_MAX_FLOPS:g}, got {v:g}")
        names = [t.name for t in self.memory_tiers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # the memory report and the plan name tiers: one tier per name
            raise ValueError(f"memory tier {repeated[0]!r} is listed twice")
        return self

    @property
    def own_runtime(self) -> bool:
        """An SRAM-only chip (the LPU): it runs its vendor's runtime, not a GPU engine,
        so the engine shape rules (hardware/engine_rules.yaml) do not govern it."""
        return all("sram" in t.name.lower() for t in self.memory_tiers)

    @property
    def capacity_bytes(self) -> float:
        return sum(t.capacity_bytes for t in self.memory_tiers)

    def tiers_fastest_first(self) -> list[MemoryTier]:
        return sorted(self.memory_tiers, key=lambda t: -t.bandwidth_bytes_per_s)

    def peak_flops(self, dtype: str) -> tuple[float, str]:
        """Peak FLOP/s for GEMMs in ``dtype`` and the format they actually run in."""
        for d in COMPUTE_FALLBACK.get(dtype, (dtype,)):
            if d in self.peak_flops_per_s:
                return self.peak_flops_per_s[d], d
        best = max(self.peak_flops_per_s, key=self.peak_flops_per_s.get)
        return self.peak_flops_per_s[best], best


class LinkSpec(BaseModel):
    """A fabric or network: bandwidth per device and direction, one-hop latency."""

    model_config = _STRICT
    kind: Name
    bandwidth_bytes_per_s: float = Field(ge=_MIN_BW, le=_MAX_BW)
    latency_s: float = Field(ge=0, le=1)
    tensor_parallel: bool = False
    source: str = ""


class NodeDevices(BaseModel):
    model_config = _STRICT
    kind: Name
    count: int = Field(ge=1, le=MAX_DEVICES)


class NodeGroup(BaseModel):
    """``count`` identical nodes named ``{name}{i}``, each with devices and a fabric."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=MAX_NAME_BYTES)
    count: int = Field(default=1, ge=1, le=MAX_DEVICES)
    devices: NodeDevices
    fabric: LinkSpec | None = None


class Network(LinkSpec):
    """A switch joining every device of the listed node groups (all groups if empty)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=MAX_NAME_BYTES)
    node_groups: list[str] = Field(default_factory=list)


class TopologySpec(BaseModel):
    """A topology file, validated; unknown fields are refused."""

    model_config = _STRICT
    name: Name
    description: str = ""
    sources: list[str] = Field(default_factory=list)
    device_kinds: dict[Name, DeviceKind] = Field(default_factory=dict)
    nodes: list[NodeGroup] = Field(min_length=1)
    networks: list[Network] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TopologySpec:
        names = [g.name for g in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node group names must be unique")
        nets = [n.name for n in self.networks]
        if len(set(nets)) != len(nets):
            raise ValueError("network names must be unique")
        total = sum(g.count * g.devices.count for g in self.nodes)
        if total > MAX_DEVICES:
            raise ValueError(f"{total} devices is more than autoplan handles ({MAX_DEVICES})")
        for net in self.networks:
            if len(set(net.node_groups)) != len(net.node_groups):
                raise ValueError(f"network {net.name!r} names a node group twice")
            for g in net.node_groups:
                if g not in names:
                    raise ValueError(f"network {net.name!r} names unknown node group {g!r}")
        size = {g.name: g.count * g.devices.count for g in self.nodes}
        links = (sum(n for g in self.nodes for n in [size[g.name]] if g.fabric is not None)
                 + sum(sum(size[g] for g in (net.node_groups or names)) for net in self.networks))
        if links > MAX_LINKS:  # each a graph edge: the build would take minutes and GBs
            raise ValueError(f"{links} device links (fabrics and networks) is more than "
                             f"autoplan handles ({MAX_LINKS})")
        return self
