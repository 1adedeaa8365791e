"""Launch geometry of every CUDA kernel family, in one place.

Each function returns (blocks, threads) for one launch; tile sizes are the kernels' compile-time
constants, imported from here so that a kernel and its launch cannot disagree.
"""
from __future__ import annotations

# Implicit-GEMM direct convolution: a block computes TILE_M output pixels x TILE_N output channels of one
# group, each of its THREADS threads THREAD_M x THREAD_N of them, over reduction chunks of TILE_K.
TILE_M, TILE_N, TILE_K = 64, 64, 8
THREAD_M, THREAD_N = 4, 4
DIRECT_THREADS = (TILE_M // THREAD_M) * (TILE_N // THREAD_N)

# Element-wise families (depthwise, transposed, shuffle): one thread per output element, 1D blocks.
ELEMENTWISE_THREADS = 256
# Channels-first depthwise: a block row of 32 adjacent output columns (one warp, coalesced) x 8 rows.
DEPTHWISE_COLUMNS, DEPTHWISE_ROWS = 32, 8


def direct(pixels: int, channels_per_group: int, groups: int) -> tuple[tuple[int, int, int], int]:
    return ((pixels + TILE_M - 1) // TILE_M, (channels_per_group + TILE_N - 1) // TILE_N, groups), DIRECT_THREADS


def elementwise(count: int) -> tuple[int, int]:
    return max(1, (count + ELEMENTWISE_THREADS - 1) // ELEMENTWISE_THREADS), ELEMENTWISE_THREADS


def depthwise_channels_first(out_width: int, out_height: int, planes: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    blocks = ((out_width + DEPTHWISE_COLUMNS - 1) // DEPTHWISE_COLUMNS,
              (out_height + DEPTHWISE_ROWS - 1) // DEPTHWISE_ROWS, planes)
    return blocks, (DEPTHWISE_COLUMNS, DEPTHWISE_ROWS)
