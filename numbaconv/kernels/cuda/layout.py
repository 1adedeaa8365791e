"""Channel shuffle on the GPU (mirror of kernels/cpu/layout.py): one thread per element, a gather."""
from __future__ import annotations

from numba import cuda


@cuda.jit
def channel_gather(x, xs, out, os, sizes, channel_source):
    """out[n, c, s] = x[n, channel_source[c], s] over flat spatial positions s; sizes: N, C, S."""
    n_, c_, s_ = sizes[0], sizes[1], sizes[2]
    index = cuda.grid(1)
    if index >= n_ * c_ * s_:
        return
    s = index % s_
    c = (index // s_) % c_
    n = index // (s_ * c_)
    out[n * os[0] + c * os[1] + s * os[2]] = x[n * xs[0] + channel_source[c] * xs[1] + s * xs[2]]
