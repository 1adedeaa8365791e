"""End-to-end inference: catalogue networks in numbaconv, onnxruntime and PyTorch, same weights, same run.

    python perf/bench_inference.py [--threads 2] [--models mobilenet_v2,...]

Each network is built once from the catalogue with random weights; onnxruntime runs its ONNX export
(numbaconv.onnx_export) and PyTorch runs the same graph through torch.nn.functional (BatchNorm in eval
mode), both on ``--threads`` threads.  Outputs are compared first.  Batch 1 latency and batch 32
throughput, interleaved rounds, medians.  Writes perf/results/inference.md and inference.json.
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

MODELS = {"mobilenet_v2": {}, "shufflenet_v1": {"groups": 3}, "shufflenet_v2": {}, "resnet50": {}}


def torch_runner(graph, params, threads):
    import torch
    F = torch.nn.functional
    torch.set_num_threads(threads)
    t = {name: {k: torch.from_numpy(v.astype("float32")) if hasattr(v, "dtype") else v for k, v in p.items()}
         for name, p in params.items()}

    @torch.inference_mode()
    def run(x):
        values = {graph.input.name: torch.from_numpy(x)}
        for node in graph.nodes:
            a, xs = node.attrs, [values[n] for n in node.inputs]
            v = xs[0]
            if node.op == "conv":
                spec, p = a["spec"], t[node.name]
                pad = tuple(b for b, _ in spec.resolve_padding(node.input_shapes[0][2:]))
                if spec.transposed:
                    v = F.conv_transpose2d(v, p["weight"], p.get("bias"), spec.stride, pad, spec.output_padding,
                                           spec.groups, spec.dilation)
                else:
                    v = F.conv2d(v, p["weight"], p.get("bias"), spec.stride, pad, spec.dilation, spec.groups)
            elif node.op == "bn":
                p = t[node.name]
                v = F.batch_norm(v, p["mean"], p["var"], p["scale"], p["shift"], False, 0.0, p.get("eps", 1e-5))
            elif node.op == "relu":
                v = F.relu(v)
            elif node.op == "relu6":
                v = F.relu6(v)
            elif node.op == "hardswish":
                v = F.hardswish(v)
            elif node.op == "add":
                v = xs[0] + xs[1]
            elif node.op == "concat":
                v = torch.cat(xs, 1)
            elif node.op == "split":
                v = v[:, a["start"]:a["stop"]]
            elif node.op == "shuffle":
                n, c = v.shape[:2]
                v = v.reshape(n, a["groups"], c // a["groups"], *v.shape[2:]).transpose(1, 2).reshape(v.shape)
            elif node.op == "maxpool":
                v = F.max_pool2d(v, a["kernel"], a["stride"], tuple(b for b, _ in a["padding"]), ceil_mode=a["ceil_mode"])
            elif node.op == "avgpool":
                v = F.avg_pool2d(v, a["kernel"], a["stride"], tuple(b for b, _ in a["padding"]), a["ceil_mode"],
                                 a.get("count_include_pad", True))
            elif node.op == "global_avgpool":
                v = v.mean((2, 3))
            elif node.op == "linear":
                v = F.linear(v, t[node.name]["weight"], t[node.name].get("bias"))
            elif node.op == "flatten":
                v = v.flatten(1)
            else:
                raise ValueError(node.op)
            values[node.output] = v
        return values[graph.output.name].numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per contender and case")
    parser.add_argument("--min-rounds", type=int, default=7,
                        help="rounds at least, whatever the budget (a batch-32 case gets 3-4 rounds in it, and one "
                             "slow round then moves the median)")
    parser.add_argument("--out", default=str(ROOT / "perf" / "results"))
    args = parser.parse_args()
    import numba
    import numpy as np
    import onnxruntime as ort

    from numbaconv.cost import build_model, graph_cost, total_cost
    from numbaconv.network import Network, random_params
    from numbaconv.onnx_export import to_onnx
    numba.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            graph = build_model(name, batch=batch, **MODELS[name])
            params = random_params(graph, seed=0)
            flops = total_cost(graph_cost(graph)).flops
            x = np.random.default_rng(0).standard_normal(graph.input.shape).astype(np.float32)
            net = Network(graph, params)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(to_onnx(graph, params).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            contenders = {"numbaconv": lambda: net(x), "onnxruntime": lambda: session.run(None, {graph.input.name: x})[0],
                          "torch": (lambda run: lambda: run(x))(torch_runner(graph, params, args.threads))}
            outputs = {k: f() for k, f in contenders.items()}
            for k, y in outputs.items():
                err = float(np.abs(y - outputs["onnxruntime"]).max() / np.abs(outputs["onnxruntime"]).max())
                assert err < 1e-3, (name, k, err)
            times = {k: [] for k in contenders}
            deadline = time.perf_counter() + args.seconds * len(contenders)
            rounds = 0
            while rounds < args.min_rounds or (time.perf_counter() < deadline and rounds < 50):
                for k, f in contenders.items():
                    f()  # untimed: the previous runtime's idle threads settle
                    start = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - start)
                rounds += 1
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"model": name, "batch": batch, "gflop": flops / 1e9, "rounds": rounds,
                   **{f"{k}_ms": 1e3 * v for k, v in med.items()},
                   **{f"{k}_per_s": batch / v for k, v in med.items()},
                   "numbaconv_gflops": flops / med["numbaconv"] / 1e9,
                   "vs_torch": med["torch"] / med["numbaconv"], "vs_onnxruntime": med["onnxruntime"] / med["numbaconv"]}
            rows.append(row)
            print(f"{name:14s} N={batch:<3d} numbaconv {row['numbaconv_ms']:9.2f} ms  onnxruntime {row['onnxruntime_ms']:9.2f}"
                  f"  torch {row['torch_ms']:9.2f}  vs torch {row['vs_torch']:.2f}x  vs ort {row['vs_onnxruntime']:.2f}x",
                  flush=True)
    lines = [f"Measured {time.strftime('%Y-%m-%d')}, {args.threads} threads each, float32, random weights, outputs "
             f"checked against onnxruntime first; medians of {min(r['rounds'] for r in rows)}-"
             f"{max(r['rounds'] for r in rows)} interleaved rounds. Ratios: peer time / numbaconv time (>1: numbaconv "
             f"faster).", "",
             "| model | batch | GFLOP | numbaconv ms | onnxruntime ms | torch ms | images/s | GFLOP/s | vs torch | vs ort |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['gflop']:.2f} | {r['numbaconv_ms']:.2f} | {r['onnxruntime_ms']:.2f} | "
              f"{r['torch_ms']:.2f} | {r['numbaconv_per_s']:.1f} | {r['numbaconv_gflops']:.1f} | {r['vs_torch']:.2f}x | "
              f"{r['vs_onnxruntime']:.2f}x |" for r in rows]
    out = Path(args.out)
    (out / "inference.md").write_text("\n".join(lines) + "\n")
    (out / "inference.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
