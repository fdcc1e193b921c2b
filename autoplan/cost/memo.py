"""A bounded memo for the pure pricing functions the planner's tables call many times
with the same arguments: a layer's operators at one TP, pass shape and residency are the
same whichever stage role or length holds the layer (the tables price every config at
lengths 1 and 2 of every role). Objects that hash slowly or not at all (the model, the
device kind, the topology) are keyed by identity and held by the entry, so an identity
stays theirs while it is cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_ENTRIES = 16384
_CACHE: dict[tuple, tuple[tuple, Any]] = {}


def memo(key: tuple, held: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, computed once per ``key`` (which holds ``id(x)`` of each of ``held``)."""
    hit = _CACHE.get(key)
    if hit is not None and len(hit[0]) == len(held) and all(
            a is b for a, b in zip(hit[0], held)):
        return hit[1]
    if len(_CACHE) >= MAX_ENTRIES:
        _CACHE.clear()
    value = make()
    _CACHE[key] = (held, value)
    return value
