"""Pointwise -> depthwise -> pointwise in one pass over row bands (MobileNetV2's inverted residual,
ShuffleNet v2's branch), channels-last.

Run layer by layer, the expanded tensor between the three convolutions (6x the block's input) is written
to memory and read back twice.  Here each job owns a band of output rows of one image and keeps only
what the next row needs: the expanded input rows the depthwise window covers (a ring of KH rows, zero
columns at both sides for the padding), one depthwise output row and one projected row, all in L2.  A
band recomputes the KH - stride expanded rows its neighbour also computes, so bands are kept tall.

The two pointwise stages use the SIMD micro-kernel scheme of simd_direct (6 pixels x 2 vectors of
accumulators, a broadcast per pixel and input channel); the depthwise stage keeps a channel vector's
taps in registers while it walks the row.  Channel counts are padded to whole blocks of 2 vectors by
numbaconv.packing.pack_pw_dw_pw (zero weights and bias: padded channels stay exactly zero).
"""
import numpy as np
from numba import njit, prange

from .depthwise import depthwise3x3_row
from .simd import (vadd, vclamp, vfma, vlanes, vload, vmax, vput, vscale, vsplat, vstore, vstore_interleaved3,
                   vzeros, vzip_high, vzip_low)

PIXELS = 6  # pixels per pointwise block (6 x 2 vectors: 12 accumulators for AVX2's 16 registers)
PIXELS3 = 4  # pixels per 3-vector block (4 x 3 vectors: 12 accumulators)
# The projection adds the residual itself (pointwise_pixels_residual) from reductions this long: a block's 12
# residual loads are then hidden; over ShuffleNet v1's 20-long ones they made its stage-2 units 4% slower.
RESIDUAL_MIN_REDUCTION = 32


@njit(cache=True)
def pointwise_block1(src, s0, K, w, w0, BLOCK, sources, bias, b0, dst, d0, clamp, low, high):
    """One pixel through one block of BLOCK output channels (rows narrower than a block; w flat): a vector
    at a time."""
    lanes = vlanes(w)
    for v in range(0, BLOCK, lanes):
        a = vload(bias, b0 + v)
        for k in range(K):
            a = vfma(vsplat(src, s0 + sources[k]), vload(w, w0 + k * BLOCK + v), a)
        if clamp:
            a = vclamp(a, low, high)
        vstore(dst, d0 + v, a)


@njit(inline="always")
def reduce_6x2(src, x0, sp, ws, w0, BLOCK, taken, K, clamp, low, high, a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0,
               a3_1, a4_0, a4_1, a5_0, a5_1):
    """The 6-pixel x 2-vector register block: accumulators a<pixel>_<vector> (started by the caller) plus
    K inputs (src[x0 + taken[k] + p * sp]) times their weight rows (ws[w0 + k * BLOCK:]), clamped with
    ``clamp``.  Inlined into its callers at Numba's IR level, so the twelve accumulators stay registers."""
    lanes = vlanes(ws)
    for k in range(K):
        w_0 = vload(ws, w0 + k * BLOCK)
        w_1 = vload(ws, w0 + k * BLOCK + lanes)
        i = x0 + taken[k]
        b = vsplat(src, i)
        a0_0 = vfma(b, w_0, a0_0)
        a0_1 = vfma(b, w_1, a0_1)
        b = vsplat(src, i + sp)
        a1_0 = vfma(b, w_0, a1_0)
        a1_1 = vfma(b, w_1, a1_1)
        b = vsplat(src, i + 2 * sp)
        a2_0 = vfma(b, w_0, a2_0)
        a2_1 = vfma(b, w_1, a2_1)
        b = vsplat(src, i + 3 * sp)
        a3_0 = vfma(b, w_0, a3_0)
        a3_1 = vfma(b, w_1, a3_1)
        b = vsplat(src, i + 4 * sp)
        a4_0 = vfma(b, w_0, a4_0)
        a4_1 = vfma(b, w_1, a4_1)
        b = vsplat(src, i + 5 * sp)
        a5_0 = vfma(b, w_0, a5_0)
        a5_1 = vfma(b, w_1, a5_1)
    if clamp:
        a0_0, a0_1 = vclamp(a0_0, low, high), vclamp(a0_1, low, high)
        a1_0, a1_1 = vclamp(a1_0, low, high), vclamp(a1_1, low, high)
        a2_0, a2_1 = vclamp(a2_0, low, high), vclamp(a2_1, low, high)
        a3_0, a3_1 = vclamp(a3_0, low, high), vclamp(a3_1, low, high)
        a4_0, a4_1 = vclamp(a4_0, low, high), vclamp(a4_1, low, high)
        a5_0, a5_1 = vclamp(a5_0, low, high), vclamp(a5_1, low, high)
    return a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1, a4_0, a4_1, a5_0, a5_1


@njit(cache=True)
def pointwise(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high):
    """pointwise_pixels or pointwise_pixels3, by the packed block's width (2 or 3 vectors: see
    numbaconv.packing.cheapest_block)."""
    if w.shape[2] == 3 * vlanes(w):
        pointwise_pixels3(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high)
    else:
        pointwise_pixels(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high)


@njit(cache=True)
def pointwise_pixels(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high):
    """``pixels`` pixels (channel i of pixel p at src[s0 + p*sp + i]) through a pointwise convolution packed
    by output blocks: block b (2 vectors of output channels, bias[b * BLOCK:]) sums counts[b] inputs,
    channel sources[b, k] times weights w[b, k] (w (B, K, BLOCK)).  A dense layer lists every input
    channel; a grouped one only its group's, and a channel shuffle before it is folded into which
    channels those are.  Stores dst[dst_at[p] + b * BLOCK + j], clipped to [low, high] with ``clamp``;
    dst_at places each pixel, so a run may cross rows of a padded buffer.  Blocks of 6 pixels x 2
    vectors in registers, the last block overlapping the one before it; the block (reduce_6x2) is inlined
    at Numba's IR level, not called (a call per block, with every array argument passed field by field,
    cost as much as a 24-channel reduction).
    """
    B, KMAX, BLOCK = w.shape
    lanes = vlanes(w)
    ws = w.reshape(-1)
    for block in range(B):
        cb = block * BLOCK
        K = counts[block]
        w0 = block * KMAX * BLOCK
        taken = sources[block]
        p0 = 0
        while p0 < pixels and pixels >= PIXELS:
            p0 = min(p0, pixels - PIXELS)
            x0 = s0 + p0 * sp
            a0_0 = vload(bias, cb)
            a0_1 = vload(bias, cb + lanes)
            a1_0, a1_1, a2_0, a2_1, a3_0, a3_1 = a0_0, a0_1, a0_0, a0_1, a0_0, a0_1
            a4_0, a4_1, a5_0, a5_1 = a0_0, a0_1, a0_0, a0_1
            (a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1, a4_0, a4_1, a5_0, a5_1) = reduce_6x2(
                src, x0, sp, ws, w0, BLOCK, taken, K, clamp, low, high,
                a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1, a4_0, a4_1, a5_0, a5_1)
            y = dst_at[p0] + cb
            vstore(dst, y, a0_0)
            vstore(dst, y + lanes, a0_1)
            y = dst_at[p0 + 1] + cb
            vstore(dst, y, a1_0)
            vstore(dst, y + lanes, a1_1)
            y = dst_at[p0 + 2] + cb
            vstore(dst, y, a2_0)
            vstore(dst, y + lanes, a2_1)
            y = dst_at[p0 + 3] + cb
            vstore(dst, y, a3_0)
            vstore(dst, y + lanes, a3_1)
            y = dst_at[p0 + 4] + cb
            vstore(dst, y, a4_0)
            vstore(dst, y + lanes, a4_1)
            y = dst_at[p0 + 5] + cb
            vstore(dst, y, a5_0)
            vstore(dst, y + lanes, a5_1)
            p0 += PIXELS
        if pixels < PIXELS:
            for p in range(pixels):
                pointwise_block1(src, s0 + p * sp, K, ws, w0, BLOCK, taken, bias, cb, dst, dst_at[p] + cb, clamp, low,
                                 high)


@njit(cache=True)
def pointwise_pixels3(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high):
    """pointwise_pixels with blocks of 3 vectors of output channels and 4 pixels (12 accumulators, 3 weight
    vectors and a broadcast: AVX2's 16 registers): 24-channel outputs (MobileNetV2's projections, the
    3->24 stems) then need no padding, where 2-vector blocks computed 32 (1.4-1.5x faster on those).
    A function of its own, block loop included: both register blocks in one function, behind a branch on
    the block width, ran this one 2.3-2.6x slower (its accumulators spilled)."""
    B, KMAX, BLOCK = w.shape
    lanes = vlanes(w)
    ws = w.reshape(-1)
    for block in range(B):
        cb = block * BLOCK
        K = counts[block]
        w0 = block * KMAX * BLOCK
        taken = sources[block]
        p0 = 0
        while p0 < pixels and pixels >= PIXELS3:
            p0 = min(p0, pixels - PIXELS3)
            x0 = s0 + p0 * sp
            a0_0, a0_1, a0_2 = vload(bias, cb), vload(bias, cb + lanes), vload(bias, cb + 2 * lanes)
            a1_0, a1_1, a1_2 = a0_0, a0_1, a0_2
            a2_0, a2_1, a2_2 = a0_0, a0_1, a0_2
            a3_0, a3_1, a3_2 = a0_0, a0_1, a0_2
            for k in range(K):
                w_0 = vload(ws, w0 + k * BLOCK)
                w_1 = vload(ws, w0 + k * BLOCK + lanes)
                w_2 = vload(ws, w0 + k * BLOCK + 2 * lanes)
                i = x0 + taken[k]
                b = vsplat(src, i)
                a0_0, a0_1, a0_2 = vfma(b, w_0, a0_0), vfma(b, w_1, a0_1), vfma(b, w_2, a0_2)
                b = vsplat(src, i + sp)
                a1_0, a1_1, a1_2 = vfma(b, w_0, a1_0), vfma(b, w_1, a1_1), vfma(b, w_2, a1_2)
                b = vsplat(src, i + 2 * sp)
                a2_0, a2_1, a2_2 = vfma(b, w_0, a2_0), vfma(b, w_1, a2_1), vfma(b, w_2, a2_2)
                b = vsplat(src, i + 3 * sp)
                a3_0, a3_1, a3_2 = vfma(b, w_0, a3_0), vfma(b, w_1, a3_1), vfma(b, w_2, a3_2)
            if clamp:
                a0_0, a0_1, a0_2 = vclamp(a0_0, low, high), vclamp(a0_1, low, high), vclamp(a0_2, low, high)
                a1_0, a1_1, a1_2 = vclamp(a1_0, low, high), vclamp(a1_1, low, high), vclamp(a1_2, low, high)
                a2_0, a2_1, a2_2 = vclamp(a2_0, low, high), vclamp(a2_1, low, high), vclamp(a2_2, low, high)
                a3_0, a3_1, a3_2 = vclamp(a3_0, low, high), vclamp(a3_1, low, high), vclamp(a3_2, low, high)
            y = dst_at[p0] + cb
            vstore(dst, y, a0_0)
            vstore(dst, y + lanes, a0_1)
            vstore(dst, y + 2 * lanes, a0_2)
            y = dst_at[p0 + 1] + cb
            vstore(dst, y, a1_0)
            vstore(dst, y + lanes, a1_1)
            vstore(dst, y + 2 * lanes, a1_2)
            y = dst_at[p0 + 2] + cb
            vstore(dst, y, a2_0)
            vstore(dst, y + lanes, a2_1)
            vstore(dst, y + 2 * lanes, a2_2)
            y = dst_at[p0 + 3] + cb
            vstore(dst, y, a3_0)
            vstore(dst, y + lanes, a3_1)
            vstore(dst, y + 2 * lanes, a3_2)
            p0 += PIXELS3
        if pixels < PIXELS3:
            for p in range(pixels):
                pointwise_block1(src, s0 + p * sp, K, ws, w0, BLOCK, taken, bias, cb, dst, dst_at[p] + cb, clamp, low,
                                 high)


@njit(cache=True)
def pointwise_pixels_residual(src, s0, sp, pixels, w, sources, counts, bias, dst, dst_at, clamp, low, high, residual):
    """pointwise_pixels (2-vector blocks, pixels >= PIXELS) with ``residual`` (laid out like dst) added before
    the clamp, and the loops the other way round: each 6-pixel chunk runs through every block, so the
    residual is read, and the output written, a pixel's channels after another (sequential streams) rather
    than a block's 64 bytes per pixel, pixels apart.  ``residual`` must not be dst: the last chunk overlaps
    the one before it and reads the residual of pixels already stored.  The 6 x 2 register block is
    pointwise_pixels' (reduce_6x2, inlined into both)."""
    B, KMAX, BLOCK = w.shape
    lanes = vlanes(w)
    ws = w.reshape(-1)
    p0 = 0
    while p0 < pixels:
        p0 = min(p0, pixels - PIXELS)
        x0 = s0 + p0 * sp
        d0, d1, d2, d3, d4, d5 = (dst_at[p0], dst_at[p0 + 1], dst_at[p0 + 2], dst_at[p0 + 3], dst_at[p0 + 4],
                                  dst_at[p0 + 5])
        for block in range(B):
            cb = block * BLOCK
            K = counts[block]
            w0 = block * KMAX * BLOCK
            taken = sources[block]
            b_0 = vload(bias, cb)
            b_1 = vload(bias, cb + lanes)
            a0_0, a0_1 = vadd(b_0, vload(residual, d0 + cb)), vadd(b_1, vload(residual, d0 + cb + lanes))
            a1_0, a1_1 = vadd(b_0, vload(residual, d1 + cb)), vadd(b_1, vload(residual, d1 + cb + lanes))
            a2_0, a2_1 = vadd(b_0, vload(residual, d2 + cb)), vadd(b_1, vload(residual, d2 + cb + lanes))
            a3_0, a3_1 = vadd(b_0, vload(residual, d3 + cb)), vadd(b_1, vload(residual, d3 + cb + lanes))
            a4_0, a4_1 = vadd(b_0, vload(residual, d4 + cb)), vadd(b_1, vload(residual, d4 + cb + lanes))
            a5_0, a5_1 = vadd(b_0, vload(residual, d5 + cb)), vadd(b_1, vload(residual, d5 + cb + lanes))
            (a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1, a4_0, a4_1, a5_0, a5_1) = reduce_6x2(
                src, x0, sp, ws, w0, BLOCK, taken, K, clamp, low, high,
                a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1, a4_0, a4_1, a5_0, a5_1)
            vstore(dst, d0 + cb, a0_0)
            vstore(dst, d0 + cb + lanes, a0_1)
            vstore(dst, d1 + cb, a1_0)
            vstore(dst, d1 + cb + lanes, a1_1)
            vstore(dst, d2 + cb, a2_0)
            vstore(dst, d2 + cb + lanes, a2_1)
            vstore(dst, d3 + cb, a3_0)
            vstore(dst, d3 + cb + lanes, a3_1)
            vstore(dst, d4 + cb, a4_0)
            vstore(dst, d4 + cb + lanes, a4_1)
            vstore(dst, d5 + cb, a5_0)
            vstore(dst, d5 + cb + lanes, a5_1)
        p0 += PIXELS


@njit(cache=True)
def average_window(x, image, xh, xw, oh, ow, channels, pool, out, at):
    """out[at + c] = the mean of x[image + ih * xh + iw * xw + c] over output pixel (oh, ow)'s window, for
    c < channels: ShuffleNet v1's avgpool(x) beside its branch, read from the rows the chain has just
    expanded (still in cache) instead of a pooled tensor written and read back.  pool = (mode, H, W, SH,
    SW, PH, PW, KH, KW): mode 1 divides by the whole window (padding counted), 2 by its part inside the
    H x W image."""
    mode, H, W, sh, sw, ph, pw, KH, KW = pool
    top, left = oh * sh - ph, ow * sw - pw
    h0, h1, w0, w1 = max(0, top), min(H, top + KH), max(0, left), min(W, left + KW)
    scale = 1.0 / (KH * KW if mode == 1 else (h1 - h0) * (w1 - w0))
    lanes = vlanes(out)
    c = 0
    while c + lanes <= channels:
        total = vzeros(out)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                total = vadd(total, vload(x, image + ih * xh + iw * xw + c))
        vstore(out, at + c, vscale(total, scale))
        c += lanes
    for c in range(c, channels):
        value = 0.0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                value += x[image + ih * xh + iw * xw + c]
        out[at + c] = value * scale


@njit(cache=True)
def store_rows(row_out, rows, OW, CO, n, oh0, out, on, oh_, ow_, residual, beside, bn_, bh, bw, interleave,
               beside_channels, c_out, c3, low3, high3, pool):
    """The final pass of both chain kernels: ``rows`` projected output rows (row_out, pixels CO apart) from
    row oh0 of image n to ``out`` (strides on, oh_, ow_): the real c_out channels with the residual (when
    not empty) and the last clamp, or stored beside ``beside`` (see conv_pw_dw_pw_rows' interleave); with
    pool[0] a concat stores beside's average over each output pixel's window (average_window)."""
    lanes = vlanes(row_out)
    has_residual = residual.shape[0] > 0
    for r in range(rows):  # the real channels out, with the skip connection and the last clamp
        base = n * on + (oh0 + r) * oh_
        for ow in range(OW):
            source, target = (r * OW + ow) * CO, base + ow * ow_
            c = 0
            if interleave >= 3:  # a concat: beside's channels copied, then the result's as usual
                other = n * bn_ + (oh0 + r) * bh + ow * bw
                kept_at = target if interleave == 3 else target + c_out
                if pool[0]:
                    average_window(beside, n * bn_, bh, bw, oh0 + r, ow, beside_channels, pool, out, kept_at)
                    c = beside_channels
                while c + lanes <= beside_channels:
                    vstore(out, kept_at + c, vload(beside, other + c))
                    c += lanes
                for c in range(c, beside_channels):
                    out[kept_at + c] = beside[other + c]
                c = 0
                if interleave == 3:
                    target += beside_channels
            elif interleave:
                other = n * bn_ + (oh0 + r) * bh + ow * bw
                while c + lanes <= c_out:
                    value = vload(row_out, source + c)
                    if c3:
                        value = vclamp(value, low3, high3)
                    kept = vload(beside, other + c)
                    if interleave == 1:
                        vstore(out, target + 2 * c, vzip_low(kept, value))
                        vstore(out, target + 2 * c + lanes, vzip_high(kept, value))
                    else:
                        vstore(out, target + 2 * c, vzip_low(value, kept))
                        vstore(out, target + 2 * c + lanes, vzip_high(value, kept))
                    c += lanes
                for c in range(c, c_out):
                    value = row_out[source + c]
                    if c3:
                        value = min(max(value, low3), high3)
                    out[target + 2 * c + 2 - interleave] = value
                    out[target + 2 * c + interleave - 1] = beside[other + c]
                continue
            while c + lanes <= c_out:
                value = vload(row_out, source + c)
                if has_residual:
                    value = vadd(value, vload(residual, target + c))
                if c3:
                    value = vclamp(value, low3, high3)
                vstore(out, target + c, value)
                c += lanes
            for c in range(c, c_out):
                value = row_out[source + c]
                if has_residual:
                    value += residual[target + c]
                if c3:
                    value = min(max(value, low3), high3)
                out[target + c] = value


@njit(cache=True)
def stage_row(x, src, xw, xc, width, channels, stage, dst):
    """stage[dst + w * channels + c] = x[src + w * xw + c * xc] for a row of ``width`` pixels: an input row
    copied channels-last into a padded staging row.  A channels-last row is one contiguous run; three
    planes (an NCHW image seen channels-last) are interleaved a vector of each at a time."""
    lanes = vlanes(stage)
    if xc == 1 and xw == channels:  # in vectors: Numba's slice assignment ran 2.7x slower
        count = width * channels
        i = 0
        while i + lanes <= count:
            vstore(stage, dst + i, vload(x, src + i))
            i += lanes
        for i in range(i, count):
            stage[dst + i] = x[src + i]
        return
    w = 0
    if channels == 3 and xw == 1:
        while w + lanes <= width:
            vstore_interleaved3(stage, dst + 3 * w, vload(x, src + w), vload(x, src + xc + w),
                                vload(x, src + 2 * xc + w))
            w += lanes
    for w in range(w, width):
        for c in range(channels):
            stage[dst + w * channels + c] = x[src + w * xw + c * xc]


@njit(cache=True)
def stage_window(x, image, xh, xw, xc, top, H_in, W_in, C_in, stage, stage_rows, stage_row_size, left):
    """Input rows top .. top + stage_rows - 1 of the image at x[image] into the staging buffer, row r at
    stage[r * stage_row_size], ``left`` zero pixels before each row's first; rows outside the image zero."""
    for r in range(stage_rows):
        iy = top + r
        dst = r * stage_row_size + left * C_in
        if 0 <= iy < H_in:
            stage_row(x, image + iy * xh, xw, xc, W_in, C_in, stage, dst)
        else:
            stage[dst:dst + W_in * C_in] = 0


@njit(parallel=True, cache=True)
def conv_pw_dw_pw_rows(x, x_strides, stage_geometry, expand, expand_sources, expand_counts, expand_bias, taps,
                       taps_bias, project, project_sources, project_counts, project_bias, tail, tail_sources,
                       tail_counts, tail_bias, out, out_strides, residual, beside,
                       beside_strides, interleave, beside_channels, pool_mode, sizes, strides, pads, c_out, band_rows,
                       group_rows, clamps):
    """out = pointwise(depthwise(pointwise(x))) with each stage's bias and clamp; channels-last.

    x         flat input from its first element; x_strides (n, h, w, c) in elements (c 1 unless staged)
    stage_geometry  all zero for a pointwise first stage; for a dense KxK one, conv_maxpool_rows' ``conv``:
              its input rows staged channels-last in a zero-padded buffer (any x layout, no padded copy)
    expand, expand_sources, expand_counts, expand_bias: the first pointwise stage by output blocks
              (pointwise_pixels; a KxK stage's sources are offsets from a window's corner in the staging
              buffer), its C_mid outputs padded to whole blocks: the ring's channels
    taps      (3, 3, C_mid) depthwise weights in the ring's channel order, taps_bias (C_mid,)
    project, project_sources, project_counts, project_bias: the last pointwise stage, reading ring
              channels (a channel shuffle between the stages is folded into its sources)
    tail, tail_sources, tail_counts, tail_bias: more of the first stage, in blocks of 2 vectors where
              ``expand``'s are 3 (packing.expansion_layout's tail: each group's last outputs), stored in the
              ring after expand's channels; no blocks for none (a pointwise first stage only)
    out       flat output from its first element; out_strides (n, h, w); residual: (0,) or laid out like out
    beside    with ``interleave`` 1 (2): ShuffleNet v2's concat([beside, result]) (concat([result, beside]))
              followed by a shuffle of 2 groups, stored at once: out channel 2c + 1 (2c) is the result's
              channel c, 2c (2c + 1) beside's; with 3 (4) the plain concat of beside's beside_channels and
              the result (ShuffleNet v1's downsampling unit); beside is flat from its first element,
              beside_strides (n, h, w)
    pool_mode with a concat, 0: beside stored as it is; 1 (2): beside is the chain's input, and its
              average over the depthwise stage's window is stored (padding counted (not counted) in the
              divisor): avgpool(x) beside the branch, never written to memory
    sizes     (N, H, W, OH, OW); strides, pads: the depthwise stage's (sh, sw), (top, left)
    c_out     the real output channels
    band_rows output rows per job; group_rows: output rows computed together (narrow maps: the pointwise
              stages then run over several rows' pixels at once instead of a row's few blocks)
    clamps    (3, 3): per stage (apply?, low, high); the last stage's clamp follows the residual
    """
    N, H, W, OH, OW = sizes
    sh, sw = strides
    ph, pw = pads
    KH, KW, C = taps.shape
    CO = project.shape[0] * project.shape[2]
    xn, xh, xw, xc = x_strides
    H_in, W_in, C_in, conv_sh, conv_sw, conv_ph, conv_pw, stage_rows, stage_width = stage_geometry
    stage_row_size = stage_width * C_in
    on, oh_, ow_ = out_strides
    bn_, bh, bw = beside_strides
    width = max(W + pw, (OW - 1) * sw + KW)  # padded row: zero columns on both sides
    span = (group_rows - 1) * sh + KH  # input rows one group of output rows reads: the ring's slots
    bands = (OH + band_rows - 1) // band_rows
    tap_flat = taps.reshape(-1)
    c1, low1, high1 = clamps[0, 0] != 0, clamps[0, 1], clamps[0, 2]
    c2, low2, high2 = clamps[1, 0] != 0, clamps[1, 1], clamps[1, 2]
    c3, low3, high3 = clamps[2, 0] != 0, clamps[2, 1], clamps[2, 2]
    uniform = xh == W * xw  # consecutive input rows continue one pixel stride: one pointwise run
    # An output with no padded channels and no neighbour to interleave with is stored by the projection
    # itself, not copied from a row buffer by store_rows: a pass less.  With a residual only through
    # pointwise_pixels_residual (a pixel's blocks in turn): read a block at a time across the pixels, the
    # residual made ShuffleNet v1's units 7-12% slower.
    direct = interleave == 0 and CO == c_out and residual.shape[0] == 0
    direct_residual = (interleave == 0 and CO == c_out and residual.shape[0] > 0
                       and project.shape[2] == 2 * vlanes(taps) and project.shape[1] >= RESIDUAL_MIN_REDUCTION
                       and group_rows * OW >= PIXELS)
    pool = (pool_mode, H, W, sh, sw, ph, pw, KH, KW)
    tails, heads = tail.shape[0] > 0, expand.shape[0] * expand.shape[2]
    for job in prange(N * bands):
        n = job // bands
        first = (job % bands) * band_rows
        last = min(OH, first + band_rows)
        ring = np.zeros((span + 1) * width * C, taps.dtype)  # expanded rows, then a zero row for padding
        held = np.full(span, -1, np.int64)                   # the input row each ring slot holds
        ring_at = np.empty(span * W, np.int64)
        mid = np.empty(group_rows * OW * C, taps.dtype)
        mid_at = np.arange(group_rows * OW) * CO
        window = np.empty(KH, np.int64)
        row_out = np.empty(group_rows * OW * CO, taps.dtype)
        out_at = np.empty(group_rows * OW, np.int64)
        stage = np.zeros(stage_rows * stage_row_size, taps.dtype)  # padding columns stay zero
        for oh0 in range(first, last, group_rows):
            rows = min(group_rows, last - oh0)
            # The input rows this group reads that the ring lacks: consecutive, so one pointwise run.
            lo = max(0, oh0 * sh - ph)
            hi = min(H, (oh0 + rows - 1) * sh - ph + KH)
            while lo < hi and held[lo % span] == lo:
                lo += 1
            if lo < hi:
                count = 0
                for ih in range(lo, hi):
                    held[ih % span] = ih
                    for w in range(W):
                        ring_at[count] = ((ih % span) * width + pw + w) * C
                        count += 1
                if stage_rows:
                    for r in range(hi - lo):
                        stage_window(x, n * xn, xh, xw, xc, (lo + r) * conv_sh - conv_ph, H_in, W_in, C_in,
                                     stage, stage_rows, stage_row_size, conv_pw)
                        pointwise(stage, 0, conv_sw * C_in, W, expand, expand_sources, expand_counts, expand_bias,
                                  ring, ring_at[r * W:], c1, low1, high1)
                elif uniform:
                    pointwise(x, n * xn + lo * xh, xw, count, expand, expand_sources, expand_counts,
                              expand_bias, ring, ring_at, c1, low1, high1)
                    if tails:
                        pointwise(x, n * xn + lo * xh, xw, count, tail, tail_sources, tail_counts, tail_bias,
                                  ring[heads:], ring_at, c1, low1, high1)
                else:
                    for r in range(hi - lo):
                        pointwise(x, n * xn + (lo + r) * xh, xw, W, expand, expand_sources, expand_counts,
                                  expand_bias, ring, ring_at[r * W:], c1, low1, high1)
                        if tails:
                            pointwise(x, n * xn + (lo + r) * xh, xw, W, tail, tail_sources, tail_counts, tail_bias,
                                      ring[heads:], ring_at[r * W:], c1, low1, high1)
            for r in range(rows):
                for kh in range(KH):  # where each window row starts in the ring (the zero row outside the image)
                    ih = (oh0 + r) * sh - ph + kh
                    window[kh] = (ih % span if 0 <= ih < H else span) * width * C
                depthwise3x3_row(ring, window[0], window[1], window[2], tap_flat, taps_bias, mid[r * OW * C:], OW, sw,
                                 C, c2, low2, high2)
            if direct or (direct_residual and rows * OW >= PIXELS):
                for r in range(rows):
                    for ow in range(OW):
                        out_at[r * OW + ow] = n * on + (oh0 + r) * oh_ + ow * ow_
                if direct:
                    pointwise(mid, 0, C, rows * OW, project, project_sources, project_counts, project_bias, out,
                              out_at, c3, low3, high3)
                else:
                    pointwise_pixels_residual(mid, 0, C, rows * OW, project, project_sources, project_counts,
                                              project_bias, out, out_at, c3, low3, high3, residual)
                continue
            pointwise(mid, 0, C, rows * OW, project, project_sources, project_counts, project_bias, row_out,
                      mid_at, False, 0.0, 0.0)
            store_rows(row_out, rows, OW, CO, n, oh0, out, on, oh_, ow_, residual, beside, bn_, bh, bw, interleave,
                       beside_channels, c_out, c3, low3, high3, pool)


@njit(parallel=True, cache=True)
def conv_pw_dw_pw_parts(x, x_strides, expand, expand_sources, expand_counts, expand_bias, taps, taps_bias,
                        part_project, part_sources, part_counts, part_bias, part_blocks, partial, out, out_strides,
                        residual, beside, beside_strides, interleave, beside_channels, pool_mode, sizes, strides, pads,
                        c_out, clamps):
    """conv_pw_dw_pw_rows for maps too short for row bands (a 7x7 map at batch 1): a job owns one image and
    one part of the expanded channels (``part_blocks`` expansion blocks) and runs all three stages over the
    whole image for them: its expanded channels (a zero-bordered image buffer), their depthwise outputs,
    and the projection summed over those channels only, into partial[part, n] (pixels CO apart).  A
    second pass adds the parts and stores the rows as the band kernel does (store_rows).  No row is
    computed twice; the price is the partial sums, a few KB per part.

    part_project, part_sources, part_counts, part_bias: the projection split by parts of the ring's channels
    (numbaconv.packing.split_projection: sources relative to the part, the bias in part 0 only); partial
    (parts, N, OH * OW * CO).  Everything else as in conv_pw_dw_pw_rows.
    """
    N, H, W, OH, OW = sizes
    sh, sw = strides
    ph, pw = pads
    KH, KW, C = taps.shape
    BE, _, BLOCK = expand.shape
    S = part_project.shape[0]
    CO = part_project.shape[1] * part_project.shape[3]
    xn, xh, xw = x_strides
    on, oh_, ow_ = out_strides
    bn_, bh, bw = beside_strides
    width = max(W + pw, (OW - 1) * sw + KW)
    c1, low1, high1 = clamps[0, 0] != 0, clamps[0, 1], clamps[0, 2]
    c2, low2, high2 = clamps[1, 0] != 0, clamps[1, 1], clamps[1, 2]
    c3, low3, high3 = clamps[2, 0] != 0, clamps[2, 1], clamps[2, 2]
    uniform = xh == W * xw
    pool = (pool_mode, H, W, sh, sw, ph, pw, KH, KW)
    for job in prange(N * S):
        n = job // S
        part = job % S
        b0 = part * part_blocks
        b1 = min(BE, b0 + part_blocks)
        cp = (b1 - b0) * BLOCK
        c0 = b0 * BLOCK
        image = np.zeros((H + 1) * width * cp, taps.dtype)  # expanded rows, then a zero row for padding
        image_at = np.empty(H * W, np.int64)
        for ih in range(H):
            for w in range(W):
                image_at[ih * W + w] = (ih * width + pw + w) * cp
        if uniform:
            pointwise(x, n * xn, xw, H * W, expand[b0:b1], expand_sources[b0:b1], expand_counts[b0:b1],
                      expand_bias[c0:c0 + cp], image, image_at, c1, low1, high1)
        else:
            for ih in range(H):
                pointwise(x, n * xn + ih * xh, xw, W, expand[b0:b1], expand_sources[b0:b1],
                          expand_counts[b0:b1], expand_bias[c0:c0 + cp], image, image_at[ih * W:], c1, low1,
                          high1)
        part_taps = np.ascontiguousarray(taps[:, :, c0:c0 + cp]).reshape(-1)
        mid = np.empty(OH * OW * cp, taps.dtype)
        for oh in range(OH):
            top = oh * sh - ph
            r0 = (top if 0 <= top < H else H) * width * cp
            r1 = (top + 1 if 0 <= top + 1 < H else H) * width * cp
            r2 = (top + 2 if 0 <= top + 2 < H else H) * width * cp
            depthwise3x3_row(image, r0, r1, r2, part_taps, taps_bias[c0:c0 + cp], mid[oh * OW * cp:], OW, sw, cp,
                             c2, low2, high2)
        mid_at = np.arange(OH * OW) * CO
        pointwise(mid, 0, cp, OH * OW, part_project[part], part_sources[part], part_counts[part],
                  part_bias[part], partial[part, n], mid_at, False, 0.0, 0.0)
    for job in prange(N * OH):
        n = job // OH
        oh = job % OH
        row_out = partial[0, n, oh * OW * CO:(oh + 1) * OW * CO].copy()
        for part in range(1, S):
            row_out += partial[part, n, oh * OW * CO:(oh + 1) * OW * CO]
        store_rows(row_out, 1, OW, CO, n, oh, out, on, oh_, ow_, residual, beside, bn_, bh, bw, interleave,
                   beside_channels, c_out, c3, low3, high3, pool)


@njit(parallel=True, cache=True)
def conv_window_rows(x, x_strides, conv, weights, sources, counts, bias, out, sizes, band_rows, clamp, low, high):
    """out = clamp(conv(x) + bias), channels-last out, for a dense 2D convolution over few input channels (a
    network's stem called alone): each output row's window of input rows is staged channels-last in a
    zero-padded buffer (stage_window), then reduced over all KH * KW * C_in taps in one pointwise run
    (pointwise_pixels), stored straight into the row.  A 3-channel 3x3 stem is then one 27-long loop
    per register block, where the channel-vectorized kernel restarts a 9-long one per kernel row.

    x, x_strides, conv, weights, sources, counts, bias: as in conv_maxpool_rows (any input layout)
    out       (N, OH, OW, C) flat, C the packed channels (a whole number of blocks); sizes (N, OH, OW)
    band_rows output rows per job
    """
    N, OH, OW = sizes
    H_in, W_in, C_in, sh, sw, ph, pw, stage_rows, stage_width = conv
    C = weights.shape[0] * weights.shape[2]
    xn, xh, xw, xc = x_strides
    stage_row_size = stage_width * C_in
    bands = (OH + band_rows - 1) // band_rows
    for job in prange(N * bands):
        n = job // bands
        first = (job % bands) * band_rows
        stage = np.zeros(stage_rows * stage_row_size, bias.dtype)  # padding columns stay zero
        out_at = np.arange(OW) * C
        for oh in range(first, min(OH, first + band_rows)):
            stage_window(x, n * xn, xh, xw, xc, oh * sh - ph, H_in, W_in, C_in, stage, stage_rows, stage_row_size,
                         pw)
            pointwise(stage, 0, sw * C_in, OW, weights, sources, counts, bias, out[(n * OH + oh) * OW * C:], out_at,
                      clamp, low, high)


@njit(parallel=True, cache=True)
def conv_maxpool_rows(x, x_strides, conv, weights, sources, counts, bias, out, sizes, pool, c_out, band_rows, clamp,
                      low, high):
    """out = maxpool(clamp(conv(x) + bias)), channels-last out: a network's stem and the pooling after it, the
    convolution's output rows held in a ring (never in memory) while each pooled row reads its window.

    x         flat input from its first element, unpadded, any layout: x_strides (n, h, w, c) in elements
              (an NCHW image read through a channels-last view needs no copy first)
    conv      (H_in, W_in, C_in, SH, SW, PH, PW, rows, Wp): the convolution's input size, stride, top and left
              padding; each output row's window of ``rows`` input rows (dilation included) is staged
              channels-last in a zero-padded buffer of Wp pixels per row (stage_row: the padded copy of
              the whole input, a pass over memory, is never made)
    weights, sources, counts, bias: the convolution by output blocks (pointwise_pixels; sources are offsets
              from a window's corner in the staging buffer), its channels padded to whole blocks
    out       (N, OH, OW, c_out) flat; sizes (N, H, W, OH, OW): the convolution's H x W, the pooled OH x OW
    pool      (KH, KW, SH, SW, PH, PW): the pooling window, stride and padding (padded positions never win)
    band_rows pooled rows per job: a band recomputes the KH - SH convolution rows its neighbour also needs
    """
    N, H, W, OH, OW = sizes
    KH, KW, SH, SW, PH, PW = pool
    H_in, W_in, C_in, conv_sh, conv_sw, conv_ph, conv_pw, stage_rows, stage_width = conv
    C = weights.shape[0] * weights.shape[2]
    xn, xh, xw, xc = x_strides
    stage_row_size = stage_width * C_in
    width = max(W + PW, (OW - 1) * SW + KW)  # a ring row: columns outside the map stay -inf
    bands = (OH + band_rows - 1) // band_rows
    for job in prange(N * bands):
        lanes = vlanes(bias)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n = job // bands
        first = (job % bands) * band_rows
        last = min(OH, first + band_rows)
        ring = np.full((KH + 1) * width * C, -np.inf, bias.dtype)  # slot KH: the row outside the map
        held = np.full(KH, -1, np.int64)
        ring_at = np.empty(W, np.int64)
        window = np.empty(KH, np.int64)
        stage = np.zeros(stage_rows * stage_row_size, bias.dtype)  # padding columns stay zero
        for oh in range(first, last):
            for kh in range(KH):
                ih = oh * SH - PH + kh
                slot = KH
                if 0 <= ih < H:
                    slot = ih % KH
                    if held[slot] != ih:
                        held[slot] = ih
                        stage_window(x, n * xn, xh, xw, xc, ih * conv_sh - conv_ph, H_in, W_in, C_in, stage,
                                     stage_rows, stage_row_size, conv_pw)
                        for w in range(W):
                            ring_at[w] = (slot * width + PW + w) * C
                        pointwise(stage, 0, conv_sw * C_in, W, weights, sources, counts, bias, ring, ring_at,
                                  clamp, low, high)
                window[kh] = slot * width * C
            row = ((n * OH + oh) * OW) * c_out
            for ow in range(OW):
                column = ow * SW * C  # ring column ow * SW + kw holds input column ow * SW - PW + kw
                for c in range(0, c_out, lanes):
                    at = column + c
                    if KW == 3:  # a tree per window row: 9 maxes in a row were a 9-deep latency chain (2.6x slower)
                        acc = vmax(vmax(vload(ring, window[0] + at), vload(ring, window[0] + at + C)),
                                   vload(ring, window[0] + at + 2 * C))
                        for kh in range(1, KH):
                            acc = vmax(acc, vmax(vmax(vload(ring, window[kh] + at), vload(ring, window[kh] + at + C)),
                                                 vload(ring, window[kh] + at + 2 * C)))
                    else:
                        acc = vload(ring, window[0] + at)
                        for kh in range(KH):
                            for kw in range(KW):
                                acc = vmax(acc, vload(ring, window[kh] + at + kw * C))
                    at = row + ow * c_out + c
                    if c + lanes <= c_out:
                        vstore(out, at, acc)
                    else:  # the real channels of a last, partly filled vector
                        for lane in range(c_out - c):
                            vput(out, at + lane, acc, lane)
