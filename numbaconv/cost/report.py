"""Turn costs into rows and render them as an aligned table, JSON or CSV.  No Numba."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable, Sequence

from ..graph import Graph
from . import CostTotal, LayerCost, graph_cost, total_cost
from .variants import receptive_extent

FORMATS = ("table", "json", "csv")

CONVENTION = ("1 MAC = 1 multiply + 1 add; FLOPs = 2 x MACs + 1 add per output element for a bias; "
              "transposed convolutions counted over input positions; params as PyTorch counts them "
              "(BatchNorm scale and shift included, running statistics not).")


def to_layout(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """A channels-first shape written in ``layout`` ('nchw' keeps it, 'nhwc' moves channels last)."""
    shape = tuple(shape)
    if layout == "nhwc" and len(shape) > 2:
        return (shape[0], *shape[2:], shape[1])
    return shape


def from_layout(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    shape = tuple(shape)
    if layout == "nhwc" and len(shape) > 2:
        return (shape[0], shape[-1], *shape[1:-1])
    return shape


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def layer_row(c: LayerCost, layout: str = "nchw") -> dict[str, Any]:
    """A LayerCost as a flat dict (shapes in ``layout``)."""
    return {"name": c.name, "op": c.op, "input_shape": list(to_layout(c.input_shape, layout)),
            "output_shape": list(to_layout(c.output_shape, layout)), "kernel": list(c.kernel),
            "stride": list(c.stride), "groups": c.groups, "macs": c.macs, "flops": c.flops, "params": c.params,
            "weight_params": c.weight_params, "bias_params": c.bias_params, "bn_params": c.bn_params,
            "input_bytes": c.input_bytes, "weight_bytes": c.weight_bytes, "output_bytes": c.output_bytes,
            "intensity": round(c.intensity, 3)}


def graph_report(graph: Graph, dtype: str = "float32", layout: str = "nchw", include_other: bool = True,
                 extra: dict | None = None) -> dict[str, Any]:
    """The JSON-ready report of a graph: per-layer rows and totals."""
    costs = graph_cost(graph, dtype)
    total: CostTotal = total_cost(costs)
    rows = [layer_row(c, layout) for c in costs if include_other or c.counts_macs]
    report = {"name": graph.name, "input_shape": list(to_layout(graph.input.shape, layout)),
              "output_shape": list(to_layout(graph.output.shape, layout)), "dtype": dtype, "layout": layout,
              "macs": total.macs, "flops": total.flops, "other_flops": total.other_flops, "params": total.params,
              "conv_linear_params": total.conv_linear_params, "bn_params": total.bn_params,
              "bytes": total.bytes, "layers": rows, "convention": CONVENTION}
    if extra:
        report.update(extra)
    report["total"] = {k: report[k] for k in ("macs", "flops", "other_flops", "params", "conv_linear_params",
                                              "bn_params", "bytes")}
    return report


def conv_graph_extras(graph: Graph) -> dict[str, Any]:
    costs = [c for c in graph_cost(graph) if c.counts_macs]
    moved = costs[0].input_bytes + sum(c.weight_bytes for c in costs) + costs[-1].output_bytes if costs else 0
    flops = sum(c.flops for c in costs)
    return {"receptive_field": list(receptive_extent(graph)),
            "intensity": round(flops / moved, 3) if moved else 0.0}


Column = tuple[str, str, Callable[[Any], str]]
_INT = lambda v: f"{v:,}"  # noqa: E731
_SHAPE = lambda v: shape_text(v) if v else "-"  # noqa: E731
_STR = str


def render(rows: Sequence[dict], columns: Sequence[Column], fmt: str, title: str = "",
           footer: Sequence[str] = (), payload: Any = None) -> str:
    """Rows as a table (aligned, with title and footer lines), CSV (the columns), or JSON (``payload``)."""
    if fmt == "json":
        return json.dumps(payload if payload is not None else list(rows), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([key for key, _, _ in columns])
        for row in rows:
            writer.writerow([shape_text(row[k]) if isinstance(row[k], list) else row[k] for k, _, _ in columns])
        return out.getvalue().rstrip("\n")
    cells = [[header for _, header, _ in columns]]
    cells += [[f(row[key]) if row.get(key) is not None else "" for key, _, f in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [all(_looks_numeric(r[i]) for r in cells[1:]) for i in range(len(columns))]
    lines = [title] if title else []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(footer)
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("%", "").replace("x", "").lstrip("-").isdigit() or text == ""


LAYER_COLUMNS: list[Column] = [
    ("name", "layer", _STR), ("op", "op", _STR), ("output_shape", "output", _SHAPE), ("kernel", "kernel", _SHAPE),
    ("stride", "stride", _SHAPE), ("groups", "groups", _INT), ("macs", "MACs", _INT), ("flops", "FLOPs", _INT),
    ("params", "params", _INT), ("input_bytes", "in B", _INT), ("weight_bytes", "weight B", _INT),
    ("output_bytes", "out B", _INT), ("intensity", "FLOP/B", lambda v: f"{v:.2f}"),
]


def totals_footer(report: dict) -> list[str]:
    t = report["total"]
    return [
        f"total: {t['macs']:,} MACs ({human(t['macs'])}), {t['flops']:,} FLOPs ({human(t['flops'])})"
        + (f", other ops {t['other_flops']:,} FLOPs" if t["other_flops"] else ""),
        f"params: {t['params']:,} ({human(t['params'])}) = conv/linear {t['conv_linear_params']:,}"
        + (f" + BatchNorm {t['bn_params']:,}" if t["bn_params"] else ""),
        f"output: {shape_text(report['output_shape'])} ({report['layout']}), {report['dtype']}, "
        f"{t['bytes']:,} bytes moved",
    ]
