"""Blocks of the model catalogue: shapes and costs worked out by hand per case."""
import pytest

from numbaconv.cost import blocks, graph_cost, total_cost
from numbaconv.graph import GraphBuilder


def block_cost(shape, build):
    g = GraphBuilder("block", shape)
    out = build(g, g.input)
    costs = graph_cost(g.build(out))
    return out, costs, total_cost(costs)


def conv_macs(costs):
    return [c.macs for c in costs if c.op == "conv"]


def test_resnet_basic_with_projection():
    out, costs, total = block_cost((1, 64, 56, 56), lambda g, x: blocks.resnet_basic(g, x, 128, stride=2))
    assert out.shape == (1, 128, 28, 28)
    hw = 28 * 28
    assert conv_macs(costs) == [hw * 128 * 64 * 9, hw * 128 * 128 * 9, hw * 128 * 64]
    assert total.bn_params == 2 * 3 * 128


@pytest.mark.parametrize("stride_in_3x3", [True, False])
def test_resnet_bottleneck_versions(stride_in_3x3):
    out, costs, _ = block_cost((1, 256, 56, 56), lambda g, x: blocks.resnet_bottleneck(
        g, x, 128, 512, stride=2, stride_in_3x3=stride_in_3x3))
    assert out.shape == (1, 512, 28, 28)
    first = (28 * 28 if not stride_in_3x3 else 56 * 56) * 128 * 256
    assert conv_macs(costs) == [first, 28 * 28 * 128 * 128 * 9, 28 * 28 * 512 * 128, 28 * 28 * 512 * 256]


def test_resnext_block_width_and_groups():
    out, costs, _ = block_cost((1, 256, 56, 56), lambda g, x: blocks.resnext_block(g, x, 256, 32, 4))
    assert out.shape == (1, 256, 56, 56)  # identity shortcut: no projection conv
    hw = 56 * 56
    width = 128  # 256 / 4 * 4 / 64 * 32
    assert conv_macs(costs) == [hw * width * 256, hw * width * (width // 32) * 9, hw * 256 * width]


def test_preact_blocks_put_bn_before_the_convolutions():
    g = GraphBuilder("b", (1, 64, 8, 8))
    blocks.preact_basic(g, g.input, 64)
    ops = [n.op for n in g.nodes]
    assert ops == ["bn", "relu", "conv", "bn", "relu", "conv", "add"]
    out, costs, _ = block_cost((1, 64, 8, 8), lambda g, x: blocks.preact_bottleneck(g, x, 16, 128, 2))
    assert out.shape == (1, 128, 4, 4)
    # the projection shortcut (recorded first, from the pre-activated input), then 1x1, 3x3/2, 1x1
    assert conv_macs(costs) == [16 * 128 * 64, 64 * 16 * 64, 16 * 16 * 16 * 9, 16 * 128 * 16]


def test_mobilenet_separable_and_inverted_residual():
    out, costs, _ = block_cost((1, 32, 112, 112), lambda g, x: blocks.mobilenet_separable(g, x, 64))
    assert conv_macs(costs) == [112 * 112 * 32 * 9, 112 * 112 * 64 * 32]
    out, costs, _ = block_cost((1, 24, 56, 56), lambda g, x: blocks.inverted_residual(g, x, 24, 1, 6))
    assert [c.op for c in costs][-1] == "add"  # residual when shapes match
    assert conv_macs(costs) == [56 * 56 * 144 * 24, 56 * 56 * 144 * 9, 56 * 56 * 24 * 144]
    out, costs, _ = block_cost((1, 24, 56, 56), lambda g, x: blocks.inverted_residual(g, x, 32, 2, 6))
    assert out.shape == (1, 32, 28, 28) and "add" not in [c.op for c in costs]


def test_shufflenet_units():
    out, costs, _ = block_cost((1, 240, 28, 28), lambda g, x: blocks.shufflenet_v1_unit(g, x, 240, 3, 1))
    assert out.shape == (1, 240, 28, 28)
    hw = 28 * 28
    assert conv_macs(costs) == [hw * 60 * 80, hw * 60 * 9, hw * 240 * 20]  # grouped 1x1 divide by g once
    assert "shuffle" in [c.op for c in costs]
    out, costs, _ = block_cost((1, 240, 28, 28), lambda g, x: blocks.shufflenet_v1_unit(g, x, 480, 3, 2))
    assert out.shape == (1, 480, 14, 14)  # 240 from the pooled input + 240 from the branch
    out, costs, _ = block_cost((1, 116, 28, 28), lambda g, x: blocks.shufflenet_v2_unit(g, x, 116, 1))
    assert out.shape == (1, 116, 28, 28)
    assert conv_macs(costs) == [hw * 58 * 58, hw * 58 * 9, hw * 58 * 58]
    out, costs, _ = block_cost((1, 116, 28, 28), lambda g, x: blocks.shufflenet_v2_unit(g, x, 232, 2))
    assert out.shape == (1, 232, 14, 14)
