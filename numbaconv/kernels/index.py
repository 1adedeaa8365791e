"""Index helpers shared by the CPU and CUDA kernels (plain @njit, callable from both)."""
from numba import njit

from ..dispatch import tap_range as _tap_range

# Padding modes as kernel integers (the spec's strings are mapped once, at the API edge).
ZEROS, REFLECT, REPLICATE, CIRCULAR = 0, 1, 2, 3
PADDING_MODE_CODES = {"zeros": ZEROS, "reflect": REFLECT, "replicate": REPLICATE, "circular": CIRCULAR}


@njit(cache=True, inline="always")
def source_index(i, length, mode):
    """Input index that padded position ``i`` (in [-pad, length + pad)) reads; -1 means a zero."""
    if 0 <= i < length:
        return i
    if mode == REFLECT:  # the spec guarantees pad < length
        return -i if i < 0 else 2 * (length - 1) - i
    if mode == REPLICATE:
        return 0 if i < 0 else length - 1
    if mode == CIRCULAR:  # the spec guarantees pad <= length
        return i + length if i < 0 else i - length
    return -1


@njit(cache=True, inline="always")
def gathered_index(t, stride, length):
    """For a transposed convolution: the input index t / stride when exact and in [0, length), else -1."""
    if t < 0 or t % stride != 0 or t // stride >= length:
        return -1
    return t // stride


@njit(cache=True, inline="always")
def split_row(job, depth, height):
    """(n, d, h) of row ``job`` of an (N, depth, height, ...) array, rows numbered in C order."""
    return job // (depth * height), (job // height) % depth, job % height


@njit(cache=True, inline="always")
def start_with_bias(row, bias):
    """row[:] = bias, or zeros for an empty (absent) bias: where an output pixel's sums begin."""
    if bias.shape[0] > 0:
        for c in range(row.shape[0]):
            row[c] = bias[c]
    else:
        for c in range(row.shape[0]):
            row[c] = 0


# The taps of a kernel axis that land inside the input (zero padding skipped), compiled for the kernels.
tap_range = njit(inline="always")(_tap_range)


@njit(cache=True, inline="always")
def ceil_div(a, b):
    """ceil(a / b) for b > 0, any sign of a."""
    return -((-a) // b)


def leading(values, count, fill):
    """``values`` padded in front with ``fill`` to ``count`` entries: 1D/2D sizes as 3D (or 1D as 2D)."""
    return (fill,) * (count - len(values)) + tuple(values)


def element_strides(shape5, channels_last):
    """Element strides of (n, c, d, h, w) for a C-contiguous array stored channels-first or -last.

    ``shape5`` is the logical (N, C, D, H, W) shape (plain Python, for kernel arguments).
    """
    n, c, d, h, w = shape5
    if channels_last:
        return (d * h * w * c, 1, h * w * c, w * c, c)
    return (c * d * h * w, d * h * w, h * w, w, 1)
