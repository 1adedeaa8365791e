"""General direct convolution (dense and grouped), channels-last, on a pre-padded input.

The portable kernel: any groups, kernel, stride and dilation; vectorized over the output channels of a
group.  Faster micro-kernels (numbaconv.kernels.cpu.simd_direct) take the shapes they cover.
"""
from numba import njit, prange

from ..index import split_row, start_with_bias

FASTMATH = {"contract", "arcp", "nsz"}  # FMA contraction only: NaN and inf keep IEEE behaviour


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_direct(x, w, bias, out, sd, sh, sw, dd, dh, dw):
    """out = conv(x, w) + bias.

    x    (N, D, H, W, C)           padded input, channels-last
    w    (G, KD, KH, KW, CGI, CGO) packed weights (numbaconv.packing.pack_grouped)
    bias (O,) or (0,)              O = G * CGO
    out  (N, OD, OH, OW, O)        with OD = (D - dd*(KD-1) - 1)//sd + 1, likewise OH, OW
    """
    N = x.shape[0]
    G, KD, KH, KW, CGI, CGO = w.shape
    _, OD, OH, OW, O = out.shape
    for job in prange(N * OD * OH):
        n, od, oh = split_row(job, OD, OH)
        for ow in range(OW):
            o = out[n, od, oh, ow]
            start_with_bias(o, bias)
            for kd in range(KD):
                for kh in range(KH):
                    for kw in range(KW):
                        xr = x[n, od * sd + kd * dd, oh * sh + kh * dh, ow * sw + kw * dw]
                        for g in range(G):
                            wk = w[g, kd, kh, kw]
                            for ci in range(CGI):
                                xv = xr[g * CGI + ci]
                                for co in range(CGO):
                                    o[g * CGO + co] += xv * wk[ci, co]
