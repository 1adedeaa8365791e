"""CPU benchmark harness: the layer suite through numbaconv and its peers, interleaved, validated first.

Used by ``perf/bench_cpu.py`` and ``numbaconv bench``.  Peers (torch, onnxruntime) are optional: a missing
one is reported and skipped.  Speed ratios are peer time / numbaconv time measured in the same run.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cost.layers import conv_cost
from .spec import ConvSpec


@dataclass(frozen=True)
class Layer:
    """One benchmark layer: a spec, its input shape (channels-first), and a family for the targets."""

    name: str
    family: str  # 'light' (depthwise, grouped, shuffled, pointwise) or 'dense'
    spec: ConvSpec
    spatial: tuple[int, ...]
    shuffle: int = 0

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.in_channels, *self.spatial)

    def flops(self, batch: int) -> int:
        return conv_cost(self.spec, self.input_shape(batch)).flops


SUITE = [
    Layer("stem 7x7/2 3->64 @224", "dense", ConvSpec(2, 3, 64, 7, 2, 3), (224, 224)),
    Layer("3x3 64->64 @56", "dense", ConvSpec(2, 64, 64, 3, 1, 1), (56, 56)),
    Layer("3x3 256->256 @14", "dense", ConvSpec(2, 256, 256, 3, 1, 1), (14, 14)),
    Layer("1x1 256->64 @56", "light", ConvSpec(2, 256, 64, 1), (56, 56)),
    Layer("dw 3x3 144 @56", "light", ConvSpec(2, 144, 144, 3, 1, 1, groups=144), (56, 56)),
    Layer("dw 3x3/2 96 @112", "light", ConvSpec(2, 96, 96, 3, 2, 1, groups=96), (112, 112)),
    Layer("grouped 3x3 g32 128 @56", "light", ConvSpec(2, 128, 128, 3, 1, 1, groups=32), (56, 56)),
    Layer("1x1 g3 240 @28 + shuffle", "light", ConvSpec(2, 240, 240, 1, groups=3), (28, 28), shuffle=3),
    Layer("conv1d 64->64 k5 L4096", "dense", ConvSpec(1, 64, 64, 5, 1, 2), (4096,)),
    Layer("conv3d 16->32 k3 16x32x32", "dense", ConvSpec(3, 16, 32, 3, 1, 1), (16, 32, 32)),
    Layer("transposed 3x3/2 64->32 @28", "dense",
          ConvSpec(2, 64, 32, 3, 2, 1, transposed=True, output_padding=1), (28, 28)),
]


# ---- machine ceilings --------------------------------------------------------------------------------------
def measure_peak_gflops(seconds: float = 0.3) -> float:
    """float32 GFLOP/s of a register-resident FMA loop on every Numba thread (the compute ceiling)."""
    from numba import get_num_threads

    from .kernels.cpu.peak import fma_loop
    buf = np.ones(64, np.float32)
    threads = get_num_threads()
    sink = np.zeros(threads * 64, np.float32)
    iterations = 1000
    fma_loop(buf, sink, 10, threads)
    while True:
        start = time.perf_counter()
        flops = fma_loop(buf, sink, iterations, threads)
        elapsed = time.perf_counter() - start
        if elapsed > seconds:
            return flops / elapsed / 1e9
        iterations *= 2


def measure_bandwidth_gbs(megabytes: int = 256) -> float:
    """Copy bandwidth (bytes read + written per second) of a parallel Numba copy, in GB/s."""
    from .kernels.cpu.peak import parallel_copy
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    parallel_copy(src, dst)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        parallel_copy(src, dst)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / min(times) / 1e9


# ---- contenders --------------------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    run: Callable[[], np.ndarray]
    layout: str = "nchw"  # how its output is laid out, for validation
    times: list[float] = field(default_factory=list)


def _shuffle_ref(y: np.ndarray, groups: int) -> np.ndarray:
    n, c = y.shape[:2]
    return y.reshape(n, groups, c // groups, *y.shape[2:]).swapaxes(1, 2).reshape(y.shape)


def numbaconv_contenders(layer: Layer, x: np.ndarray, w: np.ndarray) -> list[Contender]:
    from . import api
    spec = layer.spec
    nd = spec.ndim
    x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    prepared = api.prepare(spec, w, shuffle_groups=layer.shuffle)
    padding = tuple(p[0] for p in spec.padding)

    def public() -> np.ndarray:
        if spec.transposed:
            return getattr(api, f"conv_transpose{nd}d")(x, w, None, spec.stride, padding, spec.output_padding,
                                                        spec.groups, spec.dilation)
        if layer.shuffle:
            return api.shuffled_grouped_conv2d(x, w, None, spec.stride, padding, spec.dilation, spec.groups)
        return getattr(api, f"conv{nd}d")(x, w, None, spec.stride, padding, spec.dilation, spec.groups)

    return [Contender("numbaconv", public), Contender("numbaconv prepared", lambda: prepared(x)),
            Contender("numbaconv NHWC prepared", lambda: prepared(x_last, layout="channels_last"), "nhwc")]


def torch_contenders(layer: Layer, x: np.ndarray, w: np.ndarray, threads: int) -> list[Contender]:
    try:
        import torch
    except ImportError:
        return []
    torch.set_num_threads(threads)
    F = torch.nn.functional
    spec = layer.spec
    nd = spec.ndim
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    padding = tuple(p[0] for p in spec.padding)

    def call(a, b, memory_format=torch.contiguous_format):
        if spec.transposed:
            y = getattr(F, f"conv_transpose{nd}d")(a, b, None, spec.stride, padding, spec.output_padding,
                                                   spec.groups, spec.dilation)
        else:
            y = getattr(F, f"conv{nd}d")(a, b, None, spec.stride, padding, spec.dilation, spec.groups)
        if layer.shuffle:
            n, c = y.shape[:2]
            y = y.reshape(n, layer.shuffle, c // layer.shuffle, *y.shape[2:]).transpose(1, 2).reshape(y.shape)
            y = y.contiguous(memory_format=memory_format)
        return y

    result = [Contender("torch", lambda: call(tx, tw).numpy())]
    if nd in (2, 3):
        fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
        txl, twl = tx.contiguous(memory_format=fmt), tw.contiguous(memory_format=fmt)
        result.append(Contender("torch channels_last", lambda: call(txl, twl, fmt).numpy()))
    return result


def onnxruntime_contenders(layer: Layer, x: np.ndarray, w: np.ndarray, threads: int) -> list[Contender]:
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return []
    spec = layer.spec
    nd = spec.ndim
    y_shape = list(spec.output_shape(x.shape))
    attrs = dict(kernel_shape=list(spec.kernel_size), strides=list(spec.stride), dilations=list(spec.dilation),
                 group=spec.groups,
                 pads=[p[0] for p in spec.padding] + [p[1] for p in spec.padding] if spec.padding != "same" else None)
    if spec.transposed:
        attrs["output_padding"] = list(spec.output_padding)
    attrs = {k: v for k, v in attrs.items() if v is not None}
    nodes = [helper.make_node("ConvTranspose" if spec.transposed else "Conv", ["x", "w"],
                              ["conv" if layer.shuffle else "y"], **attrs)]
    inits = [numpy_helper.from_array(w, "w")]
    if layer.shuffle:
        g = layer.shuffle
        n, c = y_shape[:2]
        inits += [numpy_helper.from_array(np.array([n, g, c // g, *y_shape[2:]], np.int64), "s1"),
                  numpy_helper.from_array(np.array(y_shape, np.int64), "s2")]
        nodes += [helper.make_node("Reshape", ["conv", "s1"], ["r1"]),
                  helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 1] + list(range(3, 3 + nd))),
                  helper.make_node("Reshape", ["t1", "s2"], ["y"])]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no spinning between calls
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [Contender("onnxruntime", lambda: session.run(None, {"x": x})[0])]


def numpy_contender(layer: Layer, x: np.ndarray, w: np.ndarray) -> list[Contender]:
    """im2col by sliding windows, then one tensordot (BLAS) per group: the plain-NumPy way."""
    spec = layer.spec
    if spec.transposed or spec.ndim != 2:
        return []
    from numpy.lib.stride_tricks import sliding_window_view
    (pt, pb), (pl, pr) = spec.padding
    sh, sw = spec.stride
    kh, kw = spec.kernel_size
    G = spec.groups

    def run() -> np.ndarray:
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # N C OH OW kh kw
        n, c, oh, ow = win.shape[:4]
        wg = w.reshape(G, -1, c // G, kh, kw)
        parts = [np.einsum("nchwij,ocij->nohw", win[:, g * (c // G):(g + 1) * (c // G)], wg[g], optimize=True)
                 for g in range(G)]
        y = np.concatenate(parts, axis=1) if G > 1 else parts[0]
        return _shuffle_ref(y, layer.shuffle) if layer.shuffle else y

    return [Contender("numpy", run)]


# ---- the run -------------------------------------------------------------------------------------------------
def run_layer(layer: Layer, batch: int, threads: int, seconds: float = 1.0, peers: bool = True,
              rng: np.random.Generator | None = None) -> dict:
    """Time every contender on one layer, interleaved; validate each against the first peer that ran."""
    rng = rng or np.random.default_rng(0)
    x = (rng.standard_normal(layer.input_shape(batch)) + 0.1).astype(np.float32)
    w = (rng.standard_normal(layer.spec.weight_shape) * 0.1).astype(np.float32)
    contenders = numbaconv_contenders(layer, x, w)
    if peers:
        contenders += torch_contenders(layer, x, w, threads) + onnxruntime_contenders(layer, x, w, threads)
    # NumPy's BLAS threads busy-wait for about 0.1 s after each call, taking a core from whoever runs
    # next on a 2-core machine, so the NumPy baseline is timed on its own after the interleaved rounds.
    separate = numpy_contender(layer, x, w) if peers else []
    outputs = {c.name: c.run() for c in contenders + separate}  # first calls: compile, warm up
    expected = next((outputs[n] for n in ("torch", "onnxruntime", "numpy") if n in outputs), None)
    errors = {}
    for c in contenders + separate:
        y = outputs[c.name]
        y = np.moveaxis(y, -1, 1) if c.layout == "nhwc" else y
        if expected is not None:
            err = float(np.max(np.abs(y - expected)) / (np.max(np.abs(expected)) + 1e-30))
            errors[c.name] = err
            if err > 1e-3:
                raise AssertionError(f"{layer.name}: {c.name} differs from the peer by {err:.2e} (relative)")
    # Interleaved rounds, so machine noise hits every contender alike.  In each round a contender first
    # runs once untimed (the previous runtime's idle threads stop spinning, its own caches warm up), then
    # a block of calls lasting about 20 ms is timed as one.
    calls = {}
    for c in contenders:
        start = time.perf_counter()
        c.run()
        calls[c.name] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    deadline = time.perf_counter() + seconds * len(contenders)
    rounds = 0
    while rounds < 3 or (time.perf_counter() < deadline and rounds < 100):
        for c in contenders:
            c.run()
            start = time.perf_counter()
            for _ in range(calls[c.name]):
                c.run()
            c.times.append((time.perf_counter() - start) / calls[c.name])
        rounds += 1
    for c in separate:
        c.run()
        for _ in range(max(3, min(rounds, 10))):
            start = time.perf_counter()
            c.run()
            c.times.append(time.perf_counter() - start)
    contenders += separate
    flops = layer.flops(batch)
    cost = conv_cost(layer.spec, layer.input_shape(batch))
    rows = {c.name: {"median_ms": 1e3 * statistics.median(c.times), "gflops": flops / statistics.median(c.times) / 1e9,
                     "rounds": len(c.times), "max_rel_error": errors.get(c.name)} for c in contenders}
    from . import api
    kernel = api.prepare(layer.spec, w, shuffle_groups=layer.shuffle).kernel
    return {"layer": layer.name, "family": layer.family, "batch": batch, "flops": flops, "kernel": kernel,
            "intensity": cost.intensity, "results": rows}


def ratio(result: dict, ours: str, peer: str) -> float | None:
    r = result["results"]
    if ours in r and peer in r:
        return r[peer]["median_ms"] / r[ours]["median_ms"]
    return None


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def markdown_table(results: list[dict], peak: float) -> str:
    head = ("| layer | N | numbaconv ms | GFLOP/s | % peak | prepared ms | NHWC prep. ms | torch ms | torch CL ms "
            "| ort ms | numpy ms | vs torch | NHWC vs torch CL | vs ort |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for res in results:
        r = res["results"]
        ms = lambda name: f"{r[name]['median_ms']:.3f}" if name in r else "-"  # noqa: E731
        fmt = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731
        ours = r["numbaconv"]
        # Winograd does fewer multiply-adds: its GFLOP/s count the direct convolution's FLOPs (an effective rate).
        name = res["layer"] + (" (Winograd)" if res.get("kernel") == "winograd" else "")
        lines.append(
            f"| {name} | {res['batch']} | {ours['median_ms']:.3f} | {ours['gflops']:.1f} | "
            f"{100 * ours['gflops'] / peak:.0f}% | {ms('numbaconv prepared')} | {ms('numbaconv NHWC prepared')} | "
            f"{ms('torch')} | {ms('torch channels_last')} | {ms('onnxruntime')} | {ms('numpy')} | "
            f"{fmt(ratio(res, 'numbaconv', 'torch'))} | "
            f"{fmt(ratio(res, 'numbaconv NHWC prepared', 'torch channels_last'))} | "
            f"{fmt(ratio(res, 'numbaconv', 'onnxruntime'))} |")
    return "\n".join(lines)
