"""Each CPU kernel family on the same cases (the dispatcher would pick only one), and the generated source."""
import numba
import numpy as np
import pytest

import numbaconv as nc
from numbaconv import dispatch
from numbaconv.kernels.cpu import generate_simd

from . import reference as ref
from .conftest import assert_close


def test_generated_simd_module_is_current():
    assert generate_simd.TARGET.read_text() == generate_simd.module_source(), \
        "run python -m numbaconv.kernels.cpu.generate_simd"
    assert generate_simd.ROWS_TARGET.read_text() == generate_simd.rows_module_source(), \
        "run python -m numbaconv.kernels.cpu.generate_simd"


@pytest.mark.parametrize("kernel", ["simd", "direct"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cin,cout,groups,k,stride,dilation,size", [
    (3, 17, 1, 7, 2, 1, 23), (8, 40, 2, 3, 1, 2, 13), (16, 70, 1, 1, 1, 1, 9), (12, 12, 3, 3, 3, 1, 11),
    (5, 33, 1, 2, 1, 1, 19)])
def test_forced_kernels_match_reference(kernel, dtype, cin, cout, groups, k, stride, dilation, size, rng):
    x = (rng.standard_normal((2, cin, size, size + 3)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin // groups, k, k)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(2, cin, cout, k, stride, 1, dilation, groups, bias=True)
    prepared = nc.prepare(spec, w, b, kernel=kernel)
    assert prepared.kernel == kernel
    pads = [(1, 1), (1, 1)]
    for layout in (None, "NHWC"):
        xin = x if layout is None else np.moveaxis(x, 1, -1)
        y = prepared(xin, layout=layout)
        y = y if layout is None else np.moveaxis(y, -1, 1)
        assert_close(ref.conv(x, w, b, stride, pads, dilation, groups), y,
                     ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, dilation, groups), reduction=w[0].size)


def test_dispatcher_choices():
    assert dispatch.choose_kernel(nc.ConvSpec(2, 64, 64, 3))[0] == "winograd"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 64, 64, 3), "simd")[0] == "simd"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 32, 64, 3))[0] == "simd"  # narrower: transforms cost more
    assert dispatch.choose_kernel(nc.ConvSpec(2, 32, 64, 3), "winograd")[0] == "winograd"
    for not_winograd in (nc.ConvSpec(2, 64, 64, 3, stride=2), nc.ConvSpec(2, 64, 64, 3, dilation=2),
                         nc.ConvSpec(2, 64, 64, 3, groups=2), nc.ConvSpec(2, 64, 64, 5), nc.ConvSpec(1, 64, 64, 3),
                         nc.ConvSpec(2, 64, 64, 3, padding=1, padding_mode="reflect")):
        assert dispatch.choose_kernel(not_winograd)[0] == "simd"
        with pytest.raises(ValueError, match="cannot compute"):
            dispatch.choose_kernel(not_winograd, "winograd")
    with pytest.raises(ValueError, match="channel shuffle"):
        nc.prepare(nc.ConvSpec(2, 64, 64, 3), np.ones((64, 64, 3, 3), np.float32), shuffle_groups=4, kernel="winograd")
    assert nc.prepare(nc.ConvSpec(2, 64, 64, 3), np.ones((64, 64, 3, 3), np.float32), shuffle_groups=4).kernel == "simd"
    # A one-off call transforms the weights every time: too few output pixels stay direct.
    assert dispatch.one_off_kernel(nc.ConvSpec(2, 256, 256, 3, padding=1), 14 * 14) == "simd"
    assert dispatch.one_off_kernel(nc.ConvSpec(2, 256, 256, 3, padding=1), 28 * 28) is None
    assert dispatch.one_off_kernel(nc.ConvSpec(2, 32, 32, 3, padding=1), 1) is None  # not Winograd anyway
    assert dispatch.choose_kernel(nc.ConvSpec(2, 128, 128, 3, groups=32), lanes=16)[0] == "direct"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 128, 128, 3, groups=32), lanes=8)[0] == "small_groups"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 120, 120, 3, groups=30), lanes=8)[0] != "small_groups"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 8, 16, 3, groups=8))[0] == "depthwise"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 8, 16, 3, transposed=True))[0] == "subpixel"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 8, 8, 3, groups=4, transposed=True))[0] == "transposed"
    assert dispatch.choose_kernel(nc.ConvSpec(2, 8, 8, 3, groups=4, transposed=True), "subpixel")[0] == "subpixel"
    with pytest.raises(ValueError, match="cannot compute"):
        dispatch.choose_kernel(nc.ConvSpec(2, 8, 16, 3, transposed=True), "simd")
    assert dispatch.simd_block(64, 8, 16) == (6, 2) and dispatch.simd_block(8, 8, 16) == (12, 1)
    assert dispatch.simd_block(64, 16, 32) == (6, 4) and dispatch.simd_block(20, 16, 32) == (12, 1)
    assert dispatch.plan(nc.ConvSpec(2, 4, 4, 3), "cpu").backend == "cpu"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,cin,cout,size,padding", [
    (2, 9, 17, (13, 10), 1),        # odd channels, C_out not a block multiple, sizes not multiples of 4
    (1, 64, 70, (5, 23), "same"),   # the natural choice from 64 channels
    (3, 1, 16, (9, 4), 0),          # one input channel, no padding: a 7x2 output, fewer than 6 tiles per row
    (1, 8, 8, (3, 3), 2),           # padding wider than a tap: the patches reach past both ends
    (2, 16, 24, (1, 17), (1, 0)),   # one row, asymmetric padding
])
def test_winograd_matches_reference(batch, cin, cout, size, padding, dtype, rng):
    """Winograd F(4x4, 3x3) against the float64 reference in both layouts, with bias, a residual, a relu6 and
    a non-contiguous input, within the direct kernels' bound (its rounding, grown by the transforms'
    coefficients up to 8 and 1/24, measured 1e-5 of the output's largest magnitude, far inside it)."""
    x = (rng.standard_normal((batch, cin, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin, 3, 3)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(2, cin, cout, 3, padding=padding, bias=True)
    prepared = nc.prepare(spec, w, b, kernel="winograd")
    assert prepared.kernel == "winograd"
    relu6 = nc.prepare(spec, w, b, kernel="winograd", activation="relu6")
    pads = list(zip(spec.bind(x.shape).pad_before, spec.bind(x.shape).pad_after))
    expected = ref.conv(x, w, b, 1, pads)
    scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, pads)
    residual = rng.standard_normal(expected.shape).astype(dtype)
    for layout in (None, "NHWC"):
        xin = x if layout is None else np.moveaxis(x, 1, -1)  # channels-last: a transposed view
        as_first = (lambda y: y) if layout is None else (lambda y: np.moveaxis(y, -1, 1))
        to_layout = (lambda y: y) if layout is None else (lambda y: np.ascontiguousarray(np.moveaxis(y, 1, -1)))
        assert_close(expected, as_first(prepared(xin, layout=layout)), scale, w[0].size)
        summed = as_first(prepared(xin, layout=layout, residual=to_layout(residual)))
        assert_close(expected + residual, summed, scale + np.abs(residual), w[0].size)
        clipped = as_first(relu6(xin, layout=layout))
        assert_close(np.clip(expected, 0, 6), clipped, scale, w[0].size)


@pytest.mark.parametrize("layout", [None, "NHWC"])
def test_winograd_passes_of_tile_rows(layout, rng, monkeypatch):
    """A batch cut into passes of tile rows (the last one shorter, rows crossing from one image into the
    next) gives the one-pass result bit for bit: every tile's sums run in the same order."""
    from numbaconv.kernels.cpu import winograd
    x = (rng.standard_normal((3, 24, 13, 10)) + 0.1).astype(np.float32)  # 3 images x 4 tile rows
    w = (rng.standard_normal((20, 24, 3, 3)) + 0.1).astype(np.float32)
    residual = rng.standard_normal((3, 20, 13, 10)).astype(np.float32)
    if layout:
        x, residual = np.moveaxis(x, 1, -1), np.ascontiguousarray(np.moveaxis(residual, 1, -1))
    prepared = nc.prepare(nc.ConvSpec(2, 24, 20, 3, padding=1), w, kernel="winograd", activation="relu")
    whole = prepared(x, layout=layout, residual=residual)
    monkeypatch.setattr(winograd, "chunk_rows", lambda total, *rest: 5)
    np.testing.assert_array_equal(prepared(x, layout=layout, residual=residual), whole)
    x64 = np.moveaxis(x, -1, 1) if layout else x
    expected = np.maximum(ref.conv(x64.astype(np.float64), w.astype(np.float64), None, 1, [(1, 1), (1, 1)])
                          + (np.moveaxis(residual, -1, 1) if layout else residual), 0)
    np.testing.assert_allclose(np.moveaxis(whole, -1, 1) if layout else whole, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("size,runs_winograd", [((20, 20), True), ((19, 20), False)])
def test_conv2d_one_off_winograd(size, runs_winograd, rng, monkeypatch):
    """A one-off conv2d takes Winograd from 400 output pixels (20 x 20 here) and stays direct below, with
    the reference's result either way."""
    from numbaconv.kernels.cpu import winograd
    gemm_calls = []
    gemm = winograd.winograd_gemm
    monkeypatch.setattr(winograd, "winograd_gemm", lambda *a: (gemm_calls.append(1), gemm(*a)))
    x = (rng.standard_normal((1, 64, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) + 0.1).astype(np.float32)
    y = nc.conv2d(x, w, None, 1, 1)
    assert bool(gemm_calls) == runs_winograd
    expected = ref.conv(x.astype(np.float64), w.astype(np.float64), None, 1, [(1, 1), (1, 1)])
    assert_close(expected, y, ref.conv(np.abs(x), np.abs(w), None, 1, [(1, 1), (1, 1)]), w[0].size)


def test_winograd_chunk_rows():
    """Passes of equal size hold at most about CHUNK_BYTES (or twice the weights), in whole multiples of the
    thread count."""
    from numbaconv.kernels.cpu import winograd
    row_bytes = 36 * 14 * (64 + 64) * 4
    rows = winograd.chunk_rows(8 * 14, 14, 64, 64, 4, 36 * 64 * 64 * 4, 2)
    assert rows % 2 == 0 and (rows - 2) * row_bytes <= winograd.CHUNK_BYTES
    passes = -(-8 * 14 // rows)
    assert passes == -(-8 * 14 * row_bytes // winograd.CHUNK_BYTES) and passes * rows - 8 * 14 < 2 * passes
    assert winograd.chunk_rows(14, 14, 64, 64, 4, 36 * 64 * 64 * 4, 2) == 14  # one image: one pass
    assert winograd.chunk_rows(8 * 4, 4, 256, 256, 4, 36 * 256 * 256 * 4, 2) == 32  # weights dominate: one pass
    assert winograd.chunk_rows(100, 1000, 512, 512, 4, 0, 3) == 3  # never fewer rows than threads
    assert winograd.chunk_rows(1, 1000, 512, 512, 4, 0, 2) == 1


@pytest.mark.parametrize("kernel", ["small_groups", "direct"])
@pytest.mark.parametrize("stride,dilation,padding,mode", [(1, 1, 1, "zeros"), (2, 1, 0, "zeros"),
                                                          (1, 2, "same", "zeros"), (3, 1, 2, "zeros"),
                                                          ((2, 1), (1, 3), (3, 2), "zeros"), (1, 1, 1, "reflect")])
def test_small_groups_kernel(kernel, stride, dilation, padding, mode, rng):
    """The small-group kernel skips zero padding tap by tap on channels-last input (no padded copy): taps
    past both ends, stride above the kernel size, padding wider than a dilated tap; other modes read a
    padded copy.  Non-contiguous channels-last input (a transposed view of NCHW)."""
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES
    if kernel == "small_groups" and VECTOR_BYTES != 32:
        pytest.skip("the small-group kernel is for 8-lane float32 vectors (AVX2)")
    x = (rng.standard_normal((2, 64, 11, 9)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((64, 4, 3, 3)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(64) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(2, 64, 64, 3, stride, padding, dilation, groups=16, bias=True, padding_mode=mode)
    prepared = nc.prepare(spec, w, b, kernel=kernel)
    assert prepared.kernel == kernel
    bound = spec.bind(x.shape)
    pads = list(zip(bound.pad_before, bound.pad_after))
    for layout in (None, "NHWC"):
        y = prepared(x if layout is None else np.moveaxis(x, 1, -1), layout=layout)
        y = y if layout is None else np.moveaxis(y, -1, 1)
        assert_close(ref.conv(x, w, b, spec.stride, pads, spec.dilation, 16, mode), y,
                     ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, 16, mode), 36)


@pytest.mark.parametrize("activation", ["relu", "relu6", "hardswish"])
@pytest.mark.parametrize("kernel,groups", [("simd", 1), ("direct", 1), ("depthwise", 6)])
def test_fused_activation(activation, kernel, groups, rng):
    x = (rng.standard_normal((2, 6, 9, 7)) * 4).astype(np.float32)
    x[0, 0, 4, 4] = np.nan  # NaN must survive the clamp, as in np.clip
    w = (rng.standard_normal((12, 6 // groups, 3, 3))).astype(np.float32)
    spec = nc.ConvSpec(2, 6, 12, 3, padding=1, groups=groups)
    plain = nc.prepare(spec, w, kernel=kernel)(x)
    fused = nc.prepare(spec, w, kernel=kernel, activation=activation)(x)
    expected = {"relu": np.maximum(plain, 0), "relu6": np.clip(plain, 0, 6),
                "hardswish": plain * np.clip(plain + 3, 0, 6) / 6}[activation]
    np.testing.assert_allclose(fused, expected, rtol=1e-6, atol=1e-6)
    assert np.isnan(fused[0, :, 3:6, 3:6]).any()


@pytest.mark.parametrize("kernel", ["subpixel", "transposed"])
@pytest.mark.parametrize("nd,cin,cout,groups,k,stride,padding,output_padding,dilation,size", [
    (2, 64, 32, 1, 3, 2, 1, 1, 1, (9, 8)),      # the suite's decoder layer, small
    (2, 3, 17, 1, 4, 2, 1, 0, 1, (5, 7)),       # even kernel: two taps per phase
    (2, 8, 16, 2, 3, 3, 2, 1, 2, (6, 5)),       # groups, dilation sharing a factor with nothing
    (2, 4, 9, 1, 1, 2, 0, 1, 1, (4, 4)),        # kernel smaller than the stride: phases with the bias alone
    (2, 6, 10, 1, 5, 2, 4, 1, 1, (7, 3)),       # padding larger than the kernel's reach on one side
    (1, 5, 12, 1, 4, 3, 1, 2, 2, (11,)),        # 1D, stride and dilation with gcd 1
    (3, 3, 8, 1, 3, (2, 1, 2), 1, 0, (1, 2, 1), (3, 4, 3)),  # 3D, mixed strides
])
def test_transposed_kernels_match_reference(kernel, nd, cin, cout, groups, k, stride, padding, output_padding,
                                            dilation, size, rng):
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((cin, cout // groups, *(k,) * nd)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(nd, cin, cout, k, stride, padding, dilation, groups, bias=True, transposed=True,
                       output_padding=output_padding)
    prepared = nc.prepare(spec, w, b, kernel=kernel)
    assert prepared.kernel == kernel
    args = (spec.stride, tuple(p[0] for p in spec.padding), spec.output_padding, groups, spec.dilation)
    expected = ref.conv_transpose(x, w, b, *args)
    magnitude = ref.conv_transpose(np.abs(x), np.abs(w), np.abs(b), *args)
    for layout in (None, "NHWC"):
        y = prepared(x if layout is None else np.moveaxis(x, 1, -1), layout=layout)
        assert_close(expected, y if layout is None else np.moveaxis(y, -1, 1), magnitude, cin * k ** nd)
    assert_close(expected[1:], prepared(x[1:]), magnitude[1:], cin * k ** nd)  # plans are per input shape
    fused = nc.prepare(spec, w, b, kernel=kernel, activation="relu6")(x)
    np.testing.assert_allclose(fused, np.clip(prepared(x), 0, 6), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nd,size,groups,shuffle", [(2, (17, 23), 1, 0), (2, (12, 25), 1, 0), (2, (20, 25), 3, 3),
                                                    (3, (3, 9, 11), 1, 0), (1, (301,), 1, 0)])
def test_pointwise_runs_as_rows_of_pixels(nd, size, groups, shuffle, rng):
    """1x1 stride 1 walks each image's pixels in rows: of a length that divides them (12x25: 300 = 2 x 150, one
    row per image and thread), else of POINTWISE_ROW plus a tail (the odd sizes)."""
    from numbaconv.api import POINTWISE_ROW
    assert np.prod(size) >= 2 * POINTWISE_ROW and np.prod(size) % POINTWISE_ROW
    x = (rng.standard_normal((2, 12, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((24, 12 // groups, *(1,) * nd)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(24) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(nd, 12, 24, 1, groups=groups, bias=True)
    # kernel="simd": channels-first input would otherwise take the pixel-vectorized kernel (tested below)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation="relu", kernel="simd")
    assert prepared.kernel == "simd" and prepared.pointwise and prepared.rows_kernel is None
    length = dispatch.pointwise_row(int(np.prod(size)), 2, 2, prepared.block_pixels, POINTWISE_ROW)
    assert length == (150 if size == (12, 25) else 0)  # 12 x 25 is 2 x 150 (blocks of 6)
    expected = ref.conv(x, w, b, 1, [(0, 0)] * nd, 1, groups)
    expected = np.maximum(ref.channel_shuffle(expected, shuffle) if shuffle else expected, 0)
    for layout in (None, "channels_last"):
        xin = x if layout is None else np.moveaxis(x, 1, -1)
        y = prepared(xin, layout=layout)
        np.testing.assert_allclose(y if layout is None else np.moveaxis(y, -1, 1), expected, rtol=2e-5, atol=2e-5)
        if nd > 1 and numba.get_num_threads() == 2:  # the plan the call used (1D: one row per image)
            calls = prepared._simd_plans[(xin.shape, layout is not None, False, 2)][3]
            final = np.prod(size) % POINTWISE_ROW + POINTWISE_ROW
            assert [call[4][3] for call in calls] == ([150] if length else [POINTWISE_ROW, final])


@pytest.mark.parametrize("cin,cout,groups,shuffle,size,batch", [
    (64, 64, 1, 0, (17, 23), 2),    # the shortest reduction it takes, rows with a tail, channel blocks inside jobs
    (200, 40, 2, 0, (9, 31), 1),    # groups of 100 -> 20: a partial vector, batch 1, one row per image
    (288, 48, 3, 3, (15, 15), 3)])  # a folded channel shuffle (strided output), the sweep over three groups
def test_pointwise_prefetch_specialization_matches_reference(cin, cout, groups, shuffle, size, batch, rng,
                                                             monkeypatch):
    """The SIMD kernel compiled with a prefetch (large channels-last pointwise inputs), forced on small
    shapes: the same results as without, residual and activation included, reading past no array's end."""
    monkeypatch.setattr(dispatch, "PREFETCH_INPUT_BYTES", 0)
    x = (rng.standard_normal((batch, cin, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((cout, cin // groups, 1, 1)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    residual = (rng.standard_normal((batch, cout, *size)) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(2, cin, cout, 1, groups=groups, bias=True)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation="relu", kernel="simd")
    expected = ref.conv(x, w, b, 1, [(0, 0)] * 2, 1, groups)
    expected = np.maximum((ref.channel_shuffle(expected, shuffle) if shuffle else expected) + residual, 0)
    wide = np.moveaxis(x, 1, -1).repeat(2, axis=2)[:, :, ::2]  # non-contiguous channels-last input
    y = prepared(wide, layout="NHWC", residual=np.moveaxis(residual, 1, -1))
    assert_close(expected, np.moveaxis(y, -1, 1), np.abs(expected) + np.abs(residual) + 1, reduction=cin // groups)
    calls = prepared._simd_plans[(wide.shape, True, True, numba.get_num_threads())][3]  # the plan the call used
    sweep = prepared.block_pixels * groups
    assert all(call[-1][9] == sweep for call in calls)
    assert any(str(signature[21]) == "int64" for signature in prepared.simd_kernel.signatures)


@pytest.mark.parametrize("input_bytes,group_in,group_out,expected", [
    (25 << 20, 256, 64, 6), (25 << 20, 64, 32, 6), (51 << 20, 512, 64, 6),  # ResNet's 256->64 at batch 8
    (3 << 20, 256, 64, None),                                              # an input that stays in cache
    (25 << 20, 32, 32, None), (25 << 20, 1024, 64, None),                  # shorter and longer reductions
    (25 << 20, 256, 128, None), (25 << 20, 64, 256, None)])                # more outputs per line of input
def test_pointwise_prefetch_only_where_it_was_measured_to_pay(input_bytes, group_in, group_out, expected):
    assert dispatch.pointwise_prefetch(input_bytes, 6, group_in, group_in, group_out) == expected


@pytest.mark.parametrize("pixels,batch,threads,expected", [
    (3136, 1, 2, 112),   # 56x56: 28 rows of 112, 14 per thread, against 16 of 96 on one and a 160 alone
    (3136, 8, 2, 0),     # 124 rows of 96 per thread and 4 of 160 balance: no tail block in the 96s
    (784, 1, 2, 98),     # 28x28: 8 rows of 98 (15 x 6 + 2 x 4)
    (196, 1, 2, 98),     # 14x14: one row per thread instead of 96 + 100, one thread idle in each call
    (500, 1, 3, 100),    # 5 rows of 100 (2 per thread at most) cost less than 10 of 50 (4)
    (49, 1, 2, 0),       # 7x7: no even divisor, the walk in rows of POINTWISE_ROW
    (97, 2, 2, 0)])
def test_pointwise_row_divides_the_pixels_and_balances_the_threads(pixels, batch, threads, expected):
    """dispatch.pointwise_row: the length in POINTWISE_ROWS dividing the pixels whose busiest thread has
    the least block work, where it has less than with rows of 96 and a remainder row; else 0."""
    length = dispatch.pointwise_row(pixels, batch, threads, 6, 96)
    assert length == expected
    assert length == 0 or (pixels % length == 0 and length in dispatch.POINTWISE_ROWS)


@pytest.mark.parametrize("size,k,stride,padding,dilation,multiplier,activation", [
    ((9, 37), 3, 1, 1, 1, 1, None),        # the unrolled 3x3 path, several vectors and an overlapping last one
    ((8, 41), 3, 2, 1, 1, 1, "relu6"),     # stride 2: even-lane loads
    ((7, 30), 3, 1, "same", 2, 2, "relu"),  # dilation and a channel multiplier
    ((6, 19), 3, 2, 0, 1, 1, None),        # no padding: every row interior
    ((10, 33), 5, 1, 2, 1, 1, "relu6"),    # not 3x3: the tap loops
    ((9, 6), 3, 1, 1, 1, 1, None),         # 3x3 but narrower than a vector: the general kernel's scalar columns
    ((11, 40), 3, 3, 1, 1, 1, "relu"),     # 3x3 at stride 3: the general kernel
    ((5, 40), 3, 2, (2, 0), (1, 2), 1, None),  # padding only on top, dilation along W: a padded plane
])
def test_channels_first_depthwise_matches_reference(size, k, stride, padding, dilation, multiplier, activation, rng):
    channels = 5
    x = (rng.standard_normal((3, channels, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((channels * multiplier, 1, k, k)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(channels * multiplier) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(2, channels, channels * multiplier, k, stride, padding, dilation, channels, bias=True)
    prepared = nc.prepare(spec, w, b, activation=activation)
    assert prepared.channels_first_depthwise
    bound = spec.bind(x.shape)
    pads = list(zip(bound.pad_before, bound.pad_after))
    expected = ref.conv(x, w, b, spec.stride, pads, spec.dilation, channels)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, channels)
    if activation:
        expected = np.clip(expected, 0, 6 if activation == "relu6" else np.inf)
    for batch in (x[::2], x[:1]):  # a non-contiguous batch, and batch 1
        assert_close(expected[:3:2] if len(batch) == 2 else expected[:1], prepared(batch),
                     magnitude[:3:2] if len(batch) == 2 else magnitude[:1], k * k)


@pytest.mark.parametrize("groups,shuffle,per_group,k,size,dtype", [
    (3, 3, 20, 1, (15, 14), np.float32),   # ShuffleNet's case: shuffle over the conv's groups, stored by stride
    (3, 3, 16, 3, (9, 11), np.float64),    # whole blocks, 3x3 with padding, float64
    (2, 4, 12, 1, (7, 9), np.float32),     # shuffle groups != conv groups: scratch buffer and gather
    (1, 3, 24, 3, (6, 5), np.float32),     # ungrouped conv, then a shuffle
])
def test_shuffled_simd_conv_matches_reference(groups, shuffle, per_group, k, size, dtype, rng):
    cin, cout = 4 * groups, per_group * groups
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin // groups, k, k)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(2, cin, cout, k, padding=k // 2, groups=groups, bias=True)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation="relu6")
    assert prepared.kernel == "simd" and prepared.shuffle_in_strides == (shuffle == groups)
    pads = [(k // 2, k // 2)] * 2
    expected = np.clip(ref.channel_shuffle(ref.conv(x, w, b, 1, pads, 1, groups), shuffle), 0, 6)
    scale = ref.channel_shuffle(ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, pads, 1, groups), shuffle)
    for layout in (None, "NHWC"):
        y = prepared(x if layout is None else np.moveaxis(x, 1, -1), layout=layout)
        assert_close(expected, y if layout is None else np.moveaxis(y, -1, 1), scale, cin // groups * k * k)


@pytest.mark.parametrize("nd,size,multiplier,k,stride,padding,dilation,mode", [
    (2, (9, 13), 1, 3, 1, 1, 1, "zeros"), (2, (10, 7), 2, 4, 1, "same", 1, "zeros"),  # asymmetric 'same'
    (2, (11, 8), 1, 3, 4, 2, 1, "zeros"),   # stride larger than the kernel, padding beyond its reach
    (2, (12, 12), 3, 3, 2, 3, 2, "zeros"), (3, (5, 6, 7), 1, 3, (1, 2, 1), 1, (2, 1, 1), "zeros"),
    (1, (15,), 2, 5, 2, 4, 1, "zeros"), (2, (9, 9), 1, 3, 2, 1, 1, "reflect"),  # other modes: padded copy
])
def test_channels_last_depthwise_skips_zero_padding(nd, size, multiplier, k, stride, padding, dilation, mode, rng):
    x = (rng.standard_normal((2, 6, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((6 * multiplier, 1, *(k,) * nd)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(6 * multiplier) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(nd, 6, 6 * multiplier, k, stride, padding, dilation, 6, bias=True, padding_mode=mode)
    prepared = nc.prepare(spec, w, b)
    assert prepared.kernel == "depthwise"
    bound = spec.bind(x.shape)
    pads = list(zip(bound.pad_before, bound.pad_after))
    y = np.moveaxis(prepared(np.moveaxis(x, 1, -1), layout="NHWC"), -1, 1)
    assert_close(ref.conv(x, w, b, spec.stride, pads, spec.dilation, 6, mode), y,
                 ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, 6, mode), k ** nd)


@pytest.mark.parametrize("channels,size,stride,padding,dilation,mode,activation", [
    (8, (9, 13), 1, 1, 1, "zeros", None),           # one vector of channels
    (20, (12, 11), 2, 1, 1, "zeros", "relu6"),      # a ragged channel count (last vector overlaps)
    (37, (7, 6), 1, "same", 2, "zeros", "relu"),    # dilation: wide edges
    (16, (2, 3), 1, 1, 1, "zeros", None),           # no interior pixel at all
    (9, (10, 9), 3, 2, 1, "zeros", "relu6"),        # stride larger than the kernel
    (24, (8, 8), (1, 2), 0, 1, "zeros", None),      # no padding: every pixel interior
    (13, (6, 9), 1, 1, 1, "circular", None),        # other modes: padded copy, then no skipped padding
])
def test_channels_last_depthwise3x3_matches_reference(channels, size, stride, padding, dilation, mode, activation,
                                                      rng):
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES
    x = (rng.standard_normal((2, channels, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((channels, 1, 3, 3)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(channels) + 0.1).astype(np.float32)
    spec = nc.ConvSpec(2, channels, channels, 3, stride, padding, dilation, channels, bias=True, padding_mode=mode)
    prepared = nc.prepare(spec, w, b, activation=activation)
    assert prepared.depthwise3x3 == (channels >= VECTOR_BYTES // 4)
    bound = spec.bind(x.shape)
    pads = list(zip(bound.pad_before, bound.pad_after))
    expected = ref.conv(x, w, b, spec.stride, pads, spec.dilation, channels, mode)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, channels, mode)
    if activation:
        expected = np.clip(expected, 0, 6 if activation == "relu6" else np.inf)
    strided = np.moveaxis(np.repeat(x, 2, axis=0)[::2], 1, -1)  # channels-last and not contiguous
    for batch in (strided, strided[:1]):
        y = np.moveaxis(prepared(batch, layout="NHWC"), -1, 1)
        assert_close(expected[:len(batch)], y, magnitude[:len(batch)], 9)


@pytest.mark.parametrize("shape", [(1, 5, 1, 1, 601), (2, 3, 1, 3, 257), (3, 4, 2, 2, 300), (1, 2, 1, 9, 7)])
def test_layout_copies_split_long_rows(shape, rng):
    """Few, long rows are split into tiles (1D signals); many rows are copied whole: both exact."""
    from numbaconv.kernels.cpu import layout
    x = rng.standard_normal(shape).astype(np.float32)
    n, c, d, h, w = shape
    padded = np.zeros((n, d, h + 2, w + 3, c), np.float32)
    layout.channels_first_to_last(x, padded, 0, 1, 2)
    expected = np.zeros_like(padded)
    expected[:, :, 1:h + 1, 2:w + 2] = np.moveaxis(x, 1, -1)
    np.testing.assert_array_equal(padded, expected)
    back = np.empty(shape, np.float32)
    order = rng.permutation(c).astype(np.int64)
    layout.channels_last_to_first(np.ascontiguousarray(np.moveaxis(x, 1, -1)), back, order)
    np.testing.assert_array_equal(back, x[:, order])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 8, 1, 1, 8), (2, 19, 1, 5, 13), (1, 64, 1, 1, 301), (3, 16, 2, 3, 9),
                                   (1, 33, 1, 7, 40), (2, 17, 2, 23, 40), (1, 9, 1, 70, 8)])
def test_register_transposing_layout_copies(shape, dtype, rng):
    """The copies that transpose lanes x lanes blocks in registers: ragged channel counts (a scalar tail),
    widths that are not a whole number of vectors (an overlapping last block), padding, padded channels,
    planes of several row tiles with a shorter last tile (layout.tile_rows)."""
    from numbaconv.kernels.cpu.layout import tile_rows
    if shape[3] > 20:
        assert 1 < tile_rows(shape[3], shape[4], shape[1]) < shape[3] and shape[3] % tile_rows(shape[3], shape[4], shape[1])
    from numbaconv.kernels.cpu import layout
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    n, c, d, h, w = shape
    if c < lanes or w < lanes:
        pytest.skip(f"needs {lanes} channels and pixels")
    x = rng.standard_normal(shape).astype(dtype)
    padded = np.full((n, d + 2, h + 1, w + 3, c), np.nan, dtype)
    padded[:, 1:d + 1, 1:, 2:w + 2] = 0
    layout.channels_first_to_last_blocks(x, padded, 1, 1, 2)
    expected = np.full_like(padded, np.nan)
    expected[:, 1:d + 1, 1:, 2:w + 2] = np.moveaxis(x, 1, -1)
    np.testing.assert_array_equal(padded, expected)  # NaN where nothing may be written
    wide = np.concatenate([np.moveaxis(x, 1, -1), rng.standard_normal((n, d, h, w, 3)).astype(dtype)], axis=-1)
    back = np.full(shape, np.nan, dtype)
    layout.channels_last_to_first_blocks(wide, back)  # 3 padding channels after the real ones
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("first_spatial,before,after", [(1, (0, 1, 2), (0, 2, 1)), (2, (1, 0, 3), (2, 1, 0)),
                                                      (1, (0, 0, 0), (0, 0, 0))])
def test_zero_border_leaves_the_interior_for_the_copy(first_spatial, before, after):
    """The padded buffers are allocated empty and only their border zeroed: every border position must be 0
    afterwards and no interior position written (NaN stays)."""
    from numbaconv.api import _zero_border
    shape = (2, 3, 4, 7, 5) if first_spatial == 1 else (2, 5, 3, 4, 7)
    out = np.full(shape, np.nan, np.float32)
    assert _zero_border(out, before, after, first_spatial) is out
    interior = np.zeros(shape, bool)
    spatial = tuple(slice(b, size - a) for b, a, size in zip(before, after, shape[first_spatial:]))
    interior[(slice(None),) * first_spatial + spatial] = True
    assert np.isnan(out[interior]).all()
    assert (out[~interior] == 0).all()


@pytest.mark.parametrize("nd,cin,cout,k,stride,padding,dilation,mode,size,dtype,activation", [
    (2, 3, 17, 7, 2, 3, 1, "zeros", (41, 52), np.float32, None),        # a stem: odd map, C_out not a block multiple
    (2, 1, 5, 3, 3, 1, 2, "reflect", (30, 61), np.float64, "relu6"),   # stride 3 > kernel extent, dilation
    (2, 4, 8, 4, 1, "same", 1, "circular", (9, 40), np.float32, "relu"),  # even kernel, 'same'
    (2, 2, 3, 5, 4, 0, 1, "zeros", (23, 131), np.float32, None),       # 4 column phases
    (1, 3, 9, 7, 2, 3, 1, "replicate", (203,), np.float32, None),       # 1D
    (2, 3, 6, 3, 2, 1, 1, "zeros", (12, 13), np.float32, None),        # output narrower than a block: other kernel
])
def test_channels_first_rows_kernel_matches_reference(nd, cin, cout, k, stride, padding, dilation, mode, size, dtype,
                                                      activation, rng):
    """Few input channels, channels-first: the pixel-vectorized kernel (split column phases, overlapping
    last block, padded output rows) against the float64 oracle, on batch 1 and non-contiguous input."""
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin, *(k,) * nd)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(nd, cin, cout, k, stride, padding, dilation, bias=True, padding_mode=mode)
    prepared = nc.prepare(spec, w, b, activation=activation)
    bound = spec.bind(x.shape)
    assert prepared.rows_kernel is not None
    takes_rows = bound.out_spatial[-1] >= prepared.rows_width
    assert takes_rows == (size != (12, 13))
    if takes_rows:
        assert prepared.rows_width == 3 * VECTOR_BYTES // np.dtype(dtype).itemsize
    pads = list(zip(bound.pad_before, bound.pad_after))
    expected = ref.conv(x, w, b, spec.stride, pads, spec.dilation, 1, mode)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, 1, mode)
    if activation:
        expected = np.clip(expected, 0, 6 if activation == "relu6" else np.inf)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]  # not contiguous
    for batch in (strided, strided[1:]):
        y = prepared(batch)
        assert_close(expected[-len(batch):], y, magnitude[-len(batch):], w[0].size)
    out = np.full(expected.shape, np.nan, dtype)
    assert prepared(x, out=out) is out
    assert_close(expected, out, magnitude, w[0].size)


@pytest.mark.parametrize("cin,cout,k,stride,padding,dilation,size,dtype,activation,takes_window", [
    (3, 32, 3, 2, 1, 1, (37, 29), np.float32, "relu6", True),          # MobileNet's stem, odd map
    (3, 64, 7, 2, 3, 1, (40, 33), np.float64, None, True),             # ResNet's stem, float64
    (4, 24, 5, 1, "same", 2, (19, 23), np.float32, "relu", True),      # dilation, 'same'
    (1, 16, 3, 3, 0, 1, (20, 31), np.float32, None, True),             # one channel, stride larger than the kernel
    (2, 48, 3, (1, 2), ((2, 0), (1, 3)), 1, (12, 50), np.float32, None, True),  # uneven padding and strides
    (3, 20, 3, 1, 1, 1, (9, 9), np.float32, None, False),              # 20 channels, not whole blocks: SIMD kernel
    (3, 32, 3, 2, 1, 1, (9, 9), np.float32, None, False),              # output narrower than a block: SIMD kernel
])
def test_channels_last_window_kernel_matches_reference(cin, cout, k, stride, padding, dilation, size, dtype,
                                                       activation, takes_window, rng):
    """Few input channels, channels-last: each output row's window staged and reduced in one loop
    (conv_window_rows) against the float64 oracle, from a contiguous array, a channels-last view of an NCHW
    one (read in place), batch 1 and the runner; with a residual the SIMD kernel sums it."""
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin, k, k)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(2, cin, cout, k, stride, padding, dilation, bias=True)
    prepared = nc.prepare(spec, w, b, activation=activation)
    bound = spec.bind(x.shape)
    assert prepared._takes_window(True, bound, False) == takes_window
    assert not prepared._takes_window(True, bound, True)
    pads = list(zip(bound.pad_before, bound.pad_after))
    expected = ref.conv(x, w, b, spec.stride, pads, spec.dilation)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, pads, spec.dilation)
    if activation:
        expected = np.clip(expected, 0, 6 if activation == "relu6" else np.inf)
    expected, magnitude = np.moveaxis(expected, 1, -1), np.moveaxis(magnitude, 1, -1)
    view = np.moveaxis(x, 1, -1)
    for batch in (view, np.ascontiguousarray(view), view[1:]):
        assert_close(expected[-len(batch):], prepared(batch, layout="NHWC"), magnitude[-len(batch):], w[0].size)
    runner = prepared.runner(view.shape, "NHWC")
    assert_close(expected, runner(np.ascontiguousarray(view)), magnitude, w[0].size)
    summand = rng.standard_normal(expected.shape).astype(dtype)
    with_residual = np.moveaxis(ref.conv(x, w, b, spec.stride, pads, spec.dilation), 1, -1) + summand
    if activation:
        with_residual = np.clip(with_residual, 0, 6 if activation == "relu6" else np.inf)
    assert_close(with_residual, prepared(view, layout="NHWC", residual=summand), magnitude + np.abs(summand),
                 w[0].size)


@pytest.mark.parametrize("nd,cin,cout,groups,shuffle,size,dtype,activation,residual,takes_rows", [
    (2, 16, 40, 1, 0, (13, 17), np.float32, "relu6", True, True),    # C_out not a block multiple, residual
    (2, 48, 48, 3, 3, (14, 15), np.float32, None, False, True),       # grouped, ShuffleNet shuffle folded
    (2, 48, 30, 2, 5, (12, 17), np.float32, "relu", True, True),      # a shuffle over other groups than the conv's
    (1, 24, 20, 2, 0, (250,), np.float64, None, True, True),          # 1D, float64 (half as many lanes)
    (3, 8, 12, 1, 0, (3, 9, 10), np.float32, "relu", False, True),    # 3D
    (2, 128, 36, 1, 0, (16, 16), np.float32, None, False, True),      # the widest group that takes it
    (2, 16, 24, 1, 0, (9, 9), np.float32, None, True, False),         # under 8 blocks of pixels: other kernel
])
def test_channels_first_pointwise_rows_kernel_matches_reference(nd, cin, cout, groups, shuffle, size, dtype,
                                                                activation, residual, takes_rows, rng):
    """A channels-first pointwise layer on the pixel-vectorized kernel: each image's pixels one flat row cut
    into runs, the channel blocks split into parts where there are few runs (batch 1), groups, a folded
    shuffle as a channel permutation, the residual and the clamp in its epilogue; non-contiguous input."""
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((cout, cin // groups, *(1,) * nd)) + 0.1).astype(dtype)
    b = (rng.standard_normal(cout) + 0.1).astype(dtype)
    spec = nc.ConvSpec(nd, cin, cout, 1, groups=groups, bias=True)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation=activation)
    assert prepared.rows_kernel is not None and prepared.rows_flat
    assert prepared._takes_rows(False, spec.bind(x.shape)) == takes_rows
    pads = [(0, 0)] * nd
    expected = ref.conv(x, w, b, 1, pads, 1, groups)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, pads, 1, groups)
    if shuffle:
        expected, magnitude = ref.channel_shuffle(expected, shuffle), ref.channel_shuffle(magnitude, shuffle)
    summand = (rng.standard_normal(expected.shape) + 0.1).astype(dtype) if residual else None
    if residual:
        expected, magnitude = expected + summand, magnitude + np.abs(summand)
    expected = np.maximum(expected, 0) if activation == "relu" else _activate(expected, activation)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]  # not contiguous
    for batch in (strided, strided[1:]):
        y = prepared(batch, residual=None if summand is None else summand[-len(batch):])
        assert_close(expected[-len(batch):], y, magnitude[-len(batch):], cin // groups + 1)


def test_pointwise_packings_are_made_on_first_use_from_a_copy(rng):
    """A pointwise layer that can take either kernel packs each kernel's weights when a call first needs
    them, from its own copy: changing the caller's arrays after prepare changes nothing."""
    x = (rng.standard_normal((1, 32, 16, 16)) + 0.1).astype(np.float32)
    w = (rng.standard_normal((24, 32, 1, 1)) + 0.1).astype(np.float32)
    b = (rng.standard_normal(24) + 0.1).astype(np.float32)
    expected = ref.conv(x, w, b, 1, [(0, 0)] * 2)
    magnitude = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, [(0, 0)] * 2)
    prepared = nc.prepare(nc.ConvSpec(2, 32, 24, 1, bias=True), w, b)
    assert "packed" not in prepared.__dict__ and "rows_packed" not in prepared.__dict__
    w[:], b[:] = 0.0, 0.0
    assert_close(expected, prepared(x), magnitude, 33)
    assert "rows_packed" in prepared.__dict__ and "packed" not in prepared.__dict__
    y = prepared(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), layout="NHWC")
    assert_close(expected, y.transpose(0, 3, 1, 2), magnitude, 33)
    assert "packed" in prepared.__dict__


@pytest.mark.parametrize("rows,row,channels,blocks,threads,expected", [
    (1, 3136, 256, 16, 2, (48, 1)),    # 66 runs of 48 pixels (48 KB of input each) keep 2 threads busy
    (1, 3136, 16, 24, 2, (192, 1)),    # few channels: at most 8 blocks of pixels a run
    (1, 221, 16, 10, 2, (192, 4)),     # 2 runs: each also split into 4 parts of the channel blocks
    (1, 300, 16, 3, 8, (192, 3)),      # no more parts than blocks
    (56, 56, 3, 16, 2, (56, 1)),       # a spatial kernel's job is a whole row
])
def test_rows_jobs(rows, row, channels, blocks, threads, expected):
    assert dispatch.rows_jobs(rows, row, channels, 4, 24, blocks, threads) == expected


def _activate(y, activation):
    if activation == "relu6":
        return np.clip(y, 0, 6)
    if activation == "hardswish":
        return y * np.clip(y + 3, 0, 6) / 6
    return y


@pytest.mark.parametrize("activation", [None, "relu6", "hardswish"])
@pytest.mark.parametrize("case,in_kernel", [
    (dict(nd=2, cin=16, cout=24, k=1, stride=1, size=(7, 15)), True),      # pointwise rows, a half-full vector
    (dict(nd=2, cin=16, cout=20, k=1, stride=1, size=(12, 17), groups=2, shuffle=2), True),  # NCHW: pointwise rows
    (dict(nd=2, cin=8, cout=40, k=3, stride=2, size=(11, 6)), True),       # strided, ragged last vector
    (dict(nd=2, cin=12, cout=48, k=3, stride=1, size=(5, 13), groups=3, shuffle=3), True),  # shuffle in strides
    (dict(nd=2, cin=12, cout=48, k=1, stride=1, size=(5, 13), groups=3, shuffle=4), False),  # scratch + gather
    (dict(nd=3, cin=4, cout=9, k=3, stride=1, size=(3, 4, 5)), True),
    (dict(nd=1, cin=5, cout=20, k=5, stride=3, size=(33,)), True),
    (dict(nd=2, cin=3, cout=8, k=3, stride=1, size=(6, 40)), True),  # NCHW: the rows kernel sums too
    (dict(nd=2, cin=16, cout=16, k=3, stride=1, size=(9, 12), groups=16), False),  # depthwise sums after
    (dict(nd=2, cin=16, cout=24, k=3, stride=2, size=(5, 6), transposed=True), True),
    (dict(nd=2, cin=16, cout=24, k=1, stride=2, size=(4, 5), transposed=True), True),  # phases no tap reaches
])
def test_residual_is_added_before_the_activation(case, in_kernel, activation, rng):
    nd, cin, cout, k, stride, size = (case[key] for key in ("nd", "cin", "cout", "k", "stride", "size"))
    groups, shuffle, transposed = case.get("groups", 1), case.get("shuffle", 0), case.get("transposed", False)
    padding = k // 2
    spec = nc.ConvSpec(nd, cin, cout, k, stride, padding, 1, groups, bias=True, transposed=transposed,
                       output_padding=stride - 1 if transposed else 0)
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal(spec.weight_shape) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    if transposed:
        expected = ref.conv_transpose(x, w, b, stride, padding, stride - 1, groups)
        scale = ref.conv_transpose(np.abs(x), np.abs(w), np.abs(b), stride, padding, stride - 1, groups)
    else:
        pads = [(padding, padding)] * nd
        expected = ref.conv(x, w, b, stride, pads, 1, groups)
        scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, pads, 1, groups)
    if shuffle:
        expected, scale = ref.channel_shuffle(expected, shuffle), ref.channel_shuffle(scale, shuffle)
    residual = rng.standard_normal(expected.shape).astype(np.float32) * 3
    expected = _activate(expected + residual, activation)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation=activation)
    for last in (False, True):
        move = (lambda a: np.moveaxis(a, 1, -1)) if last else (lambda a: a)
        bound = spec.bind(x.shape)
        assert prepared._residual_in_kernel(last, bound) == in_kernel
        y = prepared(move(x), layout="channels_last" if last else None, residual=move(residual)[::1])
        y = np.moveaxis(y, -1, 1) if last else y
        assert_close(expected, y, scale + np.abs(residual), reduction=w[0].size + 1)
    # Unbatched input takes an unbatched residual; a wrong shape is refused by name.
    y0 = prepared(x[0], residual=residual[0])
    assert_close(expected[0], y0, scale[0] + np.abs(residual[0]), reduction=w[0].size + 1)
    with pytest.raises(nc.ConvSpecError, match="residual must have the result's shape"):
        prepared(x, residual=residual[:, :-1])


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,before,after", [((2, 1, 5, 7, 3), (0, 2, 1), (0, 1, 3)),
                                                ((1, 3, 4, 2, 17), (1, 0, 2), (2, 3, 0)),
                                                ((3, 1, 1, 9, 1), (0, 0, 4), (0, 0, 5))])
def test_pad_channels_last_matches_numpy_pad(shape, before, after, mode, rng):
    from numbaconv.api import PADDING_MODE_CODES
    from numbaconv.kernels.cpu.layout import pad_channels_last
    from .reference import _NP_MODES
    if mode in ("reflect", "circular") and any(p >= n for p, n in zip(before + after, shape[1:4] * 2)):
        pytest.skip("reflect/circular need padding below the size")
    x = rng.standard_normal(shape)
    out = np.full((shape[0], *(n + b + a for n, b, a in zip(shape[1:4], before, after)), shape[4]), np.nan)
    pad_channels_last(x, out, *before, PADDING_MODE_CODES[mode])
    pads = [(0, 0), *zip(before, after), (0, 0)]
    np.testing.assert_array_equal(out, np.pad(x, pads, mode=_NP_MODES[mode]))


@pytest.mark.parametrize("shape", [(2, 7, 7, 24), (1, 1, 3), (3, 5, 13), (2, 2, 3, 4, 9)])
def test_global_average_pooling_step(shape, rng):
    from numbaconv.network import _global_avgpool_step
    x = rng.standard_normal(shape).astype(np.float32) + 3  # an offset: float32 sums would drift
    y = _global_avgpool_step(x)
    assert y.shape == (shape[0], shape[-1]) and y.dtype == np.float32
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=tuple(range(1, x.ndim - 1))), rtol=1e-6)
    flat = x.reshape(shape[0], -1)
    assert _global_avgpool_step(flat) is flat  # already (N, features): nothing to pool


@pytest.mark.parametrize("size", [1, 7, 8, 29, 16384 + 13, 3 * 16384])
@pytest.mark.parametrize("clamp", [None, (0.0, np.inf), (0.0, 6.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_residual_add_clamped(size, clamp, dtype, rng):
    from numbaconv.kernels.cpu.elementwise import add_clamped
    x = (3 * rng.standard_normal(size)).astype(dtype)
    y = (3 * rng.standard_normal(size)).astype(dtype)
    x[size // 2] = np.nan  # NaN passes the clamp, as in np.clip
    expected = x.astype(np.float64) + y
    if clamp:
        expected = np.clip(expected, *clamp)
    out = np.full(size, 7, dtype)
    add_clamped(x, y, out, clamp is not None, *(clamp or (0.0, 0.0)))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    add_clamped(x, y, x, clamp is not None, *(clamp or (0.0, 0.0)))  # in place over a summand
    np.testing.assert_allclose(x, expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 17, 19), (2, 16, 9, 33), (3, 5, 11), (2, 9, 3, 4, 10)])
def test_to_channels_last_copies_any_layout(shape, rng):
    from numbaconv.api import to_channels_last
    x = rng.standard_normal(shape).astype(np.float32)
    for source in (x, x[:, ::-1]):  # contiguous, and a strided view
        y = to_channels_last(source)
        assert y.flags.c_contiguous
        np.testing.assert_array_equal(y, np.moveaxis(source, 1, -1))


@pytest.mark.parametrize("nd,cin,cout,k,padding,dilation,groups,size,wide", [
    # 8 outputs: blocks of 12 pixels, whose tail blocks (8) do not fit a 7-wide row: 9 padded columns
    # beat 7 single pixels
    (2, 4, 8, 3, 1, 1, 1, (7, 7), True),
    (2, 12, 24, 3, 2, 2, 3, (9, 5), True),     # dilation and groups
    (3, 4, 8, 3, 1, 1, 1, (3, 5, 7), True),    # one long row per depth plane
    (2, 6, 8, 5, (1, 3), 1, 1, (4, 5), True),  # unequal padding per dimension
    (2, 16, 32, 3, 1, 1, 1, (14, 14), False),  # 14 wide in blocks of 6: 6 + 4 + 4, nothing wasted
    (2, 8, 24, 3, 1, 1, 1, (7, 7), False),     # 4 + 4, one pixel twice, against 9 padded columns
    (2, 8, 16, 3, 1, 1, 1, (5, 28), False),    # 28 wide: whole blocks, rows as they are
])
def test_narrow_maps_run_as_one_long_row(nd, cin, cout, k, padding, dilation, groups, size, wide, rng):
    spec = nc.ConvSpec(nd, cin, cout, k, 1, padding, dilation, groups, bias=True)
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal(spec.weight_shape) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    prepared = nc.prepare(spec, w, b, activation="relu")
    bound = spec.bind(x.shape)
    assert bool(prepared._wide_rows(True, bound)) == bool(prepared._wide_rows(False, bound)) == wide
    assert not prepared._wide_rows(True, bound, residual=True)
    pads = list(zip(bound.pad_before, bound.pad_after))
    expected = np.maximum(ref.conv(x, w, b, 1, pads, dilation, groups), 0)
    scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, pads, dilation, groups)
    out = np.full((2, *bound.out_spatial, cout), np.nan, np.float32)
    y = prepared(np.moveaxis(x, 1, -1), layout="channels_last", out=out)
    assert y is out
    assert_close(expected, np.moveaxis(y, -1, 1), scale, reduction=w[0].size)
    assert_close(expected, prepared(x), scale, reduction=w[0].size)  # channels-first: a transposing copy out


@pytest.mark.parametrize("inner", [True, False])
@pytest.mark.parametrize("k,groups,shuffle,size", [(1, 3, 3, (9, 13)), (3, 2, 0, (8, 11)), (1, 1, 0, (20, 15))])
def test_channel_blocks_inside_or_across_jobs(inner, k, groups, shuffle, size, rng, monkeypatch):
    """Both job layouts of the SIMD kernel (dispatch.channels_inner): one channel block per job, or all."""
    monkeypatch.setattr(dispatch, "CHANNELS_INNER_WEIGHT_BYTES", 1 << 30 if inner else 0)
    monkeypatch.setattr(dispatch, "CHANNELS_INNER_ROWS_PER_THREAD", 0)
    from numbaconv import api
    api._spec_layout.cache_clear()  # plans are shared per spec: none made under the other setting
    cin, cout = 6 * groups, 40 * groups  # 40 per group: two whole blocks and a half-filled one
    spec = nc.ConvSpec(2, cin, cout, k, 1, k // 2, 1, groups, bias=True)
    x = (rng.standard_normal((2, cin, *size)) + 0.1).astype(np.float32)
    w = (rng.standard_normal(spec.weight_shape) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    pads = [(k // 2, k // 2)] * 2
    expected = ref.conv(x, w, b, 1, pads, 1, groups)
    scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, pads, 1, groups)
    if shuffle:
        expected, scale = ref.channel_shuffle(expected, shuffle), ref.channel_shuffle(scale, shuffle)
    residual = rng.standard_normal(expected.shape).astype(np.float32)
    prepared = nc.prepare(spec, w, b, shuffle_groups=shuffle, activation="relu")
    for last in (False, True):
        move = (lambda a: np.moveaxis(a, 1, -1)) if last else (lambda a: a)
        layout = "channels_last" if last else None
        y = prepared(move(x), layout=layout, residual=move(residual))
        assert_close(np.maximum(expected + residual, 0), np.moveaxis(y, -1, 1) if last else y,
                     scale + np.abs(residual), reduction=w[0].size + 1)
        if prepared._takes_rows(last, spec.bind(x.shape)):  # NCHW pointwise: the pixel-vectorized kernel
            assert not last and k == 1
            continue
        calls = [plan for key, plan in prepared._simd_plans.items() if key[1] == last][0][3]
        assert all(call[-1][8] == inner for call in calls)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,before", [((2, 3, 5, 21), (0, 1, 2)), ((1, 3, 9, 8), (0, 0, 0)),
                                          ((2, 3, 3, 4, 19), (1, 2, 0))])
def test_three_channel_images_copied_channels_last(shape, before, dtype, rng):
    """RGB input: the interleaving copy (vstore_interleaved3) with and without padding, ragged row ends."""
    from numbaconv.api import _copy_channels_last
    x = rng.standard_normal(shape).astype(dtype)
    x5 = x.reshape(shape[:2] + (1,) * (5 - x.ndim) + shape[2:])
    out = np.full((x5.shape[0], *(n + 2 * b for n, b in zip(x5.shape[2:], before)), 3), np.nan, dtype)
    _copy_channels_last(x5, out, before)
    inner = out[:, before[0]:before[0] + x5.shape[2], before[1]:before[1] + x5.shape[3],
                before[2]:before[2] + x5.shape[4]]
    np.testing.assert_array_equal(inner, np.moveaxis(x5, 1, -1))
    assert np.isnan(out).sum() == out.size - inner.size  # nothing written outside the interior


@pytest.mark.parametrize("channels,size,padding,bias,activation,dtype", [
    (16, (9, 13), 1, True, "relu6", np.float32),    # interior 13 wide: three 4-pixel steps and a 1-pixel tail
    (24, (6, 7), 1, False, None, np.float32),       # no bias, interior of 7: one step and 3 tail pixels
    (40, (5, 22), 0, True, "relu", np.float32),     # no padding: every row full height
    (20, (8, 9), 1, True, None, np.float32),        # channels not whole vectors: the pair loop
    (12, (7, 18), 1, True, None, np.float64),       # float64, 4 lanes: 12 channels are whole vectors
])
def test_channels_last_depthwise3x3_rows_match_reference(channels, size, padding, bias, activation, dtype, rng):
    """The channels-last depthwise 3x3 at stride 1: row interiors along the row one channel vector at a
    time (depthwise3x3_row), edges tap by tap, against the float64 oracle."""
    x = (rng.standard_normal((2, channels, *size)) + 0.1).astype(dtype)
    w = (rng.standard_normal((channels, 1, 3, 3)) + 0.1).astype(dtype)
    b = (rng.standard_normal(channels) + 0.1).astype(dtype) if bias else None
    spec = nc.ConvSpec(2, channels, channels, 3, 1, padding, groups=channels, bias=bias)
    prepared = nc.prepare(spec, w, b, activation=activation)
    assert prepared.depthwise3x3
    pads = [(padding, padding)] * 2
    expected = ref.conv(x, w, b, (1, 1), pads, (1, 1), channels)
    magnitude = ref.conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), (1, 1), pads, (1, 1), channels)
    if activation:
        expected = np.clip(expected, 0, 6 if activation == "relu6" else np.inf)
    y = prepared(np.ascontiguousarray(np.moveaxis(x, 1, -1)), layout="NHWC")
    assert_close(expected, np.moveaxis(y, -1, 1), magnitude, 9)


@pytest.mark.parametrize("pixels", [6, 12, 4])
def test_row_split_covers_each_row(pixels):
    small = dispatch.tail_pixels(pixels)
    for width in range(1, 200):
        head, tail = dispatch.row_split(width, pixels)
        rest = width - head - tail
        assert head in (0,) or head >= pixels
        assert tail in (0,) or tail >= small
        assert 0 <= rest and (rest == 0 or head == tail == 0)  # single pixels only for a row no block fits
        assert width <= dispatch.row_work(width, pixels) <= 2 * width + 2 * pixels
        if width >= small and width % 2 == 0 and pixels == 6:  # blocks of 6 and 4 tile every even width
            assert dispatch.row_work(width, pixels) == width
    assert dispatch.row_split(56, 6) == (48, 8) and dispatch.row_split(32, 6) == (24, 8)
    assert dispatch.row_split(30, 6) == (30, 0)  # whole blocks: no tail


@pytest.mark.parametrize("cout,groups", [(16, 1), (24, 3)])  # blocks of 6 pixels (2 vectors), of 12 (1 vector)
@pytest.mark.parametrize("last", [True, False])
def test_simd_rows_of_every_width(cout, groups, last, rng):
    """Every split of a row into main blocks, tail blocks and single pixels, with a residual (read at
    each block's pixels) and an activation, against the float64 reference."""
    cin = 2 * groups
    for width in list(range(1, 21)) + [27, 32, 56]:
        spec = nc.ConvSpec(2, cin, cout, 3, 1, 1, 1, groups, bias=True)
        x = (rng.standard_normal((1, cin, 2, width)) + 0.1).astype(np.float32)
        w = (rng.standard_normal(spec.weight_shape) + 0.1).astype(np.float32)
        b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
        r = rng.standard_normal((1, cout, 2, width)).astype(np.float32)
        prepared = nc.prepare(spec, w, b, activation="relu", kernel="simd")
        expected = np.maximum(ref.conv(x, w, b, 1, [(1, 1), (1, 1)], 1, groups) + r, 0)
        scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), 1, [(1, 1), (1, 1)], 1, groups) + np.abs(r)
        if last:
            y = np.moveaxis(prepared(np.moveaxis(x, 1, -1), layout="NHWC", residual=np.moveaxis(r, 1, -1)), -1, 1)
        else:
            y = prepared(x, residual=r)
        assert_close(expected, y, scale, reduction=w[0].size)


@pytest.mark.parametrize("nd,cin,cout,groups,k,stride,padding,dilation,size,in_place", [
    (2, 5, 16, 1, 3, 1, ((1, 1), (1, 1)), 1, (7, 20), True),      # a row of blocks 6 + 6 + 4 + 4, 5 channels
    (2, 16, 16, 1, 3, 2, ((2, 0), (3, 1)), 1, (9, 23), True),     # asymmetric, stride 2, merged (kw, c_in) rows
    (2, 8, 24, 2, 3, 1, ((4, 5), (5, 4)), 2, (6, 61), True),      # padding wider than the dilated kernel: rows
    (2, 3, 16, 1, 7, 2, ((3, 3), (3, 3)), 1, (11, 61), True),     # and columns that see only padding; a stem
    (1, 6, 16, 1, 5, 1, ((2, 2),), 1, (40,), True),               # conv1d
    (3, 4, 16, 1, 3, 1, ((1, 1), (1, 1), (1, 1)), 1, (4, 5, 14), True),  # conv3d: depth taps skipped too
    (3, 6, 12, 3, 2, 2, ((1, 0), (0, 1), (1, 1)), 2, (5, 6, 9), True),
    # Edge columns wider than the row (one block reaching both sides, or stride > kernel): a padded copy.
    (2, 16, 16, 1, 3, 1, ((1, 1), (1, 1)), 1, (4, 6), False),
    (2, 4, 8, 1, 2, 3, ((3, 3), (2, 6)), 1, (5, 8), False),
])
@pytest.mark.parametrize("last", [True, False])
def test_simd_reads_zero_padding_in_place(nd, cin, cout, groups, k, stride, padding, dilation, size, in_place, last,
                                          rng):
    """Zero padding is skipped inside the SIMD kernel: rows and depths in the padding are left out of the
    reduction, and blocks of pixels that reach the padding columns read a copy of the columns at each end
    of the rows (no padded copy of the input).  Against the float64 reference, on batch 1 and 2,
    channels-last and channels-first input (copied channels-last without padding)."""
    spec = nc.ConvSpec(nd, cin, cout, k, stride, padding, dilation, groups, bias=True)
    w = (rng.standard_normal(spec.weight_shape) + 0.1).astype(np.float32)
    b = (rng.standard_normal(cout) + 0.1).astype(np.float32)
    prepared = nc.prepare(spec, w, b, kernel="simd")
    pads = (0,) * (3 - nd) + tuple(p for p, _ in padding)
    for n in (1, 2):
        x = (rng.standard_normal((n, cin, *size)) + 0.1).astype(np.float32)
        expected = ref.conv(x, w, b, stride, padding, dilation, groups)
        scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), stride, padding, dilation, groups)
        if last:
            y = np.moveaxis(prepared(np.moveaxis(x, 1, -1), layout="channels_last"), -1, 1)
        else:
            y = prepared(x)
        assert_close(expected, y, scale, reduction=w[0].size)
        read_last, before, after, calls, wide, edge = [plan for key, plan in prepared._simd_plans.items()
                                                       if key[0][0] == n and key[1] == last][0]
        assert read_last and not wide and (edge is not None) == in_place
        assert before == ((0, 0, 0) if in_place else pads)
        assert [call[5][1] for call in calls] == [pads if in_place else (0, 0, 0)]


@pytest.mark.parametrize("pixels", [6, 12])
def test_edge_columns_hold_every_block_that_reaches_the_padding(pixels):
    """Each block of a row (dispatch.row_blocks) reads only input columns, or lies wholly in one of the
    edge copy's two column ranges, as the kernel assumes."""
    for width in range(1, 40):
        for k, stride, dilation, before, after in [(3, 1, 1, 1, 1), (3, 2, 1, 1, 0), (5, 1, 2, 4, 4), (2, 3, 1, 3, 5),
                                                   (7, 2, 1, 3, 3), (1, 1, 1, 2, 0)]:
            padded = before + width + after
            out_width = (padded - dilation * (k - 1) - 1) // stride + 1
            if out_width < 1:
                continue
            left, right = dispatch.edge_columns(out_width, pixels, stride, dilation, k, before, width, after)
            assert 0 <= left <= right <= padded
            covered = set()
            for first, count in dispatch.row_blocks(out_width, pixels):
                covered.update(range(first, first + count))
                low, high = first * stride, (first + count - 1) * stride + (k - 1) * dilation
                assert high < padded
                if low >= before and high < before + width:
                    continue
                assert high < left or low >= right, (width, k, stride, first, count, left, right)
            assert covered == set(range(out_width))
