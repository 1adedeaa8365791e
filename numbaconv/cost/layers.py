"""Cost of one op: MACs, FLOPs, parameters, bytes moved.  Pure functions of shapes; no Numba, no NumPy.

Counting convention (stated once, used everywhere):
- one multiply-accumulate (MAC) is one multiply and one add; FLOPs = 2 * MACs, plus one add per output
  element for a bias.  The papers' "mult-adds" (and ShuffleNet's "FLOPs") are MACs here;
- a convolution costs C_out * (C_in / groups) * prod(kernel) MACs per output position: grouped and
  depthwise convolutions divide by the groups exactly once;
- a transposed convolution is counted over its *input* positions: C_in * (C_out / groups) * prod(kernel)
  MACs each (every input value is scattered through the whole kernel);
- BatchNorm (inference, unfolded): 2 FLOPs per element; ReLU/ReLU6: 1; hard-swish: 4; add: 1 per
  element; max pooling: prod(kernel)-1 comparisons per output, average pooling prod(kernel) (adds and one
  multiply); channel shuffle, split, concat and flatten: no FLOPs, only bytes moved;
- parameters as PyTorch counts them: weights, biases, BatchNorm's scale and shift (not its running
  statistics);
- bytes: each input, the weights and the output moved once, at the given dtype.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from ..graph import MAC_OPS, Node
from ..spec import ConvSpec

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1}

_ELEMENTWISE_FLOPS = {"bn": 2, "relu": 1, "relu6": 1, "clip": 2, "hardswish": 4, "add": 1}


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}") from None


@dataclass(frozen=True)
class LayerCost:
    """The cost of one op on one input.  ``flops`` of a conv/linear op include its bias adds."""

    name: str
    op: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    flops: int
    weight_params: int
    bias_params: int
    bn_params: int
    input_bytes: int
    weight_bytes: int
    output_bytes: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    groups: int = 1

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params + self.bn_params

    @property
    def bytes(self) -> int:
        return self.input_bytes + self.weight_bytes + self.output_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (arithmetic intensity)."""
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def counts_macs(self) -> bool:
        return self.op in MAC_OPS

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(params=self.params, bytes=self.bytes, intensity=round(self.intensity, 3))
        return d


def conv_macs(spec: ConvSpec, input_shape: Sequence[int]) -> int:
    """MACs of a convolution on a channels-first input (see the module's convention)."""
    out_shape = spec.output_shape(input_shape)
    # C_out * (C_in/g) == C_in * (C_out/g): the same weights touched per position either way.
    weights_per_position = math.prod(spec.kernel_size) * spec.in_channels * spec.out_channels // spec.groups
    positions = input_shape[2:] if spec.transposed else out_shape[2:]
    return input_shape[0] * math.prod(positions) * weights_per_position


def conv_cost(spec: ConvSpec, input_shape: Sequence[int], dtype: str = "float32", name: str = "conv") -> LayerCost:
    """Cost of one convolution on a channels-first input shape (N, C_in, *spatial)."""
    size = dtype_bytes(dtype)
    input_shape = tuple(input_shape)
    out_shape = spec.output_shape(input_shape)
    macs = conv_macs(spec, input_shape)
    bias = spec.out_channels if spec.bias else 0
    bias_adds = math.prod(out_shape) if spec.bias else 0
    weights = math.prod(spec.weight_shape)
    return LayerCost(name, "conv", input_shape, out_shape, macs, 2 * macs + bias_adds, weights, bias, 0,
                     math.prod(input_shape) * size, (weights + bias) * size, math.prod(out_shape) * size,
                     spec.kernel_size, spec.stride, spec.groups)


def node_cost(node: Node, dtype: str = "float32") -> LayerCost:
    """Cost of one graph node."""
    if node.op == "conv":
        return conv_cost(node.attrs["spec"], node.input_shapes[0], dtype, node.name)
    size = dtype_bytes(dtype)
    out_elems = math.prod(node.output_shape)
    in_elems = sum(math.prod(s) for s in node.input_shapes)
    macs = weights = bias = bn = 0
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    if node.op == "linear":
        n, fin, fout = node.input_shapes[0][0], node.attrs["in_features"], node.attrs["out_features"]
        macs, weights, bias = n * fin * fout, fin * fout, fout if node.attrs["bias"] else 0
        flops = 2 * macs + (n * fout if bias else 0)
    elif node.op == "bn":
        bn = 2 * node.output_shape[1]
        flops = 2 * out_elems
    elif node.op in _ELEMENTWISE_FLOPS:
        flops = _ELEMENTWISE_FLOPS[node.op] * out_elems
    elif node.op in ("maxpool", "avgpool"):
        kernel, stride = node.attrs["kernel"], node.attrs["stride"]
        window = math.prod(kernel)
        flops = (window - 1 if node.op == "maxpool" else window) * out_elems
    elif node.op == "global_avgpool":
        flops = in_elems
    elif node.op in ("shuffle", "split", "concat", "flatten"):
        flops = 0
    else:
        raise ValueError(f"no cost rule for op {node.op!r}")
    return LayerCost(node.name, node.op, node.input_shapes[0], node.output_shape, macs, flops, weights, bias, bn,
                     in_elems * size, (weights + bias + bn) * size, out_elems * size, kernel, stride)


def receptive_field(kernels: Sequence[int], strides: Sequence[int], dilations: Sequence[int] | None = None) -> list[dict]:
    """Receptive field after each layer of a stack, per spatial dim.

    r_l = r_{l-1} + (k_l - 1) * j_{l-1}, j_l = j_{l-1} * s_l, r_0 = 1, j_0 = 1, where dilation is folded
    into the kernel as k = d*(k-1)+1; so r = sum_l (k_l - 1) * prod_{i<l} s_i + 1.
    """
    dilations = list(dilations) if dilations is not None else [1] * len(kernels)
    if not (len(kernels) == len(strides) == len(dilations)):
        raise ValueError(f"kernel, stride and dilation need one entry per layer, got {len(kernels)}, "
                         f"{len(strides)} and {len(dilations)}")
    rows, r, jump = [], 1, 1
    for i, (k, s, d) in enumerate(zip(kernels, strides, dilations)):
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f"layer {i + 1}: kernel, stride and dilation must be >= 1, got {k}, {s}, {d}")
        k_eff = d * (k - 1) + 1
        r += (k_eff - 1) * jump
        jump *= s
        rows.append({"layer": i + 1, "kernel": k, "stride": s, "dilation": d, "effective_kernel": k_eff,
                     "receptive_field": r, "jump": jump})
    return rows
