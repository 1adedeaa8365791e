"""A small network description: named tensors flowing through ops, with every shape known.

One definition serves both the cost model (``numbaconv.cost``) and execution, so the two cannot drift.
``GraphBuilder`` records ops on symbolic tensors; shapes are channels-first (N, C, *spatial).  Imports no
Numba and no NumPy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .spec import ConvSpec, ConvSpecError

# Ops whose multiply-accumulates the papers count; the rest are reported apart.
MAC_OPS = ("conv", "linear")
ACTIVATIONS = ("relu", "relu6", "hardswish", "clip")


@dataclass(frozen=True)
class Tensor:
    """A symbolic tensor: the name of the value and its channels-first shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[1]


@dataclass(frozen=True)
class Node:
    """One op: ``output = op(*inputs, **attrs)``.  ``attrs['spec']`` holds a ConvSpec for convolutions."""

    op: str
    name: str
    inputs: tuple[str, ...]
    output: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Graph:
    """Nodes in execution order, the graph input and its outputs."""

    name: str
    input: Tensor
    nodes: list[Node]
    outputs: list[Tensor]

    @property
    def output(self) -> Tensor:
        return self.outputs[-1]


class GraphBuilder:
    """Record a network op by op; each method returns the output ``Tensor``.

    >>> g = GraphBuilder("tiny", (1, 3, 32, 32))
    >>> y = g.conv_bn_act(g.input, 16, 3, stride=2)
    >>> y.shape
    (1, 16, 16, 16)
    """

    def __init__(self, name: str, input_shape: Sequence[int]):
        self.name = name
        self.input = Tensor("input", tuple(int(v) for v in input_shape))
        self.nodes: list[Node] = []
        self._counts: dict[str, int] = {}
        self._scope: list[str] = []

    # ---- bookkeeping ----------------------------------------------------------------------------
    def scope(self, name: str) -> "_Scope":
        """Prefix the names of the ops recorded inside ``with g.scope('layer1.0'):``."""
        return _Scope(self, name)

    def _name(self, op: str, name: str | None) -> str:
        base = name or op
        if self._scope:
            base = ".".join(self._scope) + "." + base
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def _add(self, op: str, inputs: Sequence[Tensor], out_shape: Sequence[int], name: str | None = None,
             **attrs: Any) -> Tensor:
        node_name = self._name(op, name)
        out = Tensor(node_name, tuple(int(v) for v in out_shape))
        self.nodes.append(Node(op, node_name, tuple(t.name for t in inputs), out.name,
                               tuple(t.shape for t in inputs), out.shape, attrs))
        return out

    def build(self, *outputs: Tensor) -> Graph:
        outs = list(outputs) if outputs else [Tensor(self.nodes[-1].output, self.nodes[-1].output_shape)]
        return Graph(self.name, self.input, list(self.nodes), outs)

    # ---- ops ------------------------------------------------------------------------------------
    def conv(self, x: Tensor, out_channels: int, kernel: Any, stride: Any = 1, padding: Any = None,
             dilation: Any = 1, groups: int = 1, bias: bool = False, transposed: bool = False,
             output_padding: Any = 0, padding_mode: str = "zeros", name: str | None = None) -> Tensor:
        """Convolution; ``padding=None`` means d*(k-1)//2 per dim (the usual 'keep the size' choice)."""
        ndim = len(x.shape) - 2
        if padding is None:
            ks = kernel if isinstance(kernel, (tuple, list)) else (kernel,) * ndim
            ds = dilation if isinstance(dilation, (tuple, list)) else (dilation,) * ndim
            padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, ds))
        spec = ConvSpec(ndim, x.channels, out_channels, kernel, stride, padding, dilation, groups, bias,
                        padding_mode, transposed, output_padding)
        return self._add("conv", [x], spec.output_shape(x.shape), name, spec=spec)

    def linear(self, x: Tensor, out_features: int, bias: bool = True, name: str | None = None) -> Tensor:
        """Fully connected layer on (N, F) input."""
        if len(x.shape) != 2:
            raise ConvSpecError(f"linear expects a flattened (N, F) input, got {x.shape}")
        return self._add("linear", [x], (x.shape[0], out_features), name, in_features=x.shape[1],
                         out_features=out_features, bias=bias)

    def bn(self, x: Tensor, name: str | None = None) -> Tensor:
        """BatchNorm over channels (inference: a per-channel scale and shift)."""
        return self._add("bn", [x], x.shape, name)

    def act(self, x: Tensor, kind: str | None, name: str | None = None) -> Tensor:
        if kind is None:
            return x
        if kind not in ACTIVATIONS:
            raise ConvSpecError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")
        return self._add(kind, [x], x.shape, name)

    def relu(self, x: Tensor, name: str | None = None) -> Tensor:
        return self.act(x, "relu", name)

    def clip(self, x: Tensor, low: float, high: float, name: str | None = None) -> Tensor:
        """min(max(x, low), high); clip(0, 6) is ReLU6."""
        if (low, high) == (0.0, 6.0):
            return self.act(x, "relu6", name)
        return self._add("clip", [x], x.shape, name, min=low, max=high)

    def conv_bn_act(self, x: Tensor, out_channels: int, kernel: Any, stride: Any = 1, padding: Any = None,
                    groups: int = 1, act: str | None = "relu", dilation: Any = 1, name: str | None = None) -> Tensor:
        """Bias-free convolution, BatchNorm, then an optional activation (the papers' standard unit)."""
        y = self.conv(x, out_channels, kernel, stride, padding, dilation, groups, name=name)
        y = self.bn(y)
        return self.act(y, act)

    def _pool(self, op: str, x: Tensor, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
              name: str | None, **attrs: Any) -> Tensor:
        ndim = len(x.shape) - 2
        stride = kernel if stride is None else stride
        spec = ConvSpec(ndim, x.channels, x.channels, kernel, stride, padding, groups=x.channels)
        out_spatial = []
        for length, (pb, pa), k, s in zip(x.shape[2:], spec.resolve_padding(x.shape[2:]), spec.kernel_size,
                                          spec.stride):
            size = (length + pb + pa - k) / s + 1
            out_spatial.append(math.ceil(size) if ceil_mode else math.floor(size))
        if any(v < 1 for v in out_spatial):
            raise ConvSpecError(f"{op} kernel {spec.kernel_size} is larger than the padded input {x.shape[2:]}")
        return self._add(op, [x], (*x.shape[:2], *out_spatial), name, kernel=spec.kernel_size,
                         stride=spec.stride, padding=spec.resolve_padding(x.shape[2:]), ceil_mode=ceil_mode, **attrs)

    def maxpool(self, x: Tensor, kernel: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                name: str | None = None) -> Tensor:
        return self._pool("maxpool", x, kernel, stride, padding, ceil_mode, name)

    def avgpool(self, x: Tensor, kernel: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                count_include_pad: bool = True, name: str | None = None) -> Tensor:
        """Average pooling; by default padded positions count in the divisor (PyTorch's default)."""
        return self._pool("avgpool", x, kernel, stride, padding, ceil_mode, name,
                          count_include_pad=count_include_pad)

    def global_avgpool(self, x: Tensor, name: str | None = None) -> Tensor:
        """Mean over all spatial positions: (N, C, *spatial) -> (N, C)."""
        return self._add("global_avgpool", [x], x.shape[:2], name)

    def flatten(self, x: Tensor, name: str | None = None) -> Tensor:
        return self._add("flatten", [x], (x.shape[0], math.prod(x.shape[1:])), name)

    def add(self, a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
        if a.shape != b.shape:
            raise ConvSpecError(f"add needs equal shapes, got {a.shape} and {b.shape}")
        return self._add("add", [a, b], a.shape, name)

    def concat(self, tensors: Sequence[Tensor], name: str | None = None) -> Tensor:
        """Concatenate along channels."""
        first = tensors[0].shape
        if any(t.shape[:1] + t.shape[2:] != first[:1] + first[2:] for t in tensors):
            raise ConvSpecError(f"concat needs equal batch and spatial sizes, got {[t.shape for t in tensors]}")
        channels = sum(t.channels for t in tensors)
        return self._add("concat", list(tensors), (first[0], channels, *first[2:]), name)

    def shuffle(self, x: Tensor, groups: int, name: str | None = None) -> Tensor:
        """ShuffleNet channel shuffle: view (N, g, C/g, ...), swap g and C/g, flatten back."""
        if x.channels % groups:
            raise ConvSpecError(f"channel shuffle: groups={groups} does not divide channels={x.channels}")
        return self._add("shuffle", [x], x.shape, name, groups=groups)

    def split(self, x: Tensor, start: int, stop: int, name: str | None = None) -> Tensor:
        """Channels [start, stop) of x."""
        if not 0 <= start < stop <= x.channels:
            raise ConvSpecError(f"split [{start}, {stop}) is outside the {x.channels} channels")
        return self._add("split", [x], (x.shape[0], stop - start, *x.shape[2:]), name, start=start, stop=stop)


class _Scope:
    def __init__(self, builder: GraphBuilder, name: str):
        self.builder, self.name = builder, name

    def __enter__(self) -> GraphBuilder:
        self.builder._scope.append(self.name)
        return self.builder

    def __exit__(self, *exc: Any) -> None:
        self.builder._scope.pop()
