"""Depthwise convolution (groups == in_channels, channel multiplier m), channels-last, pre-padded input.

No channel reduction: each output channel c*m + j reads input channel c only, so the inner loop runs
contiguously over channels and the kernel is bound by memory traffic, not FMAs.
"""
from numba import njit, prange

from .direct import FASTMATH


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
    has_bias = bias.shape[0] > 0
    for job in prange(N * OD * OH):
        n = job // (OD * OH)
        od = (job // OH) % OD
        oh = job % OH
        for ow in range(OW):
            o = out[n, od, oh, ow]
            for co in range(O):
                o[co] = bias[co] if has_bias else 0.0
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
