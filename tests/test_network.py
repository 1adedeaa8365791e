"""Whole networks: catalogue models against the float64 graph reference, ONNX graphs against onnxruntime."""
import numba
import numpy as np
import pytest

import numbaconv as nc
from numbaconv.cost import build_model
from numbaconv.network import Network, random_params

from . import reference as ref


def relative_error(y, expected):
    return float(np.max(np.abs(y - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("name,options", [
    ("mobilenet_v1", {"width": 0.25}), ("mobilenet_v2", {"width": 0.5}), ("shufflenet_v1", {"groups": 3}),
    ("shufflenet_v2", {"width": 0.5}), ("resnet18", {}), ("resnext50_32x4d", {"resolution": 32}),
])
def test_catalogue_model_matches_float64_reference(name, options, rng):
    options = {"resolution": 64, **options}
    graph = build_model(name, batch=2, **options)
    params = random_params(graph, seed=1)
    net = Network(graph, params)
    x = rng.standard_normal(graph.input.shape).astype(np.float32)
    y = net(x)
    expected = ref.run_graph(graph, params, x)
    assert y.shape == expected.shape == (2, 1000)
    assert relative_error(y, expected) < 1e-4
    # every BatchNorm follows a convolution here, so all were folded into it
    assert "bn" not in [step.op for step in net.steps]
    # the stem runs fused with what follows it: MobileNet's first separable block, the others' max pooling
    assert net.steps[0].op == ("pw-dw-pw" if name.startswith("mobilenet") else "conv-maxpool")
    # ... and reads the channels-first input through a channels-last view, no transposing copy first
    assert net._input_as_view
    assert sum(len(step.fused) for step in net.steps) >= sum(node.op == "bn" for node in graph.nodes)
    # ShuffleNet v2's channel splits are read in place by the steps after them: no split step is left
    assert "split" not in [step.op for step in net.steps]
    # ShuffleNet v1's downsampling units average their input in the chain's final pass: no pooling step
    assert "avgpool" not in [step.op for step in net.steps]
    # runners are planned per thread count: on one thread they are planned again, with the same answer
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert relative_error(net(x), expected) < 1e-4 and net._threads == 1
    finally:
        numba.set_num_threads(threads)


def test_network_channels_last_input_and_errors(rng):
    net = Network.from_catalogue("shufflenet_v2", width=0.5, resolution=32, batch=1)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(net(np.moveaxis(x, 1, -1), layout="NHWC"), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(nc.ConvSpecError, match=r"input must have shape \(N, 3, 32, 32\)"):
        net(x[:, :, :16])
    with pytest.raises(TypeError, match="network runs in float32"):
        net(x.astype(np.float64))


# ---- ONNX ------------------------------------------------------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def onnx_model(nodes, inits, in_shape, out_name, out_shape):
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in inits.items()])
    # onnxruntime 1.31 refuses the IR version 14 that onnx 1.23 writes by default
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_onnxruntime(model, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def bn(name, c, rng, inits):
    inits.update({f"{name}_s": rng.uniform(0.5, 1.5, c), f"{name}_b": rng.standard_normal(c) * 0.1,
                  f"{name}_m": rng.standard_normal(c) * 0.1, f"{name}_v": rng.uniform(0.5, 1.5, c)})
    return [f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"]


def weight(name, shape, rng, inits):
    inits[name] = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    return name


def mobilenet_style(rng):
    i = {}
    nodes = [
        helper.make_node("Conv", ["x", weight("w1", (8, 3, 3, 3), rng, i)], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", *bn("bn1", 8, rng, i)], ["b1"]),
        helper.make_node("Clip", ["b1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", weight("w2", (8, 1, 3, 3), rng, i)], ["c2"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", *bn("bn2", 8, rng, i)], ["b2"]),
        helper.make_node("Relu", ["b2"], ["r2"]),
        helper.make_node("Conv", ["r2", weight("w3", (16, 8, 1, 1), rng, i)], ["c3"]),
        helper.make_node("BatchNormalization", ["c3", *bn("bn3", 16, rng, i)], ["b3"]),
        helper.make_node("Relu", ["b3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", weight("fc", (10, 16), rng, i), "fcb"], ["y"], transB=1),
    ]
    i.update(lo=np.array(0.0), hi=np.array(6.0), fcb=rng.standard_normal(10))
    return onnx_model(nodes, i, [2, 3, 17, 15], "y", [2, 10])


def shufflenet_style(rng):
    i = {"shape1": np.array([2, 3, 4, 9, 9], np.int64), "shape2": np.array([2, 12, 9, 9], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", weight("w1", (12, 4, 1, 1), rng, i)], ["c1"], group=3),
        helper.make_node("BatchNormalization", ["c1", *bn("bn1", 12, rng, i)], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Reshape", ["r1", "shape1"], ["s1"]),
        helper.make_node("Transpose", ["s1"], ["s2"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["s2", "shape2"], ["s3"]),
        helper.make_node("Conv", ["s3", weight("w2", (12, 1, 3, 3), rng, i)], ["c2"], group=12, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", weight("w3", (12, 4, 1, 1), rng, i)], ["c3"], group=3),
        helper.make_node("Add", ["c3", "x"], ["a"]),
        helper.make_node("Relu", ["a"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("MaxPool", ["r2"], ["q"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p", "q"], ["y"], axis=1),
    ]
    return onnx_model(nodes, i, [2, 12, 9, 9], "y", [2, 24, 5, 5])


def resnet_style(rng):
    i = {}
    nodes = [
        helper.make_node("Conv", ["x", weight("w1", (8, 3, 7, 7), rng, i)], ["c1"], strides=[2, 2], pads=[3, 3, 3, 3]),
        helper.make_node("BatchNormalization", ["c1", *bn("bn1", 8, rng, i)], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["m", weight("w2", (8, 8, 3, 3), rng, i)], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", *bn("bn2", 8, rng, i)], ["b2"]),
        helper.make_node("Relu", ["b2"], ["r2"]),
        helper.make_node("Conv", ["r2", weight("w3", (8, 8, 3, 3), rng, i), "b3c"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "m"], ["a"]),
        helper.make_node("Relu", ["a"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", weight("fc", (5, 8), rng, i)], ["y"], transB=1),
    ]
    i["b3c"] = rng.standard_normal(8) * 0.1
    return onnx_model(nodes, i, [1, 3, 29, 31], "y", [1, 5])


def decoder_style(rng):
    i = {}
    nodes = [
        helper.make_node("ConvTranspose", ["x", weight("w1", (8, 4, 3, 3), rng, i), "b1"], ["t1"], strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1]),
        helper.make_node("Relu", ["t1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", weight("w2", (4, 2, 4, 4), rng, i)], ["t2"], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["t2"], ["y"]),
    ]
    i["b1"] = rng.standard_normal(4) * 0.1
    return onnx_model(nodes, i, [2, 8, 5, 6], "y", [2, 2, 20, 24])


@pytest.mark.parametrize("make", [mobilenet_style, shufflenet_style, resnet_style, decoder_style])
def test_onnx_graph_matches_onnxruntime(make, rng):
    model = make(rng)
    onnx.checker.check_model(model)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = rng.standard_normal(shape).astype(np.float32)
    net = nc.load_onnx(model, batch=shape[0])
    expected = run_onnxruntime(model, x)
    y = net(x)
    assert y.shape == expected.shape
    assert relative_error(y, expected) < 1e-4
    # the input goes in as a channels-last view only where every step reading it stages its rows (a windowed
    # chain, a stem with its pool); here ShuffleNet's pool and the decoder's conv also read it
    assert net._input_as_view == (make in (mobilenet_style, resnet_style))
    if make is shufflenet_style:  # the Reshape/Transpose/Reshape became one shuffle, folded into its conv
        shuffles = {n.name for n in net.graph.nodes if n.op == "shuffle"}
        assert shuffles and all(any(name in step.fused for step in net.steps if step.op in ("conv", "pw-dw-pw"))
                                for name in shuffles)


def test_onnx_unsupported_ops_are_all_listed(rng):
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="gate"), helper.make_node("Softmax", ["s"], ["y"])]
    model = onnx_model(nodes, {}, [1, 4], "y", [1, 4])
    with pytest.raises(nc.ConvSpecError, match=r"2 node\(s\): gate \(Sigmoid\), y \(Softmax\)"):
        nc.load_onnx(model)


def single_node_model(op, in_shape, inits, **attrs):
    inputs = ["x", *inits]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], **attrs)], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                              in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 1), (3, 2), (4, 2), (2, 3)])  # odd and even totals
def test_onnx_auto_pad_matches_onnxruntime(op, auto_pad, kernel, stride, rng):
    in_shape = [2, 3, 11, 10]
    w_shape = (4, 3, kernel, kernel) if op == "Conv" else (3, 4, kernel, kernel)
    model = single_node_model(op, in_shape, {"w": rng.standard_normal(w_shape)}, auto_pad=auto_pad,
                              strides=[stride, stride])
    x = rng.standard_normal(in_shape).astype(np.float32)
    expected = run_onnxruntime(model, x)
    y = nc.load_onnx(model, batch=2)(x)
    assert y.shape == expected.shape
    assert relative_error(y, expected) < 1e-5


@pytest.mark.parametrize("attrs", [
    {"output_shape": [12, 14]}, {"output_shape": [13, 15]}, {"output_shape": [16, 16], "output_padding": [1, 0]},
    {"output_shape": [14, 13], "auto_pad": "SAME_UPPER"}, {"output_shape": [14, 13], "auto_pad": "SAME_LOWER"},
    {"pads": [0, 1, 2, 0]}])
def test_onnx_conv_transpose_output_shape_and_asymmetric_pads(attrs, rng):
    model = single_node_model("ConvTranspose", [1, 3, 7, 7], {"w": rng.standard_normal((3, 2, 3, 3))},
                              strides=[2, 2], **attrs)
    x = rng.standard_normal((1, 3, 7, 7)).astype(np.float32)
    expected = run_onnxruntime(model, x)
    y = nc.load_onnx(model)(x)
    assert y.shape == expected.shape
    assert relative_error(y, expected) < 1e-5


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_onnx_pool_auto_pad_matches_onnxruntime(op, auto_pad, rng):
    model = single_node_model(op, [1, 3, 11, 10], {}, kernel_shape=[2, 3], strides=[2, 2], auto_pad=auto_pad)
    x = rng.standard_normal((1, 3, 11, 10)).astype(np.float32)
    expected = run_onnxruntime(model, x)
    y = nc.load_onnx(model)(x)
    assert y.shape == expected.shape
    assert relative_error(y, expected) < 1e-6


@pytest.mark.parametrize("make,message", [
    (lambda r: single_node_model("MaxPool", [1, 3, 9, 9], {}, kernel_shape=[3, 3], dilations=[2, 2]),
     r"y \(MaxPool\): MaxPool with dilations \[2, 2\]"),
    (lambda r: single_node_model("Add", [1, 3, 4, 4], {"b": r.standard_normal((1, 3, 1, 1))}),
     r"y \(Add\): input 'b' is a constant"),
    (lambda r: single_node_model("Split", [1, 4, 4, 4], {}, axis=2), r"y \(Split\): Split only along the channels"),
    (lambda r: single_node_model("Gather", [1, 4, 4, 4], {"i": np.array([1.0])}, axis=1),
     r"y \(Gather\): Gather on activations"),
    (lambda r: single_node_model("Transpose", [1, 4, 4, 4], {}, perm=[0, 2, 3, 1]), r"Transpose outside"),
    (lambda r: onnx_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["x", "r"], ["y"])],
                          {}, [1, 3, 1, 1], "y", [1, 3, 1, 1]), r"its weight 'r' must be an initializer"),
])
def test_onnx_refuses_what_it_cannot_honour(make, message, rng):
    with pytest.raises(nc.ConvSpecError, match=message):
        nc.load_onnx(make(rng))


def test_onnx_graph_with_two_outputs_is_refused(rng):
    model = single_node_model("Relu", [1, 3, 4, 4], {})
    model.graph.output.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, None))
    with pytest.raises(nc.ConvSpecError, match=r"exactly one output, got \['y', 'x2'\]"):
        nc.load_onnx(model)


def torch_shuffle_net(torch, slicing):
    """A ShuffleNet v2 stem and two units as PyTorch writes them: chunk or slices, cat, view/transpose shuffle."""
    nn = torch.nn

    class Unit(nn.Module):
        def __init__(self, channels):
            super().__init__()
            half = channels // 2
            self.branch = nn.Sequential(
                nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
                nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
                nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

        def forward(self, x):
            n, c, h, w = x.size()
            left, right = (x[:, :c // 2], x[:, c // 2:]) if slicing else x.chunk(2, dim=1)
            y = torch.cat((left, self.branch(right)), 1)
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)

    return nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1), nn.ReLU(), Unit(24), Unit(24), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(24, 7))


def torch_mobile_net(torch, keepdim):
    """ReLU6 (exported as Clip with Constant bounds), a skip connection, hard-swish, dropout, a decoder, a mean."""
    nn = torch.nn

    class InvertedResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(),
                nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm2d(64), nn.ReLU6(),
                nn.Conv2d(64, 16, 1, bias=False), nn.BatchNorm2d(16))

        def forward(self, x):
            return x + self.body(x)

    class Head(nn.Module):
        def __init__(self, keepdim):
            super().__init__()
            self.keepdim, self.fc = keepdim, nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(x.mean((2, 3), keepdim=self.keepdim).reshape(x.size(0), -1))

    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(), InvertedResidual(),
                         nn.Hardswish(), nn.Dropout(0.2), nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.Hardswish(),
                         Head(keepdim))


@pytest.mark.parametrize("make,chains", [
    (lambda t: torch_shuffle_net(t, False), 2), (lambda t: torch_shuffle_net(t, True), 2),
    (lambda t: torch_mobile_net(t, False), 1), (lambda t: torch_mobile_net(t, True), 1)],
    ids=["shufflenet-chunk", "shufflenet-slices", "mobilenet", "mobilenet-keepdim"])
@pytest.mark.parametrize("opset", [13, 18])
def test_torch_exported_model_matches_onnxruntime(make, chains, opset, rng):
    """torch.onnx.export with a dynamic batch: Constant nodes, shape arithmetic (Shape, Gather, Unsqueeze, ...)."""
    import io
    import warnings
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = make(torch).eval()
    for bn_layer in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn_layer.running_mean.uniform_(-0.5, 0.5)
        bn_layer.running_var.uniform_(0.5, 1.5)
    x = rng.standard_normal((2, 3, 32, 30)).astype(np.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = min(model.ir_version, 8)
    expected = run_onnxruntime(model, x)
    net = nc.load_onnx(model, batch=2)
    assert relative_error(net(x), expected) < 1e-4
    # each ShuffleNet unit's split, branch, concat and shuffle, and the inverted residual, became one fused chain
    assert [step.op for step in net.steps].count("pw-dw-pw") == chains


@pytest.mark.parametrize("name,options", [("shufflenet_v1", {"groups": 3}), ("shufflenet_v2", {"width": 0.5}),
                                          ("mobilenet_v2", {"width": 0.5})])
def test_exported_catalogue_model_runs_the_same_in_onnxruntime(name, options, rng):
    from numbaconv.onnx_export import to_onnx
    graph = build_model(name, batch=1, resolution=32, **options)
    params = random_params(graph, seed=2)
    model = to_onnx(graph, params)
    onnx.checker.check_model(model)
    x = rng.standard_normal(graph.input.shape).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {graph.input.name: x})[0]
    assert relative_error(Network(graph, params)(x), expected) < 1e-4


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,include_pad", [
    (3, 2, 1, False, True), (3, 2, 1, True, True), (2, 2, 0, True, False), (3, 1, 1, False, False),
    ((2, 3), (2, 1), ((0, 1), (1, 1)), True, True)])
@pytest.mark.parametrize("channels", [5, 13])  # 13: vectors of channels, the last one overlapping
def test_pooling_matches_reference(op, kernel, stride, padding, ceil_mode, include_pad, channels, rng):
    from numbaconv.graph import GraphBuilder
    g = GraphBuilder("pool", (2, channels, 9, 8))
    if op == "maxpool":
        y = g.maxpool(g.input, kernel, stride, padding, ceil_mode)
    else:
        y = g.avgpool(g.input, kernel, stride, padding, ceil_mode, include_pad)
    graph = g.build(y)
    x = rng.standard_normal(graph.input.shape).astype(np.float32)
    x[1, -1, 4, 4] = np.nan  # propagates through max, as in PyTorch
    y = Network(graph, {})(x)
    np.testing.assert_allclose(y, ref.run_graph(graph, {}, x), rtol=1e-5, atol=1e-6)
    assert np.isnan(y[1, -1]).any() and not np.isnan(y[0]).any()


def test_network_keeps_freed_memory_for_reuse():
    import platform
    import sys

    from numbaconv import memory
    graph = build_model("mobilenet_v1", width=0.25, resolution=32)
    Network(graph, random_params(graph))
    assert memory._APPLIED, "building a Network applies the allocator setting"
    assert memory.retain_freed_memory() is memory._APPLIED[0]  # idempotent: one answer per process
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert memory._APPLIED[0] is True


def test_residual_add_reuses_only_buffers_nobody_else_reads(rng):
    from numbaconv.graph import GraphBuilder
    g = GraphBuilder("residual", (2, 8, 9, 9))
    a = g.conv(g.input, 8, 3, padding=1, name="a")           # read by both adds and by branch b: kept
    b = g.relu(g.conv(a, 8, 1, name="b"), name="b_relu")     # read by the add only: overwritten with the sum
    s = g.relu(g.add(a, b, name="sum"), name="sum_relu")
    t = g.add(g.conv(s, 8, 1, name="c"), a, name="again")     # a convolution then an add: c's epilogue sums
    graph = g.build(g.concat([t, g.relu(a, name="a_relu")], name="both"))
    params = random_params(graph, seed=3)
    net = Network(graph, params)
    assert [step.fused for step in net.steps if step.op == "add"] == [("sum_relu",)]
    (c,) = [step for step in net.steps if step.name == "c"]
    assert c.fused == ("again",) and c.inputs == (s.name, a.name) and c.output == t.name
    x = rng.standard_normal(graph.input.shape).astype(np.float32)
    for _ in range(2):  # a second call must not see buffers the first one overwrote
        assert relative_error(net(x), ref.run_graph(graph, params, x)) < 1e-5
