"""Which backend and which kernel runs a convolution: pure decisions, documented and overridable.

Correctness rules come before speed rules: a kernel is only chosen for the specs it computes exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .spec import ConvSpec

def is_device_array(x) -> bool:
    """A GPU array: CUDA array interface (CuPy, PyTorch, numba) or a numba device array (also simulated)."""
    module = type(x).__module__
    if module == "numpy":
        return False
    if module.startswith("torch"):  # cheaper than building the tensor's array-interface dict
        return bool(getattr(x, "is_cuda", False))
    return hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host")


KERNELS = ("simd", "winograd", "small_groups", "direct", "depthwise", "transposed", "subpixel")
# Dense 3x3 stride-1 layers with at least this many input and output channels take Winograd F(4x4, 3x3):
# 1.4-2.2x faster than the direct SIMD kernel from 64 channels (56x56 to 7x7 maps, batch 1 and 8), 0.6-0.8x
# at 32 (its transforms then cost more than the saved multiply-adds; perf/NOTES.md, session 16).
WINOGRAD_MIN_CHANNELS = 64
# A one-off call (conv2d and the like) transforms the weights every time (0.67 ms at 256 x 256 here).
# Prepared-and-called once against direct, 3x3 layers at batch 1: 784 output pixels 1.55-1.88x (64-128
# channels), 196 pixels 1.07x, 1.22x, 0.92x (64, 128, 256 channels), 49-98 pixels 0.24-0.51x (256-512;
# perf/NOTES.md, session 17). Below this many output pixels the one-off call stays direct.
WINOGRAD_ONE_OFF_MIN_PIXELS = 400

# Block shapes (pixels, vectors) of numbaconv.kernels.cpu.simd_direct, by vector registers of the ISA.
SIMD_BLOCKS = {16: {2: (6, 2), 1: (12, 1)}, 32: {4: (6, 4), 2: (12, 2), 1: (12, 1)}}


def simd_block(channels_per_group: int, lanes: int, registers: int) -> tuple[int, int]:
    """(pixels, vectors) for a group of ``channels_per_group`` outputs: the widest block it fills."""
    shapes = SIMD_BLOCKS[32 if registers >= 32 else 16]
    for vectors in sorted(shapes, reverse=True):
        if channels_per_group >= vectors * lanes:
            return shapes[vectors]
    return shapes[1]


# A block's pixels run as independent FMA chains (V per pixel); below about 8 chains they wait on the
# FMA latency.  A row's last pixels that fill no whole block of P go through blocks of tail_pixels(P) =
# 2P/3 (4 of 6: still 8 chains) before the one-pixel loop, so most widths are covered exactly.
ONE_PIXEL_COST = 3.0  # a pixel of the one-pixel loop, in block pixels (its V chains are latency-bound)


def tail_pixels(pixels: int) -> int:
    """The pixels of a row's tail blocks, for main blocks of ``pixels``."""
    return 2 * pixels // 3


def row_split(width: int, pixels: int) -> tuple[int, int]:
    """(head, tail) of an output row of ``width`` pixels for the SIMD kernels: the first head pixels in
    blocks of ``pixels``, the next tail in blocks of tail_pixels(pixels), the last block of each run
    overlapping the one before it (its pixels computed twice), the rest one pixel at a time.  The split
    with the least work (overlaps and one-pixel costs included), the fewest tail pixels among equals:
    56 = 8 x 6 + 2 x 4, where whole blocks of 6 alone computed 60."""
    small = 2 * pixels // 3  # tail_pixels, spelled out: the kernels compile this function (numba.njit)
    best, best_cost = (0, 0), float(width) * ONE_PIXEL_COST
    for tail in range(0, min(width, 2 * pixels + small) + 1):
        head = width - tail
        if (0 < head < pixels) or (0 < tail < small):
            continue
        cost = -(-head // pixels) * pixels + -(-tail // small) * small
        if cost < best_cost:
            best, best_cost = (head, tail), cost
    return best


def row_blocks(width: int, pixels: int) -> list[tuple[int, int]]:
    """(first pixel, pixels) of each block the SIMD kernels run over an output row of ``width``, in their
    order: row_split's head in blocks of ``pixels``, its tail in blocks of tail_pixels(pixels), the last
    block of each run overlapping the one before, then single pixels."""
    head, tail = row_split(width, pixels)
    blocks = []
    for count, start, end in ((pixels, 0, head), (tail_pixels(pixels), head, head + tail), (1, head + tail, width)):
        first = start
        while first < end:
            first = min(first, end - count)
            blocks.append((first, count))
            first += count
    return blocks


def row_work(width: int, pixels: int, whole_blocks: bool = False) -> float:
    """The pixels' worth of block work a row of ``width`` costs: its blocks (row_blocks), a single pixel
    counted as ONE_PIXEL_COST; with ``whole_blocks`` a tail block counts as a block of ``pixels``."""
    return sum((pixels if whole_blocks else count) if count > 1 else ONE_PIXEL_COST
               for _, count in row_blocks(width, pixels))


def edge_columns(out_width: int, pixels: int, stride: int, dilation: int, taps: int, pad_before: int,
                 width: int, pad_after: int) -> tuple[int, int]:
    """(left, right): the zero-padded columns a SIMD kernel reads from its edge copy instead of the input,
    [0, left) and [right, padded width).  A block of output pixels whose taps reach the padding takes all
    its input columns from there; the row's blocks are those of row_blocks.  Both ranges meet (left ==
    right == padded width: every padded column) where one block reaches both sides or the two overlap."""
    padded = pad_before + width + pad_after
    left, right = 0, padded
    for first, count in row_blocks(out_width, pixels):
        low, high = first * stride, (first + count - 1) * stride + (taps - 1) * dilation  # padded columns read
        if low < pad_before and high >= pad_before + width:
            return padded, padded
        if low < pad_before:
            left = max(left, high + 1)
        elif high >= pad_before + width:
            right = min(right, low)
    return (left, right) if left <= right else (padded, padded)


def tap_range(first: int, dilation: int, taps: int, size: int) -> tuple[int, int]:
    """(low, high): the taps k in [low, high) of a kernel axis whose input index first + k * dilation
    lies in [0, size), for an output whose first tap reads index ``first`` (output * stride - padding);
    empty (high <= low) where none does.  The SIMD kernels skip the others instead of reading a
    zero-padded copy of the rows (they compile this function: numba.njit)."""
    low = 0
    if first < 0:
        low = (dilation - 1 - first) // dilation
    high = taps
    if first + (taps - 1) * dilation >= size:
        high = (size - 1 - first) // dilation + 1 if first < size else 0
    return low, high


# (output channels, pixel vectors) of numbaconv.kernels.cpu.simd_rows, by vector registers of the ISA.
ROWS_BLOCKS = {16: (4, 3), 32: (8, 3)}
# Channels-first input with at most this many channels (a network's first layer) runs on the
# pixel-vectorized kernel: the channel-vectorized one's reduction over (kw, c_in) is then too short.
ROWS_MAX_IN_CHANNELS = 4
# A channels-first pointwise layer runs on it when each group has at most this many input channels and
# each image at least ROWS_FLAT_MIN_BLOCKS blocks of pixels (same-process A/B against the channel-vectorized
# kernel's strided reads, perf/NOTES.md "Session 8": 1.1-2.5x faster on 16-128 channels of 28x28 to
# 112x112 maps and 0.97-1.14x on 14x14; 0.8-0.95x from 256 channels at batch 8 or on 7x7 maps, where a
# row's overlapping last block wastes up to half its work).
ROWS_POINTWISE_MAX_GROUP_CHANNELS = 128
ROWS_FLAT_MIN_BLOCKS = 8
# A pointwise job's run of pixels is sized so that its input (every channel of the group) stays in L1/L2
# while each block of output channels reads it: 48 KB, i.e. 48 pixels of 256 float32 channels.
ROWS_CHUNK_BYTES = 48 << 10
ROWS_CHUNK_MAX_BLOCKS = 8


def is_unit_kernel(spec: ConvSpec) -> bool:
    """A 1x1 (x1) kernel at unit stride, not transposed."""
    return math.prod(spec.kernel_size) == 1 and math.prod(spec.stride) == 1 and not spec.transposed


def is_pointwise(spec: ConvSpec) -> bool:
    """A unit kernel with no padding: each image's pixels are one flat GEMM dimension."""
    return is_unit_kernel(spec) and (spec.padding == "same" or not any(b or a for b, a in spec.padding))


def rows_kernel_fits(spec: ConvSpec, family: str) -> bool:
    """Whether channels-first input of ``spec`` (whose kernel family is ``family``) runs on the
    pixel-vectorized kernel instead, for outputs at least one of its blocks wide: a pointwise layer
    (vectors of pixels, stored whole into NCHW planes, where the channel-vectorized kernel scatters
    each result lane by lane), or few input channels (see ROWS_MAX_IN_CHANNELS)."""
    if family not in ("simd", "direct") or spec.transposed:
        return False
    if is_pointwise(spec) and spec.in_channels // spec.groups <= ROWS_POINTWISE_MAX_GROUP_CHANNELS:
        return True
    return spec.groups == 1 and spec.ndim <= 2 and spec.in_channels <= ROWS_MAX_IN_CHANNELS


def window_kernel_fits(spec: ConvSpec, family: str) -> bool:
    """Whether channels-last input of ``spec`` runs on kernels/cpu/fused_blocks.conv_window_rows: a dense
    2D KxK convolution with zero padding over few input channels (a stem), whose per-kernel-row
    reduction (KW * C_in, 9 for a 3x3 over RGB) is too short for the channel-vectorized kernel's loop."""
    return (family == "simd" and spec.ndim == 2 and not spec.transposed and spec.groups == 1
            and spec.padding_mode == "zeros" and spec.in_channels <= ROWS_MAX_IN_CHANNELS
            and spec.kernel_size != (1, 1))


WINDOW_JOBS_PER_THREAD = 4


ROWS_JOBS_PER_THREAD = 4


def rows_jobs(rows: int, row: int, group_channels: int, itemsize: int, width: int, blocks: int,
              threads: int) -> tuple[int, int]:
    """(pixels per job, parts of the channel blocks) of the pixel-vectorized kernel over ``rows`` output
    rows of ``row`` pixels and ``blocks`` blocks of output channels.  A spatial kernel's job is a whole
    row; a pointwise layer's flat rows are cut into whole blocks of ``width`` pixels whose input fits
    ROWS_CHUNK_BYTES.  Where that leaves fewer than ROWS_JOBS_PER_THREAD jobs per thread, each run of
    pixels is also split into parts of the channel blocks."""
    chunk = row
    if row > width * ROWS_CHUNK_MAX_BLOCKS:
        chunk = width * min(max(ROWS_CHUNK_BYTES // (group_channels * itemsize * width), 1), ROWS_CHUNK_MAX_BLOCKS)
    runs = rows * -(-row // chunk)
    parts = min(blocks, -(-ROWS_JOBS_PER_THREAD * threads // runs))
    return chunk, max(parts, 1)


def rows_block(registers: int) -> tuple[int, int]:
    """(output channels, pixel vectors) of the channels-first pixel-vectorized kernel for the ISA."""
    return ROWS_BLOCKS[32 if registers >= 32 else 16]


# A SIMD kernel job covers every channel block of its output row when the packed weights stay in L2 this
# way (a pointwise layer then writes whole pixel runs, not one cache line per pixel and block) and the
# rows still give each thread several jobs.
CHANNELS_INNER_WEIGHT_BYTES = 128 << 10
CHANNELS_INNER_ROWS_PER_THREAD = 4


def channels_inner(weight_bytes: int, rows: int, threads: int) -> bool:
    """Whether a SIMD kernel call over ``rows`` output rows loops over channel blocks inside each job."""
    return weight_bytes <= CHANNELS_INNER_WEIGHT_BYTES and rows >= CHANNELS_INNER_ROWS_PER_THREAD * threads


# A channels-last pointwise layer whose input is larger than this streams it from memory (this machine's
# L2 is 512 KB a core, its L3 32 MB shared with the output): each step of its reduction then prefetches a
# line of the next block of pixels.  Measured per shape, the kernel alone with and without (perf/NOTES.md,
# session 15): 1.05-1.25x with 64-512 input and up to 64 output channels per group on 6-51 MB of input,
# 1.00x on inputs that stay in cache, 0.92-0.98x with more outputs per group, whose longer work per line
# leaves memory time to keep up.
PREFETCH_INPUT_BYTES = 4 << 20
PREFETCH_GROUP_IN_CHANNELS = (64, 512)
PREFETCH_GROUP_OUT_CHANNELS = 64


def pointwise_prefetch(input_bytes: int, block_pixels: int, pixel_stride: int, group_in: int,
                       group_out: int) -> int | None:
    """The SIMD kernel's ``prefetch`` for a channels-last pointwise call with ``group_in`` input and
    ``group_out`` output channels per group: elements per reduction step, so that the group_in steps sweep
    the next ``block_pixels`` pixels (``pixel_stride`` elements apart); None (no prefetch) outside the
    shapes where it was measured to pay."""
    low, high = PREFETCH_GROUP_IN_CHANNELS
    if input_bytes <= PREFETCH_INPUT_BYTES or not low <= group_in <= high or group_out > PREFETCH_GROUP_OUT_CHANNELS:
        return None
    return max(1, block_pixels * pixel_stride // group_in)


# Pointwise layers walk each image's pixels as rows of a length that divides them (POINTWISE_ROWS) where
# that balances the threads better: a 56x56 image at batch 1 was 31 rows of 96 and one of 160, that
# last one alone on one thread (28 rows of 112: kernel alone 0.565-0.570 against 0.582-0.592 ms); at
# batch 8 the 96-pixel rows, which have no tail block, stay (112 per row: 0.97-0.99x).
POINTWISE_ROWS = range(48, 193, 2)


def pointwise_row(pixels: int, batch: int, threads: int, block: int, fallback: int) -> int:
    """The row length in POINTWISE_ROWS dividing ``pixels`` on which a pointwise SIMD call over ``batch``
    images of ``pixels`` pixels costs less, on ``threads`` threads with blocks of ``block`` pixels, than
    rows of ``fallback`` plus one call for each image's remainder row; 0 where none does.  The cost is
    the busiest thread's work per call: each block of a row counted as a whole one (at batch 8 a 112-pixel
    row's 4-pixel tail block cost more than its 4 pixels' share), each row one block more for its set-up."""
    def busiest(rows: int, length: int) -> float:
        return -(-rows // threads) * (row_work(length, block, whole_blocks=True) + block)

    rows = max(1, pixels // fallback)
    best, best_cost = 0, busiest(batch * (rows - 1), fallback) + busiest(batch, pixels - (rows - 1) * fallback)
    for length in (length for length in POINTWISE_ROWS if pixels % length == 0):
        cost = busiest(batch * (pixels // length), length)
        if cost < best_cost:
            best, best_cost = length, cost
    return best


DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Plan:
    """The choice for one spec: ``backend`` ('cpu' or 'cuda'), ``kernel`` family, and why."""

    backend: str
    kernel: str
    reason: str


def winograd_fits(spec: ConvSpec) -> bool:
    """Whether numbaconv.kernels.cpu.winograd computes ``spec``: a dense (one group) 2D 3x3 convolution,
    stride 1, no dilation, zero padding."""
    return (spec.ndim == 2 and not spec.transposed and spec.groups == 1 and spec.kernel_size == (3, 3)
            and spec.stride == (1, 1) and spec.dilation == (1, 1) and spec.padding_mode == "zeros")


def one_off_kernel(spec: ConvSpec, output_pixels: int, lanes: int = 8) -> str | None:
    """The kernel a single call with fresh weights should force, or None for the dispatcher's choice:
    'simd' where Winograd would be chosen but ``output_pixels`` (N x output size) are too few to repay
    its weight transform."""
    if choose_kernel(spec, None, lanes)[0] == "winograd" and output_pixels < WINOGRAD_ONE_OFF_MIN_PIXELS:
        return "simd"
    return None


def choose_kernel(spec: ConvSpec, kernel: str | None = None, lanes: int = 8) -> tuple[str, str]:
    """(kernel family, reason).  ``kernel`` forces a family when it can compute the spec.

    Dense and grouped convolutions take the SIMD micro-kernel unless a group has fewer output channels
    than half a vector (most lanes would compute padding); those take the portable direct kernel.  Wide
    dense 3x3 stride-1 layers take Winograd F(4x4, 3x3) (float32 results within about 1e-5 of the
    output's largest magnitude of a float64 sum, the direct kernel's within 2e-6); kernel='simd' keeps
    them direct.
    """
    per_group = spec.out_channels // spec.groups
    if spec.transposed and 2 * per_group >= lanes:
        natural = ("subpixel", f"transposed convolution as prod(stride) stride-1 convolutions on the SIMD kernel "
                               f"({per_group} output channels per group fill vectors of {lanes})")
    elif spec.transposed:
        natural = ("transposed", "transposed convolution, narrow groups: gather over the inputs that scatter "
                                 "to each output")
    elif spec.groups == spec.in_channels and spec.groups > 1:
        natural = ("depthwise", f"groups == in_channels ({spec.groups}): no channel reduction")
    elif spec.groups > 1 and per_group == spec.in_channels // spec.groups == 4 and lanes == 8 \
            and spec.out_channels % 32 == 0:
        natural = ("small_groups", "4 channels per group: two groups per 8-lane vector")
    elif winograd_fits(spec) and min(spec.in_channels, spec.out_channels) >= WINOGRAD_MIN_CHANNELS:
        natural = ("winograd", f"dense 3x3, stride 1, {spec.in_channels}->{spec.out_channels} channels: Winograd "
                               f"F(4x4, 3x3), 4x fewer multiply-adds")
    elif 2 * per_group >= lanes:
        natural = ("simd", f"{per_group} output channels per group fill SIMD vectors of {lanes}")
    else:
        natural = ("direct", f"{per_group} output channels per group: too few for {lanes}-lane vectors")
    if kernel is None or kernel == natural[0]:
        return natural
    if kernel in (("subpixel", "transposed") if spec.transposed else ("direct", "simd")) \
            or (kernel == "winograd" and winograd_fits(spec)):
        return (kernel, "forced by the caller")
    raise ValueError(f"kernel={kernel!r} cannot compute this convolution; the dispatcher would pick "
                     f"{natural[0]!r} ({natural[1]})")


# The cost model for device='auto' on host (NumPy) input.  Figures are deliberately round: the rule only
# has to tell "clearly worth the trip over the host link" from "not".
CPU_FLOPS = 100e9        # sustained float32 FLOP/s of the CPU kernels on 2 cores
GPU_FLOPS = 10e12        # sustained float32 FLOP/s of the CUDA kernels
HOST_LINK_BYTES = 20e9   # host <-> GPU copy bandwidth, bytes/s
GPU_LAUNCH_SECONDS = 100e-6  # launches and allocations of one numba.cuda call from Python


def gpu_pays_off(flops: float, host_bytes: float) -> bool:
    """True when copying the input and output over the host link and running on the GPU is estimated to
    take under half the CPU time: launch + host_bytes / link + flops / GPU rate < flops / CPU rate / 2."""
    gpu = GPU_LAUNCH_SECONDS + host_bytes / HOST_LINK_BYTES + flops / GPU_FLOPS
    return gpu < 0.5 * flops / CPU_FLOPS


def choose_backend(device: str, input_on_gpu: bool, flops: float = 0.0, host_bytes: float = 0.0,
                   gpu_usable: bool = False) -> tuple[str, str]:
    """(backend, reason) for ``device`` in {'auto', 'cpu', 'cuda'}.

    'auto' runs where the input lives; host input goes to the GPU only when ``gpu_usable`` and
    ``gpu_pays_off(flops, host_bytes)``.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda":
        return "cuda", "device='cuda' requested"
    if device == "auto" and input_on_gpu:
        return "cuda", "input already on the GPU"
    if device == "cpu":
        return "cpu", "device='cpu' requested" + (" for a GPU input: copied to the host" if input_on_gpu else "")
    if gpu_usable and gpu_pays_off(flops, host_bytes):
        return "cuda", f"host input, but {flops / 1e9:.2f} GFLOP is worth moving {host_bytes / 1e6:.1f} MB to the GPU"
    return "cpu", "host input: the GPU would not pay for the copies" if gpu_usable else "host input, no usable GPU"


def plan(spec: ConvSpec, device: str = "auto", input_on_gpu: bool = False, kernel: str | None = None) -> Plan:
    backend, why_backend = choose_backend(device, input_on_gpu)
    family, why_kernel = choose_kernel(spec, kernel)
    return Plan(backend, family, f"{why_backend}; {why_kernel}")
