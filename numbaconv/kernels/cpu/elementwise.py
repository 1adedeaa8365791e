"""Elementwise passes of a network (the residual add), parallel and fused with the activation after them."""
from numba import njit, prange

ADD_CHUNK = 16384  # elements per prange iteration: 64 KiB of float32, enough to amortise the scheduling


@njit(parallel=True, cache=True, fastmath=False)
def add_clamped(x, y, out, clamp, low, high):
    """out = x + y, clipped to [low, high] when ``clamp`` (NaN passes through, as in np.clip).

    x, y, out: 1D arrays of one length (C-contiguous buffers flattened); out may be x or y.
    """
    size = x.shape[0]
    for chunk in prange((size + ADD_CHUNK - 1) // ADD_CHUNK):
        for i in range(chunk * ADD_CHUNK, min(size, (chunk + 1) * ADD_CHUNK)):
            value = x[i] + y[i]
            if clamp:
                if value < low:
                    value = low
                elif value > high:
                    value = high
            out[i] = value
