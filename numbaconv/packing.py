"""Weight packing: PyTorch-order weights into each kernel family's order.  Done once per PreparedConv.

All packed weights have three spatial dims (KD, KH, KW); 1D and 2D kernels get leading size-1 dims.
"""
from __future__ import annotations

import math

import numpy as np

from .spec import ConvSpec


def as_3d_kernel(weight: np.ndarray) -> np.ndarray:
    """(A, B, *k) with 1 to 3 kernel dims -> (A, B, KD, KH, KW)."""
    spatial = weight.shape[2:]
    return weight.reshape(weight.shape[:2] + (1,) * (3 - len(spatial)) + spatial)


def pack_grouped(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """-> (G, KD, KH, KW, C_in/G, C_out/G), contiguous.

    convolution: weight (C_out, C_in/G, *k); transposed: weight (C_in, C_out/G, *k).
    """
    G = spec.groups
    w = as_3d_kernel(weight)
    KD, KH, KW = w.shape[2:]
    if spec.transposed:
        grouped = w.reshape(G, spec.in_channels // G, spec.out_channels // G, KD, KH, KW)
        return np.ascontiguousarray(grouped.transpose(0, 3, 4, 5, 1, 2))
    grouped = w.reshape(G, spec.out_channels // G, spec.in_channels // G, KD, KH, KW)
    return np.ascontiguousarray(grouped.transpose(0, 3, 4, 5, 2, 1))


def pack_depthwise(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """(C*m, 1, *k) -> (KD, KH, KW, C*m), contiguous."""
    w = as_3d_kernel(weight)
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 3, 0))


def simd_block_channels(spec: ConvSpec, block: int) -> int:
    """Output channels per group after padding each group to whole blocks of ``block``."""
    per_group = spec.out_channels // spec.groups
    return -(-per_group // block) * block


def pack_simd(spec: ConvSpec, weight: np.ndarray | None, bias: np.ndarray | None, block: int,
              grouped: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> weights (G, OB, KD, KH, KW, C_in/G, block) and bias (G * OB * block,) or (0,), zero-padded.

    weight (C_out, C_in/G, *k), or instead ``grouped``, any (G, C_out/G, C_in/G, KD, KH, KW) view (a
    transposed convolution's phase).  Each group's C_out/G output channels are padded to
    OB = ceil(C_out/G / block) whole blocks, so the micro-kernel never needs a masked load or store.
    """
    from .kernels.cpu.layout import pack_output_blocks

    G = spec.groups
    per_group = spec.out_channels // G
    padded = simd_block_channels(spec, block)
    if grouped is None:
        w3 = as_3d_kernel(weight)
        grouped = w3.reshape(G, per_group, spec.in_channels // G, *w3.shape[2:])
    packed = np.empty((G, padded // block, *grouped.shape[3:], grouped.shape[2], block), grouped.dtype)
    pack_output_blocks(grouped, packed)  # one parallel pass (NumPy's transposing copies took 1.5 ms for 2.4 MB)
    if bias is None:
        return packed, np.zeros(0, grouped.dtype)
    return packed, pad_groups(bias, G, padded, 0)


def pack_rows(spec: ConvSpec, weight: np.ndarray, bias: np.ndarray | None, block: int,
              channel_dest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> weights (G, OB, C_in/G, KH, KW, block), bias (G * OB * block,) or (0,), and each kernel output
    channel's result channel (G * OB * block,) int64, -1 for padding: each group's C_out/G outputs
    zero-padded to OB = ceil(C_out/G / block) blocks, the order numbaconv.kernels.cpu.simd_rows broadcasts
    them in.  ``channel_dest[c]``: where convolution output c lands (a folded channel shuffle permutes it).
    1D or 2D (1D as KH = 1), or a pointwise kernel of any dimension (as 1x1)."""
    groups, per_group = spec.groups, spec.out_channels // spec.groups
    kernel = spec.kernel_size if spec.ndim == 2 else (1, math.prod(spec.kernel_size))
    w = weight.reshape(groups, per_group, weight.shape[1], *kernel)
    blocks = -(-per_group // block)
    packed = np.zeros((groups, blocks, *w.shape[2:], block), weight.dtype)
    for r in range(block):  # one strided copy per lane: 5x faster than NumPy's transposing copy here
        lane = w[:, r::block]
        packed[:, :lane.shape[1], ..., r] = lane
    dest = pad_groups(channel_dest, groups, blocks * block, -1)
    if bias is None:
        return packed, np.zeros(0, weight.dtype), dest
    return packed, pad_groups(bias, groups, blocks * block, 0), dest


def pad_groups(values: np.ndarray, groups: int, padded: int, fill) -> np.ndarray:
    """(groups * padded,): each group's C/groups entries of ``values`` followed by ``fill`` up to ``padded``
    (a per-channel array laid out like weights whose groups are padded to whole blocks)."""
    out = np.full((groups, padded), fill, values.dtype)
    out[:, :values.shape[0] // groups] = values.reshape(groups, -1)
    return out.reshape(-1)


def padded_channel_index(spec: ConvSpec, padded_per_group: int) -> np.ndarray:
    """Position of each real output channel in a buffer whose groups are padded to ``padded_per_group``."""
    per_group = spec.out_channels // spec.groups
    c = np.arange(spec.out_channels, dtype=np.int64)
    return (c // per_group) * padded_per_group + c % per_group


def pack_small_groups(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """(C_out, 4, *k) -> (KD, KH, KW, 4, C_out): for each tap and input channel of a group, the weights of
    every output channel, contiguous (numbaconv.kernels.cpu.direct.conv_small_groups)."""
    return np.ascontiguousarray(as_3d_kernel(weight).transpose(2, 3, 4, 1, 0))


def pack_winograd(weight: np.ndarray, block: int) -> np.ndarray:
    """(C_out, C_in, 3, 3) -> (36, OB, C_in, block): each F(4x4, 3x3) position's transformed weights
    G g G^T (computed in float64), output channels in OB = ceil(C_out / block) zero-padded blocks
    (numbaconv.kernels.cpu.winograd.winograd_gemm)."""
    from .kernels.cpu.winograd import POSITIONS, winograd_weights

    c_out, c_in = weight.shape[:2]
    packed = np.empty((POSITIONS, -(-c_out // block), c_in, block), weight.dtype)
    winograd_weights(weight, packed)
    return packed


def flatten_window(weight: np.ndarray) -> np.ndarray:
    """A dense KxK convolution's weight (C_out, C_in, KH, KW) as a 1x1 over KH * KW * C_in inputs in (kh, kw, c)
    order, (C_out, KH * KW * C_in, 1, 1): how fused_blocks' first stages read a window through offsets
    (numbaconv.fused_blocks turns each flat index back into a row, pixel and channel offset)."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1, 1, 1)


def _by_blocks(weight: np.ndarray, channels: int, padded: int, groups: int, per_group: int, source_of,
               block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1x1 weight (channels, per_group, 1, 1) as rows (output channel, its inputs) grouped by output blocks
    of ``block`` up to ``padded`` channels: (B, K, block) weights, their sources (B, K) (source_of(i) maps an
    input index) and counts (B,)."""
    dtype = weight.dtype
    out_per_group = channels // groups
    blocks = []
    for b in range(padded // block):
        outputs = range(b * block, min((b + 1) * block, channels))
        spanned = sorted({o // out_per_group for o in outputs})
        inputs = [g * per_group + i for g in spanned for i in range(per_group)]
        rows = np.zeros((len(inputs), block), dtype)
        for o in outputs:
            g = o // out_per_group
            k0 = spanned.index(g) * per_group
            rows[k0:k0 + per_group, o - b * block] = weight[o, :, 0, 0]
        blocks.append((rows, np.array([source_of(i) for i in inputs], np.int64)))
    widest = max(len(sources) for _, sources in blocks)
    packed = np.zeros((len(blocks), widest, block), dtype)
    sources = np.zeros((len(blocks), widest), np.int64)
    for b, (rows, taken) in enumerate(blocks):
        packed[b, :len(taken)], sources[b, :len(taken)] = rows, taken
    return packed, sources, np.array([len(taken) for _, taken in blocks], np.int64)


def _padded(values: np.ndarray | None, dtype: np.dtype, *shape: int) -> np.ndarray:
    """Zeros of ``shape`` with ``values`` (or nothing) in the leading corner."""
    array = np.zeros(shape, dtype)
    if values is not None:
        array[tuple(slice(0, n) for n in values.shape)] = values
    return array


def split_projection(packed: np.ndarray, sources: np.ndarray, counts: np.ndarray, bias: np.ndarray,
                     part_channels: int, parts: int) -> tuple[np.ndarray, ...]:
    """pack_pw_dw_pw's projection (packed (B, K, block), sources (B, K) ring channels, counts (B,), bias
    (B * block,)) split by parts of ``part_channels`` ring channels, for kernels/cpu/fused_blocks.py's
    conv_pw_dw_pw_parts: part s keeps each block's rows whose source lies in [s * part_channels, (s + 1) *
    part_channels), with sources relative to that start.  Returns (parts, B, K', block) weights, (parts, B,
    K') sources, (parts, B) counts and (parts, B * block) biases, the bias in part 0 only (the parts are
    summed)."""
    blocks, _, block = packed.shape
    kept = [[np.flatnonzero((sources[b, :counts[b]] >= s * part_channels)
                            & (sources[b, :counts[b]] < (s + 1) * part_channels)) for b in range(blocks)]
            for s in range(parts)]
    widest = max(1, max(len(rows) for part in kept for rows in part))
    part_packed = np.zeros((parts, blocks, widest, block), packed.dtype)
    part_sources = np.zeros((parts, blocks, widest), np.int64)
    part_counts = np.zeros((parts, blocks), np.int64)
    for s, part in enumerate(kept):
        for b, rows in enumerate(part):
            part_packed[s, b, :len(rows)] = packed[b, rows]
            part_sources[s, b, :len(rows)] = sources[b, rows] - s * part_channels
            part_counts[s, b] = len(rows)
    part_bias = np.zeros((parts, blocks * block), packed.dtype)
    part_bias[0] = bias
    return part_packed, part_sources, part_counts, part_bias


def pack_window_blocks(weight: np.ndarray, bias: np.ndarray | None, block: int) -> tuple[np.ndarray, ...]:
    """A dense convolution (C_out, C_in, KH, KW) for kernels/cpu/fused_blocks.py's pointwise_pixels, which
    reads each input through an offset: (B, K, block) weights with K = KH * KW * C_in inputs in (kh, kw, c)
    order (flatten_window), their flat indices (B, K) (the caller turns them into offsets for its input's
    strides), counts (B,) and the bias (B * block,), output channels zero-padded to whole blocks of ``block``."""
    c_out = weight.shape[0]
    padded = -(-c_out // block) * block
    flat = np.zeros((padded, math.prod(weight.shape[1:])), weight.dtype)  # dense: every block reads every input
    flat[:c_out] = weight.transpose(0, 2, 3, 1).reshape(c_out, -1)
    blocks, inputs = padded // block, flat.shape[1]
    return (np.ascontiguousarray(flat.reshape(blocks, block, inputs).transpose(0, 2, 1)),
            np.tile(np.arange(inputs, dtype=np.int64), (blocks, 1)), np.full(blocks, inputs, np.int64),
            _padded(bias, weight.dtype, padded))


def _block_work(channels: int, groups: int, per_group_in: int, block: int) -> int:
    """Multiply-adds per pixel of a grouped 1x1 packed by output blocks of ``block`` (_by_blocks): each block
    reads every group it touches, and the last block is padded."""
    per_group_out = channels // groups
    return sum(((min(channels, start + block) - 1) // per_group_out - start // per_group_out + 1) * per_group_in
               * block for start in range(0, channels, block))


def cheapest_block(channels: int, groups: int, per_group_in: int, lanes: int) -> int:
    """The output block (2 or 3 vectors of ``lanes``) for the fused kernels' pointwise stages that computes
    the fewest multiply-adds for ``channels`` outputs in ``groups`` groups of ``per_group_in`` inputs each:
    padding to whole blocks and blocks straddling groups (which read every group they touch) both cost.
    A tie takes 3 vectors (its 4x3 register block was as fast or faster per multiply-add here)."""
    return min((3 * lanes, 2 * lanes), key=lambda block: _block_work(channels, groups, per_group_in, block))


def expansion_layout(channels: int, groups: int, per_group_in: int, lanes: int,
                     tails: bool = True) -> tuple[int, int, int]:
    """(block, ring channels per group or 0, tail) for a chain's expansion: as cheapest_block, but a grouped
    expansion may also give each group a whole number of blocks in the ring (zero channels after each
    group's outputs), so that no block straddles two groups.  ShuffleNet v1 g=3: groups of 20 outputs in
    blocks of 24 compute 72 channels from 80 inputs each, where blocks of 16 straddling the groups
    computed 64 channels from 80 or 160.  Or, where no block width fits, each group's outputs as blocks of
    3 vectors then ``tail`` channels in blocks of 2 (pack_pw_dw_pw's ``tail``): groups of 40 as 24 + 16
    compute no padding (1.17x faster than 128 channels with one block straddling two groups).  ``tails``:
    whether that layout may be chosen (only conv_pw_dw_pw_rows takes it)."""
    per_group_out = channels // groups
    options = []
    for block in (3 * lanes, 2 * lanes):
        options.append((_block_work(channels, groups, per_group_in, block), -(-channels // block) * block, block, 0,
                        0))
        if groups > 1 and per_group_out % block:
            slots = -(-per_group_out // block) * block
            options.append((groups * slots * per_group_in, groups * slots, block, slots, 0))
    tail = next((t for t in range(2 * lanes, per_group_out - 3 * lanes + 1, 2 * lanes)
                 if (per_group_out - t) % (3 * lanes) == 0), 0)
    if tail and tails:  # compared last, so that a single block width computing as little wins a tie
        options.append((channels * per_group_in, channels, 3 * lanes, 0, tail))
    _, _, block, slots, tail = min(options, key=lambda option: option[:2])
    return block, slots, tail


def pack_pw_dw_pw(expand: np.ndarray, expand_bias: np.ndarray | None, taps: np.ndarray, taps_bias: np.ndarray | None,
                  project: np.ndarray, project_bias: np.ndarray | None, block: int, expand_groups: int = 1,
                  project_groups: int = 1, shuffle_groups: int = 0,
                  project_block: int | None = None, group_slots: int = 0, tail: int = 0) -> tuple[np.ndarray, ...]:
    """The weights of a pointwise -> (shuffle) -> depthwise -> pointwise chain for kernels/cpu/fused_blocks.py.

    expand (C_mid, C_in/G1, 1, 1) or a dense (C_mid, C_in, KH, KW) (flatten_window: its sources are then flat
    window indices), taps (C_mid, 1, KH, KW), project (C_out, C_mid/G2, 1, 1), biases (C,) or None;
    ``shuffle_groups`` shuffles the expansion's output before the depthwise stage (ShuffleNet).
    Returns, with M and P the channel counts rounded up to whole blocks of ``block`` (the expansion's) and
    ``project_block`` (the projection's; default ``block``), and with ``group_slots`` each expansion group's
    outputs followed by zero channels up to that many ring channels (expansion_layout):
    expand (M / block, KE, block) weights, its sources (M / block, KE) (input channel of each row) and
    counts (M / block,), expand bias (M,); taps (KH, KW, M) and taps bias (M,); project (P / block, KP,
    block), sources (ring channels), counts, bias (P,).  The ring between the stages holds the expansion's
    channels in their own order, so each expansion block reads only its groups' inputs; the shuffle
    becomes the order of the depthwise weights and of the sources each projection block reads.  Padding
    is zero, so padded channels stay exactly zero through every stage.  Then the expansion's ``tail``
    (expansion_layout), always present: (T, KE, 2 * block / 3) weights, sources, counts and bias for each
    group's last ``tail`` outputs in blocks of 2 vectors, held in the ring after every group's first ones
    (``block`` wide); none (T = 0) when ``tail`` is 0.
    """
    if expand.shape[2:] != (1, 1):  # a dense KxK first stage: a 1x1 over its window's inputs
        expand = flatten_window(expand)
    c_mid, expand_per_group = expand.shape[:2]
    c_out, project_per_group = project.shape[:2]
    project_block = project_block or block
    dtype = expand.dtype
    per_group_out = c_mid // expand_groups
    slots = group_slots or per_group_out  # ring channels per expansion group
    ring_channels = expand_groups * slots
    mid, out = -(-ring_channels // block) * block, -(-c_out // project_block) * project_block
    # Expansion output j lands in ring channel ring_index[j]; the depthwise and projection see it as channel
    # position[j] (after the shuffle).
    group, local = np.divmod(np.arange(c_mid), per_group_out)
    head = per_group_out - tail
    ring_index = np.where(local < head, group * (head if tail else slots) + local,
                          expand_groups * head + group * tail + local - head)
    if shuffle_groups:
        per = c_mid // shuffle_groups
        position = (np.arange(c_mid) % per) * shuffle_groups + np.arange(c_mid) // per
    else:
        position = np.arange(c_mid)
    ring_of = np.empty(c_mid, np.int64)
    ring_of[position] = ring_index
    if slots != per_group_out or tail:  # rows (and bias) in ring order, zero for each group's empty slots
        spread = np.zeros((ring_channels, *expand.shape[1:]), dtype)
        spread[ring_index] = expand
        expand = spread
        if expand_bias is not None:
            spread_bias = np.zeros(ring_channels, dtype)
            spread_bias[ring_index] = expand_bias
            expand_bias = spread_bias
    heads = expand_groups * head if tail else ring_channels  # ring channels of the 3-vector blocks
    e_packed, e_sources, e_counts = _by_blocks(expand[:heads], heads, heads if tail else mid, expand_groups,
                                               expand_per_group, lambda i: i, block)
    tail_block = 2 * block // 3
    if tail:
        t_packed, t_sources, t_counts = _by_blocks(expand[heads:], ring_channels - heads, ring_channels - heads,
                                                   expand_groups, expand_per_group, lambda i: i, tail_block)
        t_bias = _padded(None if expand_bias is None else expand_bias[heads:], dtype, ring_channels - heads)
    else:
        t_packed, t_sources = np.zeros((0, 1, tail_block), dtype), np.zeros((0, 1), np.int64)
        t_counts, t_bias = np.zeros(0, np.int64), np.zeros(0, dtype)
    p_packed, p_sources, p_counts = _by_blocks(project, c_out, out, project_groups, project_per_group,
                                               lambda i: ring_of[i], project_block)
    ring_taps = np.zeros((*taps.shape[2:], mid), dtype)
    ring_taps[:, :, ring_index] = taps[position, 0].transpose(1, 2, 0)
    ring_taps_bias = np.zeros(mid, dtype)
    if taps_bias is not None:
        ring_taps_bias[ring_index] = np.asarray(taps_bias)[position]
    return (e_packed, e_sources, e_counts, _padded(None if expand_bias is None else expand_bias[:heads], dtype,
                                                   heads if tail else mid), ring_taps, ring_taps_bias, p_packed,
            p_sources, p_counts, _padded(project_bias, dtype, out), t_packed, t_sources, t_counts, t_bias)


def window_offsets(spec: ConvSpec, indices: np.ndarray, row: int, pixel: int, memo: dict) -> np.ndarray:
    """The packed flat indices (kh * KW + kw) * C_in + c of a KxK first stage as element offsets from a
    window's corner (kh * dh rows of ``row`` elements, kw * dw pixels of ``pixel``, c channels on),
    remembered in ``memo``."""
    offsets = memo.get((row, pixel))
    if offsets is None:
        tap, channel = np.divmod(indices, spec.in_channels)
        kh, kw = np.divmod(tap, spec.kernel_size[1])
        offsets = kh * spec.dilation[0] * row + kw * spec.dilation[1] * pixel + channel
        if len(memo) >= 64:
            memo.clear()
        memo[(row, pixel)] = offsets
    return offsets


def window_staging(spec: ConvSpec, bound, shape: tuple, indices: np.ndarray,
                   memo: dict) -> tuple[np.ndarray, np.ndarray]:
    """(geometry, offsets) for a kernel that stages each output row's window of input rows channels-last in
    a zero-padded buffer (kernels/cpu/fused_blocks.stage_window) instead of reading a padded copy of the
    input: geometry (H_in, W_in, C_in, SH, SW, pad top, pad left, rows per window, buffer row pixels) for
    input ``shape`` (N, H, W, C_in) of ``spec`` bound as ``bound``; offsets from a window's corner in the
    buffer (window_offsets)."""
    (top, left), (_, right) = bound.pad_before, bound.pad_after
    width, c_in = shape[2] + left + right, spec.in_channels
    geometry = np.array((shape[1], shape[2], c_in, *spec.stride, top, left,
                         (spec.kernel_size[0] - 1) * spec.dilation[0] + 1, width), np.int64)
    return geometry, window_offsets(spec, indices, width * c_in, c_in, memo)
