"""The GPU path: device arrays in, numba.cuda kernels, device arrays out.

Inputs with ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA tensors) are used
in place; NumPy inputs are copied to the device.  A PyTorch or CuPy input gets its result back as the same
library's type (a zero-copy view of the numba device array).  Kernels take flat arrays with element
strides, so a channels-last input is read where it lies.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from . import packing
from .kernels.index import PADDING_MODE_CODES, element_strides, leading


def cuda_status() -> tuple[bool, str]:
    """(usable, why): can numbaconv run kernels on a GPU here?"""
    try:
        from numba import cuda
    except ImportError:
        return False, "numba-cuda is not installed (pip install 'numbaconv[cuda]')"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run as Python on the CPU"
    try:
        if not cuda.is_available():
            return False, "no usable CUDA driver or GPU (numba.cuda.is_available() is False)"
        device = cuda.get_current_device()
        return True, f"{device.name.decode() if isinstance(device.name, bytes) else device.name}, compute capability " \
                     f"{device.compute_capability[0]}.{device.compute_capability[1]}"
    except Exception as e:  # driver errors come in many types; the message is what the user needs
        return False, f"CUDA initialisation failed: {e}"


_USABLE_CUDA: list[Any] = []  # numba.cuda, once a GPU was found usable: a usable GPU stays usable


def require_cuda():
    """numba.cuda, or a RuntimeError that says why no GPU can be used (checked until one is found)."""
    if _USABLE_CUDA:
        return _USABLE_CUDA[0]
    usable, why = cuda_status()
    if not usable:
        raise RuntimeError(f"device='cuda' needs a usable GPU: {why}")
    from numba import cuda
    _USABLE_CUDA.append(cuda)
    return cuda


from .dispatch import is_device_array  # noqa: E402  (re-exported for callers of this module)


def _wrap_like(result, original: Any):
    """Return the result in the input's own GPU library where that is a zero-copy view."""
    module = type(original).__module__.split(".")[0]
    if module == "torch":
        import torch
        return torch.as_tensor(result, device=original.device)
    if module == "cupy":
        import cupy
        return cupy.asarray(result)
    return result


def _as_device(cuda, x: Any):
    """A C-contiguous numba device array viewing (or, for strided or host data, copying) ``x``."""
    if is_device_array(x):
        if hasattr(x, "copy_to_host"):
            array = x
        else:  # no stream sync: numbaconv launches on the producer's stream (see _launch_stream)
            array = cuda.from_cuda_array_interface(x.__cuda_array_interface__, owner=x, sync=False)
        if array.is_c_contiguous():
            return array
        return cuda.to_device(np.ascontiguousarray(array.copy_to_host()))  # rare: a strided non-torch GPU view
    return cuda.to_device(np.ascontiguousarray(np.asarray(x)))


class _DeviceInput:
    """What a call needs of its input, read without building a numba array where possible.

    ``owner``: the object to keep alive and wrap results like; ``pointer``: device address of the
    C-contiguous data; ``array()``: a numba device array of it (built on demand).
    """

    __slots__ = ("owner", "pointer", "shape", "dtype", "library", "_cuda", "_array")

    def __init__(self, cuda, x: Any):
        self._cuda, self._array, self.library = cuda, None, type(x).__module__.split(".")[0]
        if self.library == "torch" and x.is_cuda:
            if not x.is_contiguous():
                x = x.contiguous()  # a copy on the GPU, in PyTorch's stream order
            self.owner, self.pointer, self.shape = x, x.data_ptr(), tuple(x.shape)
            self.dtype = _TORCH_DTYPES.get(str(x.dtype).rsplit(".", 1)[-1], np.dtype("V1"))
            return
        self._array = _as_device(cuda, x)
        self.owner = x if is_device_array(x) else self._array
        self.pointer = None
        self.shape, self.dtype = tuple(self._array.shape), np.dtype(self._array.dtype)

    def array(self):
        if self._array is None:
            self._array = self._cuda.from_cuda_array_interface(self.owner.__cuda_array_interface__,
                                                               owner=self.owner, sync=False)
        return self._array

    def address(self) -> int:
        if self.pointer is None:
            self.pointer = _address(self._array)
        return self.pointer

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        """A new uninitialised device array in the input's own library (whose memory pool is fast)."""
        if self.library == "torch":
            import torch
            return torch.empty(shape, dtype=getattr(torch, dtype.name), device=self.owner.device)
        if self.library == "cupy":
            import cupy
            return cupy.empty(shape, dtype)
        return self._cuda.device_array(shape, dtype)


_TORCH_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64), "float16": np.dtype(np.float16)}


def _address(array: Any) -> int:
    if type(array).__module__.split(".")[0] == "torch":
        return array.data_ptr()
    return array.__cuda_array_interface__["data"][0]


_EXTERNAL_STREAMS: dict[int, Any] = {}


def _launch_stream(cuda, source: _DeviceInput):
    """The stream the input was produced on (PyTorch's current stream), so no synchronisation is needed."""
    if source.library != "torch":
        return 0
    import torch
    handle = torch.cuda.current_stream(source.owner.device).cuda_stream
    if handle == 0:
        return 0
    if handle not in _EXTERNAL_STREAMS:
        _EXTERNAL_STREAMS[handle] = cuda.external_stream(handle)
    return _EXTERNAL_STREAMS[handle]


def _pad3(values, fill):
    return leading(values, 3, fill)


def gpu_kernel(spec, shuffle_groups: int = 0, last: bool = False) -> str:
    """Which CUDA kernel runs ``spec``: 'direct' (implicit GEMM, also transposed), 'small_groups',
    'transposed' (gather, for narrow transposed groups) or 'depthwise'."""
    from .kernels.cuda.launch import SMALL_GROUP_OUTPUTS
    per_group, g = spec.out_channels // spec.groups, spec.groups
    if spec.transposed:
        return "transposed" if per_group <= SMALL_GROUP_OUTPUTS and g > 1 else "direct"
    if spec.groups == spec.in_channels and g > 1 and not shuffle_groups:
        return "depthwise"
    return "small_groups" if per_group <= SMALL_GROUP_OUTPUTS and g > 1 else "direct"


def _device_weights(cuda, prepared, family: str):
    """Packed weights, bias and output-channel destinations on the device, made once per PreparedConv."""
    cache = prepared.__dict__.setdefault("_cuda_weights", {})
    if family not in cache:
        spec, w = prepared.spec, prepared.host_weight
        if family == "direct":
            g = spec.groups
            if spec.transposed:  # PyTorch's (C_in, C_out/G, *k) -> (G, taps, CGI, CGO)
                w4 = packing.as_3d_kernel(w).reshape(g, spec.in_channels // g, spec.out_channels // g, -1)
                packed = np.ascontiguousarray(w4.transpose(0, 3, 1, 2))
            else:  # (C_out, C_in/G, *k) -> (G, taps, CGI, CGO): tap-major, coalesced over output channels
                w4 = packing.as_3d_kernel(w).reshape(g, spec.out_channels // g, spec.in_channels // g, -1)
                packed = np.ascontiguousarray(w4.transpose(0, 3, 2, 1))
        elif family == "depthwise":
            packed = np.ascontiguousarray(w.reshape(spec.out_channels, -1))  # (O, KD*KH*KW)
        else:
            packed = np.ascontiguousarray(w)
        bias = prepared.host_bias if prepared.host_bias is not None else np.zeros(0, w.dtype)
        cache[family] = (cuda.to_device(packed.reshape(-1)), cuda.to_device(bias),
                         cuda.to_device(np.ascontiguousarray(prepared.channel_dest)))
    return cache[family]


class _CudaPlan:
    """Everything about one (PreparedConv, input shape, layout) on the GPU that does not change per call."""

    def __init__(self, cuda, prepared, shape: tuple[int, ...], last: bool):
        from numba import from_dtype

        from .kernels.cuda import depthwise as k_depthwise
        from .kernels.cuda import direct as k_direct
        from .kernels.cuda import launch
        from .kernels.cuda import transposed as k_transposed
        from .spec import ConvSpecError
        spec = prepared.spec
        self.unbatched = len(shape) == spec.ndim + 1
        shape = shape if not self.unbatched else (1, *shape)
        if len(shape) != spec.ndim + 2:
            raise ConvSpecError(f"input must have {spec.ndim + 2} dims (or {spec.ndim + 1} unbatched) for a "
                                f"{spec.ndim}D convolution, got {len(shape)}: {shape}")
        cf_shape = (shape[0], shape[-1], *shape[1:-1]) if last else shape
        bound = spec.bind(cf_shape)
        n, out_spatial = bound.batch, bound.out_spatial
        self.result_shape = (n, *out_spatial, spec.out_channels) if last else (n, spec.out_channels, *out_spatial)
        self.empty = n == 0 or math.prod(self.result_shape) == 0
        self.launch = None
        if self.empty:
            return
        in5 = (cf_shape[0], cf_shape[1], *_pad3(cf_shape[2:], 1))
        out5 = (n, spec.out_channels, *_pad3(out_spatial, 1))
        self.xs, self.os = element_strides(in5, last), element_strides(out5, last)
        s, d, pad = _pad3(spec.stride, 1), _pad3(spec.dilation, 1), _pad3(bound.pad_before, 0)
        conv = (*s, *pad, *d)
        kernel_shape = _pad3(spec.kernel_size, 1)
        dtype = from_dtype(prepared.dtype)
        mode = PADDING_MODE_CODES[spec.padding_mode]
        g = spec.groups
        self.kernel = gpu_kernel(spec, prepared.shuffle_groups, last)
        sizes = (*in5, *out5[2:], g, spec.in_channels // g, spec.out_channels // g, *kernel_shape)
        pixels = n * math.prod(out5[2:])
        # Every kernel takes the flat input at argument 0 and the flat output at argument 4.
        if self.kernel == "transposed":
            w, b, _ = _device_weights(cuda, prepared, "transposed")
            self.dispatcher = k_transposed.conv_transposed(dtype)
            self.geometry = launch.elementwise(math.prod(out5))
            self.args = [None, self.xs, w, b, None, self.os, sizes, conv]
        elif self.kernel == "depthwise":
            w, b, _ = _device_weights(cuda, prepared, "depthwise")
            self.dispatcher = k_depthwise.conv_depthwise(dtype, kernel_shape[1:], s[1:], d[1:], mode, last)
            self.geometry = launch.depthwise(last, kernel_shape[1], n, spec.out_channels, out5[2:])
            self.args = [None, self.xs, w, b, None, self.os, (*in5, *out5[2:], spec.out_channels, kernel_shape[0]),
                         (s[0], pad[0], d[0], pad[1], pad[2]), spec.out_channels // spec.in_channels]
        else:
            w, b, dest = _device_weights(cuda, prepared, "direct")
            if self.kernel == "small_groups":
                self.dispatcher = k_direct.conv_small_groups(dtype)
                self.geometry = launch.small_groups(pixels, g)
                self.args = [None, self.xs, w, b, None, self.os, dest, sizes, conv, mode]
            else:
                self.dispatcher = k_direct.conv_direct(dtype)
                self.geometry = launch.direct(pixels, spec.out_channels // g, g)
                self.args = [None, self.xs, w, b, None, self.os, dest, sizes, conv, mode, spec.transposed]

    def run(self, x_flat, out_flat, pointers, stream) -> None:
        """Launch on the flat input and output, given as callables: device arrays (built on a new shape's
        first call, or on every call where the fast launch path is off) and their addresses."""
        from .kernels.cuda.recorded import RecordedLaunch
        if self.launch is None:
            args = list(self.args)
            args[0], args[4] = x_flat(), out_flat()
            self.launch = RecordedLaunch(self.dispatcher, *self.geometry, args, (0, 4))
            self.args = None
        self.launch(pointers, lambda: (x_flat(), out_flat()), stream)


def run_prepared_cuda(prepared, x: Any, layout: str | None, out: Any = None):
    """Run a PreparedConv on the GPU; see PreparedConv.__call__ for shapes.

    The per-shape work (spec binding, launch geometry, argument marshalling) is done on a shape's first
    call and kept in the PreparedConv, so later calls cost a pointer swap and one launch.
    """
    from .api import channels_last
    cuda = require_cuda()
    source = _DeviceInput(cuda, x)
    if source.dtype != prepared.dtype:
        raise TypeError(f"input has dtype {source.dtype} but the weight is {prepared.dtype}; convert one of them")
    last = channels_last(layout)
    plans = prepared.__dict__.setdefault("_cuda_plans", {})
    key = (source.shape, last)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _CudaPlan(cuda, prepared, source.shape, last)
    shape = plan.result_shape
    if out is not None:
        if not is_device_array(out):
            raise ValueError(f"out must be a GPU array of shape {shape} for a GPU convolution, got {type(out)}")
        view = cuda.from_cuda_array_interface(out.__cuda_array_interface__, owner=out, sync=False) \
            if not hasattr(out, "copy_to_host") else out
        if tuple(view.shape) != shape or np.dtype(view.dtype) != prepared.dtype or not view.is_c_contiguous():
            raise ValueError(f"out must be a C-contiguous device array of shape {shape} and dtype "
                             f"{prepared.dtype}, got {tuple(view.shape)} {np.dtype(view.dtype)}")
        result = out
    else:
        result = source.empty(shape, prepared.dtype)
    if not plan.empty:
        size = math.prod(shape)

        def flat_output():
            return (result if hasattr(result, "copy_to_host") else cuda.from_cuda_array_interface(
                result.__cuda_array_interface__, owner=result, sync=False)).reshape(size)

        plan.run(lambda: source.array().reshape(math.prod(source.shape)), flat_output,
                 lambda: (source.address(), _address(result)), _launch_stream(cuda, source))
    if plan.unbatched:
        result = result[0]
    return result


def channel_shuffle_cuda(x: Any, groups: int, layout: str | None = None):
    """GPU channel shuffle of a device (or host) array; returns a device array of the same shape."""
    from .api import channels_last
    from .kernels.cpu.layout import shuffle_sources
    from .kernels.cuda import launch
    from .kernels.cuda.layout import channel_gather
    cuda = require_cuda()
    xd = _as_device(cuda, x)
    last = channels_last(layout)
    shape = tuple(xd.shape)
    channels = shape[-1] if last else shape[1]
    spatial = math.prod(shape[1:-1]) if last else math.prod(shape[2:])
    strides = (spatial * channels, 1, channels) if last else (spatial * channels, spatial, 1)
    result = cuda.device_array(shape, xd.dtype)
    source = cuda.to_device(shuffle_sources(channels, groups))
    blocks, threads = launch.elementwise(xd.size)
    channel_gather[blocks, threads](xd.reshape(xd.size), strides, result.reshape(xd.size), strides,
                                    (shape[0], channels, spatial), source)
    return _wrap_like(result, x) if is_device_array(x) else result
