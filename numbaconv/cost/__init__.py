"""The cost model: MACs, FLOPs, parameters, bytes and receptive fields.  Imports no Numba.

See ``numbaconv.cost.layers`` for the counting convention.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph
from .layers import DTYPE_BYTES, LayerCost, conv_cost, conv_macs, dtype_bytes, node_cost, receptive_field
from .models import MODELS, ModelOptions, build_model
from .variants import VARIANTS, LayerRequest, applicable_variants, build_variant, receptive_extent


@dataclass(frozen=True)
class CostTotal:
    """Totals of a graph.  ``macs``/``flops`` cover conv and linear layers (the papers' count);
    ``other_flops`` the rest (BatchNorm, activations, pooling, adds)."""

    macs: int
    flops: int
    other_flops: int
    params: int
    conv_linear_params: int
    bn_params: int
    bytes: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def graph_cost(graph: Graph, dtype: str = "float32") -> list[LayerCost]:
    """One LayerCost per node, in execution order."""
    return [node_cost(node, dtype) for node in graph.nodes]


def total_cost(costs: list[LayerCost]) -> CostTotal:
    mac_layers = [c for c in costs if c.counts_macs]
    conv_linear = sum(c.weight_params + c.bias_params for c in costs)
    bn = sum(c.bn_params for c in costs)
    return CostTotal(
        macs=sum(c.macs for c in mac_layers), flops=sum(c.flops for c in mac_layers),
        other_flops=sum(c.flops for c in costs if not c.counts_macs), params=conv_linear + bn,
        conv_linear_params=conv_linear, bn_params=bn, bytes=sum(c.bytes for c in costs))


__all__ = ["DTYPE_BYTES", "LayerCost", "CostTotal", "conv_cost", "conv_macs", "dtype_bytes", "node_cost",
           "receptive_field", "MODELS", "ModelOptions", "build_model", "VARIANTS", "LayerRequest",
           "applicable_variants", "build_variant", "receptive_extent", "graph_cost", "total_cost"]
