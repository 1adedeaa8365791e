"""ConvSpec: normalization, the output-shape formulas, and errors that name the argument."""
import math

import pytest

from numbaconv.spec import ConvSpec, ConvSpecError


def test_normalizes_ints_to_per_dim_tuples():
    s = ConvSpec(2, 8, 16, 3, stride=2, padding=1, dilation=(1, 2))
    assert s.kernel_size == (3, 3) and s.stride == (2, 2) and s.dilation == (1, 2)
    assert s.padding == ((1, 1), (1, 1))
    assert s.weight_shape == (16, 8, 3, 3)


def test_padding_forms():
    assert ConvSpec(2, 1, 1, 3, padding="valid").padding == ((0, 0), (0, 0))
    assert ConvSpec(2, 1, 1, 3, padding=(1, 2)).padding == ((1, 1), (2, 2))
    assert ConvSpec(2, 1, 1, 3, padding=((0, 1), (2, 3))).padding == ((0, 1), (2, 3))
    assert ConvSpec(1, 1, 1, 3, padding="SAME").padding == "same"


@pytest.mark.parametrize("length,k,s,p,d", [(7, 3, 1, 0, 1), (8, 3, 2, 1, 1), (9, 4, 3, 2, 2), (5, 1, 5, 0, 1),
                                            (224, 7, 2, 3, 1), (3, 3, 4, 0, 1)])
def test_output_size_formula(length, k, s, p, d):
    spec = ConvSpec(1, 2, 4, k, s, p, d)
    assert spec.output_shape((3, 2, length)) == (3, 4, (length + 2 * p - d * (k - 1) - 1) // s + 1)


@pytest.mark.parametrize("length,k,s,p,d,op", [(5, 3, 2, 1, 1, 1), (4, 4, 2, 1, 1, 0), (3, 3, 3, 0, 2, 2),
                                               (7, 1, 1, 0, 1, 0)])
def test_transposed_output_size_formula(length, k, s, p, d, op):
    spec = ConvSpec(1, 6, 4, k, s, p, d, groups=2, transposed=True, output_padding=op)
    assert spec.weight_shape == (6, 2, k)
    assert spec.output_shape((1, 6, length)) == (1, 4, (length - 1) * s - 2 * p + d * (k - 1) + op + 1)


@pytest.mark.parametrize("length,k,s,d", [(10, 4, 1, 1), (11, 3, 2, 1), (224, 3, 2, 1), (9, 2, 1, 3), (5, 7, 3, 1)])
def test_same_padding_keeps_ceil_length_over_stride(length, k, s, d):
    spec = ConvSpec(1, 1, 1, k, s, "same", d)
    (before, after), = spec.resolve_padding((length,))
    assert spec.output_spatial((length,)) == (math.ceil(length / s),)
    assert after - before in (0, 1)  # the odd element goes after, as TensorFlow and PyTorch do


@pytest.mark.parametrize("kwargs,words", [
    (dict(in_channels=64, out_channels=32, groups=3), "groups=3 does not divide in_channels=64"),
    (dict(in_channels=6, out_channels=8, groups=3), "groups=3 does not divide out_channels=8"),
    (dict(kernel_size=0), "kernel_size must be >= 1"),
    (dict(stride=(1, 2, 3)), "stride must be an int or 2 ints"),
    (dict(padding=-1), "padding must be >= 0"),
    (dict(padding="full"), "padding must be an int, a tuple, 'same' or 'valid'"),
    (dict(padding_mode="mirror"), "padding_mode must be one of"),
    (dict(transposed=True, padding_mode="reflect"), "padding_mode='reflect' is not supported for a transposed"),
    (dict(transposed=True, stride=2, output_padding=2), "output_padding=(2, 2) must be smaller than stride"),
    (dict(output_padding=1), "output_padding is only meaningful"),
    (dict(ndim=4), "ndim must be 1, 2 or 3"),
    (dict(kernel_size=2.5), "kernel_size must be an integer"),
])
def test_errors_name_the_argument(kwargs, words):
    args = dict(ndim=2, in_channels=4, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ConvSpecError) as info:
        ConvSpec(**args)
    assert words in str(info.value)


def test_shape_errors():
    spec = ConvSpec(2, 4, 8, 5, padding=1)
    with pytest.raises(ConvSpecError, match=r"larger than the padded input 4 \(size 2 \+ padding 1\+1\)"):
        spec.output_shape((1, 4, 2, 9))
    with pytest.raises(ConvSpecError, match="input has 3 channels but the convolution expects in_channels=4"):
        spec.output_shape((1, 3, 9, 9))
    with pytest.raises(ConvSpecError, match=r"input must have shape \(N, C, H, W\)"):
        spec.output_shape((4, 9, 9))
    with pytest.raises(ConvSpecError, match="reflect"):
        ConvSpec(1, 1, 1, 3, padding=3, padding_mode="reflect").output_shape((1, 1, 3))
    assert ConvSpec(1, 1, 1, 3, padding=3, padding_mode="circular").output_shape((1, 1, 3)) == (1, 1, 7)


def test_bind_resolves_plain_integers():
    bound = ConvSpec(2, 3, 5, (3, 4), 2, "same").bind((2, 3, 9, 10))
    assert bound.out_spatial == (5, 5) and bound.batch == 2
    assert bound.pad_before == (1, 1) and bound.pad_after == (1, 1)
