"""Depthwise convolution (groups == in_channels, channel multiplier m), channels-last and channels-first.

No channel reduction: each output channel c*m + j reads input channel c only, so the kernels are bound
by memory traffic, not FMAs.  Zero padding is never read: both kernels sum only the taps that land
inside the input (``_valid_taps``).
"""
from numba import njit, prange

from ..index import ceil_div, split_row, start_with_bias
from .direct import FASTMATH
from .simd import vfma, vlanes, vload, vload_even, vsplat, vstore, vzeros


@njit(inline="always")
def _valid_taps(start, dilation, taps, length):
    """[lo, hi): the taps k with 0 <= start + k * dilation < length (zero padding is skipped, not read)."""
    lo = min(taps, max(0, ceil_div(-start, dilation)))
    if start > length - 1:
        return lo, lo
    return lo, max(lo, min(taps, (length - 1 - start) // dilation + 1))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise(x, w, bias, out, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """out[..., c*m + j] = sum_k x[..., c] * w[k, c*m + j] + bias, with zero padding (pd, ph, pw) in front.

    x    (N, D, H, W, C)        channels-last input: unpadded (zero padding is skipped tap by tap, so
                                no padded copy is made), or padded by the caller (other modes) with p = 0
    w    (KD, KH, KW, C*m)      packed weights (numbaconv.packing.pack_depthwise)
    bias (C*m,) or (0,)
    out  (N, OD, OH, OW, C*m)
    """
    N, D, H, W, C = x.shape
    KD, KH, KW, O = w.shape
    _, OD, OH, OW, _ = out.shape
    m = O // C
    for job in prange(N * OD * OH):
        n, od, oh = split_row(job, OD, OH)
        front = od * sd - pd
        top = oh * sh - ph
        kd_lo, kd_hi = _valid_taps(front, dd, KD, D)
        kh_lo, kh_hi = _valid_taps(top, dh, KH, H)
        for ow in range(OW):
            left = ow * sw - pw
            kw_lo, kw_hi = _valid_taps(left, dw, KW, W)
            o = out[n, od, oh, ow]
            start_with_bias(o, bias)
            for kd in range(kd_lo, kd_hi):
                for kh in range(kh_lo, kh_hi):
                    for kw in range(kw_lo, kw_hi):
                        xr = x[n, front + kd * dd, top + kh * dh, left + kw * dw]
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
    Each prange iteration owns one output plane.  Output columns split into the interior, where every
    horizontal tap lands inside the row, and the edges.  The interior sums all taps of a vector of
    output columns in a register and stores it once (at stride 1 with plain vector loads, at stride 2
    with even-lane loads); edges and other strides sum per column.  Offsets are flat and non-negative
    by construction (views per row cost more than the arithmetic).
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
    # Interior columns [inner_lo, inner_hi): ow * sw + kw * dw - pw lies in [0, W) for every kw.
    inner_lo = min(OW, max(0, ceil_div(pw, sw)))
    inner_hi = max(inner_lo, min(OW, (W - 1 - (KW - 1) * dw + pw) // sw + 1)) if (KW - 1) * dw - pw <= W - 1 \
        else inner_lo
    # Vector interior: at stride 2 each load also reads the element after the last column it uses, so the
    # vector columns stop one input column short of the row's end (never a read past the array).
    vector_hi = inner_hi if sw == 1 else max(inner_lo, min(inner_hi, (W - 2 - (KW - 1) * dw + pw) // 2 + 1))
    if sw > 2:
        vector_hi = inner_lo
    for job in prange(N * O):
        n = job // O
        co = job % O
        plane = (n * C + co // m) * H * W
        b = bias[co] if has_bias else 0.0
        for oh in range(OH):
            row = (job * OH + oh) * OW
            top = oh * sh - ph
            kh_lo, kh_hi = _valid_taps(top, dh, KH, H)
            first_tap = co * KH * KW
            scalar_from = inner_lo
            if vector_hi - inner_lo >= lanes:
                for ow in range(inner_lo):
                    os[row + ow] = _column_sum(xs, ws, plane + top * W, W, dh, kh_lo, kh_hi, first_tap, KW,
                                               ow * sw - pw, dw, b)
                start = inner_lo
                while True:  # the last vector overlaps the one before rather than leaving a scalar tail
                    start = min(start, vector_hi - lanes)
                    acc = vsplat(bias, co) if has_bias else vzeros(os)
                    for kh in range(kh_lo, kh_hi):
                        source = plane + (top + kh * dh) * W + start * sw - pw
                        tap = first_tap + kh * KW
                        for kw in range(KW):
                            if sw == 1:
                                acc = vfma(vsplat(ws, tap + kw), vload(xs, source + kw * dw), acc)
                            else:
                                acc = vfma(vsplat(ws, tap + kw), vload_even(xs, source + kw * dw), acc)
                    vstore(os, row + start, acc)
                    if start == vector_hi - lanes:
                        break
                    start += lanes
                scalar_from = vector_hi
            else:
                scalar_from = 0
            for ow in range(scalar_from, OW):
                os[row + ow] = _column_sum(xs, ws, plane + top * W, W, dh, kh_lo, kh_hi, first_tap, KW,
                                           ow * sw - pw, dw, b)


@njit(inline="always", fastmath=FASTMATH)
def _column_sum(xs, ws, top_row, W, dh, kh_lo, kh_hi, first_tap, KW, left, dw, total):
    """``total`` plus one output column's taps, skipping those that fall in the zero padding."""
    kw_lo, kw_hi = _valid_taps(left, dw, KW, W)
    for kh in range(kh_lo, kh_hi):
        source = top_row + kh * dh * W + left
        tap = first_tap + kh * KW
        for kw in range(kw_lo, kw_hi):
            total += ws[tap + kw] * xs[source + kw * dw]
    return total
