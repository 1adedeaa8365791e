"""click parameter types: shapes and per-dim tuples, failing as usage errors that name the option."""
from __future__ import annotations

import click


class ShapeType(click.ParamType):
    """'1x32x112x112' -> (1, 32, 112, 112)."""

    name = "SHAPE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace(",", "x").split("x")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"expected sizes joined by 'x' such as 1x32x112x112, got {value!r}", param, ctx)
        if not 3 <= len(dims) <= 5 or any(d < 1 for d in dims):
            self.fail(f"expected 3 to 5 positive sizes (N, C, 1 to 3 spatial dims), got {value!r}", param, ctx)
        return dims


class IntTupleType(click.ParamType):
    """'3' or '3,3' (also '3x3') -> (3,) or (3, 3)."""

    name = "INT[,INT...]"

    def __init__(self, minimum: int = 0):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace("x", ",").split(",")
        try:
            items = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"expected an integer or integers joined by ',' such as 3 or 3,3, got {value!r}", param, ctx)
        if any(v < self.minimum for v in items):
            self.fail(f"every value must be >= {self.minimum}, got {value!r}", param, ctx)
        return items


class PaddingType(IntTupleType):
    """An int, per-dim ints, 'same' or 'valid'."""

    name = "INT[,INT...]|same|valid"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.lower() in ("same", "valid"):
            return value.lower()
        return super().convert(value, param, ctx)


SHAPE = ShapeType()
POSITIVE = IntTupleType(1)
NONNEGATIVE = IntTupleType(0)
PADDING = PaddingType(0)
