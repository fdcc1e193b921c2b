"""Calibrated roofline cost model (DESIGN.md §4).

An operator on a device with peak ``P`` FLOP/s, achieved-compute efficiency ``eta_c(m)``
and memory tiers of bandwidth ``W_i`` (achieved fraction ``eta_m``) takes::

    time = max(flops / (P * eta_c(m)), sum_i bytes_i / (W_i * eta_m)) + kernels * kernel_overhead

where ``m`` is the GEMM row count (tokens) and ``bytes_i`` the bytes it streams from
tier ``i`` (weights and KV cache live in the fastest tier while they fit, then spill).
Tensor parallelism of degree ``t`` divides GEMM weights and FLOPs and attention heads by
``t`` (KV heads by ``min(t, n_kv)``, replicated beyond) and adds all-reduces of the
layer's activations (two per layer, one with parallel attention). The calibration
parameters (``eta_c``, half-efficiency rows, ``eta_m``, kernel overhead, collective
launch, runtime reserve) are named fields of :class:`~autoplan.inputs.topology.Calibration`.

Phases:

- prefill: ``batch`` sequences of ``isl`` new tokens each, context before them 0;
- decode: ``batch`` sequences of 1 new token at context ``ctx``. Decode is priced at
  the mean context over the output, ``isl + osl / 2``: a decode step's time is linear in
  the context within a bound regime, so the mean step equals the mean TPOT.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

from autoplan.cost.kernel_ops import kernel_time_s
from autoplan.cost.memo import memo
from autoplan.errors import InputError
from autoplan.graphs.model_graph import Op, head_ops, layer_ops, tail_ops
from autoplan.inputs.dtypes import bytes_per_element
from autoplan.inputs.model import ModelSpec
from autoplan.inputs.topology import Calibration, DeviceKind
from autoplan.inputs.workload import Precision

Phase = Literal["prefill", "decode"]


Bound = Literal["compute", "memory", "communication"]


@dataclass(frozen=True)
class Shape:
    """The work of one forward pass: ``batch`` sequences, ``new`` tokens each, after
    ``context_before`` cached tokens; and, in a mixed step of in-flight batching,
    ``chunk_seqs`` prompt chunks of ``chunk`` tokens each after ``chunk_context`` cached
    tokens of their prompt (:mod:`autoplan.cost.inflight`). Every GEMM runs over all
    ``tokens``; attention runs per part."""

    batch: int
    new: int
    context_before: float
    chunk: int = 0
    chunk_seqs: int = 0
    chunk_context: float = 0.0

    @property
    def tokens(self) -> int:
        return self.batch * self.new + self.chunk * self.chunk_seqs

    @property
    def sampled(self) -> int:
        """Sequences whose next token the pass samples (LM-head rows): every decode
        sequence and every chunk (only a prompt's last chunk needs its logits; engines
        compute them for each scheduled sequence)."""
        return self.batch + self.chunk_seqs

    def parts(self) -> list[tuple[int, int, float]]:
        """(sequences, new tokens each, cached tokens before) of the attention parts."""
        out = [(self.batch, self.new, self.context_before)] if self.batch else []
        if self.chunk_seqs:
            out.append((self.chunk_seqs, self.chunk, self.chunk_context))
        return out


REQUEST = Shape(batch=0, new=0, context_before=0.0)
"""One request's handling by the engine's server before its first token streams back
(HTTP, chat template, tokenisation, admission, detokenisation): a pass with no GPU work,
priced as the engine's ``request_overhead_s`` on the pipeline's first stage
(:func:`autoplan.cost.pipeline.stage_cost`). TTFT as a served client sees it carries one
(:mod:`autoplan.cost.inflight`, ``estimate(serving=True)``); its hand-offs move no bytes
(each stage boundary charges its link latency, as every pass does)."""


def phase_shape(phase: Phase, batch: int, isl: int, osl: int,
                context: float | None = None) -> Shape:
    if phase == "prefill":
        return Shape(batch=batch, new=isl, context_before=0.0)
    ctx = context if context is not None else isl + osl / 2
    return Shape(batch=batch, new=1, context_before=float(ctx))


def check_tp(model: ModelSpec, tp: int) -> None:
    """TP must split attention heads evenly; KV heads split or replicate evenly."""
    if tp < 1:
        raise InputError(f"tensor-parallel degree must be >= 1, got {tp}")
    if model.num_attention_heads % tp:
        raise InputError(
            f"TP {tp} does not divide the {model.num_attention_heads} attention heads of "
            f"{model.name}"
        )
    kv = model.num_kv_heads
    if model.mla is None and kv % tp and tp % kv:
        raise InputError(f"TP {tp} neither divides nor is a multiple of the {kv} KV heads")


def valid_tps(model: ModelSpec, limit: int) -> list[int]:
    out = []
    for t in range(1, limit + 1):
        try:
            check_tp(model, t)
        except InputError:
            continue
        out.append(t)
    return out


def kv_heads_per_device(model: ModelSpec, tp: int) -> int:
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_layer(model: ModelSpec, tp: int, precision: Precision) -> float:
    """KV-cache bytes one token adds to one layer on one TP rank."""
    b = bytes_per_element(precision.kv)
    if model.mla is not None:  # one latent + rope key per token, replicated on every rank
        return (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * b
    return 2 * kv_heads_per_device(model, tp) * model.head_dim * b


def op_precision(op: Op, model: ModelSpec, precision: Precision) -> Precision:
    """The formats ``op`` runs in: ``precision``, except that the embedding table, the LM
    head and an MoE layer's router of quantized weights stay in the activations' 16-bit
    format. The engines quantize the layers' linear projections only: vLLM's and SGLang's
    FP8, AWQ and GPTQ methods leave ``VocabParallelEmbedding`` and ``ParallelLMHead``
    unquantized, their MoE models build the router (``gate``) with ``quant_config=None``
    (DeepSeek-V3's checkpoint stores it in BF16), and ModelOpt's FP8 recipe excludes
    ``*lm_head*`` and the routers. A GPTQ checkpoint whose config says ``lm_head: true``
    has its LM head quantized (:mod:`autoplan.inputs.checkpoint`). Projections the
    checkpoint itself leaves unquantized (``Op.sixteen_bit``:
    :mod:`autoplan.inputs.unquantized`) stay 16-bit when it is served in its own format."""
    if op.kind != "embedding" and op.name not in ("lm_head", "router") and not op.sixteen_bit:
        return precision
    if bytes_per_element(precision.weight) >= bytes_per_element(precision.activation):
        return precision
    ck = model.checkpoint
    if op.sixteen_bit and precision.weight != ck.dtype:
        return precision  # served in another format than the checkpoint's: quantized on load
    if op.name == "lm_head" and ck.lm_head_quantized and precision.weight == ck.dtype:
        return precision
    return replace(precision, weight=precision.activation)


def model_weight_bytes(model: ModelSpec, precision: Precision) -> float:
    """Bytes of all the model's weights, each tied matrix once, each in the format it is
    stored in (:func:`op_precision`; norms in the activations' format)."""
    total = sum(op_weight_bytes(o, model, 1, precision) for o in head_ops(model))
    kinds = Counter(model.layer_kind(i) for i in range(model.num_layers))
    for lk in sorted(kinds):  # layers of a kind hold the same weights
        total += kinds[lk] * sum(op_weight_bytes(o, model, 1, precision)
                                 for o in layer_ops(model, lk))
    for o in tail_ops(model):
        if not (o.name == "lm_head" and model.tie_word_embeddings):
            total += op_weight_bytes(o, model, 1, precision)
    return total


def op_weight_bytes(op: Op, model: ModelSpec, tp: int, precision: Precision,
                    ep: int = 1) -> float:
    """Bytes of this operator's weights held by one TP rank (experts: one rank of ``ep``
    expert-parallel ranks, each expert split ``tp`` ways), in its format
    (:func:`op_precision`)."""
    precision = op_precision(op, model, precision)
    wb = bytes_per_element(precision.weight)
    if op.kind == "norm":
        return op.params() * bytes_per_element(precision.activation)
    if op.kind == "qkv":
        n = _qkv_n(op, model, tp)
        return n * (op.k + (1 if op.bias else 0)) * wb
    if op.kind in ("gemm", "moe_gemm"):
        if op.kind == "moe_gemm":
            return op.params() * wb / (tp * ep)
        return op.params() * wb / (tp if op.split != "none" else 1)
    if op.kind == "embedding":
        return op.params() * wb / tp  # vocabulary-parallel
    return 0.0


def _qkv_n(op: Op, model: ModelSpec, tp: int) -> float:
    hd = model.head_dim
    return (model.num_attention_heads // tp + 2 * kv_heads_per_device(model, tp)) * hd


@dataclass
class OpCost:
    name: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @property
    def bound(self) -> Bound:
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


@dataclass
class Residency:
    """Seconds per byte of weights and of KV cache, after tier placement."""

    weight_s_per_byte: float
    kv_s_per_byte: float
    act_s_per_byte: float


def residency(kind: DeviceKind, weight_bytes: float, kv_bytes: float) -> Residency:
    """Place weights, then KV cache, in the fastest tiers first (spilling to slower)."""
    cal = kind.calibration
    assert cal is not None
    tiers = kind.tiers_fastest_first()
    free = [t.capacity_bytes for t in tiers]

    def place(amount: float) -> float:
        if amount <= 0:
            return 1.0 / (tiers[0].bandwidth_bytes_per_s * cal.memory_efficiency)
        s, left = 0.0, amount
        for i, t in enumerate(tiers):
            take = min(left, free[i]) if i < len(tiers) - 1 else left
            free[i] -= take
            s += take / (t.bandwidth_bytes_per_s * cal.memory_efficiency)
            left -= take
            if left <= 0:
                break
        return s / amount

    w = place(weight_bytes)
    kv = place(kv_bytes)
    act = 1.0 / (tiers[0].bandwidth_bytes_per_s * cal.memory_efficiency)
    return Residency(w, kv, act)


def compute_efficiency(cal: Calibration, ran_in: str, rows: float | None = None) -> float:
    """Calibrated fraction of the peak (of format ``ran_in``) an operator reaches:
    ``compute_efficiency``, times ``rows / (rows + compute_half_tokens)`` for ``rows`` GEMM
    rows (``None``: a large GEMM, the ceiling), times ``low_precision_efficiency`` below
    16 bits."""
    eff = (cal.compute_efficiency if rows is None
           else cal.compute_efficiency * rows / (rows + cal.compute_half_tokens))
    if bytes_per_element(ran_in) < 2:
        eff *= cal.low_precision_efficiency
    return eff


def op_cost(op: Op, model: ModelSpec, kind: DeviceKind, tp: int, shape: Shape,
            precision: Precision, res: Residency, ep: int = 1) -> OpCost:
    """FLOPs, bytes and time of one operator on one TP rank. An expert GEMM with ``ep``
    > 1 runs on one of ``ep`` expert-parallel ranks (``E / ep`` local experts, each split
    ``tp`` ways) for the ``shape.tokens`` tokens of all ranks."""
    cal: Calibration = kind.calibration  # type: ignore[assignment]
    precision = op_precision(op, model, precision)
    ab = bytes_per_element(precision.activation)
    T = shape.tokens
    flops = 0.0
    w_bytes = op_weight_bytes(op, model, tp, precision, ep)
    kv_bytes = 0.0
    act_bytes = 0.0
    gemm_rows = T
    dims = None
    if op.kind in ("gemm", "qkv"):
        rows = shape.sampled if op.name == "lm_head" else T  # logits of sampled tokens only
        gemm_rows = rows
        if op.kind == "qkv":
            k, n = op.k, _qkv_n(op, model, tp)
        elif op.split == "col":
            k, n = op.k, op.n / tp
        elif op.split == "row":
            k, n = op.k / tp, op.n
        else:
            k, n = op.k, op.n
        flops = 2.0 * rows * k * n
        act_bytes = rows * (k + n) * ab
        dims = (rows, n, k)
    elif op.kind == "moe_gemm":
        # Expected distinct experts touched by T tokens routing top_k of E each, of the
        # E / ep local ones; the local experts take 1 / ep of the T * top_k assignments.
        e, kk = op.experts, op.top_k
        touched = e / ep * (1.0 - (1.0 - kk / e) ** T)
        w_bytes *= touched / (e / ep)
        n = op.n / tp if op.name == "experts_up" else op.n
        k = op.k if op.name == "experts_up" else op.k / tp
        assigned = T * kk / ep
        flops = 2.0 * assigned * k * n
        act_bytes = assigned * (k + n) * ab
        gemm_rows = max(1.0, assigned / max(touched, 1.0))  # rows per expert GEMM
    elif op.kind == "attention":
        for b, s_new, c0 in shape.parts():
            f, a, k = _attention(model, tp, b, s_new, c0, precision)
            flops, act_bytes, kv_bytes = flops + f, act_bytes + a, kv_bytes + k
        gemm_rows = max(shape.new, shape.chunk)
    elif op.kind == "norm":
        flops = 5.0 * T * op.width
        act_bytes = 2.0 * T * op.width * ab
    elif op.kind == "elementwise":
        width = op.width / tp if op.name != "residual_add" else op.width
        flops = 1.0 * T * width
        act_bytes = 3.0 * T * width * ab * op.kernels
    elif op.kind == "embedding":
        w_bytes = T * op.n * bytes_per_element(precision.weight)  # gathers T rows only
        act_bytes = T * op.n * ab
    fmt = precision.weight if op.kind in ("gemm", "qkv", "moe_gemm") else precision.activation
    peak, ran_in = kind.peak_flops(fmt)
    if cal.kernels is not None:
        t = kernel_time_s(op, model, kind, tp, shape, precision, dims, ep)
        if t == 0.0:  # fused into another kernel: no launch, no traffic of its own
            return OpCost(op.name, 0.0, 0.0, 0.0, 0.0, 0.0)
        if t is not None:
            # Measured-kernel time; its roofline parts at the device's peaks say which
            # resource bounds it, the rest is the kernel class's fixed and ramp costs.
            bw = kind.tiers_fastest_first()[0].bandwidth_bytes_per_s
            compute_s = flops / peak if flops else 0.0
            memory_s = (w_bytes + kv_bytes + act_bytes) / bw
            return OpCost(op.name, flops, w_bytes + kv_bytes + act_bytes, compute_s, memory_s,
                          max(0.0, t - max(compute_s, memory_s)))
    eff = compute_efficiency(cal, ran_in, gemm_rows)
    compute_s = flops / (peak * eff) if flops else 0.0
    memory_s = (w_bytes * res.weight_s_per_byte + kv_bytes * res.kv_s_per_byte
                + act_bytes * res.act_s_per_byte)
    return OpCost(op.name, flops, w_bytes + kv_bytes + act_bytes, compute_s, memory_s,
                  op.kernels * cal.kernel_overhead_s)


def _attention(model: ModelSpec, tp: int, batch: int, s: int, c0: float,
               precision: Precision) -> tuple[float, float, float]:
    """(FLOPs, activation bytes, KV bytes) of the attention core on one rank, for
    ``batch`` sequences of ``s`` new tokens after ``c0`` cached ones."""
    ab = bytes_per_element(precision.activation)
    heads = model.num_attention_heads / tp
    pairs = s * c0 + s * (s + 1) / 2  # causal (query, key) pairs per sequence
    if model.mla is not None:
        m = model.mla
        if s == 1:  # decode: weights absorbed, attention runs over the latent cache
            d_qk, d_v = m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank
        else:
            d_qk, d_v = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    else:
        d_qk = d_v = model.head_dim
    flops = 2.0 * batch * pairs * heads * (d_qk + d_v)
    kv_tok = kv_bytes_per_token_layer(model, tp, precision)
    # Read the cached context once per sequence; write the new tokens' keys and values.
    kv_bytes = batch * (c0 * kv_tok + s * kv_tok)
    act = batch * s * heads * (d_qk + d_v) * ab
    return flops, act, kv_bytes


@dataclass
class PartCost:
    """Cost of a run of operators on one TP rank (one layer, or embedding / head)."""

    ops: list[OpCost] = field(default_factory=list)
    comm_s: float = 0.0

    @property
    def compute_s(self) -> float:
        return sum(o.time_s for o in self.ops)

    @property
    def time_s(self) -> float:
        return self.compute_s + self.comm_s


def allreduces_per_layer(model: ModelSpec) -> int:
    return 1 if model.parallel_attention else 2


def part_cost(ops: tuple[Op, ...], model: ModelSpec, kind: DeviceKind, tp: int, shape: Shape,
              precision: Precision, res: Residency, allreduce_s: float = 0.0,
              n_allreduce: int = 0) -> PartCost:
    return PartCost([op_cost(o, model, kind, tp, shape, precision, res) for o in ops],
                    n_allreduce * allreduce_s)


def activation_message_bytes(model: ModelSpec, shape: Shape, precision: Precision) -> float:
    """Bytes of the hidden state of the tokens in flight (all-reduce and PP hand-off)."""
    return shape.tokens * model.hidden_size * bytes_per_element(precision.activation)


@dataclass
class StageMemory:
    weights_bytes: float
    kv_bytes: float
    activation_bytes: float
    reserved_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_bytes + self.activation_bytes + self.reserved_bytes


def end_weights(model: ModelSpec, tp: int, precision: Precision, first: bool,
                last: bool) -> float:
    """Per-device bytes of the embedding (a first stage) and the final norm and LM head
    (a last stage) at TP ``tp``; a single stage of a tied model holds the table once."""
    w = 0.0
    if first:
        w += sum(op_weight_bytes(o, model, tp, precision) for o in head_ops(model))
    if last:
        for o in tail_ops(model):
            if o.name == "lm_head" and model.tie_word_embeddings and first:
                continue  # the embedding table is the LM head on a single stage
            w += op_weight_bytes(o, model, tp, precision)
    return w


def _stage_weights(model: ModelSpec, tp: int, layers: range, first: bool, last: bool,
                   precision: Precision) -> tuple[float, float]:
    """Per-device weight bytes of a dense stage and its widest GEMM output."""
    w = end_weights(model, tp, precision, first, last)
    kinds = Counter(model.layer_kind(i) for i in layers)
    for lk in sorted(kinds):  # layers of a kind hold the same weights
        w += kinds[lk] * sum(op_weight_bytes(o, model, tp, precision)
                             for o in layer_ops(model, lk))
    widest = max(
        (_qkv_n(o, model, tp) if o.kind == "qkv"
         else o.n / (tp if o.split == "col" or o.kind == "moe_gemm" else 1))
        for i in sorted(kinds) or ["dense"]
        for o in layer_ops(model, i) if o.kind in ("gemm", "qkv", "moe_gemm")
    )
    return w, widest


def stage_memory(model: ModelSpec, kind: DeviceKind, tp: int, layers: range, first: bool,
                 last: bool, batch: int, max_context: int, prefill_tokens: int,
                 precision: Precision, dp: int = 1, ep: int = 1) -> StageMemory:
    """Per-device memory of a stage holding ``layers`` at TP ``tp``.

    KV cache is sized for ``batch`` sequences at the full context ``max_context``;
    activation workspace for the largest forward pass (``prefill_tokens`` tokens). With
    ``dp`` data-parallel attention ranks of ``tp`` devices (or ``ep`` > 1) see
    :func:`autoplan.cost.expert_parallel.ep_stage_memory`.
    """
    if dp > 1 or ep > 1:
        from autoplan.cost.expert_parallel import ep_stage_memory

        return ep_stage_memory(model, kind, tp, layers, first, last, batch, max_context,
                               prefill_tokens, precision, dp, ep)
    # The weights and the widest intermediate depend on the layers, not on the batch
    # (memoised: the tables ask for the same stages at every batch size).
    w, widest = memo(("stage weights", id(model), tp, layers.start, layers.stop, layers.step,
                      first, last, precision), (model,),
                     lambda: _stage_weights(model, tp, layers, first, last, precision))
    kv = batch * max_context * kv_bytes_per_token_layer(model, tp, precision) * len(layers)
    ab = bytes_per_element(precision.activation)
    # The residual stream and the widest intermediate are live together, for every token
    # of the largest forward pass (norms write in place).
    act = prefill_tokens * (model.hidden_size + widest) * ab
    if last:
        act += batch * model.vocab_size / tp * 4  # fp32 logits of the last tokens
    return StageMemory(w, kv, act, kind.calibration.reserved_bytes)  # type: ignore[union-attr]
