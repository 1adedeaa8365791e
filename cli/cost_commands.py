"""Cost commands: cost, compare, model, receptive-field.  They import numbaconv's cost model only (no Numba)."""
from __future__ import annotations

import functools

import click

from numbaconv.cost import (MODELS, VARIANTS, LayerRequest, applicable_variants, build_model, build_variant,
                            receptive_field as stack_receptive_field)
from numbaconv.cost.layers import DTYPE_BYTES
from numbaconv.cost.report import (FORMATS, LAYER_COLUMNS, conv_graph_extras, from_layout, graph_report,
                                   render, shape_text, totals_footer)
from numbaconv.spec import ConvSpecError

from .params import NONNEGATIVE, PADDING, POSITIVE, SHAPE

# Words in a spec error -> the option to blame.
_OPTION_FOR = [("output_padding", "--output-padding"), ("groups", "--groups"), ("kernel", "--kernel"),
               ("multiplier", "--multiplier"), ("out_channels", "--out-channels"), ("stride", "--stride"),
               ("dilation", "--dilation"), ("padding", "--padding"), ("width", "--width"),
               ("resolution", "--resolution"), ("version", "--version"), ("model", "NAME")]


def _usage_errors(func):
    """Turn a ConvSpecError into a one-line usage error that names the option (exit status 2)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ConvSpecError, ValueError) as e:
            message = str(e)
            found = [(message.find(word), opt) for word, opt in _OPTION_FOR if word in message]
            hint = min(found)[1] if found else "--input"
            raise click.BadParameter(message, param_hint=hint) from None
    return wrapper


def _format_option(func):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format.")(func)


def _layer_options(func):
    options = [
        click.option("--input", "input_shape", type=SHAPE, required=True,
                     help="Input shape N x C x spatial (nchw) or N x spatial x C (nhwc), e.g. 1x32x112x112."),
        click.option("--out-channels", type=click.IntRange(min=1), default=None,
                     help="Output channels (default: input channels times --multiplier)."),
        click.option("--kernel", type=POSITIVE, default=None, help="Kernel size, e.g. 3 or 3,5 (default 3; 1 for pointwise)."),
        click.option("--stride", type=POSITIVE, default="1", show_default=True),
        click.option("--padding", type=PADDING, default="0", show_default=True, help="Ints, 'same' or 'valid'."),
        click.option("--dilation", type=POSITIVE, default="1", show_default=True),
        click.option("--groups", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--multiplier", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Depthwise channel multiplier."),
        click.option("--output-padding", type=NONNEGATIVE, default="0", show_default=True,
                     help="Transposed convolution only."),
        click.option("--bias/--no-bias", default=False, show_default=True),
        click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="float32", show_default=True),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
                     help="How --input and the shapes printed are ordered."),
        _format_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _request(input_shape, out_channels, kernel, stride, padding, dilation, groups, multiplier, output_padding,
             bias, layout) -> LayerRequest:
    shape = from_layout(input_shape, layout)
    ndim = len(shape) - 2
    fit = lambda v: v if len(v) > 1 or ndim == 1 else v * ndim  # noqa: E731 (broadcast '3' to every dim)
    kernel = kernel or (3,)
    return LayerRequest(shape, out_channels or shape[1] * multiplier, fit(kernel), fit(stride),
                        padding if isinstance(padding, str) else fit(padding), fit(dilation), groups, multiplier,
                        bias, fit(output_padding))


@click.command()
@click.argument("variant", type=click.Choice(list(VARIANTS)))
@_layer_options
@_usage_errors
def cost(variant, input_shape, out_channels, kernel, stride, padding, dilation, groups, multiplier, output_padding,
         bias, dtype, layout, fmt):
    """One layer's cost: MACs, FLOPs, parameters, bytes, arithmetic intensity, receptive field.

    \b
    Variants: standard, pointwise, depthwise, grouped, shuffled-grouped, pointwise-grouped,
    depthwise-separable, spatially-separable, flattened, transposed, dilated.
    Example: numbaconv cost depthwise-separable --input 1x32x112x112 --out-channels 64 --kernel 3 --padding 1
    """
    if variant.startswith("pointwise") and kernel and any(k != 1 for k in kernel):
        raise ConvSpecError(f"{variant} uses a 1x1 kernel; got --kernel {','.join(map(str, kernel))}")
    if variant == "depthwise" and out_channels is None:
        out_channels = from_layout(input_shape, layout)[1] * multiplier
    request = _request(input_shape, out_channels, kernel, stride, padding, dilation, groups, multiplier,
                       output_padding, bias, layout)
    graph = build_variant(variant, request)
    report = graph_report(graph, dtype, layout, extra={"variant": variant, **conv_graph_extras(graph)})
    footer = totals_footer(report) + [
        f"arithmetic intensity: {report['intensity']} FLOP/byte (input, weights, output moved once); "
        f"receptive field: {shape_text(report['receptive_field'])}"]
    title = f"{variant} convolution on {shape_text(input_shape)} ({layout})"
    click.echo(render(report["layers"], LAYER_COLUMNS, fmt, title, footer, report))


@click.command()
@_layer_options
@_usage_errors
def compare(input_shape, out_channels, kernel, stride, padding, dilation, groups, multiplier, output_padding, bias,
            dtype, layout, fmt):
    """Every applicable variant side by side for the same input and output.

    Shows MACs, FLOPs, parameters and bytes of each, and its MACs as a percentage of the standard
    convolution's. Example (the textbook case, 86,400 vs 10,275 multiplications):
    numbaconv compare --input 1x3x7x7 --out-channels 128 --kernel 3
    """
    request = _request(input_shape, out_channels, kernel, stride, padding, dilation, groups, multiplier,
                       output_padding, bias, layout)
    rows, base = [], None
    for name in applicable_variants(request):
        graph = build_variant(name, request)
        report = graph_report(graph, dtype, layout, extra=conv_graph_extras(graph))
        base = base or report
        rows.append({"variant": name, "stages": " + ".join(f"{layer['macs']:,}" for layer in report["layers"]
                                                           if layer["op"] == "conv"),
                     "output_shape": report["output_shape"], "macs": report["macs"], "flops": report["flops"],
                     "params": report["params"], "bytes": report["bytes"], "intensity": report["intensity"],
                     "receptive_field": report["receptive_field"],
                     "mac_ratio": round(report["macs"] / base["macs"], 4),
                     "params_ratio": round(report["params"] / base["params"], 4)})
    columns = [("variant", "variant", str), ("output_shape", "output", shape_text),
               ("stages", "MACs per stage", str), ("macs", "MACs", lambda v: f"{v:,}"),
               ("flops", "FLOPs", lambda v: f"{v:,}"), ("params", "params", lambda v: f"{v:,}"),
               ("bytes", "bytes", lambda v: f"{v:,}"), ("intensity", "FLOP/B", lambda v: f"{v:.2f}"),
               ("receptive_field", "RF", shape_text), ("mac_ratio", "MACs vs std", lambda v: f"{100 * v:.1f}%"),
               ("params_ratio", "params vs std", lambda v: f"{100 * v:.1f}%")]
    payload = {"input_shape": list(input_shape), "layout": layout, "dtype": dtype, "variants": rows}
    title = f"variants for {shape_text(input_shape)} ({layout}) -> {request.out_channels} channels"
    click.echo(render(rows, columns, fmt, title, ["1 MAC = 1 multiply + 1 add; FLOPs = 2 x MACs (+ bias adds)"],
                      payload))


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_models", is_flag=True, help="Name every model in the catalogue.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--resolution", type=click.IntRange(min=1), default=224, show_default=True)
@click.option("--width", type=float, default=1.0, show_default=True,
              help="Width multiplier (MobileNet alpha, ShuffleNet scale).")
@click.option("--groups", type=click.IntRange(min=1), default=3, show_default=True, help="ShuffleNet v1 groups.")
@click.option("--version", type=click.Choice(["v1", "v1.5"]), default="v1.5", show_default=True,
              help="ResNet/ResNeXt: v1 strides the first 1x1 (He et al.), v1.5 the 3x3 (torchvision).")
@click.option("--all-ops", is_flag=True, help="Also list BatchNorm, activation, pooling, add and shuffle rows.")
@click.option("--dtype", type=click.Choice(list(DTYPE_BYTES)), default="float32", show_default=True)
@_format_option
@_usage_errors
def model(name, list_models, batch, resolution, width, groups, version, all_ops, dtype, fmt):
    """Per-layer costs and totals of a classic network (MACs as the papers count mult-adds).

    Example: numbaconv model mobilenet_v1 --width 0.75 --resolution 192
    """
    if list_models or not name:
        rows = [{"name": m.name, "summary": m.summary} for m in MODELS.values()]
        click.echo(render(rows, [("name", "model", str), ("summary", "description", str)], fmt, payload=rows))
        return
    graph = build_model(name, batch=batch, resolution=resolution, width=width, groups=groups, version=version)
    report = graph_report(graph, dtype, include_other=all_ops, extra={"model": name})
    columns = [c for c in LAYER_COLUMNS if c[0] not in ("input_bytes", "weight_bytes", "output_bytes", "intensity")]
    click.echo(render(report["layers"], columns, fmt, f"{graph.name}: {shape_text(graph.input.shape)}",
                      totals_footer(report), report))


@click.command("receptive-field")
@click.option("--kernel", type=POSITIVE, required=True, help="Kernel size of each layer, e.g. 3,3,3.")
@click.option("--stride", type=POSITIVE, default=None, help="Stride of each layer (default 1 each).")
@click.option("--dilation", type=POSITIVE, default=None, help="Dilation of each layer (default 1 each).")
@_format_option
@_usage_errors
def receptive_field(kernel, stride, dilation, fmt):
    """Receptive field of a stack of layers: r = sum_l (k_l - 1) * prod_{i<l} s_i + 1, dilation folded into k.

    Example: numbaconv receptive-field --kernel 3,3,3 --stride 1,2,2
    """
    stride = stride or (1,) * len(kernel)
    dilation = dilation or (1,) * len(kernel)
    if len(stride) != len(kernel):
        raise click.BadParameter(f"needs one stride per layer ({len(kernel)}), got {len(stride)}",
                                 param_hint="--stride")
    if len(dilation) != len(kernel):
        raise click.BadParameter(f"needs one dilation per layer ({len(kernel)}), got {len(dilation)}",
                                 param_hint="--dilation")
    rows = stack_receptive_field(kernel, stride, dilation)
    columns = [(k, k.replace("_", " "), str) for k in rows[0]]
    payload = {"layers": rows, "receptive_field": rows[-1]["receptive_field"]}
    click.echo(render(rows, columns, fmt, footer=[f"receptive field: {rows[-1]['receptive_field']} "
                                                  f"({rows[-1]['jump']} input pixels between neighbouring outputs)"],
                      payload=payload))
