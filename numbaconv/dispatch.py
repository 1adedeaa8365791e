"""Which backend and which kernel runs a convolution: pure decisions, documented and overridable.

Correctness rules come before speed rules: a kernel is only chosen for the specs it computes exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec import ConvSpec

KERNELS = ("direct", "depthwise", "transposed")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Plan:
    """The choice for one spec: ``backend`` ('cpu' or 'cuda'), ``kernel`` family, and why."""

    backend: str
    kernel: str
    reason: str


def choose_kernel(spec: ConvSpec, kernel: str | None = None) -> tuple[str, str]:
    """(kernel family, reason).  ``kernel`` forces a family when it can compute the spec."""
    if spec.transposed:
        natural = ("transposed", "transposed convolution: gather over the inputs that scatter to each output")
    elif spec.groups == spec.in_channels and spec.groups > 1:
        natural = ("depthwise", f"groups == in_channels ({spec.groups}): no channel reduction")
    else:
        natural = ("direct", f"dense or grouped ({spec.groups} groups) convolution")
    if kernel is None or kernel == natural[0]:
        return natural
    if kernel == "direct" and not spec.transposed:
        return ("direct", "forced by the caller")
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
