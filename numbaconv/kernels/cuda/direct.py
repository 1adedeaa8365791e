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


def _direct_source() -> str:
    """The implicit-GEMM kernel with its THREAD_M x THREAD_N sums and operands as named scalars.

    Generated so that the sums are registers by construction: a local array indexed in loops the
    compiler did not fully unroll lives in (slow) local memory, which is what the first version of this
    kernel measured (128 bytes of "spill" per thread: exactly its 8x4 float sums).
    """
    pairs = [(i, j) for i in range(THREAD_M) for j in range(THREAD_N)]
    stage = []  # global -> registers for one step: unconditional loads (clamped index, then zeroed)
    for e in range(A_LOADS):
        stage += [f"ci = c0 + k_first + {e * (DIRECT_THREADS // TILE_M)}",
                  "ok = inside and ci < cgi",
                  f"a_next{e} = x[pixel + ci * xs[1] if ok else 0]",
                  f"a_next{e} = a_next{e} if ok else ZERO"]
    for e in range(B_LOADS):
        slot = f"(tid + {e * DIRECT_THREADS})"
        stage += [f"ci = c0 + {slot} // TILE_N",
                  f"co = n0 + {slot} % TILE_N",
                  "ok = ci < cgi and co < cgo",
                  f"b_next{e} = w[(w_tap + ci) * cgo + co if ok else 0]",
                  f"b_next{e} = b_next{e} if ok else ZERO"]
    publish = [f"a_tile[buf, k_first + {e * (DIRECT_THREADS // TILE_M)}, mm] = a_next{e}" for e in range(A_LOADS)]
    publish += [f"b_tile[buf, (tid + {e * DIRECT_THREADS}) // TILE_N, (tid + {e * DIRECT_THREADS}) % TILE_N] = "
                f"b_next{e}" for e in range(B_LOADS)]
    multiply = [f"a{i} = a_tile[buf, kk, tm + {i * M_STEP}]" for i in range(THREAD_M)]
    multiply += [f"b{j} = b_tile[buf, kk, tn + {j * N_STEP}]" for j in range(THREAD_N)]
    multiply += [f"acc{i}_{j} += a{i} * b{j}" for i, j in pairs]
    store = []
    for i in range(THREAD_M):
        store += [f"m = m0 + tm + {i * M_STEP}", "if m < pixels:",
                  "    ow = m % ow_", "    oh = (m // ow_) % oh_", "    od = (m // (ow_ * oh_)) % od_",
                  "    pixel = (m // (ow_ * oh_ * od_)) * os[0] + od * os[2] + oh * os[3] + ow * os[4]"]
        for j in range(THREAD_N):
            store += [f"    co = n0 + tn + {j * N_STEP}", "    if co < cgo:", "        channel = g * cgo + co",
                      f"        out[pixel + channel_dest[channel] * os[1]] = acc{i}_{j} + "
                      "(bias[channel] if bias.shape[0] > 0 else ZERO)"]

    def block(lines, depth):
        return "".join("    " * depth + line + "\n" for line in lines)

    return f"""def kernel(x, xs, w, bias, out, os, channel_dest, sizes, conv, mode, transposed):
    d_, h_, w_, od_, oh_, ow_ = sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7]
    cgi, cgo, kd_, kh_, kw_ = sizes[9], sizes[10], sizes[11], sizes[12], sizes[13]
    pixels = sizes[0] * od_ * oh_ * ow_
    g = cuda.blockIdx.z
    m0 = cuda.blockIdx.x * TILE_M
    n0 = cuda.blockIdx.y * TILE_N
    tid = cuda.threadIdx.x
    tm = tid % M_STEP
    tn = tid // M_STEP
    a_tile = cuda.shared.array((2, TILE_K, TILE_M), DTYPE)
    b_tile = cuda.shared.array((2, TILE_K, TILE_N), DTYPE)
{block([f"acc{i}_{j} = ZERO" for i, j in pairs], 1)}
    # Every patch element this thread stages belongs to one pixel: decode its coordinates once.
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
    steps = kd_ * kh_ * kw_ * ((cgi + TILE_K - 1) // TILE_K)
{block([f"a_next{e} = ZERO" for e in range(A_LOADS)] + [f"b_next{e} = ZERO" for e in range(B_LOADS)], 1)}    buf = 0
    # A step is one kernel tap x TILE_K input channels; (kd, kh, kw, c0) of the step being loaded advance
    # like an odometer (no divisions).  The next step's operands are loaded into registers while this
    # step's are multiplied from shared memory (double buffer: one barrier a step).
    kd = 0
    kh = 0
    kw = 0
    c0 = 0
    tap = 0
    inside = False
    pixel = 0
    w_tap = 0
    for step in range(steps + 1):
        if step > 0:
            buf = (step - 1) % 2
{block(publish, 3)}            cuda.syncthreads()
        if step < steps:
            if c0 == 0:  # a new tap: where this thread's pixel reads through it
                if transposed:
                    idd = gathered_index(pd0 - kd * conv[6], conv[0], d_)
                    ih = gathered_index(ph0 - kh * conv[7], conv[1], h_)
                    iw = gathered_index(pw0 - kw * conv[8], conv[2], w_)
                else:
                    idd = source_index(pd0 + kd * conv[6], d_, mode)
                    ih = source_index(ph0 + kh * conv[7], h_, mode)
                    iw = source_index(pw0 + kw * conv[8], w_, mode)
                inside = valid and idd >= 0 and ih >= 0 and iw >= 0
                pixel = base + idd * xs[2] + ih * xs[3] + iw * xs[4]
                w_tap = (g * kd_ * kh_ * kw_ + tap) * cgi
{block(stage, 3)}            c0 += TILE_K
            if c0 >= cgi:
                c0 = 0
                tap += 1
                kw += 1
                if kw == kw_:
                    kw = 0
                    kh += 1
                    if kh == kh_:
                        kh = 0
                        kd += 1
        if step > 0:
            for kk in range(TILE_K):
{block(multiply, 4)}{block(store, 1)}"""


@functools.lru_cache(maxsize=None)
def conv_direct(numba_dtype):
    """The kernel for one dtype (shared arrays need their dtype at compile time).

    Arguments: ``x``/``out`` flat with element strides ``xs``/``os`` of (n, c, d, h, w); ``w`` flat
    (G, KD*KH*KW, CGI, CGO); ``bias`` (O,) or empty; ``channel_dest`` (O,) where each output channel is
    stored; ``sizes`` = (N, C, D, H, W, OD, OH, OW, G, CGI, CGO, KD, KH, KW); ``conv`` = (sd, sh, sw, pd, ph,
    pw, dd, dh, dw); ``mode`` the padding-mode code; ``transposed``: output o takes input i = (o + p - k*d)/s
    through tap k when that divides exactly.
    """
    namespace = {"cuda": cuda, "source_index": source_index, "gathered_index": gathered_index,
                 "DTYPE": numba_dtype, "ZERO": numba_dtype(0), "TILE_M": TILE_M, "TILE_N": TILE_N,
                 "TILE_K": TILE_K, "M_STEP": M_STEP}
    exec(compile(_direct_source(), "<conv_direct>", "exec"), namespace)
    return cuda.jit(namespace["kernel"])


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
