"""Transposed convolution on the GPU as a gather (mirror of kernels/cpu/transposed.py).

Output o receives input i through tap k when o = i*s - p + k*d; each thread owns one output element and
sums the taps for which (o + p - k*d) / s is a whole in-range input index.
"""
from __future__ import annotations

import functools

from numba import cuda


@functools.lru_cache(maxsize=None)
def conv_transposed(numba_dtype):
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, sizes, conv):
        # sizes: N, C, D, H, W, OD, OH, OW, G, CGI, CGO, KD, KH, KW; w: PyTorch (C, CGO, KD, KH, KW) contiguous
        d_, h_, w_ = sizes[2], sizes[3], sizes[4]
        od_, oh_, ow_ = sizes[5], sizes[6], sizes[7]
        cgi, cgo, kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11], sizes[12], sizes[13]
        o_ = sizes[8] * cgo
        total = sizes[0] * o_ * od_ * oh_ * ow_
        index = cuda.grid(1)
        if index >= total:
            return
        ow = index % ow_
        oh = (index // ow_) % oh_
        od = (index // (ow_ * oh_)) % od_
        co = (index // (ow_ * oh_ * od_)) % o_
        n = index // (ow_ * oh_ * od_ * o_)
        g = co // cgo
        cg = co % cgo
        acc = bias[co] if bias.shape[0] > 0 else zero
        for kd in range(kd_):
            td = od + conv[3] - kd * conv[6]
            if td < 0 or td % conv[0] != 0 or td // conv[0] >= d_:
                continue
            for kh in range(kh_):
                th = oh + conv[4] - kh * conv[7]
                if th < 0 or th % conv[1] != 0 or th // conv[1] >= h_:
                    continue
                for kw in range(kw_):
                    tw = ow + conv[5] - kw * conv[8]
                    if tw < 0 or tw % conv[2] != 0 or tw // conv[2] >= w_:
                        continue
                    offset = n * xs[0] + (td // conv[0]) * xs[2] + (th // conv[1]) * xs[3] + (tw // conv[2]) * xs[4]
                    for ci in range(cgi):
                        c = g * cgi + ci
                        acc += x[offset + c * xs[1]] * w[(((c * cgo + cg) * kd_ + kd) * kh_ + kh) * kw_ + kw]
        out[n * os[0] + co * os[1] + od * os[2] + oh * os[3] + ow * os[4]] = acc

    return kernel
