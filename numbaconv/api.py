"""Public compute API: arguments -> ConvSpec -> plan -> packed weights -> kernel.

Names, arguments and results follow ``torch.nn.functional`` where PyTorch has the function.  Arrays are
NumPy (float32 or float64); weights are always in PyTorch order (C_out, C_in/groups, *kernel), transposed
(C_in, C_out/groups, *kernel).  Activations are channels-first unless ``layout`` says channels-last
("NLC", "NHWC", "NDHWC" or "channels_last").  An unbatched input (C, *spatial) is accepted as PyTorch does.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numba
import numpy as np

from . import dispatch, packing, subpixel
from .kernels.cpu import layout as cpu_layout
from .kernels.cpu import simd_direct, simd_rows, winograd
from .kernels.cpu.depthwise import (conv_depthwise, conv_depthwise3x3, conv_depthwise3x3_channels_first,
                                    conv_depthwise_channels_first)
from .kernels.cpu.direct import conv_direct, conv_small_groups
from .kernels.cpu.fused_blocks import PIXELS as WINDOW_BLOCK_PIXELS
from .kernels.cpu.fused_blocks import conv_window_rows
from .kernels.cpu.simd import VECTOR_BYTES, VECTOR_REGISTERS
from .kernels.cpu.transposed import conv_transposed
from .kernels.index import PADDING_MODE_CODES, element_strides, leading
from .spec import ConvSpec, ConvSpecError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


# ---- argument checks at the API edge -----------------------------------------------------------------
def _check_array(value: Any, name: str, dtype: np.dtype | None = None, other: str = "input") -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if dispatch.is_device_array(value):
        raise TypeError(f"{name} is a GPU array; pass device='cuda' (or keep every array on the GPU)")
    array = np.asarray(value)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {array.dtype}")
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"{name} has dtype {array.dtype} but the {other} is {dtype}; convert one of them")
    return array


def channels_last(layout: str | None) -> bool:
    """True for a channels-last layout name, False for channels-first (None is channels-first)."""
    if layout is None:
        return False
    name = str(layout).upper()
    # NWC/NCW: TensorFlow's names for the 1D layouts.
    if name in ("CHANNELS_LAST", "NLC", "NWC", "NHWC", "NDHWC"):
        return True
    if name in ("CHANNELS_FIRST", "NCL", "NCW", "NCHW", "NCDHW"):
        return False
    raise ValueError(f"layout must be NCL/NCHW/NCDHW, NLC/NHWC/NDHWC (NCW/NWC for 1D), 'channels_first' or "
                     f"'channels_last', got {layout!r}")


def _batched(x: np.ndarray, ndim: int, last: bool) -> tuple[np.ndarray, bool]:
    """Add a batch dim to an unbatched input; say whether one was added."""
    if x.ndim == ndim + 1:
        return x[None], True
    if x.ndim != ndim + 2:
        order = f"(N, {_SPATIAL_NAMES[ndim]}, C)" if last else f"(N, C, {_SPATIAL_NAMES[ndim]})"
        raise ConvSpecError(f"input must have shape {order} for a {ndim}D convolution "
                            f"(or be unbatched), got {x.shape}")
    return x, False


def _channels_first_shape(shape: tuple[int, ...], last: bool) -> tuple[int, ...]:
    return (shape[0], shape[-1], *shape[1:-1]) if last else tuple(shape)


def _to_5d_channels_first(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[:2] + (1,) * (5 - x.ndim) + x.shape[2:])


def _to_5d_channels_last(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[:1] + (1,) * (5 - x.ndim) + x.shape[1:])


def _pad3(values: tuple[int, ...], fill: int) -> tuple[int, int, int]:
    return leading(values, 3, fill)


def _pad2(values: tuple[int, ...], fill: int = 1) -> tuple[int, int]:
    return leading(values, 2, fill)


# ---- prepared convolution ----------------------------------------------------------------------------
_PLANS_KEPT = 64  # input shapes whose bound spec and kernel arguments a PreparedConv remembers
POINTWISE_ROW = 96  # pixels per job of a pointwise convolution: a multiple of every SIMD block's pixel count
WIDE_ROWS_GAIN = 0.95  # one long row per image where its padded width is below this fraction of a row's block work
ACTIVATIONS = (None, "relu", "relu6", "hardswish")
_CLAMPS = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0)}
_CLAMPING_KERNELS = ("simd", "winograd", "small_groups", "subpixel", "depthwise")  # families whose epilogue applies a relu/relu6 clamp
_NO_CLAMP = (False, 0.0, 0.0)
# PreparedConv attributes that __getattr__ packs on first use, and the method that packs them.
_PACKED_ON_FIRST_USE = {"packed": "_pack_simd", "bias": "_pack_simd", "rows_packed": "_pack_rows",
                        "rows_bias": "_pack_rows", "rows_channel": "_pack_rows", "window_packed": "_pack_window"}
# "No residual" (or no bias) for the kernels, flat and as an (N, H, W, C) array.
_EMPTY = {np.float32: np.zeros(0, np.float32), np.float64: np.zeros(0, np.float64)}
_EMPTY_4D = {np.float32: np.zeros((0, 0, 0, 0), np.float32), np.float64: np.zeros((0, 0, 0, 0), np.float64)}
# The SIMD kernel's (input extent, padding it skips, edge columns) for an input read without bounds: a
# padded copy whose every tap the call's geometry keeps inside, as long rows (_wide_rows) or subpixel
# phases do.
_UNBOUNDED = ((1 << 40,) * 3, (0, 0, 0), (0, 0))


def apply_activation(y: np.ndarray, kind: str | None, attrs: dict | None = None) -> np.ndarray:
    """An activation applied in place to y (a fresh output buffer): relu, relu6, hardswish or clip."""
    if kind in _CLAMPS or kind == "clip":
        low, high = _CLAMPS[kind] if kind in _CLAMPS else (attrs.get("min", -np.inf), attrs.get("max", np.inf))
        np.clip(y, low, high, out=y)
    elif kind == "hardswish":
        y *= np.clip(y + 3, 0, 6) / 6
    elif kind is not None:
        raise ValueError(f"unknown activation {kind!r}")
    return y


class PreparedConv:
    """A convolution with its weights validated and packed once, for repeated calls.

    ``prepared(x)`` computes the convolution of ``spec`` on x of shape (N, C_in, *spatial) (or
    channels-last with ``layout``), returning (N, C_out, *out_spatial) in the same layout and dtype.
    ``shuffle_groups`` applies a ShuffleNet channel shuffle to the output inside the final copy;
    ``activation`` ('relu', 'relu6', 'hardswish') is applied to the output, on registers in the SIMD
    kernel's epilogue where it can be (CPU only).  ``prepared(x, residual=r)`` adds r (the result's shape
    and layout) before the activation: a ResNet or MobileNetV2 skip connection, summed in the SIMD
    kernel's epilogue where it stores directly (dense, grouped, transposed), else in one pass after it.
    """

    def __init__(self, spec: ConvSpec, weight: Any, bias: Any = None, shuffle_groups: int = 0,
                 kernel: str | None = None, activation: str | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(map(str, ACTIVATIONS))}, got {activation!r}")
        self.activation = activation
        # (clamp?, low, high) for kernels that clip in their epilogue; other activations run afterwards.
        self.clamp = (activation in _CLAMPS, *_CLAMPS.get(activation, (0.0, 0.0)))
        weight = _check_array(_to_host(weight), "weight")
        bias = _to_host(bias)
        if tuple(weight.shape) != spec.weight_shape:
            what = "(C_in, C_out/groups, *kernel)" if spec.transposed else "(C_out, C_in/groups, *kernel)"
            raise ConvSpecError(f"weight must have shape {what} = {spec.weight_shape} for in_channels="
                                f"{spec.in_channels}, groups={spec.groups}; got {tuple(weight.shape)}")
        if bias is not None:
            bias = _check_array(bias, "bias", weight.dtype, "weight")
            if bias.shape != (spec.out_channels,):
                raise ConvSpecError(f"bias must have shape (C_out,) = ({spec.out_channels},), got {bias.shape}")
        if shuffle_groups and spec.out_channels % shuffle_groups:
            raise ConvSpecError(f"shuffle groups={shuffle_groups} does not divide out_channels={spec.out_channels}")
        self.spec = spec
        self.dtype = weight.dtype
        self.shuffle_groups = shuffle_groups
        # Everything decided by the spec alone, and the per-shape plans, are shared by every PreparedConv of
        # the same spec: a one-off public call then costs its packing, not this arithmetic again.
        self.__dict__.update(_spec_layout(spec, shuffle_groups, kernel, weight.dtype))
        # With a choice of two kernels both packings are made on first use (__getattr__): a channels-first
        # call needs only the rows kernel's, a channels-last one only the SIMD kernel's.  They are packed
        # from copies of our own, so a caller changing its arrays afterwards changes neither.
        deferred = self.kernel == "simd" and self.rows_kernel is not None
        keep = np.array if deferred else np.ascontiguousarray
        bias = keep(bias) if bias is not None else None
        self.host_weight = keep(weight)
        self.host_bias = bias
        if self.kernel == "simd":
            if not deferred:
                self._pack_simd()
        elif self.kernel == "subpixel":
            self.subpixel_phases = []  # (phase, SIMD kernel, packed weight, padded bias) per non-empty phase
            self.bias = bias if bias is not None else np.zeros(0, weight.dtype)
            lanes = VECTOR_BYTES // weight.dtype.itemsize
            for phase in subpixel.phases(spec, tuple(p[0] for p in spec.padding)):
                if phase.empty:
                    self.subpixel_phases.append((phase, None, None, None))
                    continue
                sub = subpixel.phase_spec(spec, phase)
                pixels, vectors = dispatch.simd_block(spec.out_channels // spec.groups, lanes, VECTOR_REGISTERS)
                packed, padded_bias = packing.pack_simd(sub, None, bias, vectors * lanes,
                                                        grouped=subpixel.phase_weight(spec, weight, phase))
                self.subpixel_phases.append(
                    (phase, getattr(simd_direct, f"conv_simd_p{pixels}v{vectors}"), packed, padded_bias))
            self.packed = None
        elif self.kernel == "small_groups":
            self.packed = packing.pack_small_groups(spec, weight)
            self.bias = bias if bias is not None else np.zeros(0, weight.dtype)
        elif self.kernel == "winograd":
            self.packed = packing.pack_winograd(weight, 2 * VECTOR_BYTES // weight.dtype.itemsize)
            self.bias = bias if bias is not None else np.zeros(0, weight.dtype)
        else:
            self.packed = (packing.pack_depthwise(spec, weight) if self.kernel == "depthwise"
                           else packing.pack_grouped(spec, weight))
            self.bias = bias if bias is not None else np.zeros(0, weight.dtype)
        if self.rows_kernel is not None and self.kernel != "simd":
            self._pack_rows()
        if self.channels_first_depthwise:
            self.planar_weight = np.ascontiguousarray(weight[:, 0].reshape(spec.out_channels, *_pad2(spec.kernel_size)))

    def _pack_simd(self) -> None:
        self.packed, self.bias = packing.pack_simd(self.spec, self.host_weight, self.host_bias, self._simd_vector)

    def _pack_rows(self) -> None:
        self.rows_packed, self.rows_bias, self.rows_channel = packing.pack_rows(
            self.spec, self.host_weight, self.host_bias, self.rows_channels, self.channel_dest)

    def _pack_window(self) -> None:
        self.window_packed = packing.pack_window_blocks(self.host_weight, self.host_bias, self.window_block)

    def __getattr__(self, name: str) -> Any:
        """The packed weights deferred by __init__, packed on first use."""
        pack = _PACKED_ON_FIRST_USE.get(name)
        if pack is None or "host_weight" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        getattr(self, pack)()
        return self.__dict__[name]

    def __repr__(self) -> str:
        return f"PreparedConv({self.spec}, kernel={self.kernel!r}, dtype={self.dtype})"

    def _bind(self, shape: tuple[int, ...]):
        """spec.bind(shape), remembered per channels-first input shape."""
        bound = self._bound.get(shape)
        if bound is None:
            if len(self._bound) >= _PLANS_KEPT:
                self._bound.clear()
            bound = self._bound[shape] = self.spec.bind(shape)
        return bound

    def output_shape(self, input_shape: tuple[int, ...], layout: str | None = None) -> tuple[int, ...]:
        last = channels_last(layout)
        out = self.spec.output_shape(_channels_first_shape(tuple(input_shape), last))
        return (out[0], *out[2:], out[1]) if last else out

    def runner(self, shape: tuple[int, ...], layout: str | None = None, residual: bool = False,
               threads: int | None = None) -> Callable[..., np.ndarray]:
        """``run(x)`` (``run(x, residual)`` with ``residual``) -> result: ``self(x, layout, device="cpu",
        residual=...)`` for host input of exactly ``shape`` (batched, in ``layout``) and this dtype, with the
        checks, the plan and the kernel's arguments worked out here once, for ``threads`` (default: Numba's
        count now; any count computes the same result).  For callers that run one shape many times, as a
        network does: at batch 1 the generic call's Python cost as much as a small layer (12 us a call
        alone, 30 inside a network), this leaves a few microseconds.  Each call still checks x's (and the
        residual's) shape and dtype: a mismatch is a ConvSpecError, never a kernel reading out of bounds."""
        shape, last = tuple(shape), channels_last(layout)
        if len(shape) != self.spec.ndim + 2:
            order = f"(N, {_SPATIAL_NAMES[self.spec.ndim]}, C)" if last else f"(N, C, {_SPATIAL_NAMES[self.spec.ndim]})"
            raise ConvSpecError(f"shape must be a batched input shape {order}, got {shape}")
        bound = self._bind(_channels_first_shape(shape, last))
        n, out_spatial = bound.batch, bound.out_spatial
        result_shape = (n, *out_spatial, self.spec.out_channels) if last else (n, self.spec.out_channels, *out_spatial)
        dtype = self.dtype
        mismatch = _shape_mismatch(shape, result_shape, dtype, residual)
        clamped = self.activation is None or (self.clamp[0] and self.kernel in _CLAMPING_KERNELS)
        lean = last and clamped and n and math.prod(result_shape)  # else the generic call, after the check
        x5_shape, clamp = (n, *_pad3(bound.in_spatial, 1), shape[-1]), self.clamp
        if lean and self._takes_window(True, bound, residual):  # a 2D stem: shape is (N, H, W, C_in)
            weights, _, counts, bias = self.window_packed
            geometry, offsets, band_rows = self._window_plan(shape, bound)
            x_strides = (shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1)

            def run_window(x: np.ndarray, summand: np.ndarray | None = None) -> np.ndarray:
                mismatch(x, summand)
                result = np.empty(result_shape, dtype)
                conv_window_rows(np.ascontiguousarray(x).reshape(-1), x_strides, geometry, weights, offsets, counts,
                                 bias, result.reshape(-1), (n, *out_spatial), band_rows, *clamp)
                return result
            return run_window
        if lean and self.kernel == "simd" and (not self.shuffle_groups or self.shuffle_in_strides):
            _, before, after, calls, wide, edge = self._simd_plan(shape, True, bound, residual, threads)
            padded, mode = any(before) or any(after), PADDING_MODE_CODES[self.spec.padding_mode]
            out3 = _pad3(out_spatial, 1)
            wide_shape = (n, out3[0], out3[1], wide, self.spec.out_channels)

            def run_simd(x: np.ndarray, summand: np.ndarray | None = None) -> np.ndarray:
                mismatch(x, summand)
                xin = np.ascontiguousarray(x).reshape(x5_shape)
                if padded:
                    xin = _pad_channels_last(xin, before, after, mode)
                result = np.empty(result_shape, dtype)
                y = np.empty(wide_shape, dtype) if wide else result
                self._simd_calls(xin, y, None if summand is None else np.ascontiguousarray(summand), calls, clamp,
                                 edge)
                if wide:
                    np.copyto(_to_5d_channels_last(result), y[:, :, :, :out3[2]])
                return result
            return run_simd
        if lean and self.depthwise3x3 and self.spec.padding_mode == "zeros" and not residual and not self.shuffle_groups:
            skipped, y5_shape = _pad3(bound.pad_before, 0), (n, *_pad3(out_spatial, 1), self.spec.out_channels)

            def run_depthwise(x: np.ndarray, summand: np.ndarray | None = None) -> np.ndarray:
                mismatch(x, summand)
                result = np.empty(result_shape, dtype)
                self._depthwise3x3_last(np.ascontiguousarray(x).reshape(x5_shape), result.reshape(y5_shape),
                                        skipped, clamp)
                return result
            return run_depthwise

        def run_generic(x: np.ndarray, summand: np.ndarray | None = None) -> np.ndarray:
            mismatch(x, summand)
            return self(x, layout, device="cpu", residual=summand)
        return run_generic

    def __call__(self, x: Any, layout: str | None = None, out: np.ndarray | None = None,
                 device: str = "auto", residual: np.ndarray | None = None) -> np.ndarray:
        on_gpu = dispatch.is_device_array(x)
        flops = host_bytes = 0.0
        if device == "auto" and not on_gpu:
            size = math.prod(np.shape(x))
            host_bytes = 2.0 * size * self.dtype.itemsize  # the input there, about as much back
            flops = 2.0 * size * self.spec.out_channels * math.prod(self.spec.kernel_size) / self.spec.groups
        backend, _ = dispatch.choose_backend(device, on_gpu, flops, host_bytes,
                                             _real_gpu_usable() if flops > 1e8 else False)
        if backend == "cuda":
            if self.activation:
                raise ValueError("a fused activation runs on the CPU only; apply it after the GPU convolution")
            if residual is not None:
                raise ValueError("a fused residual runs on the CPU only; add it after the GPU convolution")
            from .cuda_api import run_prepared_cuda
            result = run_prepared_cuda(self, x, layout, out if on_gpu or device == "cuda" else None)
            if not on_gpu and device == "auto":  # host in, host out
                return _deliver_host(result, out)
            return result
        x = _to_host(x)
        x = _check_array(x, "input", self.dtype, "weight")
        last = channels_last(layout)
        x, unbatched = _batched(x, self.spec.ndim, last)
        bound = self._bind(_channels_first_shape(x.shape, last))
        in_kernel = False
        if residual is not None:
            residual = self._check_residual(residual, bound, last, unbatched)
            in_kernel = self._residual_in_kernel(last, bound)
        clamp = self.clamp if residual is None or in_kernel else _NO_CLAMP  # a clamp must follow the sum
        result = self._run(x, last, out if not unbatched else None, clamp, residual if in_kernel else None)
        if residual is not None and not in_kernel:
            np.add(result, residual, out=result)
        if self.activation and not (self.kernel in _CLAMPING_KERNELS and clamp[0]):
            apply_activation(result, self.activation)
        if unbatched:
            result = result[0]
            if out is not None:
                _check_out(out, result.shape, self.dtype)
                out[...] = result
                return out
        return result

    def _check_residual(self, residual: Any, bound, last: bool, unbatched: bool) -> np.ndarray:
        """The residual as a C-contiguous array of the batched result's shape, or a ConvSpecError."""
        residual = _check_array(_to_host(residual), "residual", self.dtype, "weight")
        n, c_out, out_spatial = bound.batch, self.spec.out_channels, bound.out_spatial
        shape = (n, *out_spatial, c_out) if last else (n, c_out, *out_spatial)
        expected = shape[1:] if unbatched else shape
        if tuple(residual.shape) != expected:
            spatial = _SPATIAL_NAMES[self.spec.ndim]
            order = f"(N, {spatial}, C_out)" if last else f"(N, C_out, {spatial})"
            raise ConvSpecError(f"residual must have the result's shape {order} = {expected}, "
                                f"got {tuple(residual.shape)}")
        return np.ascontiguousarray(residual).reshape(shape)

    def _residual_in_kernel(self, last: bool, bound) -> bool:
        """Whether the kernel that runs for this input adds a residual in its epilogue (it stores the result
        directly; a scratch buffer or another kernel family sums in a pass afterwards)."""
        if self.kernel in ("subpixel", "winograd") or self._takes_rows(last, bound):
            return True
        return self.kernel == "simd" and not (self.shuffle_groups and not self.shuffle_in_strides)

    def _takes_rows(self, last: bool, bound) -> bool:
        """Whether channels-first input of this shape runs on the pixel-vectorized kernel: its rows (a
        pointwise layer's whole image) must be at least one block wide."""
        if self.rows_kernel is None or last:
            return False
        if self.rows_flat:
            return math.prod(bound.out_spatial) >= dispatch.ROWS_FLAT_MIN_BLOCKS * self.rows_width
        return bound.out_spatial[-1] >= self.rows_width

    def _takes_window(self, last: bool, bound, residual: bool) -> bool:
        """Whether channels-last input of this shape runs on the staged-window kernel (window_stem): not
        with a residual (the SIMD kernel sums it in its epilogue), nor for rows narrower than a block."""
        return self.window_stem and last and not residual and bound.out_spatial[-1] >= WINDOW_BLOCK_PIXELS

    def _run_window(self, x: np.ndarray, bound, result: np.ndarray, clamp: tuple) -> np.ndarray:
        """conv_window_rows from x (N, H, W, C_in), any strides (an NCHW array seen channels-last is read in
        place), into result (N, OH, OW, C_out)."""
        weights, _, counts, bias = self.window_packed
        geometry, offsets, band_rows = self._window_plan(x.shape, bound)
        flat, strides = _element_strides(x)
        conv_window_rows(flat, strides, geometry, weights, offsets, counts, bias, result.reshape(-1),
                         (bound.batch, *bound.out_spatial), band_rows, *clamp)
        return result

    def _window_plan(self, shape: tuple, bound) -> tuple:
        """(staging geometry, offsets, output rows per job) for conv_window_rows and input ``shape`` (N, H, W,
        C_in), once per shape and thread count."""
        threads = numba.get_num_threads()
        key = ("window", shape, threads)
        plan = self._simd_plans.get(key)
        if plan is None:
            geometry, offsets = packing.window_staging(self.spec, bound, shape, self.window_packed[1], {})
            rows = bound.out_spatial[0]
            bands = max(1, min(rows, -(-dispatch.WINDOW_JOBS_PER_THREAD * threads // bound.batch)))
            if len(self._simd_plans) >= _PLANS_KEPT:
                self._simd_plans.clear()
            plan = self._simd_plans[key] = (geometry, offsets, -(-rows // bands))
        return plan

    def _wide_rows(self, last: bool, bound, residual: bool = False) -> int:
        """The padded input width when a stride-1 SIMD convolution runs over each image's output rows as one
        long row (0 otherwise).  Output pixel (h, w) of the padded input's flattened rows reads pixel
        h * Wp + w + taps, so the image is one run of pixels whose last Wp - OW columns per row are
        computed and dropped; for narrow maps that can waste less than ragged rows (dispatch.row_work: a
        7-wide row of 12-pixel blocks is 12 pixels' work, a 7-wide map costs 9 per row this way).  The buffer is
        channels-last, so channels-first results also gain whole-vector stores (then one transposing copy).
        Not with a residual, which the kernel reads at the result's offsets."""
        spec = self.spec
        if (residual or self.kernel != "simd" or self.shuffle_groups or spec.ndim < 2 or self.pointwise
                or any(s != 1 for s in spec.stride)):
            return 0
        width = bound.out_spatial[-1]
        padded = bound.in_spatial[-1] + bound.pad_before[-1] + bound.pad_after[-1]
        return padded if padded < WIDE_ROWS_GAIN * dispatch.row_work(width, self.block_pixels) else 0

    # The CPU path: one channels-last padded copy in, the kernel, one copy to the caller's layout out.
    def _run(self, x: np.ndarray, last: bool, out: np.ndarray | None, clamp: tuple = _NO_CLAMP,
             residual: np.ndarray | None = None) -> np.ndarray:
        """The convolution into ``out`` (or a new array), clipped by ``clamp``; ``residual`` (only where
        _residual_in_kernel) is added before the clamp."""
        spec = self.spec
        bound = self._bind(_channels_first_shape(x.shape, last))
        n, c_out, out_spatial = bound.batch, spec.out_channels, bound.out_spatial
        result_shape = (n, *out_spatial, c_out) if last else (n, c_out, *out_spatial)
        if out is not None:
            _check_out(out, result_shape, self.dtype)
        result = out if out is not None else np.empty(result_shape, self.dtype)
        if n == 0 or result.size == 0:
            return result
        if self.channels_first_depthwise and not last:
            x4 = np.ascontiguousarray(x).reshape(x.shape[:2] + (1,) * (4 - x.ndim) + x.shape[2:])
            whole_rows = (spec.kernel_size == (3, 3) and spec.stride[1] <= 2
                          and out_spatial[1] >= VECTOR_BYTES // self.dtype.itemsize)
            kernel = conv_depthwise3x3_channels_first if whole_rows else conv_depthwise_channels_first
            kernel(x4, self.planar_weight, self.bias, result.reshape(
                result.shape[:2] + (1,) * (4 - result.ndim) + result.shape[2:]), *_pad2(spec.stride, 1),
                *_pad2(bound.pad_before, 0), *_pad2(spec.dilation, 1), *clamp)
            return result
        if self._takes_rows(last, bound):
            return self._run_rows(x, bound, result, clamp, residual)
        if self._takes_window(last, bound, residual is not None):
            return self._run_window(x, bound, result, clamp)
        if self.kernel == "simd":
            return self._run_simd(x, last, bound, result, clamp, residual)
        if self.kernel == "winograd":
            return self._run_winograd(x, last, bound, result, clamp, residual)
        if self.kernel == "subpixel":
            return self._run_subpixel(x, last, bound, result, clamp, residual)
        # The gather kernel, and channels-last depthwise and small-group input with zero padding, skip the
        # padding tap by tap; the others read a padded copy (channels-first input is copied anyway).
        skips_padding = spec.transposed or (self.kernel in ("depthwise", "small_groups") and last
                                            and spec.padding_mode == "zeros")
        pad_before = (0,) * spec.ndim if skips_padding else bound.pad_before
        pad_after = (0,) * spec.ndim if skips_padding else bound.pad_after
        xin = self._channels_last_padded(x, last, _pad3(pad_before, 0), _pad3(pad_after, 0))
        out_cl_shape = (n, *_pad3(out_spatial, 1), self.kernel_channels)
        direct_out = last and self.writes_result_directly
        y = _to_5d_channels_last(result) if direct_out else np.empty(out_cl_shape, self.dtype)
        s = _pad3(spec.stride, 1)
        d = _pad3(spec.dilation, 1)
        skipped = _pad3(bound.pad_before, 0) if skips_padding else (0, 0, 0)
        if self.kernel == "depthwise":
            if self.depthwise3x3:
                self._depthwise3x3_last(xin, y, skipped, clamp)
            else:
                conv_depthwise(xin, self.packed, self.bias, y, *s, *skipped, *d, *clamp)
        elif self.kernel == "small_groups":
            conv_small_groups(xin, self.packed, self.bias, y, *s, *skipped, *d, *clamp)
        elif self.kernel == "transposed":
            conv_transposed(xin, self.packed, self.bias, y, *s, *_pad3(bound.pad_before, 0), *d)
        else:
            conv_direct(xin, self.packed, self.bias, y, *s, *d)
        return result if direct_out else self._deliver(y, result, last)

    def _run_winograd(self, x: np.ndarray, last: bool, bound, result: np.ndarray, clamp: tuple,
                      residual: np.ndarray | None) -> np.ndarray:
        """Winograd F(4x4, 3x3) (kernels/cpu/winograd.py): x and the result in either layout, read and
        written in place through channels-last views; the residual (the result's layout) is summed in the
        output pass, before the clamp."""
        n, oh, ow = bound.batch, *bound.out_spatial
        tile_rows, tile_columns = winograd.tiles(oh, ow)
        out_padded = self.packed.shape[1] * self.packed.shape[3]
        rows = winograd.chunk_rows(n * tile_rows, tile_columns, self.spec.in_channels, out_padded,
                                   self.dtype.itemsize, self.packed.nbytes, numba.get_num_threads())
        x4 = x if last else x.transpose(0, 2, 3, 1)
        out4 = result if last else result.transpose(0, 2, 3, 1)
        if residual is None:
            summand = _EMPTY_4D[self.dtype.type]
        else:
            summand = residual if last else residual.transpose(0, 2, 3, 1)
        # Flat buffers, so that a shorter last pass still gets C-contiguous (36, tiles, channels) arrays.
        transformed = np.empty(winograd.POSITIONS * rows * tile_columns * self.spec.in_channels, self.dtype)
        products = np.empty(winograd.POSITIONS * rows * tile_columns * out_padded, self.dtype)
        for first in range(0, n * tile_rows, rows):
            count = min(rows, n * tile_rows - first) * tile_columns
            chunk_in = transformed[:winograd.POSITIONS * count * self.spec.in_channels].reshape(
                winograd.POSITIONS, count, self.spec.in_channels)
            chunk_products = products[:winograd.POSITIONS * count * out_padded].reshape(winograd.POSITIONS, count,
                                                                                         out_padded)
            winograd.winograd_input(x4, chunk_in, bound.pad_before[0], bound.pad_before[1], tile_rows, tile_columns,
                                    first)
            winograd.winograd_gemm(chunk_in, self.packed, chunk_products)
            winograd.winograd_output(chunk_products, self.bias, summand, out4, tile_rows, tile_columns, first,
                                     *clamp)
        return result

    def _deliver(self, y: np.ndarray, result: np.ndarray, last: bool) -> np.ndarray:
        """Copy the kernel's channels-last scratch output into the caller's layout, gathering through
        ``channel_source`` (a folded shuffle, or skipping a kernel's padded channels)."""
        if last:
            cpu_layout.gather_channels_last(y, _to_5d_channels_last(result), self.channel_source)
            return result
        out5 = _to_5d_channels_first(result)
        lanes = VECTOR_BYTES // y.dtype.itemsize
        if self.channels_in_order and out5.shape[1] >= lanes and out5.shape[4] >= lanes and y.flags.c_contiguous:
            cpu_layout.channels_last_to_first_blocks(y, out5)
        else:
            cpu_layout.channels_last_to_first(y, out5, self.channel_source)
        return result

    def _run_simd(self, x: np.ndarray, last: bool, bound, result: np.ndarray, clamp: tuple,
                  residual: np.ndarray | None) -> np.ndarray:
        """The SIMD kernel reads either layout through strides and stores straight into the result; only a
        folded channel shuffle goes through a channels-last scratch buffer and a gather copy."""
        read_last, before, after, calls, wide, edge = self._simd_plan(x.shape, last, bound, residual is not None)
        if read_last:
            xin = self._channels_last_padded(x, last, before, after)
        else:
            xin = _pad_channels_first(_to_5d_channels_first(x), before, after,
                                      PADDING_MODE_CODES[self.spec.padding_mode])
        scratch = self.shuffle_groups and not self.shuffle_in_strides
        if wide:  # one long row per image, into a buffer as wide as the padded input (see _wide_rows)
            out3 = _pad3(bound.out_spatial, 1)
            y = np.empty((bound.batch, out3[0], out3[1], wide, self.spec.out_channels), self.dtype)
        else:
            y = np.empty((bound.batch, *_pad3(bound.out_spatial, 1), self.kernel_channels), self.dtype) \
                if scratch else result
        self._simd_calls(xin, y, residual, calls, clamp, edge)
        if wide:
            if last:
                np.copyto(_to_5d_channels_last(result), y[:, :, :, :out3[2]])
                return result
            out5 = _to_5d_channels_first(result)
            lanes = VECTOR_BYTES // self.dtype.itemsize
            if out3[2] >= lanes and out5.shape[1] >= lanes:
                cpu_layout.channels_last_to_first_blocks(y, out5)
            else:
                cpu_layout.channels_last_to_first(y[:, :, :, :out3[2]], out5,
                                                  np.arange(self.spec.out_channels, dtype=np.int64))
            return result
        return self._deliver(y, result, last) if scratch else result

    def _simd_calls(self, xin: np.ndarray, y: np.ndarray, residual: np.ndarray | None, calls: tuple,
                    clamp: tuple, edge: tuple | None = None) -> None:
        """The SIMD kernel's calls of a plan (_simd_plan) from xin, the (N, D, H, W, C) input copy the plan
        asks for (zero-padded or not), into y (residual: y's shape).  ``edge`` is the plan's copy of the
        padding columns, (pad before, left, right, columns: copy_edge_columns' arguments), or None."""
        flat_x, flat_y = xin.reshape(-1), y.reshape(-1)
        flat_r = residual.reshape(-1) if residual is not None else _EMPTY[self.dtype.type]
        flat_e = flat_x
        if edge is not None:
            edge_copy = np.empty_like(xin)
            cpu_layout.copy_edge_columns(xin, edge_copy, *edge)
            flat_e = edge_copy.reshape(-1)
        for x_start, x_strides, y_start, y_strides, shape, (in_size, pads, columns), steps in calls:
            self.simd_kernel(flat_x[x_start:], x_strides, self.packed, self.bias, flat_y[y_start:],
                             flat_r[y_start:] if flat_r.shape[0] else flat_r, y_strides, shape, in_size, pads,
                             flat_e[x_start:], columns, *steps, *clamp)

    def _depthwise3x3_last(self, xin: np.ndarray, y: np.ndarray, skipped: tuple, clamp: tuple) -> None:
        """The channels-last 3x3 depthwise kernel: xin (N, 1, H, W, C) unpadded or padded, y (N, 1, OH, OW, C);
        ``skipped``: the padding the kernel skips tap by tap (D, H, W)."""
        s, d = _pad3(self.spec.stride, 1), _pad3(self.spec.dilation, 1)
        conv_depthwise3x3(xin.reshape(xin.shape[0], *xin.shape[2:]), self.packed[0], self.bias,
                          y.reshape(y.shape[0], *y.shape[2:]), *s[1:], *skipped[1:], *d[1:], *clamp)

    def _run_rows(self, x: np.ndarray, bound, result: np.ndarray, clamp: tuple,
                  residual: np.ndarray | None) -> np.ndarray:
        """Channels-first input on the pixel-vectorized kernel, stored straight into the NCHW result (plus
        ``residual``, the result's shape).  A pointwise layer reads each image's channels as flat rows in
        place; a spatial kernel reads a padded copy whose rows are split into the stride's column phases."""
        spec = self.spec
        n, c_out = result.shape[:2]
        if self.rows_flat:
            rows = np.ascontiguousarray(x).reshape(n, spec.in_channels, 1, -1)
            out4 = result.reshape(n, c_out, 1, -1)
        else:
            (_, bh, bw), (_, ah, aw) = _pad3(bound.pad_before, 0), _pad3(bound.pad_after, 0)
            rows = cpu_layout.split_column_phases(_to_5d_channels_first(x)[:, :, 0], (bh, ah), (bw, aw),
                                                  _pad3(spec.stride, 1)[2], PADDING_MODE_CODES[spec.padding_mode])
            out4 = result.reshape(n, c_out, -1, result.shape[-1])
        offsets, sh, chunk, parts = self._rows_plan(rows.shape, out4.shape)
        flat_r = residual.reshape(-1) if residual is not None else _EMPTY[self.dtype.type]
        self.rows_kernel(rows, self.rows_packed, self.rows_bias, out4, flat_r, self.rows_channel, offsets, sh, chunk,
                         parts, *clamp)
        return result

    def _rows_plan(self, rows_shape: tuple, out_shape: tuple) -> tuple[np.ndarray, int, int, int]:
        """(tap offsets, stride along H, pixels per job, parts of the channel blocks) of the pixel-vectorized
        kernel for its input rows (N, C, PH, S * PWS) and output (N, C_out, OH, OW), worked out once per
        shape and thread count."""
        threads = numba.get_num_threads()
        key = (rows_shape, out_shape, threads)
        plan = self._rows_plans.get(key)
        if plan is not None:
            return plan
        spec = self.spec
        _, _, ph, pw = rows_shape
        (_, sh, sw), (_, dh, dw) = _pad3(spec.stride, 1), _pad3(spec.dilation, 1)
        kh, kw = (1, 1) if self.rows_flat else _pad2(spec.kernel_size)
        phase_width = pw // sw
        columns = np.array([(k * dw) % sw * phase_width + (k * dw) // sw for k in range(kw)], np.int64)
        channels = np.arange(spec.in_channels // spec.groups, dtype=np.int64)
        offsets = (channels[:, None, None] * (ph * pw) + np.arange(kh)[None, :, None] * (dh * pw)
                   + columns[None, None, :]).reshape(-1)
        blocks = self.rows_packed.shape[0] * self.rows_packed.shape[1]
        chunk, parts = dispatch.rows_jobs(out_shape[0] * out_shape[2], out_shape[3], spec.in_channels // spec.groups,
                                          self.dtype.itemsize, self.rows_width, blocks, threads)
        if len(self._rows_plans) >= _PLANS_KEPT:
            self._rows_plans.clear()
        plan = self._rows_plans[key] = (offsets, sh, chunk, parts)
        return plan

    def _simd_plan(self, shape: tuple[int, ...], last: bool, bound, residual: bool = False,
                   threads: int | None = None) -> tuple:
        """(read_last, pad before, pad after, kernel calls, wide, edge) for one input shape and layout,
        worked out once: a network calls each layer with the same shape every time, and this arithmetic
        cost more than a small layer's kernel.  Pad before and after are the input copy's padding; each
        call is (x offset, x strides, y offset, y strides, rows, geometry, steps), geometry being the
        kernel's (input extent, padding it skips, edge columns); wide is _wide_rows' padded width (the
        kernel then writes a buffer that wide) or 0; edge is _simd_calls' copy of the padding columns
        (copy_edge_columns' arguments) or None."""
        threads = threads or numba.get_num_threads()
        key = (shape, last, residual, threads)
        plan = self._simd_plans.get(key)
        if plan is not None:
            return plan
        spec = self.spec
        before, after = _pad3(bound.pad_before, 0), _pad3(bound.pad_after, 0)
        # With several taps, NCHW input is first copied channels-last (one padded pass): channel-
        # strided reads made the kernel 1.3-1.4x slower than that copy costs.  A 1x1 kernel uses each
        # input value once, so there the strided reads win.  The output goes straight to the caller's layout.
        read_last = last or math.prod(spec.kernel_size) > 1
        n, out3 = bound.batch, _pad3(bound.out_spatial, 1)
        wide = self._wide_rows(last, bound, residual)
        # Zero padding on channels-last reads is skipped in the kernel, which reads only the columns at
        # each end of a row from a padded copy (a padded copy of everything: 3.5-4.5% of a dense 3x3
        # layer's time), as long as they fit in a row's width; long rows read the padded rows as one,
        # other modes remap indices in the copy.
        in_size, edge = _pad3(bound.in_spatial, 1), None
        padded3 = tuple(v + b + a for v, b, a in zip(in_size, before, after))
        geometry = (padded3, (0, 0, 0), (0, padded3[2]))  # a padded copy (or no padding): every block reads x
        if read_last and spec.padding_mode == "zeros" and not wide and padded3 != in_size:
            left, right = dispatch.edge_columns(out3[2], self.block_pixels, _pad3(spec.stride, 1)[2],
                                                _pad3(spec.dilation, 1)[2], _pad3(spec.kernel_size, 1)[2],
                                                before[2], in_size[2], after[2])
            columns = left + padded3[2] - right
            if columns <= in_size[2]:
                edge, geometry = (before[2], left, right, columns), (in_size, before, (left, right))
                before, after, padded3 = (0, 0, 0), (0, 0, 0), in_size  # no padded copy
        x_strides = element_strides((n, spec.in_channels, *padded3), read_last)
        per_group = spec.out_channels // spec.groups
        y_strides = element_strides((n, spec.out_channels, *out3), last)
        if self.shuffle_in_strides:
            # Channel k of group g lands at k * G + g after the shuffle: groups one channel apart, a group's
            # channels G apart, so the kernel stores the shuffled result directly.
            y_strides = (y_strides[0], spec.groups * y_strides[1], *y_strides[2:])
            out_group = y_strides[1] // spec.groups
        elif self.shuffle_groups:
            y_strides = element_strides((n, self.kernel_channels, *out3), True)
            out_group = self.kernel_channels // spec.groups
        else:
            out_group = per_group * y_strides[1]
        pixels = math.prod(out3)

        def inner(call_shape: tuple) -> bool:
            return dispatch.channels_inner(self.packed.nbytes, math.prod(call_shape[:3]), threads)

        if self.pointwise and not any(bound.pad_before) and not any(bound.pad_after) and pixels > out3[2]:
            # A pointwise convolution is a GEMM over each image's pixels: walking them as rows of a length
            # that divides them (or of POINTWISE_ROW, a multiple of every block's pixel count, the last row
            # taking the remainder) leaves one tail per row of the walk instead of one per output row (a 7x7
            # map's rows of 7 pixels are one block and one latency-bound single pixel each).
            length = dispatch.pointwise_row(pixels, n, threads, self.block_pixels, POINTWISE_ROW)
            if length:
                runs = (((n, 1, pixels // length, length), 0),)
            else:
                length = POINTWISE_ROW
                rows = max(1, pixels // length)
                final = pixels - (rows - 1) * length
                runs = (((n, 1, rows - 1, length), 0), ((n, 1, 1, final), (rows - 1) * length))
            x_pixel, y_pixel = x_strides[4], y_strides[4]
            prefetch = (dispatch.pointwise_prefetch(math.prod(shape) * self.dtype.itemsize, self.block_pixels, x_pixel,
                                                    spec.in_channels // spec.groups, per_group) if read_last else None)
            calls = tuple((start * x_pixel, (*x_strides[:3], length * x_pixel, x_pixel),
                           start * y_pixel, (*y_strides[:3], length * y_pixel, y_pixel), rows_shape, _UNBOUNDED,
                           (out_group, per_group, 1, 1, 1, 1, 1, 1, inner(rows_shape), prefetch))
                          for rows_shape, start in runs if rows_shape[2])
        elif wide:
            # (h, w) of the output is pixel h * wide + w of one long row; the buffer is (N, OD, OH, wide, C).
            length = (out3[1] - 1) * wide + out3[2]
            plane = out3[1] * wide * spec.out_channels
            y_strides = (out3[0] * plane, 1, plane, plane, spec.out_channels)
            calls = ((0, x_strides, 0, y_strides, (n, out3[0], 1, length), _UNBOUNDED,
                      (per_group, per_group, 1, 1, 1, *_pad3(spec.dilation, 1), inner((n, out3[0], 1)), None)),)
        else:
            calls = ((0, x_strides, 0, y_strides, (n, *out3), geometry,
                      (out_group, per_group, *_pad3(spec.stride, 1), *_pad3(spec.dilation, 1), inner((n, *out3)),
                       None)),)
        if len(self._simd_plans) >= _PLANS_KEPT:
            self._simd_plans.clear()
        plan = self._simd_plans[key] = (read_last, before, after, calls, wide, edge)
        return plan

    def _run_subpixel(self, x: np.ndarray, last: bool, bound, result: np.ndarray, clamp: tuple,
                      residual: np.ndarray | None) -> np.ndarray:
        """A transposed convolution as one SIMD convolution per output phase (numbaconv/subpixel.py), all
        reading one zero-padded channels-last copy of the input and storing every stride-th output of the
        result in place."""
        before, after, calls = self._subpixel_plan(x.shape, last, bound)
        xin = self._channels_last_padded(x, last, before, after)
        flat_x, flat_y = xin.reshape(-1), result.reshape(-1)
        flat_r = residual.reshape(-1) if residual is not None else _EMPTY[self.dtype.type]
        in_size, pads, columns = _UNBOUNDED
        for index, x_offset, x_strides, y_offset, y_strides, shape, steps in calls:
            _, kernel, packed, padded_bias = self.subpixel_phases[index]
            kernel(flat_x[x_offset:], x_strides, packed, padded_bias, flat_y[y_offset:],
                   flat_r[y_offset:] if flat_r.shape[0] else flat_r, y_strides, shape, in_size, pads,
                   flat_x[x_offset:], columns, *steps, *clamp)
        for phase, *_ in self.subpixel_phases:  # outputs no tap reaches: the bias alone
            if phase.empty:
                self._fill_bias(result, last, phase.offset, clamp, residual)
        return result

    def _subpixel_plan(self, shape: tuple, last: bool, bound) -> tuple:
        """(pad before, pad after, calls) of _run_subpixel for one input shape and layout, worked out once:
        each call is (phase index, x offset, x strides, y offset, y strides, rows, steps)."""
        key = ("subpixel", shape, last)
        plan = self._simd_plans.get(key)
        if plan is not None:
            return plan
        spec = self.spec
        stride, out_spatial = spec.stride, bound.out_spatial
        in_spatial = shape[1:-1] if last else shape[2:]
        live = [(index, phase, subpixel.phase_extent(phase, out_spatial, stride))
                for index, (phase, *_) in enumerate(self.subpixel_phases)]
        live = [(index, phase, extent) for index, phase, extent in live if not phase.empty and all(extent[0])]
        before = tuple(max([0] + [-low[i] for _, _, (_, low, _) in live]) for i in range(spec.ndim))
        after = tuple(max([0] + [high[i] - (in_spatial[i] - 1) for _, _, (_, _, high) in live])
                      for i in range(spec.ndim))
        padded = tuple(v + b + a for v, b, a in zip(_pad3(in_spatial, 1), _pad3(before, 0), _pad3(after, 0)))
        x_strides = element_strides((shape[0], spec.in_channels, *padded), True)
        out3 = _pad3(out_spatial, 1)
        y_strides = element_strides((shape[0], spec.out_channels, *out3), last)
        phase_strides = (*y_strides[:2], *(st * s for st, s in zip(y_strides[2:], _pad3(stride, 1))))
        per_group = spec.out_channels // spec.groups
        calls = tuple(
            (index, sum((lo + b) * st for lo, b, st in zip(_pad3(low, 0), _pad3(before, 0), x_strides[2:])),
             x_strides, sum(f * st for f, st in zip(_pad3(phase.offset, 0), y_strides[2:])), phase_strides,
             (shape[0], *_pad3(count, 1)),
             (per_group * y_strides[1], per_group, 1, 1, 1, *_pad3(phase.dilation, 1), False, None))
            for index, phase, (count, low, _) in live)
        if len(self._simd_plans) >= _PLANS_KEPT:
            self._simd_plans.clear()
        plan = self._simd_plans[key] = (_pad3(before, 0), _pad3(after, 0), calls)
        return plan

    def _fill_bias(self, result: np.ndarray, last: bool, offset: tuple[int, ...], clamp: tuple,
                   residual: np.ndarray | None) -> None:
        region = (slice(None), *(slice(o, None, s) for o, s in zip(offset, self.spec.stride)))
        if not last:
            region = (region[0], slice(None), *region[1:])
        bias = self.bias if self.bias.shape[0] else np.zeros(self.spec.out_channels, self.dtype)
        result[region] = bias if last else bias.reshape(-1, *(1,) * self.spec.ndim)
        view = result[region]
        if residual is not None:
            view += residual[region]
        if clamp[0]:
            np.clip(view, clamp[1], clamp[2], out=view)

    def _channels_last_padded(self, x: np.ndarray, last: bool, before: tuple, after: tuple) -> np.ndarray:
        mode = PADDING_MODE_CODES[self.spec.padding_mode]
        padded = any(before) or any(after)
        if last:
            x5 = np.ascontiguousarray(_to_5d_channels_last(x))
            return _pad_channels_last(x5, before, after, mode) if padded else x5
        x5 = _to_5d_channels_first(x)
        spatial = x5.shape[2:]
        if padded and mode != 0:  # non-zero modes: plain copy first, then the padding pass remaps indices
            plain = np.empty((x5.shape[0], *spatial, x5.shape[1]), x.dtype)
            cpu_layout.channels_first_to_last(x5, plain, 0, 0, 0)
            return _pad_channels_last(plain, before, after, mode)
        shape = (x5.shape[0], *(v + b + a for v, b, a in zip(spatial, before, after)), x5.shape[1])
        out = _zero_border(np.empty(shape, x.dtype), before, after)
        _copy_channels_last(x5, out, before)
        return out


@functools.lru_cache(maxsize=256)
def _spec_layout(spec: ConvSpec, shuffle_groups: int, kernel: str | None, dtype: np.dtype) -> dict:
    """The attributes of a PreparedConv that its spec, shuffle, requested kernel and dtype decide (kernel
    family, block shapes, where each output channel lands), with the per-input-shape plan caches, which
    depend on nothing else either."""
    lanes = VECTOR_BYTES // dtype.itemsize
    family, reason = dispatch.choose_kernel(spec, kernel, lanes)
    if family == "winograd" and shuffle_groups:  # its output pass stores channels in order
        if kernel == "winograd":
            raise ValueError("kernel='winograd' cannot apply a channel shuffle; use kernel='simd'")
        family, reason = "simd", "a shuffled output: the SIMD kernel stores through the shuffle"
    padded_channels = spec.out_channels
    channel_position = np.arange(spec.out_channels, dtype=np.int64)
    layout: dict = dict(
        kernel=family, reason=reason, rows_kernel=None, block_pixels=1,
        # 1x1, stride 1: with no padding, each image's pixels are one flat GEMM dimension (see _run_simd).
        pointwise=dispatch.is_unit_kernel(spec),
        # The channels-last 3x3 kernel unrolls its taps and needs at least one vector of channels.
        depthwise3x3=(family == "depthwise" and spec.ndim == 2 and spec.kernel_size == (3, 3)
                      and spec.out_channels == spec.in_channels and spec.in_channels >= lanes),
        # Depthwise is memory-bound: on channels-first 1D/2D input with zero padding it runs in place,
        # since a layout round trip would cost more than the convolution.
        channels_first_depthwise=(family == "depthwise" and spec.ndim <= 2 and spec.padding_mode == "zeros"
                                  and not shuffle_groups),
        # A shuffle over the convolution's own groups is a stride pattern the SIMD kernel stores through
        # (no scratch buffer, no gather pass); other shuffles go through a scratch buffer and a gather.
        shuffle_in_strides=family == "simd" and shuffle_groups == spec.groups > 1,
        _bound={},       # channels-first input shape -> BoundConv
        _simd_plans={},  # (input shape, channels_last, residual, threads) -> _simd_plan's answer,
                         # ("subpixel", input shape, channels_last) -> _subpixel_plan's, and
                         # ("window", input shape, threads) -> _window_plan's
        _rows_plans={},  # (rows shape, output shape, threads) -> _rows_plan's answer
    )
    if family == "simd":
        pixels, vectors = dispatch.simd_block(spec.out_channels // spec.groups, lanes, VECTOR_REGISTERS)
        per_group = packing.simd_block_channels(spec, vectors * lanes)
        padded_channels = per_group * spec.groups
        channel_position = packing.padded_channel_index(spec, per_group)
        layout.update(simd_kernel=getattr(simd_direct, f"conv_simd_p{pixels}v{vectors}"), block_pixels=pixels,
                      _simd_vector=vectors * lanes)
    # Final channel j is read from the kernel's output channel channel_source[j].
    order = (cpu_layout.shuffle_sources(spec.out_channels, shuffle_groups) if shuffle_groups
             else np.arange(spec.out_channels, dtype=np.int64))
    channel_source = np.ascontiguousarray(channel_position[order])
    layout.update(
        channel_source=channel_source,
        # The kernel's first C_out channels are the result's, in order (no shuffle, padding only after).
        channels_in_order=bool((channel_source == np.arange(spec.out_channels)).all()),
        # For the kernels that scatter (GPU, channels-first rows): where each convolution output lands.
        channel_dest=np.argsort(order).astype(np.int64),
        kernel_channels=padded_channels,
        writes_result_directly=padded_channels == spec.out_channels and not shuffle_groups)
    # A stem over few channels, channels-last: its whole window as one reduction (conv_window_rows), stored
    # straight into the result where its channels are a whole number of blocks.
    layout.update(window_stem=False)
    if kernel is None and not shuffle_groups and dispatch.window_kernel_fits(spec, family):
        block = packing.cheapest_block(spec.out_channels, 1, spec.in_channels * math.prod(spec.kernel_size), lanes)
        layout.update(window_stem=spec.out_channels % block == 0, window_block=block)
    if kernel is None and dispatch.rows_kernel_fits(spec, family):
        channels, vectors = dispatch.rows_block(VECTOR_REGISTERS)
        layout.update(rows_kernel=getattr(simd_rows, f"conv_rows_r{channels}v{vectors}"), rows_channels=channels,
                      rows_width=vectors * lanes,  # output pixels per block: narrower outputs take the other kernel
                      rows_flat=dispatch.is_pointwise(spec))  # each image's pixels one flat row
    return layout


def _zero_border(out: np.ndarray, before: tuple, after: tuple, first_spatial: int = 1) -> np.ndarray:
    """out (N, D, H, W, C), or (N, C, D, H, W) with first_spatial 2, with zeros in the first before[i] and
    the last after[i] positions along spatial axis i; the interior is left for a copy to fill (zeroing
    the whole buffer first cost 0.8 ms of a 7 ms grouped layer at batch 8)."""
    for axis, (first, last) in enumerate(zip(before, after), start=first_spatial):
        lead = (slice(None),) * axis
        out[lead + (slice(0, first),)] = 0
        out[lead + (slice(out.shape[axis] - last, out.shape[axis]),)] = 0
    return out


def _copy_channels_last(x5: np.ndarray, out: np.ndarray, before: tuple = (0, 0, 0)) -> None:
    """out[n, d + bd, h + bh, w + bw, c] = x5[n, c, d, h, w] with the fastest layout kernel that applies."""
    lanes = VECTOR_BYTES // x5.dtype.itemsize
    if x5.flags.c_contiguous and x5.shape[1] >= lanes and x5.shape[4] >= lanes:
        cpu_layout.channels_first_to_last_blocks(x5, out, *before)
    elif x5.flags.c_contiguous and x5.shape[1] == 3:
        cpu_layout.three_channels_to_last(x5, out, *before)
    else:
        cpu_layout.channels_first_to_last(x5, out, *before)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """A C-contiguous channels-last copy (N, *spatial, C) of channels-first x (N, C, *spatial), made by the
    parallel layout kernels (NumPy's transposing copy of a 3-channel 224x224 image took 0.46 ms, this
    0.023 ms)."""
    x5 = _to_5d_channels_first(x)
    out = np.empty((x5.shape[0], *x5.shape[2:], x5.shape[1]), x.dtype)
    _copy_channels_last(x5, out)
    return out.reshape(x.shape[0], *x.shape[2:], x.shape[1])


def _to_host(value: Any) -> Any:
    """A host copy of a GPU array (numba, CuPy or PyTorch); anything else unchanged."""
    if value is None or not dispatch.is_device_array(value):
        return value
    if hasattr(value, "copy_to_host"):
        return value.copy_to_host()
    from numba import cuda
    return cuda.as_cuda_array(value).copy_to_host()


def _deliver_host(device_result, out: np.ndarray | None) -> np.ndarray:
    host = device_result.copy_to_host()
    if out is None:
        return host
    _check_out(out, host.shape, host.dtype)
    out[...] = host
    return out


_GPU_USABLE: list[bool] = []


def _real_gpu_usable() -> bool:
    """A real GPU (not the simulator) is usable; checked once per process."""
    if not _GPU_USABLE:
        import os
        from .cuda_api import cuda_status
        _GPU_USABLE.append(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and cuda_status()[0])
    return _GPU_USABLE[0]


def _shape_mismatch(shape: tuple, result_shape: tuple, dtype: np.dtype, residual: bool):
    """check(x, residual): a ConvSpecError unless x is a ``dtype`` array of ``shape`` and the residual (given
    exactly when ``residual``) one of ``result_shape``: a runner's per-call check."""
    def check(x: Any, summand: Any) -> None:
        if not isinstance(x, np.ndarray) or x.shape != shape or x.dtype != dtype:
            raise ConvSpecError(f"input must be a {dtype} NumPy array of shape {shape} (the runner's), got "
                                f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', None)}")
        if (summand is not None) != residual or (residual and (not isinstance(summand, np.ndarray)
                                                              or summand.shape != result_shape
                                                              or summand.dtype != dtype)):
            wanted = f"a {dtype} array of shape {result_shape}" if residual else "None (runner made without one)"
            raise ConvSpecError(f"residual must be {wanted}, got {getattr(summand, 'shape', summand)}")
    return check


def _pad_channels_first(x5: np.ndarray, before: tuple, after: tuple, mode: int) -> np.ndarray:
    """A C-contiguous padded copy of a channels-first (N, C, D, H, W) array (x5 itself when no padding)."""
    if not any(before) and not any(after):
        return np.ascontiguousarray(x5)
    n, c = x5.shape[:2]
    if mode == 0:  # zeros: a zeroed buffer and one strided copy of the interior
        shape = (n, c, *(v + b + a for v, b, a in zip(x5.shape[2:], before, after)))
        out = _zero_border(np.empty(shape, x5.dtype), before, after, first_spatial=2)
        out[:, :, before[0]:before[0] + x5.shape[2], before[1]:before[1] + x5.shape[3],
            before[2]:before[2] + x5.shape[4]] = x5
        return out
    planes = np.ascontiguousarray(x5).reshape(n * c, *x5.shape[2:], 1)  # each plane as one channel
    padded = _pad_channels_last(planes, before, after, mode)
    return padded.reshape(n, c, *padded.shape[1:4])


def _pad_channels_last(x5: np.ndarray, before: tuple, after: tuple, mode: int) -> np.ndarray:
    shape = (x5.shape[0], *(v + b + a for v, b, a in zip(x5.shape[1:4], before, after)), x5.shape[4])
    out = np.empty(shape, x5.dtype)
    cpu_layout.pad_channels_last(x5, out, *before, mode)
    return out


def _flat_from_first(x: np.ndarray) -> np.ndarray:
    """A 1D array starting at x's first element and reaching its last, sharing memory: x itself flattened
    when contiguous, else a slice of its contiguous base (a channel slice of a larger array), else a
    strided view."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    item = x.itemsize
    extent = sum((size - 1) * stride // item for size, stride in zip(x.shape, x.strides)) + 1
    base = x.base
    if isinstance(base, np.ndarray) and base.flags.c_contiguous and base.dtype == x.dtype:
        offset, remainder = divmod(x.__array_interface__["data"][0] - base.__array_interface__["data"][0], item)
        if remainder == 0 and 0 <= offset and offset + extent <= base.size:
            return base.reshape(-1)[offset:offset + extent]
    return np.lib.stride_tricks.as_strided(x, (extent,), (item,))


def _element_strides(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(x flat from its first element, its strides in elements): any view with non-negative strides that
    are whole elements reads in place (an NCHW image seen channels-last), anything else is copied first."""
    item = x.itemsize
    if any(st < 0 or st % item for st in x.strides):
        x = np.ascontiguousarray(x)
    return _flat_from_first(x), tuple(st // item for st in x.strides)


def _check_out(out: np.ndarray, shape: tuple, dtype: np.dtype) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")


def prepare(spec: ConvSpec, weight: Any, bias: Any = None, shuffle_groups: int = 0,
            kernel: str | None = None, activation: str | None = None) -> PreparedConv:
    """Validate and pack ``weight`` (PyTorch order, ``spec.weight_shape``) once for repeated calls."""
    return PreparedConv(spec, weight, bias, shuffle_groups, kernel, activation)


# ---- torch.nn.functional-style entry points -----------------------------------------------------------
def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def _input_channels(x: Any, ndim: int, layout: str | None) -> int:
    shape = _shape(x)
    if len(shape) not in (ndim + 1, ndim + 2):
        order = f"(N, {_SPATIAL_NAMES[ndim]}, C)" if channels_last(layout) else f"(N, C, {_SPATIAL_NAMES[ndim]})"
        raise ConvSpecError(f"input must have shape {order} for a {ndim}D convolution (or be unbatched), got "
                            f"{tuple(shape)}")
    if channels_last(layout):
        return shape[-1]
    return shape[1] if len(shape) == ndim + 2 else shape[0]


def _weight_shape(weight: Any, ndim: int) -> tuple[int, ...]:
    shape = _shape(weight)
    if len(shape) != ndim + 2:
        raise ConvSpecError(f"weight must have {ndim + 2} dims (C_out, C_in/groups, {_SPATIAL_NAMES[ndim]}) for a "
                            f"{ndim}D convolution, got shape {shape}")
    return shape


def _check_dtypes(x, weight, bias):
    """The weight and bias must share the input's dtype (checked here so the message blames the weight)."""
    if not dispatch.is_device_array(x):
        dtype = _check_array(x, "input").dtype
        _check_array(weight, "weight", dtype)
        if bias is not None:
            _check_array(bias, "bias", dtype)


def _conv(ndim, x, weight, bias, stride, padding, dilation, groups, padding_mode, layout, device, out,
          shuffle_groups=0):
    _check_dtypes(x, weight, bias)
    w_shape = _weight_shape(weight, ndim)
    spec = ConvSpec(ndim, _input_channels(x, ndim, layout), w_shape[0], w_shape[2:], stride, padding, dilation,
                    groups, bias is not None, padding_mode)
    kernel = None
    shape = np.shape(x)
    # Only a Winograd-shaped layer has a one-off choice to make; others skip the shape arithmetic. A wrong
    # rank falls through to PreparedConv's call, which raises the error.
    if dispatch.winograd_fits(spec) and len(shape) in (ndim + 1, ndim + 2):
        batched = shape if len(shape) == ndim + 2 else (1, *shape)
        out_shape = spec.output_shape(_channels_first_shape(batched, channels_last(layout)))
        itemsize = np.dtype(getattr(weight, "dtype", np.float32)).itemsize
        kernel = dispatch.one_off_kernel(spec, out_shape[0] * math.prod(out_shape[2:]), VECTOR_BYTES // itemsize)
    return PreparedConv(spec, weight, bias, shuffle_groups, kernel)(x, layout, out, device)


def _conv_transpose(ndim, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, device, out):
    _check_dtypes(x, weight, bias)
    w_shape = _weight_shape(weight, ndim)
    spec = ConvSpec(ndim, _input_channels(x, ndim, layout), w_shape[1] * groups, w_shape[2:], stride, padding,
                    dilation, groups, bias is not None, "zeros", True, output_padding)
    return PreparedConv(spec, weight, bias)(x, layout, out, device)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", layout=None,
           device="auto", out=None):
    """1D convolution.  x (N, C_in, L), weight (C_out, C_in/groups, k), bias (C_out,) -> (N, C_out, L_out).

    L_out = floor((L + 2p - d(k-1) - 1)/s) + 1; padding also 'same' or 'valid'.  layout="NLC" for (N, L, C).
    """
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode, layout, device, out)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", layout=None,
           device="auto", out=None):
    """2D convolution.  x (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw) -> (N, C_out, H_out, W_out).

    H_out = floor((H + 2p - d(kh-1) - 1)/s) + 1, likewise W_out; padding also 'same', 'valid' or per-side
    pairs; padding_mode zeros, reflect, replicate or circular.  layout="NHWC" takes and returns channels-last.
    """
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode, layout, device, out)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", layout=None,
           device="auto", out=None):
    """3D convolution.  x (N, C_in, D, H, W), weight (C_out, C_in/groups, kd, kh, kw) -> (N, C_out, D', H', W')."""
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, padding_mode, layout, device, out)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     layout=None, device="auto", out=None):
    """Transposed 1D convolution.  x (N, C_in, L), weight (C_in, C_out/groups, k) -> (N, C_out, L_out).

    L_out = (L-1)s - 2p + d(k-1) + output_padding + 1.
    """
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, device, out)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     layout=None, device="auto", out=None):
    """Transposed 2D convolution.  x (N, C_in, H, W), weight (C_in, C_out/groups, kh, kw) -> (N, C_out, H', W').

    H' = (H-1)s - 2p + d(kh-1) + output_padding + 1, likewise W'.
    """
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, device, out)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     layout=None, device="auto", out=None):
    """Transposed 3D convolution.  x (N, C_in, D, H, W), weight (C_in, C_out/groups, kd, kh, kw)."""
    return _conv_transpose(3, x, weight, bias, stride, padding, output_padding, groups, dilation, layout, device, out)


def depthwise_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, padding_mode="zeros", layout=None,
                     device="auto", out=None):
    """Depthwise 2D convolution with channel multiplier m.

    x (N, C, H, W), weight (C*m, 1, kh, kw), bias (C*m,) -> (N, C*m, H_out, W_out); output channel c*m + j
    filters input channel c (PyTorch's conv2d with groups=C).
    """
    channels = _input_channels(x, 2, layout)
    w_shape = _weight_shape(weight, 2)
    if w_shape[1] != 1 or w_shape[0] % channels:
        raise ConvSpecError(f"depthwise weight must have shape (C*m, 1, kh, kw) with C={channels} input channels, "
                            f"got {w_shape}")
    return _conv(2, x, weight, bias, stride, padding, dilation, channels, padding_mode, layout, device, out)


def channel_shuffle(x, groups, layout=None, device="auto"):
    """ShuffleNet channel shuffle: (N, C, *spatial) viewed as (N, g, C/g, ...), the two swapped, flattened.

    Returns a new array of the same shape (channels-last with ``layout``); a GPU input stays on the GPU.
    """
    on_gpu = dispatch.is_device_array(x)
    if dispatch.choose_backend(device, on_gpu)[0] == "cuda":
        from .cuda_api import channel_shuffle_cuda
        shape = _shape(x)
        channels = shape[-1] if channels_last(layout) else shape[1]
        if int(groups) < 1 or channels % int(groups):
            raise ConvSpecError(f"groups={groups} does not divide channels={channels}")
        return channel_shuffle_cuda(x, int(groups), layout)
    x = _check_array(_to_host(x), "input")
    last = channels_last(layout)
    if x.ndim < 3:
        raise ConvSpecError(f"input must have shape (N, C, *spatial), got {x.shape}")
    channels = x.shape[-1] if last else x.shape[1]
    groups = int(groups)
    if groups < 1 or channels % groups:
        raise ConvSpecError(f"groups={groups} does not divide channels={channels}")
    if x.ndim > 5:
        raise ConvSpecError(f"input must have 1 to 3 spatial dims, got shape {x.shape}")
    result = np.empty(x.shape, x.dtype)
    source = cpu_layout.shuffle_sources(channels, groups)
    if x.size == 0:
        return result
    if last:
        cpu_layout.gather_channels_last(np.ascontiguousarray(_to_5d_channels_last(x)), _to_5d_channels_last(result),
                                        source)
    else:
        cf = _to_5d_channels_first(x)
        cl = np.empty((cf.shape[0], *cf.shape[2:], cf.shape[1]), x.dtype)
        cpu_layout.channels_first_to_last(cf, cl, 0, 0, 0)
        cpu_layout.channels_last_to_first(cl, _to_5d_channels_first(result), source)
    return result


def shuffled_grouped_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                            padding_mode="zeros", layout=None, device="auto", out=None):
    """Grouped 2D convolution followed by a channel shuffle by ``groups``, the shuffle folded into the output copy.

    x (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw) -> (N, C_out, H_out, W_out).
    """
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode, layout, device, out,
                 shuffle_groups=groups)


def separable_conv2d(x, depthwise_weight, pointwise_weight, depthwise_bias=None, pointwise_bias=None, stride=1,
                     padding=0, dilation=1, padding_mode="zeros", layout=None, device="auto"):
    """Depthwise-separable 2D convolution: depthwise (multiplier m) then pointwise 1x1.

    depthwise_weight (C*m, 1, kh, kw), pointwise_weight (C_out, C*m, 1, 1) -> (N, C_out, H_out, W_out).
    """
    y = depthwise_conv2d(x, depthwise_weight, depthwise_bias, stride, padding, dilation, padding_mode, layout,
                         device)
    return conv2d(y, pointwise_weight, pointwise_bias, layout=layout, device=device)


def spatially_separable_conv2d(x, vertical_weight, horizontal_weight, bias=None, stride=1, padding=0, dilation=1,
                               padding_mode="zeros", layout=None, device="auto"):
    """A k_h x k_w convolution factored as k_h x 1 then 1 x k_w.

    vertical_weight (M, C_in, kh, 1), horizontal_weight (C_out, M, 1, kw) -> (N, C_out, H_out, W_out).
    Equals conv2d with the product kernel W[o, c, i, j] = sum_m horizontal[o, m, 0, j] * vertical[m, c, i, 0]
    (any padding mode: each factor pads its own axis).  The bias is added after the second factor.
    """
    (sh, sw), (dh, dw), pads = _per_axis(stride, dilation, padding)
    y = conv2d(x, vertical_weight, None, (sh, 1), pads[0], (dh, 1), 1, padding_mode, layout, device)
    return conv2d(y, horizontal_weight, bias, (1, sw), pads[1], (1, dw), 1, padding_mode, layout, device)


def flattened_conv2d(x, lateral_weight, vertical_weight, horizontal_weight, bias=None, stride=1, padding=0,
                     dilation=1, padding_mode="zeros", layout=None, device="auto"):
    """Flattened convolution (Jin et al. 2014): lateral 1x1, then per-channel k_h x 1, then per-channel 1 x k_w.

    lateral_weight (C_out, C_in, 1, 1), vertical_weight (C_out, 1, kh, 1), horizontal_weight (C_out, 1, 1, kw)
    -> (N, C_out, H_out, W_out).  Equals conv2d with W[o, c, i, j] = lateral[o, c] * vertical[o, i] *
    horizontal[o, j].  The bias is added after the last stage.
    """
    (sh, sw), (dh, dw), pads = _per_axis(stride, dilation, padding)
    y = conv2d(x, lateral_weight, None, 1, 0, 1, 1, "zeros", layout, device)
    y = depthwise_conv2d(y, vertical_weight, None, (sh, 1), pads[0], (dh, 1), padding_mode, layout, device)
    return depthwise_conv2d(y, horizontal_weight, bias, (1, sw), pads[1], (1, dw), padding_mode, layout, device)


def _per_axis(stride, dilation, padding):
    """Split 2D stride, dilation and padding into the vertical and horizontal factors' own arguments."""
    probe = ConvSpec(2, 1, 1, 1, stride, padding if padding != "same" else 0, dilation)
    if padding == "same" or (isinstance(padding, str) and padding.lower() == "same"):
        pads = ("same", "same")
    else:
        (pt, pb), (pl, pr) = probe.padding
        pads = (((pt, pb), (0, 0)), ((0, 0), (pl, pr)))
    return probe.stride, probe.dilation, pads
