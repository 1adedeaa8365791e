"""Chains of convolutions run as one kernel, so the tensors between them never reach memory.

``PreparedPointwiseDepthwisePointwise`` is MobileNetV2's inverted residual (1x1 expansion, 3x3
depthwise, 1x1 projection, optional skip connection) and ShuffleNet v2's branch: the kernel is
numbaconv/kernels/cpu/fused_blocks.py.  The first stage may also be a dense KxK convolution with stride
and padding (a network's stem followed by MobileNet's first depthwise-separable block): the kernel's
first stage reads each input channel through a list of offsets, so a KxK window over a padded input is
the same pointwise reduction over KH * KW * C_in offsets.  Maps too short to give every thread a band of
MIN_BAND_ROWS rows (7x7 at batch 1) run on a second kernel that splits the expanded channels instead:
each thread expands, filters and projects its part over the whole image, and a last pass adds the parts'
projections (``kernel_for`` says which runs).  ``Network`` uses it where a graph holds such a chain; it
can also be called directly, on channels-last input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import get_num_threads

from . import packing
from .api import _CLAMPS, _element_strides, _flat_from_first, _pad_channels_last
from .dispatch import is_pointwise
from .kernels.cpu.fused_blocks import (PIXELS, PIXELS3, conv_maxpool_rows, conv_pw_dw_pw_parts,
                                      conv_pw_dw_pw_rows)
from .kernels.cpu.simd import VECTOR_BYTES
from .spec import ConvSpec, ConvSpecError

CLAMPS = {None: (0.0, 0.0, 0.0), **{name: (1.0, *bounds) for name, bounds in _CLAMPS.items()}}


def _clamp_row(activation) -> tuple[float, float, float]:
    """(apply?, low, high) for None, 'relu', 'relu6' or a (low, high) clip."""
    if isinstance(activation, tuple):
        return (1.0, float(activation[0]), float(activation[1]))
    return CLAMPS[activation]
# Output rows per job at least this many (when the image allows): a band recomputes the expanded rows it
# shares with its neighbour, KH - stride of them.
MIN_BAND_ROWS = 7
# Output rows computed together hold at least this many pixels where the buffers stay within GROUP_BYTES:
# the pointwise stages' 6-pixel blocks then waste little on a row's ragged end (a 7-pixel row is two
# overlapping blocks, 12 pixels' work for 7).
GROUP_PIXELS = 48
GROUP_BYTES = 256 << 10


def chain_fits(expand: ConvSpec, depthwise: ConvSpec, project: ConvSpec, activations: tuple,
               shuffle_groups: int = 0) -> str | None:
    """None when the three specs (and a channel shuffle of ``shuffle_groups`` after the first) form a
    chain this kernel computes exactly, else why not."""
    if (project.ndim != 2 or project.kernel_size != (1, 1) or project.stride != (1, 1) or project.transposed
            or any(p != (0, 0) for p in project.padding)):
        return "project must be a 2D 1x1 convolution, stride 1, no padding"
    if (expand.ndim != 2 or expand.transposed or expand.padding_mode != "zeros"
            or (not is_pointwise(expand) and expand.groups != 1)):
        return ("expand must be a 2D 1x1 convolution (stride 1, no padding, any groups) or a dense 2D "
                "convolution with zero padding")
    if shuffle_groups and expand.out_channels % shuffle_groups:
        return f"shuffle groups={shuffle_groups} must divide the expansion's {expand.out_channels} channels"
    if (depthwise.ndim != 2 or depthwise.transposed or depthwise.groups != depthwise.in_channels
            or depthwise.out_channels != depthwise.in_channels or depthwise.kernel_size != (3, 3)
            or depthwise.dilation != (1, 1) or depthwise.padding_mode != "zeros"):
        return "depthwise must be a 2D 3x3 depthwise convolution (multiplier 1), zero padding, no dilation"
    if expand.out_channels != depthwise.in_channels or depthwise.out_channels != project.in_channels:
        return (f"channels must chain: expand gives {expand.out_channels}, depthwise takes "
                f"{depthwise.in_channels} and gives {depthwise.out_channels}, project takes {project.in_channels}")
    if any(not (isinstance(a, tuple) and len(a) == 2) and a not in CLAMPS for a in activations):
        return f"activations must be None, 'relu', 'relu6' or (low, high), got {activations}"
    return None


class PreparedPointwiseDepthwisePointwise:
    """project(depthwise(expand(x))) with each convolution's bias and activation, weights packed once; the
    pointwise stages may be grouped, with ``shuffle_groups`` a channel shuffle after the expansion
    (ShuffleNet's unit), folded into the weights' order.

    ``chain(x, residual=None)``: x (N, H, W, C_in) channels-last (a channel slice of a larger channels-last
    array is read in place), residual (N, OH, OW, C_out) added before the last activation; returns (N, OH, OW,
    C_out), or writes into ``out``; with a dense KxK first stage x may be any view (its rows are staged by
    the kernel).  ``chain(x, interleave_with=a)`` returns ShuffleNet v2's unit ending,
    channel_shuffle(concat([a, result]), 2) of shape (N, OH, OW, 2 * C_out), in the same pass (``result_first``:
    concat([result, a])); a (N, OH, OW, C_out) may be a channel slice.  ``chain(x, concat_with=a)`` returns
    concat([a, result]) (ShuffleNet v1's downsampling unit; ``result_first``: concat([result, a])) for a (N, OH,
    OW, C) with any C.  ``chain(x, concat_pooled=True)`` does the same with a = avgpool(x) over the depthwise
    stage's windows (its kernel, stride and padding; ``count_include_pad``), averaged in the final pass from
    input rows still in cache: ShuffleNet v1's pooled tensor is never written.  Weights in PyTorch order:
    expand (C_mid, C_in/G1, 1, 1) (or (C_mid, C_in, KH, KW) for a dense first stage with its own stride and
    padding), depthwise (C_mid, 1, 3, 3), project (C_out, C_mid/G2, 1, 1); biases (C,) or None.
    """

    def __init__(self, specs: tuple[ConvSpec, ConvSpec, ConvSpec], weights: tuple, biases: tuple,
                 activations: tuple = (None, None, None), shuffle_groups: int = 0):
        why = chain_fits(*specs, tuple(activations), shuffle_groups)
        if why:
            raise ConvSpecError(why)
        weights = tuple(np.ascontiguousarray(w) for w in weights)
        for name, spec, w in zip(("expand", "depthwise", "project"), specs, weights):
            if tuple(w.shape) != spec.weight_shape:
                raise ConvSpecError(f"{name} weight must have shape {spec.weight_shape}, got {tuple(w.shape)}")
        self.specs = specs
        self.dtype = weights[0].dtype
        lanes = VECTOR_BYTES // self.dtype.itemsize
        # A dense KxK first stage is packed as a 1x1 over its window's inputs; each call turns their flat
        # indices into offsets from an output pixel's window corner (_window_input).
        self.window = not is_pointwise(specs[0])  # else the first stage reads pixels one to one
        expand, project = specs[0], specs[2]
        expand_inputs = (expand.in_channels // expand.groups) * expand.kernel_size[0] * expand.kernel_size[1]
        project_block = packing.cheapest_block(project.out_channels, project.groups,
                                               project.in_channels // project.groups, lanes)

        def packed(tails: bool) -> tuple:
            block, slots, tail = packing.expansion_layout(expand.out_channels, expand.groups, expand_inputs, lanes,
                                                          tails)
            return packing.pack_pw_dw_pw(weights[0], biases[0], weights[1], biases[1], weights[2], biases[2],
                                         block, expand.groups, project.groups, shuffle_groups, project_block,
                                         slots, tail)
        # The band kernel may take the expansion in two block widths (packing.expansion_layout's tail); the
        # parts kernel and a windowed first stage (staged rows) take one.
        self.banded = packed(not self.window)
        self.packed = packed(False) if self.banded[10].shape[0] else self.banded
        self._offsets: dict = {}  # (row, pixel stride) -> the first stage's input offsets
        self.clamps = np.array([_clamp_row(a) for a in activations], np.float64)
        self._empty = np.zeros(0, self.dtype)  # "no residual" for the kernel
        self._plans: dict = {}
        self._split: dict = {}  # parts -> the projection split for conv_pw_dw_pw_parts, and blocks per part

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, H, W, C_in) -> (N, OH, OW, C_out)."""
        return self._plan(tuple(shape), get_num_threads())[0][:3] + (self.specs[2].out_channels,)

    def worthwhile(self, shape: tuple[int, ...], threads: int | None = None) -> bool:
        """Whether the chain runs fused for input of ``shape`` (N, H, W, C_in): every thread gets a band of at
        least MIN_BAND_ROWS output rows, or (fewer images than threads) a part of the expanded channels
        (kernel_for).  Otherwise (several images on maps too short for bands, or an expansion of one block)
        recomputed rows and idle threads cost more than fusing saves, and a network runs it layer by layer."""
        return self._plan(tuple(shape), threads or get_num_threads())[1]

    def kernel_for(self, shape: tuple[int, ...], threads: int | None = None) -> str:
        """'bands' (row bands, conv_pw_dw_pw_rows) or 'parts' (parts of the expanded channels,
        conv_pw_dw_pw_parts): the kernel that runs for input of ``shape`` on ``threads`` threads."""
        return "parts" if self._plan(tuple(shape), threads or get_num_threads())[4] else "bands"

    def _plan(self, shape: tuple[int, ...], threads: int) -> tuple:
        """(output shape, worthwhile, kernel's integer arguments, the first stage's (pad before, pad after),
        parts, staging) for an input shape, worked out once (a network calls each block with one shape, and
        binding the spec cost more than a small block's kernel).  ``parts``: 0 for row bands, else how many parts
        of the expanded channels conv_pw_dw_pw_parts splits the work into (maps too short for a band of
        MIN_BAND_ROWS rows per thread); worthwhile: either applies; staging: a windowed first stage's
        (geometry, offsets) when row bands stage its input rows (packing.window_staging), else None."""
        key = (shape, threads)
        plan = self._plans.get(key)
        if plan is None:
            expand, depthwise, project = self.specs
            first = expand.bind((shape[0], expand.in_channels, shape[1], shape[2]))
            he, we = first.out_spatial  # the first stage's output: the depthwise stage's input
            bound = depthwise.bind((shape[0], depthwise.in_channels, he, we))
            n, (oh, ow) = shape[0], bound.out_spatial
            band_rows, worthwhile = _bands(n, oh, threads)
            c_out, mid = project.out_channels, self.banded[4].shape[2]
            width = max(we + bound.pad_before[1], (ow - 1) * depthwise.stride[1] + 3)
            group = self._group_rows(band_rows, ow, we, depthwise.stride[0], width * mid * self.dtype.itemsize,
                                     ow * mid * self.dtype.itemsize)
            parts = 0 if worthwhile else _parts(n, self.packed[0].shape[0], threads)
            stage = (packing.window_staging(expand, first, shape, self.packed[1], self._offsets)
                     if self.window and not parts else None)
            plan = ((n, oh, ow, c_out), worthwhile or bool(parts),
                    ((oh * ow * c_out, ow * c_out, c_out), (n, he, we, oh, ow), depthwise.stride,
                     bound.pad_before, c_out, band_rows, group), (first.pad_before, first.pad_after), parts, stage)
            if len(self._plans) >= 64:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _group_rows(self, band_rows: int, ow: int, w_in: int, stride: int, ring_row_bytes: int,
                    out_row_bytes: int) -> int:
        """Output rows computed together in a band of ``band_rows`` rows ``ow`` wide (input rows ``w_in`` wide,
        ``stride`` apart): at least GROUP_PIXELS pixels, within GROUP_BYTES, and, among the counts that
        qualify up to twice that, the one whose pixel runs waste least on ragged ends of the pointwise stages'
        register blocks (6 or 4 pixels, the last block overlapping the one before it), each stage weighted by
        its multiply-adds: MobileNetV2's 28-wide maps as 3 rows (84 pixels, whole blocks) rather than 2 (56:
        10 blocks of 6 for 56 pixels)."""
        def fits(rows: int) -> bool:
            return ((rows - 1) * stride + 4) * ring_row_bytes + rows * out_row_bytes <= GROUP_BYTES

        def blocks(pixels: int, chunk: int) -> int:
            return -(-pixels // chunk) if pixels >= chunk else 2 * pixels  # a pixel alone: a slow latency chain

        lanes = VECTOR_BYTES // self.dtype.itemsize
        stages = []  # (multiply-adds per pixel, register block's pixels, pixel runs per output row)
        for packed, per_row in ((self.banded, stride * w_in / ow), (self.banded[6:], 1)):
            chunk = PIXELS3 if packed[0].shape[2] == 3 * lanes else PIXELS
            stages.append((packed[0].shape[0] * packed[0].shape[1] * packed[0].shape[2], chunk, per_row))

        def waste(rows: int) -> float:
            runs = [rows] * (band_rows // rows) + ([band_rows % rows] if band_rows % rows else [])
            return sum(work * sum(blocks(round(r * ow * per_row), chunk) * chunk for r in runs)
                       / (band_rows * ow * per_row) for work, chunk, per_row in stages)

        least = max(1, min(band_rows, -(-GROUP_PIXELS // ow)))
        while least > 1 and not fits(least):
            least -= 1
        options = [rows for rows in range(least, min(band_rows, 2 * least) + 1) if fits(rows)] or [least]
        return min(options, key=lambda rows: (round(waste(rows), 6), rows))

    def runner(self, shape: tuple[int, ...], threads: int | None = None, residual: bool = False,
               joined: tuple | None = None, x_start: int = 0, joined_start: int = 0) -> Callable[..., np.ndarray]:
        """``run(x)`` (``run(x, other)`` with ``residual`` or ``joined``) -> result: ``self(x, ...)`` for a
        C-contiguous x of exactly ``shape`` (N, H, W, C) whose channels x_start .. x_start + C_in the chain
        reads (a ShuffleNet v2 unit's half, read in place), with every kernel argument worked out here once,
        for ``threads`` (default: Numba's count now; any count computes the same result).  ``residual``:
        ``other`` is the (N, OH, OW, C_out) summand.  ``joined`` = (mode, other's shape, result_first) with
        mode 'interleave' or 'concat': ``other`` (C-contiguous, that shape) is stored beside the result as
        ``interleave_with``/``concat_with`` would, from its channel ``joined_start`` (interleave: C_out
        channels; concat: all the rest); or ('pooled', count_include_pad, result_first): x's average over the
        depthwise stage's windows is concatenated as ``concat_pooled`` would, and run(x) takes no other.  A
        network calls each block with one shape: this leaves a few microseconds of Python per call where
        __call__ spends ~25.  Each call checks the arrays' shapes and dtypes (a mismatch is a ConvSpecError,
        never an out-of-bounds read)."""
        shape, c_in, dtype = tuple(shape), self.specs[0].in_channels, self.dtype
        if len(shape) != 4 or not 0 <= x_start <= shape[3] - c_in or (self.window and shape[3] != c_in):
            raise ConvSpecError(f"shape must be (N, H, W, C) with channels {x_start}..{x_start + c_in} inside it "
                                f"(all of them for a windowed first stage), got {shape}")
        result_shape, _, arguments, padding, parts, stage = self._plan((*shape[:3], c_in),
                                                                       threads or get_num_threads())
        out_strides, c_out = arguments[0], arguments[4]
        beside, beside_strides, interleave, beside_channels, other_shape = self._empty, (0, 0, 0), 0, 0, None
        pool_mode = 0
        x_strides = (shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1)
        if joined is not None and joined[0] == "pooled":
            _, include_pad, result_first = joined
            if residual or self.window:
                raise ConvSpecError("joined ('pooled', ...) takes a pointwise first stage and no residual")
            pool_mode, beside_strides, beside_channels = 1 if include_pad else 2, x_strides[:3], c_in
            result_shape, out_strides, interleave = _joined_layout(result_shape, True, result_first, c_in)
        elif joined is not None:
            mode, other_shape, result_first = joined
            other_shape = tuple(other_shape)
            beside_channels = c_out if mode == "interleave" else other_shape[3] - joined_start
            if (mode not in ("interleave", "concat") or residual or len(other_shape) != 4
                    or other_shape[:3] != result_shape[:3] or not 0 <= joined_start <= other_shape[3] - beside_channels
                    or beside_channels < 0):
                raise ConvSpecError(f"joined must be ('interleave' or 'concat', (N, OH, OW, C) with OH, OW = "
                                    f"{result_shape[1:3]} holding the stored channels, result_first) and no "
                                    f"residual, got {joined} from channel {joined_start}")
            beside_strides = (other_shape[1] * other_shape[2] * other_shape[3], other_shape[2] * other_shape[3],
                              other_shape[3])
            result_shape, out_strides, interleave = _joined_layout(result_shape, mode == "concat", result_first,
                                                                   beside_channels)
        elif residual:
            other_shape = result_shape
        sources, window, empty, staged = self.packed[1], self.window, self._empty, stage is not None

        def run(x: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
            if (not isinstance(x, np.ndarray) or x.shape != shape or x.dtype != dtype
                    or not (x.flags.c_contiguous or staged) or (other is None) != (other_shape is None)
                    or (other is not None and (not isinstance(other, np.ndarray) or other.shape != other_shape
                                               or other.dtype != dtype or not other.flags.c_contiguous))):
                raise ConvSpecError(f"the runner takes a {dtype} x of shape {shape} (C-contiguous"
                                    f"{' or any view' if staged else ''}) and "
                                    f"{'an other of shape ' + str(other_shape) if other_shape else 'no other'}, "
                                    f"got {getattr(x, 'shape', None)} and {getattr(other, 'shape', None)}")
            if window:
                flat, x_steps, x_sources, geometry = self._windowed_input(x, padding, stage)
            else:
                flat, x_steps, x_sources, geometry = x.reshape(-1)[x_start:], x_strides, sources, NO_STAGING
            result = np.empty(result_shape, dtype)
            if not result.size:
                return result
            self._launch(flat, x_steps, x_sources, geometry, result.reshape(-1), out_strides,
                         other.reshape(-1) if residual else empty,
                         flat if pool_mode else other.reshape(-1)[joined_start:] if joined else beside,
                         beside_strides, interleave, beside_channels, arguments, parts, pool_mode)
            return result
        return run

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None, out: np.ndarray | None = None,
                 threads: int | None = None, interleave_with: np.ndarray | None = None,
                 result_first: bool = False, concat_with: np.ndarray | None = None, concat_pooled: bool = False,
                 count_include_pad: bool = True) -> np.ndarray:
        _check_input(x, self.specs[0].in_channels, self.dtype)
        item = x.itemsize
        shape, _, arguments, padding, parts, stage = self._plan(x.shape, threads or get_num_threads())
        out_strides = arguments[0]
        if self.window:
            flat, x_strides, expand_sources, geometry = self._windowed_input(x, padding, stage)
        else:
            if x.strides[3] != item or any(s % item for s in x.strides):
                x = np.ascontiguousarray(x)
            flat, x_strides = _flat_from_first(x), (*(st // item for st in x.strides[:3]), 1)
            expand_sources, geometry = self.packed[1], NO_STAGING
        beside, beside_strides, interleave, beside_channels, pool_mode = self._empty, (0, 0, 0), 0, 0, 0
        joined = concat_with if concat_with is not None else interleave_with
        if concat_pooled:  # x's own average over the depthwise windows, beside the result
            if joined is not None or residual is not None or self.window:
                raise ConvSpecError("concat_pooled takes a pointwise first stage and no residual, interleave_with "
                                    "or concat_with")
            beside, beside_strides, beside_channels = flat, x_strides[:3], x.shape[3]
            pool_mode = 1 if count_include_pad else 2
            shape, out_strides, interleave = _joined_layout(shape, True, result_first, beside_channels)
        elif joined is not None:  # a second input the final pass stores beside the result
            concat, a = concat_with is not None, joined
            name = "concat_with" if concat else "interleave_with"
            if (residual is not None or (concat and interleave_with is not None) or not isinstance(a, np.ndarray)
                    or a.ndim != 4 or (a.shape[:3] if concat else a.shape) != (shape[:3] if concat else shape)
                    or a.dtype != self.dtype):
                wanted = f"(N, OH, OW, C) = {shape[:3]} + (C,)" if concat else f"of the result's shape {shape}"
                raise ConvSpecError(f"{name} must be a {self.dtype} array {wanted} (and no residual), got "
                                    f"{getattr(a, 'shape', None)} {getattr(a, 'dtype', None)}")
            if a.strides[3] != item or any(st % item for st in a.strides):
                a = np.ascontiguousarray(a)
            beside, beside_strides = _flat_from_first(a), tuple(st // item for st in a.strides[:3])
            beside_channels = a.shape[3]
            shape, out_strides, interleave = _joined_layout(shape, concat, result_first, beside_channels)
        for name, array in (("residual", residual), ("out", out)):
            if array is not None and (not isinstance(array, np.ndarray) or array.shape != shape
                                      or array.dtype != self.dtype or not array.flags.c_contiguous):
                raise ConvSpecError(f"{name} must be a C-contiguous {self.dtype} array of shape {shape}, got "
                                    f"{getattr(array, 'shape', None)} {getattr(array, 'dtype', None)}")
        result = out if out is not None else np.empty(shape, self.dtype)
        if result.size == 0:
            return result
        if residual is not None and out is not None and np.shares_memory(residual, out):
            residual = residual.copy()  # the projection may store a pixel before it reads that pixel's residual
        self._launch(flat, x_strides, expand_sources, geometry, result.reshape(-1), out_strides,
                     residual.reshape(-1) if residual is not None else self._empty, beside, beside_strides,
                     interleave, beside_channels, arguments, parts, pool_mode)
        return result

    def _windowed_input(self, x: np.ndarray, padding: tuple, stage: tuple | None) -> tuple:
        """(flat x, its (n, h, w, c) strides, the first stage's sources, staging geometry) for a dense KxK
        first stage: x read in place with the kernel staging its rows (row bands: ``stage`` from _plan), or
        a zero-padded channels-last copy (parts)."""
        if stage is not None:
            flat, strides = _element_strides(x)
            return flat, strides, stage[1], stage[0]
        padded, strides, sources = _window_input(self.specs[0], x, *padding, self.packed[1], self._offsets)
        return padded.reshape(-1), (*strides, 1), sources, NO_STAGING

    def _launch(self, x: np.ndarray, x_strides: tuple, expand_sources: np.ndarray, geometry: np.ndarray,
                out: np.ndarray, out_strides: tuple, residual: np.ndarray, beside: np.ndarray, beside_strides: tuple,
                interleave: int, beside_channels: int, arguments: tuple, parts: int, pool_mode: int = 0) -> None:
        """The kernel for a plan (_plan): row bands, or with ``parts`` the expanded channels split in parts
        whose projections a second pass sums (its partial sums allocated here).  x_strides (n, h, w, c);
        geometry: the staging of a windowed first stage's rows (row bands only), else NO_STAGING; pool_mode:
        the kernels' (non-zero: beside is x, averaged over the depthwise windows)."""
        _, sizes, strides, pads, c_out, band_rows, group = arguments
        packed = self.packed
        if not parts:
            banded = self.banded
            if banded is not packed:  # its own first-stage sources (a pointwise first stage's channels)
                expand_sources = banded[1]
            conv_pw_dw_pw_rows(x, x_strides, geometry, banded[0], expand_sources, *banded[2:], out, out_strides,
                               residual, beside, beside_strides, interleave, beside_channels, pool_mode, sizes,
                               strides, pads, c_out, band_rows, group, self.clamps)
            return
        split = self._split.get(parts)
        if split is None:
            blocks, block = packed[0].shape[0], packed[0].shape[2]
            part_blocks = -(-blocks // parts)
            split = self._split[parts] = (packing.split_projection(packed[6], packed[7], packed[8], packed[9],
                                                                   part_blocks * block, parts), part_blocks)
        (part_project, part_sources, part_counts, part_bias), part_blocks = split
        partial = np.empty((parts, sizes[0], sizes[3] * sizes[4] * part_project.shape[1] * part_project.shape[3]),
                           self.dtype)
        conv_pw_dw_pw_parts(x, x_strides[:3], packed[0], expand_sources, packed[2], packed[3], packed[4], packed[5],
                            part_project, part_sources, part_counts, part_bias, part_blocks, partial, out,
                            out_strides, residual, beside, beside_strides, interleave, beside_channels, pool_mode,
                            sizes, strides, pads, c_out, self.clamps)


def _joined_layout(shape: tuple, concat: bool, result_first: bool, beside_channels: int) -> tuple:
    """(result shape, its (n, h, w) strides, the kernel's interleave code) when the chain's final pass
    stores a second input of ``beside_channels`` channels beside its (N, OH, OW, C_out) ``shape``:
    concatenated (``concat``) or interleaved, after the result or (``result_first``) before it."""
    channels = shape[3] + beside_channels
    interleave = (4 if result_first else 3) if concat else (2 if result_first else 1)
    return (*shape[:3], channels), (shape[1] * shape[2] * channels, shape[2] * channels, channels), interleave


def _check_input(x, channels: int, dtype: np.dtype) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[3] != channels or x.dtype != dtype:
        raise ConvSpecError(f"input must be a {dtype} array (N, H, W, {channels}) channels-last, got "
                            f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', None)}")


def _bands(n: int, rows: int, threads: int) -> tuple[int, bool]:
    """(rows per band, worthwhile) for ``rows`` output rows of each of ``n`` images: enough bands to occupy
    every thread, none shorter than MIN_BAND_ROWS where the image allows; worthwhile when every thread gets
    a band of MIN_BAND_ROWS (a band recomputes the rows its window shares with its neighbour)."""
    bands = max(1, min(-(-threads // n), rows // MIN_BAND_ROWS))
    return -(-rows // bands), n * (rows // MIN_BAND_ROWS) >= threads


def _parts(n: int, blocks: int, threads: int) -> int:
    """How many parts of the expanded channels (``blocks`` blocks) give every thread work when ``n`` images
    are fewer than the threads (each part a whole number of blocks, none empty); 0 when parts do not help."""
    if n >= threads or blocks < 2:
        return 0
    per_part = -(-blocks // min(blocks, -(-threads // n)))
    return -(-blocks // per_part)


def _window_input(spec: ConvSpec, x: np.ndarray, before: tuple, after: tuple, indices: np.ndarray,
                  memo: dict) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """(input, (n, h, w) strides, offsets) for a KxK first stage read through offsets: x (N, H, W, C) zero-
    padded by ``before``/``after`` (a copy) where needed; the strides step between the convolution's output
    rows and pixels (its stride folded in); the offsets as in packing.window_offsets."""
    if any(before) or any(after):
        x = _pad_channels_last(np.ascontiguousarray(x)[:, None], (0, *before), (0, *after), 0)[:, 0]
    n_stride, row, pixel = (st // x.itemsize for st in x.strides[:3])
    offsets = packing.window_offsets(spec, indices, row, pixel, memo)
    return x, (n_stride, spec.stride[0] * row, spec.stride[1] * pixel), offsets


NO_STAGING = np.zeros(9, np.int64)  # a first stage whose input the kernel reads directly


def conv_maxpool_fits(spec: ConvSpec, activation, pool: tuple) -> str | None:
    """None when PreparedConvMaxPool computes maxpool(activation(conv)) for ``spec`` and ``pool`` (kernel,
    stride, padding pairs, ceil_mode), else why not."""
    kernel, stride, pads, _ = pool
    if spec.ndim != 2 or spec.transposed or spec.groups != 1 or spec.padding_mode != "zeros":
        return "the convolution must be a dense 2D convolution with zero padding"
    if len(kernel) != 2 or len(stride) != 2 or len(pads) != 2 or any(p[0] >= k or p[1] >= k
                                                                   for p, k in zip(pads, kernel)):
        return f"pool must be 2D with padding smaller than its window, got kernel={kernel}, padding={pads}"
    if not (isinstance(activation, tuple) and len(activation) == 2) and activation not in CLAMPS:
        return f"activation must be None, 'relu', 'relu6' or (low, high), got {activation!r}"
    return None


def pooled_size(length: int, kernel: int, stride: int, pads: tuple[int, int], ceil_mode: bool) -> int:
    """Output length of a pooling window over ``length`` positions (the graph's and Network's rule)."""
    span = length + pads[0] + pads[1] - kernel
    return (-(-span // stride) if ceil_mode else span // stride) + 1


class PreparedConvMaxPool:
    """maxpool(activation(conv(x))): a network's stem (ResNet's 7x7/2, ShuffleNet's 3x3/2) with the max
    pooling after it in one kernel (kernels/cpu/fused_blocks.conv_maxpool_rows): the convolution's output,
    the largest tensor of such a network, is never written to memory.

    ``fused(x)``: x (N, H, W, C_in) channels-last -> (N, OH, OW, C_out); x may be any view (an NCHW image
    through np.moveaxis(x, 1, -1)): the kernel stages each window's input rows itself, so neither a
    channels-last nor a padded copy is made.  ``spec`` is a dense 2D convolution
    with zero padding, weight (C_out, C_in, KH, KW), bias (C_out,) or None; ``activation`` None, 'relu',
    'relu6' or a (low, high) clip; ``pool`` (kernel, stride, padding pairs, ceil_mode) of a 2D max pooling.
    """

    def __init__(self, spec: ConvSpec, weight: np.ndarray, bias: np.ndarray | None, activation, pool: tuple):
        from .kernels.cpu.simd import VECTOR_BYTES
        why = conv_maxpool_fits(spec, activation, pool)
        if why:
            raise ConvSpecError(why)
        kernel, stride, pads, ceil_mode = pool
        weight = np.ascontiguousarray(weight)
        if tuple(weight.shape) != spec.weight_shape:
            raise ConvSpecError(f"weight must have shape {spec.weight_shape}, got {tuple(weight.shape)}")
        self.spec, self.dtype = spec, weight.dtype
        self.pool = (tuple(kernel), tuple(stride), tuple(map(tuple, pads)), ceil_mode)
        lanes = VECTOR_BYTES // self.dtype.itemsize
        inputs = spec.in_channels * spec.kernel_size[0] * spec.kernel_size[1]
        self.packed = packing.pack_window_blocks(weight, bias, packing.cheapest_block(spec.out_channels, 1, inputs,
                                                                                      lanes))
        self.clamp = _clamp_row(activation)
        self._offsets: dict = {}
        self._plans: dict = {}

    def _plan(self, shape: tuple[int, ...], threads: int) -> tuple:
        """(output shape, worthwhile, conv geometry, offsets, kernel sizes, pool geometry, band rows)."""
        key = (shape, threads)
        plan = self._plans.get(key)
        if plan is None:
            bound = self.spec.bind((shape[0], self.spec.in_channels, shape[1], shape[2]))
            (kh, kw), (sh, sw), pads, ceil_mode = self.pool
            h, w = bound.out_spatial
            oh, ow = (pooled_size(h, kh, sh, pads[0], ceil_mode), pooled_size(w, kw, sw, pads[1], ceil_mode))
            if oh < 1 or ow < 1:
                raise ConvSpecError(f"the pool window {(kh, kw)} is larger than the padded convolution output "
                                    f"{(h, w)} of input {shape}")
            n = shape[0]
            band_rows, worthwhile = _bands(n, oh, threads)
            conv, offsets = packing.window_staging(self.spec, bound, shape, self.packed[1], self._offsets)
            plan = ((n, oh, ow, self.spec.out_channels), worthwhile, conv, offsets, (n, h, w, oh, ow),
                    (kh, kw, sh, sw, pads[0][0], pads[1][0]), band_rows)
            if len(self._plans) >= 64:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, H, W, C_in) -> (N, OH, OW, C_out)."""
        return self._plan(tuple(shape), get_num_threads())[0]

    def worthwhile(self, shape: tuple[int, ...], threads: int | None = None) -> bool:
        """Whether every thread gets a band of at least MIN_BAND_ROWS pooled rows (else recomputed rows
        and idle threads cost more than the fusion saves)."""
        return self._plan(tuple(shape), threads or get_num_threads())[1]

    def __call__(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        _check_input(x, self.spec.in_channels, self.dtype)
        shape, _, conv, offsets, sizes, pool, band_rows = self._plan(x.shape, threads or get_num_threads())
        result = np.empty(shape, self.dtype)
        if result.size == 0:
            return result
        flat, x_strides = _element_strides(x)
        conv_maxpool_rows(flat, x_strides, conv, self.packed[0], offsets, self.packed[2], self.packed[3],
                          result.reshape(-1), sizes, pool, shape[3], band_rows, self.clamp[0] != 0, self.clamp[1],
                          self.clamp[2])
        return result
