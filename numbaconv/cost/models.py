"""The model catalogue: classic networks as graphs, defined once for both cost reports and execution.

Architectures follow the papers and, where the papers leave a choice open, torchvision (ResNet, ResNeXt,
MobileNetV2, ShuffleNet v2) or the authors' reference code (ShuffleNet v1, MobileNetV1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..graph import Graph, GraphBuilder, Tensor
from ..spec import ConvSpecError
from . import blocks


@dataclass(frozen=True)
class ModelOptions:
    """Everything a catalogue builder may read; each builder validates the ones it uses."""

    batch: int = 1
    resolution: int = 224
    width: float = 1.0
    groups: int = 3
    version: str = "v1.5"
    num_classes: int = 1000


def _head(g: GraphBuilder, x: Tensor, num_classes: int) -> Graph:
    y = g.global_avgpool(x, name="avgpool")
    return g.build(g.linear(y, num_classes, name="fc"))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of divisor, never below 90% of value."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


# ---- ResNet / ResNeXt -------------------------------------------------------------------------------
_RESNET_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                  101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def _resnet(depth: int, opts: ModelOptions, groups: int = 1, base_width: int = 64, name: str = "") -> Graph:
    if opts.version not in ("v1", "v1.5"):
        raise ConvSpecError(f"version must be v1 (stride in the first 1x1) or v1.5 (stride in the 3x3), "
                            f"got {opts.version!r}")
    kind, counts = _RESNET_LAYERS[depth]
    g = GraphBuilder(name or f"resnet{depth}", (opts.batch, 3, opts.resolution, opts.resolution))
    with g.scope("stem"):
        x = g.conv_bn_act(g.input, 64, 7, 2, 3)
        x = g.maxpool(x, 3, 2, 1)
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), counts)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            with g.scope(f"layer{stage + 1}.{i}"):
                if kind == "basic":
                    x = blocks.resnet_basic(g, x, planes, stride)
                else:
                    width = int(planes * (base_width / 64.0)) * groups
                    x = blocks.resnet_bottleneck(g, x, width, planes * 4, stride, groups,
                                                 stride_in_3x3=opts.version == "v1.5")
    return _head(g, x, opts.num_classes)


# ---- MobileNet --------------------------------------------------------------------------------------
_MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1(opts: ModelOptions) -> Graph:
    """MobileNetV1 (Howard et al. 2017), width multiplier alpha = ``width``, resolution rho."""
    scale = lambda c: max(1, int(c * opts.width))  # noqa: E731 (the reference implementation truncates)
    g = GraphBuilder("mobilenet_v1", (opts.batch, 3, opts.resolution, opts.resolution))
    x = g.conv_bn_act(g.input, scale(32), 3, 2, padding="same", name="conv1")
    for i, (channels, stride) in enumerate(_MOBILENET_V1):
        with g.scope(f"block{i + 1}"):
            y = g.conv_bn_act(x, x.channels, 3, stride, padding="same", groups=x.channels, name="dw")
            x = g.conv_bn_act(y, scale(channels), 1, 1, 0, name="pw")
    return _head(g, x, opts.num_classes)


_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1)]


def mobilenet_v2(opts: ModelOptions) -> Graph:
    """MobileNetV2 (Sandler et al. 2018), torchvision's rounding of channels for width multipliers."""
    g = GraphBuilder("mobilenet_v2", (opts.batch, 3, opts.resolution, opts.resolution))
    x = g.conv_bn_act(g.input, _make_divisible(32 * opts.width), 3, 2, act="relu6", name="conv1")
    index = 0
    for t, c, n, s in _MOBILENET_V2:
        out = _make_divisible(c * opts.width)
        for i in range(n):
            with g.scope(f"block{index}"):
                x = blocks.inverted_residual(g, x, out, s if i == 0 else 1, t)
            index += 1
    x = g.conv_bn_act(x, _make_divisible(1280 * max(1.0, opts.width)), 1, 1, 0, act="relu6", name="conv_last")
    return _head(g, x, opts.num_classes)


# ---- ShuffleNet -------------------------------------------------------------------------------------
_SHUFFLE_V1_OUT = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
_SHUFFLE_V1_STEM = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def shufflenet_v1(opts: ModelOptions) -> Graph:
    """ShuffleNet v1 (Zhang et al. 2018), groups g in {1,2,3,4,8}, scale in {0.5, 1, 1.5, 2}."""
    if opts.groups not in _SHUFFLE_V1_OUT:
        raise ConvSpecError(f"groups must be one of {sorted(_SHUFFLE_V1_OUT)} for shufflenet_v1, got {opts.groups}")
    if opts.width not in _SHUFFLE_V1_STEM:
        raise ConvSpecError(f"width must be one of {sorted(_SHUFFLE_V1_STEM)} for shufflenet_v1, got {opts.width}")
    g = GraphBuilder(f"shufflenet_v1_g{opts.groups}", (opts.batch, 3, opts.resolution, opts.resolution))
    x = g.conv_bn_act(g.input, _SHUFFLE_V1_STEM[opts.width], 3, 2, name="conv1")
    x = g.maxpool(x, 3, 2, 1)
    stage_out = int(_SHUFFLE_V1_OUT[opts.groups] * opts.width)
    for stage, count in enumerate((4, 8, 4)):
        out = stage_out * 2 ** stage
        for i in range(count):
            with g.scope(f"stage{stage + 2}.{i}"):
                x = blocks.shufflenet_v1_unit(g, x, out, opts.groups, 2 if i == 0 else 1,
                                              first_group=not (stage == 0 and i == 0))
    return _head(g, x, opts.num_classes)


_SHUFFLE_V2_OUT = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024),
                   2.0: (244, 488, 976, 2048)}


def shufflenet_v2(opts: ModelOptions) -> Graph:
    """ShuffleNet v2 (Ma et al. 2018), width in {0.5, 1, 1.5, 2}."""
    if opts.width not in _SHUFFLE_V2_OUT:
        raise ConvSpecError(f"width must be one of {sorted(_SHUFFLE_V2_OUT)} for shufflenet_v2, got {opts.width}")
    *stages, last = _SHUFFLE_V2_OUT[opts.width]
    g = GraphBuilder("shufflenet_v2", (opts.batch, 3, opts.resolution, opts.resolution))
    x = g.conv_bn_act(g.input, 24, 3, 2, name="conv1")
    x = g.maxpool(x, 3, 2, 1)
    for stage, (out, count) in enumerate(zip(stages, (4, 8, 4))):
        for i in range(count):
            with g.scope(f"stage{stage + 2}.{i}"):
                x = blocks.shufflenet_v2_unit(g, x, out, 2 if i == 0 else 1)
    x = g.conv_bn_act(x, last, 1, 1, 0, name="conv5")
    return _head(g, x, opts.num_classes)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    summary: str
    build: Callable[[ModelOptions], Graph]
    options: tuple[str, ...] = field(default=())


MODELS: dict[str, ModelEntry] = {m.name: m for m in [
    *[ModelEntry(f"resnet{d}", f"ResNet-{d} (He et al. 2015); --version v1|v1.5", 
                 (lambda d: lambda o: _resnet(d, o))(d), ("version", "resolution"))
      for d in (18, 34, 50, 101, 152)],
    ModelEntry("resnext50_32x4d", "ResNeXt-50 32x4d (Xie et al. 2017)",
               lambda o: _resnet(50, o, groups=32, base_width=4, name="resnext50_32x4d"), ("version", "resolution")),
    ModelEntry("mobilenet_v1", "MobileNetV1 (Howard et al. 2017); --width alpha, --resolution rho", mobilenet_v1,
               ("width", "resolution")),
    ModelEntry("mobilenet_v2", "MobileNetV2 (Sandler et al. 2018); --width", mobilenet_v2, ("width", "resolution")),
    ModelEntry("shufflenet_v1", "ShuffleNet v1 (Zhang et al. 2018); --groups 1|2|3|4|8, --width 0.5|1|1.5|2",
               shufflenet_v1, ("groups", "width", "resolution")),
    ModelEntry("shufflenet_v2", "ShuffleNet v2 (Ma et al. 2018); --width 0.5|1|1.5|2", shufflenet_v2,
               ("width", "resolution")),
]}


def build_model(name: str, **options) -> Graph:
    """The graph of catalogue model ``name``; options are ModelOptions fields (batch, resolution, width...)."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ConvSpecError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    opts = ModelOptions(**options)
    if opts.batch < 1 or opts.resolution < 1 or opts.width <= 0:
        raise ConvSpecError(f"batch, resolution and width must be positive, got {opts.batch}, "
                            f"{opts.resolution}, {opts.width}")
    return MODELS[key].build(opts)
