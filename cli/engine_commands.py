"""Commands that use the compute engine: info and bench.  Numba is imported inside each command."""
from __future__ import annotations

import json
import os

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
    with click.progressbar(length=len(layers) * len(batch or (1, 8)), label="layers", file=None) as bar:
        for n in batch or (1, 8):
            for layer in layers:
                results.append(B.run_layer(layer, n, threads, seconds, peers=not no_peers))
                bar.update(1)
    click.echo(B.markdown_table(results, peak))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"peak_gflops": peak, "threads": threads, "results": results}, f, indent=2)
