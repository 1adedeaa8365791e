"""Building blocks of the classic mobile and residual networks, recorded on a ``GraphBuilder``.

Each block takes the builder and its input tensor and returns the output tensor.  Convolutions carry no
bias (BatchNorm follows them), as in the papers and torchvision.
"""
from __future__ import annotations

from ..graph import GraphBuilder, Tensor


def _shortcut(g: GraphBuilder, x: Tensor, out_channels: int, stride: int, preact: bool = False) -> Tensor:
    if stride == 1 and x.channels == out_channels:
        return x
    y = g.conv(x, out_channels, 1, stride, 0, name="downsample")
    return y if preact else g.bn(y, name="downsample_bn")


def resnet_basic(g: GraphBuilder, x: Tensor, out_channels: int, stride: int = 1) -> Tensor:
    """ResNet basic block (He et al. 2015): 3x3, 3x3, identity or 1x1 projection shortcut."""
    y = g.conv_bn_act(x, out_channels, 3, stride)
    y = g.conv_bn_act(y, out_channels, 3, act=None)
    return g.relu(g.add(y, _shortcut(g, x, out_channels, stride)))


def resnet_bottleneck(g: GraphBuilder, x: Tensor, width: int, out_channels: int, stride: int = 1,
                      groups: int = 1, stride_in_3x3: bool = True) -> Tensor:
    """ResNet bottleneck 1x1 -> 3x3 -> 1x1 (ResNeXt when groups > 1, the 3x3 grouped).

    ``stride_in_3x3``: v1.5 (torchvision, ResNeXt) strides the 3x3; v1 (He et al. 2015) the first 1x1.
    """
    s1, s3 = (1, stride) if stride_in_3x3 else (stride, 1)
    y = g.conv_bn_act(x, width, 1, s1, 0)
    y = g.conv_bn_act(y, width, 3, s3, groups=groups)
    y = g.conv_bn_act(y, out_channels, 1, 1, 0, act=None)
    return g.relu(g.add(y, _shortcut(g, x, out_channels, stride)))


def resnext_block(g: GraphBuilder, x: Tensor, out_channels: int, cardinality: int = 32, base_width: int = 4,
                  stride: int = 1) -> Tensor:
    """ResNeXt block (Xie et al. 2017), template (c): width = out/4 scaled by base_width*cardinality/64."""
    width = int(out_channels // 4 * (base_width / 64.0)) * cardinality
    return resnet_bottleneck(g, x, width, out_channels, stride, groups=cardinality)


def preact_basic(g: GraphBuilder, x: Tensor, out_channels: int, stride: int = 1) -> Tensor:
    """Full pre-activation basic block (He et al. 2016): BN-ReLU-3x3, BN-ReLU-3x3, plus shortcut."""
    pre = g.relu(g.bn(x))
    shortcut = x if stride == 1 and x.channels == out_channels else _shortcut(g, pre, out_channels, stride, True)
    y = g.conv(pre, out_channels, 3, stride)
    y = g.conv(g.relu(g.bn(y)), out_channels, 3)
    return g.add(y, shortcut)


def preact_bottleneck(g: GraphBuilder, x: Tensor, width: int, out_channels: int, stride: int = 1) -> Tensor:
    """Full pre-activation bottleneck (He et al. 2016): (BN-ReLU-conv) x 3 with 1x1, 3x3, 1x1."""
    pre = g.relu(g.bn(x))
    shortcut = x if stride == 1 and x.channels == out_channels else _shortcut(g, pre, out_channels, stride, True)
    y = g.conv(pre, width, 1, 1, 0)
    y = g.conv(g.relu(g.bn(y)), width, 3, stride)
    y = g.conv(g.relu(g.bn(y)), out_channels, 1, 1, 0)
    return g.add(y, shortcut)


def mobilenet_separable(g: GraphBuilder, x: Tensor, out_channels: int, stride: int = 1,
                        act: str = "relu") -> Tensor:
    """MobileNetV1 block: depthwise 3x3 BN ReLU, pointwise 1x1 BN ReLU."""
    y = g.conv_bn_act(x, x.channels, 3, stride, groups=x.channels, act=act)
    return g.conv_bn_act(y, out_channels, 1, 1, 0, act=act)


def inverted_residual(g: GraphBuilder, x: Tensor, out_channels: int, stride: int, expand_ratio: int) -> Tensor:
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise 3x3 (ReLU6), linear 1x1 project, residual if shapes match."""
    hidden = int(round(x.channels * expand_ratio))
    y = x if expand_ratio == 1 else g.conv_bn_act(x, hidden, 1, 1, 0, act="relu6")
    y = g.conv_bn_act(y, hidden, 3, stride, groups=hidden, act="relu6")
    y = g.conv_bn_act(y, out_channels, 1, 1, 0, act=None)
    return g.add(x, y) if stride == 1 and x.channels == out_channels else y


def shufflenet_v1_unit(g: GraphBuilder, x: Tensor, out_channels: int, groups: int, stride: int,
                       first_group: bool = True) -> Tensor:
    """ShuffleNet unit (Zhang et al. 2018): grouped 1x1, shuffle, depthwise 3x3, grouped 1x1.

    Stride 1 adds the input; stride 2 concatenates a 3x3/2 average pool of the input, so the branch makes
    out - in channels.  The bottleneck is a quarter of the output; ``first_group=False`` keeps the first 1x1
    dense (the paper's first unit of stage 2, whose input has only 24 channels).
    """
    mid = out_channels // 4
    branch_out = out_channels - x.channels if stride == 2 else out_channels
    g1 = groups if first_group else 1
    y = g.conv_bn_act(x, mid, 1, 1, 0, groups=g1)
    if g1 > 1:
        y = g.shuffle(y, g1)
    y = g.conv_bn_act(y, mid, 3, stride, groups=mid, act=None)
    y = g.conv_bn_act(y, branch_out, 1, 1, 0, groups=groups, act=None)
    if stride == 2:
        return g.concat([g.avgpool(x, 3, 2, 1), g.relu(y)])
    return g.relu(g.add(x, y))


def shufflenet_v2_unit(g: GraphBuilder, x: Tensor, out_channels: int, stride: int) -> Tensor:
    """ShuffleNet v2 unit (Ma et al. 2018): channel split (stride 1) or two branches (stride 2), concat, shuffle."""
    half = out_channels // 2
    if stride == 1:
        left, right = g.split(x, 0, x.channels // 2), g.split(x, x.channels // 2, x.channels)
    else:
        left = g.conv_bn_act(x, x.channels, 3, 2, groups=x.channels, act=None)
        left = g.conv_bn_act(left, half, 1, 1, 0)
        right = x
    y = g.conv_bn_act(right, half, 1, 1, 0)
    y = g.conv_bn_act(y, half, 3, stride, groups=half, act=None)
    y = g.conv_bn_act(y, half, 1, 1, 0)
    return g.shuffle(g.concat([left, y]), 2)
