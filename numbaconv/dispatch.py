"""Which backend and which kernel runs a convolution: pure decisions, documented and overridable.

Correctness rules come before speed rules: a kernel is only chosen for the specs it computes exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import ConvSpec

KERNELS = ("simd", "direct", "depthwise", "transposed")

# Block shapes (pixels, vectors) of numbaconv.kernels.cpu.simd_direct, by vector registers of the ISA.
SIMD_BLOCKS = {16: {2: (6, 2), 1: (12, 1)}, 32: {4: (6, 4), 2: (12, 2), 1: (12, 1)}}


def simd_block(channels_per_group: int, lanes: int, registers: int) -> tuple[int, int]:
    """(pixels, vectors) for a group of ``channels_per_group`` outputs: the widest block it fills."""
    shapes = SIMD_BLOCKS[32 if registers >= 32 else 16]
    for vectors in sorted(shapes, reverse=True):
        if channels_per_group >= vectors * lanes:
            return shapes[vectors]
    return shapes[1]
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Plan:
    """The choice for one spec: ``backend`` ('cpu' or 'cuda'), ``kernel`` family, and why."""

    backend: str
    kernel: str
    reason: str


def choose_kernel(spec: ConvSpec, kernel: str | None = None, lanes: int = 8) -> tuple[str, str]:
    """(kernel family, reason).  ``kernel`` forces a family when it can compute the spec.

    Dense and grouped convolutions take the SIMD micro-kernel unless a group has fewer output channels
    than half a vector (most lanes would compute padding); those take the portable direct kernel.
    """
    per_group = spec.out_channels // spec.groups
    if spec.transposed:
        natural = ("transposed", "transposed convolution: gather over the inputs that scatter to each output")
    elif spec.groups == spec.in_channels and spec.groups > 1:
        natural = ("depthwise", f"groups == in_channels ({spec.groups}): no channel reduction")
    elif 2 * per_group >= lanes:
        natural = ("simd", f"{per_group} output channels per group fill SIMD vectors of {lanes}")
    else:
        natural = ("direct", f"{per_group} output channels per group: too few for {lanes}-lane vectors")
    if kernel is None or kernel == natural[0]:
        return natural
    if kernel in ("direct", "simd") and not spec.transposed:
        return (kernel, "forced by the caller")
    raise ValueError(f"kernel={kernel!r} cannot compute this convolution; the dispatcher would pick "
                     f"{natural[0]!r} ({natural[1]})")


def choose_backend(device: str, input_on_gpu: bool) -> tuple[str, str]:
    """(backend, reason) for ``device`` in {'auto', 'cpu', 'cuda'}."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" or (device == "auto" and input_on_gpu):
        return "cuda", "input already on the GPU" if device == "auto" else "device='cuda' requested"
    if device == "cpu" and input_on_gpu:
        return "cpu", "device='cpu' requested for a GPU input: copied to the host"
    return "cpu", "NumPy input" if device == "auto" else "device='cpu' requested"


def plan(spec: ConvSpec, device: str = "auto", input_on_gpu: bool = False, kernel: str | None = None) -> Plan:
    backend, why_backend = choose_backend(device, input_on_gpu)
    family, why_kernel = choose_kernel(spec, kernel)
    return Plan(backend, family, f"{why_backend}; {why_kernel}")
