"""ONNX graphs as numbaconv Networks (optional extra ``onnx``).

Supported: Conv and ConvTranspose (explicit pads, every auto_pad, ConvTranspose's output_shape),
BatchNormalization, Relu, Clip, HardSwish, Add (of two tensors of one shape), Concat, Split and Slice (along
the channels), Reshape + Transpose + Reshape (the channel-shuffle pattern), Flatten, Reshape to (N, -1),
MaxPool, AveragePool, GlobalAveragePool (or ReduceMean over the spatial axes), Gemm, Constant, HardSigmoid
times its input (hard-swish before opset 14), and Identity and Dropout (inference: pass-through).
Shape arithmetic (Shape, Gather, Unsqueeze, Squeeze, Cast, Div, Mul, Sub, and Add, Concat or Slice of
constants) is evaluated at load time, as exporters emit it for a dynamic batch.  Anything else is refused
with one error naming every unsupported node, and so is an attribute numbaconv cannot honour (a dilated
pool, a transposed Gemm input): never a silently different result.  Shapes must be static except the batch
dimension; the graph has one input and one output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import GraphBuilder, Tensor
from .spec import ConvSpecError, same_padding

SUPPORTED = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "HardSwish", "Add", "Concat",
             "Split", "Slice", "Reshape", "Transpose", "Flatten", "MaxPool", "AveragePool", "GlobalAveragePool",
             "ReduceMean", "Gemm", "Constant", "Identity", "Dropout", "HardSigmoid")
# Evaluated at load time on constants and static shapes only (what an exporter's shape arithmetic uses).
FOLDED = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Div", "Mul", "Sub")


class UnsupportedOnnxError(ConvSpecError):
    """The graph uses ops numbaconv cannot run; the message lists every such node."""


def load_onnx(model: Any, batch: int = 1, dtype: Any = np.float32):
    """A ``Network`` for an ONNX model (a path, bytes or an ``onnx.ModelProto``), batch size ``batch``."""
    import onnx
    from onnx import numpy_helper

    from .network import Network
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif not hasattr(model, "graph"):  # a path
        model = onnx.load(model)
    graph = model.graph
    unsupported = [_name(n) for n in graph.node if n.op_type not in SUPPORTED + FOLDED]
    if unsupported:
        raise UnsupportedOnnxError(f"unsupported ONNX ops in {len(unsupported)} node(s): {', '.join(unsupported)}; "
                                   f"supported: {', '.join(SUPPORTED)}")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedOnnxError(f"the graph must have exactly one input, got {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise UnsupportedOnnxError(f"the graph must have exactly one output, got {[o.name for o in graph.output]}")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if any(d <= 0 for d in dims[1:]):
        raise UnsupportedOnnxError(f"input {inputs[0].name!r} needs static sizes apart from the batch, got {dims}")
    builder = GraphBuilder(graph.name or "onnx", (batch, *dims[1:]))
    values: dict[str, Any] = {inputs[0].name: builder.input}
    params: dict[str, dict[str, np.ndarray]] = {}
    keep_dims: dict[str, tuple[int, ...]] = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Constant":
            inits[node.output[0]] = _constant_value(node, attrs)
            continue
        if op == "Shape" or (op in FOLDED + ("Add", "Concat", "Slice", "Identity")
                             and all(not n or n in inits for n in node.input)):
            inits[node.output[0]] = _fold(node, attrs, inits, values, keep_dims)
            continue
        if op == "Squeeze" and node.input[0] in keep_dims and _squeezes_spatial(node, attrs, inits, keep_dims):
            values[node.output[0]] = values[node.input[0]]
            continue
        if op == "Mul" and _hard_swish_input(node, values) is not None:
            x = _hard_swish_input(node, values)
            values[node.output[0]] = builder.act(x, "hardswish", name=node.name or None)
            continue
        if op in FOLDED:
            raise UnsupportedOnnxError(f"{_name(node)}: {op} on activations (numbaconv evaluates it only on "
                                       f"constants and shapes)")
        if op in ("Reshape", "Transpose") and isinstance(values.get(node.input[0]), _ShuffleStep):
            values[node.output[0]] = values[node.input[0]].then(node, attrs, inits, builder)
            continue
        x = _tensor(node, 0, values, inits) if node.input else None
        if op == "HardSigmoid":
            if not (np.isclose(attrs.get("alpha", 0.2), 1 / 6) and attrs.get("beta", 0.5) == 0.5):
                raise UnsupportedOnnxError(f"{_name(node)}: HardSigmoid other than hard-swish's (alpha 1/6, beta "
                                           f"0.5), got alpha {attrs.get('alpha', 0.2)}, beta {attrs.get('beta', 0.5)}")
            values[node.output[0]] = _HardSigmoid(x, node)
            continue
        if op in ("Identity", "Dropout"):
            values[node.output[0]] = x
            continue
        if op in ("Conv", "ConvTranspose"):
            weight = _constant(node, 1, inits, "weight")
            bias = _constant(node, 2, inits, "bias") if len(node.input) > 2 and node.input[2] else None
            transposed = op == "ConvTranspose"
            padding, output_padding = _conv_padding(node, attrs, x.shape[2:], weight.shape[2:], transposed)
            groups = attrs.get("group", 1)
            out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
            y = builder.conv(x, out_channels, tuple(weight.shape[2:]), attrs.get("strides", 1), padding,
                             attrs.get("dilations", 1), groups, bias is not None, transposed, output_padding,
                             name=node.name or None)
            params[y.name] = {"weight": weight, **({"bias": bias} if bias is not None else {})}
        elif op == "BatchNormalization":
            y = builder.bn(x, name=node.name or None)
            scale, shift, mean, var = (_constant(node, i, inits, "parameter") for i in range(1, 5))
            params[y.name] = {"scale": scale, "shift": shift, "mean": mean, "var": var,
                              "eps": attrs.get("epsilon", 1e-5)}
        elif op == "Relu":
            y = builder.relu(x, name=node.name or None)
        elif op == "HardSwish":
            y = builder.act(x, "hardswish", name=node.name or None)
        elif op == "Clip":
            low = _scalar(node, 1, inits) if len(node.input) > 1 and node.input[1] else attrs.get("min", -np.inf)
            high = _scalar(node, 2, inits) if len(node.input) > 2 and node.input[2] else attrs.get("max", np.inf)
            y = builder.clip(x, float(low), float(high), name=node.name or None)
        elif op == "Add":
            other = _tensor(node, 1, values, inits)
            if other.shape != x.shape:
                raise UnsupportedOnnxError(f"{_name(node)}: Add needs two tensors of one shape (no broadcasting), "
                                           f"got {x.shape} and {other.shape}")
            y = builder.add(x, other, name=node.name or None)
        elif op == "Concat":
            if attrs.get("axis") not in (1, 1 - len(x.shape)):
                raise UnsupportedOnnxError(f"{_name(node)}: Concat only along channels (axis 1), "
                                           f"got {attrs.get('axis')}")
            y = builder.concat([_tensor(node, i, values, inits) for i in range(len(node.input))],
                               name=node.name or None)
        elif op in ("Split", "Slice"):
            for output, (start, stop) in zip(node.output, _channel_ranges(node, attrs, inits, x)):
                values[output] = builder.split(x, start, stop, name=f"{node.name or output}:{start}") \
                    if (start, stop) != (0, x.channels) else x
            continue
        elif op == "Reshape":
            onnx_shape = keep_dims.get(node.input[0], x.shape)
            shape = _reshaped(node, _constant(node, 1, inits, "shape"), onnx_shape)
            nd = len(x.shape) - 2
            if shape in (x.shape, onnx_shape):
                values[node.output[0]] = x
                if shape == onnx_shape != x.shape:
                    keep_dims[node.output[0]] = onnx_shape
                continue
            if len(shape) == 2 and shape[1] == math.prod(x.shape[1:]):
                y = builder.flatten(x, name=node.name or None)
            elif len(shape) == nd + 3 and shape[0] == x.shape[0] and shape[3:] == x.shape[2:] and shape[1] > 1:
                values[node.output[0]] = _ShuffleStep(x, shape[1], "split", node)
                continue
            else:
                raise UnsupportedOnnxError(f"{_name(node)}: Reshape of {onnx_shape} to {shape} (only flattening and "
                                           f"the channel shuffle pattern are supported)")
        elif op == "Transpose":
            raise UnsupportedOnnxError(f"{_name(node)}: Transpose outside the channel shuffle pattern")
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise UnsupportedOnnxError(f"{_name(node)}: Flatten only with axis 1")
            y = builder.flatten(x, name=node.name or None)
        elif op in ("MaxPool", "AveragePool"):
            kernel = tuple(attrs["kernel_shape"])
            if any(d != 1 for d in attrs.get("dilations", [1])):
                raise UnsupportedOnnxError(f"{_name(node)}: {op} with dilations {attrs['dilations']} (only 1)")
            if len(node.output) > 1 and node.output[1]:
                raise UnsupportedOnnxError(f"{_name(node)}: MaxPool's Indices output")
            stride = tuple(attrs.get("strides", [1] * len(kernel)))
            padding = _padding(node, attrs, x.shape[2:], kernel, stride, (1,) * len(kernel))
            if op == "MaxPool":
                y = builder.maxpool(x, kernel, stride, padding, bool(attrs.get("ceil_mode", 0)), name=node.name or None)
            else:
                y = builder.avgpool(x, kernel, stride, padding, bool(attrs.get("ceil_mode", 0)),
                                    bool(attrs.get("count_include_pad", 0)), name=node.name or None)
        elif op in ("GlobalAveragePool", "ReduceMean"):
            if op == "ReduceMean":
                axes = _axes(node, attrs, inits)
                if axes is None or sorted(a % len(x.shape) for a in axes) != list(range(2, len(x.shape))):
                    raise UnsupportedOnnxError(f"{_name(node)}: ReduceMean only over the spatial axes "
                                               f"{list(range(2, len(x.shape)))}, got {axes}")
            # ONNX keeps (N, C, 1, 1); numbaconv's (N, C) flattens the same, and Shape reports ONNX's
            y = builder.global_avgpool(x, name=node.name or None)
            if op == "GlobalAveragePool" or attrs.get("keepdims", 1):
                keep_dims[node.output[0]] = (*x.shape[:2], *(1,) * (len(x.shape) - 2))
        elif op == "Gemm":
            if attrs.get("transA", 0):
                raise UnsupportedOnnxError(f"{_name(node)}: Gemm with transA=1 (its input is the activations)")
            weight = _constant(node, 1, inits, "weight") * attrs.get("alpha", 1.0)
            weight = weight if attrs.get("transB", 0) else weight.T
            bias = _constant(node, 2, inits, "bias") if len(node.input) > 2 and node.input[2] else None
            if bias is not None:
                if bias.size not in (1, weight.shape[0]):
                    raise UnsupportedOnnxError(f"{_name(node)}: Gemm's C must be one value per output feature "
                                               f"({weight.shape[0]}), got shape {bias.shape}")
                bias = np.broadcast_to(bias.reshape(-1) * attrs.get("beta", 1.0), (weight.shape[0],))
            y = builder.linear(x, weight.shape[0], bias is not None, name=node.name or None)
            params[y.name] = {"weight": weight, **({"bias": bias} if bias is not None else {})}
        values[node.output[0]] = y
    if graph.output[0].name not in values:
        raise UnsupportedOnnxError(f"the graph's output {graph.output[0].name!r} is a constant, not computed from "
                                   f"its input")
    output = values[graph.output[0].name]
    if isinstance(output, _PARTIAL):
        output.refuse()
    return Network(builder.build(output), params, dtype)


def _name(node) -> str:
    return f"{node.name or node.output[0]} ({node.op_type})"


def _tensor(node, position: int, values: dict, inits: dict) -> Tensor:
    """The activation tensor feeding ``node.input[position]``."""
    name = node.input[position]
    if isinstance(values.get(name), _PARTIAL):
        values[name].refuse()
    if name in values:
        return values[name]
    what = "a constant" if name in inits else "not computed by any earlier node"
    raise UnsupportedOnnxError(f"{_name(node)}: input {name!r} is {what}; numbaconv needs an activation tensor "
                               f"there")


def _constant(node, position: int, inits: dict, role: str) -> np.ndarray:
    """The initializer (or Constant) feeding ``node.input[position]``."""
    name = node.input[position]
    if name not in inits:
        raise UnsupportedOnnxError(f"{_name(node)}: its {role} {name!r} must be an initializer or a Constant, "
                                   f"not computed at run time")
    return inits[name]


def _scalar(node, position: int, inits: dict) -> float:
    value = _constant(node, position, inits, "bound")
    if value.size != 1:
        raise UnsupportedOnnxError(f"{_name(node)}: expected one value, got shape {value.shape}")
    return float(value.reshape(-1)[0])


def _constant_value(node, attrs: dict) -> np.ndarray:
    """The value of a Constant node, whichever attribute holds it."""
    from onnx import numpy_helper
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise UnsupportedOnnxError(f"{_name(node)}: a Constant holding {sorted(attrs)} (only dense values)")


def _auto_pad(attrs: dict) -> str:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    return auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad


def _axes(node, attrs: dict, inits: dict) -> list[int] | None:
    """A Squeeze/Unsqueeze/ReduceMean node's axes: an attribute before opsets 13/18, an input after."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(node.input) > 1 and node.input[1]:
        return _constant(node, 1, inits, "axes").reshape(-1).tolist()
    return None


def _padding(node, attrs: dict, in_spatial, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """Per-dim (before, after) padding of a Conv or pool from ``pads`` or ``auto_pad``.

    SAME_UPPER and SAME_LOWER give ceil(L / s) outputs; an odd total goes after (UPPER) or before (LOWER).
    """
    nd = len(kernel)
    auto_pad = _auto_pad(attrs)
    if auto_pad == "VALID":
        return ((0, 0),) * nd
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        return same_padding(in_spatial, stride, effective, odd_after=auto_pad == "SAME_UPPER")
    if auto_pad != "NOTSET":
        raise UnsupportedOnnxError(f"{_name(node)}: auto_pad {auto_pad!r}")
    pads = list(attrs.get("pads", [0] * 2 * nd))
    return tuple((pads[i], pads[i + nd]) for i in range(nd))


def _conv_padding(node, attrs: dict, in_spatial, kernel, transposed: bool):
    """(padding pairs, output_padding) of a Conv or ConvTranspose node.

    ConvTranspose with ``output_shape`` or a SAME ``auto_pad`` pads by the total that gives that shape (SAME:
    L * s), as onnxruntime does: an odd element goes after for SAME_UPPER, before otherwise; an
    ``output_shape`` beyond the unpadded output becomes output padding, while SAME never grows it.
    """
    nd = len(kernel)
    stride = tuple(attrs.get("strides", [1] * nd))
    dilation = tuple(attrs.get("dilations", [1] * nd))
    if not transposed:
        return _padding(node, attrs, in_spatial, kernel, stride, dilation), 0
    output_padding = list(attrs.get("output_padding", [0] * nd))
    auto_pad = _auto_pad(attrs)
    target = list(attrs.get("output_shape", []))[-nd:]
    grow = bool(target)
    if not target and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [length * s for length, s in zip(in_spatial, stride)]
    if not target:
        return _padding(node, attrs, in_spatial, kernel, stride, dilation), tuple(output_padding)
    pairs = []
    for i, (length, k, s, d, size) in enumerate(zip(in_spatial, kernel, stride, dilation, target)):
        total = s * (length - 1) + output_padding[i] + d * (k - 1) + 1 - size
        if total < 0:
            output_padding[i] -= total if grow else 0
            total = 0
        small, large = total // 2, total - total // 2
        pairs.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    return tuple(pairs), tuple(output_padding)


def _squeezes_spatial(node, attrs: dict, inits: dict, keep_dims: dict) -> bool:
    """True when a Squeeze drops exactly the unit spatial dims that a GlobalAveragePool kept."""
    rank = len(keep_dims[node.input[0]])
    axes = _axes(node, attrs, inits)
    return axes is None or sorted(a % rank for a in axes) == list(range(2, rank))


def _reshaped(node, shape: np.ndarray, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX Reshape's target with its 0s (copy that dim) and -1 (the rest) resolved against ``in_shape``."""
    dims = [in_shape[i] if d == 0 else int(d) for i, d in enumerate(shape.reshape(-1).tolist())]
    if dims.count(-1) == 1:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = math.prod(in_shape) // known if known else 0
    if any(d < 0 for d in dims) or math.prod(dims) != math.prod(in_shape):
        raise UnsupportedOnnxError(f"{_name(node)}: cannot reshape {in_shape} to {shape.tolist()}")
    return tuple(dims)


def _channel_ranges(node, attrs: dict, inits: dict, x: Tensor) -> list[tuple[int, int]]:
    """[start, stop) channel ranges of a Split or a Slice; refused unless along the channels with step 1."""
    rank = len(x.shape)
    if node.op_type == "Split":
        axis = attrs.get("axis", 0)
        if len(node.input) > 1 and node.input[1]:
            sizes = _constant(node, 1, inits, "split").tolist()
        elif "split" in attrs:
            sizes = list(attrs["split"])
        else:
            parts = attrs.get("num_outputs", len(node.output))
            size = -(-x.channels // parts)
            sizes = [min(size, x.channels - i * size) for i in range(parts)]
        bounds = np.cumsum([0, *sizes]).tolist()
        ranges = list(zip(bounds[:-1], bounds[1:]))
        ok = axis % rank == 1 and bounds[-1] == x.channels
    else:
        starts, ends = (_constant(node, i, inits, what).tolist() for i, what in ((1, "starts"), (2, "ends")))
        axes = _constant(node, 3, inits, "axes").tolist() if len(node.input) > 3 and node.input[3] else [0]
        steps = _constant(node, 4, inits, "steps").tolist() if len(node.input) > 4 and node.input[4] else [1]
        start, stop, _ = slice(starts[0], ends[0]).indices(x.channels)
        ranges = [(start, stop)]
        ok = len(starts) == 1 and axes[0] % rank == 1 and steps == [1] and start < stop
    if not ok:
        raise UnsupportedOnnxError(f"{_name(node)}: {node.op_type} only along the channels (axis 1) with step 1")
    return ranges


@dataclass
class _ShuffleStep:
    """A channel shuffle under way: Reshape (N, g, C/g, ...) -> Transpose (0, 2, 1, ...) -> Reshape back.

    Its steps may be interleaved with the Constant or Shape nodes that compute the shapes, so it follows the
    data, not the node order; any other use of a partial step is refused.
    """
    x: Tensor
    groups: int
    stage: str  # "split", then "transposed"
    node: Any

    def then(self, node, attrs: dict, inits: dict, builder: GraphBuilder):
        nd = len(self.x.shape) - 2
        if node.op_type == "Transpose" and self.stage == "split":
            if list(attrs.get("perm", [])) == [0, 2, 1, *range(3, nd + 3)]:
                return _ShuffleStep(self.x, self.groups, "transposed", node)
        elif node.op_type == "Reshape" and self.stage == "transposed":
            channels = self.x.channels
            middle = (self.x.shape[0], channels // self.groups, self.groups, *self.x.shape[2:])
            if _reshaped(node, _constant(node, 1, inits, "shape"), middle) == self.x.shape:
                return builder.shuffle(self.x, self.groups, name=node.name or None)
        self.node = node
        self.refuse()

    def refuse(self):
        raise UnsupportedOnnxError(f"{_name(self.node)}: a Reshape/Transpose outside the channel shuffle pattern "
                                   f"(N, g, C/g, ...) -> (0, 2, 1, ...) -> (N, C, ...)")


@dataclass
class _HardSigmoid:
    """HardSigmoid(x) waiting for the Mul by x that makes it hard-swish; any other use is refused."""
    x: Tensor
    node: Any

    def refuse(self):
        raise UnsupportedOnnxError(f"{_name(self.node)}: HardSigmoid only as hard-swish, x * HardSigmoid(x)")


# Values standing for the first steps of a pattern whose last step makes a graph op; any other use is refused.
_PARTIAL = (_ShuffleStep, _HardSigmoid)


def _hard_swish_input(node, values: dict) -> Tensor | None:
    """x when ``node`` is Mul(x, HardSigmoid(x)) in either order."""
    a, b = (values.get(name) for name in node.input)
    for left, right in ((a, b), (b, a)):
        if isinstance(right, _HardSigmoid) and right.x is left:
            return left
    return None


def _fold(node, attrs: dict, inits: dict, values: dict, keep_dims: dict) -> np.ndarray:
    """Evaluate a shape-arithmetic node on constants (Shape: on a tensor's static shape)."""
    from onnx import helper
    op = node.op_type
    if op == "Shape":
        name = node.input[0]
        if name in inits:
            shape = inits[name].shape
        else:
            shape = keep_dims.get(name) or _tensor(node, 0, values, inits).shape
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return np.array(shape[start:end], np.int64)
    args = [inits[n] if n else None for n in node.input]
    if op in ("Identity", "Cast"):
        return args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"])) if op == "Cast" else args[0]
    if op == "Gather":
        return np.take(args[0], args[1], axis=attrs.get("axis", 0))
    if op in ("Unsqueeze", "Squeeze"):
        axes = _axes(node, attrs, inits)
        if op == "Squeeze":
            return np.squeeze(args[0], axis=None if axes is None else tuple(axes))
        out = args[0]
        for axis in sorted(a % (out.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, axis)
        return out
    if op == "Concat":
        return np.concatenate(args, axis=attrs.get("axis", 0))
    if op == "Slice":
        starts, ends = args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
        index = [slice(None)] * args[0].ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return args[0][tuple(index)]
    a, b = args
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    if a.dtype.kind in "iu":  # Div: integers truncate toward zero
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)
    return a / b
