"""Dense and grouped convolution on the GPU (mirror of kernels/cpu/direct.py).

``conv_direct``: an implicit GEMM per group, M = output pixels, N = the group's output channels,
K = kernel taps x C_in/G, taken tap by tap so the inner loops need no division.  A block stages TILE_K
input channels x TILE_M pixels of patches and TILE_K x TILE_N weights in shared memory; each thread keeps
THREAD_M x THREAD_N accumulators in registers and decodes its pixels' coordinates once.
A transposed convolution runs through the same kernel: only the per-tap input coordinate changes (the
gather rule of kernels/cpu/transposed.py), and its weights are packed to the same layout.
``conv_small_groups``: groups too narrow for a TILE_N tile; a thread computes all outputs of one group at
one pixel.  Arrays are flat with element strides (channels-first, channels-last and strided views alike);
output channels go through ``channel_dest``, which folds a ShuffleNet shuffle into the store.
"""
from __future__ import annotations

import functools

from numba import cuda

from ..index import gathered_index, source_index
from .launch import (DIRECT_THREADS, SMALL_GROUP_OUTPUTS, THREAD_M, THREAD_N, TILE_K, TILE_M, TILE_N)

A_LOADS = TILE_K * TILE_M // DIRECT_THREADS  # patch elements each thread stages per chunk
B_LOADS = TILE_K * TILE_N // DIRECT_THREADS  # weight elements each thread stages per chunk
M_STEP = TILE_M // THREAD_M  # a thread's pixels are M_STEP apart: neighbouring threads, neighbouring pixels
N_STEP = TILE_N // THREAD_N


@functools.lru_cache(maxsize=None)
def conv_direct(numba_dtype):
    """The kernel for one dtype (shared and local arrays need their dtype at compile time)."""
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, channel_dest, sizes, conv, mode, transposed):
        # sizes: N, C, D, H, W, OD, OH, OW, G, CGI, CGO, KD, KH, KW;  conv: sd, sh, sw, pd, ph, pw, dd, dh, dw
        # xs/os: element strides of (n, c, d, h, w);  w: (G, KD*KH*KW, CGI, CGO) contiguous
        # transposed: output o takes input i = (o + p - k*d) / s through tap k when that divides exactly
        d_, h_, w_, od_, oh_, ow_ = sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7]
        cgi, cgo, kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11], sizes[12], sizes[13]
        pixels = sizes[0] * od_ * oh_ * ow_
        g = cuda.blockIdx.z
        m0 = cuda.blockIdx.x * TILE_M
        n0 = cuda.blockIdx.y * TILE_N
        tid = cuda.threadIdx.x
        tm = tid % M_STEP
        tn = tid // M_STEP
        a_tile = cuda.shared.array((TILE_K, TILE_M), numba_dtype)
        b_tile = cuda.shared.array((TILE_K, TILE_N), numba_dtype)
        acc = cuda.local.array((THREAD_M, THREAD_N), numba_dtype)
        for i in range(THREAD_M):
            for j in range(THREAD_N):
                acc[i, j] = zero
        # Every patch element this thread stages belongs to one pixel (slots differ by whole rows of
        # TILE_M): decode its coordinates once.
        mm = tid % TILE_M
        m = m0 + mm
        ow = m % ow_
        oh = (m // ow_) % oh_
        od = (m // (ow_ * oh_)) % od_
        base = (m // (ow_ * oh_ * od_)) * xs[0] + g * cgi * xs[1]
        valid = m < pixels
        pd0 = od * conv[0] - conv[3]
        ph0 = oh * conv[1] - conv[4]
        pw0 = ow * conv[2] - conv[5]
        if transposed:
            pd0, ph0, pw0 = od + conv[3], oh + conv[4], ow + conv[5]
        k_first = tid // TILE_M
        tap = 0
        for kd in range(kd_):
            idd = (gathered_index(pd0 - kd * conv[6], conv[0], d_) if transposed
                   else source_index(pd0 + kd * conv[6], d_, mode))
            for kh in range(kh_):
                ih = (gathered_index(ph0 - kh * conv[7], conv[1], h_) if transposed
                      else source_index(ph0 + kh * conv[7], h_, mode))
                for kw in range(kw_):
                    iw = (gathered_index(pw0 - kw * conv[8], conv[2], w_) if transposed
                          else source_index(pw0 + kw * conv[8], w_, mode))
                    inside = valid and idd >= 0 and ih >= 0 and iw >= 0
                    pixel = base + idd * xs[2] + ih * xs[3] + iw * xs[4]
                    w_tap = (g * kd_ * kh_ * kw_ + tap) * cgi
                    for c0 in range(0, cgi, TILE_K):
                        for e in range(A_LOADS):
                            kk = k_first + e * (DIRECT_THREADS // TILE_M)
                            ci = c0 + kk
                            a_tile[kk, mm] = x[pixel + ci * xs[1]] if inside and ci < cgi else zero
                        for e in range(B_LOADS):
                            slot = tid + e * DIRECT_THREADS
                            kk = slot // TILE_N
                            co = n0 + slot % TILE_N
                            ci = c0 + kk
                            b_tile[kk, slot % TILE_N] = w[(w_tap + ci) * cgo + co] if ci < cgi and co < cgo else zero
                        cuda.syncthreads()  # the slabs are complete before anyone reads them
                        for kk in range(TILE_K):
                            for i in range(THREAD_M):
                                a = a_tile[kk, tm + i * M_STEP]
                                for j in range(THREAD_N):
                                    acc[i, j] += a * b_tile[kk, tn + j * N_STEP]
                        cuda.syncthreads()  # all reads are done before the next chunk overwrites the slabs
                    tap += 1
        for i in range(THREAD_M):
            m = m0 + tm + i * M_STEP
            if m >= pixels:
                continue
            ow = m % ow_
            oh = (m // ow_) % oh_
            od = (m // (ow_ * oh_)) % od_
            n = m // (ow_ * oh_ * od_)
            pixel = n * os[0] + od * os[2] + oh * os[3] + ow * os[4]
            for j in range(THREAD_N):
                co = n0 + tn + j * N_STEP
                if co < cgo:
                    channel = g * cgo + co
                    value = acc[i, j]
                    if bias.shape[0] > 0:
                        value += bias[channel]
                    out[pixel + channel_dest[channel] * os[1]] = value

    return kernel


@functools.lru_cache(maxsize=None)
def conv_small_groups(numba_dtype):
    """Groups of at most SMALL_GROUP_OUTPUTS output channels: one thread per (pixel, group)."""
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, channel_dest, sizes, conv, mode):
        # Same arguments and weight packing as conv_direct.
        d_, h_, w_, od_, oh_, ow_ = sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7]
        cgi, cgo, kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11], sizes[12], sizes[13]
        m = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        g = cuda.blockIdx.y
        if m >= sizes[0] * od_ * oh_ * ow_:
            return
        ow = m % ow_
        oh = (m // ow_) % oh_
        od = (m // (ow_ * oh_)) % od_
        n = m // (ow_ * oh_ * od_)
        acc = cuda.local.array(SMALL_GROUP_OUTPUTS, numba_dtype)
        for j in range(SMALL_GROUP_OUTPUTS):
            acc[j] = zero
        base = n * xs[0] + g * cgi * xs[1]
        tap = 0
        for kd in range(kd_):
            idd = source_index(od * conv[0] - conv[3] + kd * conv[6], d_, mode)
            for kh in range(kh_):
                ih = source_index(oh * conv[1] - conv[4] + kh * conv[7], h_, mode)
                for kw in range(kw_):
                    iw = source_index(ow * conv[2] - conv[5] + kw * conv[8], w_, mode)
                    if idd >= 0 and ih >= 0 and iw >= 0:
                        pixel = base + idd * xs[2] + ih * xs[3] + iw * xs[4]
                        wrow = ((g * kd_ * kh_ * kw_ + tap) * cgi) * cgo
                        for ci in range(cgi):
                            value = x[pixel + ci * xs[1]]
                            for j in range(SMALL_GROUP_OUTPUTS):  # unrolled: acc stays in registers
                                if j < cgo:
                                    acc[j] += value * w[wrow + ci * cgo + j]
                    tap += 1
        pixel = n * os[0] + od * os[2] + oh * os[3] + ow * os[4]
        for j in range(SMALL_GROUP_OUTPUTS):
            if j < cgo:
                channel = g * cgo + j
                value = acc[j]
                if bias.shape[0] > 0:
                    value += bias[channel]
                out[pixel + channel_dest[channel] * os[1]] = value

    return kernel
