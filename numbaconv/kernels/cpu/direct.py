"""General direct convolution (dense and grouped), channels-last, on a pre-padded input.

The portable kernel: any groups, kernel, stride and dilation; vectorized over the output channels of a
group.  Faster micro-kernels (numbaconv.kernels.cpu.simd_direct) take the shapes they cover.
"""
from numba import njit, prange

from ..index import split_row, start_with_bias, tap_range
from .simd import vadd, vclamp, vfma, vhalf_broadcast, vlanes, vload, vstore, vzeros

FASTMATH = {"contract", "arcp", "nsz"}  # FMA contraction only: NaN and inf keep IEEE behaviour


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_direct(x, w, bias, out, sd, sh, sw, dd, dh, dw):
    """out = conv(x, w) + bias.

    x    (N, D, H, W, C)           padded input, channels-last
    w    (G, KD, KH, KW, CGI, CGO) packed weights (numbaconv.packing.pack_grouped)
    bias (O,) or (0,)              O = G * CGO
    out  (N, OD, OH, OW, O)        with OD = (D - dd*(KD-1) - 1)//sd + 1, likewise OH, OW
    """
    N = x.shape[0]
    G, KD, KH, KW, CGI, CGO = w.shape
    _, OD, OH, OW, O = out.shape
    for job in prange(N * OD * OH):
        n, od, oh = split_row(job, OD, OH)
        for ow in range(OW):
            o = out[n, od, oh, ow]
            start_with_bias(o, bias)
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        xr = x[n, od * sd + kd * dd, oh * sh + kh * dh, ow * sw + kw * dw]
                        for g in range(G):
                            wk = w[g, kd, kh, kw]
                            for ci in range(CGI):
                                xv = xr[g * CGI + ci]
                                for co in range(CGO):
                                    o[g * CGO + co] += xv * wk[ci, co]


@njit(parallel=True, cache=True)
def conv_small_groups(x, w, bias, out, sd, sh, sw, pd, ph, pw, dd, dh, dw, clamp, low, high):
    """Grouped convolution with 4 input and 4 output channels per group on 8-lane vectors (ResNeXt's
    32x4d on AVX2), channels-last, zero padding (pd, ph, pw) in front skipped tap by tap: x is unpadded, or
    padded by the caller (other modes, or a copy made anyway) with p = 0.  A channels-last input then needs
    no padded copy, a pass over the whole input.

    A vector of 8 input channels holds two groups; broadcasting channel ci within each 128-bit half
    (``vhalf_broadcast``) feeds both groups' 4 outputs, so one load and 4 permutes serve 4 FMAs.  4 channel
    vectors x 2 partial sums keep 8 FMA chains independent (one chain alone is latency-bound: 12 GFLOP/s).
    x (N, D, H, W, C); w (KD, KH, KW, 4, O) with w[..., ci, o] = weight[o, ci, ...]; bias (O,) or (0,);
    out (N, OD, OH, OW, O), O a multiple of 32; with ``clamp`` outputs are clipped to [low, high].
    """
    N, D, H, W, C = x.shape
    KD, KH, KW, CGI, O = w.shape
    _, OD, OH, OW, _ = out.shape
    has_bias = bias.shape[0] > 0
    xs = x.reshape(-1); ws = w.reshape(-1); os = out.reshape(-1)
    for job in prange(N * OD * OH):
        lanes = vlanes(ws)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n, od, oh = split_row(job, OD, OH)
        front, top = od * sd - pd, oh * sh - ph
        kd_lo, kd_hi = tap_range(front, dd, KD, D)
        kh_lo, kh_hi = tap_range(top, dh, KH, H)
        for ow in range(OW):
            left = ow * sw - pw
            kw_lo, kw_hi = tap_range(left, dw, KW, W)
            o = (job * OW + ow) * O
            for c in range(0, O, 4 * lanes):  # O is a multiple of 4 vectors (checked by the caller)
                # 4 channel vectors x 2 partial sums: 8 independent FMA chains (one chain is latency-bound)
                if has_bias:
                    a0, a1, a2, a3 = vload(bias, c), vload(bias, c + lanes), vload(bias, c + 2 * lanes), vload(bias, c + 3 * lanes)
                else:
                    a0 = a1 = a2 = a3 = vzeros(w)
                b0 = b1 = b2 = b3 = vzeros(w)
                for kd in range(kd_lo, kd_hi):
                    for kh in range(kh_lo, kh_hi):
                        row = ((n * D + front + kd * dd) * H + top + kh * dh) * W + left
                        for kw in range(kw_lo, kw_hi):
                            xo = (row + kw * dw) * C + c
                            x0, x1, x2, x3 = vload(xs, xo), vload(xs, xo + lanes), vload(xs, xo + 2 * lanes), vload(xs, xo + 3 * lanes)
                            wo = ((kd * KH + kh) * KW + kw) * CGI * O + c
                            a0 = vfma(vhalf_broadcast(x0, 0), vload(ws, wo), a0)
                            a1 = vfma(vhalf_broadcast(x1, 0), vload(ws, wo + lanes), a1)
                            a2 = vfma(vhalf_broadcast(x2, 0), vload(ws, wo + 2 * lanes), a2)
                            a3 = vfma(vhalf_broadcast(x3, 0), vload(ws, wo + 3 * lanes), a3)
                            b0 = vfma(vhalf_broadcast(x0, 1), vload(ws, wo + O), b0)
                            b1 = vfma(vhalf_broadcast(x1, 1), vload(ws, wo + O + lanes), b1)
                            b2 = vfma(vhalf_broadcast(x2, 1), vload(ws, wo + O + 2 * lanes), b2)
                            b3 = vfma(vhalf_broadcast(x3, 1), vload(ws, wo + O + 3 * lanes), b3)
                            a0 = vfma(vhalf_broadcast(x0, 2), vload(ws, wo + 2 * O), a0)
                            a1 = vfma(vhalf_broadcast(x1, 2), vload(ws, wo + 2 * O + lanes), a1)
                            a2 = vfma(vhalf_broadcast(x2, 2), vload(ws, wo + 2 * O + 2 * lanes), a2)
                            a3 = vfma(vhalf_broadcast(x3, 2), vload(ws, wo + 2 * O + 3 * lanes), a3)
                            b0 = vfma(vhalf_broadcast(x0, 3), vload(ws, wo + 3 * O), b0)
                            b1 = vfma(vhalf_broadcast(x1, 3), vload(ws, wo + 3 * O + lanes), b1)
                            b2 = vfma(vhalf_broadcast(x2, 3), vload(ws, wo + 3 * O + 2 * lanes), b2)
                            b3 = vfma(vhalf_broadcast(x3, 3), vload(ws, wo + 3 * O + 3 * lanes), b3)
                a0, a1, a2, a3 = vadd(a0, b0), vadd(a1, b1), vadd(a2, b2), vadd(a3, b3)
                if clamp:
                    a0, a1, a2, a3 = vclamp(a0, low, high), vclamp(a1, low, high), vclamp(a2, low, high), vclamp(a3, low, high)
                vstore(os, o + c, a0)
                vstore(os, o + c + lanes, a1)
                vstore(os, o + c + 2 * lanes, a2)
                vstore(os, o + c + 3 * lanes, a3)
