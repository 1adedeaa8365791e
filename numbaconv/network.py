"""Whole networks on numbaconv: a ``Graph`` (numbaconv.graph) with its weights, compiled into steps.

``Network`` runs the same graph that the cost model counts, so the two cannot drift.  At load time
BatchNorm is folded into the convolution before it (scale into the weights, shift into the bias), the
activation after it is applied to the convolution's output in place, and every convolution's weights are
packed once (``PreparedConv``).  Activations stay channels-last between layers: the input is converted
once and the output converted back once.

Parameters are a dict by node name: conv {"weight", "bias"?}; bn {"scale", "shift", "mean", "var",
"eps"?}; linear {"weight" (out, in), "bias"?}.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numba import get_num_threads

from .api import apply_activation
from .dispatch import is_pointwise
from .graph import Graph, Node
from .spec import ConvSpecError

ACTIVATION_OPS = ("relu", "relu6", "hardswish", "clip")
_SHAPES_KEPT = 64  # input shapes whose runners or plans each step keeps


def random_params(graph: Graph, seed: int = 0, dtype: Any = np.float32) -> dict[str, dict[str, np.ndarray]]:
    """He-normal convolution weights, plausible BatchNorm statistics, small linear weights: for every node."""
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, np.ndarray]] = {}
    for node in graph.nodes:
        if node.op == "conv":
            spec = node.attrs["spec"]
            fan_in = np.prod(spec.weight_shape[1:]) * (spec.groups if spec.transposed else 1)
            p = {"weight": (rng.standard_normal(spec.weight_shape) * np.sqrt(2.0 / fan_in)).astype(dtype)}
            if spec.bias:
                p["bias"] = (0.1 * rng.standard_normal(spec.out_channels)).astype(dtype)
            params[node.name] = p
        elif node.op == "bn":
            c = node.output_shape[1]
            params[node.name] = {"scale": rng.uniform(0.5, 1.5, c).astype(dtype),
                                 "shift": (0.1 * rng.standard_normal(c)).astype(dtype),
                                 "mean": (0.1 * rng.standard_normal(c)).astype(dtype),
                                 "var": rng.uniform(0.5, 1.5, c).astype(dtype), "eps": 1e-5}
        elif node.op == "linear":
            fin, fout = node.attrs["in_features"], node.attrs["out_features"]
            params[node.name] = {"weight": (rng.standard_normal((fout, fin)) / np.sqrt(fin)).astype(dtype)}
            if node.attrs["bias"]:
                params[node.name]["bias"] = (0.1 * rng.standard_normal(fout)).astype(dtype)
    return params


@dataclass
class Step:
    """One compiled op: ``run(*inputs) -> output``, reading and writing named channels-last values."""

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    run: Callable[..., np.ndarray]
    fused: tuple[str, ...] = ()
    flops: int = 0
    seconds: list[float] = field(default_factory=list)
    # run takes channels-last views of any strides (an NCHW input seen channels-last) without a copy first
    strided_input: bool = False


class Network:
    """A runnable network.  ``net(x)`` takes (N, C, *spatial) channels-first input (or channels-last with
    ``layout``) and returns the graph's output, 2D (N, F) or channels-first like the input.

    ``retain_memory`` (default True) asks glibc to keep freed memory in the process
    (``numbaconv.memory.retain_freed_memory``, process-wide): each call's layer buffers then come back
    from the heap instead of being page-faulted in again, which halved MobileNetV2's batch-1 latency here.
    """

    def __init__(self, graph: Graph, params: dict[str, dict[str, Any]], dtype: Any = np.float32,
                 retain_memory: bool = True):
        from .cost import node_cost
        if retain_memory:  # per-layer buffers reused from the heap instead of page-faulted in (numbaconv.memory)
            from .memory import retain_freed_memory
            retain_freed_memory()
        self.graph = graph
        self.params = params
        self.dtype = np.dtype(dtype)
        self.steps: list[Step] = []
        # Each step's runners (PreparedConv.runner and the chain's) by input shape, made for one thread
        # count: emptied when Numba's count changes between calls.
        self._runner_caches: list[dict] = []
        self._threads = 0
        producer = {node.output: node for node in graph.nodes}

        def channel_window(value: str) -> tuple[str, int]:
            """(the value read, first channel): a channel split's input and its start, so that a chain reads
            the half in place (no split step, no copy); else the value itself and 0."""
            node = producer.get(value)
            if node is not None and node.op == "split" and len(node.input_shapes[0]) == 4:
                return node.inputs[0], node.attrs["start"]
            return value, 0
        consumers: dict[str, list[Node]] = {}
        for node in graph.nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        outputs = {t.name for t in graph.outputs}

        def sole_next(value: str, op: tuple[str, ...]) -> Node | None:
            """The one node that consumes ``value``, if it is one of ``op`` (then it can be fused)."""
            users = consumers.get(value, [])
            if len(users) == 1 and users[0].op in op and value not in outputs:
                return users[0]
            return None

        def partner(node: Node | None, value: str, same_shape: bool = True) -> str | None:
            """The other input of a two-input ``node`` (add, concat) beside ``value``; with ``same_shape``
            both inputs must have one shape (no broadcasting), else only the batch and spatial sizes."""
            if node is None or len(node.inputs) != 2 or node.inputs[0] == node.inputs[1] or node.name in absorbed:
                return None
            a, b = node.input_shapes
            if (a != b) if same_shape else (a[0] != b[0] or a[2:] != b[2:]):
                return None
            return node.inputs[1] if node.inputs[0] == value else node.inputs[0]

        def match_chain(first: Node):
            """(convs, bns, acts, add, add's other summand, shuffle) when ``first`` starts a pointwise ->
            depthwise -> pointwise chain (each with optional BatchNorm and clamp, a channel shuffle allowed
            after the first, the last with an optional skip connection) that fused_blocks computes, else
            None."""
            from .fused_blocks import chain_fits
            convs, bns, acts, add, other, shuffle = [first], [], [], None, None, None
            for stage in range(3):
                conv = convs[-1]
                bn = sole_next(conv.output, ("bn",))
                bns.append(bn)
                if stage == 2:
                    add = sole_next((bn or conv).output, ("add",))
                    other = partner(add, (bn or conv).output)
                    add = add if other is not None else None
                act = sole_next((add or bn or conv).output, ACTIVATION_OPS)
                acts.append(act)
                if stage < 2:
                    after = (act or bn or conv).output
                    if stage == 0:  # ShuffleNet v1: the shuffle is folded into the later stages' weights
                        shuffle = sole_next(after, ("shuffle",))
                        after = shuffle.output if shuffle is not None else after
                    convs.append(sole_next(after, ("conv",)))
                    if convs[-1] is None:
                        return None
            clamps = tuple(_clamp_bounds(a) for a in acts)
            if clamps[2] == "unsupported":  # hard-swish after the projection: a step of its own after the chain
                acts[2], clamps = None, (*clamps[:2], None)
            groups = shuffle.attrs["groups"] if shuffle is not None else 0
            if "unsupported" in clamps or chain_fits(*(c.attrs["spec"] for c in convs), clamps, groups):
                return None
            return convs, bns, acts, add, other, shuffle

        def absorbable_pool(pool: Node | None, first: Node, depthwise: Node) -> Node | None:
            """``pool`` when it is an average pooling of the chain's own input (from its first channel, all
            of them) over the depthwise stage's windows (kernel, stride, padding), read by nothing else
            and not yet run: the chain's final pass then averages x itself, and no pooled tensor exists."""
            if pool is None or pool.op != "avgpool" or pool.inputs[0] != first.inputs[0] or produced(pool.output):
                return None
            spec, a = depthwise.attrs["spec"], pool.attrs
            bound = spec.bind(depthwise.input_shapes[0])
            if (sole_next(pool.output, ("concat",)) is None or channel_window(first.inputs[0])[1] != 0
                    or first.input_shapes[0][1] != first.attrs["spec"].in_channels or a.get("ceil_mode", False)
                    or not is_pointwise(first.attrs["spec"]) or tuple(a["kernel"]) != tuple(spec.kernel_size)
                    or tuple(a["stride"]) != tuple(spec.stride)
                    or tuple(map(tuple, a["padding"])) != tuple(zip(bound.pad_before, bound.pad_after))
                    or tuple(pool.output_shape[2:]) != tuple(depthwise.output_shape[2:])):
                return None
            return pool

        def produced(name: str) -> bool:
            return name == graph.input.name or any(step.output == name for step in self.steps)

        absorbed: set[str] = set()
        deferred: dict[str, Step] = {}  # add or concat node -> the step that writes its output, run there
        conv_outputs: set[str] = set()  # values written into fresh buffers by convolution steps
        for node in graph.nodes:
            if node.name in absorbed:
                if node.name in deferred:
                    self.steps.append(deferred.pop(node.name))
                continue
            flops = node_cost(node).flops
            chain = match_chain(node) if node.op == "conv" else None
            if chain is not None:
                convs, bns, acts, add, other, inner_shuffle = chain
                last = acts[2] or add or bns[2] or convs[2]
                # The unit's ending stored by the chain in one pass: ShuffleNet v2's shuffle(concat([kept,
                # branch]), 2), or v1's downsampling concat([avgpool(x), branch]).
                concat = sole_next(last.output, ("concat",)) if add is None else None
                shuffle = concat and sole_next(concat.output, ("shuffle",))
                result_first = mode = pooled = None
                if shuffle is not None and shuffle.attrs["groups"] == 2 and partner(concat, last.output):
                    other, mode = partner(concat, last.output), "interleave"
                elif partner(concat, last.output, same_shape=False):
                    other, mode = partner(concat, last.output, same_shape=False), "concat"
                    pool = absorbable_pool(producer.get(other), node, convs[1])
                    if pool is not None:  # avgpool(x) beside the branch: averaged by the chain's final pass
                        other, mode, pooled = None, "pooled", pool
                if mode is not None:
                    result_first = concat.inputs[0] == last.output
                tail = (concat, shuffle) if mode == "interleave" else (concat,) if mode else ()
                tail = (pooled, *tail) if mode == "pooled" else tail
                parts = (*convs[1:], *bns, *acts, inner_shuffle, add, *tail)
                fused = tuple(n.name for n in parts if n is not None)
                absorbed.update(fused)
                source, x_start = channel_window(node.inputs[0])
                other, other_start = channel_window(other) if other and mode == "interleave" else (other, 0)
                run, windowed = self._chain_step(params, convs, bns, acts, add is not None, result_first,
                                                 inner_shuffle.attrs["groups"] if inner_shuffle else 0, mode,
                                                 x_start, other_start, pooled and pooled.attrs)
                step = Step(node.name, "pw-dw-pw", (source, *((other,) if other else ())),
                            (tail[-1] if tail else last).output, run, fused,
                            sum(node_cost(n).flops for n in (convs[0], *parts) if n), strided_input=windowed)
                if other and not produced(other):  # the step waits for the other input at the add or concat
                    deferred[(add or concat).name] = step
                else:
                    self.steps.append(step)
                continue
            if node.op == "conv":
                bn = sole_next(node.output, ("bn",))
                add = sole_next(bn.output if bn else node.output, ("add",))
                other = partner(add, (bn or node).output)
                if other is not None:
                    # A skip connection: the convolution's epilogue adds the other summand (and applies the
                    # activation after the add); the step runs where the add was, once both summands exist.
                    act = sole_next(add.output, ACTIVATION_OPS)
                    fused = tuple(n.name for n in (bn, add, act) if n is not None)
                    absorbed.update(fused)
                    final = (act or add).output
                    step = self._conv_step(node, params, bn and params.get(bn.name), act, residual=True)
                    deferred[add.name] = Step(node.name, "conv", (node.inputs[0], other), final, step, fused,
                                              flops + sum(node_cost(n).flops for n in (bn, add, act) if n))
                    continue
                act = sole_next(bn.output if bn else node.output, ACTIVATION_OPS)
                pool = sole_next((act or bn or node).output, ("maxpool",))
                if pool is not None and self._conv_maxpool_fits(node, act, pool):
                    # A stem and its max pooling: the convolution's output never reaches memory.
                    fused = tuple(n.name for n in (bn, act, pool) if n is not None)
                    absorbed.update(fused)
                    self.steps.append(Step(node.name, "conv-maxpool", node.inputs, pool.output,
                                           self._conv_maxpool_step(node, params, bn, act, pool), fused,
                                           flops + sum(node_cost(n).flops for n in (bn, act, pool) if n),
                                           strided_input=True))
                    continue
                # A channel shuffle after a fused relu/relu6 (or none) is stored by the kernel itself; after
                # another activation it would run before that activation, which commutes with it anyway.
                shuffle = sole_next((act or bn or node).output, ("shuffle",))
                fused = tuple(n.name for n in (bn, act, shuffle) if n is not None)
                absorbed.update(fused)
                final = (shuffle or act or bn or node).output
                step = self._conv_step(node, params, bn and params.get(bn.name), act,
                                       shuffle.attrs["groups"] if shuffle else 0)
                conv_outputs.add(final)
                self.steps.append(Step(node.name, "conv", node.inputs, final, step, fused,
                                       flops + sum(node_cost(n).flops for n in (bn, act, shuffle) if n)))
                continue
            if node.op == "add":
                act = sole_next(node.output, ACTIVATION_OPS)
                # A summand that a convolution step just wrote and nothing else reads is overwritten with
                # the sum, and the activation after the add clips it in place: one pass, no allocation.
                target = next((i for i, name in enumerate(node.inputs)
                               if name in conv_outputs and sole_next(name, ("add",)) is node), None)
                if act is not None:
                    absorbed.add(act.name)
                self.steps.append(Step(node.name, "add", node.inputs, (act or node).output,
                                       _add_step(target, act.op if act else None, act.attrs if act else None),
                                       (act.name,) if act else (), flops + (node_cost(act).flops if act else 0)))
                continue
            self.steps.append(Step(node.name, node.op, node.inputs, node.output, self._op_step(node, params),
                                   flops=flops))
        self.input_name = graph.input.name
        self.output_name = graph.output.name
        # Steps whose output nothing reads any more (a split that the chains read in place) are dropped.
        read = {name for step in self.steps for name in step.inputs} | {self.output_name}
        self.steps = [step for step in self.steps if step.output in read]
        # Each value is dropped right after its last reader, so the next layer's output reuses a block that
        # was just read (still in cache) rather than one untouched since the previous call.
        last_reader: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            for name in step.inputs:
                last_reader[name] = index
        # A channels-first input goes to the steps as a channels-last view when they all read such views
        # themselves (a stem staging its input rows), saving the transposing copy, a pass over the input.
        readers = [step for step in self.steps if self.input_name in step.inputs]
        self._input_as_view = bool(readers) and all(step.strided_input for step in readers)
        self._release: list[tuple[str, ...]] = [() for _ in self.steps]
        for name, index in last_reader.items():
            if name != self.output_name:
                self._release[index] += (name,)

    # ---- compilation --------------------------------------------------------------------------------------
    def _folded(self, node: Node, params: dict, bn: dict | None) -> tuple:
        """(spec, weight, bias or None) of a convolution in the network's dtype, BatchNorm folded in."""
        spec = node.attrs["spec"]
        p = params.get(node.name)
        if p is None or "weight" not in p:
            raise ConvSpecError(f"no weight for convolution {node.name!r}")
        weight = np.asarray(p["weight"], np.float64)
        bias = np.asarray(p["bias"], np.float64) if p.get("bias") is not None else None
        if bn is not None:  # y = (conv + b - mean) * scale / sqrt(var + eps) + shift
            factor = np.asarray(bn["scale"], np.float64) / np.sqrt(np.asarray(bn["var"], np.float64) + bn.get("eps", 1e-5))
            if spec.transposed:  # weight (C_in, C_out/G, *k): output channel o = g*C_out/G + j
                g, cin, cog = spec.groups, spec.in_channels, spec.out_channels // spec.groups
                wg = weight.reshape(g, cin // g, cog, -1) * factor.reshape(g, 1, cog, 1)
                weight = wg.reshape(weight.shape)
            else:
                weight = weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
            bias = (np.zeros(spec.out_channels) if bias is None else bias) - np.asarray(bn["mean"], np.float64)
            bias = bias * factor + np.asarray(bn["shift"], np.float64)
        return (spec.replace(bias=bias is not None), weight.astype(self.dtype),
                None if bias is None else bias.astype(self.dtype))

    def _chain_step(self, params: dict, convs: list[Node], bns: list, acts: list, residual: bool,
                    result_first: bool | None = None, shuffle_groups: int = 0, mode: str | None = None,
                    x_start: int = 0, other_start: int = 0, pool: dict | None = None):
        """(run, windowed).  run(x) (or run(x, summand) with ``residual``, run(x, kept) when ``result_first``
        is not None: the result and ``kept`` concatenated and shuffled in 2 groups): a pointwise -> depthwise ->
        pointwise chain in one kernel (numbaconv.fused_blocks) when the input has rows enough for every
        thread, else layer by layer.  ``shuffle_groups``: a channel shuffle after the first convolution;
        ``mode`` 'concat': run(x, kept) returns the result concatenated with kept instead (after it unless
        ``result_first``); 'pooled': run(x) returns it concatenated with avgpool(x) (``pool``: the average
        pooling's attributes, over the depthwise stage's windows), averaged in the chain's final pass.  The
        chain reads x's channels from ``x_start`` (kept's from ``other_start``): a split read in place.
        windowed: the first convolution is a dense KxK one, whose kernel reads x through any strides."""
        from .fused_blocks import PreparedPointwiseDepthwisePointwise
        bn_params = [bn and params.get(bn.name) for bn in bns]
        folded = [self._folded(conv, params, bn) for conv, bn in zip(convs, bn_params)]
        chain = PreparedPointwiseDepthwisePointwise(tuple(f[0] for f in folded), tuple(f[1] for f in folded),
                                                    tuple(f[2] for f in folded), tuple(_clamp_bounds(a) for a in acts),
                                                    shuffle_groups)
        layers: list = []  # the three separate steps, built the first time an input needs them
        runners = self._runner_cache()
        c_in, c_out = convs[0].attrs["spec"].in_channels, convs[2].attrs["spec"].out_channels
        joined = (mode or "interleave") if result_first is not None else None
        pooling = _pool_step("avgpool", pool, self.dtype) if mode == "pooled" else None

        def run(x: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
            fused = _memoized(runners, (x.shape, None if other is None else other.shape), lambda: (
                chain.worthwhile((*x.shape[:3], c_in)) and chain.runner(
                    x.shape, self._threads, residual,
                    joined and (joined, pool.get("count_include_pad", True) if pooling else other.shape,
                                result_first), x_start, other_start)))
            if fused:
                return fused(x, other)
            x = x[..., x_start:x_start + c_in] if x.shape[-1] != c_in else _contiguous_channels_last(x)
            if joined == "interleave" and other.shape[-1] != c_out:
                other = other[..., other_start:other_start + c_out]
            if not layers:
                layers.extend(self._conv_step(conv, params, bn, act, shuffle_groups if i == 0 else 0,
                                              residual=residual and i == 2)
                              for i, (conv, bn, act) in enumerate(zip(convs, bn_params, acts)))
            y = layers[1](layers[0](x))
            y = layers[2](y, other) if residual else layers[2](y)
            if result_first is None:
                return y
            if mode == "pooled":
                other = pooling(x)
            if mode in ("concat", "pooled"):
                return np.concatenate([y, other] if result_first else [other, y], axis=-1)
            both = np.empty((*y.shape[:-1], 2 * y.shape[-1]), y.dtype)
            both[..., int(not result_first)::2], both[..., int(result_first)::2] = y, other
            return both

        return run, chain.window

    @staticmethod
    def _conv_maxpool_fits(conv: Node, act: Node | None, pool: Node) -> bool:
        """Whether fused_blocks.PreparedConvMaxPool computes this convolution, activation and max pooling,
        with the graph's pooled shape."""
        from .fused_blocks import conv_maxpool_fits, pooled_size
        spec, a = conv.attrs["spec"], pool.attrs
        if conv_maxpool_fits(spec, _clamp_bounds(act), (a["kernel"], a["stride"], a["padding"],
                                                          a.get("ceil_mode", False))):
            return False
        sizes = tuple(pooled_size(length, k, s, p, a.get("ceil_mode", False))
                      for length, k, s, p in zip(conv.output_shape[2:], a["kernel"], a["stride"], a["padding"]))
        return sizes == tuple(pool.output_shape[2:])

    def _conv_maxpool_step(self, node: Node, params: dict, bn: Node | None, act: Node | None, pool: Node):
        """run(x): maxpool(activation(conv(x))) in one kernel (numbaconv.fused_blocks) where every thread
        gets rows enough, else the convolution step and the pooling step."""
        from .fused_blocks import PreparedConvMaxPool
        bn_params = bn and params.get(bn.name)
        spec, weight, bias = self._folded(node, params, bn_params)
        a = pool.attrs
        fused = PreparedConvMaxPool(spec, weight, bias, _clamp_bounds(act),
                                    (a["kernel"], a["stride"], a["padding"], a.get("ceil_mode", False)))
        layers: list = []

        def run(x: np.ndarray) -> np.ndarray:
            if fused.worthwhile(x.shape):
                return fused(x)
            if not layers:
                layers.extend((self._conv_step(node, params, bn_params, act), _pool_step("maxpool", a, self.dtype)))
            return layers[1](layers[0](_contiguous_channels_last(x)))

        return run

    def _conv_step(self, node: Node, params: dict, bn: dict | None, act: Node | None, shuffle_groups: int = 0,
                   residual: bool = False):
        """run(x) (or run(x, summand) with ``residual``): the convolution with BatchNorm folded in, the
        summand added and the activation applied, channels-last."""
        from .api import prepare
        spec, weight, bias = self._folded(node, params, bn)
        kind = act.op if act is not None else None
        fused = kind if kind in ("relu", "relu6", "hardswish") else None  # clip keeps its own bounds
        prepared = prepare(spec, weight, bias, shuffle_groups=shuffle_groups, activation=fused)
        after = None if fused else kind
        attrs = act.attrs if act is not None else None
        runners = self._runner_cache()

        def run(x: np.ndarray, *summand: np.ndarray) -> np.ndarray:
            y = _memoized(runners, x.shape, lambda: prepared.runner(x.shape, "channels_last", residual,
                                                                     self._threads))(x, *summand)
            return apply_activation(y, after, attrs) if after else y

        return run

    def _runner_cache(self) -> dict:
        """A step's dict of runners by input shape (_memoized), emptied when the thread count changes
        (__call__)."""
        cache: dict = {}
        self._runner_caches.append(cache)
        return cache

    def _op_step(self, node: Node, params: dict):
        op, a = node.op, node.attrs
        if op == "bn":
            p = params[node.name]
            factor = (np.asarray(p["scale"]) / np.sqrt(np.asarray(p["var"]) + p.get("eps", 1e-5))).astype(self.dtype)
            shift = (np.asarray(p["shift"]) - np.asarray(p["mean"]) * factor).astype(self.dtype)
            return lambda x: x * factor + shift
        if op in ACTIVATION_OPS:
            return lambda x: apply_activation(x.copy(), op, a)
        if op == "add":
            return lambda x, y: x + y
        if op == "concat":
            return lambda *xs: np.concatenate(xs, axis=-1)
        if op == "split":
            return lambda x: x[..., a["start"]:a["stop"]]
        if op == "shuffle":
            from .api import channel_shuffle
            return lambda x: channel_shuffle(x, a["groups"], layout="channels_last", device="cpu")
        if op in ("maxpool", "avgpool"):
            return _pool_step(op, a, self.dtype)
        if op == "global_avgpool":
            return _global_avgpool_step
        if op == "flatten":  # flatten in channels-first order, as ONNX and PyTorch do
            return lambda x: np.ascontiguousarray(np.moveaxis(x, -1, 1)).reshape(x.shape[0], -1) if x.ndim > 2 else x
        if op == "linear":  # a 1x1 convolution on one pixel: the SIMD kernel, not BLAS (whose idle threads
            # spin against Numba's on a small machine: 5 ms instead of 0.2 ms for MobileNetV2's classifier)
            from .api import prepare
            from .spec import ConvSpec
            p = params[node.name]
            has_bias = p.get("bias") is not None
            spec = ConvSpec(1, a["in_features"], a["out_features"], 1, bias=has_bias)
            weight = np.asarray(p["weight"], self.dtype)[:, :, None]
            prepared = prepare(spec, weight, np.asarray(p["bias"], self.dtype) if has_bias else None)
            runners = self._runner_cache()

            def run_linear(x: np.ndarray) -> np.ndarray:
                # The batch as one signal of N positions: its rows of pixels then fill whole 6-pixel blocks,
                # where N one-pixel images ran latency-bound one pixel at a time (4x slower at batch 16).
                runner = _memoized(runners, x.shape, lambda: prepared.runner((1, *x.shape), "channels_last", False,
                                                                             self._threads))
                return runner(x[None])[0]
            return run_linear
        raise ConvSpecError(f"no executor for op {op!r} (node {node.name!r})")

    # ---- running ---------------------------------------------------------------------------------------------
    def __call__(self, x: np.ndarray, layout: str | None = None, timed: bool = False) -> np.ndarray:
        from .api import channels_last, to_channels_last
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"input has dtype {x.dtype} but the network runs in {self.dtype}")
        last = channels_last(layout)
        expected = self.graph.input.shape[1:]
        got = (x.shape[-1], *x.shape[1:-1]) if last else x.shape[1:]
        if tuple(got) != tuple(expected):
            raise ConvSpecError(f"input must have shape (N, {', '.join(map(str, expected))}) "
                                f"{'channels-last ' if last else ''}for {self.graph.name}, got {x.shape}")
        threads = get_num_threads()
        if threads != self._threads:  # runners were planned for another thread count
            for cache in self._runner_caches:
                cache.clear()
            self._threads = threads
        if not last:
            x = np.moveaxis(x, 1, -1) if self._input_as_view else to_channels_last(x)
        values = {self.input_name: x}
        for step, release in zip(self.steps, self._release):
            start = time.perf_counter() if timed else 0.0
            values[step.output] = step.run(*(values[name] for name in step.inputs))
            for name in release:
                del values[name]
            if timed:
                step.seconds.append(time.perf_counter() - start)
        y = values[self.output_name]
        return y if y.ndim == 2 or last else np.ascontiguousarray(np.moveaxis(y, -1, 1))

    @classmethod
    def from_catalogue(cls, name: str, params: dict | None = None, seed: int = 0, dtype: Any = np.float32,
                       **options) -> "Network":
        """A catalogue model (numbaconv.cost.MODELS) with ``params`` or random weights."""
        from .cost import build_model
        graph = build_model(name, **options)
        return cls(graph, params if params is not None else random_params(graph, seed, dtype), dtype)


def _memoized(cache: dict, key: Any, make: Callable[[], Any]) -> Any:
    """cache[key], made by make() the first time (a step's runner or plan for one input shape); a cache
    holding _SHAPES_KEPT keys is emptied first, so a caller cycling through shapes cannot grow it."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= _SHAPES_KEPT:
            cache.clear()
        found = cache[key] = make()
    return found


def _contiguous_channels_last(x: np.ndarray) -> np.ndarray:
    """x (N, *spatial, C) C-contiguous: itself, or a copy by the layout kernels (a channels-last view of a
    channels-first array is the transpose they copy fastest)."""
    from .api import to_channels_last
    return x if x.flags.c_contiguous else to_channels_last(np.moveaxis(x, -1, 1))


def _clamp_bounds(act: Node | None):
    """An activation as a fused_blocks clamp: None, 'relu', 'relu6' or clip's (low, high); else 'unsupported'."""
    if act is None or act.op in ("relu", "relu6"):
        return act and act.op
    if act.op == "clip":
        return (float(act.attrs.get("min", -np.inf)), float(act.attrs.get("max", np.inf)))
    return "unsupported"


def _add_step(target: int | None, activation: str | None, attrs: dict | None):
    """x + y, written over summand ``target`` (0 or 1) when there is one, then the fused activation in place."""

    from .api import _CLAMPS
    from .kernels.cpu.elementwise import add_clamped
    clamp = activation in _CLAMPS
    low, high = _CLAMPS.get(activation, (0.0, 0.0))

    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if x.shape != y.shape or x.dtype != y.dtype or not (x.flags.c_contiguous and y.flags.c_contiguous):
            return apply_activation(np.add(x, y), activation, attrs)  # broadcasting or strided: NumPy
        out = (x, y)[target] if target is not None else np.empty_like(x)
        add_clamped(x.reshape(-1), y.reshape(-1), out.reshape(-1), clamp, low, high)
        return out if clamp else apply_activation(out, activation, attrs)

    return run


def _global_avgpool_step(x: np.ndarray) -> np.ndarray:
    """Channels-last (N, *spatial, C) -> (N, C): the mean over every spatial position."""
    from .kernels.cpu.pool import global_average_channels_last
    if x.ndim <= 2:
        return x
    out = np.empty((x.shape[0], x.shape[-1]), x.dtype)
    global_average_channels_last(np.ascontiguousarray(x).reshape(x.shape[0], -1, x.shape[-1]), out)
    return out


def _pool_step(op: str, a: dict, dtype: np.dtype):
    """Max or average pooling on channels-last (N, *spatial, C) data, with the graph's padding."""
    from .fused_blocks import pooled_size
    from .kernels.cpu.pool import pool_channels_last
    kernel, stride, pads = a["kernel"], a["stride"], a["padding"]
    include_pad, ceil_mode = a.get("count_include_pad", True), a.get("ceil_mode", False)

    from .kernels.index import leading

    def pad3(values, fill):
        return leading(values, 3, fill)

    plans: dict = {}  # input shape -> (5D input shape, 5D output shape, result shape, kernel arguments)

    def plan(shape: tuple) -> tuple:
        nd = len(shape) - 2
        sizes = tuple(pooled_size(shape[1 + i], kernel[i], stride[i], pads[i], ceil_mode) for i in range(nd))
        padded = tuple(shape[1 + i] + pads[i][0] + pads[i][1] for i in range(nd))
        arguments = (*pad3(kernel, 1), *pad3(stride, 1), *pad3(tuple(p[0] for p in pads), 0), op == "maxpool",
                     include_pad, *pad3(padded, 1))
        return ((shape[0], *pad3(shape[1:-1], 1), shape[-1]), (shape[0], *pad3(sizes, 1), shape[-1]),
                (shape[0], *sizes, shape[-1]), arguments)

    def run(x: np.ndarray) -> np.ndarray:
        in5, out5, result, arguments = _memoized(plans, x.shape, lambda: plan(x.shape))
        out = np.empty(out5, x.dtype)
        pool_channels_last(np.ascontiguousarray(x).reshape(in5), out, *arguments)
        return out.reshape(result)

    return run
