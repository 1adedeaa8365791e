"""Elementwise passes of a network (the residual add), parallel and fused with the activation after them."""
from numba import njit, prange

from .simd import vadd, vclamp, vlanes, vload, vstore

ADD_CHUNK = 16384  # elements per prange iteration: 64 KiB of float32, enough to amortise the scheduling


@njit(parallel=True, cache=True, fastmath=False)
def add_clamped(x, y, out, clamp, low, high):
    """out = x + y, clipped to [low, high] when ``clamp`` (NaN passes through, as in np.clip).

    x, y, out: 1D arrays of one length (C-contiguous buffers flattened); out may be x or y.  Whole vectors
    (the element loop's clamp branches kept LLVM from vectorizing it: 56x56x256 took 0.22 ms against
    NumPy's single-threaded add at 0.13), then the tail element by element.
    """
    size = x.shape[0]
    for chunk in prange((size + ADD_CHUNK - 1) // ADD_CHUNK):
        lanes = vlanes(x)  # inside the loop: a constant there (Numba passes outside values as arguments)
        start = chunk * ADD_CHUNK
        stop = min(size, start + ADD_CHUNK)
        whole = start + (stop - start) // lanes * lanes
        for i in range(start, whole, lanes):
            value = vadd(vload(x, i), vload(y, i))
            vstore(out, i, vclamp(value, low, high) if clamp else value)
        for i in range(whole, stop):
            value = x[i] + y[i]
            if clamp:
                if value < low:
                    value = low
                elif value > high:
                    value = high
            out[i] = value
