"""Shared fixtures: a seeded generator, the tolerance rule, and the torch peer when installed."""
import numpy as np
import pytest

# Summation error bound: |computed - exact| <= c * eps * K * sum|x||w| for a K-term dot product.
EPS = {np.dtype(np.float32): np.finfo(np.float32).eps, np.dtype(np.float64): np.finfo(np.float64).eps}


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % 2**32)


def assert_close(expected, actual, scale, reduction):
    """``actual`` (float32/64) equals the float64 ``expected`` within 4*eps*K times the |x|*|w| ``scale``."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = 4 * EPS[actual.dtype] * max(reduction, 1) * np.asarray(scale) + 1e-30
    err = np.abs(actual.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else None
    assert (err <= tol).all(), f"max error {err.max()} at {worst}: tolerance {tol[worst]}"


def torch_or_skip():
    return pytest.importorskip("torch")
