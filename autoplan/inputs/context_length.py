"""A model's context length from its ``config.json``, and the check that a request fits.

The engines derive the longest sequence they serve (vLLM's ``max_model_len``) from
``max_position_embeddings`` and ``rope_scaling``, and refuse a config whose
``rope_scaling`` they cannot read (Hugging Face ``transformers``'
``modeling_rope_utils.rope_config_validation``: a known ``rope_type``, a ``factor`` of
at least 1). A broken ``rope_scaling`` is refused here too, rather than read as none.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from autoplan.errors import InputError
from autoplan.inputs.reading import config_int, show_value

if TYPE_CHECKING:
    from autoplan.inputs.model import ModelSpec

MAX_CONTEXT = 1 << 25
"""Limits above it never bind (prompts and outputs are each at most 2^24 tokens)."""

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "su", "llama3", "mrope")
"""The ``rope_type`` values of Hugging Face's rope initialisation functions (``su`` is
``longrope``'s old name, ``mrope`` Qwen2-VL's sections over the default)."""

_UNSCALED_ROPE = ("llama3", "longrope", "su", "default", "mrope")
"""Types whose ``max_position_embeddings`` is already the extended length."""


def context_limit(cfg: dict[str, Any]) -> int | None:
    """The longest sequence a config.json allows, as vLLM derives ``max_model_len`` (and
    refuses more): ``max_position_embeddings``, times a ``rope_scaling`` factor for the
    extending types (YaRN: the factor times ``original_max_position_embeddings``; linear,
    dynamic: times the stated length), not for ``llama3`` / ``longrope``, whose stated
    length is already the extended one. None where the config states none or null."""
    rope = cfg.get("rope_scaling")
    kind, factor = _rope(rope)
    if cfg.get("max_position_embeddings") is None:
        return None
    base = config_int(cfg["max_position_embeddings"], "max_position_embeddings", 1 << 62)
    limit = base
    if factor is not None and kind not in _UNSCALED_ROPE:
        assert isinstance(rope, dict)
        orig = rope.get("original_max_position_embeddings")
        limit = int((orig if kind == "yarn" and orig is not None else base) * factor)
    return min(limit, MAX_CONTEXT)


def _rope(rope: Any) -> tuple[str | None, float | None]:
    """``rope_scaling``'s type and factor, each None where the config has none; an
    InputError naming the key for a value an engine would refuse."""
    if rope is None:
        return None, None
    if not isinstance(rope, dict):
        raise InputError(f"model config key 'rope_scaling' must be a mapping or null, got "
                         f"{show_value(rope)}")
    kind = rope.get("rope_type") or rope.get("type")  # transformers' order; a null is none
    if kind is not None and kind not in ROPE_TYPES:
        raise InputError(f"model config key 'rope_scaling.rope_type' must be one of "
                         f"{', '.join(ROPE_TYPES)}, got {show_value(kind)}")
    factor = rope.get("factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float))
                               or not math.isfinite(factor) or not 1 <= factor <= 1 << 20):
        raise InputError(f"model config key 'rope_scaling.factor' must be a number from 1 to "
                         f"{1 << 20}, got {show_value(factor)}")
    if rope.get("original_max_position_embeddings") is not None:
        config_int(rope["original_max_position_embeddings"],
             "rope_scaling.original_max_position_embeddings", 1 << 40)
    return kind, None if factor is None else float(factor)


def context_needed(isl: int, osl: int) -> int:
    """Context a request needs: ``isl + osl`` (what the engines' servers check), a
    one-token output only its prompt (a TTFT measurement: the token is never fed back)."""
    return isl + osl if osl > 1 else isl


def check_context(model: ModelSpec, isl: int, osl: int) -> None:
    """A request must fit the model's context (InputError, exit 2)."""
    if model.max_context is not None and context_needed(isl, osl) > model.max_context:
        raise InputError(f"--isl + --osl = {isl + osl} tokens exceed the context of "
                         f"{model.name} ({model.max_context} tokens: its config's "
                         "max_position_embeddings and rope_scaling); engines refuse longer "
                         "sequences")
