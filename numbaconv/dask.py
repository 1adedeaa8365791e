"""Batch inference over a Dask array chunked along the batch axis (optional extra ``dask``).

Each chunk runs through a numbaconv ``Network`` on whichever worker holds it.  What travels to the workers
is the network's description (the graph and its parameters, plain picklable data), never compiled code:
each worker process builds the Network once, on first use, and Numba's on-disk cache spares it the
compilation when the kernels were compiled there before.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import Graph

_NETWORKS: dict[str, Any] = {}  # per worker process: description key -> built Network


@dataclass(frozen=True)
class NetworkDescription:
    """What a worker needs to build the same Network: the graph, its parameters and the dtype, with a
    content key (computed once, on the client) under which each worker keeps the built Network."""

    graph: Graph
    params: dict
    dtype: str
    key: str

    @classmethod
    def of(cls, graph: Graph, params: dict, dtype: Any) -> "NetworkDescription":
        key = hashlib.sha1(pickle.dumps((graph.name, graph.input.shape, [n.name for n in graph.nodes]))
                           + pickle.dumps(params)).hexdigest()
        return cls(graph, params, str(np.dtype(dtype)), key)

    def build(self):
        from .network import Network
        network = _NETWORKS.get(self.key)
        if network is None:
            network = _NETWORKS[self.key] = Network(self.graph, self.params, self.dtype)
        return network


def describe(network) -> NetworkDescription:
    """The picklable description of a ``Network`` (numbaconv.network)."""
    return NetworkDescription.of(network.graph, network.params, network.dtype)


def _run_chunk(chunk: np.ndarray, description: NetworkDescription) -> np.ndarray:
    return description.build()(np.ascontiguousarray(chunk))


def predict(network, images):
    """``network`` applied to a Dask array of images (N, C, *spatial), chunked along N.

    Returns a lazy Dask array of the outputs with the input's batch chunks (a Network takes any batch).
    Chunks along the other axes are merged first.
    """
    import dask.array as da
    from dask import delayed
    if not isinstance(images, da.Array):
        raise TypeError(f"images must be a dask array, got {type(images).__name__}")
    expected = tuple(network.graph.input.shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {images.shape}")
    if any(len(c) != 1 for c in images.chunks[1:]):
        images = images.rechunk({i: -1 for i in range(1, images.ndim)})
    description = delayed(describe(network), pure=True)  # sent to the cluster once, shared by the chunks
    out_tail = tuple(network.graph.output.shape[1:])
    blocks = [da.from_delayed(delayed(_run_chunk)(images.blocks[i], description), (size, *out_tail),
                              dtype=network.dtype)
              for i, size in enumerate(images.chunks[0])]
    return da.concatenate(blocks, axis=0)
