"""One validated, frozen description of a convolution layer.

``ConvSpec`` is built once at the API edge (or by the cost model) and everything downstream takes it:
the cost model reads shapes from it, the kernels receive the plain integers that ``ConvSpec.bind``
resolves for a concrete input.  Every rule lives here, and every error names the argument and the
numbers involved.  This module imports no Numba and no NumPy.

Shape conventions (channels-first, as PyTorch):
    input   (N, C_in, *spatial)
    weight  (C_out, C_in / groups, *kernel)            for a convolution
            (C_in, C_out / groups, *kernel)            for a transposed convolution
    output  (N, C_out, *out_spatial) with, per spatial dim,
            out = floor((L + p_before + p_after - d*(k-1) - 1) / s) + 1
            transposed: out = (L-1)*s - p_before - p_after + d*(k-1) + output_padding + 1
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid")


class ConvSpecError(ValueError):
    """An invalid convolution description. The message names the offending argument."""


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConvSpecError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ConvSpecError(f"{name} must be an integer, got {value!r}") from None


def normalize_ints(name: str, value: Any, ndim: int, minimum: int) -> tuple[int, ...]:
    """An int, or a sequence of ``ndim`` ints (a 1-sequence is broadcast), as a tuple, each >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = tuple(value) * ndim
        if len(value) != ndim:
            raise ConvSpecError(
                f"{name} must be an int or {ndim} ints (one per spatial dim), got {len(value)}: {tuple(value)!r}")
        items = tuple(_as_int(name, v) for v in value)
    else:
        items = (_as_int(name, value),) * ndim
    for v in items:
        if v < minimum:
            raise ConvSpecError(f"{name} must be >= {minimum} in every spatial dim, got {items!r}")
    return items


def normalize_padding(padding: Any, ndim: int) -> str | tuple[tuple[int, int], ...]:
    """'same', or per-dim (before, after) pairs.

    Accepted forms: an int; ``ndim`` ints; ``ndim`` (before, after) pairs; 'same'; 'valid' (= 0).
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * ndim
        if mode == "same":
            return "same"
        raise ConvSpecError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in padding):
        if len(padding) != ndim or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding):
            raise ConvSpecError(
                f"padding given as pairs must have {ndim} (before, after) pairs, got {padding!r}")
        pairs = tuple((_as_int("padding", b), _as_int("padding", a)) for b, a in padding)
    else:
        pairs = tuple((p, p) for p in normalize_ints("padding", padding, ndim, 0))
    if any(v < 0 for pair in pairs for v in pair):
        raise ConvSpecError(f"padding must be >= 0, got {padding!r}")
    return pairs



def same_padding(in_spatial: Sequence[int], stride: Sequence[int], effective_kernel: Sequence[int],
                 odd_after: bool = True) -> tuple[tuple[int, int], ...]:
    """Per-dim (before, after) padding that gives ceil(L / s) outputs (TensorFlow's 'same', ONNX's SAME_UPPER);
    ``odd_after=False`` puts an odd total's extra element before (ONNX's SAME_LOWER)."""
    pairs = []
    for length, s, ke in zip(in_spatial, stride, effective_kernel):
        total = max((math.ceil(length / s) - 1) * s + ke - length, 0)
        small, large = total // 2, total - total // 2
        pairs.append((small, large) if odd_after else (large, small))
    return tuple(pairs)

@dataclass(frozen=True)
class ConvSpec:
    """A convolution layer, normalized and validated on construction.

    Arguments may be given loosely (``kernel_size=3``, ``padding='same'``); after construction every
    spatial field is a tuple of ``ndim`` ints and ``padding`` is either ``'same'`` or a tuple of
    (before, after) pairs.  ``groups`` must divide both channel counts; a depthwise convolution with
    channel multiplier m is ``groups=in_channels, out_channels=m*in_channels``.
    """

    ndim: int
    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: Any = 0

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        ndim = _as_int("ndim", self.ndim)
        if ndim not in (1, 2, 3):
            raise ConvSpecError(f"ndim must be 1, 2 or 3 spatial dims, got {ndim}")
        put("ndim", ndim)
        for name in ("in_channels", "out_channels", "groups"):
            value = _as_int(name, getattr(self, name))
            if value < 1:
                raise ConvSpecError(f"{name} must be >= 1, got {value}")
            put(name, value)
        put("kernel_size", normalize_ints("kernel_size", self.kernel_size, ndim, 1))
        put("stride", normalize_ints("stride", self.stride, ndim, 1))
        put("dilation", normalize_ints("dilation", self.dilation, ndim, 1))
        put("padding", normalize_padding(self.padding, ndim))
        put("output_padding", normalize_ints("output_padding", self.output_padding, ndim, 0))
        put("bias", bool(self.bias))
        put("transposed", bool(self.transposed))
        if self.in_channels % self.groups:
            raise ConvSpecError(f"groups={self.groups} does not divide in_channels={self.in_channels}")
        if self.out_channels % self.groups:
            raise ConvSpecError(f"groups={self.groups} does not divide out_channels={self.out_channels}")
        if self.padding_mode not in PADDING_MODES:
            raise ConvSpecError(f"padding_mode must be one of {', '.join(PADDING_MODES)}; got {self.padding_mode!r}")
        if self.transposed:
            if self.padding_mode != "zeros":
                raise ConvSpecError(
                    f"padding_mode={self.padding_mode!r} is not supported for a transposed convolution "
                    f"(only 'zeros')")
            if self.padding == "same":
                raise ConvSpecError("padding='same' is not supported for a transposed convolution; give ints")
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= max(s, d):
                    raise ConvSpecError(
                        f"output_padding={self.output_padding} must be smaller than stride={self.stride} "
                        f"or dilation={self.dilation} in every dim")
        elif any(self.output_padding):
            raise ConvSpecError("output_padding is only meaningful for a transposed convolution")

    # ---- derived shapes -------------------------------------------------------------------------
    @property
    def weight_shape(self) -> tuple[int, ...]:
        """(C_out, C_in/groups, *kernel); transposed: (C_in, C_out/groups, *kernel)."""
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """Kernel extent with dilation folded in: d*(k-1)+1 per dim."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    def resolve_padding(self, in_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Per-dim (before, after) padding for an input of spatial size ``in_spatial``.

        'same' follows TensorFlow (and PyTorch at stride 1): total = max((ceil(L/s)-1)*s + d*(k-1)+1 - L, 0),
        the odd element going after.
        """
        if self.padding != "same":
            return self.padding
        return same_padding(in_spatial, self.stride, self.effective_kernel)

    def output_spatial(self, in_spatial: Sequence[int]) -> tuple[int, ...]:
        """Output spatial size for an input spatial size; raises ConvSpecError when it would be empty."""
        in_spatial = tuple(in_spatial)
        if len(in_spatial) != self.ndim:
            raise ConvSpecError(
                f"input must have {self.ndim} spatial dims for a {self.ndim}D convolution, got {len(in_spatial)}")
        for i, length in enumerate(in_spatial):
            if length < 1:
                raise ConvSpecError(f"input spatial size must be >= 1 in every dim, got {in_spatial} (dim {i})")
        pads = self.resolve_padding(in_spatial)
        out = []
        for i, (length, (pb, pa), k, ke, s, d, op) in enumerate(zip(
                in_spatial, pads, self.kernel_size, self.effective_kernel, self.stride, self.dilation,
                self.output_padding)):
            if self.transposed:
                size = (length - 1) * s - pb - pa + ke + op
                if size < 1:
                    raise ConvSpecError(
                        f"padding={pads} is too large for input size {length} in spatial dim {i}: "
                        f"the transposed output would have size {size}")
            else:
                if self.padding_mode == "reflect" and max(pb, pa) >= length:
                    raise ConvSpecError(
                        f"padding_mode='reflect' needs padding < input size, got padding ({pb}, {pa}) for "
                        f"size {length} in spatial dim {i}")
                if self.padding_mode == "circular" and max(pb, pa) > length:
                    raise ConvSpecError(
                        f"padding_mode='circular' needs padding <= input size, got padding ({pb}, {pa}) for "
                        f"size {length} in spatial dim {i}")
                padded = length + pb + pa
                if ke > padded:
                    raise ConvSpecError(
                        f"kernel_size={k} (dilated extent {ke}) is larger than the padded input {padded} "
                        f"(size {length} + padding {pb}+{pa}) in spatial dim {i}")
                size = (padded - ke) // s + 1
            out.append(size)
        return tuple(out)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """(N, C_out, *out_spatial) for a channels-first input shape (N, C_in, *spatial)."""
        self.check_input_shape(input_shape)
        return (input_shape[0], self.out_channels, *self.output_spatial(input_shape[2:]))

    def check_input_shape(self, input_shape: Sequence[int]) -> None:
        if len(input_shape) != self.ndim + 2:
            raise ConvSpecError(
                f"input must have shape (N, C, {', '.join('LHW'[-self.ndim:] if self.ndim < 3 else 'DHW')}) "
                f"({self.ndim + 2} dims) for a {self.ndim}D convolution, got {tuple(input_shape)}")
        if input_shape[0] < 0:
            raise ConvSpecError(f"batch size must be >= 0, got {input_shape[0]}")
        if input_shape[1] != self.in_channels:
            raise ConvSpecError(
                f"input has {input_shape[1]} channels but the convolution expects in_channels={self.in_channels}")

    def bind(self, input_shape: Sequence[int]) -> "BoundConv":
        """Resolve the spec against a channels-first input shape: concrete pads and output size."""
        out_shape = self.output_shape(input_shape)
        pads = self.resolve_padding(input_shape[2:])
        return BoundConv(self, int(input_shape[0]), tuple(int(v) for v in input_shape[2:]), out_shape[2:],
                         tuple(p[0] for p in pads), tuple(p[1] for p in pads))

    def replace(self, **changes: Any) -> "ConvSpec":
        """A new validated spec with some fields changed."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fields.update(changes)
        return ConvSpec(**fields)


@dataclass(frozen=True)
class BoundConv:
    """A spec resolved against one input: the plain integers a kernel needs."""

    spec: ConvSpec
    batch: int
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.spec.in_channels, *self.in_spatial)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.spec.out_channels, *self.out_spatial)
