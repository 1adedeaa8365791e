"""Layout passes: padding into a fresh channels-last buffer, channels-first <-> channels-last, shuffle.

Every array here is 5D: (N, D, H, W, C) channels-last or (N, C, D, H, W) channels-first; 1D and 2D
convolutions use size-1 leading spatial dims.  Each prange iteration owns its output rows.
"""
import numpy as np
from numba import njit, prange

from ..index import source_index, split_row


@njit(parallel=True, cache=True)
def pad_channels_last(x, out, pad_d, pad_h, pad_w, mode):
    """out[n, d, h, w, :] = x at the source of padded position (d - pad_d, h - pad_h, w - pad_w), or 0.

    x (N, D, H, W, C); out (N, D + pads, H + pads, W + pads, C).
    """
    N, D, H, W, C = x.shape
    _, PD, PH, PW, _ = out.shape
    for job in prange(N * PD * PH):
        n, d, h = split_row(job, PD, PH)
        sd = source_index(d - pad_d, D, mode)
        sh = source_index(h - pad_h, H, mode)
        for w in range(PW):
            sw = source_index(w - pad_w, W, mode)
            if sd < 0 or sh < 0 or sw < 0:
                for c in range(C):
                    out[n, d, h, w, c] = 0
            else:
                for c in range(C):
                    out[n, d, h, w, c] = x[n, sd, sh, sw, c]


# With fewer rows than ROWS_WITHOUT_TILES (a 1D signal is one row: one job, one core), rows are split into
# tiles of this many pixels.  Not always: with plenty of rows, whole rows copy faster (longer streams for
# the prefetcher: 8 x 64 x 4096 took 2.0 ms as rows, 3.0-3.3 ms as tiles; 1 x 64 x 4096 0.53 -> 0.26 ms).
ROW_TILE = 256


ROWS_WITHOUT_TILES = 8


@njit(cache=True)
def row_tiles(rows, width):
    """How many jobs each row of ``width`` pixels is split into."""
    if rows >= ROWS_WITHOUT_TILES:
        return 1
    return (width + ROW_TILE - 1) // ROW_TILE


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
def gather_channels_last(y, out, channel_source):
    """out[n, d, h, w, c] = y[n, d, h, w, channel_source[c]] (channels-last shuffle or unpadding)."""
    N, D, H, W, C = out.shape
    for job in prange(N * D * H):
        n, d, h = split_row(job, D, H)
        for w in range(W):
            for c in range(C):
                out[n, d, h, w, c] = y[n, d, h, w, channel_source[c]]


def shuffle_sources(channels: int, groups: int) -> np.ndarray:
    """Which channel lands at position j after a ShuffleNet shuffle (view (g, C/g), transpose, flatten)."""
    j = np.arange(channels, dtype=np.int64)
    return (j % groups) * (channels // groups) + j // groups
