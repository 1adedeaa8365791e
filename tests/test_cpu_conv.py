"""CPU kernels against the float64 reference (and torch.nn.functional where installed), on random specs."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbaconv as nc
from numbaconv.spec import ConvSpecError

from . import reference as ref
from .conftest import assert_close, torch_or_skip

CONV = {1: nc.conv1d, 2: nc.conv2d, 3: nc.conv3d}
CONV_T = {1: nc.conv_transpose1d, 2: nc.conv_transpose2d, 3: nc.conv_transpose3d}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_pads(sizes, kernel, stride, dilation):
    """TensorFlow's SAME padding, worked out here independently of numbaconv.spec."""
    pads = []
    for length, k, s, d in zip(sizes, kernel, stride, dilation):
        total = max((math.ceil(length / s) - 1) * s + d * (k - 1) + 1 - length, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def to_layout(a, last):
    return np.moveaxis(a, 1, -1) if last else a


def random_array(rng, shape, dtype):
    return (rng.standard_normal(shape) + 0.1).astype(dtype)  # random, never all zeros


@st.composite
def conv_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(nd))  # stride may exceed the kernel
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, 9 if nd < 3 else 6)) for _ in range(nd))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "same", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
        pads = [(padding, padding)] * nd
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
        pads = [(p, p) for p in padding]
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(nd))
        pads = list(padding)
    elif form == "same":
        padding, pads = "same", same_pads(sizes, kernel, stride, dilation)
    else:
        padding, pads = "valid", [(0, 0)] * nd
    for (b, a), length in zip(pads, sizes):
        assume(mode != "reflect" or max(b, a) < length)
        assume(mode != "circular" or max(b, a) <= length)
    for (b, a), length, k, d in zip(pads, sizes, kernel, dilation):
        assume(length + b + a >= d * (k - 1) + 1)
    return dict(nd=nd, groups=groups, cin=cin, cout=cout, kernel=kernel, stride=stride, dilation=dilation,
                sizes=sizes, mode=mode, padding=padding, pads=pads, batch=draw(st.integers(1, 3)),
                bias=draw(st.booleans()), last=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])),
                noncontiguous=draw(st.booleans()))


@SETTINGS
@given(case=conv_cases(), seed=st.integers(0, 2**31))
def test_conv_matches_reference(case, seed):
    rng = np.random.default_rng(seed)
    c = case
    x = random_array(rng, (c["batch"], c["cin"], *c["sizes"]), c["dtype"])
    w = random_array(rng, (c["cout"], c["cin"] // c["groups"], *c["kernel"]), c["dtype"])
    b = random_array(rng, (c["cout"],), c["dtype"]) if c["bias"] else None
    xin = to_layout(x, c["last"])
    if c["noncontiguous"]:  # the same values as a view of every other element, walking backwards
        buffer = np.empty(xin.shape[:-1] + (2 * xin.shape[-1],), xin.dtype)
        buffer[..., ::-2] = xin
        xin = buffer[..., ::-2]
    y = CONV[c["nd"]](xin, w, b, c["stride"], c["padding"], c["dilation"], c["groups"], c["mode"],
                      layout="channels_last" if c["last"] else None)
    expected = ref.conv(x, w, b, c["stride"], c["pads"], c["dilation"], c["groups"], c["mode"])
    scale = ref.conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), c["stride"], c["pads"],
                     c["dilation"], c["groups"], c["mode"])
    assert y.dtype == c["dtype"]
    assert_close(to_layout(expected, c["last"]), y, to_layout(scale, c["last"]), reduction=w[0].size)


@st.composite
def transposed_cases(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, 6 if nd < 3 else 4)) for _ in range(nd))
    for length, k, s, d, p, op in zip(sizes, kernel, stride, dilation, padding, output_padding):
        assume((length - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
    return dict(nd=nd, groups=groups, cin=cin, cout=cout, kernel=kernel, stride=stride, dilation=dilation,
                output_padding=output_padding, padding=padding, sizes=sizes, batch=draw(st.integers(1, 2)),
                bias=draw(st.booleans()), last=draw(st.booleans()), dtype=draw(st.sampled_from([np.float32, np.float64])))


@SETTINGS
@given(case=transposed_cases(), seed=st.integers(0, 2**31))
def test_conv_transpose_matches_reference(case, seed):
    rng = np.random.default_rng(seed)
    c = case
    x = random_array(rng, (c["batch"], c["cin"], *c["sizes"]), c["dtype"])
    w = random_array(rng, (c["cin"], c["cout"] // c["groups"], *c["kernel"]), c["dtype"])
    b = random_array(rng, (c["cout"],), c["dtype"]) if c["bias"] else None
    args = (c["stride"], c["padding"], c["output_padding"], c["groups"], c["dilation"])
    y = CONV_T[c["nd"]](to_layout(x, c["last"]), w, b, *args, layout="channels_last" if c["last"] else None)
    expected = ref.conv_transpose(x, w, b, *args)
    scale = ref.conv_transpose(np.abs(x), np.abs(w), None if b is None else np.abs(b), *args)
    assert_close(to_layout(expected, c["last"]), y, to_layout(scale, c["last"]), reduction=w.shape[0] * w[0, 0].size)


# ---- the named variants ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("multiplier,stride,dilation,padding", [(1, 1, 1, 1), (2, 2, 1, 0), (3, 3, 2, "same"),
                                                                 (1, 2, 1, "same"), (1, 1, 1, ((0, 2), (1, 0)))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_with_multiplier(multiplier, stride, dilation, padding, dtype, rng):
    x = random_array(rng, (2, 5, 13, 8), dtype)
    w = random_array(rng, (5 * multiplier, 1, 3, 3), dtype)
    b = random_array(rng, (5 * multiplier,), dtype)
    y = nc.depthwise_conv2d(x, w, b, stride, padding, dilation)
    pads = same_pads((13, 8), (3, 3), (stride,) * 2, (dilation,) * 2) if padding == "same" else (
        padding if isinstance(padding, tuple) else [(padding, padding)] * 2)
    assert_close(ref.conv(x, w, b, stride, pads, dilation, groups=5), y,
                 ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, dilation, groups=5), reduction=9)


@pytest.mark.parametrize("last", [False, True])
def test_channel_shuffle_and_shuffled_grouped(last, rng):
    x = random_array(rng, (2, 6, 5, 7), np.float32)
    y = nc.channel_shuffle(to_layout(x, last), 3, layout="NHWC" if last else None)
    np.testing.assert_array_equal(y, to_layout(ref.channel_shuffle(x, 3), last))
    w = random_array(rng, (9, 2, 3, 3), np.float32)
    b = random_array(rng, (9,), np.float32)
    y = nc.shuffled_grouped_conv2d(to_layout(x, last), w, b, stride=2, padding=1, groups=3,
                                   layout="NHWC" if last else None)
    expected = ref.channel_shuffle(ref.conv(x, w, b, 2, [(1, 1)] * 2, 1, 3), 3)
    scale = ref.channel_shuffle(ref.conv(np.abs(x), np.abs(w), np.abs(b), 2, [(1, 1)] * 2, 1, 3), 3)
    assert_close(to_layout(expected, last), y, to_layout(scale, last), reduction=18)


def test_separable_equals_depthwise_then_pointwise(rng):
    x = random_array(rng, (1, 4, 9, 10), np.float64)
    dw = random_array(rng, (8, 1, 3, 3), np.float64)
    pw = random_array(rng, (6, 8, 1, 1), np.float64)
    pb = random_array(rng, (6,), np.float64)
    y = nc.separable_conv2d(x, dw, pw, None, pb, stride=2, padding=1)
    expected = ref.conv(ref.conv(x, dw, None, 2, [(1, 1)] * 2, 1, 4), pw, pb, 1, [(0, 0)] * 2)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding,mode,stride,dilation", [(1, "zeros", 1, 1), ((2, 1), "reflect", (2, 1), 1),
                                                          ("same", "zeros", 1, (1, 2)), (1, "circular", 2, 1),
                                                          (2, "replicate", 1, 2)])
def test_spatially_separable_equals_product_kernel(padding, mode, stride, dilation, rng):
    x = random_array(rng, (2, 3, 11, 9), np.float64)
    v = random_array(rng, (4, 3, 3, 1), np.float64)
    h = random_array(rng, (5, 4, 1, 3), np.float64)
    b = random_array(rng, (5,), np.float64)
    product = np.einsum("omj,mci->ocij", h[:, :, 0, :], v[:, :, :, 0])
    y = nc.spatially_separable_conv2d(x, v, h, b, stride, padding, dilation, mode)
    np.testing.assert_allclose(y, nc.conv2d(x, product, b, stride, padding, dilation, padding_mode=mode),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding,mode,stride", [(1, "zeros", 1), (1, "reflect", 2), ("same", "zeros", 1),
                                                 ((0, 2), "replicate", (1, 2))])
def test_flattened_equals_product_kernel(padding, mode, stride, rng):
    x = random_array(rng, (1, 3, 10, 8), np.float64)
    lateral = random_array(rng, (4, 3, 1, 1), np.float64)
    vertical = random_array(rng, (4, 1, 3, 1), np.float64)
    horizontal = random_array(rng, (4, 1, 1, 5), np.float64)
    product = (lateral[:, :, 0, 0][:, :, None, None] * vertical[:, 0, :, 0][:, None, :, None]
               * horizontal[:, 0, 0, :][:, None, None, :])
    y = nc.flattened_conv2d(x, lateral, vertical, horizontal, None, stride, padding, 1, mode)
    np.testing.assert_allclose(y, nc.conv2d(x, product, None, stride, padding, padding_mode=mode),
                               rtol=1e-10, atol=1e-10)


# ---- API behaviour -----------------------------------------------------------------------------------------
def test_prepare_reuses_packed_weights_and_out_buffer(rng):
    x = random_array(rng, (2, 4, 8, 8), np.float32)
    w = random_array(rng, (6, 4, 3, 3), np.float32)
    spec = nc.ConvSpec(2, 4, 6, 3, padding=1)
    prepared = nc.prepare(spec, w)
    out = np.empty((2, 6, 8, 8), np.float32)
    result = prepared(x, out=out)
    assert result is out
    np.testing.assert_allclose(out, nc.conv2d(x, w, padding=1), rtol=0, atol=0)
    x2 = random_array(rng, (1, 4, 5, 7), np.float32)
    assert prepared(x2).shape == (1, 6, 5, 7)
    with pytest.raises(ValueError, match="out must have shape"):
        prepared(x, out=np.empty((2, 6, 8, 7), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c_in,c_out,k,stride,padding,groups,size,activation,shuffle,residual,layout", [
    (5, 7, 3, 1, 1, 1, (9, 11), "relu6", 0, True, "NHWC"),    # SIMD, padded, residual in the epilogue
    (6, 9, 3, 1, 1, 1, (3, 4), None, 0, False, "NHWC"),       # a narrow map: one long row per image
    (8, 12, 1, 1, 0, 4, (7, 5), "relu", 4, False, "NHWC"),    # grouped 1x1 storing its shuffle
    (16, 16, 3, 2, 1, 16, (9, 8), "relu", 0, False, "NHWC"),  # depthwise 3x3, stride 2
    (4, 6, 5, 3, 2, 2, (11, 6), "hardswish", 0, True, "NHWC"),  # stride > kernel step, hardswish: generic path
    (3, 5, 3, 1, 1, 1, (6, 7), "relu", 0, True, "NCHW"),      # channels-first: generic path
])
def test_runner_matches_reference(c_in, c_out, k, stride, padding, groups, size, activation, shuffle, residual,
                                  layout, dtype, rng):
    spec = nc.ConvSpec(2, c_in, c_out, k, stride, padding, groups=groups, bias=True)
    w = random_array(rng, spec.weight_shape, dtype)
    b = random_array(rng, (c_out,), dtype)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation=activation)
    x = random_array(rng, (2, c_in, *size), dtype)
    pads = [(padding, padding)] * 2
    expected = ref.conv(x, w, b, stride, pads, 1, groups)
    last = layout == "NHWC"
    summand = random_array(rng, expected.shape, np.float64) if residual else None
    if residual:
        expected = expected + summand
    if shuffle:
        expected = ref.channel_shuffle(expected, shuffle)
    expected = {"relu": lambda y: np.maximum(y, 0), "relu6": lambda y: np.clip(y, 0, 6), None: lambda y: y,
                "hardswish": lambda y: y * np.clip(y + 3, 0, 6) / 6}[activation](expected)
    x_in = np.moveaxis(x, 1, -1) if last else x  # a non-contiguous view for channels-last
    runner = prepared.runner(x_in.shape, layout, residual=residual)
    args = (x_in,) + ((np.moveaxis(summand, 1, -1).astype(dtype) if last else summand.astype(dtype),)
                      if residual else ())
    y = runner(*args)
    y = np.moveaxis(y, -1, 1) if last else y
    scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, 1, groups) + (np.abs(summand) if residual else 0)
    scale = ref.channel_shuffle(scale, shuffle) if shuffle else scale
    assert_close(expected, y, 4 * scale, c_in * k * k)
    np.testing.assert_array_equal(runner(*args), prepared(*args[:1], layout=layout, residual=args[1] if residual
                                                          else None))
    with pytest.raises(ConvSpecError, match="runner's"):
        runner(x_in[:1], *args[1:])
    with pytest.raises(ConvSpecError, match="input must be a"):
        runner(x_in.astype(np.float64 if dtype == np.float32 else np.float32), *args[1:])
    with pytest.raises(ConvSpecError, match="input must be a"):
        runner(x_in.tolist(), *args[1:])
    with pytest.raises(ConvSpecError, match="residual must be"):
        runner(x_in) if residual else runner(x_in, x_in)
    with pytest.raises(ConvSpecError, match="shape must be a batched input shape"):
        prepared.runner(x_in.shape[1:], layout)


def test_unbatched_input_and_empty_batch(rng):
    x = random_array(rng, (3, 7, 7), np.float32)
    w = random_array(rng, (2, 3, 3, 3), np.float32)
    np.testing.assert_array_equal(nc.conv2d(x, w), nc.conv2d(x[None], w)[0])
    empty = nc.conv2d(np.zeros((0, 3, 7, 7), np.float32), w)
    assert empty.shape == (0, 2, 5, 5)


def test_nan_and_inf_propagate(rng):
    x = random_array(rng, (1, 2, 6, 6), np.float32)
    x[0, 0, 2, 2] = np.nan
    x[0, 1, 5, 5] = np.inf
    w = np.abs(random_array(rng, (1, 2, 3, 3), np.float32)) + 0.1
    y = nc.conv2d(x, w, padding=1)
    assert np.isnan(y[0, 0, 1:4, 1:4]).all()
    assert np.isposinf(y[0, 0, 4:, 4:]).all()
    assert np.isfinite(y[0, 0, :1, :]).all()


@pytest.mark.parametrize("call,error,words", [
    (lambda x, w: nc.conv2d(x, w[0]), ConvSpecError, "weight must have 4 dims"),
    (lambda x, w: nc.conv2d(x[:, :3], w), ConvSpecError, "weight must have shape (C_out, C_in/groups, *kernel)"),
    (lambda x, w: nc.conv2d(x, w, groups=3), ConvSpecError, "groups=3 does not divide in_channels=4"),
    (lambda x, w: nc.conv2d(x[..., :2, :2], w), ConvSpecError, "larger than the padded input"),
    (lambda x, w: nc.conv2d(x, w, stride=-1), ConvSpecError, "stride must be >= 1"),
    (lambda x, w: nc.conv2d(x, w, padding=-2), ConvSpecError, "padding must be >= 0"),
    (lambda x, w: nc.conv2d(x, w.astype(np.float64)), TypeError, "weight has dtype float64 but the input is float32"),
    (lambda x, w: nc.conv2d(x.astype(np.int32), w), TypeError, "input must be float32 or float64, got int32"),
    (lambda x, w: nc.conv2d(x.astype(np.complex64), w), TypeError, "input must be float32 or float64"),
    (lambda x, w: nc.conv2d(x[0, 0], w), ConvSpecError, "input must have shape (N, C, H, W)"),
    (lambda x, w: nc.conv2d(x, w, np.ones(3, np.float32)), ConvSpecError, "bias must have shape (C_out,) = (5,)"),
    (lambda x, w: nc.conv2d(x, w, layout="NWHC"), ValueError, "layout must be"),
    (lambda x, w: nc.conv2d(x, w, padding_mode="mirror"), ConvSpecError, "padding_mode must be one of"),
    (lambda x, w: nc.conv_transpose2d(x, w), ConvSpecError, "weight must have shape (C_in, C_out/groups, *kernel)"),
    (lambda x, w: nc.depthwise_conv2d(x, w), ConvSpecError, "depthwise weight must have shape (C*m, 1, kh, kw)"),
    (lambda x, w: nc.channel_shuffle(x, 3), ConvSpecError, "groups=3 does not divide channels=4"),
    (lambda x, w: nc.conv2d(x, w, device="tpu"), ValueError, "device must be one of"),
])
def test_bad_input_gets_a_clear_error(call, error, words, rng):
    x = random_array(rng, (2, 4, 6, 6), np.float32)
    w = random_array(rng, (5, 4, 3, 3), np.float32)
    with pytest.raises(error) as info:
        call(x, w)
    assert words in str(info.value)


def test_layout_names_for_one_dimension(rng):
    x = random_array(rng, (2, 3, 9), np.float32)
    w = random_array(rng, (4, 3, 3), np.float32)
    channels_first = nc.conv1d(x, w, padding=1)
    for name in ("NCL", "NCW", "channels_first"):
        np.testing.assert_array_equal(nc.conv1d(x, w, padding=1, layout=name), channels_first)
    for name in ("NLC", "NWC", "channels_last"):
        y = nc.conv1d(np.ascontiguousarray(x.transpose(0, 2, 1)), w, padding=1, layout=name)
        np.testing.assert_allclose(y.transpose(0, 2, 1), channels_first, rtol=1e-6, atol=1e-6)


# ---- parity with PyTorch ------------------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_matches_torch(nd, mode, rng):
    torch = torch_or_skip()
    F = torch.nn.functional
    sizes = (11, 9, 7)[:nd] if nd < 3 else (6, 7, 5)
    x = random_array(rng, (2, 6, *sizes), np.float32)
    w = random_array(rng, (4, 3, *(3,) * nd), np.float32)
    b = random_array(rng, (4,), np.float32)
    conv = getattr(F, f"conv{nd}d")
    tx = F.pad(torch.from_numpy(x), (1, 1) * nd, mode={"zeros": "constant", "replicate": "replicate",
                                                      "reflect": "reflect", "circular": "circular"}[mode])
    expected = conv(tx, torch.from_numpy(w), torch.from_numpy(b), stride=2, dilation=1, groups=2).numpy()
    y = CONV[nd](x, w, b, 2, 1, 1, 2, mode)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_matches_torch(nd, rng):
    torch = torch_or_skip()
    F = torch.nn.functional
    x = random_array(rng, (2, 4, *(5,) * nd), np.float32)
    w = random_array(rng, (4, 3, *(3,) * nd), np.float32)
    b = random_array(rng, (6,), np.float32)
    expected = getattr(F, f"conv_transpose{nd}d")(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                   stride=2, padding=1, output_padding=1, groups=2,
                                                   dilation=1).numpy()
    y = CONV_T[nd](x, w, b, 2, 1, 1, 2, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("groups,kernel,stride,padding,dilation", [
    (1, 7, 2, 3, 1), (32, 3, 1, 1, 1), (144, 3, 2, 1, 1), (3, 1, 1, 0, 1), (1, 4, 1, "same", 1), (2, 3, 1, 2, 2),
    (1, 1, 3, 0, 1)])
def test_conv2d_matches_torch_on_layer_shapes(groups, kernel, stride, padding, dilation, rng):
    torch = torch_or_skip()
    cin = max(groups, 6) if groups < 144 else 144
    cin = cin - cin % groups
    x = random_array(rng, (1, cin, 23, 17), np.float32)
    w = random_array(rng, (cin * (2 if groups == cin else 1), cin // groups, kernel, kernel), np.float32)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                                          dilation=dilation, groups=groups).numpy()
    for last in (False, True):
        y = nc.conv2d(to_layout(x, last), w, None, stride, padding, dilation, groups, layout="NHWC" if last else None)
        got = np.moveaxis(y, -1, 1) if last else y
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
