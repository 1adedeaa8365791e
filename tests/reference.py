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
