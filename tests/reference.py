"""Float64 reference convolutions: obviously correct NumPy, importing no numbaconv kernel.

Convolution: pad with np.pad, then for every kernel tap take the strided window and contract with einsum.
Transposed convolution: its definition, a scatter of every input through every tap, then a crop.
"""
import numpy as np

_NP_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """x (N, C, *S), w (O, C/g, *K); padding: per-dim (before, after) pairs. Returns float64 (N, O, *S_out)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = x.ndim - 2
    stride = _tup(stride, nd)
    dilation = _tup(dilation, nd)
    pads = [(0, 0), (0, 0)] + [tuple(p) for p in padding]
    xp = np.pad(x, pads, mode=_NP_MODES[padding_mode])
    N, C = x.shape[:2]
    O, CG = w.shape[:2]
    K = w.shape[2:]
    out_sizes = [(xp.shape[2 + i] - dilation[i] * (K[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    out = np.zeros((N, O, *out_sizes))
    og = O // groups
    for tap in np.ndindex(*K):
        window = xp[(slice(None), slice(None)) + tuple(
            slice(tap[i] * dilation[i], tap[i] * dilation[i] + (out_sizes[i] - 1) * stride[i] + 1, stride[i])
            for i in range(nd))]
        for g in range(groups):
            xs = window[:, g * CG:(g + 1) * CG]
            ws = w[(slice(g * og, (g + 1) * og), slice(None)) + tap]
            out[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", xs, ws)
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape((1, O) + (1,) * nd)
    return out


def conv_transpose(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """x (N, C, *S), w (C, O/g, *K); padding, output_padding: ints per dim. Returns float64 (N, O, *S_out)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = x.ndim - 2
    stride, padding, output_padding, dilation = (_tup(v, nd) for v in (stride, padding, output_padding, dilation))
    N, C = x.shape[:2]
    og = w.shape[1]
    O = og * groups
    K = w.shape[2:]
    full = [(x.shape[2 + i] - 1) * stride[i] + dilation[i] * (K[i] - 1) + 1 + output_padding[i] for i in range(nd)]
    out = np.zeros((N, O, *full))
    cg = C // groups
    for pos in np.ndindex(*x.shape[2:]):
        for tap in np.ndindex(*K):
            target = tuple(pos[i] * stride[i] + tap[i] * dilation[i] for i in range(nd))
            for g in range(groups):
                contrib = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos] @ w[(slice(g * cg, (g + 1) * cg),
                                                                                  slice(None)) + tap]
                out[(slice(None), slice(g * og, (g + 1) * og)) + target] += contrib
    crop = tuple(slice(padding[i], full[i] - padding[i]) for i in range(nd))
    out = out[(slice(None), slice(None)) + crop]
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape((1, O) + (1,) * nd)
    return out


def channel_shuffle(x, groups):
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def _tup(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def run_graph(graph, params, x):
    """Float64 execution of a numbaconv Graph on channels-first x, op by op, with no folding or fusion."""
    values = {graph.input.name: np.asarray(x, np.float64)}
    for node in graph.nodes:
        a = node.attrs
        xs = [values[name] for name in node.inputs]
        x0 = xs[0]
        if node.op == "conv":
            spec, p = a["spec"], params[node.name]
            pads = spec.resolve_padding(x0.shape[2:])
            if spec.transposed:
                y = conv_transpose(x0, p["weight"], p.get("bias"), spec.stride, [b for b, _ in pads],
                                   spec.output_padding, spec.groups, spec.dilation)
            else:
                y = conv(x0, p["weight"], p.get("bias"), spec.stride, pads, spec.dilation, spec.groups,
                         spec.padding_mode)
        elif node.op == "bn":
            p = params[node.name]
            shape = (1, -1) + (1,) * (x0.ndim - 2)
            y = ((x0 - np.reshape(p["mean"], shape)) / np.sqrt(np.reshape(p["var"], shape) + p.get("eps", 1e-5))
                 * np.reshape(p["scale"], shape) + np.reshape(p["shift"], shape))
        elif node.op == "relu":
            y = np.maximum(x0, 0)
        elif node.op == "relu6":
            y = np.minimum(np.maximum(x0, 0), 6)
        elif node.op == "clip":
            y = np.minimum(np.maximum(x0, a["min"]), a["max"])
        elif node.op == "hardswish":
            y = x0 * np.minimum(np.maximum(x0 + 3, 0), 6) / 6
        elif node.op == "add":
            y = xs[0] + xs[1]
        elif node.op == "concat":
            y = np.concatenate(xs, axis=1)
        elif node.op == "split":
            y = x0[:, a["start"]:a["stop"]]
        elif node.op == "shuffle":
            y = channel_shuffle(x0, a["groups"])
        elif node.op in ("maxpool", "avgpool"):
            y = _pool(node.op, x0, a, node.output_shape)
        elif node.op == "global_avgpool":
            y = x0.reshape(x0.shape[0], x0.shape[1], -1).mean(axis=2)
        elif node.op == "flatten":
            y = x0.reshape(x0.shape[0], -1)
        elif node.op == "linear":
            p = params[node.name]
            y = x0 @ np.asarray(p["weight"], np.float64).T
            if p.get("bias") is not None:
                y = y + p["bias"]
        else:
            raise ValueError(node.op)
        values[node.output] = y
    return values[graph.output.name]


def _pool(op, x, a, out_shape):
    """Pooling by its definition: every output window, clipped to the input (and to the padding)."""
    out = np.empty(out_shape)
    nd = x.ndim - 2
    for pos in np.ndindex(*out_shape[2:]):
        lo = [pos[i] * a["stride"][i] - a["padding"][i][0] for i in range(nd)]
        hi = [lo[i] + a["kernel"][i] for i in range(nd)]
        inside = tuple(slice(max(lo[i], 0), min(hi[i], x.shape[2 + i])) for i in range(nd))
        window = x[(slice(None), slice(None)) + inside]
        flat = window.reshape(*window.shape[:2], -1)
        if op == "maxpool":
            out[(slice(None), slice(None)) + pos] = flat.max(axis=2)
        else:
            if a.get("count_include_pad", True):  # padded positions count, not the ceil_mode overhang
                count = np.prod([min(hi[i], x.shape[2 + i] + a["padding"][i][1]) - lo[i] for i in range(nd)])
            else:
                count = flat.shape[2]
            out[(slice(None), slice(None)) + pos] = flat.sum(axis=2) / count
    return out
