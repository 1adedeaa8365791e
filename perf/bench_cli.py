"""Cold start of the cost commands: `numbaconv compare ...` in fresh processes (no Numba is imported).

    python perf/bench_cli.py [--runs 10]

Writes perf/results/cli.md.  Uses the installed `numbaconv` console script when there is one, else
`python -m numbaconv_cli.main`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["compare", "--input", "1x3x7x7", "--out-channels", "128", "--kernel", "3"],
    ["cost", "depthwise-separable", "--input", "1x32x112x112", "--out-channels", "64", "--padding", "1"],
    ["model", "resnet50", "--format", "json"],
    ["--help"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exe = shutil.which("numbaconv")
    base = [exe] if exe else [sys.executable, "-m", "numbaconv_cli.main"]
    lines = [f"Cold start of the cost commands, {args.runs} fresh processes each ({' '.join(Path(b).name for b in base)}), "
             f"{time.strftime('%Y-%m-%d')}.", "", "| command | median s | min s |", "|---|---|---|"]
    for command in COMMANDS:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(base + command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        lines.append(f"| numbaconv {' '.join(command)} | {statistics.median(times):.3f} | {min(times):.3f} |")
        print(lines[-1], flush=True)
    out = ROOT / "perf" / "results" / "cli.md"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
