"""Weight packing: PyTorch-order weights into each kernel family's order.  Done once per PreparedConv.

All packed weights have three spatial dims (KD, KH, KW); 1D and 2D kernels get leading size-1 dims.
"""
from __future__ import annotations

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
    padded_bias = np.zeros((G, padded), grouped.dtype)
    padded_bias[:, :per_group] = bias.reshape(G, per_group)
    return packed, padded_bias.reshape(-1)


def pack_rows(spec: ConvSpec, weight: np.ndarray, bias: np.ndarray | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """-> weights (OB, C_in, KH, KW, block) and bias (OB * block,) or (0,), the C_out outputs zero-padded
    to OB = ceil(C_out / block) blocks: the order numbaconv.kernels.cpu.simd_rows broadcasts them in.
    One group, 1D or 2D (1D as KH = 1)."""
    w = weight.reshape(weight.shape[:2] + (1,) * (4 - weight.ndim) + weight.shape[2:])
    blocks = -(-spec.out_channels // block)
    padded = np.zeros((blocks * block, *w.shape[1:]), weight.dtype)
    padded[:spec.out_channels] = w
    packed = np.ascontiguousarray(padded.reshape(blocks, block, *w.shape[1:]).transpose(0, 2, 3, 4, 1))
    if bias is None:
        return packed, np.zeros(0, weight.dtype)
    padded_bias = np.zeros(blocks * block, weight.dtype)
    padded_bias[:spec.out_channels] = bias
    return packed, padded_bias


def padded_channel_index(spec: ConvSpec, padded_per_group: int) -> np.ndarray:
    """Position of each real output channel in a buffer whose groups are padded to ``padded_per_group``."""
    per_group = spec.out_channels // spec.groups
    c = np.arange(spec.out_channels, dtype=np.int64)
    return (c // per_group) * padded_per_group + c % per_group


def pack_small_groups(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """(C_out, 4, *k) -> (KD, KH, KW, 4, C_out): for each tap and input channel of a group, the weights of
    every output channel, contiguous (numbaconv.kernels.cpu.direct.conv_small_groups)."""
    return np.ascontiguousarray(as_3d_kernel(weight).transpose(2, 3, 4, 1, 0))


def pack_pw_dw_pw(expand: np.ndarray, expand_bias: np.ndarray | None, taps: np.ndarray, taps_bias: np.ndarray | None,
                  project: np.ndarray, project_bias: np.ndarray | None, block: int) -> tuple[np.ndarray, ...]:
    """The three weights of a pointwise -> depthwise -> pointwise chain for kernels/cpu/fused_blocks.py.

    expand (C_mid, C_in, 1, 1), taps (C_mid, 1, KH, KW), project (C_out, C_mid, 1, 1), biases (C,) or None
    -> expand (C_in, M), expand bias (M,), taps (KH, KW, M), taps bias (M,), project (M, P), project bias
    (P,): M and P are C_mid and C_out rounded up to whole blocks of ``block``, the padding zero (so padded
    channels stay exactly zero through every stage).
    """
    c_mid, c_in = expand.shape[:2]
    c_out = project.shape[0]
    mid, out = -(-c_mid // block) * block, -(-c_out // block) * block
    dtype = expand.dtype

    def padded(values, *shape):
        array = np.zeros(shape, dtype)
        if values is not None:
            array[tuple(slice(0, n) for n in values.shape)] = values
        return array

    return (padded(expand.reshape(c_mid, c_in).T, c_in, mid), padded(expand_bias, mid),
            padded(taps[:, 0].transpose(1, 2, 0), *taps.shape[2:], mid), padded(taps_bias, mid),
            padded(project.reshape(c_out, c_mid).T, mid, out), padded(project_bias, out))
