"""Numeric formats: bytes per element and the compute format each falls back to."""

from __future__ import annotations

from typing import Literal

DType = Literal["bf16", "fp16", "fp8", "int8", "int4"]

DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "int8", "int4")

BYTES_PER_ELEMENT: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

# When a chip has no units for a format, GEMMs run in the next wider format
# (weights are dequantized on the fly): int4 -> int8 -> fp16, fp8 -> fp16, bf16 <-> fp16.
COMPUTE_FALLBACK: dict[str, tuple[str, ...]] = {
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "fp8": ("fp8", "fp16", "bf16"),
    "int8": ("int8", "fp8", "fp16", "bf16"),
    "int4": ("int4", "int8", "fp8", "fp16", "bf16"),
}


def bytes_per_element(dtype: str) -> float:
    try:
        return BYTES_PER_ELEMENT[dtype]
    except KeyError:
        from autoplan.errors import InputError

        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}") from None
