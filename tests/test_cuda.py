"""CUDA kernels against the float64 reference.

Three ways this file runs:
- ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim tests/test_cuda.py`` (CI, no GPU): every kernel's
  indexing, tiling edges and bounds on tiny shapes, in the simulator;
- on a machine with a GPU: the same tests plus realistic shapes (``-m cuda``);
- anywhere with numba-cuda installed: PTX for sm_90 of every kernel, which needs NVVM but no GPU.
"""
import os

import numpy as np
import pytest

import numbaconv as nc

from . import reference as ref
from .conftest import assert_close

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu_usable():
    try:
        from numbaconv.cuda_api import cuda_status
        return cuda_status()[0]
    except Exception:
        return False


GPU = _gpu_usable()
REAL_GPU = GPU and not SIM
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA GPU and not in the CUDA simulator")
needs_real_gpu = pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")
pytestmark = [pytest.mark.cudasim]


def rand(rng, shape, dtype=np.float32):
    return (rng.standard_normal(shape) + 0.1).astype(dtype)


def run_gpu(fn, *args, **kwargs):
    y = fn(*args, device="cuda", **kwargs)
    return y.copy_to_host() if hasattr(y, "copy_to_host") else np.asarray(y)


# Tiny cases for the simulator; the real GPU adds the larger ones below.
CONV_CASES = [
    # nd, cin, cout, groups, kernel, stride, padding, dilation, mode, size
    (2, 3, 5, 1, 3, 1, 1, 1, "zeros", (5, 6)),
    (2, 4, 6, 2, 3, 2, 1, 1, "reflect", (6, 5)),
    (2, 4, 4, 1, 1, 1, 0, 1, "zeros", (4, 3)),
    (1, 2, 3, 1, 3, 1, 2, 2, "circular", (7,)),
    (3, 2, 2, 1, 2, 1, 1, 1, "replicate", (3, 3, 4)),
    (2, 8, 8, 4, 3, 1, 1, 1, "zeros", (5, 4)),  # 2 channels per group: the small-group kernel
    (2, 600, 16, 2, 1, 1, 0, 1, "zeros", (2, 3)),  # small groups with a long reduction (300 channels)
]


@needs_gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[0]}d-g{c[3]}-k{c[4]}-{c[8]}" for c in CONV_CASES])
@pytest.mark.parametrize("last", [False, True])
def test_direct_kernel(case, last, rng):
    nd, cin, cout, groups, k, stride, padding, dilation, mode, size = case
    x = rand(rng, (2, cin, *size))
    w = rand(rng, (cout, cin // groups, *(k,) * nd))
    b = rand(rng, (cout,))
    fn = {1: nc.conv1d, 2: nc.conv2d, 3: nc.conv3d}[nd]
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
    y = run_gpu(fn, xin, w, b, stride, padding, dilation, groups, mode, layout="channels_last" if last else None)
    y = np.moveaxis(y, -1, 1) if last else y
    pads = [(padding, padding)] * nd
    assert_close(ref.conv(x, w, b, stride, pads, dilation, groups, mode), y,
                 ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, dilation, groups, mode), w[0].size)


DEPTHWISE_CASES = [  # channels, multiplier, spatial size, kernel, stride, padding, dilation, mode
    (3, 1, (5, 7), (3, 3), 1, 1, 1, "zeros"),
    (3, 2, (5, 7), (3, 3), 2, 1, 1, "reflect"),
    (2, 1, (19, 6), (5, 3), (2, 1), (2, 1), (1, 2), "circular"),  # strips of 8 rows, the last one ragged
    (2, 3, (11, 4), (2, 4), 3, (1, 2), 1, "replicate"),           # stride larger than the kernel
    (2, 1, (4, 5, 6), (3, 3, 3), (1, 2, 1), 1, (2, 1, 1), "zeros"),  # 3D: depth loop around the walk
    (4, 1, (9,), (3,), 2, 1, 1, "zeros"),                         # 1D
]


@needs_gpu
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: f"{len(c[2])}d-k{c[3]}-s{c[4]}-d{c[6]}-{c[7]}")
def test_depthwise_kernels(last, case, rng):
    channels, multiplier, size, kernel, stride, padding, dilation, mode = case
    nd = len(size)
    x = rand(rng, (2, channels, *size))
    w = rand(rng, (channels * multiplier, 1, *kernel))
    b = rand(rng, (channels * multiplier,))
    spec = nc.ConvSpec(nd, channels, channels * multiplier, kernel, stride, padding, dilation, groups=channels,
                       bias=True, padding_mode=mode)
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
    prepared = nc.prepare(spec, w, b)
    from numbaconv.cuda_api import gpu_kernel
    assert gpu_kernel(spec) == "depthwise"
    y = run_gpu(prepared, xin, layout="channels_last" if last else None)
    y = np.moveaxis(y, -1, 1) if last else y
    pads = spec.padding
    assert_close(ref.conv(x, w, b, spec.stride, pads, spec.dilation, channels, mode), y,
                 ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, channels, mode),
                 w[0].size)


@needs_gpu
@pytest.mark.parametrize("cin,cout_per_group,groups,stride,padding,output_padding,dilation", [
    (4, 3, 2, 2, 1, 1, 1),   # narrow groups: the gather kernel
    (3, 20, 1, 2, 1, 1, 2),  # the implicit GEMM kernel, with dilation
    (2, 17, 1, 3, 0, 2, 1),
])
def test_transposed_kernels(cin, cout_per_group, groups, stride, padding, output_padding, dilation, rng):
    x = rand(rng, (1, cin, 3, 4))
    w = rand(rng, (cin, cout_per_group, 3, 3))
    b = rand(rng, (cout_per_group * groups,))
    args = (stride, padding, output_padding, groups, dilation)
    y = run_gpu(nc.conv_transpose2d, x, w, b, *args)
    assert_close(ref.conv_transpose(x, w, b, *args), y, ref.conv_transpose(np.abs(x), np.abs(w), np.abs(b), *args),
                 cin * 9)


@needs_gpu
def test_shuffled_grouped_and_channel_shuffle(rng):
    x = rand(rng, (1, 6, 4, 4))
    w = rand(rng, (6, 2, 1, 1))
    y = run_gpu(nc.shuffled_grouped_conv2d, x, w, None, groups=3)
    expected = ref.channel_shuffle(ref.conv(x, w, None, 1, [(0, 0)] * 2, 1, 3), 3)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    shuffled = nc.channel_shuffle(x, 3, device="cuda")
    np.testing.assert_array_equal(shuffled.copy_to_host(), ref.channel_shuffle(x, 3))


@needs_gpu
def test_float64_and_device_arrays_stay_on_device(rng):
    from numba import cuda
    x = rand(rng, (1, 2, 5, 5), np.float64)
    w = rand(rng, (3, 2, 3, 3), np.float64)
    xd = cuda.to_device(x)
    y = nc.conv2d(xd, w, padding=1)  # device='auto' runs where the input lives
    assert hasattr(y, "copy_to_host") and not isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), ref.conv(x, w, None, 1, [(1, 1)] * 2), rtol=1e-12, atol=1e-12)
    host = nc.conv2d(xd, w, padding=1, device="cpu")
    assert isinstance(host, np.ndarray)
    np.testing.assert_allclose(host, y.copy_to_host(), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(GPU, reason="a GPU is usable here")
def test_cuda_without_gpu_says_why():
    x = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match="device='cuda' needs a usable GPU: "):
        nc.conv2d(x, np.ones((1, 1, 1, 1), np.float32), device="cuda")


# ---- real GPU: realistic shapes with tile edges that are not multiples of the block --------------------------
REAL_CASES = [  # cin, cout, groups, k, stride, padding, size, batch
    (64, 64, 1, 3, 1, 1, (56, 56), 4), (3, 64, 1, 7, 2, 3, (67, 53), 2), (256, 70, 1, 1, 1, 0, (13, 29), 3),
    (128, 128, 32, 3, 1, 1, (28, 31), 2), (144, 144, 144, 3, 2, 1, (57, 55), 2), (240, 240, 3, 1, 1, 0, (28, 28), 2),
]


@pytest.mark.cuda
@needs_real_gpu
@pytest.mark.parametrize("case", REAL_CASES)
@pytest.mark.parametrize("last", [False, True])
def test_real_gpu_layer_shapes(case, last, rng):
    cin, cout, groups, k, stride, padding, size, batch = case
    x = rand(rng, (batch, cin, *size))
    w = rand(rng, (cout, cin // groups, k, k))
    b = rand(rng, (cout,))
    xin = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
    y = run_gpu(nc.conv2d, xin, w, b, stride, padding, 1, groups, layout="NHWC" if last else None)
    y = np.moveaxis(y, -1, 1) if last else y
    pads = [(padding, padding)] * 2
    assert_close(ref.conv(x, w, b, stride, pads, 1, groups), y,
                 ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, 1, groups), w[0].size)


@pytest.mark.cuda
@needs_real_gpu
def test_real_gpu_torch_tensors_round_trip(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rand(rng, (2, 16, 20, 20))).cuda()
    w = torch.from_numpy(rand(rng, (32, 16, 3, 3))).cuda()
    y = nc.conv2d(x, w, padding=1)
    assert isinstance(y, torch.Tensor) and y.is_cuda
    expected = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)
    xl = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # an NHWC-contiguous tensor
    yl = nc.conv2d(xl, w, padding=1, layout="NHWC")
    torch.testing.assert_close(yl.permute(0, 3, 1, 2).double(), expected, rtol=1e-4, atol=1e-4)


# ---- every kernel compiles for sm_90 with the real compiler (no GPU needed) ---------------------------------
def _ptx_kernels():
    from numba import types
    from numbaconv.kernels.cuda import depthwise, direct, layout, transposed
    f32 = types.float32[::1]
    i64 = types.int64
    t5 = types.UniTuple(i64, 5)
    args = (f32, t5, f32, f32, f32, t5, i64[::1], types.UniTuple(i64, 14), types.UniTuple(i64, 9), i64)
    yield "direct", direct.conv_direct(types.float32).py_func, args + (types.boolean,)
    yield "small_groups", direct.conv_small_groups(types.float32).py_func, args
    for last in (False, True):
        for kernel, stride, dilation, mode in (((3, 3), (1, 1), (1, 1), 0), ((5, 3), (2, 1), (1, 2), 3)):
            yield f"depthwise {kernel} last={last}", depthwise.conv_depthwise(
                types.float32, kernel, stride, dilation, mode, last).py_func, (
                f32, t5, f32, f32, f32, t5, types.UniTuple(i64, 10), types.UniTuple(i64, 5), i64)
    yield "transposed", transposed.conv_transposed(types.float32).py_func, (
        f32, t5, f32, f32, f32, t5, types.UniTuple(i64, 14), types.UniTuple(i64, 9))
    yield "channel_gather", layout.channel_gather.py_func, (f32, types.UniTuple(i64, 3), f32,
                                                            types.UniTuple(i64, 3), types.UniTuple(i64, 3), i64[::1])


def _empty_kernel():
    pass


@pytest.mark.skipif(SIM, reason="the simulator has no compiler")
def test_every_kernel_compiles_to_ptx_for_sm90():
    cuda = pytest.importorskip("numba.cuda")
    try:
        from numba.cuda import compile_ptx
        compile_ptx(_empty_kernel, (), cc=(9, 0))
    except Exception as e:  # no NVVM: numba-cuda[cu13] is not installed
        pytest.skip(f"no NVVM to compile with: {e}")
    for name, func, sig in _ptx_kernels():
        ptx, _ = cuda.compile_ptx(func, sig, cc=(9, 0))
        assert ".target sm_90" in ptx and ".entry" in ptx, name
