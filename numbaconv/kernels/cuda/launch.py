"""Launch geometry of every CUDA kernel family, in one place.

Each function returns (blocks, threads) for one launch; tile sizes are the kernels' compile-time
constants, imported from here so that a kernel and its launch cannot disagree.
"""
from __future__ import annotations

# Implicit-GEMM direct convolution: a block computes TILE_M output pixels x TILE_N output channels of one
# group; each of its DIRECT_THREADS threads keeps THREAD_M x THREAD_N accumulators; reduction chunks of
# TILE_K input channels at one kernel tap.
TILE_M, TILE_N, TILE_K = 128, 64, 8
THREAD_M, THREAD_N = 8, 4
DIRECT_THREADS = (TILE_M // THREAD_M) * (TILE_N // THREAD_N)

# Small groups (ResNeXt's 4 channels per group): one thread per (output pixel, group), all of the
# group's outputs in registers; at most SMALL_GROUP_OUTPUTS of them.
SMALL_GROUP_OUTPUTS = 16
SMALL_GROUP_THREADS = 128

# Element-wise families (transposed, shuffle): one thread per output element, 1D blocks.
ELEMENTWISE_THREADS = 256

# Depthwise, channels-first: a warp of 32 adjacent output columns, DEPTHWISE_STRIPS strips of
# DEPTHWISE_ROWS output rows per block; channels-last: 32 channels x 8 columns per block.
DEPTHWISE_COLUMNS, DEPTHWISE_STRIPS, DEPTHWISE_ROWS = 32, 4, 8
DEPTHWISE_LAST_CHANNELS, DEPTHWISE_LAST_COLUMNS = 32, 8


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def direct(pixels: int, channels_per_group: int, groups: int) -> tuple[tuple[int, int, int], int]:
    return (_ceil(pixels, TILE_M), _ceil(channels_per_group, TILE_N), groups), DIRECT_THREADS


def small_groups(pixels: int, groups: int) -> tuple[tuple[int, int], int]:
    return (_ceil(pixels, SMALL_GROUP_THREADS), groups), SMALL_GROUP_THREADS


def elementwise(count: int) -> tuple[int, int]:
    return max(1, _ceil(count, ELEMENTWISE_THREADS)), ELEMENTWISE_THREADS


def depthwise_channels_first(out_width: int, out_height: int, planes: int):
    blocks = (_ceil(out_width, DEPTHWISE_COLUMNS), _ceil(out_height, DEPTHWISE_STRIPS * DEPTHWISE_ROWS), planes)
    return blocks, (DEPTHWISE_COLUMNS, DEPTHWISE_STRIPS)


def depthwise_channels_last(channels: int, out_width: int, rows: int):
    blocks = (_ceil(channels, DEPTHWISE_LAST_CHANNELS), _ceil(out_width, DEPTHWISE_LAST_COLUMNS), rows)
    return blocks, (DEPTHWISE_LAST_CHANNELS, DEPTHWISE_LAST_COLUMNS)
