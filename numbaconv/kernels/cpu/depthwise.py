"""Depthwise convolution (groups == in_channels, channel multiplier m), channels-last and channels-first.

No channel reduction: each output channel c*m + j reads input channel c only, so the kernels are bound
by memory traffic, not FMAs.  Zero padding is never read: the kernels sum only the taps that land
inside the input (``_valid_taps``).  Each takes ``clamp, low, high``: when ``clamp`` is set the output is
clipped to [low, high] before it is stored (a fused relu/relu6; NaN passes through, as in np.clip).
"""
import numpy as np
from numba import njit, prange

from ..index import ceil_div, split_row, start_with_bias
from .direct import FASTMATH
from .simd import vclamp, vfma, vlanes, vload, vload_even, vsplat, vstore, vzeros


@njit(inline="always")
def _valid_taps(start, dilation, taps, length):
    """[lo, hi): the taps k with 0 <= start + k * dilation < length (zero padding is skipped, not read)."""
    if dilation == 1:  # no divisions: this runs per output row and per edge pixel
        lo = min(taps, max(0, -start))
        return lo, max(lo, min(taps, length - start))
    lo = min(taps, max(0, ceil_div(-start, dilation)))
    if start > length - 1:
        return lo, lo
    return lo, max(lo, min(taps, (length - 1 - start) // dilation + 1))


@njit(inline="always")
def _clipped(value, clamp, low, high):
    """value clipped to [low, high] when ``clamp`` (NaN passes through)."""
    if clamp:
        if value < low:
            return low
        if value > high:
            return high
    return value


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise(x, w, bias, out, sd, sh, sw, pd, ph, pw, dd, dh, dw, clamp, low, high):
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
            if clamp:
                for c in range(O):
                    o[c] = _clipped(o[c], True, low, high)


@njit(inline="always")
def tap_row(x0, x1, x2, w0, w1, w2, acc):
    """acc + x0 * w0 + x1 * w1 + x2 * w2: one kernel row of a 3x3 window, in tap order."""
    return vfma(x2, w2, vfma(x1, w1, vfma(x0, w0, acc)))


@njit(cache=True)
def depthwise3x3_row(ring, r0, r1, r2, taps, bias, mid, OW, sw, C, clamp, low, high):
    """mid[ow * C + c] = bias[c] + the 3x3 window at column ow * sw of the three rows starting at ring[r0],
    ring[r1], ring[r2] (channels-last pixels C apart, every column the windows read present: the chains'
    zero-bordered ring rows, or a row's interior in conv_depthwise3x3), for OW outputs; taps (9 * C,)
    tap-major; C a whole number of vectors.

    Stride 1: one channel vector at a time along the whole row, its nine taps held in registers, four
    output pixels per step from six input columns of each row (18 loads for 36 FMAs, where a pair of
    pixels per channel vector took 18 input and 9 tap loads for 18 FMAs and spilled its pointers:
    1.2-2.2x faster on the chains' shapes, data in L2).  Stride 2 keeps that pair loop: sweeping a row
    per channel vector read twice the input per output there, and was slower on 112-wide rows.
    """
    lanes = vlanes(taps)
    step = sw * C
    if sw == 1:
        for c in range(0, C, lanes):
            w00, w01, w02 = vload(taps, c), vload(taps, c + C), vload(taps, c + 2 * C)
            w10, w11, w12 = vload(taps, c + 3 * C), vload(taps, c + 4 * C), vload(taps, c + 5 * C)
            w20, w21, w22 = vload(taps, c + 6 * C), vload(taps, c + 7 * C), vload(taps, c + 8 * C)
            start = vload(bias, c)
            ow = 0
            while ow + 4 <= OW:
                a0, a1, a2, a3 = start, start, start, start
                p = r0 + ow * C + c
                x0, x1, x2 = vload(ring, p), vload(ring, p + C), vload(ring, p + 2 * C)
                x3, x4, x5 = vload(ring, p + 3 * C), vload(ring, p + 4 * C), vload(ring, p + 5 * C)
                a0, a1 = tap_row(x0, x1, x2, w00, w01, w02, a0), tap_row(x1, x2, x3, w00, w01, w02, a1)
                a2, a3 = tap_row(x2, x3, x4, w00, w01, w02, a2), tap_row(x3, x4, x5, w00, w01, w02, a3)
                p = r1 + ow * C + c
                x0, x1, x2 = vload(ring, p), vload(ring, p + C), vload(ring, p + 2 * C)
                x3, x4, x5 = vload(ring, p + 3 * C), vload(ring, p + 4 * C), vload(ring, p + 5 * C)
                a0, a1 = tap_row(x0, x1, x2, w10, w11, w12, a0), tap_row(x1, x2, x3, w10, w11, w12, a1)
                a2, a3 = tap_row(x2, x3, x4, w10, w11, w12, a2), tap_row(x3, x4, x5, w10, w11, w12, a3)
                p = r2 + ow * C + c
                x0, x1, x2 = vload(ring, p), vload(ring, p + C), vload(ring, p + 2 * C)
                x3, x4, x5 = vload(ring, p + 3 * C), vload(ring, p + 4 * C), vload(ring, p + 5 * C)
                a0, a1 = tap_row(x0, x1, x2, w20, w21, w22, a0), tap_row(x1, x2, x3, w20, w21, w22, a1)
                a2, a3 = tap_row(x2, x3, x4, w20, w21, w22, a2), tap_row(x3, x4, x5, w20, w21, w22, a3)
                if clamp:
                    a0, a1 = vclamp(a0, low, high), vclamp(a1, low, high)
                    a2, a3 = vclamp(a2, low, high), vclamp(a3, low, high)
                o = ow * C + c
                vstore(mid, o, a0)
                vstore(mid, o + C, a1)
                vstore(mid, o + 2 * C, a2)
                vstore(mid, o + 3 * C, a3)
                ow += 4
            for ow in range(ow, OW):  # the last 0-3 pixels one at a time
                p0, p1, p2 = r0 + ow * C + c, r1 + ow * C + c, r2 + ow * C + c
                a = tap_row(vload(ring, p0), vload(ring, p0 + C), vload(ring, p0 + 2 * C), w00, w01, w02, start)
                a = tap_row(vload(ring, p1), vload(ring, p1 + C), vload(ring, p1 + 2 * C), w10, w11, w12, a)
                a = tap_row(vload(ring, p2), vload(ring, p2 + C), vload(ring, p2 + 2 * C), w20, w21, w22, a)
                if clamp:
                    a = vclamp(a, low, high)
                vstore(mid, ow * C + c, a)
        return
    ow = 0
    while ow < OW:
        pair = ow + 1 < OW
        a0, a1, a2 = r0 + ow * step, r1 + ow * step, r2 + ow * step
        for c in range(0, C, lanes):
            w00, w01, w02 = vload(taps, c), vload(taps, c + C), vload(taps, c + 2 * C)
            w10, w11, w12 = vload(taps, c + 3 * C), vload(taps, c + 4 * C), vload(taps, c + 5 * C)
            w20, w21, w22 = vload(taps, c + 6 * C), vload(taps, c + 7 * C), vload(taps, c + 8 * C)
            start = vload(bias, c)
            for pixel in range(2 if pair else 1):
                b0, b1, b2 = a0 + c + pixel * step, a1 + c + pixel * step, a2 + c + pixel * step
                acc = vfma(vload(ring, b0), w00, start)
                acc = vfma(vload(ring, b0 + C), w01, acc)
                acc = vfma(vload(ring, b0 + 2 * C), w02, acc)
                acc = vfma(vload(ring, b1), w10, acc)
                acc = vfma(vload(ring, b1 + C), w11, acc)
                acc = vfma(vload(ring, b1 + 2 * C), w12, acc)
                acc = vfma(vload(ring, b2), w20, acc)
                acc = vfma(vload(ring, b2 + C), w21, acc)
                acc = vfma(vload(ring, b2 + 2 * C), w22, acc)
                if clamp:
                    acc = vclamp(acc, low, high)
                vstore(mid, (ow + pixel) * C + c, acc)
        ow += 2 if pair else 1


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise3x3(x, w, bias, out, sh, sw, ph, pw, dh, dw, clamp, low, high):
    """Depthwise 3x3 with channel multiplier 1 on channels-last 2D data, zero padding (pw, ph) skipped.

    x    (N, H, W, C)    unpadded, C >= the vector width
    w    (3, 3, C)       packed weights (numbaconv.packing.pack_depthwise without its depth axis)
    bias (C,) or (0,)
    out  (N, OH, OW, C)
    Each prange iteration owns one output row.  Interior pixels (all nine taps inside the input) are
    computed two at a time, one channel vector after another: the nine taps are unrolled, so a vector's
    sum is nine FMAs on loads from contiguous channel runs, and the two pixels share the weight loads.
    Consecutive channel vectors are independent, which lets the core overlap their FMA chains (a loop
    over taps per pixel, or per-tap updates of an output row in memory, ran 2-4x slower).  Rows that
    touch the vertical padding and the edge columns take the tap-checked path.  The channel count need
    not be a multiple of the vector width: the last vector overlaps the one before it.  At stride and
    dilation 1 with whole vectors of channels, a row's interior goes through depthwise3x3_row instead
    (one channel vector along the row, four pixels from six input columns).
    """
    N, H, W, C = x.shape
    _, OH, OW, _ = out.shape
    has_bias = bias.shape[0] > 0
    xs = x.reshape(-1)
    ws = w.reshape(-1)
    os = out.reshape(-1)
    inner_lo = min(OW, max(0, ceil_div(pw, sw)))
    inner_hi = max(inner_lo, min(OW, (W - 1 - 2 * dw + pw) // sw + 1)) if 2 * dw - pw <= W - 1 else inner_lo
    pixel_step = sw * C  # input elements between horizontally adjacent output pixels
    tap1, tap2 = dw * C, 2 * dw * C
    sliding = sw == 1 and dw == 1 and C % vlanes(out) == 0
    row_bias = bias if has_bias else np.zeros(C, out.dtype)
    for row in prange(N * OH):
        lanes = vlanes(os)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n = row // OH
        top = row % OH * sh - ph
        kh_lo, kh_hi = _valid_taps(top, dh, 3, H)
        out_row = row * OW * C
        full_height = kh_lo == 0 and kh_hi == 3
        for ow in range(OW):
            if full_height and inner_lo <= ow < inner_hi:
                continue
            _checked_pixel(xs, ws, bias, os, out_row + ow * C, (n * H + top) * W, ow * sw - pw, kh_lo, kh_hi,
                           W, C, dh, dw, clamp, low, high)
        if not full_height:
            continue
        r0 = ((n * H + top) * W + inner_lo * sw - pw) * C
        r1 = r0 + dh * W * C
        r2 = r1 + dh * W * C
        at = out_row + inner_lo * C
        if sliding:  # along the row one channel vector at a time (depthwise3x3_row)
            depthwise3x3_row(xs, r0, r1, r2, ws, row_bias, os[at:], inner_hi - inner_lo, 1, C, clamp, low, high)
            continue
        ow = inner_lo
        while ow < inner_hi:
            pair = ow + 1 < inner_hi
            c = 0
            while True:
                c = min(c, C - lanes)
                w00, w01, w02 = vload(ws, c), vload(ws, c + C), vload(ws, c + 2 * C)
                w10, w11, w12 = vload(ws, c + 3 * C), vload(ws, c + 4 * C), vload(ws, c + 5 * C)
                w20, w21, w22 = vload(ws, c + 6 * C), vload(ws, c + 7 * C), vload(ws, c + 8 * C)
                start = vload(bias, c) if has_bias else vzeros(os)
                for pixel in range(2 if pair else 1):
                    a0 = r0 + c + pixel * pixel_step
                    a1 = r1 + c + pixel * pixel_step
                    a2 = r2 + c + pixel * pixel_step
                    acc = vfma(vload(xs, a0), w00, start)
                    acc = vfma(vload(xs, a0 + tap1), w01, acc)
                    acc = vfma(vload(xs, a0 + tap2), w02, acc)
                    acc = vfma(vload(xs, a1), w10, acc)
                    acc = vfma(vload(xs, a1 + tap1), w11, acc)
                    acc = vfma(vload(xs, a1 + tap2), w12, acc)
                    acc = vfma(vload(xs, a2), w20, acc)
                    acc = vfma(vload(xs, a2 + tap1), w21, acc)
                    acc = vfma(vload(xs, a2 + tap2), w22, acc)
                    if clamp:
                        acc = vclamp(acc, low, high)
                    vstore(os, at + pixel * C + c, acc)
                if c == C - lanes:
                    break
                c += lanes
            step = 2 if pair else 1
            r0 += step * pixel_step
            r1 += step * pixel_step
            r2 += step * pixel_step
            at += step * C
            ow += step


@njit(inline="always", fastmath=FASTMATH)
def _checked_pixel(xs, ws, bias, os, at, row_start, left, kh_lo, kh_hi, W, C, dh, dw, clamp, low, high):
    """One output pixel of conv_depthwise3x3 over its in-bounds taps; ``row_start`` is the pixel index of
    the first (unclipped) input row's column 0."""
    lanes = vlanes(os)
    kw_lo, kw_hi = _valid_taps(left, dw, 3, W)
    c = 0
    while True:
        c = min(c, C - lanes)
        acc = vload(bias, c) if bias.shape[0] > 0 else vzeros(os)
        for kh in range(kh_lo, kh_hi):
            source = (row_start + kh * dh * W + left) * C + c
            for kw in range(kw_lo, kw_hi):
                acc = vfma(vload(xs, source + kw * dw * C), vload(ws, (kh * 3 + kw) * C + c), acc)
        if clamp:
            acc = vclamp(acc, low, high)
        vstore(os, at + c, acc)
        if c == C - lanes:
            break
        c += lanes


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise_channels_first(x, w, bias, out, sh, sw, ph, pw, dh, dw, clamp, low, high):
    """Depthwise 2D convolution on channels-first data with zero padding, no copy of the input.

    x (N, C, H, W) and out (N, C*m, OH, OW) C-contiguous; w (C*m, KH, KW); bias (C*m,) or (0,).
    Each prange iteration owns one output plane.  Output columns split into the interior, where every
    horizontal tap lands inside the row, and the edges.  The interior sums all taps of a vector of
    output columns in a register and stores it once (at stride 1 with plain vector loads, at stride 2
    with even-lane loads); edges and other strides sum per column.  Offsets are flat and non-negative
    by construction (views per row cost more than the arithmetic).  3x3 kernels at column stride 1 or 2
    with outputs a vector wide or more run conv_depthwise3x3_channels_first instead.
    """
    N, C, H, W = x.shape
    O, KH, KW = w.shape
    _, _, OH, OW = out.shape
    m = O // C
    has_bias = bias.shape[0] > 0
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
        lanes = vlanes(os)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n = job // O
        co = job % O
        plane = (n * C + co // m) * H * W
        b = bias[co] if has_bias else 0.0
        first_tap = co * KH * KW
        start_value = vsplat(bias, co) if has_bias else vzeros(os)
        for oh in range(OH):
            row = (job * OH + oh) * OW
            top = oh * sh - ph
            kh_lo, kh_hi = _valid_taps(top, dh, KH, H)
            scalar_from = inner_lo
            if vector_hi - inner_lo >= lanes:
                for ow in range(inner_lo):
                    os[row + ow] = _column_sum(xs, ws, plane + top * W, W, dh, kh_lo, kh_hi, first_tap, KW,
                                               ow * sw - pw, dw, b, clamp, low, high)
                start = inner_lo
                while True:  # the last vector overlaps the one before rather than leaving a scalar tail
                    start = min(start, vector_hi - lanes)
                    acc = start_value
                    for kh in range(kh_lo, kh_hi):
                        source = plane + (top + kh * dh) * W + start * sw - pw
                        tap = first_tap + kh * KW
                        for kw in range(KW):
                            if sw == 1:
                                acc = vfma(vsplat(ws, tap + kw), vload(xs, source + kw * dw), acc)
                            else:
                                acc = vfma(vsplat(ws, tap + kw), vload_even(xs, source + kw * dw), acc)
                    if clamp:
                        acc = vclamp(acc, low, high)
                    vstore(os, row + start, acc)
                    if start == vector_hi - lanes:
                        break
                    start += lanes
                scalar_from = vector_hi
            else:
                scalar_from = 0
            for ow in range(scalar_from, OW):
                os[row + ow] = _column_sum(xs, ws, plane + top * W, W, dh, kh_lo, kh_hi, first_tap, KW,
                                           ow * sw - pw, dw, b, clamp, low, high)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_depthwise3x3_channels_first(x, w, bias, out, sh, sw, ph, pw, dh, dw, clamp, low, high):
    """conv_depthwise_channels_first for 3x3 kernels, column stride 1 or 2, and outputs at least a vector
    wide: each plane is first copied into a zero-padded per-plane buffer, so that every output row is
    whole vectors with all nine taps (no edge columns, no clipped rows).  The edge columns' scalar sums
    and the per-row tap ranges were most of the general kernel's time on 56x56 planes.

    x (N, C, H, W) and out (N, C*m, OH, OW) C-contiguous; w (C*m, 3, 3); bias (C*m,) or (0,).
    """
    N, C, H, W = x.shape
    O = w.shape[0]
    _, _, OH, OW = out.shape
    m = O // C
    xs = x.reshape(-1)
    os = out.reshape(-1)
    ws = w.reshape(-1)
    # The padded plane holds every position a tap reads: at stride 2 an even-lane load also reads the
    # column after the last one it uses.
    PH = (OH - 1) * sh + 2 * dh + 1
    PW = (OW - 1) * sw + 2 * dw + 1 + (sw - 1)
    rows_in = min(H, PH - ph)  # input rows (and columns) that some tap reads
    cols_in = min(W, PW - pw)
    for job in prange(N * O):
        lanes = vlanes(os)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n = job // O
        co = job % O
        plane = (n * C + co // m) * H * W
        padded = np.zeros(PH * PW, x.dtype)
        whole = cols_in // lanes * lanes
        for h in range(rows_in):
            source = plane + h * W
            target = (h + ph) * PW + pw
            for col in range(0, whole, lanes):  # explicit vectors: flat computed indices stay scalar otherwise
                vstore(padded, target + col, vload(xs, source + col))
            for col in range(whole, cols_in):
                padded[target + col] = xs[source + col]
        tap = co * 9
        w00 = vsplat(ws, tap)
        w01 = vsplat(ws, tap + 1)
        w02 = vsplat(ws, tap + 2)
        w10 = vsplat(ws, tap + 3)
        w11 = vsplat(ws, tap + 4)
        w12 = vsplat(ws, tap + 5)
        w20 = vsplat(ws, tap + 6)
        w21 = vsplat(ws, tap + 7)
        w22 = vsplat(ws, tap + 8)
        start_value = vsplat(bias, co) if bias.shape[0] > 0 else vzeros(os)
        for oh in range(OH):
            row = (job * OH + oh) * OW
            r0 = oh * sh * PW
            r1 = r0 + dh * PW
            r2 = r1 + dh * PW
            start = 0
            while True:  # the last vector overlaps the one before rather than leaving a scalar tail
                start = min(start, OW - lanes)
                c = start * sw
                acc = vfma(w00, _columns(padded, r0 + c, sw), start_value)
                acc = vfma(w01, _columns(padded, r0 + c + dw, sw), acc)
                acc = vfma(w02, _columns(padded, r0 + c + 2 * dw, sw), acc)
                acc = vfma(w10, _columns(padded, r1 + c, sw), acc)
                acc = vfma(w11, _columns(padded, r1 + c + dw, sw), acc)
                acc = vfma(w12, _columns(padded, r1 + c + 2 * dw, sw), acc)
                acc = vfma(w20, _columns(padded, r2 + c, sw), acc)
                acc = vfma(w21, _columns(padded, r2 + c + dw, sw), acc)
                acc = vfma(w22, _columns(padded, r2 + c + 2 * dw, sw), acc)
                if clamp:
                    acc = vclamp(acc, low, high)
                vstore(os, row + start, acc)
                if start == OW - lanes:
                    break
                start += lanes


@njit(inline="always")
def _columns(xs, index, stride):
    """The vector of input columns index, index + stride, ... (stride 1 or 2)."""
    return vload(xs, index) if stride == 1 else vload_even(xs, index)


@njit(inline="always", fastmath=FASTMATH)
def _column_sum(xs, ws, top_row, W, dh, kh_lo, kh_hi, first_tap, KW, left, dw, total, clamp, low, high):
    """``total`` plus one output column's taps, skipping those that fall in the zero padding (clipped
    when ``clamp``)."""
    kw_lo, kw_hi = _valid_taps(left, dw, KW, W)
    for kh in range(kh_lo, kh_hi):
        source = top_row + kh * dh * W + left
        tap = first_tap + kh * KW
        for kw in range(kw_lo, kw_hi):
            total += ws[tap + kw] * xs[source + kw * dw]
    return _clipped(total, clamp, low, high)
