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


def require_cuda():
    usable, why = cuda_status()
    if not usable:
        raise RuntimeError(f"device='cuda' needs a usable GPU: {why}")
    from numba import cuda
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


def _as_device(cuda, x: Any, name: str):
    """A C-contiguous numba device array viewing (or, for strided or host data, copying) ``x``."""
    if is_device_array(x):
        array = x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
        if array.is_c_contiguous():
            return array
        return cuda.to_device(np.ascontiguousarray(array.copy_to_host()))  # rare: a strided GPU view
    return cuda.to_device(np.ascontiguousarray(np.asarray(x)))


def _pad3(values, fill):
    return leading(values, 3, fill)


def gpu_kernel(spec, shuffle_groups: int = 0, last: bool = False) -> str:
    """Which CUDA kernel runs ``spec``: 'direct' (implicit GEMM, also transposed), 'small_groups',
    'transposed' (gather, for narrow transposed groups), 'depthwise' or 'depthwise_channels_last'."""
    from .kernels.cuda.launch import SMALL_GROUP_OUTPUTS
    per_group, g = spec.out_channels // spec.groups, spec.groups
    if spec.transposed:
        return "transposed" if per_group <= SMALL_GROUP_OUTPUTS and g > 1 else "direct"
    if spec.groups == spec.in_channels and g > 1 and not shuffle_groups:
        return "depthwise_channels_last" if last else "depthwise"
    return "small_groups" if per_group <= SMALL_GROUP_OUTPUTS and g > 1 else "direct"


def _device_weights(cuda, prepared, family: str):
    """Packed weights and bias on the device, made once per PreparedConv and family."""
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
            packed = np.ascontiguousarray(w.reshape(spec.out_channels, -1))  # (O, taps)
        elif family == "depthwise_last":
            packed = np.ascontiguousarray(w.reshape(spec.out_channels, -1).T)  # (taps, O)
        else:
            packed = np.ascontiguousarray(w)
        bias = prepared.host_bias if prepared.host_bias is not None else np.zeros(0, w.dtype)
        cache[family] = (cuda.to_device(packed.reshape(-1)), cuda.to_device(bias),
                         cuda.to_device(np.ascontiguousarray(prepared.channel_dest)))
    return cache[family]


def run_prepared_cuda(prepared, x: Any, layout: str | None, out: Any = None):
    """Run a PreparedConv on the GPU; see PreparedConv.__call__ for shapes."""
    from numba import from_dtype

    from .api import channels_last
    from .kernels.cuda import depthwise as k_depthwise
    from .kernels.cuda import direct as k_direct
    from .kernels.cuda import launch
    from .kernels.cuda import transposed as k_transposed
    from .spec import ConvSpecError
    cuda = require_cuda()
    spec = prepared.spec
    original = x
    xd = _as_device(cuda, x, "input")
    if np.dtype(xd.dtype) != prepared.dtype:
        raise TypeError(f"input has dtype {np.dtype(xd.dtype)} but the weight is {prepared.dtype}; convert one of them")
    last = channels_last(layout)
    unbatched = len(xd.shape) == spec.ndim + 1
    shape = tuple(xd.shape) if not unbatched else (1, *xd.shape)
    if len(shape) != spec.ndim + 2:
        raise ConvSpecError(f"input must have {spec.ndim + 2} dims for a {spec.ndim}D convolution, got {tuple(xd.shape)}")
    cf_shape = (shape[0], shape[-1], *shape[1:-1]) if last else shape
    bound = spec.bind(cf_shape)
    n, out_spatial = bound.batch, bound.out_spatial
    result_shape = (n, *out_spatial, spec.out_channels) if last else (n, spec.out_channels, *out_spatial)
    if out is not None:
        result = cuda.as_cuda_array(out)
        if tuple(result.shape) != result_shape or np.dtype(result.dtype) != prepared.dtype \
                or not result.is_c_contiguous():
            raise ValueError(f"out must be a C-contiguous device array of shape {result_shape} and dtype "
                             f"{prepared.dtype}, got {tuple(result.shape)} {np.dtype(result.dtype)}")
    else:
        result = cuda.device_array(result_shape, prepared.dtype)
    if n == 0 or math.prod(result_shape) == 0:
        return result if unbatched is False else result[0]
    in5 = (cf_shape[0], cf_shape[1], *_pad3(cf_shape[2:], 1))
    out5 = (n, spec.out_channels, *_pad3(out_spatial, 1))
    xs, os = element_strides(in5, last), element_strides(out5, last)
    x_flat, out_flat = xd.reshape(xd.size), result.reshape(math.prod(result_shape))
    s, d = _pad3(spec.stride, 1), _pad3(spec.dilation, 1)
    conv = (*s, *_pad3(bound.pad_before, 0), *d)
    kernel_shape = _pad3(spec.kernel_size, 1)
    dtype = from_dtype(prepared.dtype)
    mode = PADDING_MODE_CODES[spec.padding_mode]
    g = spec.groups
    kernel = gpu_kernel(spec, prepared.shuffle_groups, last)
    sizes = (*in5, *out5[2:], g, spec.in_channels // g, spec.out_channels // g, *kernel_shape)
    pixels = n * math.prod(out5[2:])
    if kernel == "transposed":
        w, b, _ = _device_weights(cuda, prepared, "transposed")
        blocks, threads = launch.elementwise(math.prod(out5))
        k_transposed.conv_transposed(dtype)[blocks, threads](x_flat, xs, w, b, out_flat, os, sizes, conv)
    elif kernel.startswith("depthwise"):
        w, b, _ = _device_weights(cuda, prepared, "depthwise_last" if last else "depthwise")
        sizes = (*in5, *out5[2:], spec.out_channels, *kernel_shape)
        multiplier = spec.out_channels // spec.in_channels
        if last:
            blocks, threads = launch.depthwise_channels_last(spec.out_channels, out5[4], n * out5[2] * out5[3])
            k_depthwise.conv_depthwise_channels_last(dtype)[blocks, threads](
                x_flat, xs, w, b, out_flat, os, sizes, conv, mode, multiplier)
        else:
            blocks, threads = launch.depthwise_channels_first(out5[4], out5[3], n * spec.out_channels * out5[2])
            k_depthwise.conv_depthwise(dtype)[blocks, threads](x_flat, xs, w, b, out_flat, os, sizes, conv, mode,
                                                               multiplier)
    else:
        w, b, dest = _device_weights(cuda, prepared, "direct")
        if kernel == "small_groups":
            blocks, threads = launch.small_groups(pixels, g)
            k_direct.conv_small_groups(dtype)[blocks, threads](x_flat, xs, w, b, out_flat, os, dest, sizes, conv,
                                                              mode)
        else:
            blocks, threads = launch.direct(pixels, spec.out_channels // g, g)
            k_direct.conv_direct(dtype)[blocks, threads](x_flat, xs, w, b, out_flat, os, dest, sizes, conv, mode,
                                                         spec.transposed)
    if unbatched:
        result = result[0]
    return _wrap_like(result, original) if is_device_array(original) and out is None else result


def channel_shuffle_cuda(x: Any, groups: int, layout: str | None = None):
    """GPU channel shuffle of a device (or host) array; returns a device array of the same shape."""
    from .api import channels_last
    from .kernels.cpu.layout import shuffle_sources
    from .kernels.cuda import launch
    from .kernels.cuda.layout import channel_gather
    cuda = require_cuda()
    xd = _as_device(cuda, x, "input")
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
