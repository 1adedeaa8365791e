"""Transposed convolution as a gather: each output position sums the inputs that scatter into it.

Output o receives input i through kernel tap k when o = i*s - p + k*d, i.e. i = (o + p - k*d) / s when
that divides exactly and lands inside the input.  Gathering (instead of scattering) lets every prange
iteration own its outputs.
"""
from numba import njit, prange

from ..index import split_row, start_with_bias

from .direct import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_transposed(x, w, bias, out, sd, sh, sw, pd, ph, pw, dd, dh, dw):
    """out = conv_transpose(x, w) + bias.

    x    (N, D, H, W, C)           unpadded input, channels-last, C = G * CGI
    w    (G, KD, KH, KW, CGI, CGO) packed from PyTorch's (C, O/G, *k) (numbaconv.packing.pack_grouped)
    bias (O,) or (0,)
    out  (N, OD, OH, OW, O)        sizes from the spec (output_padding included)
    """
    N, D, H, W, C = x.shape
    G, KD, KH, KW, CGI, CGO = w.shape
    _, OD, OH, OW, O = out.shape
    for job in prange(N * OD * OH):
        n, od, oh = split_row(job, OD, OH)
        for ow in range(OW):
            o = out[n, od, oh, ow]
            start_with_bias(o, bias)
            for kd in range(KD):
                td = od + pd - kd * dd
                if td % sd != 0 or td < 0 or td // sd >= D:
                    continue
                for kh in range(KH):
                    th = oh + ph - kh * dh
                    if th % sh != 0 or th < 0 or th // sh >= H:
                        continue
                    for kw in range(KW):
                        tw = ow + pw - kw * dw
                        if tw % sw != 0 or tw < 0 or tw // sw >= W:
                            continue
                        xr = x[n, td // sd, th // sh, tw // sw]
                        for g in range(G):
                            wk = w[g, kd, kh, kw]
                            for ci in range(CGI):
                                xv = xr[g * CGI + ci]
                                for co in range(CGO):
                                    o[g * CGO + co] += xv * wk[ci, co]
