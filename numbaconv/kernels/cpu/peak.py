"""Machine ceilings for the benchmark: a register-resident FMA loop and a parallel copy."""
from numba import njit, prange

from .simd import vfma, vlanes, vload, vstore

_CHAINS = 10  # independent accumulators: enough to cover FMA latency x throughput on AVX2 and AVX-512


@njit(parallel=True, cache=True)
def fma_loop(buf, sink, iterations, threads):
    """Each of ``threads`` iterations runs ``iterations`` x 10 vector FMAs on registers; returns the FLOPs."""
    lanes = vlanes(buf)
    for t in prange(threads):
        m = vload(buf, 0)
        c = vload(buf, lanes)
        a0 = vload(buf, 0)
        a1 = vload(buf, 0)
        a2 = vload(buf, 0)
        a3 = vload(buf, 0)
        a4 = vload(buf, 0)
        a5 = vload(buf, 0)
        a6 = vload(buf, 0)
        a7 = vload(buf, 0)
        a8 = vload(buf, 0)
        a9 = vload(buf, 0)
        for _ in range(iterations):
            a0 = vfma(a0, m, c)
            a1 = vfma(a1, m, c)
            a2 = vfma(a2, m, c)
            a3 = vfma(a3, m, c)
            a4 = vfma(a4, m, c)
            a5 = vfma(a5, m, c)
            a6 = vfma(a6, m, c)
            a7 = vfma(a7, m, c)
            a8 = vfma(a8, m, c)
            a9 = vfma(a9, m, c)
        base = t * 64
        vstore(sink, base, a0)
        vstore(sink, base, vfma(a1, a2, a3))
        vstore(sink, base, vfma(a4, a5, vfma(a6, a7, vfma(a8, a9, a0))))
    return threads * iterations * _CHAINS * lanes * 2


@njit(parallel=True, cache=True)
def parallel_copy(src, dst):
    for i in prange(src.shape[0]):
        dst[i] = src[i]
