"""The click application, driven with CliRunner; one subprocess check that cost commands import no Numba."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from numbaconv_cli.main import SUBCOMMANDS, cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_cli(*args):
    """Run through the real entry point, where errors are one line and the exit status is 2."""
    return subprocess.run([sys.executable, "-m", "numbaconv_cli.main", *args], capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_on_every_subcommand(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_top_level_help_states_the_convention():
    assert "FLOPs = 2 x MACs" in invoke("--help").output


def test_compare_reproduces_the_textbook_case():
    result = invoke("compare", "--input", "1x3x7x7", "--out-channels", "128", "--kernel", "3", "--format", "json")
    rows = {r["variant"]: r for r in json.loads(result.output)["variants"]}
    assert rows["standard"]["macs"] == 86_400
    assert rows["depthwise-separable"]["macs"] == 10_275
    assert rows["depthwise-separable"]["stages"] == "675 + 9,600"
    assert round(100 * rows["depthwise-separable"]["mac_ratio"], 1) == 11.9
    table = invoke("compare", "--input", "1x3x7x7", "--out-channels", "128", "--kernel", "3").output
    assert "86,400" in table and "10,275" in table and "11.9%" in table


def test_cost_json_fields_and_nhwc_layout():
    out = json.loads(invoke("cost", "standard", "--input", "2x56x56x64", "--layout", "nhwc", "--out-channels",
                            "32", "--kernel", "3", "--padding", "same", "--bias", "--format", "json").output)
    assert out["output_shape"] == [2, 56, 56, 32]
    assert out["macs"] == 2 * 56 * 56 * 32 * 64 * 9
    assert out["flops"] == 2 * out["macs"] + 2 * 56 * 56 * 32
    assert out["params"] == 32 * 64 * 9 + 32
    assert out["receptive_field"] == [3, 3]


def test_cost_csv_and_table():
    csv = invoke("cost", "depthwise", "--input", "1x8x9x9", "--multiplier", "2", "--format", "csv").output
    header, row = csv.strip().splitlines()
    assert header.startswith("name,op,output") and ",1x16x7x7," in row
    table = invoke("cost", "transposed", "--input", "1x8x5x5", "--out-channels", "4", "--stride", "2",
                   "--padding", "1", "--output-padding", "1").output
    assert "1x4x10x10" in table and f"{5 * 5 * 8 * 4 * 9:,}" in table


def test_model_table_json_and_list():
    out = json.loads(invoke("model", "resnet50", "--version", "v1", "--format", "json").output)
    assert out["params"] == 25_557_032 and isinstance(out["layers"], list) and out["total"]["macs"] == out["macs"]
    assert all(layer["op"] in ("conv", "linear") for layer in out["layers"])
    with_all = json.loads(invoke("model", "resnet50", "--all-ops", "--format", "json").output)
    assert {"bn", "relu", "add", "maxpool"} <= {layer["op"] for layer in with_all["layers"]}
    listing = invoke("model", "--list").output
    for name in ("resnet18", "resnext50_32x4d", "mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "shufflenet_v2"):
        assert name in listing
    table = invoke("model", "shufflenet_v1", "--groups", "8").output
    assert "total:" in table and "params:" in table


def test_receptive_field_command():
    out = json.loads(invoke("receptive-field", "--kernel", "3,3,3", "--stride", "1,2,2", "--format", "json").output)
    assert out["receptive_field"] == 9


@pytest.mark.parametrize("args,option", [
    (["cost", "grouped", "--input", "1x64x8x8", "--groups", "3"], "--groups"),
    (["cost", "standard", "--input", "1x3x4x4", "--kernel", "7"], "--kernel"),
    (["cost", "standard", "--input", "1x3x"], "--input"),
    (["model", "alexnet"], "NAME"),
    (["model", "shufflenet_v1", "--groups", "5"], "--groups"),
    (["receptive-field", "--kernel", "3,3", "--stride", "2"], "--stride"),
    (["cost", "depthwise", "--input", "1x4x8x8", "--out-channels", "6"], "--out-channels"),
])
def test_bad_input_is_a_one_line_usage_error(args, option):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and option in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cost_commands_import_no_numba():
    code = ("import sys; from numbaconv_cli.main import cli; "
            "cli(['compare', '--input', '1x3x7x7', '--out-channels', '128'], standalone_mode=False); "
            "assert 'numba' not in sys.modules, 'numba was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_run_command_json_and_table():
    result = run_cli("run", "shufflenet_v2", "--width", "0.5", "--resolution", "32", "--runs", "2", "--format", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["output_shape"] == [1, 1000] and out["latency_median_ms"] > 0 and out["layers"]
    assert out["macs"] > 0 and out["gflops"] > 0
    table = invoke("run", "mobilenet_v1", "--width", "0.25", "--resolution", "32", "--runs", "2").output
    assert "latency median" in table and "images/s" in table


def test_run_onnx_file_on_an_input_file_saves_the_output(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              tmp_path / "small.onnx")
    x = rng.standard_normal((3, 3, 9, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", str(tmp_path / "small.onnx"), "--input", str(tmp_path / "x.npy"), "--output",
                    str(tmp_path / "y.npy"), "--runs", "1", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output_shape"] == [3, 4, 9, 7]  # the batch taken from the input
    expected = np.maximum(sum(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))[:, None, :, i:i + 9, j:j + 7]
                              * weight[None, :, :, i, j, None, None] for i in range(3) for j in range(3)).sum(2), 0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-4)
    bad = run_cli("run", str(tmp_path / "small.onnx"), "--input", str(tmp_path / "x.npy"), "--batch", "2")
    assert bad.returncode == 2 and "--input" in bad.stderr and "(2, 3, 9, 7)" in bad.stderr


def test_run_rejects_unknown_model_and_cuda_networks():
    assert run_cli("run", "alexnet").returncode == 2
    result = run_cli("run", "resnet18", "--device", "cuda")
    assert result.returncode == 2 and "--device" in result.stderr
