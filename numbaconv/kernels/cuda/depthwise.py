"""Depthwise convolution on the GPU (mirror of kernels/cpu/depthwise.py).

No channel reduction, so the kernel is bound by memory: each input value should be loaded once per
thread and the loads should be coalesced.  A thread computes a strip of ``rows`` output rows of one
output column and one channel, and walks the input rows that strip needs once, top to bottom: every
loaded value goes into each of the strip's sums that uses it.  The kernel size, stride, dilation and
padding mode are compile-time constants, so that walk is generated as straight-line code (no loops over
taps, sums and weights in registers, the zero-padding test folded away where it cannot fire).

Thread mapping, the only difference between the layouts: channels-first puts 32 adjacent output
columns on a warp (coalesced along W); channels-last puts 32 adjacent channels on a warp (coalesced
along C).  Launch geometry: ``launch.depthwise``.  Depth (3D) is a runtime loop around the walk.
"""
from __future__ import annotations

import functools

from numba import cuda

from ..index import source_index
from .launch import depthwise_rows


def _walk_source(kh: int, kw: int, sh: int, dh: int, rows: int, branchless: bool) -> list[str]:
    """Straight-line body: for every input row the strip needs, its KW loads and the sums they feed.

    ``branchless``: no load sits behind a branch, so that all of them can be in flight at once; an index
    outside the plane (padding, or rows past the last output strip) is clamped into it and its value
    replaced by zero.  Otherwise such loads are skipped, which needs fewer registers.  Measured on the
    H100 (perf/NOTES.md): branchless wins for channels-last and strided walks, loses for channels-first
    at stride 1.
    """
    lines = []
    for j in range((rows - 1) * sh + (kh - 1) * dh + 1):
        uses = [(r, (j - r * sh) // dh) for r in range(rows)
                if j - r * sh >= 0 and (j - r * sh) % dh == 0 and (j - r * sh) // dh < kh]
        if not uses:  # a row that dilation skips over
            continue
        lines.append(f"ih = source_index(ih0 + {j}, h_, MODE)")
        if branchless:
            lines += ["row_inside = ih >= 0 and ih < h_", "row = plane + min(max(ih, 0), h_ - 1) * xs[3]"]
            loads = [[f"v = x[row + col{c}]", f"v = v if row_inside and inside{c} else ZERO"] for c in range(kw)]
            feed = ""
        else:
            lines += ["if ih >= 0 and ih < h_:", "    row = plane + ih * xs[3]"]
            loads = [[f"    if inside{c}:", f"        v = x[row + col{c}]"] for c in range(kw)]
            feed = "        "
        for c in range(kw):
            lines += loads[c] + [f"{feed}acc{r} += w{k * kw + c} * v" for r, k in uses]
    return lines


@functools.lru_cache(maxsize=None)
def conv_depthwise(numba_dtype, kernel_hw: tuple[int, int], stride_hw: tuple[int, int],
                   dilation_hw: tuple[int, int], mode: int, channels_last: bool):
    """The kernel for one dtype, 2D kernel size, stride, dilation, padding-mode code and thread mapping.

    Arguments of the returned kernel: ``x`` and ``out`` flat with element strides ``xs``/``os`` of
    (n, c, d, h, w); ``w`` flat (O, KD*KH*KW); ``bias`` (O,) or empty; ``sizes`` = (N, C, D, H, W, OD, OH, OW,
    O, KD); ``conv`` = (sd, pd, dd, ph, pw): the depth stride, depth dilation and the leading paddings;
    ``multiplier`` = O / C.
    """
    kh, kw = kernel_hw
    sh, sw = stride_hw
    dh, dw = dilation_hw
    rows = depthwise_rows(kh, channels_last)
    branchless = channels_last or sh > 1
    # The grid's x dimension (up to 2**31 - 1 blocks) numbers the jobs, which grow with the batch.
    if channels_last:  # threads: 32 channels x columns; grid: (n, od, strip) jobs, channel blocks, column blocks
        where = ["co = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x",
                 "ow = cuda.blockIdx.z * cuda.blockDim.y + cuda.threadIdx.y",
                 "if co >= o_ or ow >= ow_:", "    return",
                 f"strips = (oh_ + {rows - 1}) // {rows}",
                 "job = cuda.blockIdx.x",
                 f"oh0 = (job % strips) * {rows}",
                 "od = (job // strips) % od_",
                 "n = job // (strips * od_)"]
    else:  # threads: 32 columns x strips; grid: (n, co, od) planes, column blocks, strip blocks
        where = ["ow = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x",
                 f"oh0 = (cuda.blockIdx.z * cuda.blockDim.y + cuda.threadIdx.y) * {rows}",
                 "if ow >= ow_ or oh0 >= oh_:", "    return",
                 "job = cuda.blockIdx.x",
                 "od = job % od_",
                 "co = (job // od_) % o_",
                 "n = job // (od_ * o_)"]
    body = ["d_, h_, w_ = sizes[2], sizes[3], sizes[4]",
            "od_, oh_, ow_, o_, kd_ = sizes[5], sizes[6], sizes[7], sizes[8], sizes[9]",
            *where,
            "first = bias[co] if bias.shape[0] > 0 else ZERO",
            *[f"acc{r} = first" for r in range(rows)],
            "base = n * xs[0] + (co // multiplier) * xs[1]",
            f"ih0 = oh0 * {sh} - conv[3]",
            f"iw_first = ow * {sw} - conv[4]",
            *[line for c in range(kw) for line in (
                f"iw = source_index(iw_first + {c * dw}, w_, MODE)",
                f"inside{c} = iw >= 0 and iw < w_",
                f"col{c} = min(max(iw, 0), w_ - 1) * xs[4]")],
            "for kd in range(kd_):",
            "    idd = source_index(od * conv[0] - conv[1] + kd * conv[2], d_, MODE)",
            "    if idd < 0:",
            "        continue",
            f"    taps = (co * kd_ + kd) * {kh * kw}",
            *[f"    w{t} = w[taps + {t}]" for t in range(kh * kw)],
            "    plane = base + idd * xs[2]",
            *["    " + line for line in _walk_source(kh, kw, sh, dh, rows, branchless)],
            "pixel = n * os[0] + co * os[1] + od * os[2] + ow * os[4]",
            *[line for r in range(rows) for line in (f"if oh0 + {r} < oh_:",
                                                      f"    out[pixel + (oh0 + {r}) * os[3]] = acc{r}")]]
    source = "def kernel(x, xs, w, bias, out, os, sizes, conv, multiplier):\n" + \
             "".join(f"    {line}\n" for line in body)
    namespace = {"cuda": cuda, "source_index": source_index, "MODE": mode, "ZERO": numba_dtype(0)}
    exec(compile(source, f"<depthwise {kh}x{kw} s{sh}x{sw} d{dh}x{dw} mode {mode}>", "exec"), namespace)
    return cuda.jit(namespace["kernel"])
