"""numbaconv: the convolution family on Numba (CPU) and numba.cuda (GPU), with a cost model.

The spec and the cost model import no Numba; the compute API is loaded on first use.
"""
from __future__ import annotations

from .spec import ConvSpec, ConvSpecError

__version__ = "0.1.0"

_NETWORK = {"Network": "network", "random_params": "network", "load_onnx": "onnx_import"}
_API = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
        "depthwise_conv2d", "channel_shuffle", "shuffled_grouped_conv2d", "separable_conv2d",
        "spatially_separable_conv2d", "flattened_conv2d", "prepare", "PreparedConv")


def __getattr__(name: str):
    """Load the compute API (and Numba) only when it is first used."""
    if name in _API:
        from . import api
        return getattr(api, name)
    if name in _NETWORK:
        import importlib
        return getattr(importlib.import_module(f".{_NETWORK[name]}", __name__), name)
    raise AttributeError(f"module 'numbaconv' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API) + list(_NETWORK))


__all__ = ["ConvSpec", "ConvSpecError", *_API, *_NETWORK]
