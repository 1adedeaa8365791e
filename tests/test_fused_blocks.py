"""The pointwise -> depthwise -> pointwise chain kernel against the float64 reference, layer by layer."""
import numpy as np
import pytest

import numbaconv as nc
from numbaconv.fused_blocks import (MIN_BAND_ROWS, PreparedConvMaxPool, PreparedPointwiseDepthwisePointwise,
                                   chain_fits)
from numbaconv.kernels.cpu.fused_blocks import RESIDUAL_MIN_REDUCTION
from numbaconv.kernels.cpu.simd import VECTOR_BYTES

from . import reference as ref
from .conftest import assert_close


def _clip(y, activation):
    if activation is None:
        return y
    low, high = {"relu": (0, np.inf), "relu6": (0, 6)}.get(activation, activation)
    return np.clip(y, low, high)


def _chain_reference(x_nchw, weights, biases, stride, activations, residual=None):
    """float64 NCHW result of the three convolutions, and the |x||w| scale for the tolerance."""
    c = weights[1].shape[0]
    y, scale = x_nchw, np.abs(x_nchw)
    for i, (w, b) in enumerate(zip(weights, biases)):
        pads, s, g = ([(1, 1), (1, 1)], stride, c) if i == 1 else ([(0, 0), (0, 0)], 1, 1)
        y = ref.conv(y, w, b, s, pads, 1, g)
        scale = ref.conv(scale, np.abs(w), np.abs(b), s, pads, 1, g)
        if i == 2 and residual is not None:
            y, scale = y + residual, scale + np.abs(residual)
        y = _clip(y, activations[i])
    return y, scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c_in,c_mid,c_out,size,stride,activations,threads", [
    (1, 16, 96, 24, (17, 23), 2, ("relu6", "relu6", None), 2),  # MobileNetV2-like, odd sizes, bands
    (2, 24, 144, 24, (9, 9), 1, ("relu6", "relu6", None), 2),   # narrow: several rows per pointwise run
    (1, 5, 13, 7, (30, 11), 1, ("relu", None, "relu"), 4),      # ShuffleNet v2 branch, ragged channels, 4 bands
    (3, 8, 20, 9, (11, 12), 2, ((-0.5, 0.7), "relu", None), 1),  # a clip, one thread: whole images
    (1, 1, 8, 1, (1, 1), 1, (None, None, None), 2),             # one pixel, one channel
    (2, 12, 40, 12, (6, 3), 2, ("relu6", None, "relu6"), 3),     # stride larger than the map's width allows
    (1, 16, 40, 12, (6, 5), 1, ("relu6", "relu6", None), 2),     # a short map: parts of the expanded channels
    (1, 9, 72, 11, (7, 7), 1, ("relu", None, None), 3),         # 7x7 at batch 1, three parts
    (1, 8, 48, 24, (1, 5), 2, ("relu6", "relu6", None), 2),     # 3-vector blocks on a 3-pixel run
    (2, 16, 48, 32, (13, 10), 1, ("relu6", None, "relu"), 2),   # the residual added by the projection itself
    (1, 16, 24, 32, (9, 9), 1, ("relu6", None, "relu"), 2),     # ... not over a reduction this short
])
def test_chain_matches_reference(n, c_in, c_mid, c_out, size, stride, activations, threads, dtype, rng):
    specs = (nc.ConvSpec(2, c_in, c_mid, 1, bias=True),
             nc.ConvSpec(2, c_mid, c_mid, 3, stride, 1, groups=c_mid, bias=True),
             nc.ConvSpec(2, c_mid, c_out, 1, bias=True))
    weights = [(rng.standard_normal(s.weight_shape) * 0.5 + 0.05).astype(dtype) for s in specs]
    biases = [(rng.standard_normal(s.out_channels) + 0.1).astype(dtype) for s in specs]
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, activations)
    x = (rng.standard_normal((n, c_in, *size)) + 0.1).astype(dtype)
    shape = (n, *size, c_in)
    # parts where the map gives no thread a band and the expansion has two channel blocks or more
    short = n * (chain.output_shape(shape)[1] // MIN_BAND_ROWS) < threads
    expansion_blocks = chain.packed[0].shape[0]
    if c_out == 24:  # no padding: 3-vector blocks (pointwise_pixels3), as MobileNetV2's 24-channel projections
        assert chain.packed[6].shape[0] * chain.packed[6].shape[2] == 24
    if c_out == 32:  # 2-vector blocks: the kernel adds a residual in the projection over c_mid-long reductions
        assert chain.packed[6].shape[2] == 2 * VECTOR_BYTES // np.dtype(dtype).itemsize
        assert (chain.packed[6].shape[1] >= RESIDUAL_MIN_REDUCTION) == (c_mid >= RESIDUAL_MIN_REDUCTION)
    assert chain.kernel_for(shape, threads) == ("parts" if short and n < threads and expansion_blocks > 1 else "bands")
    expected, scale = _chain_reference(x, weights, biases, stride, activations)
    reduction = c_in + 9 + c_mid
    y = chain(np.ascontiguousarray(np.moveaxis(x, 1, -1)), threads=threads)
    assert_close(expected, np.moveaxis(y, -1, 1), 4 * scale, reduction)
    # A channel slice of a wider array is read in place, a residual is summed before the last clamp.
    wide = np.concatenate([rng.standard_normal((n, *size, 3)).astype(dtype), np.moveaxis(x, 1, -1)], axis=-1)
    residual = rng.standard_normal(y.shape).astype(dtype)
    expected, scale = _chain_reference(x, weights, biases, stride, activations, np.moveaxis(residual, -1, 1))
    out = np.full(y.shape, np.nan, dtype)
    assert chain(wide[..., 3:], residual=residual, out=out, threads=threads) is out
    assert_close(expected, np.moveaxis(out, -1, 1), 4 * scale, reduction)
    # The runner (a network's per-shape call) reads the wider array from channel 3 itself.
    wide = np.ascontiguousarray(wide)
    runner = chain.runner(wide.shape, threads, residual=True, x_start=3)
    assert_close(expected, np.moveaxis(runner(wide, residual), -1, 1), 4 * scale, reduction)
    in_place = residual.copy()  # the output written over the residual
    assert chain(wide[..., 3:], residual=in_place, out=in_place, threads=threads) is in_place
    assert_close(expected, np.moveaxis(in_place, -1, 1), 4 * scale, reduction)
    # Rows that do not continue one pixel stride (a spatially strided view) take one run per row.
    sparse = np.zeros((n, size[0], 2 * size[1], c_in), dtype)
    sparse[:, :, ::2] = np.moveaxis(x, 1, -1)
    expected, scale = _chain_reference(x, weights, biases, stride, activations)
    assert_close(expected, np.moveaxis(chain(sparse[:, :, ::2], threads=threads), -1, 1), 4 * scale, reduction)


def test_chain_refuses_what_it_cannot_compute(rng):
    dense = nc.ConvSpec(2, 8, 8, 3, padding=1)
    pointwise = nc.ConvSpec(2, 8, 8, 1)
    depthwise = nc.ConvSpec(2, 8, 8, 3, padding=1, groups=8)
    assert chain_fits(pointwise, depthwise, pointwise, (None, None, None)) is None
    assert "depthwise" in chain_fits(pointwise, dense, pointwise, (None, None, None))
    assert chain_fits(dense, depthwise, pointwise, (None, None, None)) is None  # a dense KxK first stage
    grouped = nc.ConvSpec(2, 8, 8, 3, padding=1, groups=2)
    assert "expand" in chain_fits(grouped, depthwise, pointwise, (None, None, None))
    assert "project" in chain_fits(pointwise, depthwise, dense, (None, None, None))
    assert "activations" in chain_fits(pointwise, depthwise, pointwise, ("hardswish", None, None))
    reflect = nc.ConvSpec(2, 8, 8, 3, padding=1, groups=8, padding_mode="reflect")
    assert "zero padding" in chain_fits(pointwise, reflect, pointwise, (None,) * 3)
    weights = [np.ones(s.weight_shape, np.float32) for s in (pointwise, depthwise, pointwise)]
    chain = PreparedPointwiseDepthwisePointwise((pointwise, depthwise, pointwise), weights, (None,) * 3)
    with pytest.raises(nc.ConvSpecError, match=r"input must be a float32 array \(N, H, W, 8\)"):
        chain(np.ones((1, 4, 4, 7), np.float32))
    with pytest.raises(nc.ConvSpecError, match="residual must be"):
        chain(np.ones((1, 4, 4, 8), np.float32), residual=np.ones((1, 4, 4, 7), np.float32))
    with pytest.raises(nc.ConvSpecError, match="weight must have shape"):
        PreparedPointwiseDepthwisePointwise((pointwise, depthwise, pointwise),
                                            (weights[0], np.ones((8, 8, 3, 3), np.float32), weights[2]), (None,) * 3)
    with pytest.raises(nc.ConvSpecError, match="channels 3..11 inside it"):
        chain.runner((1, 4, 4, 8), x_start=3)
    runner = chain.runner((1, 4, 4, 8))
    with pytest.raises(nc.ConvSpecError, match="the runner takes"):
        runner(np.ones((1, 4, 5, 8), np.float32))
    with pytest.raises(nc.ConvSpecError, match="the runner takes"):
        runner(np.ones((1, 4, 4, 8), np.float64))
    with pytest.raises(nc.ConvSpecError, match="no other"):
        runner(np.ones((1, 4, 4, 8), np.float32), np.ones((1, 4, 4, 8), np.float32))


@pytest.mark.parametrize("c_out,result_first,stride,n", [(13, False, 1, 2), (16, True, 2, 2), (58, False, 1, 2),
                                                        (58, True, 1, 1), (40, False, 2, 1)])  # n=1: parts
def test_chain_stores_shufflenet_v2_concat_and_shuffle(c_out, result_first, stride, n, rng):
    specs = (nc.ConvSpec(2, c_out, c_out, 1, bias=True),
             nc.ConvSpec(2, c_out, c_out, 3, stride, 1, groups=c_out, bias=True),
             nc.ConvSpec(2, c_out, c_out, 1, bias=True))
    weights = [(rng.standard_normal(s.weight_shape) * 0.5).astype(np.float32) for s in specs]
    biases = [rng.standard_normal(c_out).astype(np.float32) for _ in specs]
    activations = ("relu", None, "relu")
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, activations)
    x = rng.standard_normal((n, 9, 11, 2 * c_out)).astype(np.float32)
    assert chain.kernel_for((n, 9, 11, c_out), 2) == ("parts" if n == 1 else "bands")
    branch_in = x[..., c_out:]                        # the channel split's second half, read in place
    result = chain(branch_in, threads=2)
    kept = x[..., :c_out] if stride == 1 else rng.standard_normal(result.shape).astype(np.float32)
    parts = [result, kept] if result_first else [kept, result]
    expected = ref.channel_shuffle(np.moveaxis(np.concatenate(parts, axis=-1), -1, 1), 2)
    y = chain(branch_in, interleave_with=kept, result_first=result_first, threads=2)
    np.testing.assert_array_equal(np.moveaxis(y, -1, 1), expected)
    with pytest.raises(nc.ConvSpecError, match="interleave_with must be"):
        chain(branch_in, interleave_with=kept[..., 1:])
    # The runner reads both halves from the unsplit arrays, from their channels c_out and 0.
    other = x if stride == 1 else np.concatenate([kept, kept], axis=-1)
    runner = chain.runner(x.shape, 2, joined=("interleave", other.shape, result_first), x_start=c_out)
    np.testing.assert_array_equal(runner(x, other), y)
    with pytest.raises(nc.ConvSpecError, match="the runner takes"):
        runner(x, other[..., 1:])
    with pytest.raises(nc.ConvSpecError, match="joined must be"):
        chain.runner(x.shape, joined=("interleave", other.shape[:3] + (c_out - 1,), result_first), x_start=c_out)


@pytest.mark.parametrize("c_in,c_mid,c_out,g1,g2,shuffle,stride,n", [
    (240, 60, 240, 3, 3, 3, 1, 2),   # ShuffleNet v1 (g=3) unit: blocks of 16 straddle the groups of 20
    (24, 60, 216, 1, 3, 0, 2, 2),    # its stage-2 first unit: a dense expansion, stride 2
    (32, 48, 64, 4, 2, 4, 1, 2),     # different groups on each side of the shuffle
    (240, 60, 240, 3, 3, 3, 1, 1),   # batch 1: parts of the expanded channels, the shuffle across them
    (24, 60, 216, 1, 3, 0, 2, 1),
    (480, 120, 480, 3, 3, 3, 1, 2),  # stage 3: groups of 40 as blocks of 24 then 16 (the expansion's tail)
    (480, 120, 480, 3, 3, 3, 1, 1),  # ... and on one block width in parts
    (80, 40, 80, 1, 1, 0, 2, 2),     # a dense 40-channel expansion, tail and all, at stride 2
])
def test_chain_with_grouped_pointwise_and_shuffle(c_in, c_mid, c_out, g1, g2, shuffle, stride, n, rng):
    specs = (nc.ConvSpec(2, c_in, c_mid, 1, groups=g1, bias=True),
             nc.ConvSpec(2, c_mid, c_mid, 3, stride, 1, groups=c_mid, bias=True),
             nc.ConvSpec(2, c_mid, c_out, 1, groups=g2, bias=True))
    weights = [(rng.standard_normal(s.weight_shape) * 0.5 + 0.05).astype(np.float32) for s in specs]
    biases = [(rng.standard_normal(s.out_channels) + 0.1).astype(np.float32) for s in specs]
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, ("relu", None, "relu"), shuffle_groups=shuffle)
    x = (rng.standard_normal((n, c_in, 9, 10)) + 0.1).astype(np.float32)
    assert chain.kernel_for((n, 9, 10, c_in), 2) == ("parts" if n == 1 else "bands")
    lanes = VECTOR_BYTES // 4
    if c_mid // g1 == 5 * lanes:  # 3 vectors then 2 per group for the bands; one width for the parts
        assert chain.banded[0].shape[2] == 3 * lanes and chain.banded[10].shape[0] == g1
        assert chain.packed[10].shape[0] == 0
    y, scale = x, np.abs(x)
    for i, (spec, w, b) in enumerate(zip(specs, weights, biases)):
        pads = [(1, 1), (1, 1)] if i == 1 else [(0, 0), (0, 0)]
        y = ref.conv(y, w, b, spec.stride, pads, 1, spec.groups)
        scale = ref.conv(scale, np.abs(w), np.abs(b), spec.stride, pads, 1, spec.groups)
        if i == 0:
            y = np.maximum(y, 0)
            if shuffle:
                y, scale = ref.channel_shuffle(y, shuffle), ref.channel_shuffle(scale, shuffle)
    residual = rng.standard_normal((n, *y.shape[2:], c_out)).astype(np.float32) if stride == 1 else None
    if residual is not None:  # ShuffleNet's relu(x + branch)
        y, scale = y + np.moveaxis(residual, -1, 1), scale + np.abs(np.moveaxis(residual, -1, 1))
    out = chain(np.ascontiguousarray(np.moveaxis(x, 1, -1)), residual=residual, threads=2)
    assert_close(np.maximum(y, 0), np.moveaxis(out, -1, 1), 4 * scale, c_in + 9 + c_mid)


@pytest.mark.parametrize("kept_channels,result_first,n", [(24, False, 2), (13, True, 2), (8, False, 2), (13, False, 1)])
def test_chain_stores_a_concat(kept_channels, result_first, n, rng):
    """ShuffleNet v1's downsampling unit: concat([avgpool(x), branch]) written by the chain's final pass."""
    specs = (nc.ConvSpec(2, 24, 60, 1, groups=3, bias=True),
             nc.ConvSpec(2, 60, 60, 3, 2, 1, groups=60, bias=True),
             nc.ConvSpec(2, 60, 216, 1, groups=3, bias=True))
    weights = [(rng.standard_normal(s.weight_shape) * 0.5).astype(np.float32) for s in specs]
    biases = [rng.standard_normal(s.out_channels).astype(np.float32) for s in specs]
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, ("relu", None, "relu"), shuffle_groups=3)
    x = rng.standard_normal((n, 11, 9, 24)).astype(np.float32)
    assert chain.kernel_for(x.shape, 2) == ("parts" if n == 1 else "bands")
    result = chain(x, threads=2)
    wide = rng.standard_normal((*result.shape[:3], kept_channels + 5)).astype(np.float32)
    kept = wide[..., 5:]  # a channel slice, read in place
    parts = [result, kept] if result_first else [kept, result]
    y = chain(x, concat_with=kept, result_first=result_first, threads=2)
    np.testing.assert_array_equal(y, np.concatenate(parts, axis=-1))
    with pytest.raises(nc.ConvSpecError, match="concat_with must be"):
        chain(x, concat_with=kept[:, 1:])
    runner = chain.runner(x.shape, 2, joined=("concat", wide.shape, result_first), joined_start=5)
    np.testing.assert_array_equal(runner(x, wide), y)
    with pytest.raises(nc.ConvSpecError, match="the runner takes"):
        runner(x, kept)  # not C-contiguous


@pytest.mark.parametrize("n,size,include_pad,result_first,threads,dtype,kernel", [
    (2, (11, 9), True, False, 2, np.float32, "bands"),  # odd sizes: the last windows reach into the padding
    (1, (5, 13), False, True, 2, np.float32, "parts"),  # padding not counted
    (3, (7, 8), True, True, 1, np.float64, "bands"),
    (2, (6, 12), False, False, 3, np.float32, "parts"),
])
def test_chain_stores_its_input_pooled_beside_the_result(n, size, include_pad, result_first, threads, dtype, kernel,
                                                         rng):
    """concat([avgpool(x), branch]) with the average taken in the final pass over the depthwise stage's
    windows (ShuffleNet v1's downsampling unit with its pooling absorbed), against the float64 oracle."""
    c_in = 27  # 3 vectors and a ragged tail of pooled channels
    specs = (nc.ConvSpec(2, c_in, 48, 1, groups=3, bias=True),
             nc.ConvSpec(2, 48, 48, 3, 2, 1, groups=48, bias=True),
             nc.ConvSpec(2, 48, 30, 1, groups=3, bias=True))
    weights = [rng.standard_normal(s.weight_shape).astype(dtype) for s in specs]
    biases = [rng.standard_normal(s.out_channels).astype(dtype) for s in specs]
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, ("relu", None, "relu"), shuffle_groups=3)
    wide = rng.standard_normal((n, *size, c_in + 4)).astype(dtype)
    x = wide[..., 4:]  # not contiguous: a channel slice
    assert chain.kernel_for(x.shape, threads) == kernel
    branch = chain(x, threads=threads)
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": ((1, 1), (1, 1)), "count_include_pad": include_pad}
    pooled = np.moveaxis(ref._pool("avgpool", np.moveaxis(x.astype(np.float64), -1, 1), attrs,
                                   (n, c_in, *branch.shape[1:3])), 1, -1)
    expected = np.concatenate([branch, pooled] if result_first else [pooled, branch], axis=-1)
    y = chain(x, concat_pooled=True, count_include_pad=include_pad, result_first=result_first, threads=threads)
    assert_close(expected, y, np.abs(expected) + 1, 9)
    side = slice(30, None) if result_first else slice(0, c_in)
    np.testing.assert_array_equal(y[..., slice(0, 30) if result_first else slice(c_in, None)], branch)
    runner = chain.runner(wide.shape, threads, joined=("pooled", include_pad, result_first), x_start=4)
    np.testing.assert_array_equal(runner(wide), y)
    assert np.abs(y[..., side]).max() > 0
    with pytest.raises(nc.ConvSpecError, match="concat_pooled takes"):
        chain(x, concat_pooled=True, concat_with=pooled.astype(dtype))
    with pytest.raises(nc.ConvSpecError, match="the runner takes"):
        runner(wide, wide)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c_in,c_mid,c_out,k,stride,padding,dilation,size,dw_stride,threads", [
    (1, 3, 32, 16, 3, 2, 1, 1, (29, 33), 1, 2),    # MobileNet's stem and first separable block
    (2, 3, 40, 13, 3, 2, 1, 1, (18, 15), 2, 3),    # even sizes, ragged output channels, parts
    (1, 5, 16, 7, 5, 1, 4, 2, (13, 9), 1, 2),      # 5x5, dilation 2
    (3, 2, 8, 4, 2, 3, 0, 1, (20, 11), 1, 1),      # stride larger than the kernel, no padding
    (1, 1, 8, 1, 3, 1, (0, 2), 1, (7, 6), 1, 2),   # one channel in and out, padding on one side
])
def test_chain_with_a_windowed_first_stage(n, c_in, c_mid, c_out, k, stride, padding, dilation, size, dw_stride,
                                           threads, dtype, rng):
    specs = (nc.ConvSpec(2, c_in, c_mid, k, stride, padding, dilation, bias=True),
             nc.ConvSpec(2, c_mid, c_mid, 3, dw_stride, 1, groups=c_mid, bias=True),
             nc.ConvSpec(2, c_mid, c_out, 1, bias=True))
    weights = [(rng.standard_normal(s.weight_shape) * 0.5 + 0.05).astype(dtype) for s in specs]
    biases = [(rng.standard_normal(s.out_channels) + 0.1).astype(dtype) for s in specs]
    activations = ("relu6", "relu", None)
    chain = PreparedPointwiseDepthwisePointwise(specs, weights, biases, activations)
    x = (rng.standard_normal((n, c_in, *size)) + 0.1).astype(dtype)
    y, scale = x, np.abs(x)
    for spec, w, b, activation in zip(specs, weights, biases, activations):
        pads = spec.resolve_padding(y.shape[2:])
        y = _clip(ref.conv(y, w, b, spec.stride, pads, spec.dilation, spec.groups), activation)
        scale = ref.conv(scale, np.abs(w), np.abs(b), spec.stride, pads, spec.dilation, spec.groups)
    reduction = c_in * k * k + 9 + c_mid
    x_last = np.moveaxis(x, 1, -1)
    assert chain.output_shape(x_last.shape) == (n, *y.shape[2:], c_out)
    short = n * (y.shape[2] // MIN_BAND_ROWS) < threads and n < threads and chain.packed[0].shape[0] > 1
    assert chain.kernel_for(x_last.shape, threads) == ("parts" if short else "bands")
    # a channels-last view of the NCHW array (not contiguous): row bands stage its rows in place, parts read
    # a padded copy
    assert_close(y, np.moveaxis(chain(x_last, threads=threads), -1, 1), 4 * scale, reduction)
    assert_close(y, np.moveaxis(chain(np.ascontiguousarray(x_last), threads=threads), -1, 1), 4 * scale, reduction)
    runner = chain.runner(x_last.shape, threads)
    assert_close(y, np.moveaxis(runner(np.ascontiguousarray(x_last)), -1, 1), 4 * scale, reduction)
    if short:
        with pytest.raises(nc.ConvSpecError, match="the runner takes"):
            runner(x_last)
    else:
        assert_close(y, np.moveaxis(runner(x_last), -1, 1), 4 * scale, reduction)


def _conv_maxpool_reference(x, w, b, spec, activation, pool):
    """float64 NCHW maxpool(activation(conv)) and the |x||w| scale, by the reference's definitions."""
    kernel, stride, pads, ceil_mode = pool
    conv_pads = spec.resolve_padding(x.shape[2:])
    y = _clip(ref.conv(x, w, b, spec.stride, conv_pads, spec.dilation), activation)
    scale = ref.conv(np.abs(x), np.abs(w), np.abs(b), spec.stride, conv_pads, spec.dilation)
    rounding = np.ceil if ceil_mode else np.floor
    shape = (*y.shape[:2], *(int(rounding((length + p[0] + p[1] - kk) / s)) + 1
                             for length, kk, s, p in zip(y.shape[2:], kernel, stride, pads)))
    attrs = {"kernel": kernel, "stride": stride, "padding": pads}
    return ref._pool("maxpool", y, attrs, shape), ref._pool("maxpool", scale, attrs, shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c_in,c_out,k,stride,padding,size,pool,activation,threads,dilation", [
    (1, 3, 24, 3, 2, 1, (45, 38), ((3, 3), (2, 2), ((1, 1), (1, 1)), False), "relu", 2, 1),   # ShuffleNet's stem
    (2, 3, 64, 7, 2, 3, (33, 29), ((3, 3), (2, 2), ((1, 1), (1, 1)), False), "relu", 3, 1),   # ResNet's stem
    (3, 5, 13, 3, 1, 0, (17, 9), ((2, 2), (2, 2), ((0, 0), (0, 0)), True), None, 2, 1),      # ceil mode, ragged C
    (1, 2, 20, 3, 3, 1, (30, 31), ((3, 2), (2, 3), ((1, 1), (0, 0)), True), (-0.5, 0.5), 1, 1),
    (1, 1, 1, 1, 1, 0, (9, 9), ((3, 3), (4, 4), ((1, 1), (1, 1)), False), "relu6", 2, 1),    # pool stride > window
    (2, 3, 16, 3, (2, 1), "same", (23, 17), ((3, 3), (2, 2), ((1, 1), (1, 1)), False), "relu", 2, 1),  # uneven pads
    (1, 4, 9, 3, 1, 2, (19, 21), ((3, 3), (2, 2), ((0, 0), (0, 0)), False), None, 2, 2),  # dilation 2
])
def test_conv_maxpool_matches_reference(n, c_in, c_out, k, stride, padding, size, pool, activation, threads, dilation,
                                        dtype, rng):
    spec = nc.ConvSpec(2, c_in, c_out, k, stride, padding, dilation, bias=True)
    w = (rng.standard_normal(spec.weight_shape) * 0.5).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    fused = PreparedConvMaxPool(spec, w, b, activation, pool)
    x = rng.standard_normal((n, c_in, *size)).astype(dtype)
    expected, scale = _conv_maxpool_reference(x, w, b, spec, activation, pool)
    x_last = np.moveaxis(x, 1, -1)  # a strided view: its rows staged in place (planes interleaved for 3 channels)
    assert fused.output_shape(x_last.shape) == (n, *expected.shape[2:], c_out)
    assert_close(expected, np.moveaxis(fused(x_last, threads=threads), -1, 1), 4 * scale, c_in * k * k)
    assert_close(expected, np.moveaxis(fused(np.ascontiguousarray(x_last), threads=threads), -1, 1), 4 * scale,
                 c_in * k * k)
    wide = np.zeros((n, *x_last.shape[1:3], c_in + 2), dtype)  # channels of a wider array: a third stride pattern
    wide[..., 1:c_in + 1] = x_last
    assert_close(expected, np.moveaxis(fused(wide[..., 1:c_in + 1], threads=threads), -1, 1), 4 * scale, c_in * k * k)
    flipped = np.ascontiguousarray(x_last[:, ::-1])[:, ::-1]  # negative strides: copied first
    assert_close(expected, np.moveaxis(fused(flipped, threads=threads), -1, 1), 4 * scale, c_in * k * k)


def test_conv_maxpool_refuses_what_it_cannot_compute(rng):
    spec = nc.ConvSpec(2, 4, 8, 3, padding=1)
    w = np.ones(spec.weight_shape, np.float32)
    pool = ((3, 3), (2, 2), ((1, 1), (1, 1)), False)
    with pytest.raises(nc.ConvSpecError, match="dense 2D convolution"):
        PreparedConvMaxPool(nc.ConvSpec(2, 4, 8, 3, padding=1, groups=2), np.ones((8, 2, 3, 3), np.float32),
                            None, None, pool)
    with pytest.raises(nc.ConvSpecError, match="padding smaller than its window"):
        PreparedConvMaxPool(spec, w, None, None, ((2, 2), (2, 2), ((2, 2), (2, 2)), False))
    with pytest.raises(nc.ConvSpecError, match="activation must be"):
        PreparedConvMaxPool(spec, w, None, "hardswish", pool)
    with pytest.raises(nc.ConvSpecError, match="weight must have shape"):
        PreparedConvMaxPool(spec, w[:, :3], None, None, pool)
    fused = PreparedConvMaxPool(spec, w, None, None, pool)
    with pytest.raises(nc.ConvSpecError, match=r"input must be a float32 array \(N, H, W, 4\)"):
        fused(np.ones((1, 8, 8, 3), np.float32))
    wide = PreparedConvMaxPool(spec, w, None, None, ((5, 5), (1, 1), ((0, 0), (0, 0)), False))
    with pytest.raises(nc.ConvSpecError, match="larger than the padded convolution output"):
        wide(np.ones((1, 3, 8, 4), np.float32))


def test_block_shapes_compute_the_fewest_multiply_adds():
    """packing's choice of pointwise block (2 or 3 vectors of 8 lanes here) and of group slots in the ring."""
    from numbaconv.packing import cheapest_block, expansion_layout
    assert cheapest_block(24, 1, 144, 8) == 24     # MobileNetV2's projection: 24 channels, no padding
    assert cheapest_block(64, 1, 16, 8) == 16      # 64 = 4 x 16; 3 x 24 would pad 8
    assert cheapest_block(96, 1, 16, 8) == 24      # a tie takes 3 vectors
    assert cheapest_block(60, 3, 80, 8) == 16      # blocks of 24 would straddle more groups of 20
    assert expansion_layout(60, 3, 80, 8) == (24, 24, 0)   # ShuffleNet v1: each group of 20 in its own 24 slots
    assert expansion_layout(120, 3, 160, 8) == (24, 0, 16)  # groups of 40 as 24 + 16: no padding
    assert expansion_layout(120, 3, 160, 8, tails=False) == (16, 0, 0)  # else 128 channels straddling once
    assert expansion_layout(240, 3, 320, 8) == (16, 0, 0)   # groups of 80: whole blocks of 16 already
    assert expansion_layout(88, 1, 16, 8) == (24, 0, 16)    # 72 + 16: the shortest tail
    assert expansion_layout(48, 1, 16, 8) == (24, 0, 0)     # one block width computing as little wins


def test_group_rows_fill_whole_register_blocks():
    """Rows computed together: 28-wide maps as 3 rows (84 pixels: whole 6- and 4-pixel blocks) rather than 2
    (56: a ragged end on the 6-pixel blocks); never past GROUP_BYTES of buffers."""
    from numbaconv.fused_blocks import GROUP_BYTES
    lanes = VECTOR_BYTES // 4

    def chain(c_in, c_mid, c_out):
        specs = (nc.ConvSpec(2, c_in, c_mid, 1), nc.ConvSpec(2, c_mid, c_mid, 3, 1, 1, groups=c_mid),
                 nc.ConvSpec(2, c_mid, c_out, 1))
        return PreparedPointwiseDepthwisePointwise(specs, [np.ones(s.weight_shape, np.float32) for s in specs],
                                                   (None, None, None))

    narrow = chain(32, 192, 32)
    if lanes == 8:
        assert narrow._plan((1, 28, 28, 32), 2)[2][6] == 3
    wide = chain(64, 960, 64)
    for width in (7, 14, 56):
        rows = wide._plan((1, width, width, 64), 2)[2][6]
        ring_row = (width + 2) * wide.banded[4].shape[2] * 4
        assert rows == 1 or ((rows - 1) + 4) * ring_row + rows * width * wide.banded[4].shape[2] * 4 <= GROUP_BYTES
