"""Transposed convolution as stride-1 convolutions: the sub-pixel decomposition.

Along one dimension, output o of a transposed convolution receives input i through tap k when
o + p = i*s + k*d.  The outputs of one phase φ = o mod s (o = q*s + φ) all use the same taps, the k
with (φ + p - k*d) divisible by s, and read input q + (φ + p - k*d)/s.  Listed from the largest such k
down, those taps read inputs q + first, q + first + d', q + first + 2d', ... with d' = d / gcd(s, d): a
plain stride-1 correlation with dilation d' whose kernel is the phase's taps in reverse.

So a transposed convolution with stride s runs as prod(s) ordinary convolutions on the SIMD kernel,
each writing every s-th output through strides, with no multiplications by inserted zeros.  A phase
with no taps along some dimension (kernel smaller than the stride) receives only the bias.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from itertools import product

import numpy as np

from .spec import ConvSpec


@dataclass(frozen=True)
class Phase:
    """One output phase: outputs o = q*s + offset (per dim), computed as a stride-1 convolution."""

    offset: tuple[int, ...]          # φ per spatial dim
    taps: tuple[tuple[int, ...], ...]  # per dim, the original tap indices in sub-kernel order
    first: tuple[int, ...]           # per dim, the input index that q = 0 reads through sub-tap 0
    dilation: tuple[int, ...]        # per dim, d' = d / gcd(s, d)

    @property
    def empty(self) -> bool:
        return any(len(t) == 0 for t in self.taps)


@functools.lru_cache(maxsize=256)  # specs are frozen: one-off public calls skip the re-derivation
def phases(spec: ConvSpec, pad_before: tuple[int, ...]) -> tuple[Phase, ...]:
    """The prod(stride) phases of a transposed ``spec`` with leading padding ``pad_before`` (its p)."""
    per_dim = []
    for k, s, d, p in zip(spec.kernel_size, spec.stride, spec.dilation, pad_before):
        options = []
        for phi in range(s):
            taps = tuple(t for t in reversed(range(k)) if (phi + p - t * d) % s == 0)
            first = (phi + p - taps[0] * d) // s if taps else 0
            options.append((phi, taps, first, d // math.gcd(s, d)))
        per_dim.append(options)
    return tuple(Phase(*(tuple(c[i] for c in combo) for i in range(4))) for combo in product(*per_dim))


def phase_weight(spec: ConvSpec, weight: np.ndarray, phase: Phase) -> np.ndarray:
    """The phase's ordinary-convolution weight as a (G, C_out/G, C_in/G, KD', KH', KW') strided view of
    PyTorch's transposed (C_in, C_out/G, *kernel): a phase's taps step evenly down the kernel (they are
    the k = c mod s/gcd(s, d), largest first), so each is a slice with a negative step, not a copy."""
    g = spec.groups
    cgi, cgo = spec.in_channels // g, spec.out_channels // g
    taps = tuple(slice(t[0], (t[-1] - 1) if t[-1] > 0 else None, (t[1] - t[0]) if len(t) > 1 else -1)
                 for t in phase.taps)
    w = weight.reshape(g, cgi, cgo, *weight.shape[2:])[(slice(None),) * 3 + taps]
    w = w.swapaxes(1, 2)  # (G, CGO, CGI, *k')
    return w.reshape(w.shape[:3] + (1,) * (6 - w.ndim) + w.shape[3:])


@functools.lru_cache(maxsize=1024)
def phase_spec(spec: ConvSpec, phase: Phase) -> ConvSpec:
    """The ordinary convolution one non-empty phase runs (stride 1, no padding: the caller offsets)."""
    return ConvSpec(spec.ndim, spec.in_channels, spec.out_channels, tuple(len(t) for t in phase.taps), 1, 0,
                    phase.dilation, spec.groups, bias=spec.bias)


def phase_extent(phase: Phase, out_size: tuple[int, ...], stride: tuple[int, ...]):
    """(outputs per dim, lowest and highest input index read per dim) of a phase for one output size."""
    count = tuple(max(0, -(-(o - f) // s)) for o, f, s in zip(out_size, phase.offset, stride))
    low = phase.first
    high = tuple(f + q - 1 + (len(t) - 1) * d for f, q, t, d in zip(phase.first, count, phase.taps, phase.dilation))
    return count, low, high
