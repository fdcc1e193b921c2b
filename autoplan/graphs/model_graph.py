"""The model as a graph of operators.

Each operator is an :class:`Op` that knows its weight shape and how tensor parallelism
splits it; the cost model turns it into FLOPs and bytes for a number of tokens, a
context length and a TP degree. :func:`build_model_graph` lays the operators out as a
networkx DiGraph (embedding, per layer: norms, projections, attention core, MLP or
experts, residual adds; final norm and LM head) whose edges carry the activation width
that flows along them. Layers of the same kind (dense or MoE) have identical operators,
which is what lets the planner count layers instead of listing them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import networkx as nx

from autoplan.inputs.model import ModelSpec
from autoplan.inputs.unquantized import base_kind, sixteen_bit_ops

OpKind = Literal["gemm", "qkv", "moe_gemm", "attention", "norm", "elementwise", "embedding"]
# How TP shards a GEMM: "col" splits the output width, "row" the input width,
# "none" replicates the weights on every TP rank.
Split = Literal["col", "row", "none"]


@dataclass(frozen=True)
class Op:
    """One operator of a layer, with its weights and sharding rule."""

    name: str
    kind: OpKind
    k: int = 0  # GEMM input width
    n: int = 0  # GEMM output width (per expert for moe_gemm)
    split: Split = "none"
    bias: bool = False
    experts: int = 0  # moe_gemm: number of routed experts
    top_k: int = 0  # moe_gemm: experts per token
    width: int = 0  # norm / elementwise: elements per token
    norm_params: int = 0  # parameters of a norm (1 or 2 vectors)
    kernels: int = 1  # kernel launches this operator costs
    sixteen_bit: bool = False  # weights the checkpoint keeps 16-bit (autoplan.inputs.unquantized)

    def params(self) -> int:
        """Total parameters (all TP ranks together)."""
        if self.kind in ("gemm", "qkv"):
            return self.k * self.n + (self.n if self.bias else 0)
        if self.kind == "moe_gemm":
            return self.experts * (self.k * self.n + (self.n if self.bias else 0))
        if self.kind == "embedding":
            return self.k * self.n
        if self.kind == "norm":
            return self.norm_params
        return 0


def _norm(model: ModelSpec, name: str, width: int) -> Op:
    per = 2 if model.norm == "layernorm" else 1
    return Op(name, "norm", width=width, norm_params=per * width)


def _attention_ops(model: ModelSpec) -> list[Op]:
    h, nq = model.hidden_size, model.num_attention_heads
    b = model.linear_bias
    if model.mla is not None:
        m = model.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        ops = []
        if m.q_lora_rank:
            ops += [
                Op("q_a_proj", "gemm", k=h, n=m.q_lora_rank),
                _norm(model, "q_a_norm", m.q_lora_rank),
                Op("q_b_proj", "gemm", k=m.q_lora_rank, n=nq * qk, split="col"),
            ]
        else:
            ops.append(Op("q_proj", "gemm", k=h, n=nq * qk, split="col"))
        ops += [
            Op("kv_a_proj", "gemm", k=h, n=m.kv_lora_rank + m.qk_rope_head_dim),
            _norm(model, "kv_a_norm", m.kv_lora_rank),
            Op("kv_b_proj", "gemm", k=m.kv_lora_rank,
               n=nq * (m.qk_nope_head_dim + m.v_head_dim), split="col"),
            Op("rope", "elementwise", width=nq * m.qk_rope_head_dim),
            Op("attention", "attention"),
            Op("o_proj", "gemm", k=nq * m.v_head_dim, n=h, split="row"),
        ]
        return ops
    hd, nkv = model.head_dim, model.num_kv_heads
    ops = [Op("qkv_proj", "qkv", k=h, n=(nq + 2 * nkv) * hd, bias=b or model.qkv_bias)]
    if model.qk_norm:
        # Two per-head RMSNorm weights of head_dim each (q_norm, k_norm).
        ops.append(Op("qk_norm", "norm", width=(nq + nkv) * hd, norm_params=2 * hd))
    ops += [
        Op("rope", "elementwise", width=(nq + nkv) * hd),
        Op("attention", "attention"),
        Op("o_proj", "gemm", k=nq * hd, n=h, split="row", bias=b),
    ]
    return ops


def _mlp_ops(model: ModelSpec, kind: str) -> list[Op]:
    h, b = model.hidden_size, model.linear_bias
    up_mult = 2 if model.gated_mlp else 1
    if kind == "moe" and model.moe is not None:
        moe = model.moe
        e = moe.expert_intermediate_size
        ops = [
            Op("router", "gemm", k=h, n=moe.num_experts),
            Op("experts_up", "moe_gemm", k=h, n=up_mult * e, experts=moe.num_experts,
               top_k=moe.top_k),
            Op("experts_act", "elementwise", width=moe.top_k * e),
            Op("experts_down", "moe_gemm", k=e, n=h, experts=moe.num_experts, top_k=moe.top_k),
        ]
        if moe.shared_intermediate_size:
            s = moe.shared_intermediate_size
            ops += [
                Op("shared_up", "gemm", k=h, n=up_mult * s, split="col"),
                Op("shared_act", "elementwise", width=s),
                Op("shared_down", "gemm", k=s, n=h, split="row"),
            ]
        return ops
    f = model.intermediate_size
    return [
        Op("mlp_up", "gemm", k=h, n=up_mult * f, split="col", bias=b),
        Op("mlp_act", "elementwise", width=f),
        Op("mlp_down", "gemm", k=f, n=h, split="row", bias=b),
    ]


@lru_cache(maxsize=256)
def layer_ops(model: ModelSpec, kind: str) -> tuple[Op, ...]:
    """The operators of one transformer layer of ``kind`` (``"dense"`` or ``"moe"``, with
    the projections its checkpoint keeps 16-bit: :meth:`ModelSpec.layer_kind`)."""
    h = model.hidden_size
    ops = [_norm(model, "attn_norm", h), *_attention_ops(model)]
    if model.norms_per_layer >= 2:
        ops.append(_norm(model, "mlp_norm", h))
    ops += _mlp_ops(model, base_kind(kind))
    adds = 1 if model.parallel_attention else 2
    ops.append(Op("residual_add", "elementwise", width=h, kernels=adds))
    sixteen = sixteen_bit_ops(kind)
    return tuple(replace(o, sixteen_bit=True) if o.name in sixteen else o for o in ops)


@lru_cache(maxsize=64)
def head_ops(model: ModelSpec) -> tuple[Op, ...]:
    """Operators before the first layer (on the first pipeline stage)."""
    ops = [Op("embedding", "embedding", k=model.vocab_size, n=model.hidden_size)]
    if model.learned_positions:
        ops.append(Op("position_embedding", "embedding", k=model.learned_positions,
                      n=model.hidden_size))
    if model.embedding_norm:
        ops.append(_norm(model, "embedding_norm", model.hidden_size))
    return tuple(ops)


@lru_cache(maxsize=64)
def tail_ops(model: ModelSpec) -> tuple[Op, ...]:
    """Operators after the last layer (on the last pipeline stage).

    With tied embeddings the LM head reuses the embedding table: on a single stage its
    weights are stored once; on a separate last stage the table is stored again there.
    """
    return (
        _norm(model, "final_norm", model.hidden_size),
        Op("lm_head", "gemm", k=model.hidden_size, n=model.vocab_size, split="col"),
    )


def parameter_count(model: ModelSpec) -> int:
    """Total parameters, each tied matrix counted once (how model cards count)."""
    total = sum(op.params() for op in head_ops(model))
    for i in range(model.num_layers):
        total += sum(op.params() for op in layer_ops(model, model.layer_kind(i)))
    for op in tail_ops(model):
        if op.name == "lm_head" and model.tie_word_embeddings:
            continue
        total += op.params()
    return total


def build_model_graph(model: ModelSpec) -> nx.DiGraph:
    """The model as a DiGraph of operators in execution order.

    Node ids are ``"embedding"``, ``"L{i}.{op}"`` and ``"lm_head"``; each node carries
    ``op`` (an :class:`Op`), ``layer`` (-1 before the layers, ``num_layers`` after) and
    ``params``. Edges carry ``width``: activation elements per token along the edge.

    >>> from autoplan.model import model_from_config
    >>> m = model_from_config({"model_type": "llama", "hidden_size": 64,
    ...     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    ...     "vocab_size": 100})
    >>> g = build_model_graph(m)
    >>> nx.is_directed_acyclic_graph(g), g.nodes["L1.attention"]["layer"]
    (True, 1)
    """
    g = nx.DiGraph(name=model.name)
    prev: str | None = None
    h = model.hidden_size

    def add(node: str, op: Op, layer: int, width: int) -> None:
        nonlocal prev
        g.add_node(node, op=op, layer=layer, params=op.params())
        if prev is not None:
            g.add_edge(prev, node, width=width)
        prev = node

    for op in head_ops(model):
        add(op.name, op, -1, h)
    for i in range(model.num_layers):
        for op in layer_ops(model, model.layer_kind(i)):
            add(f"L{i}.{op.name}", op, i, h)
    for op in tail_ops(model):
        add(op.name, op, model.num_layers, h)
    return g
