"""Layout passes: padding into a fresh channels-last buffer, channels-first <-> channels-last, shuffle.

Every array here is 5D: (N, D, H, W, C) channels-last or (N, C, D, H, W) channels-first; 1D and 2D
convolutions use size-1 leading spatial dims.  Each prange iteration owns its output rows.
"""
import numpy as np
from numba import njit, prange

from ..index import source_index, split_row
from .simd import vlanes, vload, vstore_interleaved3, vtranspose_copy


@njit(parallel=True, cache=True)
def pad_channels_last(x, out, pad_d, pad_h, pad_w, mode):
    """out[n, d, h, w, :] = x at the source of padded position (d - pad_d, h - pad_h, w - pad_w), or 0.

    x (N, D, H, W, C) C-contiguous; out (N, D + pads, H + pads, W + pads, C), paddings >= 0.  A row's
    interior is one contiguous run of W * C elements, copied as one slice assignment (element by element
    with per-pixel index arithmetic, a 3-channel image row copied at 3 GB/s; an element loop over the run
    still took 3-4x the slice's time: 8 x 56 x 56 x 64 0.71 -> 0.16 ms).
    """
    N, D, H, W, C = x.shape
    _, PD, PH, PW, _ = out.shape
    xs = x.reshape(-1)
    os = out.reshape(-1)
    run = W * C
    for job in prange(N * PD * PH):
        n, d, h = split_row(job, PD, PH)
        sd = source_index(d - pad_d, D, mode)
        sh = source_index(h - pad_h, H, mode)
        row = job * PW * C
        if sd < 0 or sh < 0:
            os[row:row + PW * C] = 0
            continue
        source = ((n * D + sd) * H + sh) * run
        interior = row + pad_w * C
        os[interior:interior + run] = xs[source:source + run]
        for w in range(PW):
            if pad_w <= w < pad_w + W:
                continue
            sw = source_index(w - pad_w, W, mode)
            if sw < 0:
                for c in range(C):
                    os[row + w * C + c] = 0
            else:
                for c in range(C):
                    os[row + w * C + c] = xs[source + sw * C + c]


# With fewer rows than ROWS_WITHOUT_TILES (a 1D signal is one row: one job, one core), rows are split into
# tiles of this many pixels.  Not always: with plenty of rows, whole rows copy faster (longer streams for
# the prefetcher: 8 x 64 x 4096 took 2.0 ms as rows, 3.0-3.3 ms as tiles; 1 x 64 x 4096 0.53 -> 0.26 ms).
ROW_TILE = 256


ROWS_WITHOUT_TILES = 8


@njit(parallel=True, cache=True)
def copy_edge_columns(x, out, pad_w, left, right, columns):
    """The columns of x's zero-padded rows that the SIMD kernel's edge blocks read (dispatch.edge_columns):
    out[n, d, h, e] = padded column e for e < left, padded column e - left + right for left <= e <
    columns, where padded column p is x[n, d, h, p - pad_w] inside x and 0 outside.

    x and out (N, D, H, W, C) C-contiguous, columns <= W: out has x's strides, so that the kernel reads
    either through the same index arithmetic; the rest of out's rows is left as it is.  Unlike a padded
    copy of the whole input, this writes only the few columns at each end of a row.
    """
    N, D, H, W, C = x.shape
    xs = x.reshape(-1)
    os = out.reshape(-1)
    for row in prange(N * D * H):
        start = row * W * C
        for e in range(columns):
            column = (e if e < left else e - left + right) - pad_w
            at = start + e * C
            if 0 <= column < W:
                os[at:at + C] = xs[start + column * C:start + column * C + C]
            else:
                os[at:at + C] = 0


@njit(cache=True)
def row_tiles(rows, width):
    """How many jobs each row of ``width`` pixels is split into."""
    if rows >= ROWS_WITHOUT_TILES:
        return 1
    return (width + ROW_TILE - 1) // ROW_TILE


@njit(parallel=True, cache=True)
def three_channels_to_last(x, out, pad_d, pad_h, pad_w):
    """channels_first_to_last for C-contiguous images of 3 channels (a network's RGB input): a vector of
    each plane's row interleaved in registers and stored as 3 vectors of pixels (the general copy's
    per-element strided stores ran at 2.4 GB/s)."""
    N, C, D, H, W = x.shape
    _, PD, PH, PW, _ = out.shape
    xs = x.reshape(-1)
    os = out.reshape(-1)
    plane = D * H * W
    for job in prange(N * D * H):
        lanes = vlanes(xs)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n, d, h = split_row(job, D, H)
        source = n * 3 * plane + (d * H + h) * W
        target = (((n * PD + d + pad_d) * PH + h + pad_h) * PW + pad_w) * 3
        w = 0
        while w + lanes <= W:
            vstore_interleaved3(os, target + 3 * w, vload(xs, source + w), vload(xs, source + plane + w),
                                vload(xs, source + 2 * plane + w))
            w += lanes
        for w in range(w, W):
            for c in range(3):
                os[target + 3 * w + c] = xs[source + c * plane + w]


@njit(parallel=True, cache=True)
def channels_first_to_last(x, out, pad_d, pad_h, pad_w):
    """out[n, d + pad_d, h + pad_h, w + pad_w, c] = x[n, c, d, h, w]; out's border must already hold zeros.

    x (N, C, D, H, W), any strides; out (N, D + pads, H + pads, W + pads, C).  One output row (all its
    pixels and channels) stays in cache while each input channel's row streams in.
    """
    N, C, D, H, W = x.shape
    tiles = row_tiles(N * D * H, W)
    tile = (W + tiles - 1) // tiles
    for job in prange(N * D * H * tiles):
        n, d, h = split_row(job // tiles, D, H)
        w0 = (job % tiles) * tile
        row = out[n, d + pad_d, h + pad_h]
        for c in range(C):
            source = x[n, c, d, h]
            for w in range(w0, min(W, w0 + tile)):
                row[w + pad_w, c] = source[w]


# The block transposes take a tile of rows per job: each of a channel block's planes is then read (or
# written) as one run of about PLANE_RUN elements, where a row per job left 128 channels' planes as 128
# streams of 224 bytes that the prefetchers could not follow.  From memory (buffers cycled past the L3)
# 1.14-1.26x faster at 8 x 64-128 x 56 x 56, 1.57x at 8 x 256 x 14 x 14; with both sides resident in
# the L3, 0.87-1.02x (perf/NOTES.md, session 16).  A tile's channels-last side stays under TILE_ELEMENTS,
# in L2, while the jobs of its channel blocks fill it.
PLANE_RUN = 512
TILE_ELEMENTS = 65536


@njit(cache=True)
def tile_rows(H, W, C):
    """Rows of an (H, W) plane per job of the block transposes."""
    return max(1, min(H, PLANE_RUN // W, TILE_ELEMENTS // (W * C)))


@njit(parallel=True, cache=True)
def channels_first_to_last_blocks(x, out, pad_d, pad_h, pad_w):
    """channels_first_to_last for a C-contiguous x with C and W at least one vector (``lanes``): each
    lanes x lanes block of (channels, pixels) is transposed in registers, so both sides move whole vectors
    (the scalar copy ran at 7-9 GB/s).  A row's last block overlaps the one before; channels past the last
    whole block are copied one by one.  Jobs are (tile of rows, block of channels): a 1D signal's single
    row still spreads over the cores.
    """
    N, C, D, H, W = x.shape
    _, PD, PH, PW, _ = out.shape
    xs = x.reshape(-1)
    os = out.reshape(-1)
    plane = D * H * W
    blocks = C // vlanes(x)
    rows = tile_rows(H, W, C)
    tiles = (H + rows - 1) // rows
    for job in prange(N * D * tiles * blocks):
        lanes = vlanes(xs)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n, d, tile = split_row(job // blocks, D, tiles)
        c0 = (job % blocks) * lanes
        for h in range(tile * rows, min(H, tile * rows + rows)):
            source = n * C * plane + (d * H + h) * W
            target = (((n * PD + d + pad_d) * PH + h + pad_h) * PW + pad_w) * C
            w0 = 0
            while w0 < W:
                w0 = min(w0, W - lanes)
                vtranspose_copy(xs, source + c0 * plane + w0, plane, os, target + w0 * C + c0, C)
                w0 += lanes
            if c0 == 0:
                for c in range(blocks * lanes, C):
                    for w in range(W):
                        os[target + w * C + c] = xs[source + c * plane + w]


@njit(parallel=True, cache=True)
def channels_last_to_first(y, out, channel_source):
    """out[n, c, d, h, w] = y[n, d, h, w, channel_source[c]].

    The gather folds a channel shuffle, and the skipping of a kernel's padded channels, into the copy.
    Each output channel's row is written as one contiguous stream; the input row stays in cache.  (A
    16 x 16 tiling that wrote all channels' rows in turn was 2.7x slower once the data left the cache.)
    """
    N, C, D, H, W = out.shape
    tiles = row_tiles(N * D * H, W)
    tile = (W + tiles - 1) // tiles
    for job in prange(N * D * H * tiles):
        n, d, h = split_row(job // tiles, D, H)
        w0 = (job % tiles) * tile
        row = y[n, d, h]
        for c in range(C):
            source = channel_source[c]
            target = out[n, c, d, h]
            for w in range(w0, min(W, w0 + tile)):
                target[w] = row[w, source]


@njit(parallel=True, cache=True)
def channels_last_to_first_blocks(y, out):
    """out[n, c, d, h, w] = y[n, d, h, w, c] for C-contiguous arrays with C_out and W at least one vector;
    y may hold more (padding) channels after the C_out real ones, and more columns after the W real ones
    (a wide-row buffer).  The transpose of channels_first_to_last_blocks, a lanes x lanes block in
    registers at a time, jobs (tile of rows, block of channels) as there.
    """
    N, C, D, H, W = out.shape
    CY = y.shape[4]
    YW = y.shape[3]
    ys = y.reshape(-1)
    os = out.reshape(-1)
    plane = D * H * W
    blocks = C // vlanes(y)
    rows = tile_rows(H, W, CY)
    tiles = (H + rows - 1) // rows
    for job in prange(N * D * tiles * blocks):
        lanes = vlanes(ys)  # inside the loop: a constant there (Numba passes outside values as arguments)
        n, d, tile = split_row(job // blocks, D, tiles)
        c0 = (job % blocks) * lanes
        for h in range(tile * rows, min(H, tile * rows + rows)):
            source = (((n * D + d) * H + h) * YW) * CY
            target = n * C * plane + (d * H + h) * W
            w0 = 0
            while w0 < W:
                w0 = min(w0, W - lanes)
                vtranspose_copy(ys, source + w0 * CY + c0, CY, os, target + c0 * plane + w0, plane)
                w0 += lanes
            if c0 == 0:
                for c in range(blocks * lanes, C):
                    for w in range(W):
                        os[target + c * plane + w] = ys[source + w * CY + c]


@njit(parallel=True, cache=True)
def gather_channels_last(y, out, channel_source):
    """out[n, d, h, w, c] = y[n, d, h, w, channel_source[c]] (channels-last shuffle or unpadding)."""
    N, D, H, W, C = out.shape
    for job in prange(N * D * H):
        n, d, h = split_row(job, D, H)
        for w in range(W):
            for c in range(C):
                out[n, d, h, w, c] = y[n, d, h, w, channel_source[c]]


@njit(parallel=True, cache=True)
def pack_output_blocks(grouped, packed):
    """packed[g, ob, kd, kh, kw, ci, j] = grouped[g, ob * B + j, ci, kd, kh, kw], 0 past the group's channels.

    grouped (G, C_out/G, C_in/G, KD, KH, KW), any strides (a transposed convolution's phase is a strided
    view); packed (G, OB, KD, KH, KW, C_in/G, B).  The weights of one output block are read a channel row
    at a time, so each read streams along the source's contiguous (c_in, taps) run.
    """
    G, OB, KD, KH, KW, CGI, B = packed.shape
    per_group = grouped.shape[1]
    for job in prange(G * OB):
        g = job // OB
        ob = job % OB
        for j in range(B):
            co = ob * B + j
            if co < per_group:
                for kd in range(KD):
                    for kh in range(KH):
                        for kw in range(KW):
                            for ci in range(CGI):
                                packed[g, ob, kd, kh, kw, ci, j] = grouped[g, co, ci, kd, kh, kw]
            else:
                for kd in range(KD):
                    for kh in range(KH):
                        for kw in range(KW):
                            for ci in range(CGI):
                                packed[g, ob, kd, kh, kw, ci, j] = 0


@njit(parallel=True, cache=True)
def split_column_phases(x, pad_h, pad_w, stride, mode):
    """The padded channels-first planes of x with each row split into its ``stride`` column phases.

    x (N, C, H, W), any strides; returns (N, C, H + pads, stride * PWS), PWS = ceil(padded width / stride):
    padded column j * stride + s of a row lands at s * PWS + j, so a stride-``stride`` walk along a row
    becomes a contiguous one.  Padding follows ``mode`` (numbaconv.kernels.index.PADDING_MODE_CODES).
    """
    N, C, H, W = x.shape
    PH = H + pad_h[0] + pad_h[1]
    PW = W + pad_w[0] + pad_w[1]
    PWS = (PW + stride - 1) // stride
    out = np.empty((N, C, PH, stride * PWS), x.dtype)
    for job in prange(N * C * PH):
        n = job // (C * PH)
        c = (job // PH) % C
        h = job % PH
        sh = source_index(h - pad_h[0], H, mode)
        row = out[n, c, h]
        for s in range(stride):
            for j in range(PWS):
                w = j * stride + s
                sw = source_index(w - pad_w[0], W, mode) if w < PW else -1
                row[s * PWS + j] = x[n, c, sh, sw] if sh >= 0 and sw >= 0 else 0
    return out


def shuffle_sources(channels: int, groups: int) -> np.ndarray:
    """Which channel lands at position j after a ShuffleNet shuffle (view (g, C/g), transpose, flatten)."""
    j = np.arange(channels, dtype=np.int64)
    return (j % groups) * (channels // groups) + j // groups
