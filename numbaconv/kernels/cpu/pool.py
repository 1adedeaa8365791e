"""Max and average pooling, channels-last (N, D, H, W, C), with zero-cost padding by clipped windows."""
import numpy as np
from numba import njit, prange

from ..index import split_row
from .simd import vadd, vlanes, vload, vmax, vscale, vstore, vzeros


@njit(parallel=True, cache=True)
def pool_channels_last(x, out, kd_, kh_, kw_, sd, sh, sw, pd, ph, pw, is_max, include_pad, count_d, count_h,
                       count_w):
    """out[n, od, oh, ow, c] = max or mean of x over the window at (o*s - p), clipped to the input.

    For the mean the divisor is the number of positions inside the input, or with ``include_pad`` the
    window clipped to the padded extent (count_d/h/w: input size plus both paddings).
    """
    N, D, H, W, C = x.shape
    _, OD, OH, OW, _ = out.shape
    xs = x.reshape(-1)
    os = out.reshape(-1)
    for job in prange(N * OD * OH):
        lanes = vlanes(os)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n, od, oh = split_row(job, OD, OH)
        d0, h0 = od * sd - pd, oh * sh - ph
        d_lo, d_hi = max(d0, 0), min(d0 + kd_, D)
        h_lo, h_hi = max(h0, 0), min(h0 + kh_, H)
        for ow in range(OW):
            w0 = ow * sw - pw
            w_lo, w_hi = max(w0, 0), min(w0 + kw_, W)
            scale = 1.0
            if not is_max:
                if include_pad:
                    count = ((min(d0 + kd_, count_d - pd) - d0) * (min(h0 + kh_, count_h - ph) - h0)
                             * (min(w0 + kw_, count_w - pw) - w0))
                else:
                    count = (d_hi - d_lo) * (h_hi - h_lo) * (w_hi - w_lo)
                scale = 1.0 / count
            if C >= lanes and d_lo < d_hi and h_lo < h_hi and w_lo < w_hi:
                # A vector of channels at a time over the whole window, kept in a register; the last
                # vector overlaps the one before.  (Updating the output pixel in memory tap by tap cost
                # a load and a store per tap and channel.)
                at = (job * OW + ow) * C
                c = 0
                while True:
                    c = min(c, C - lanes)
                    first = (((n * D + d_lo) * H + h_lo) * W + w_lo) * C + c
                    acc = vload(xs, first) if is_max else vzeros(os)
                    for d in range(d_lo, d_hi):
                        for h in range(h_lo, h_hi):
                            row = (((n * D + d) * H + h) * W) * C + c
                            for w in range(w_lo, w_hi):
                                if is_max:
                                    acc = vmax(acc, vload(xs, row + w * C))
                                else:
                                    acc = vadd(acc, vload(xs, row + w * C))
                    vstore(os, at + c, acc if is_max else vscale(acc, scale))
                    if c == C - lanes:
                        break
                    c += lanes
                continue
            o = out[n, od, oh, ow]
            for c in range(C):
                o[c] = -np.inf if is_max else 0.0
            for d in range(d_lo, d_hi):
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        xr = x[n, d, h, w]
                        if is_max:
                            for c in range(C):
                                value = xr[c]
                                if value > o[c] or value != value:  # a NaN propagates
                                    o[c] = value
                        else:
                            for c in range(C):
                                o[c] += xr[c]
            if not is_max:
                for c in range(C):
                    o[c] *= scale


@njit(parallel=True, cache=True)
def global_average_channels_last(x, out):
    """out[n, c] = mean over p of x[n, p, c], for x (N, P, C) and out (N, C); float64 sums, one image per job.

    (NumPy's ``mean`` over the middle axes of MobileNetV2's (1, 7, 7, 1280) output took 0.2 ms, 15x this.)
    """
    N, P, C = x.shape
    for n in prange(N):
        total = np.zeros(C, np.float64)
        for p in range(P):
            for c in range(C):
                total[c] += x[n, p, c]
        for c in range(C):
            out[n, c] = total[c] / P
