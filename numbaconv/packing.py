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
