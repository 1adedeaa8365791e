"""CPU benchmark: the layer suite through numbaconv, torch, onnxruntime and NumPy, in one interleaved run.

    python perf/bench_cpu.py [--threads 2] [--seconds 1] [--batch 1 --batch 8] [--only dw]

Prints the table, writes perf/results/cpu.json, perf/results/cpu.md and (with matplotlib) cpu_roofline.png.
Also times the first call of each kernel family cold (empty Numba cache) and from the on-disk cache.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMPILE_PROBE = """
import time, numpy as np
t0 = time.perf_counter()
import numbaconv as nc
from numbaconv.benchmark import SUITE
from numbaconv import api
t_import = time.perf_counter() - t0
times = {}
for layer in SUITE:
    x = np.ones(layer.input_shape(1), np.float32)
    w = np.ones(layer.spec.weight_shape, np.float32)
    start = time.perf_counter()
    api.prepare(layer.spec, w, shuffle_groups=layer.shuffle)(x)
    times[layer.name] = time.perf_counter() - start
print(repr((t_import, times)))
"""


def compile_times() -> dict:
    """First call of every suite layer in a fresh process: with an empty cache, then from the cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        runs = {}
        for label in ("cold", "cached"):
            out = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True,
                                 check=True).stdout
            t_import, times = eval(out.strip().splitlines()[-1])  # our own repr, printed just above
            runs[label] = {"import_s": t_import, "first_call_s": times, "total_s": t_import + sum(times.values())}
        return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.6, help="timing budget per contender and layer")
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 8)")
    parser.add_argument("--only", default="", help="run the layers whose name contains this text")
    parser.add_argument("--no-compile-times", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "perf" / "results"), help="folder for cpu.json/md/png")
    parser.add_argument("--release-memory", action="store_true",
                        help="leave glibc returning freed memory to the OS (by default it keeps it, as a Network does)")
    args = parser.parse_args()
    from numbaconv.memory import retain_freed_memory
    retained = False if args.release_memory else retain_freed_memory()

    import numba
    numba.set_num_threads(args.threads)
    from numbaconv import benchmark as B
    from numbaconv.kernels.cpu.simd import VECTOR_BYTES

    peak = B.measure_peak_gflops()
    bandwidth = B.measure_bandwidth_gbs()
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{8 * VECTOR_BYTES}-bit vectors; peak {peak:.0f} GFLOP/s (FMA loop), copy {bandwidth:.1f} GB/s")
    results = []
    for batch in args.batch or [1, 8]:
        for layer in B.SUITE:
            if args.only and args.only not in layer.name:
                continue
            res = B.run_layer(layer, batch, args.threads, args.seconds)
            results.append(res)
            r = res["results"]
            peers = "  ".join(f"{name} {v['median_ms']:.3f}" for name, v in r.items() if name != "numbaconv")
            print(f"{layer.name:30s} N={batch}: numbaconv {r['numbaconv']['median_ms']:.3f} ms "
                  f"({r['numbaconv']['gflops']:.0f} GFLOP/s) | {peers}", flush=True)
    summary = summarize(B, results)
    table = B.markdown_table(results, peak)
    header = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()} "
              f"({os.cpu_count()} cores, {8 * VECTOR_BYTES}-bit vectors), {args.threads} threads, float32. "
              f"Peak {peak:.0f} GFLOP/s (register FMA loop), copy bandwidth {bandwidth:.1f} GB/s. "
              f"Ratios are peer time / numbaconv time in the same run (>1: numbaconv faster). "
              f"Layers marked Winograd do fewer multiply-adds than a direct convolution; their GFLOP/s and % peak "
              f"count the direct convolution's FLOPs (an effective rate). "
              f"glibc {'keeps freed memory in the process for every contender (numbaconv.memory)' if retained else 'returns freed memory to the OS (default malloc settings)'}.")
    print("\n" + table + "\n")
    for key, value in summary.items():
        print(f"{key}: {value:.2f}x" if value else f"{key}: -")
    compile_info = None if args.no_compile_times else compile_times()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"peak_gflops": peak, "bandwidth_gbs": bandwidth, "threads": args.threads, "summary": summary,
               "compile": compile_info, "results": results}
    (out / "cpu.json").write_text(json.dumps(payload, indent=2))
    lines = [header, "", table, "", "| target | measured |", "|---|---|"]
    lines += [f"| {k} | {v:.2f}x |" if v else f"| {k} | - |" for k, v in summary.items()]
    if compile_info:
        lines += ["", f"First call of every suite layer in a new process: cold (empty cache) "
                      f"{compile_info['cold']['total_s']:.1f} s, from the on-disk cache "
                      f"{compile_info['cached']['total_s']:.2f} s (import {compile_info['cached']['import_s']:.2f} s)."]
        print(lines[-1])
    (out / "cpu.md").write_text("\n".join(lines) + "\n")
    roofline(results, peak, bandwidth, out / "cpu_roofline.png")


def summarize(B, results: list[dict]) -> dict:
    light = [r for r in results if r["family"] == "light"]
    dense = [r for r in results if r["family"] == "dense"]
    cl = lambda rs: [B.ratio(r, "numbaconv NHWC prepared", "torch channels_last") for r in rs]  # noqa: E731
    return {
        "geomean vs torch NCHW, light layers": B.geomean([B.ratio(r, "numbaconv", "torch") for r in light]),
        "geomean vs torch NCHW, dense layers": B.geomean([B.ratio(r, "numbaconv", "torch") for r in dense]),
        "geomean NHWC vs torch channels_last, all": B.geomean(cl(results)),
        "geomean prepared vs torch NCHW, all": B.geomean([B.ratio(r, "numbaconv prepared", "torch") for r in results]),
        "geomean vs onnxruntime, all": B.geomean([B.ratio(r, "numbaconv", "onnxruntime") for r in results]),
    }


def roofline(results: list[dict], peak: float, bandwidth: float, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no roofline picture")
        return
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = np.logspace(-1, 3, 200)
    ax.plot(xs, np.minimum(peak, xs * bandwidth), "k-", lw=1, label="ceiling: min(peak, intensity x bandwidth)")
    for name, marker in (("numbaconv", "o"), ("torch", "x"), ("torch channels_last", "+")):
        pts = [(r["intensity"], r["results"][name]["gflops"]) for r in results if name in r["results"]]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=name)
    for r in results:
        if "numbaconv" in r["results"]:
            ax.annotate(f"{r['layer'].split(' @')[0]} N{r['batch']}", (r["intensity"], r["results"]["numbaconv"]["gflops"]),
                        fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, input + weights + output once)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"CPU roofline: peak {peak:.0f} GFLOP/s, copy {bandwidth:.0f} GB/s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
