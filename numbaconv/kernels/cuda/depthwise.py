"""Depthwise convolution on the GPU (mirror of kernels/cpu/depthwise.py).

No channel reduction, so the kernel is bound by memory and by index arithmetic.  Channels-first: a
thread walks a strip of DEPTHWISE_ROWS output rows of one column, a warp covering 32 adjacent columns, so
each input row is read by coalesced loads and reused from L1 by the strip's next rows; coordinates are
computed once per row and tap.  Channels-last: the channel is the fastest thread index (coalesced), the
block's 8 columns share a row.  Padding modes go through the shared ``source_index`` helper.
"""
from __future__ import annotations

import functools

from numba import cuda

from ..index import source_index
from .launch import DEPTHWISE_ROWS


@functools.lru_cache(maxsize=None)
def conv_depthwise(numba_dtype):
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, sizes, conv, mode, multiplier):
        # sizes: N, C, D, H, W, OD, OH, OW, O, KD, KH, KW;  w: (O, KD*KH*KW) contiguous
        # grid: x -> 32-column blocks, y -> strips of rows, z -> (n, co, od) planes (launch.depthwise_channels_first)
        d_, h_, w_ = sizes[2], sizes[3], sizes[4]
        od_, oh_, ow_, o_ = sizes[5], sizes[6], sizes[7], sizes[8]
        kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11]
        ow = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        oh0 = (cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y) * DEPTHWISE_ROWS
        plane = cuda.blockIdx.z
        if ow >= ow_ or oh0 >= oh_:
            return
        od = plane % od_
        co = (plane // od_) % o_
        n = plane // (od_ * o_)
        base = n * xs[0] + (co // multiplier) * xs[1]
        iw0 = ow * conv[2] - conv[5]
        acc = cuda.local.array(DEPTHWISE_ROWS, numba_dtype)
        first = bias[co] if bias.shape[0] > 0 else zero
        for r in range(DEPTHWISE_ROWS):
            acc[r] = first
        tap = co * kd_ * kh_ * kw_
        for kd in range(kd_):
            idd = source_index(od * conv[0] - conv[3] + kd * conv[6], d_, mode)
            for kh in range(kh_):
                for kw in range(kw_):
                    iw = source_index(iw0 + kw * conv[8], w_, mode)
                    weight = w[tap + kh * kw_ + kw]
                    if idd >= 0 and iw >= 0:
                        column = base + idd * xs[2] + iw * xs[4]
                        for r in range(DEPTHWISE_ROWS):  # unrolled: the strip's sums stay in registers
                            ih = source_index((oh0 + r) * conv[1] - conv[4] + kh * conv[7], h_, mode)
                            if ih >= 0:
                                acc[r] += weight * x[column + ih * xs[3]]
            tap += kh_ * kw_
        pixel = n * os[0] + co * os[1] + od * os[2] + ow * os[4]
        for r in range(DEPTHWISE_ROWS):
            if oh0 + r < oh_:
                out[pixel + (oh0 + r) * os[3]] = acc[r]

    return kernel


@functools.lru_cache(maxsize=None)
def conv_depthwise_channels_last(numba_dtype):
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, sizes, conv, mode, multiplier):
        # Same arguments as conv_depthwise, but w is (KD*KH*KW, O): neighbouring threads read neighbouring
        # weights.  grid: x -> 32-channel blocks, y -> 8-column blocks, z -> (n, od, oh) rows.
        d_, h_, w_ = sizes[2], sizes[3], sizes[4]
        od_, oh_, ow_, o_ = sizes[5], sizes[6], sizes[7], sizes[8]
        kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11]
        co = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        ow = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        row = cuda.blockIdx.z
        if co >= o_ or ow >= ow_:
            return
        oh = row % oh_
        od = (row // oh_) % od_
        n = row // (oh_ * od_)
        acc = bias[co] if bias.shape[0] > 0 else zero
        base = n * xs[0] + (co // multiplier) * xs[1]
        tap = 0
        for kd in range(kd_):
            idd = source_index(od * conv[0] - conv[3] + kd * conv[6], d_, mode)
            for kh in range(kh_):
                ih = source_index(oh * conv[1] - conv[4] + kh * conv[7], h_, mode)
                for kw in range(kw_):
                    iw = source_index(ow * conv[2] - conv[5] + kw * conv[8], w_, mode)
                    if idd >= 0 and ih >= 0 and iw >= 0:
                        acc += w[tap * o_ + co] * x[base + idd * xs[2] + ih * xs[3] + iw * xs[4]]
                    tap += 1
        out[n * os[0] + co * os[1] + od * os[2] + oh * os[3] + ow * os[4]] = acc

    return kernel
