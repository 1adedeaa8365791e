"""numbaconv: the convolution family on Numba (CPU) and numba.cuda (GPU), with a cost model.

The spec and the cost model import no Numba; the compute API is loaded on first use.
"""
from __future__ import annotations

from .spec import ConvSpec, ConvSpecError

__version__ = "0.1.0"
