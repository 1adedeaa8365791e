"""Winograd F(4x4, 3x3): a dense 3x3, stride-1, undilated 2D convolution in three passes.

Each 4x4 block of output pixels (a tile) comes from the 6x6 input patch around it:
    Y = A^T [ (G g G^T) * (B^T d B) ] A       (Lavin & Gray, "Fast Algorithms for Convolutional Neural
                                               Networks", 2016; * is a sum over input channels)
so the channel reduction runs once per transformed position (36 per tile) instead of once per output
pixel and tap (16 x 9 = 144): 4x fewer multiply-adds, traded for two linear passes over the data.

    winograd_input   x (N, H, W, C) -> v (36, T, C):  B^T d B of every tile's patch, zero padding skipped
    winograd_gemm    v (36, T, C) x u (36, OB, C, BLOCK) -> m (36, T, OB * BLOCK): 36 independent GEMMs
    winograd_output  m -> out (N, OH, OW, K): A^T m A, plus bias and residual, clipped with ``clamp``

The GEMM is stored position-major (36, T, C): each of its jobs reads one position's (tiles, C) rows and one
block of weights (C x BLOCK, a few KB: it stays in L1 across the job's tiles).  A tile-major (T, 36, C)
layout through the grouped SIMD kernel read every weight block once per 6 tiles, 2.4x slower at
8 x 64 x 56 x 56 (perf/NOTES.md, session 16).  CPU only: the CUDA kernels compute every spec directly.
"""
import numpy as np
from numba import njit, prange

from ..index import split_row
from .direct import FASTMATH
from .simd import vfma, vlanes, vload, vsplat, vstore, vzeros

TILE = 4  # output pixels per tile side: F(4x4, 3x3)
PATCH = TILE + 2  # input pixels per patch side
POSITIONS = PATCH * PATCH
GEMM_TILES = 48  # tiles per GEMM job: a multiple of the 6-tile register block

# B^T (6x6), G (6x3), A^T (4x6) for the points 0, 1, -1, 2, -2 (and infinity).
INPUT_MATRIX = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
WEIGHT_MATRIX = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
OUTPUT_MATRIX = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                         np.float64)


# One pass's transformed input and products together (at least twice the packed weights, which every
# pass reads again): they stay in the 32 MB L3 between the three kernels instead of going to memory
# (2-4 MB measured alike at 8 x 64 x 56 x 56, 8 MB slower).
CHUNK_BYTES = 4 << 20


def tiles(out_height: int, out_width: int) -> tuple[int, int]:
    """(tile rows, tile columns) covering an out_height x out_width output."""
    return -(-out_height // TILE), -(-out_width // TILE)


def chunk_rows(total_rows: int, tile_columns: int, in_channels: int, out_padded: int, itemsize: int,
               weight_bytes: int, threads: int) -> int:
    """Tile rows (of all images, N * tile_rows in all) per pass of the three kernels: passes of equal
    size holding at most about CHUNK_BYTES of transformed input (36, rows * tile_columns, in_channels)
    and products (..., out_padded), in a multiple of ``threads`` rows (the transforms' jobs are rows)."""
    row_bytes = POSITIONS * tile_columns * (in_channels + out_padded) * itemsize
    budget = max(CHUNK_BYTES, 2 * weight_bytes)
    passes = -(-total_rows * row_bytes // budget)
    rows = -(-total_rows // passes)
    return min(total_rows, -(-rows // threads) * threads)


# The input and output transforms use sums only: Numba types an integer times a float32 as float64, which
# made both passes convert every value to double and back (half the vector width: the input pass 1.7-1.8x
# and the output pass 1.4-1.6x slower).
@njit(inline="always")
def _times4(a):
    return (a + a) + (a + a)


@njit(inline="always")
def _input_column(d0, d1, d2, d3, d4, d5):
    """B^T applied to one column of a patch (INPUT_MATRIX's rows)."""
    p = d4 - _times4(d2)
    q = d3 - _times4(d1)
    s = d4 - d2
    t = d3 - d1
    t = t + t
    return _times4(d0 - d2) + s, p + q, p - q, s + t, s - t, _times4(d1 - d3) + (d5 - d3)


@njit(inline="always")
def _output_column(m0, m1, m2, m3, m4, m5):
    """A^T applied to one column of a transformed tile (OUTPUT_MATRIX's rows)."""
    a = m1 + m2
    b = m1 - m2
    c = m3 + m4
    d = m3 - m4
    d2 = d + d
    return m0 + a + c, b + d2, a + _times4(c), b + _times4(d2) + m5


@njit(inline="always")
def _weight_column(g0, g1, g2):
    """G applied to one column of a 3x3 kernel (WEIGHT_MATRIX's rows)."""
    return (g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, g0 / 24 + g1 / 12 + g2 / 6, g0 / 24 - g1 / 12 + g2 / 6,
            g2)


@njit(parallel=True, cache=True, fastmath=FASTMATH)  # arcp: the divisions by 4, 6, 12, 24 become products
def winograd_weights(w, packed):
    """packed[i * 6 + j, o // B, c, o % B] = (G w[o, c] G^T)[i, j], in float64, rounded once to packed's dtype.

    w (C_out, C_in, 3, 3), any strides; packed (36, OB, C_in, B) with OB * B >= C_out: every element
    written, the padding channels' zeros included.  Numba rather than NumPy: a matmul pair over a 256 x 256
    layer took 32 ms, which a public call (weights packed per call) pays every time.
    """
    O, C = w.shape[:2]
    _, OB, _, B = packed.shape
    for job in prange(OB * C):  # a job fills one (block, input channel) line of every position
        ob = job // C
        c = job % C
        # The block's B output channels are the vector lanes of every step (1.6x over one channel at a time).
        kernel = np.zeros((3, 3, B))
        half = np.empty((PATCH, 3, B))  # G w: rows transformed
        # The 36 lines lie OB * C_in * B elements apart, in one L1 set at 64 channels: filled here and
        # stored whole, not element by element across the 36 (3x faster).
        lines = np.empty((POSITIONS, B))
        for j in range(min(B, O - ob * B)):
            for r in range(3):
                for k in range(3):
                    kernel[r, k, j] = w[ob * B + j, c, r, k]
        for k in range(3):
            for j in range(B):
                r0, r1, r2, r3, r4, r5 = _weight_column(kernel[0, k, j], kernel[1, k, j], kernel[2, k, j])
                half[0, k, j] = r0
                half[1, k, j] = r1
                half[2, k, j] = r2
                half[3, k, j] = r3
                half[4, k, j] = r4
                half[5, k, j] = r5
        for i in range(PATCH):
            row = i * PATCH
            for j in range(B):
                r0, r1, r2, r3, r4, r5 = _weight_column(half[i, 0, j], half[i, 1, j], half[i, 2, j])
                lines[row, j] = r0
                lines[row + 1, j] = r1
                lines[row + 2, j] = r2
                lines[row + 3, j] = r3
                lines[row + 4, j] = r4
                lines[row + 5, j] = r5
        for position in range(POSITIONS):
            for j in range(B):
                packed[position, ob, c, j] = lines[position, j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def winograd_input(x, v, pad_top, pad_left, tile_rows, tile_columns, first_row):
    """v[i * 6 + j, tile, c] = (B^T d B)[i, j] for each tile's 6x6 patch d of channel c.

    x (N, H, W, C), any strides (a channels-first array seen channels-last is read in place); v (36,
    rows * tile_columns, C) C-contiguous, for the ``rows`` tile rows from ``first_row`` on (of the
    N * tile_rows, image-major).  Tile (th, tw)'s patch starts at input pixel (th * 4 - pad_top,
    tw * 4 - pad_left); pixels outside the input are zeros (padding never read).  Each job owns one row
    of tiles of one image.
    """
    N, H, W, C = x.shape
    for job in prange(v.shape[1] // tile_columns):
        n = (first_row + job) // tile_rows
        th = (first_row + job) % tile_rows
        patch = np.empty((PATCH, PATCH, C), v.dtype)
        half = np.empty((PATCH, PATCH, C), v.dtype)  # B^T d: columns transformed
        top = th * TILE - pad_top
        for tw in range(tile_columns):
            left = tw * TILE - pad_left
            for i in range(PATCH):
                for j in range(PATCH):
                    if 0 <= top + i < H and 0 <= left + j < W:
                        for c in range(C):
                            patch[i, j, c] = x[n, top + i, left + j, c]
                    else:
                        for c in range(C):
                            patch[i, j, c] = 0
            for j in range(PATCH):
                for c in range(C):
                    r0, r1, r2, r3, r4, r5 = _input_column(patch[0, j, c], patch[1, j, c], patch[2, j, c],
                                                           patch[3, j, c], patch[4, j, c], patch[5, j, c])
                    half[0, j, c] = r0
                    half[1, j, c] = r1
                    half[2, j, c] = r2
                    half[3, j, c] = r3
                    half[4, j, c] = r4
                    half[5, j, c] = r5
            tile = job * tile_columns + tw
            for i in range(PATCH):
                row = i * PATCH
                for c in range(C):
                    r0, r1, r2, r3, r4, r5 = _input_column(half[i, 0, c], half[i, 1, c], half[i, 2, c],
                                                           half[i, 3, c], half[i, 4, c], half[i, 5, c])
                    v[row, tile, c] = r0
                    v[row + 1, tile, c] = r1
                    v[row + 2, tile, c] = r2
                    v[row + 3, tile, c] = r3
                    v[row + 4, tile, c] = r4
                    v[row + 5, tile, c] = r5


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def winograd_gemm(v, u, m):
    """m[p, t, ob * BLOCK + j] = sum_c v[p, t, c] * u[p, ob, c, j]: 36 GEMMs (one per position p).

    v (36, T, C), u (36, OB, C, BLOCK) with BLOCK two vectors, m (36, T, OB * BLOCK); all C-contiguous.
    A job is one position, one block of output channels and up to GEMM_TILES tiles, in blocks of 6 tiles
    x 2 vectors (12 accumulators); the last block of the last job overlaps the one before it (rewriting
    equal values), and fewer than 6 tiles in all go one at a time.
    """
    P, T, C = v.shape
    _, OB, _, BLOCK = u.shape
    chunks = (T + GEMM_TILES - 1) // GEMM_TILES
    vs = v.reshape(-1)
    us = u.reshape(-1)
    ms = m.reshape(-1)
    K = OB * BLOCK
    for job in prange(P * OB * chunks):
        lanes = vlanes(us)  # inside the loop: a constant there (Numba passes outside values as arguments)
        p, ob, chunk = split_row(job, OB, chunks)
        first = chunk * GEMM_TILES
        last = min(T, first + GEMM_TILES)
        w0 = (p * OB + ob) * C * BLOCK
        if T >= 6:
            t = first
            while t < last:
                t = min(t, T - 6)
                x0 = (p * T + t) * C
                a0_0 = a0_1 = a1_0 = a1_1 = a2_0 = a2_1 = vzeros(us)
                a3_0 = a3_1 = a4_0 = a4_1 = a5_0 = a5_1 = a0_0
                for c in range(C):
                    w_0 = vload(us, w0 + c * BLOCK)
                    w_1 = vload(us, w0 + c * BLOCK + lanes)
                    b = vsplat(vs, x0 + c)
                    a0_0 = vfma(b, w_0, a0_0)
                    a0_1 = vfma(b, w_1, a0_1)
                    b = vsplat(vs, x0 + C + c)
                    a1_0 = vfma(b, w_0, a1_0)
                    a1_1 = vfma(b, w_1, a1_1)
                    b = vsplat(vs, x0 + 2 * C + c)
                    a2_0 = vfma(b, w_0, a2_0)
                    a2_1 = vfma(b, w_1, a2_1)
                    b = vsplat(vs, x0 + 3 * C + c)
                    a3_0 = vfma(b, w_0, a3_0)
                    a3_1 = vfma(b, w_1, a3_1)
                    b = vsplat(vs, x0 + 4 * C + c)
                    a4_0 = vfma(b, w_0, a4_0)
                    a4_1 = vfma(b, w_1, a4_1)
                    b = vsplat(vs, x0 + 5 * C + c)
                    a5_0 = vfma(b, w_0, a5_0)
                    a5_1 = vfma(b, w_1, a5_1)
                o = (p * T + t) * K + ob * BLOCK
                vstore(ms, o, a0_0)
                vstore(ms, o + lanes, a0_1)
                vstore(ms, o + K, a1_0)
                vstore(ms, o + K + lanes, a1_1)
                vstore(ms, o + 2 * K, a2_0)
                vstore(ms, o + 2 * K + lanes, a2_1)
                vstore(ms, o + 3 * K, a3_0)
                vstore(ms, o + 3 * K + lanes, a3_1)
                vstore(ms, o + 4 * K, a4_0)
                vstore(ms, o + 4 * K + lanes, a4_1)
                vstore(ms, o + 5 * K, a5_0)
                vstore(ms, o + 5 * K + lanes, a5_1)
                t += 6
        else:
            for t in range(first, last):
                x0 = (p * T + t) * C
                a_0 = a_1 = vzeros(us)
                for c in range(C):
                    b = vsplat(vs, x0 + c)
                    a_0 = vfma(b, vload(us, w0 + c * BLOCK), a_0)
                    a_1 = vfma(b, vload(us, w0 + c * BLOCK + lanes), a_1)
                o = (p * T + t) * K + ob * BLOCK
                vstore(ms, o, a_0)
                vstore(ms, o + lanes, a_1)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def winograd_output(m, bias, residual, out, tile_rows, tile_columns, first_row, clamp, low, high):
    """out[n, 4 * th + i, 4 * tw + j, k] = (A^T m A)[i, j] of tile (th, tw)'s channel k, plus bias[k] and
    residual[n, oh, ow, k], clipped to [low, high] with ``clamp`` (NaN passes through); the last tiles'
    pixels past the output are dropped.

    m (36, rows * tile_columns, K_padded) from winograd_gemm, the tile rows from ``first_row`` on (as in
    winograd_input); bias (K,) or (0,); residual like out, or (0, 0, 0, 0); out (N, OH, OW, K), any
    strides (a channels-first result seen channels-last is written in place).
    """
    N, OH, OW, K = out.shape
    has_bias = bias.shape[0] > 0
    has_residual = residual.shape[0] > 0
    for job in prange(m.shape[1] // tile_columns):
        n = (first_row + job) // tile_rows
        th = (first_row + job) % tile_rows
        half = np.empty((TILE, PATCH, K), m.dtype)  # A^T m: columns transformed
        row = np.empty((TILE, K), m.dtype)
        for tw in range(tile_columns):
            tile = job * tile_columns + tw
            for j in range(PATCH):
                for k in range(K):
                    r0, r1, r2, r3 = _output_column(m[j, tile, k], m[PATCH + j, tile, k], m[2 * PATCH + j, tile, k],
                                                    m[3 * PATCH + j, tile, k], m[4 * PATCH + j, tile, k],
                                                    m[5 * PATCH + j, tile, k])
                    half[0, j, k] = r0
                    half[1, j, k] = r1
                    half[2, j, k] = r2
                    half[3, j, k] = r3
            for i in range(TILE):
                oh = th * TILE + i
                if oh >= OH:
                    break
                for k in range(K):
                    r0, r1, r2, r3 = _output_column(half[i, 0, k], half[i, 1, k], half[i, 2, k], half[i, 3, k],
                                                    half[i, 4, k], half[i, 5, k])
                    row[0, k] = r0
                    row[1, k] = r1
                    row[2, k] = r2
                    row[3, k] = r3
                if has_bias:
                    for j in range(TILE):
                        for k in range(K):
                            row[j, k] += bias[k]
                for j in range(min(TILE, OW - tw * TILE)):
                    ow = tw * TILE + j
                    if has_residual:
                        for k in range(K):
                            row[j, k] += residual[n, oh, ow, k]
                    if clamp:
                        for k in range(K):
                            value = row[j, k]
                            row[j, k] = min(max(value, low), high) if value == value else value
                    for k in range(K):
                        out[n, oh, ow, k] = row[j, k]
