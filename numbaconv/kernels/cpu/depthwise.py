"""Depthwise convolution (groups == in_channels, channel multiplier m), channels-last, pre-padded input.

No channel reduction: each output channel c*m + j reads input channel c only, so the inner loop runs
contiguously over channels and the kernel is bound by memory traffic, not FMAs.
"""
import numpy as np
from numba import njit, prange

from ..index import ceil_div, split_row, start_with_bias
from .direct import FASTMATH
from .simd import vfma, vlanes, vload, vsplat, vstore


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise(x, w, bias, out, sd, sh, sw, dd, dh, dw):
    """out[..., c*m + j] = sum_k x[..., c] * w[k, c*m + j] + bias.

    x    (N, D, H, W, C)        padded input, channels-last
    w    (KD, KH, KW, C*m)      packed weights (numbaconv.packing.pack_depthwise)
    bias (C*m,) or (0,)
    out  (N, OD, OH, OW, C*m)
    """
    N, _, _, _, C = x.shape
    KD, KH, KW, O = w.shape
    _, OD, OH, OW, _ = out.shape
    m = O // C
    for job in prange(N * OD * OH):
        n, od, oh = split_row(job, OD, OH)
        for ow in range(OW):
            o = out[n, od, oh, ow]
            start_with_bias(o, bias)
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        xr = x[n, od * sd + kd * dd, oh * sh + kh * dh, ow * sw + kw * dw]
                        wk = w[kd, kh, kw]
                        if m == 1:
                            for c in range(C):
                                o[c] += xr[c] * wk[c]
                        else:
                            for c in range(C):
                                xv = xr[c]
                                for j in range(m):
                                    o[c * m + j] += xv * wk[c * m + j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise_channels_first(x, w, bias, out, sh, sw, ph, pw, dh, dw):
    """Depthwise 2D convolution on channels-first data with zero padding, no copy of the input.

    x (N, C, H, W) and out (N, C*m, OH, OW) C-contiguous; w (C*m, KH, KW); bias (C*m,) or (0,).
    Each prange iteration owns one output plane.  For every tap the valid output columns [lo, hi) are
    computed once, so the inner loop has no bounds checks; at unit stride it runs on explicit vectors.
    Offsets are flat and non-negative by construction (views per row cost more than the arithmetic).
    """
    N, C, H, W = x.shape
    O, KH, KW = w.shape
    _, _, OH, OW = out.shape
    m = O // C
    has_bias = bias.shape[0] > 0
    lanes = vlanes(out)
    xs = x.reshape(-1)
    os = out.reshape(-1)
    ws = w.reshape(-1)
    # The valid output columns of each horizontal tap, computed once (integer division is slow).
    first = np.empty(KW, np.int64)
    last = np.empty(KW, np.int64)
    for kw in range(KW):
        offset = kw * dw - pw
        first[kw] = max(0, ceil_div(-offset, sw))
        last[kw] = min(OW, (W - 1 - offset) // sw + 1) if offset <= W - 1 else 0
    for job in prange(N * O):
        n = job // O
        co = job % O
        plane = (n * C + co // m) * H * W
        for oh in range(OH):
            row = (job * OH + oh) * OW
            b = bias[co] if has_bias else 0.0
            for ow in range(OW):
                os[row + ow] = b
            for kh in range(KH):
                ih = oh * sh + kh * dh - ph
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    offset = kw * dw - pw  # input column of output column ow is ow * sw + offset
                    lo = first[kw]
                    hi = last[kw]
                    tap = (co * KH + kh) * KW + kw
                    source = plane + ih * W + offset
                    ow = lo
                    if sw == 1:
                        weight = vsplat(ws, tap)
                        while ow + lanes <= hi:
                            vstore(os, row + ow, vfma(weight, vload(xs, source + ow), vload(os, row + ow)))
                            ow += lanes
                    wv = ws[tap]
                    for i in range(hi - ow):
                        os[row + ow + i] += wv * xs[source + (ow + i) * sw]
