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


def pack_simd(spec: ConvSpec, weight: np.ndarray, bias: np.ndarray | None, block: int) -> tuple[np.ndarray, np.ndarray]:
    """-> weights (G, OB, KD, KH, KW, C_in/G, block) and bias (G * OB * block,) or (0,), zero-padded.

    Each group's C_out/G output channels are padded to OB = ceil(C_out/G / block) whole blocks, so the
    micro-kernel never needs a masked load or store.
    """
    G = spec.groups
    per_group = spec.out_channels // G
    padded = simd_block_channels(spec, block)
    w6 = as_3d_kernel(weight).reshape(G, per_group, spec.in_channels // G, *as_3d_kernel(weight).shape[2:])
    shape = (G, padded // block, *w6.shape[3:], w6.shape[2], block)
    # Zero-filled only where a last block has padding lanes (a fresh zeroed buffer is a pass of its own).
    packed = np.zeros(shape, weight.dtype) if padded != per_group else np.empty(shape, weight.dtype)
    for ob in range(padded // block):  # one strided copy per block of output channels
        c0 = ob * block
        count = min(block, per_group - c0)
        if count > 0:
            packed[:, ob, ..., :count] = w6[:, c0:c0 + count].transpose(0, 3, 4, 5, 2, 1)
    if bias is None:
        return packed, np.zeros(0, weight.dtype)
    padded_bias = np.zeros((G, padded), weight.dtype)
    padded_bias[:, :per_group] = bias.reshape(G, per_group)
    return packed, padded_bias.reshape(-1)


def padded_channel_index(spec: ConvSpec, padded_per_group: int) -> np.ndarray:
    """Position of each real output channel in a buffer whose groups are padded to ``padded_per_group``."""
    per_group = spec.out_channels // spec.groups
    c = np.arange(spec.out_channels, dtype=np.int64)
    return (c // per_group) * padded_per_group + c % per_group


def pack_small_groups(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """(C_out, 4, *k) -> (KD, KH, KW, 4, C_out): for each tap and input channel of a group, the weights of
    every output channel, contiguous (numbaconv.kernels.cpu.direct.conv_small_groups)."""
    return np.ascontiguousarray(as_3d_kernel(weight).transpose(2, 3, 4, 1, 0))
