"""GPU benchmark: the layer suite through numbaconv's CUDA kernels and PyTorch (cuDNN, TF32 off), same run.

    python perf/bench_gpu.py [--batch 32] [--out perf/results]

Times with CUDA events after warm-up (median), validates each result against cuDNN first, and reports
GFLOP/s, GB/s, the fractions of the two floors (FLOPs over the measured FP32 rate of cuBLAS, bytes over the
measured copy bandwidth) and the ratio to cuDNN NCHW and channels_last.  Writes gpu.json and gpu.md, and
the registers and local (spill) memory of each compiled kernel.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cuda_time_ms(torch, fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "perf" / "results"))
    args = parser.parse_args()

    import torch
    import numbaconv as nc
    from numbaconv.benchmark import SUITE
    from numbaconv.cost.layers import conv_cost
    from numbaconv.cuda_api import gpu_kernel
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    F = torch.nn.functional
    dev = torch.device("cuda")

    big = torch.empty(2**28, device=dev)
    copy_ms = cuda_time_ms(torch, lambda: big.clone(), 10)
    bandwidth = 2 * big.numel() * 4 / copy_ms / 1e6  # GB/s, read + write
    a = torch.randn(8192, 8192, device=dev)
    gemm_ms = cuda_time_ms(torch, lambda: a @ a, 5)
    fp32 = 2 * 8192**3 / (gemm_ms / 1e3) / 1e9  # GFLOP/s
    big = a = None  # free the GPU memory before the suite (the timing lambdas are done with them)
    name = torch.cuda.get_device_name()
    print(f"{name}: copy {bandwidth:.0f} GB/s, cuBLAS FP32 (TF32 off) {fp32 / 1e3:.1f} TFLOP/s")

    rows = []
    for layer in SUITE:
        spec = layer.spec
        if spec.ndim != 2:
            continue
        shape = layer.input_shape(args.batch)
        x = torch.randn(shape, device=dev)
        w = torch.randn(spec.weight_shape, device=dev) * 0.1
        xl = x.contiguous(memory_format=torch.channels_last)
        wl = w.contiguous(memory_format=torch.channels_last)
        padding = tuple(p[0] for p in spec.padding)
        prepared = nc.prepare(spec, w.cpu().numpy(), shuffle_groups=layer.shuffle)

        def torch_call(xx, ww, fmt=torch.contiguous_format):
            if spec.transposed:
                y = F.conv_transpose2d(xx, ww, None, spec.stride, padding, spec.output_padding, spec.groups)
            else:
                y = F.conv2d(xx, ww, None, spec.stride, padding, spec.dilation, spec.groups)
            if layer.shuffle:
                n, c = y.shape[:2]
                y = y.reshape(n, layer.shuffle, c // layer.shuffle, *y.shape[2:]).transpose(1, 2).reshape(y.shape)
                y = y.contiguous(memory_format=fmt)
            return y

        x_nhwc = xl.permute(0, 2, 3, 1)  # contiguous NHWC view of the channels_last tensor
        expected = torch_call(x, w)
        ours = prepared(x, device="cuda")
        ours_last = prepared(x_nhwc, layout="NHWC", device="cuda")
        scale = expected.abs().max().item()
        err = (ours - expected).abs().max().item() / scale
        err_last = (ours_last.permute(0, 3, 1, 2) - expected).abs().max().item() / scale
        assert err < 1e-3 and err_last < 1e-3, (layer.name, err, err_last)
        t_ours = cuda_time_ms(torch, lambda: prepared(x, device="cuda"))
        t_ours_last = cuda_time_ms(torch, lambda: prepared(x_nhwc, layout="NHWC", device="cuda"))
        t_torch = cuda_time_ms(torch, lambda: torch_call(x, w))
        t_torch_last = cuda_time_ms(torch, lambda: torch_call(xl, wl, torch.channels_last))
        cost = conv_cost(spec, shape)
        flop_floor = cost.flops / fp32 / 1e6  # ms
        byte_floor = cost.bytes / bandwidth / 1e6  # ms
        best = min(t_ours, t_ours_last)
        row = {"layer": layer.name, "batch": args.batch, "flops": cost.flops, "bytes": cost.bytes,
               "numbaconv_ms": t_ours, "numbaconv_nhwc_ms": t_ours_last, "cudnn_ms": t_torch,
               "cudnn_channels_last_ms": t_torch_last, "gflops": cost.flops / t_ours / 1e6,
               "gbs": cost.bytes / best / 1e6, "flop_floor_ms": flop_floor, "byte_floor_ms": byte_floor,
               "fraction_of_floor": max(flop_floor, byte_floor) / best,
               "vs_cudnn": t_torch / t_ours, "nhwc_vs_cudnn_channels_last": t_torch_last / t_ours_last,
               "kernel": gpu_kernel(spec, layer.shuffle), "max_rel_error": max(err, err_last)}
        rows.append(row)
        print(f"{layer.name:30s} ours {t_ours:.3f} ms (NHWC {t_ours_last:.3f})  cuDNN {t_torch:.3f} "
              f"(CL {t_torch_last:.3f})  floor {max(flop_floor, byte_floor):.3f}  "
              f"x{row['vs_cudnn']:.2f} / CL x{row['nhwc_vs_cudnn_channels_last']:.2f}", flush=True)

    resources = kernel_resources()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"device": name, "bandwidth_gbs": bandwidth, "fp32_gflops": fp32,
                                              "rows": rows, "kernels": resources}, indent=2))
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {name}, float32, batch {args.batch}, TF32 off. Copy "
             f"bandwidth {bandwidth:.0f} GB/s, cuBLAS FP32 {fp32 / 1e3:.1f} TFLOP/s. Median of CUDA-event timings "
             f"after warm-up; ratios are cuDNN time / numbaconv time (>1: numbaconv faster).", "",
             "| layer | kernel | numbaconv ms | NHWC ms | cuDNN ms | cuDNN CL ms | floor ms | of floor | GFLOP/s "
             "| GB/s | vs cuDNN | NHWC vs cuDNN CL |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['kernel']} | {r['numbaconv_ms']:.3f} | {r['numbaconv_nhwc_ms']:.3f} | "
                     f"{r['cudnn_ms']:.3f} | {r['cudnn_channels_last_ms']:.3f} | "
                     f"{max(r['flop_floor_ms'], r['byte_floor_ms']):.3f} | {100 * r['fraction_of_floor']:.0f}% | "
                     f"{r['gflops']:.0f} | {r['gbs']:.0f} | {r['vs_cudnn']:.2f}x | "
                     f"{r['nhwc_vs_cudnn_channels_last']:.2f}x |")
    lines += ["", "| kernel | registers / thread | local (spill) bytes / thread |", "|---|---|---|"]
    lines += [f"| {k} | {v['registers']} | {v['local_bytes']} |" for k, v in resources.items()]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def kernel_resources() -> dict:
    """Registers and local memory per thread of every compiled float32 kernel."""
    from numba import float32
    from numbaconv.kernels.cuda import depthwise, direct, layout, transposed
    found = {}
    dispatchers = [("direct", direct.conv_direct(float32)), ("small_groups", direct.conv_small_groups(float32))]
    for last in (False, True):
        for stride in (1, 2):
            dispatchers.append((f"depthwise 3x3/{stride}{' NHWC' if last else ''}",
                                depthwise.conv_depthwise(float32, (3, 3), (stride, stride), (1, 1), 0, last)))
    dispatchers += [("transposed", transposed.conv_transposed(float32)), ("channel_gather", layout.channel_gather)]
    for name, dispatcher in dispatchers:
        for kernel in dispatcher.overloads.values():
            found[name] = {"registers": kernel.regs_per_thread, "local_bytes": kernel.local_mem_per_thread}
    return found


if __name__ == "__main__":
    main()
