"""ONNX graphs as numbaconv Networks (optional extra ``onnx``).

Supported: Conv, ConvTranspose, BatchNormalization, Relu, Clip, HardSwish, Add, Concat (channels),
Reshape + Transpose + Reshape (the channel-shuffle pattern), Flatten, Reshape to (N, -1), MaxPool,
AveragePool, GlobalAveragePool, Gemm.  Anything else is refused with one error naming every unsupported
node.  Shapes must be static except the batch dimension.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .graph import GraphBuilder, Tensor
from .spec import ConvSpecError

SUPPORTED = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "HardSwish", "Add", "Concat",
             "Reshape", "Transpose", "Flatten", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm")


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
    unsupported = [f"{n.name or n.output[0]} ({n.op_type})" for n in graph.node if n.op_type not in SUPPORTED]
    if unsupported:
        raise UnsupportedOnnxError(f"unsupported ONNX ops in {len(unsupported)} node(s): {', '.join(unsupported)}; "
                                   f"supported: {', '.join(SUPPORTED)}")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedOnnxError(f"the graph must have exactly one input, got {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
    if any(d <= 0 for d in dims[1:]):
        raise UnsupportedOnnxError(f"input {inputs[0].name!r} needs static sizes apart from the batch, got {dims}")
    builder = GraphBuilder(graph.name or "onnx", (batch, *dims[1:]))
    values: dict[str, Tensor] = {inputs[0].name: builder.input}
    params: dict[str, dict[str, np.ndarray]] = {}
    nodes = list(graph.node)
    skip: set[int] = set()
    for index, node in enumerate(nodes):
        if index in skip:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        x = values.get(node.input[0]) if node.input else None
        if op in ("Conv", "ConvTranspose"):
            weight = inits[node.input[1]]
            bias = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            nd = weight.ndim - 2
            pads = attrs.get("pads", [0] * 2 * nd)
            auto_pad = attrs.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
            padding: Any = tuple((pads[i], pads[i + nd]) for i in range(nd))
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                padding = "same"
            elif auto_pad == "VALID":
                padding = 0
            groups = attrs.get("group", 1)
            transposed = op == "ConvTranspose"
            out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
            if transposed and any(b != a for b, a in padding):
                raise UnsupportedOnnxError(f"{node.name}: asymmetric ConvTranspose pads {pads}")
            y = builder.conv(x, out_channels, tuple(weight.shape[2:]), attrs.get("strides", 1),
                             tuple(b for b, _ in padding) if transposed else padding, attrs.get("dilations", 1),
                             groups, bias is not None, transposed, attrs.get("output_padding", 0),
                             name=node.name or None)
            params[y.name] = {"weight": weight, **({"bias": bias} if bias is not None else {})}
        elif op == "BatchNormalization":
            y = builder.bn(x, name=node.name or None)
            scale, shift, mean, var = (inits[n] for n in node.input[1:5])
            params[y.name] = {"scale": scale, "shift": shift, "mean": mean, "var": var,
                              "eps": attrs.get("epsilon", 1e-5)}
        elif op == "Relu":
            y = builder.relu(x, name=node.name or None)
        elif op == "HardSwish":
            y = builder.act(x, "hardswish", name=node.name or None)
        elif op == "Clip":
            low = float(inits[node.input[1]]) if len(node.input) > 1 and node.input[1] else attrs.get("min", -np.inf)
            high = float(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else attrs.get("max", np.inf)
            y = builder.clip(x, float(low), float(high), name=node.name or None)
        elif op == "Add":
            y = builder.add(x, values[node.input[1]], name=node.name or None)
        elif op == "Concat":
            if attrs.get("axis") != 1:
                raise UnsupportedOnnxError(f"{node.name}: Concat only along channels (axis 1), got {attrs.get('axis')}")
            y = builder.concat([values[n] for n in node.input], name=node.name or None)
        elif op == "Reshape":
            shape = inits[node.input[1]].tolist()
            groups = _shuffle_groups(nodes, index, inits, x)
            if groups:
                skip.update({index + 1, index + 2})
                node = nodes[index + 2]
                y = builder.shuffle(x, groups, name=node.name or None)
            elif len(shape) == 2 and shape[1] in (-1, int(np.prod(x.shape[1:]))):
                y = builder.flatten(x, name=node.name or None)
            else:
                raise UnsupportedOnnxError(f"{node.name}: Reshape to {shape} (only flattening and the channel "
                                           f"shuffle pattern are supported)")
        elif op == "Transpose":
            raise UnsupportedOnnxError(f"{node.name}: Transpose outside the channel shuffle pattern")
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise UnsupportedOnnxError(f"{node.name}: Flatten only with axis 1")
            y = builder.flatten(x, name=node.name or None)
        elif op in ("MaxPool", "AveragePool"):
            nd = len(attrs["kernel_shape"])
            pads = attrs.get("pads", [0] * 2 * nd)
            padding = tuple((pads[i], pads[i + nd]) for i in range(nd))
            if op == "MaxPool":
                y = builder.maxpool(x, tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1] * nd)), padding,
                                    bool(attrs.get("ceil_mode", 0)), name=node.name or None)
            else:
                y = builder.avgpool(x, tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1] * nd)), padding,
                                    bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0)),
                                    name=node.name or None)
        elif op == "GlobalAveragePool":
            y = builder.global_avgpool(x, name=node.name or None)
            values[node.output[0]] = y  # ONNX keeps (N, C, 1, 1); numbaconv's (N, C) flattens the same
            continue
        elif op == "Gemm":
            weight = inits[node.input[1]]
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise UnsupportedOnnxError(f"{node.name}: Gemm only with transA=0, alpha=beta=1")
            weight = weight if attrs.get("transB", 0) else weight.T
            bias = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            y = builder.linear(x, weight.shape[0], bias is not None, name=node.name or None)
            params[y.name] = {"weight": weight, **({"bias": bias} if bias is not None else {})}
        values[node.output[0]] = y
    output = values[graph.output[0].name]
    return Network(builder.build(output), params, dtype)


def _shuffle_groups(nodes, index: int, inits: dict, x: Tensor) -> int:
    """g when nodes[index:index+3] are Reshape(N, g, C/g, ...) -> Transpose(0, 2, 1, ...) -> Reshape(back)."""
    if index + 2 >= len(nodes):
        return 0
    first, middle, last = nodes[index:index + 3]
    if middle.op_type != "Transpose" or last.op_type != "Reshape":
        return 0
    if middle.input[0] != first.output[0] or last.input[0] != middle.output[0]:
        return 0
    import onnx
    perm = [a for a in middle.attribute if a.name == "perm"]
    perm = list(onnx.helper.get_attribute_value(perm[0])) if perm else []
    shape = inits[first.input[1]].tolist()
    back = inits[last.input[1]].tolist()
    nd = len(x.shape) - 2
    if len(shape) != nd + 3 or perm != [0, 2, 1] + list(range(3, nd + 3)):
        return 0
    groups = shape[1]
    if groups * shape[2] != x.channels or len(back) != nd + 2:
        return 0
    return groups
