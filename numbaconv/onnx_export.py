"""A numbaconv Graph with its parameters as an ONNX model (optional extra ``onnx``), e.g. to run the same
network in onnxruntime.  The inverse of numbaconv.onnx_import for the ops both know."""
from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph


def to_onnx(graph: Graph, params: dict[str, dict[str, Any]], opset: int = 17, ir_version: int = 8):
    """An ``onnx.ModelProto`` computing ``graph`` (channels-first, float32).  ``ir_version`` defaults to 8,
    which every onnxruntime of the last years reads."""
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []

    def init(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    for node in graph.nodes:
        a, name, x, y = node.attrs, node.name, list(node.inputs), node.output
        if node.op == "conv":
            spec, p = a["spec"], params[name]
            pads = spec.resolve_padding(node.input_shapes[0][2:])
            if spec.padding_mode != "zeros":
                raise ValueError(f"{name}: padding_mode {spec.padding_mode!r} has no ONNX Conv equivalent")
            inputs = x + [init(f"{name}.weight", p["weight"])] + ([init(f"{name}.bias", p["bias"])]
                                                                    if p.get("bias") is not None else [])
            extra = {"output_padding": list(spec.output_padding)} if spec.transposed else {}
            nodes.append(helper.make_node("ConvTranspose" if spec.transposed else "Conv", inputs, [y], name=name,
                                          kernel_shape=list(spec.kernel_size), strides=list(spec.stride),
                                          dilations=list(spec.dilation), group=spec.groups,
                                          pads=[b for b, _ in pads] + [e for _, e in pads], **extra))
        elif node.op == "bn":
            p = params[name]
            nodes.append(helper.make_node("BatchNormalization", x + [init(f"{name}.{k}", p[k]) for k in
                                                                     ("scale", "shift", "mean", "var")], [y],
                                          name=name, epsilon=float(p.get("eps", 1e-5))))
        elif node.op == "relu":
            nodes.append(helper.make_node("Relu", x, [y], name=name))
        elif node.op in ("relu6", "clip"):
            low, high = (0.0, 6.0) if node.op == "relu6" else (a["min"], a["max"])
            nodes.append(helper.make_node("Clip", x + [init(f"{name}.min", low), init(f"{name}.max", high)], [y],
                                          name=name))
        elif node.op == "hardswish":
            nodes.append(helper.make_node("HardSwish", x, [y], name=name))
        elif node.op == "add":
            nodes.append(helper.make_node("Add", x, [y], name=name))
        elif node.op == "concat":
            nodes.append(helper.make_node("Concat", x, [y], name=name, axis=1))
        elif node.op == "split":
            nodes.append(helper.make_node("Slice", x + [init(f"{name}.start", [a["start"]], np.int64),
                                                        init(f"{name}.stop", [a["stop"]], np.int64),
                                                        init(f"{name}.axis", [1], np.int64)], [y], name=name))
        elif node.op == "shuffle":
            n, c, *spatial = node.output_shape
            g = a["groups"]
            nodes += [helper.make_node("Reshape", x + [init(f"{name}.s1", [n, g, c // g, *spatial], np.int64)],
                                       [f"{name}.r1"]),
                      helper.make_node("Transpose", [f"{name}.r1"], [f"{name}.t"],
                                       perm=[0, 2, 1] + list(range(3, 3 + len(spatial)))),
                      helper.make_node("Reshape", [f"{name}.t", init(f"{name}.s2", node.output_shape, np.int64)], [y],
                                       name=name)]
        elif node.op in ("maxpool", "avgpool"):
            pads = a["padding"]
            extra = {"count_include_pad": int(a.get("count_include_pad", True))} if node.op == "avgpool" else {}
            nodes.append(helper.make_node("MaxPool" if node.op == "maxpool" else "AveragePool", x, [y], name=name,
                                          kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                                          pads=[b for b, _ in pads] + [e for _, e in pads],
                                          ceil_mode=int(a.get("ceil_mode", False)), **extra))
        elif node.op == "global_avgpool":
            nodes += [helper.make_node("GlobalAveragePool", x, [f"{name}.g"]),
                      helper.make_node("Flatten", [f"{name}.g"], [y], name=name)]
        elif node.op == "flatten":
            nodes.append(helper.make_node("Flatten", x, [y], name=name))
        elif node.op == "linear":
            p = params[name]
            inputs = x + [init(f"{name}.weight", p["weight"])] + ([init(f"{name}.bias", p["bias"])]
                                                                    if p.get("bias") is not None else [])
            nodes.append(helper.make_node("Gemm", inputs, [y], name=name, transB=1))
        else:
            raise ValueError(f"no ONNX export for op {node.op!r}")
    out = graph.output
    onnx_graph = helper.make_graph(
        nodes, graph.name, [helper.make_tensor_value_info(graph.input.name, TensorProto.FLOAT, list(graph.input.shape))],
        [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, list(out.shape))], inits)
    return helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
