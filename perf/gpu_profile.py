"""Where a numbaconv GPU call spends its time: the kernel alone versus the whole Python call.

    python perf/gpu_profile.py [--out DIR]

For each suite layer (batch 32): CUDA-event time of the full ``prepared(x, device='cuda')`` call (what a
caller waits for), the host time per call when calls are queued back to back (the Python side: spec
lookup, output allocation, launch), a bare ``torch.empty`` of the output for comparison, and the kernel's
device time from the profiler (CUPTI), beside cuDNN's device time for the same layer.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    import numbaconv as nc
    from numbaconv.benchmark import SUITE

    from bench_gpu import cuda_time_ms  # perf/ is on sys.path when this script runs

    def event_ms(fn, reps=30):
        return cuda_time_ms(torch, fn, reps)

    def host_ms(fn, reps=200):
        """Host time per call when the GPU keeps up: what the Python side costs."""
        import time
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            best = min(best, (time.perf_counter() - start) / reps * 1e3)
            torch.cuda.synchronize()
        return best

    def device_ms(fn, reps=10):
        """Mean device time of the CUDA kernels one fn() launches, read by the profiler."""
        fn()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        total = sum(e.device_time_total for e in prof.key_averages() if e.device_time_total > 0
                    and "Memcpy" not in e.key and "Memset" not in e.key)
        return total / reps / 1e3

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    F = torch.nn.functional
    rows = []
    print(f"{'layer':30s} {'call ms':>9s} {'host ms':>10s} {'alloc ms':>9s} {'device ms':>10s} {'cuDNN dev ms':>12s}")
    for layer in SUITE:
        if layer.spec.ndim != 2:
            continue
        x = torch.randn(layer.input_shape(32), device="cuda")
        prepared = nc.prepare(layer.spec, torch.randn(layer.spec.weight_shape).numpy(), shuffle_groups=layer.shuffle)
        call = event_ms(lambda: prepared(x, device="cuda"))
        host = host_ms(lambda: prepared(x, device="cuda"))
        shape = prepared.output_shape(tuple(x.shape))
        alloc = host_ms(lambda: torch.empty(shape, device="cuda"))
        device = device_ms(lambda: prepared(x, device="cuda"))
        spec = layer.spec
        w = torch.randn(spec.weight_shape, device="cuda")
        padding = tuple(p[0] for p in spec.padding)
        if spec.transposed:
            torch_fn = lambda: F.conv_transpose2d(x, w, None, spec.stride, padding, spec.output_padding,  # noqa
                                                  spec.groups)
        else:
            torch_fn = lambda: F.conv2d(x, w, None, spec.stride, padding, spec.dilation, spec.groups)  # noqa
        cudnn = device_ms(torch_fn)
        rows.append((layer.name, call, host, alloc, device, cudnn))
        print(f"{layer.name:30s} {call:9.3f} {host:10.3f} {alloc:9.3f} {device:10.3f} {cudnn:12.3f}", flush=True)
    if len(sys.argv) > 2 and sys.argv[1] == "--out":
        lines = ["| layer | whole call ms | host ms per call | torch.empty ms | kernel device ms | cuDNN device ms | "
                 "device ratio |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[5] / r[4]:.2f}x |"
                  for r in rows]
        (Path(sys.argv[2]) / "gpu_profile.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
