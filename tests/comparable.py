"""Comparing messages as the wire sees them, for the codec tests."""

from __future__ import annotations

import dataclasses
from typing import Any


def normalise(value: Any) -> Any:
    """A comparable form that keeps types apart (``True == 1`` and ``1 == 1.0`` in Python; not on the wire), compares
    every bytes-like value as bytes, and makes NaN equal to itself."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(normalise(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, bytes | bytearray | memoryview):
        return ("bytes", bytes(value))
    if isinstance(value, list):
        return ("list", tuple(normalise(item) for item in value))
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)
