"""Dense and grouped convolution on the GPU as an implicit GEMM (mirror of kernels/cpu/direct.py).

Per group: M = output pixels (N*OD*OH*OW), N = output channels of the group, K = C_in/G * KD*KH*KW.
A block stages a TILE_K x TILE_M slab of input patches and a TILE_K x TILE_N slab of weights in shared
memory and each thread keeps THREAD_M x THREAD_N accumulators in registers.  Every array is passed flat
with element strides, so channels-first, channels-last and strided views need no copy; the output channel
goes through ``channel_dest`` so a ShuffleNet shuffle costs nothing.
"""
from __future__ import annotations

import functools

from numba import cuda

from ..index import source_index
from .launch import THREAD_M, THREAD_N, TILE_K, TILE_M, TILE_N


@functools.lru_cache(maxsize=None)
def conv_direct(numba_dtype):
    """The kernel for one dtype (shared and local arrays need their dtype at compile time)."""
    zero = numba_dtype(0)

    @cuda.jit
    def kernel(x, xs, w, bias, out, os, channel_dest, sizes, conv, mode):
        # sizes: N, C, D, H, W, OD, OH, OW, G, CGI, CGO, KD, KH, KW
        # conv:  sd, sh, sw, pd, ph, pw, dd, dh, dw
        # xs/os: element strides of (n, c, d, h, w); w: (G, K, CGO) contiguous with K = CGI*KD*KH*KW
        n_, c_, d_, h_, w_, od_, oh_, ow_ = sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7]
        cgi, cgo, kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11], sizes[12], sizes[13]
        taps = kd_ * kh_ * kw_
        k_total = cgi * taps
        pixels = n_ * od_ * oh_ * ow_
        g = cuda.blockIdx.z
        m0 = cuda.blockIdx.x * TILE_M
        n0 = cuda.blockIdx.y * TILE_N
        tid = cuda.threadIdx.x
        tm = tid % (TILE_M // THREAD_M)
        tn = tid // (TILE_M // THREAD_M)
        a_tile = cuda.shared.array((TILE_K, TILE_M), numba_dtype)
        b_tile = cuda.shared.array((TILE_K, TILE_N), numba_dtype)
        acc = cuda.local.array((THREAD_M, THREAD_N), numba_dtype)
        for i in range(THREAD_M):
            for j in range(THREAD_N):
                acc[i, j] = zero
        # The two input-patch elements this thread stages per chunk: fixed pixels, so decode them once.
        loads = (TILE_K * TILE_M) // (TILE_M // THREAD_M * TILE_N // THREAD_N)
        for k0 in range(0, k_total, TILE_K):
            for e in range(loads):
                slot = tid + e * (TILE_M // THREAD_M) * (TILE_N // THREAD_N)
                kk = slot // TILE_M
                mm = slot % TILE_M
                m = m0 + mm
                k = k0 + kk
                value = zero
                if m < pixels and k < k_total:
                    ow = m % ow_
                    oh = (m // ow_) % oh_
                    od = (m // (ow_ * oh_)) % od_
                    n = m // (ow_ * oh_ * od_)
                    ci = k // taps
                    tap = k % taps
                    kw = tap % kw_
                    kh = (tap // kw_) % kh_
                    kd = tap // (kw_ * kh_)
                    idd = source_index(od * conv[0] - conv[3] + kd * conv[6], d_, mode)
                    ih = source_index(oh * conv[1] - conv[4] + kh * conv[7], h_, mode)
                    iw = source_index(ow * conv[2] - conv[5] + kw * conv[8], w_, mode)
                    if idd >= 0 and ih >= 0 and iw >= 0:
                        value = x[n * xs[0] + (g * cgi + ci) * xs[1] + idd * xs[2] + ih * xs[3] + iw * xs[4]]
                a_tile[kk, mm] = value
                kk = slot // TILE_N
                nn = slot % TILE_N
                k = k0 + kk
                co = n0 + nn
                b_tile[kk, nn] = w[(g * k_total + k) * cgo + co] if k < k_total and co < cgo else zero
            cuda.syncthreads()  # the slabs are complete before anyone reads them
            for kk in range(TILE_K):
                for i in range(THREAD_M):
                    a = a_tile[kk, tm + i * (TILE_M // THREAD_M)]
                    for j in range(THREAD_N):
                        acc[i, j] += a * b_tile[kk, tn + j * (TILE_N // THREAD_N)]
            cuda.syncthreads()  # everyone is done reading before the next chunk overwrites the slabs
        for i in range(THREAD_M):
            m = m0 + tm + i * (TILE_M // THREAD_M)
            if m >= pixels:
                continue
            ow = m % ow_
            oh = (m // ow_) % oh_
            od = (m // (ow_ * oh_)) % od_
            n = m // (ow_ * oh_ * od_)
            for j in range(THREAD_N):
                co = n0 + tn + j * (TILE_N // THREAD_N)
                if co < cgo:
                    channel = g * cgo + co
                    value = acc[i, j]
                    if bias.shape[0] > 0:
                        value += bias[channel]
                    out[n * os[0] + channel_dest[channel] * os[1] + od * os[2] + oh * os[3] + ow * os[4]] = value

    return kernel
