"""The model's operators priced by the measured-kernel cost model of one engine.

:func:`kernel_time_s` maps one operator of the model graph (on one TP rank, for one
forward-pass shape) to the kernel class that runs it in the engine and prices it with
:mod:`autoplan.cost.kernels`: GEMMs by their (m, n, k) and weight format, decode
attention by the KV bytes it reads, prefill attention by its causal FLOPs, MLA by its own
tables, the MoE layer as one fused grouped GEMM, norms and activations as small
element-wise kernels, and nothing for operators the engine fuses into another kernel
(``hardware/engines.yaml``). It returns None where the kernel tables do not cover the
operator (integer weight formats, an int8 KV cache): the roofline calibration prices it.

:func:`allreduce_s` prices a TP group's all-reduce by the engine's implementation: its
custom all-reduce inside one NVLink domain up to the GPU count it supports, NCCL beyond.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoplan.cost import kernels as kc
from autoplan.errors import InputError
from autoplan.graphs.model_graph import Op
from autoplan.graphs.topology import Topology
from autoplan.inputs.kernels import KernelProfile
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import DeviceKind
from autoplan.inputs.workload import Precision

if TYPE_CHECKING:
    from autoplan.cost.roofline import Shape

# Norms an engine with ``norms_fused_into_allreduce`` runs inside the all-reduce before
# them (TP > 1): the layer's input and post-attention RMSNorms.
ALLREDUCE_NORMS = ("attn_norm", "mlp_norm")
# Bytes per element a small kernel reads plus writes (16-bit activations): a norm reads
# and writes its row; SiLU-and-mul reads two rows and writes one; an embedding gather
# reads the table row and writes it.
NORM_BYTES, ACT_BYTES, GATHER_BYTES = 4.0, 6.0, 4.0


def gemm_key(kp: KernelProfile, model: ModelSpec, weight: str) -> str | None:
    """The GEMM table of a weight format: fp8 is block-scaled where the checkpoint's
    weights are (its quantization_config's weight_block_size: DeepSeek-V3, Qwen3's -FP8
    checkpoints) and the engine has such a table, per-tensor otherwise (FP8 checkpoints
    scaled per tensor or channel, and 16-bit weights quantized on load); 16-bit formats
    use bf16; integer formats have no table."""
    if weight in ("bf16", "fp16"):
        return "bf16" if "bf16" in kp.gemm else None
    if weight == "fp8":
        if model.checkpoint.fp8_block_scaled and "fp8_block" in kp.gemm:
            return "fp8_block"
        if "fp8" in kp.gemm:
            return "fp8"
        return "bf16" if "bf16" in kp.gemm else None  # no FP8 units: 16-bit kernels
    return None


def moe_key(kp: KernelProfile, model: ModelSpec, weight: str) -> str | None:
    """The grouped-GEMM (MoE) table of a weight format, chosen like :func:`gemm_key` but
    among the MoE tables (an engine may have a block-FP8 MoE table and no block-FP8 dense
    GEMM table, as vLLM does)."""
    if weight in ("bf16", "fp16"):
        return "bf16" if "bf16" in kp.moe else None
    if weight == "fp8":
        order = ("fp8_block", "fp8") if model.checkpoint.fp8_block_scaled else ("fp8",
                                                                                "fp8_block")
        return next((k for k in order if k in kp.moe), None)
    return None


def _kv_key(kv: str) -> str | None:
    return {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8"}.get(kv)


def fused(op: Op, kind: DeviceKind, tp: int) -> bool:
    """The engine runs ``op`` inside another kernel."""
    facts = kind.calibration.engine  # type: ignore[union-attr]
    if facts is None:
        return False
    return op.name in facts.fused or (facts.norms_fused_into_allreduce and tp > 1
                                      and op.name in ALLREDUCE_NORMS)


def kernel_time_s(op: Op, model: ModelSpec, kind: DeviceKind, tp: int, shape: Shape,
                  precision: Precision,
                  gemm_dims: tuple[float, float, float] | None, ep: int = 1) -> float | None:
    """Seconds of ``op`` on one TP rank for one forward pass of ``shape``, or None where
    the kernel tables do not cover it.

    ``gemm_dims`` is (m, n, k) of a dense GEMM on this rank; ``ep`` the expert-parallel
    degree of an expert GEMM (its ``tp`` then the expert TP). A mixed step's attention is
    its decode part and its prefill-chunk part, each priced by its own kernel class (the
    engines' varlen kernels run both in one launch; the sum is an upper estimate).
    """
    kp = kind.calibration.kernels  # type: ignore[union-attr]
    assert kp is not None
    if fused(op, kind, tp):
        return 0.0
    bw = kind.tiers_fastest_first()[0].bandwidth_bytes_per_s
    T = shape.tokens
    try:
        if op.kind in ("gemm", "qkv"):
            key = gemm_key(kp, model, precision.weight)
            if key is None or gemm_dims is None:
                return None
            m, n, k = gemm_dims
            return kc.gemm_time_s(kp, _peak(kind, key), bw, m, n, k, key)
        if op.kind == "moe_gemm":
            return _moe_share(op, model, kind, kp, tp, T, precision, bw, ep)
        if op.kind == "attention":
            total = 0.0
            for batch, new, context_before in shape.parts():
                t = _attention(model, kind, kp, tp, batch, new, context_before, precision, bw)
                if t is None:
                    return None
                total += t
            return total
        if op.kind in ("norm", "elementwise", "embedding"):
            if kp.elementwise is None:
                return None
            if op.kind == "embedding":
                return kc.elementwise_time_s(kp, bw, T, op.n, GATHER_BYTES)
            if op.kind == "norm":
                return op.kernels * kc.elementwise_time_s(kp, bw, T, op.width, NORM_BYTES)
            width = op.width / tp if op.name != "residual_add" else op.width
            return op.kernels * kc.elementwise_time_s(kp, bw, T, width, ACT_BYTES)
    except InputError:  # the engine has no table for this class on this kind
        return None
    return None


def _peak(kind: DeviceKind, key: str) -> float:
    return kind.peak_flops("fp8" if key.startswith("fp8") else "bf16")[0]


def _attention(model: ModelSpec, kind: DeviceKind, kp: KernelProfile, tp: int, batch: int,
               new: int, context_before: float, precision: Precision, bw: float) -> float | None:
    kv = _kv_key(precision.kv)
    if kv is None:
        return None
    heads = model.num_attention_heads // tp
    bf16 = kind.peak_flops("bf16")[0]
    if model.mla is not None:
        if new == 1:
            return kc.mla_decode_time_s(kp, bf16, bw, batch, context_before + 1, heads, kv)
        return kc.mla_prefill_time_s(kp, bf16, batch, new, heads, kv, context_before)
    if new == 1:
        kv_heads = max(1, model.num_kv_heads // tp)
        return kc.decode_attention_time_s(kp, bw, batch, context_before + 1, kv_heads,
                                          model.head_dim, kv)
    return kc.prefill_attention_time_s(kp, bf16, batch, new, heads, model.head_dim, "bf16",
                                       context_before)


def _moe_share(op: Op, model: ModelSpec, kind: DeviceKind, kp: KernelProfile, tp: int,
               tokens: int, precision: Precision, bw: float, ep: int = 1) -> float | None:
    """The fused MoE layer (gate/up and down grouped GEMMs together, as the engines run
    and time it), shared between the graph's two expert operators by their FLOPs."""
    moe = model.moe
    assert moe is not None
    key = gemm_key(kp, model, precision.weight)
    if key is None:
        return None
    up_mult = 2 if model.gated_mlp else 1
    share = up_mult / (up_mult + 1) if op.name == "experts_up" else 1 / (up_mult + 1)
    inter = moe.expert_intermediate_size
    grouped = moe_key(kp, model, precision.weight)
    if grouped is not None:
        total = kc.moe_time_s(kp, _peak(kind, grouped), bw, tokens, model.hidden_size, inter,
                              moe.top_k, moe.num_experts, tp, ep, grouped)
        return share * total
    # No grouped-GEMM table of this format: each local expert hit is a GEMM of its rows.
    hit = max(1.0, min(moe.num_experts, tokens * moe.top_k) / ep)
    rows = tokens * moe.top_k / ep / hit
    n, k = (up_mult * inter / tp, model.hidden_size) if op.name == "experts_up" \
        else (model.hidden_size, inter / tp)
    return hit * kc.gemm_time_s(kp, _peak(kind, key), bw, rows, n, k, key)


def allreduce_s(topo: Topology, group: tuple[str, ...] | list[str], message_bytes: float) -> float:
    """All-reduce of ``message_bytes`` over a TP group: the engine's implementation where
    the kind has kernel data, else the topology's link model."""
    t = len(group)
    if t < 2:
        return 0.0
    cal = topo.calibration(topo.device_kind_of(group[0]))
    kp, facts = cal.kernels, cal.engine
    if kp is None or facts is None:
        return topo.allreduce_time_s(group, message_bytes)
    bw, lat = topo.group_link(group)
    ring_s = 2 * (t - 1) / t * message_bytes / bw  # the ring's traffic over the group's links
    if len({topo.domain_of[d] for d in group}) > 1:
        # Not one NVLink domain (a TP group that would cross a slower link; plans keep TP
        # inside fast domains): NCCL's floor, and the ring over the group's slowest link.
        floor = _measured_allreduce(kp, "nccl", t, 0.0) if "nccl" in kp.allreduce else 0.0
        return floor + ring_s + 2 * lat
    # The measured implementation, never faster than the ring over this topology's links
    # (a user's fabric slower than the NVLink the kernels were measured on).
    impl = "custom" if t <= facts.custom_allreduce_max_gpus else "nccl"
    return max(_measured_allreduce(kp, impl, t, message_bytes), ring_s)


def _measured_allreduce(kp: KernelProfile, impl: str, t: int, message_bytes: float) -> float:
    """The engine's measured all-reduce of ``impl`` (NCCL where the engine has no other)
    at ``t`` GPUs."""
    if impl not in kp.allreduce:
        impl = "nccl" if "nccl" in kp.allreduce else next(iter(kp.allreduce), "")
    if impl not in kp.allreduce:
        raise InputError(f"kernel profile {kp.device_kind}/{kp.engine}: no all-reduce data")
    fitted = sorted(kp.allreduce[impl].regimes)
    if t in fitted:
        return kc.allreduce_time_s(kp, impl, t, message_bytes)
    # A GPU count without measurements: the nearest measured count below (or the
    # smallest), its floor, and the ring's bus traffic 2(t-1)/t of the message scaled to t.
    ref = max((f for f in fitted if f <= t), default=fitted[0])
    scale = ((t - 1) / t) / ((ref - 1) / ref)
    return kc.allreduce_time_s(kp, impl, ref, message_bytes * scale)


def gemm_ceiling(kind: DeviceKind, model: ModelSpec, weight: str) -> tuple[float, float] | None:
    """(fraction of peak FLOP/s, fraction of HBM bandwidth) the engine's GEMM kernels reach
    on a large square GEMM (8192^3) and when streaming weights: the ceilings a roofline
    chart draws. None where the kind has no kernel data for the format."""
    kp = kind.calibration.kernels if kind.calibration else None
    key = gemm_key(kp, model, weight) if kp is not None else None
    if kp is None or key is None:
        return None
    peak = _peak(kind, key)
    bw = kind.tiers_fastest_first()[0].bandwidth_bytes_per_s
    n = 8192
    t = kc.gemm_time_s(kp, peak, bw, n, n, n, key)
    return 2.0 * n ** 3 / t / peak, kp.gemm[key].memory_efficiency


ALLTOALL_BUS_EFFICIENCY = 0.68
"""Fraction of the per-device link bandwidth an all-to-all's off-device traffic reaches:
NCCL ``alltoall_perf`` at 8 GPUs and 512 MiB per rank moves 7/8 of it off-device in
1.46-1.51 ms on H100/H200 (0.71 of NVLink's 450 GB/s per direction), 0.83-0.89 ms on
B200 (0.63 of 900 GB/s) and 2.31 ms on A100 (0.68 of 300 GB/s)
(``hardware/data/aic-kernels/comm.csv.gz``, op alltoall)."""


def alltoall_s(topo: Topology, group: tuple[str, ...] | list[str], bytes_per_device: float) -> float:
    """One all-to-all (an MoE dispatch or combine) over ``group``, in which every device
    sends (and receives) ``bytes_per_device`` bytes spread evenly over the other devices.

    Seen from the group's first device, each peer gets ``1 / (t - 1)`` of the bytes over
    the path to it: NVLink inside its fast domain, the network (the per-GPU NIC
    bandwidth of the topology's links) across domains. The link classes carry their
    shares at once, so the slowest class sets the time; plus the worst path latency and
    a fixed floor per collective; links at :data:`ALLTOALL_BUS_EFFICIENCY` of their
    bandwidth. The engine kernel data (aiconfigurator's tables) has
    NCCL all-to-all rows of nccl-tests inside one node only (2, 4, 8 GPUs) and no DeepEP
    rows, and the engine profiles fit no all-to-all; the floor is the engine's fitted NCCL
    all-reduce floor at the group's size (nearest fitted count below; 16.6 us for vLLM
    at 8 H200), at the top of the nccl-tests ``alltoall_perf`` floors of 7.4-13.6 us at
    8 H200 in ``comm.csv.gz``; without kernel data, the kind's ``collective_launch_s``.
    """
    t = len(group)
    if t < 2 or bytes_per_device <= 0:
        return 0.0
    first = group[0]
    by_bw: dict[float, int] = {}
    worst_lat = 0.0
    for d in group[1:]:
        bw, lat = topo.path(first, d)
        by_bw[bw] = by_bw.get(bw, 0) + 1
        worst_lat = max(worst_lat, lat)
    wire = max(bytes_per_device * n / (t - 1) / (bw * ALLTOALL_BUS_EFFICIENCY)
               for bw, n in by_bw.items())
    cal = topo.calibration(topo.device_kind_of(first))
    kp = cal.kernels
    if kp is not None and kp.allreduce:
        floor = _measured_allreduce(kp, "nccl", t, 0.0)
    else:
        floor = cal.collective_launch_s
    return floor + wire + worst_lat
