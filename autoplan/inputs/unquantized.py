"""Which of a layer's projections a quantized checkpoint keeps in 16 bits.

A ``quantization_config`` may list modules it leaves unquantized:
``modules_to_not_convert`` (Transformers' FP8 and fbgemm_fp8 configs: Meta's
Llama-3.1-405B-FP8 keeps every layer's attention and the first and last layers' MLP in
BF16), ``ignore`` (compressed-tensors / llm-compressor), ``ignored_layers`` and
``exclude_modules`` (NVIDIA ModelOpt); a GPTQ config's ``modules_in_block_to_quantize``
names the quantized ones instead. :func:`with_unquantized` matches those entries
against the checkpoint's module names of each layer's projections and records, per
operator, the layers whose weights stay 16-bit (``CheckpointFormat.sixteen_bit``); a
layer with such weights is a layer kind of its own (:func:`kind_of`), so the cost model
prices its bytes and GEMMs in the activations' 16-bit format
(:func:`autoplan.cost.roofline.op_precision`).

How an entry names modules (the conventions of the tools that write these lists):

- ``re:PATTERN`` is a regular expression matched from the start of the module's name
  (compressed-tensors). Patterns that quantify a group or hold more than
  :data:`MAX_QUANTIFIERS` quantifiers are not run (their backtracking can take
  exponential time); they count as entries not applied.
- an entry with ``*`` or ``?`` is a shell-style wildcard over the whole name (ModelOpt's
  ``exclude_modules``, e.g. ``model.layers.0.*``).
- any other entry names every module whose dotted name contains its dotted components in
  a row: the full name (``model.layers.0.mlp.down_proj``), a parent (``model.layers.0``:
  all of layer 0) or a tail (``self_attn``, ``o_proj``). This is Transformers' substring
  rule held to whole components, so ``layers.1`` does not name layer 10.

Engines run a layer's Q, K and V projections (and the gate and up projections) as one
fused GEMM in one format: a checkpoint that leaves some but not all of them unquantized
is refused, as vLLM refuses it ("Detected some but not all shards of ... are quantized",
``is_layer_skipped``, vllm/model_executor/layers/quantization/utils/quant_utils.py). An MoE
layer's experts are one fused module: an entry naming any expert of a layer leaves all of
that layer's experts 16-bit (vLLM's rule for ``experts`` prefixes in the same function).
DeepSeek's ``q_a_proj`` and ``kv_a_proj_with_mqa`` are one such GEMM (vLLM's
``fused_qkv_a_proj``) where the model has a ``q_lora_rank``.
The embedding, the LM head and the routers are 16-bit anyway (:mod:`autoplan.inputs.checkpoint`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from autoplan.errors import InputError
from autoplan.inputs.reading import show_value

if TYPE_CHECKING:
    from autoplan.inputs.model import ModelSpec

IGNORE_KEYS = ("modules_to_not_convert", "ignore", "ignored_layers", "exclude_modules")
MAX_ENTRIES = 20_000
MAX_PATTERNS = 16
MAX_QUANTIFIERS = 3
MAX_ENTRY_CHARS = 512
EXPERTS_TRIED = 256  # a pattern is tried on these experts of a layer and the ones it spells
MAX_EXPERT_NAMES = 400_000  # expert module names matched per config, all layers

#: Operators of a layer whose weights a checkpoint may keep 16-bit (the model graph's names).
PROJECTIONS = frozenset({"qkv_proj", "o_proj", "mlp_up", "mlp_down", "experts_up",
                         "experts_down", "shared_up", "shared_down", "q_a_proj", "q_b_proj",
                         "q_proj", "kv_a_proj", "kv_b_proj"})

# Modules every quantized checkpoint keeps 16-bit (autoplan.cost.roofline.op_precision):
# the embedding table, the LM head and MoE routers (``mlp.gate``, ``block_sparse_moe.gate``;
# Qwen's one-output ``shared_expert_gate``, which the model graph does not carry).
ALWAYS_16 = re.compile(r"(lm_head|embed_tokens|wte|word_embeddings|shared_expert_gate|(^|\.|\*)gate)\$?$")

_QUANTIFIED_GROUP = re.compile(r"\)\s*(\*|\+|\?|\{)")
# Every point a match may backtrack over: quantifiers (``?`` not opening a group's flags)
# and alternatives.
_QUANTIFIER = re.compile(r"(?<!\\)(\*|\+|\{\d|(?<!\()\?|\|)")


def _strings(value: Any, key: str) -> list[str]:
    """A list of module names given under ``key``, or one line naming what it is instead."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError(f"model config's quantization_config {key} must be a list of module "
                         f"names, got {show_value(value)}")
    return value


def listed(q: dict[str, Any]) -> list[str]:
    """The entries of the config's unquantized-module lists, in order: the top-level keys
    and ModelOpt's nested ``quantization`` block (``{"quant_method": "modelopt",
    "quantization": {"exclude_modules": [...]}}``, where vLLM's ModelOpt config reads it)."""
    out: list[str] = []
    inner = q.get("quantization")
    # vLLM's FP8 config reads modules_to_not_convert only where ignored_layers is empty
    fp8_picks = q.get("quant_method") == "fp8" and bool(_strings(q.get("ignored_layers"), "ignored_layers"))
    for block, where in ((q, ""), (inner if isinstance(inner, dict) else {}, "quantization.")):
        for key in IGNORE_KEYS:
            names = _strings(block.get(key), where + key)
            if not (fp8_picks and block is q and key == "modules_to_not_convert"):
                out += names
            if len(out) > MAX_ENTRIES:
                raise InputError(f"model config's quantization_config lists more than {MAX_ENTRIES} "
                                 f"unquantized modules; autoplan reads at most {MAX_ENTRIES}")
    return out


def _pattern(entry: str) -> Callable[[str], bool] | None:
    """A matcher for a ``re:`` or wildcard entry; None when autoplan does not run it."""
    if len(entry) > MAX_ENTRY_CHARS:
        return None
    if entry.startswith("re:"):
        pat = entry[3:]
        if _QUANTIFIED_GROUP.search(pat) or len(_QUANTIFIER.findall(pat)) > MAX_QUANTIFIERS:
            return None
        try:
            rx = re.compile(pat)
        except (re.error, RecursionError, OverflowError):
            return None
        return lambda name: rx.match(name) is not None
    if entry.count("*") > 8:
        return None
    rx = re.compile(fnmatch.translate(entry))
    return lambda name: rx.match(name) is not None


def _runs(name: str) -> Iterable[str]:
    """Every run of consecutive dotted components of ``name``."""
    parts = name.split(".")
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            yield ".".join(parts[i:j])


class _Matcher:
    """The entries, indexed: component entries by their joined components, patterns compiled."""

    def __init__(self, entries: list[str]):
        self.entries = entries
        self.used = [False] * len(entries)
        self.exact: dict[str, list[int]] = {}
        self.patterns: list[tuple[int, Callable[[str], bool]]] = []
        self.numbers: set[int] = {0}
        # experts a pattern is tried on: the first EXPERTS_TRIED and the numbers it spells
        self.pattern_numbers: set[int] = set(range(EXPERTS_TRIED))
        self.skipped = 0  # patterns autoplan does not run
        self._experts: list[int] | None = None
        for i, e in enumerate(entries):
            if e.startswith("re:") or "*" in e or "?" in e:
                m = _pattern(e)
                if m is None or len(self.patterns) >= MAX_PATTERNS:
                    self.skipped += 1
                else:
                    self.patterns.append((i, m))
                    self.pattern_numbers.update(int(d) for d in re.findall(r"\d{1,7}", e))
                continue
            key = e.strip().strip(".")
            if key and len(key) <= MAX_ENTRY_CHARS:
                self.exact.setdefault(key, []).append(i)
                self.numbers.update(int(c) for c in key.split(".") if c.isascii() and c.isdigit() and len(c) < 7)

    def experts_tried(self, model: ModelSpec, weights: int) -> list[int]:
        """The expert indices :func:`_experts_listed` tries in every MoE layer (the numbers
        the entries spell; for patterns, also the first :data:`EXPERTS_TRIED`), computed and
        bounded once per model."""
        if self._experts is None:
            n = model.moe.num_experts  # type: ignore[union-attr]
            js = self.numbers | (self.pattern_numbers if self.patterns else set())
            self._experts = sorted(j for j in js if j < n)
            if len(self._experts) * weights * model.num_layers > MAX_EXPERT_NAMES:
                raise InputError(f"model config's quantization_config names {len(self._experts)} expert "
                                 f"indices of {n} experts in {model.num_layers} layers; autoplan matches "
                                 f"at most {MAX_EXPERT_NAMES} expert module names")
        return self._experts

    def __call__(self, name: str) -> bool:
        hit = False
        for run in _runs(name):
            for i in self.exact.get(run, ()):
                self.used[i] = hit = True
        for i, m in self.patterns:
            if m(name):
                self.used[i] = hit = True
        return hit


def _family_names(model: ModelSpec) -> tuple[str, str, str, str]:
    """(layer prefix with ``{i}``, attention module, MLP module, expert weight names)."""
    f = model.family
    if f in ("falcon", "refinedweb", "refinedwebmodel", "rw", "bloom"):
        return "transformer.h.{i}", "self_attention", "mlp", ""
    if f == "opt":
        return "model.decoder.layers.{i}", "self_attn", "", ""
    if f == "mixtral":
        return "model.layers.{i}", "self_attn", "block_sparse_moe", "w1 w3 w2"
    return "model.layers.{i}", "self_attn", "mlp", "gate_proj up_proj down_proj"


def _units(model: ModelSpec, layer: int, ops: frozenset[str]):
    """(operators, shard names, fused aliases, any-shard rule) of layer ``layer``."""
    pre, att, mlp, experts = _family_names(model)
    p = pre.format(i=layer)
    a, m = f"{p}.{att}", (f"{p}.{mlp}" if mlp else p)
    if model.family in ("falcon", "refinedweb", "refinedwebmodel", "rw", "bloom"):
        yield ("qkv_proj",), [f"{a}.query_key_value"], [], False
        yield ("o_proj",), [f"{a}.dense"], [], False
        yield ("mlp_up",), [f"{m}.dense_h_to_4h"], [], False
        yield ("mlp_down",), [f"{m}.dense_4h_to_h"], [], False
        return
    if "qkv_proj" in ops:
        yield ("qkv_proj",), [f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"], [f"{a}.qkv_proj"], False
    if "q_a_proj" in ops:
        # vLLM fuses MLA's two down-projections into one GEMM (fused_qkv_a_proj,
        # packed_modules_mapping of its DeepSeek-V2/V3 model) where q_lora_rank is set
        yield (("q_a_proj", "kv_a_proj"), [f"{a}.q_a_proj", f"{a}.kv_a_proj_with_mqa"],
               [f"{a}.fused_qkv_a_proj"], False)
    for op, hf in (("q_b_proj", "q_b_proj"), ("q_proj", "q_proj"),
                   ("kv_a_proj", "kv_a_proj_with_mqa"), ("kv_b_proj", "kv_b_proj")):
        if op in ops and "qkv_proj" not in ops and not (op == "kv_a_proj" and "q_a_proj" in ops):
            yield (op,), [f"{a}.{hf}"], [], False
    yield ("o_proj",), [f"{a}.{'out_proj' if model.family == 'opt' else 'o_proj'}"], [], False
    if model.family == "opt":
        yield ("mlp_up",), [f"{p}.fc1"], [], False
        yield ("mlp_down",), [f"{p}.fc2"], [], False
        return
    if "mlp_up" in ops:
        yield ("mlp_up",), [f"{m}.gate_proj", f"{m}.up_proj"], [f"{m}.gate_up_proj"], False
        yield ("mlp_down",), [f"{m}.down_proj"], [], False
    if "experts_up" in ops:
        yield ("experts_up", "experts_down"), experts.split(), [], True
    if "shared_up" in ops:
        s = f"{m}.{'shared_experts' if model.family.startswith('deepseek') else 'shared_expert'}"
        yield ("shared_up",), [f"{s}.gate_proj", f"{s}.up_proj"], [f"{s}.gate_up_proj"], False
        yield ("shared_down",), [f"{s}.down_proj"], [], False


def _projections(model: ModelSpec, layer: int) -> frozenset[str]:
    """The projections layer ``layer`` holds (the names of
    :func:`autoplan.graphs.model_graph.layer_ops`)."""
    if model.mla is None:
        ops = {"qkv_proj", "o_proj"}
    else:
        ops = {"q_a_proj", "q_b_proj"} if model.mla.q_lora_rank else {"q_proj"}
        ops |= {"kv_a_proj", "kv_b_proj", "o_proj"}
    if model.moe is not None and layer in model.moe.moe_layers:
        ops |= {"experts_up", "experts_down"}
        if model.moe.shared_intermediate_size:
            ops |= {"shared_up", "shared_down"}
    else:
        ops |= {"mlp_up", "mlp_down"}
    return frozenset(ops)


def _experts_listed(match: _Matcher, model: ModelSpec, layer: int, weights: list[str]) -> bool:
    """Whether an entry names any expert of ``layer`` (expert indices the component
    entries hold, and expert 0, stand for all of them; patterns try every expert)."""
    pre, _, mlp, _ = _family_names(model)
    base = f"{pre.format(i=layer)}.{mlp}.experts"
    hit = False
    for j in match.experts_tried(model, len(weights)):  # every one, so that each entry naming an expert counts as applied
        for w in weights:
            hit = match(f"{base}.{j}.{w}") or hit
    return hit


def _named(match: _Matcher, model: ModelSpec, i: int, unit, leaves: str) -> bool:
    """Whether the entries name the unit's module(s) of layer ``i`` (``leaves``: what the
    list does to them, for the message refusing a part of a fused GEMM)."""
    _, shards, fused, any_shard = unit
    if any_shard:
        return _experts_listed(match, model, i, shards)
    whole = any([match(n) for n in fused])
    each = [match(n) for n in shards]
    if not whole and any(each) and not all(each):
        short = [s.rsplit(".", 1)[1] for s in shards]
        raise InputError(
            f"model config's quantization_config {leaves} "
            f"{', '.join(s for s, e in zip(short, each) if e)} of layer {i} "
            f"but not {', '.join(s for s, e in zip(short, each) if not e)}: "
            f"engines run them as one GEMM of one format (vLLM refuses such a checkpoint)")
    return whole or all(each)


def _quantized_list(q: dict[str, Any]) -> list[str]:
    """GPTQ's ``modules_in_block_to_quantize`` (a list, or a list of lists, of module
    names inside a layer): when given, the projections it does not name stay 16-bit
    (vLLM's ``is_layer_gptq_quantized``, vllm/model_executor/layers/quantization/utils/gptq_utils.py)."""
    key = "modules_in_block_to_quantize"
    raw = q.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(
            isinstance(x, str) or (isinstance(x, list) and all(isinstance(y, str) for y in x)) for x in raw):
        raise InputError(f"model config's quantization_config {key} must be a list of module names "
                         f"or of lists of them, got {show_value(raw)}")
    out = [y for x in raw for y in ([x] if isinstance(x, str) else x)]
    if len(out) > MAX_ENTRIES:
        raise InputError(f"model config's quantization_config {key} names {len(out)} modules; "
                         f"autoplan reads at most {MAX_ENTRIES}")
    return out


def with_unquantized(model: ModelSpec, cfg: dict[str, Any]) -> ModelSpec:
    """``model`` with the projections its config leaves 16-bit recorded (module docstring)."""
    q = cfg.get("quantization_config")
    ck = model.checkpoint
    if not isinstance(q, dict) or ck.dtype in (None, "bf16", "fp16"):
        return model
    entries, kept = listed(q), _quantized_list(q)
    if not entries and not kept:
        return model
    match, quantized = _Matcher(entries), _Matcher(kept)
    found: dict[str, list[int]] = {}
    for i in range(model.num_layers):
        for unit in _units(model, i, _projections(model, i)):
            # GPTQ's list does not reach the fused MoE experts (vLLM's GPTQ MoE method
            # reads only its ``dynamic`` rules)
            if _named(match, model, i, unit, "leaves unquantized") or (
                    kept and not unit[3] and not _named(quantized, model, i, unit, "quantizes")):
                for op in unit[0]:
                    found.setdefault(op, []).append(i)
    rest = sum(1 for e, u in zip(entries, match.used) if not u and not ALWAYS_16.search(e))
    rest += sum(1 for u in quantized.used if not u)
    sixteen = tuple((op, tuple(found[op])) for op in sorted(found))
    return model.model_copy(update={"checkpoint": ck.model_copy(
        update={"sixteen_bit": sixteen, "unquantized_modules": rest})})


def kind_of(base: str, ops: tuple[str, ...]) -> str:
    """The layer kind of a ``base`` layer (``"dense"``, ``"moe"``) whose ``ops`` are 16-bit."""
    return f"{base}:{','.join(ops)}" if ops else base


def base_kind(kind: str) -> str:
    """``"dense"`` or ``"moe"``: the operators a layer of ``kind`` runs."""
    return kind.split(":", 1)[0]


def sixteen_bit_ops(kind: str) -> frozenset[str]:
    """The operators a layer of ``kind`` holds in 16 bits."""
    _, _, ops = kind.partition(":")
    return frozenset(ops.split(",")) if ops else frozenset()


def check_sixteen_bit(value: Any, num_layers: int | None = None) -> None:
    """Bounds of ``CheckpointFormat.sixteen_bit`` given whole (a plan's embedded spec)."""
    for op, layers in value:
        if op not in PROJECTIONS:
            raise ValueError(f"sixteen_bit names {show_value(op)}, not a layer projection "
                             f"({', '.join(sorted(PROJECTIONS))})")
        if list(layers) != sorted(set(layers)) or (layers and layers[0] < 0) or (
                num_layers is not None and layers and layers[-1] >= num_layers):
            raise ValueError(f"sixteen_bit layers of {op} must be distinct increasing layer "
                             f"indices of the model")
