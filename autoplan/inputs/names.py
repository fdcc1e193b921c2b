"""Names that reach generated text (launch scripts, manifests, charts, messages): the
model, the topology, device kinds, links, memory tiers, device ids.

They are checked where they come in (the pydantic specs of models, topologies, requests
and plans): printable text -- no newline, tab or other control or format character --
and a length limit in UTF-8 bytes. What writes them out still quotes them for its
context; this check keeps a name from ever being a line of its own.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

ENGINES = ("vllm", "sglang", "trtllm")
"""The serving engines autoplan prices (``--engine``; ``hardware/profiles/<engine>.yaml``)."""

MAX_NAME_BYTES = 255
"""A name: a device kind, a link, a memory tier, a device id (a file name's limit)."""

MAX_PATH_BYTES = 4096
"""A name that may be a path: the model, the topology (PATH_MAX)."""


def check_name(value: str, limit: int = MAX_NAME_BYTES) -> str:
    """``value`` if it is a printable name of at most ``limit`` UTF-8 bytes; else a
    ValueError saying which rule it breaks (no echo of the value: it may be huge)."""
    if not value:
        raise ValueError("must not be empty")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ValueError(f"must be printable text, without control characters "
                         f"(it has {bad!r})")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ValueError(f"must be at most {limit} bytes long (it has {size})")
    return value


def _path(value: str) -> str:
    return check_name(value, MAX_PATH_BYTES)


Name = Annotated[str, AfterValidator(check_name)]
"""A printable name of at most :data:`MAX_NAME_BYTES` bytes."""

PathName = Annotated[str, AfterValidator(_path)]
"""A printable name or path of at most :data:`MAX_PATH_BYTES` bytes."""
