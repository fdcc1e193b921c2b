"""Expert parallelism (EP) and data-parallel attention (DP) for MoE stages.

A stage of ``size`` devices runs ``dp`` data-parallel attention ranks of ``tp`` devices
(``size = tp * dp``) and shards its routed experts over ``ep`` ranks of ``size / ep``
devices each (expert TP), as SGLang (``--enable-dp-attention --ep-size``), vLLM
(``--data-parallel-size --enable-expert-parallel``) and TensorRT-LLM
(``enable_attention_dp``, ``moe_expert_parallel_size``) run DeepSeek-V3. Per forward
pass of ``B`` sequences of ``new`` tokens (``T = B * new`` tokens in the stage):

- attention, its projections, the router, the dense layers' MLP and the shared experts
  run on each DP rank for its ``ceil(B / dp)`` sequences at TP ``tp``, with the layer's
  all-reduces over the rank's ``tp`` devices only. Shared experts are replicated per DP
  rank and split over its TP group, as vLLM and SGLang run them by default (SGLang can
  instead fuse them into the routed experts);
- the routed experts of one EP rank see the assignments routed to its ``E / ep``
  experts: ``T * top_k / ep`` on average, times the hottest rank's excess
  (:func:`hot_rank_factor`), priced by the engine's measured grouped-GEMM (MoE) kernels
  at (moe_tp, moe_ep) where the profile has them, else by the roofline;
- dispatch and combine are two all-to-alls over the stage's devices
  (:func:`autoplan.cost.kernel_ops.alltoall_s`). A device already holds its own DP
  rank's tokens; it receives, per dispatch, each token of the other ``dp - 1`` ranks
  that routes at least one of its ``top_k`` experts to the device's EP rank (probability
  ``1 - (1 - 1/ep)^top_k`` under uniform routing; 1 with ``ep = 1``, where the MoE runs
  TP over all devices and dispatch is an all-gather), ``hidden`` activations of 16 bits
  each, and sends its own tokens to the EP ranks they reach; the busiest device's larger
  side prices the collective (one DP rank with the whole batch sends far more than it
  receives); combine moves as many bytes back. This is the deduplicated (one copy per destination
  rank) volume of DeepEP's normal kernels; its low-latency kernels send one copy per
  expert, and FP8 dispatch halves the bytes (https://github.com/deepseek-ai/DeepEP).
  With ``dp = 1`` every device holds every token: no dispatch, and the combine is the
  MLP's all-reduce over the TP group;
- memory per device: attention, dense and shared-expert weights over ``tp`` (replicated
  on every DP rank), routed experts ``E / ep`` per EP rank split over its ``size / ep``
  devices (``1 / size`` of them), KV of the rank's ``ceil(B / dp)`` sequences.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from autoplan.cost.kernel_ops import allreduce_s, alltoall_s
from autoplan.cost.memo import memo
from autoplan.cost.roofline import (
    PartCost,
    Residency,
    Shape,
    StageMemory,
    _qkv_n,
    activation_message_bytes,
    allreduces_per_layer,
    end_weights,
    kv_bytes_per_token_layer,
    op_cost,
    op_weight_bytes,
)
from autoplan.errors import InputError
from autoplan.graphs.model_graph import Op, head_ops, layer_ops, tail_ops
from autoplan.graphs.topology import Topology
from autoplan.inputs.dtypes import bytes_per_element
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import DeviceKind
from autoplan.inputs.unquantized import base_kind
from autoplan.inputs.workload import Precision

if TYPE_CHECKING:
    from autoplan.cost.pipeline import StagePlacement

EXPERT_OPS = ("experts_up", "experts_act", "experts_down")
"""The routed-expert operators of an MoE layer (the rest runs on the DP ranks)."""

EP_ROUTING_SKEW = 1.0
"""Load-imbalance factor of the hottest EP rank beyond sampling noise: the ratio of its
expected share of the routed assignments to the mean share. 1.0 assumes routing balanced
in expectation, which DeepSeek-V3's auxiliary-loss-free balancing trains for (DeepSeek-V3
Technical Report, §2.1.2, https://arxiv.org/abs/2412.19437) and which the engines' expert
load balancers (EPLB, https://github.com/deepseek-ai/EPLB; SGLang ``--enable-eplb``,
TensorRT-LLM's MoE load balancer) restore at serving time with redundant experts (the
report's §3.4). Raise it for a deployment without a load balancer."""


def check_ep(model: ModelSpec, tp: int, dp: int, ep: int) -> None:
    """Attention DP and EP degrees a stage of ``tp * dp`` devices can run: MoE models only,
    ``ep`` dividing the stage's devices and the routed experts."""
    if dp < 1 or ep < 1:
        raise InputError(f"attention DP and EP must be >= 1, got DP {dp}, EP {ep}")
    if dp == 1 and ep == 1:
        return
    if model.moe is None:
        raise InputError(f"EP {ep} / attention DP {dp}: {model.name} is a dense model; expert "
                         "parallelism and data-parallel attention are for MoE models")
    size = tp * dp
    if size % ep:
        raise InputError(f"EP {ep} does not divide the {size} devices of a stage (TP {tp} x "
                         f"attention DP {dp})")
    e = model.moe.num_experts
    if ep > e or e % ep:
        raise InputError(f"EP {ep} does not divide the {e} routed experts of {model.name}")


def hot_rank_factor(assignments: float, ep: int) -> float:
    """Expected load of the hottest of ``ep`` EP ranks over the mean, for ``assignments``
    (token, expert) pairs routed uniformly: each rank's count is Binomial(n, 1/ep) of mean
    ``n/ep`` and standard deviation ``sqrt(n (1/ep)(1 - 1/ep))``, and the largest of ``ep``
    such counts exceeds the mean by about ``sqrt(2 ln ep)`` standard deviations (the
    Gaussian extreme-value bound), so the factor is ``1 + sqrt(2 ln(ep) (ep - 1) / n)``,
    at most ``ep`` (everything on one rank), times :data:`EP_ROUTING_SKEW`.

    >>> hot_rank_factor(1e12, 8) < 1.0001, hot_rank_factor(1, 8) == 8.0
    (True, True)
    """
    if ep <= 1:
        return 1.0
    n = max(assignments, 1.0)
    return min(float(ep), EP_ROUTING_SKEW * (1.0 + math.sqrt(2.0 * math.log(ep) * (ep - 1) / n)))


def rank_shape(shape: Shape, dp: int) -> Shape:
    """The share of one DP rank: ``ceil(batch / dp)`` sequences (the busiest rank), and
    of a mixed step's prompt chunks ``ceil(chunks / dp)``; the busiest rank of a mixed
    step holds ``ceil((batch + chunks) / dp)`` sequences in all, so its decodes are what
    its chunks leave of them (a rank whose step carries a chunk has one decode fewer)."""
    chunks = -(-shape.chunk_seqs // dp)
    batch = -(-shape.batch // dp)
    if shape.chunk_seqs:
        batch = -(-(shape.batch + shape.chunk_seqs) // dp) - chunks
    return Shape(batch=batch, new=shape.new, context_before=shape.context_before,
                 chunk=shape.chunk, chunk_seqs=chunks, chunk_context=shape.chunk_context)


def expert_tokens(model: ModelSpec, tokens: float, ep: int) -> int:
    """Tokens whose ``top_k`` routing loads the hottest EP rank like the hottest rank's
    share: ``tokens * hot_rank_factor(tokens * top_k, ep)``, rounded up."""
    assert model.moe is not None
    return math.ceil(tokens * hot_rank_factor(tokens * model.moe.top_k, ep) - 1e-9)


def dispatch_bytes_per_device(model: ModelSpec, st: StagePlacement, shape: Shape,
                              precision: Precision) -> float:
    """Bytes the busiest device moves in one dispatch (and again in one combine) for a
    pass of ``shape``: the larger of what a device receives (the other DP ranks' tokens
    that route to its EP rank, under an even spread of the batch, times the hottest
    rank's excess) and what the busiest DP rank's devices send (each its ``1 / tp`` share
    of the rank's ``ceil(B / dp)`` sequences, one copy per other EP rank a token
    reaches; with ``ep = 1`` to every device outside its DP rank). See the module
    docstring."""
    if st.dp <= 1:
        return 0.0
    assert model.moe is not None
    k, ep = model.moe.top_k, st.ep
    tokens = shape.tokens
    own = rank_shape(shape, st.dp).tokens / st.tp  # tokens one device of the busiest rank sends
    if ep > 1:
        reach = 1.0 - (1.0 - 1.0 / ep) ** k
        received = tokens * (1.0 - 1.0 / st.dp) * reach * hot_rank_factor(tokens * k, ep)
        sent = own * reach * (ep - 1)
    else:
        received = tokens * (1.0 - 1.0 / st.dp)
        sent = own * (st.size - st.tp)
    return max(received, sent) * model.hidden_size * bytes_per_element(precision.activation)


def dispatch_combine_s(model: ModelSpec, topo: Topology, st: StagePlacement, shape: Shape,
                       precision: Precision) -> float:
    """Dispatch plus combine of one MoE layer over the stage's devices."""
    b = dispatch_bytes_per_device(model, st, shape, precision)
    return 2.0 * alltoall_s(topo, st.devices, b)


def _expert_op_cost(o: Op, model: ModelSpec, kind: DeviceKind, st: StagePlacement,
                    shape: Shape, precision: Precision, res: Residency):
    """One routed-expert operator on the hottest EP rank."""
    moe_tp = st.size // st.ep
    hot_tokens = expert_tokens(model, shape.tokens, st.ep)
    if o.kind == "moe_gemm":
        return op_cost(o, model, kind, moe_tp, Shape(hot_tokens, 1, 0.0), precision, res, st.ep)
    # The activation between the two GEMMs: the rank's assignments, its experts' share.
    return op_cost(o, model, kind, moe_tp, Shape(-(-hot_tokens // st.ep), 1, 0.0), precision, res)


def expert_parallel_parts(model: ModelSpec, topo: Topology, st: StagePlacement,
                          counts: Counter, shape: Shape, precision: Precision,
                          res: Residency) -> list[tuple[int, PartCost]]:
    """(count, cost) of each part of a DP / EP stage on its busiest device: one per layer
    kind in ``counts``, the embedding on the first stage, the LM head on the last."""
    kind = topo.kinds[st.kind]
    rank = rank_shape(shape, st.dp)
    ar = allreduce_s(topo, st.devices[:st.tp], activation_message_bytes(model, rank, precision))
    n_ar = allreduces_per_layer(model) if st.tp > 1 else 0
    parts = []
    # A layer's part depends on the stage only through its devices and shape (memoised:
    # the tables price the same layers at every role and length).
    at = (id(model), id(topo), st.kind, st.devices, st.dp, st.ep, shape, precision,
          res.weight_s_per_byte, res.kv_s_per_byte, res.act_s_per_byte)

    def layer(lk: str) -> PartCost:
        costs = [(_expert_op_cost(o, model, kind, st, shape, precision, res)
                  if o.name in EXPERT_OPS else
                  op_cost(o, model, kind, st.tp, rank, precision, res))
                 for o in layer_ops(model, lk)]
        comm = n_ar * ar
        if base_kind(lk) == "moe":
            comm += dispatch_combine_s(model, topo, st, shape, precision)
        return PartCost(costs, comm)

    for lk in sorted(counts):
        parts.append((counts[lk], memo(("ep-layer", lk, *at), (model, topo),
                                       lambda lk=lk: layer(lk))))
    if st.first == 0:
        parts.append((1, PartCost([op_cost(o, model, kind, st.tp, rank, precision, res)
                                   for o in head_ops(model)], ar if st.tp > 1 else 0.0)))
    if st.end == model.num_layers:
        parts.append((1, PartCost([op_cost(o, model, kind, st.tp, rank, precision, res)
                                   for o in tail_ops(model)])))
    return parts


def ep_stage_memory(model: ModelSpec, kind: DeviceKind, tp: int, layers: range, first: bool,
                    last: bool, batch: int, max_context: int, prefill_tokens: int,
                    precision: Precision, dp: int, ep: int) -> StageMemory:
    """Per-device memory of a stage of ``dp`` attention ranks of ``tp`` devices with
    experts over ``ep`` ranks (:func:`autoplan.cost.roofline.stage_memory`'s terms)."""
    size = tp * dp
    moe_tp = size // ep
    def weights() -> float:
        w = end_weights(model, tp, precision, first, last)
        counts = Counter(model.layer_kind(i) for i in layers)
        for lk in sorted(counts):  # layers of a kind hold the same weights
            w += counts[lk] * sum(
                op_weight_bytes(o, model, moe_tp, precision, ep) if o.kind == "moe_gemm"
                else op_weight_bytes(o, model, tp, precision) for o in layer_ops(model, lk))
        return w

    # The weights depend on the layers, not on the batch (memoised, as the tables ask for
    # the same stages at every batch size).
    w = memo(("ep stage weights", id(model), tp, dp, ep, layers.start, layers.stop,
              layers.step, first, last, precision), (model,), weights)
    rank_batch = -(-batch // dp)
    kv = rank_batch * max_context * kv_bytes_per_token_layer(model, tp, precision) * len(layers)
    ab = bytes_per_element(precision.activation)
    kinds = {model.layer_kind(j) for j in layers} or {"dense"}
    ops = [o for lk in kinds for o in layer_ops(model, lk)]
    widest = max((_qkv_n(o, model, tp) if o.kind == "qkv"
                  else o.n / (tp if o.split == "col" else 1))
                 for o in ops if o.kind in ("gemm", "qkv"))
    act = -(-prefill_tokens // dp) * (model.hidden_size + widest)
    experts = [o for o in ops if o.kind == "moe_gemm"]
    if experts:
        # The rank's routed assignments and their widest expert intermediate.
        rows = expert_tokens(model, prefill_tokens, ep) * model.moe.top_k / ep  # type: ignore[union-attr]
        act = max(act, rows * (model.hidden_size + max(o.n / moe_tp for o in experts)))
    act *= ab
    if last:
        act += rank_batch * model.vocab_size / tp * 4  # fp32 logits of the last tokens
    return StageMemory(w, kv, act, kind.calibration.reserved_bytes)  # type: ignore[union-attr]
