"""Depthwise convolution on the GPU (mirror of kernels/cpu/depthwise.py).

No channel reduction, so the kernel is bound by memory: what matters is coalescing.  Channels-first data
is walked by blocks of 32 adjacent output columns (one warp) x 8 rows, so a warp's loads of one input row
are contiguous and the rows a block shares stay in L1; channels-last data puts the channel in the fastest
thread index.  Padding modes go through the shared ``source_index`` helper.
"""
from __future__ import annotations

import functools

from numba import cuda

from ..index import source_index


@functools.lru_cache(maxsize=None)
def conv_depthwise(numba_dtype):
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, sizes, conv, mode, multiplier):
        # sizes: N, C, D, H, W, OD, OH, OW, O, KD, KH, KW; w: (O, KD*KH*KW) contiguous
        # One thread per output element, threads laid out by launch.depthwise_channels_first:
        # x -> output column, y -> output row (within a block of rows), z -> (n, co, od) plane.
        d_, h_, w_ = sizes[2], sizes[3], sizes[4]
        od_, oh_, ow_, o_ = sizes[5], sizes[6], sizes[7], sizes[8]
        kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11]
        ow = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        oh = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        plane = cuda.blockIdx.z
        if ow >= ow_ or oh >= oh_:
            return
        od = plane % od_
        co = (plane // od_) % o_
        n = plane // (od_ * o_)
        c = co // multiplier
        acc = bias[co] if bias.shape[0] > 0 else zero
        base = n * xs[0] + c * xs[1]
        tap = co * kd_ * kh_ * kw_
        for kd in range(kd_):
            idd = source_index(od * conv[0] - conv[3] + kd * conv[6], d_, mode)
            for kh in range(kh_):
                ih = source_index(oh * conv[1] - conv[4] + kh * conv[7], h_, mode)
                for kw in range(kw_):
                    iw = source_index(ow * conv[2] - conv[5] + kw * conv[8], w_, mode)
                    if idd >= 0 and ih >= 0 and iw >= 0:
                        acc += w[tap] * x[base + idd * xs[2] + ih * xs[3] + iw * xs[4]]
                    tap += 1
        out[n * os[0] + co * os[1] + od * os[2] + oh * os[3] + ow * os[4]] = acc

    return kernel


@functools.lru_cache(maxsize=None)
def conv_depthwise_channels_last(numba_dtype):
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, sizes, conv, mode, multiplier):
        # Same arguments as conv_depthwise; one thread per output element with the channel fastest.
        d_, h_, w_ = sizes[2], sizes[3], sizes[4]
        od_, oh_, ow_, o_ = sizes[5], sizes[6], sizes[7], sizes[8]
        kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11]
        total = sizes[0] * od_ * oh_ * ow_ * o_
        index = cuda.grid(1)
        if index >= total:
            return
        co = index % o_
        ow = (index // o_) % ow_
        oh = (index // (o_ * ow_)) % oh_
        od = (index // (o_ * ow_ * oh_)) % od_
        n = index // (o_ * ow_ * oh_ * od_)
        c = co // multiplier
        acc = bias[co] if bias.shape[0] > 0 else zero
        base = n * xs[0] + c * xs[1]
        taps = kd_ * kh_ * kw_
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
