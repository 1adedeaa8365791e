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

# Depthwise: a thread computes a strip of depthwise_rows(KH) output rows.  Channels-first blocks are
# 32 adjacent columns x DEPTHWISE_STRIPS strips; channels-last blocks 32 channels x DEPTHWISE_LAST_COLUMNS.
DEPTHWISE_COLUMNS, DEPTHWISE_STRIPS = 32, 4
DEPTHWISE_LAST_CHANNELS, DEPTHWISE_LAST_COLUMNS = 32, 8
DEPTHWISE_MAX_ROWS, DEPTHWISE_LAST_MAX_ROWS = 8, 4  # measured best on the H100 (perf/NOTES.md)


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def direct(pixels: int, channels_per_group: int, groups: int) -> tuple[tuple[int, int, int], int]:
    return (_ceil(pixels, TILE_M), _ceil(channels_per_group, TILE_N), groups), DIRECT_THREADS


def small_groups(pixels: int, groups: int) -> tuple[tuple[int, int], int]:
    return (_ceil(pixels, SMALL_GROUP_THREADS), groups), SMALL_GROUP_THREADS


def elementwise(count: int) -> tuple[int, int]:
    return max(1, _ceil(count, ELEMENTWISE_THREADS)), ELEMENTWISE_THREADS


def depthwise_rows(kernel_height: int, channels_last: bool) -> int:
    """Output rows per thread; fewer for tall kernels (whose walk is generated as straight-line code)."""
    return max(1, min(DEPTHWISE_LAST_MAX_ROWS if channels_last else DEPTHWISE_MAX_ROWS, 64 // kernel_height))


def depthwise(channels_last: bool, kernel_height: int, n: int, channels: int, out_dhw: tuple[int, int, int]):
    """(blocks, threads) for kernels/cuda/depthwise.conv_depthwise; jobs go on the grid's x dimension."""
    od, oh, ow = out_dhw
    rows = depthwise_rows(kernel_height, channels_last)
    if channels_last:
        blocks = (n * od * _ceil(oh, rows), _ceil(channels, DEPTHWISE_LAST_CHANNELS), _ceil(ow, DEPTHWISE_LAST_COLUMNS))
        return blocks, (DEPTHWISE_LAST_CHANNELS, DEPTHWISE_LAST_COLUMNS)
    blocks = (n * channels * od, _ceil(ow, DEPTHWISE_COLUMNS), _ceil(oh, DEPTHWISE_STRIPS * rows))
    return blocks, (DEPTHWISE_COLUMNS, DEPTHWISE_STRIPS)
