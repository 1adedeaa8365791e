"""Layout passes: padding into a fresh channels-last buffer, channels-first <-> channels-last, shuffle.

Every array here is 5D: (N, D, H, W, C) channels-last or (N, C, D, H, W) channels-first; 1D and 2D
convolutions use size-1 leading spatial dims.  Each prange iteration owns its output rows.
"""
import numpy as np
from numba import njit, prange

from ..index import source_index, split_row

TILE = 16


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


@njit(parallel=True, cache=True)
def channels_first_to_last(x, out, pad_d, pad_h, pad_w):
    """out[n, d + pad_d, h + pad_h, w + pad_w, c] = x[n, c, d, h, w]; out's border must already hold zeros.

    x (N, C, D, H, W), any strides; out (N, D + pads, H + pads, W + pads, C).
    """
    N, C, D, H, W = x.shape
    for job in prange(N * D * H):
        n, d, h = split_row(job, D, H)
        row = out[n, d + pad_d, h + pad_h]
        for c0 in range(0, C, TILE):  # a TILE x TILE block stays in L1 between its reads and its writes
            c1 = min(c0 + TILE, C)
            for w0 in range(0, W, TILE):
                for w in range(w0, min(w0 + TILE, W)):
                    for c in range(c0, c1):
                        row[w + pad_w, c] = x[n, c, d, h, w]


@njit(parallel=True, cache=True)
def channels_last_to_first(y, out, channel_source):
    """out[n, c, d, h, w] = y[n, d, h, w, channel_source[c]].

    The gather folds a channel shuffle, and the skipping of a kernel's padded channels, into the copy.
    """
    N, C, D, H, W = out.shape
    for job in prange(N * D * H):
        n, d, h = split_row(job, D, H)
        row = y[n, d, h]
        for w0 in range(0, W, TILE):  # TILE pixels' channel vectors stay in L1 while every channel is written
            w1 = min(w0 + TILE, W)
            for c in range(C):
                source = channel_source[c]
                for w in range(w0, w1):
                    out[n, c, d, h, w] = row[w, source]


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
