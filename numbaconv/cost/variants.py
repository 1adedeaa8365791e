"""The convolution family as small graphs, so that one layer's alternatives can be costed side by side.

Each variant maps the same request (input shape, output channels, kernel, stride, padding, dilation,
groups, multiplier) to the ops that implement it.  Composite variants have several stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..graph import Graph, GraphBuilder, Tensor
from ..spec import ConvSpecError, normalize_ints, normalize_padding


@dataclass(frozen=True)
class LayerRequest:
    """What the user asked for, before a variant decides how to build it."""

    input_shape: tuple[int, ...]
    out_channels: int
    kernel: Any = 3
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    multiplier: int = 1
    bias: bool = False
    output_padding: Any = 0

    @property
    def ndim(self) -> int:
        return len(self.input_shape) - 2

    @property
    def in_channels(self) -> int:
        return self.input_shape[1]


def _standard(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, r.dilation, bias=r.bias, name="conv")


def _dilated(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    dilation = normalize_ints("dilation", r.dilation, r.ndim, 1)
    if all(d == 1 for d in dilation):
        raise ConvSpecError("dilated needs --dilation > 1")
    g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, dilation, bias=r.bias, name="dilated")


def _pointwise(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    g.conv(x, r.out_channels, 1, r.stride, 0, bias=r.bias, name="pointwise")


def _depthwise(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    if r.out_channels % r.in_channels:
        raise ConvSpecError(f"out_channels={r.out_channels} is not a multiple of in_channels={r.in_channels}: "
                            f"depthwise makes in_channels * multiplier outputs")
    g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, r.dilation, groups=r.in_channels, bias=r.bias, name="depthwise")


def _need_groups(r: LayerRequest, variant: str) -> None:
    if r.groups < 2:
        raise ConvSpecError(f"{variant} needs --groups >= 2, got groups={r.groups}")


def _grouped(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    _need_groups(r, "grouped")
    g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, r.dilation, r.groups, r.bias, name="grouped")


def _shuffled_grouped(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    _need_groups(r, "shuffled-grouped")
    y = g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, r.dilation, r.groups, r.bias, name="grouped")
    g.shuffle(y, r.groups, name="shuffle")


def _pointwise_grouped(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    _need_groups(r, "pointwise-grouped")
    g.conv(x, r.out_channels, 1, r.stride, 0, groups=r.groups, bias=r.bias, name="pointwise_grouped")


def _depthwise_separable(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    mid = r.in_channels * r.multiplier
    y = g.conv(x, mid, r.kernel, r.stride, r.padding, r.dilation, groups=r.in_channels, bias=r.bias,
               name="depthwise")
    g.conv(y, r.out_channels, 1, bias=r.bias, padding=0, name="pointwise")


def _per_dim(r: LayerRequest, dim: int) -> tuple[tuple, tuple, Any, tuple]:
    """Kernel, stride, padding and dilation of the 1D factor acting on spatial dim ``dim`` only."""
    kernel = normalize_ints("kernel", r.kernel, r.ndim, 1)
    stride = normalize_ints("stride", r.stride, r.ndim, 1)
    dilation = normalize_ints("dilation", r.dilation, r.ndim, 1)
    padding = normalize_padding(r.padding, r.ndim)
    only = lambda values, rest: tuple(v if i == dim else rest for i, v in enumerate(values))  # noqa: E731
    pad = "same" if padding == "same" else only(padding, (0, 0))
    return only(kernel, 1), only(stride, 1), pad, only(dilation, 1)


def _spatially_separable(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    """One 1D factor per spatial dim; the intermediate width is min(C_in, C_out), the cheaper side."""
    if r.ndim < 2:
        raise ConvSpecError("spatially-separable needs at least 2 spatial dims")
    y, mid = x, min(r.in_channels, r.out_channels)
    for dim in range(r.ndim):
        k, s, p, d = _per_dim(r, dim)
        last = dim == r.ndim - 1
        y = g.conv(y, r.out_channels if last else mid, k, s, p, d, bias=r.bias and last, name=f"factor{dim}")


def _flattened(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    y = g.conv(x, r.out_channels, 1, 1, 0, bias=False, name="lateral")
    for dim in range(r.ndim):
        k, s, p, d = _per_dim(r, dim)
        last = dim == r.ndim - 1
        y = g.conv(y, r.out_channels, k, s, p, d, groups=r.out_channels, bias=r.bias and last,
                   name=f"{'vertical' if dim == r.ndim - 2 else 'horizontal' if last else 'depth'}")


def _transposed(g: GraphBuilder, x: Tensor, r: LayerRequest) -> None:
    g.conv(x, r.out_channels, r.kernel, r.stride, r.padding, r.dilation, r.groups, r.bias, transposed=True,
           output_padding=r.output_padding, name="transposed")


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    build: Callable[[GraphBuilder, Tensor, LayerRequest], None]


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("standard", "dense convolution, C_in -> C_out", _standard),
    Variant("pointwise", "1x1 convolution, C_in -> C_out (kernel ignored)", _pointwise),
    Variant("depthwise", "one k-filter per input channel, times the channel multiplier", _depthwise),
    Variant("grouped", "groups independent convolutions over C_in/g channels each", _grouped),
    Variant("shuffled-grouped", "grouped convolution, then ShuffleNet channel shuffle", _shuffled_grouped),
    Variant("pointwise-grouped", "grouped 1x1 convolution", _pointwise_grouped),
    Variant("depthwise-separable", "depthwise k (multiplier m), then pointwise C_in*m -> C_out", _depthwise_separable),
    Variant("spatially-separable", "k x 1 (C_in -> min(C_in, C_out)), then 1 x k (-> C_out)", _spatially_separable),
    Variant("flattened", "lateral 1x1, vertical k x 1, horizontal 1 x k per channel (Jin et al. 2014)", _flattened),
    Variant("transposed", "transposed convolution (counted over input positions)", _transposed),
    Variant("dilated", "standard convolution with dilation > 1", _dilated),
]}


def build_variant(name: str, request: LayerRequest) -> Graph:
    """The graph of ``name`` for ``request``; raises ConvSpecError if the variant does not apply."""
    try:
        variant = VARIANTS[name]
    except KeyError:
        raise ConvSpecError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from None
    if len(request.input_shape) not in (3, 4, 5):
        raise ConvSpecError(f"input must be (N, C, *spatial) with 1 to 3 spatial dims, got {request.input_shape}")
    g = GraphBuilder(name, request.input_shape)
    variant.build(g, g.input, request)
    return g.build()


def applicable_variants(request: LayerRequest) -> list[str]:
    """Variants that make sense for this request, in catalogue order (compare's rows)."""
    names = ["standard", "pointwise", "depthwise-separable"]
    if request.out_channels % request.in_channels == 0:
        names.insert(2, "depthwise")
    if request.groups > 1:
        names += ["grouped", "shuffled-grouped", "pointwise-grouped"]
    if request.ndim >= 2:
        names += ["spatially-separable", "flattened"]
    else:
        names += ["flattened"]
    if any(d > 1 for d in normalize_ints("dilation", request.dilation, request.ndim, 1)):
        names.append("dilated")
    return names


def receptive_extent(graph: Graph) -> tuple[int, ...]:
    """Receptive field of the graph's output along each spatial dim (a chain of convolutions)."""
    ndim = len(graph.input.shape) - 2
    r, jump = [1] * ndim, [1] * ndim
    for node in graph.nodes:
        if node.op != "conv":
            continue
        spec = node.attrs["spec"]
        for i in range(ndim):
            r[i] += (spec.effective_kernel[i] - 1) * jump[i]
            jump[i] *= spec.stride[i]
    return tuple(r)
