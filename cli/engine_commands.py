"""Commands that use the compute engine: info and bench.  Numba is imported inside each command."""
from __future__ import annotations

import json
import os
import sys

import click


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def info(fmt):
    """What the dispatcher sees: Numba, threads, SIMD width, and whether a CUDA GPU is usable (and why not)."""
    import numba
    import numpy

    from numbaconv.cuda_api import cuda_status
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES, VECTOR_REGISTERS
    usable, why = cuda_status()
    details = {"numba": numba.__version__, "numpy": numpy.__version__,
               "threading_layer": numba.config.THREADING_LAYER, "threads": numba.get_num_threads(),
               "simd_bits": 8 * VECTOR_BYTES, "simd_registers": VECTOR_REGISTERS, "cuda": usable, "cuda_detail": why}
    try:  # the layer actually chosen is only known after a parallel function has run
        from numbaconv.kernels.cpu.peak import parallel_copy
        parallel_copy(numpy.zeros(4, numpy.float32), numpy.zeros(4, numpy.float32))
        details["threading_layer"] = numba.threading_layer()
    except Exception as e:
        details["threading_layer"] = f"{details['threading_layer']} ({e})"
    if usable and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        from numba import cuda
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        details.update(gpu=name, compute_capability=".".join(map(str, device.compute_capability)))
    if fmt == "json":
        click.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        click.echo(f"{key:18s} {value}")


@click.command()
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Numba and torch threads (default: all).")
@click.option("--batch", type=click.IntRange(min=1), multiple=True, help="Batch sizes (default 1 and 8).")
@click.option("--only", default="", help="Run the suite layers whose name contains this text.")
@click.option("--seconds", type=float, default=0.5, show_default=True, help="Timing budget per contender and layer.")
@click.option("--no-peers", is_flag=True, help="Time numbaconv alone (no torch, onnxruntime, NumPy).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the results as JSON to this file.")
def bench(threads, batch, only, seconds, no_peers, json_path):
    """Time the CPU layer suite against PyTorch, onnxruntime and NumPy (whichever are installed).

    Ratios are peer time / numbaconv time from the same interleaved run (>1: numbaconv faster); the
    percentage is of the machine's float32 peak, measured here with a register-resident FMA loop.
    perf/bench_cpu.py runs the same harness and writes the committed tables.
    """
    import numba

    from numbaconv import benchmark as B
    if threads:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    peak = B.measure_peak_gflops()
    click.echo(f"peak {peak:.0f} GFLOP/s on {threads} threads")
    results = []
    layers = [layer for layer in B.SUITE if only in layer.name]
    if not layers:
        raise click.BadParameter(f"no suite layer contains {only!r}", param_hint="--only")
    with click.progressbar(length=len(layers) * len(batch or (1, 8)), label="layers",
                           file=sys.stderr) as bar:
        for n in batch or (1, 8):
            for layer in layers:
                results.append(B.run_layer(layer, n, threads, seconds, peers=not no_peers))
                bar.update(1)
    click.echo(B.markdown_table(results, peak))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"peak_gflops": peak, "threads": threads, "results": results}, f, indent=2)


@click.command()
@click.argument("model")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size  [default: the --input's, else 1]")
@click.option("--resolution", type=click.IntRange(min=8), default=224, show_default=True,
              help="Catalogue models: input size.")
@click.option("--width", type=float, default=1.0, show_default=True, help="Catalogue models: width multiplier.")
@click.option("--groups", type=click.IntRange(min=1), default=3, show_default=True, help="ShuffleNet v1 groups.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Numba threads (default: all cores).")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A .npy input of the model's shape (default: random).")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Save the network's output to this .npy file.")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs after warm-up.")
@click.option("--layers", "show_layers", type=click.IntRange(min=0), default=15, show_default=True,
              help="How many of the slowest layers to list.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def run(model, batch, resolution, width, groups, device, threads, input_path, output_path, runs, show_layers, fmt):
    """Run inference of a catalogue model (random weights) or an ONNX file, and time it.

    Prints latency (median and p90), throughput, the GFLOP/s achieved (FLOPs from the cost model) and the
    time per layer.  Examples: numbaconv run mobilenet_v2 --batch 8 --runs 30;
    numbaconv run model.onnx --input images.npy --output logits.npy
    """
    import time

    import numba
    import numpy as np

    from numbaconv.cost import graph_cost, total_cost
    from numbaconv.network import Network
    from numbaconv.spec import ConvSpecError
    if device == "cuda":
        raise click.BadParameter("whole networks run on the CPU for now; single layers take device='cuda'",
                                 param_hint="--device")
    if threads:
        numba.set_num_threads(threads)
    x = None
    if input_path:
        try:
            x = np.load(input_path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise click.BadParameter(f"is not a readable .npy array: {e}", param_hint="--input") from None
        if x.ndim < 2:
            raise click.BadParameter(f"has shape {x.shape}; the model takes (N, C, ...)", param_hint="--input")
        batch = batch or x.shape[0]
    batch = batch or 1
    try:
        if model.lower().endswith(".onnx"):
            from numbaconv.onnx_import import load_onnx
            net = load_onnx(model, batch=batch)
        else:
            net = Network.from_catalogue(model, batch=batch, resolution=resolution, width=width, groups=groups)
    except ConvSpecError as e:
        raise click.BadParameter(str(e), param_hint="MODEL") from None
    shape = net.graph.input.shape
    if x is None:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    elif x.shape != shape:
        raise click.BadParameter(f"has shape {x.shape}, the model takes {shape}", param_hint="--input")
    start = time.perf_counter()
    y = net(x)  # compiles (or loads from the cache) every kernel the model needs
    first = time.perf_counter() - start
    if output_path:
        np.save(output_path, y)
    for step in net.steps:
        step.seconds.clear()
    times = []
    with click.progressbar(range(runs), label=f"{net.graph.name} x{runs}", file=sys.stderr,
                           show_eta=False) as bar:
        for _ in bar:
            start = time.perf_counter()
            y = net(x, timed=True)
            times.append(time.perf_counter() - start)
    total = total_cost(graph_cost(net.graph))
    median, p90 = float(np.median(times)), float(np.percentile(times, 90))
    layers = sorted(net.steps, key=lambda s: -float(np.median(s.seconds)))
    rows = [{"layer": s.name, "op": s.op + ("+" + "+".join(n.split(".")[-1] for n in s.fused) if s.fused else ""),
             "median_ms": 1e3 * float(np.median(s.seconds)), "gflops": s.flops / float(np.median(s.seconds)) / 1e9}
            for s in layers]
    summary = {"model": net.graph.name, "input_shape": list(shape), "output_shape": list(y.shape),
               "threads": numba.get_num_threads(), "first_call_s": first, "latency_median_ms": 1e3 * median,
               "latency_p90_ms": 1e3 * p90, "throughput_per_s": batch / median, "flops": total.flops,
               "macs": total.macs, "gflops": total.flops / median / 1e9, "layers": rows,
               **({"output_path": output_path} if output_path else {})}
    if fmt == "json":
        import json
        click.echo(json.dumps(summary, indent=2))
        return
    saved = f"; output {tuple(y.shape)} saved to {output_path}" if output_path else ""
    click.echo(f"{net.graph.name}: input {'x'.join(map(str, shape))}, {numba.get_num_threads()} threads, "
               f"first call {first:.2f} s{saved}")
    click.echo(f"latency median {1e3 * median:.2f} ms, p90 {1e3 * p90:.2f} ms; throughput {batch / median:.1f} "
               f"images/s; {total.flops / median / 1e9:.1f} GFLOP/s ({total.macs / 1e6:.0f}M MACs per run)")
    share = sum(r["median_ms"] for r in rows)
    click.echo(f"\n{'layer':40s} {'op':22s} {'ms':>8s} {'share':>6s} {'GFLOP/s':>8s}")
    for r in rows[:show_layers]:
        click.echo(f"{r['layer'][:40]:40s} {r['op'][:22]:22s} {r['median_ms']:8.3f} "
                   f"{100 * r['median_ms'] / share:5.1f}% {r['gflops']:8.1f}")
