"""``attnrestore bench``: pipeline speed, memory and efficiency table."""

import json

from napari_attnrestore.benchmarking import BENCH_COLUMNS, CHEAP, bench_table
from napari_attnrestore.cli import main


def test_bench_prints_the_table_columns(capsys, tmp_path):
    assert main(["bench", "--sizes", "64", "--models", CHEAP, "--device", "cpu", "--in-process", "-q",
                 "--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("  ")[0] == "model"
    for col in BENCH_COLUMNS:
        assert col in lines[0]
    assert lines[1].startswith(CHEAP) and "64x64" in lines[1] and "cpu" in lines[1]


def test_bench_json_has_the_measurements(capsys, tmp_path):
    assert main(["bench", "--sizes", "64", "--models", CHEAP, "--device", "cpu", "--in-process", "--json",
                 "--workdir", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == CHEAP and row["size"] == 64 and row["device"] == "cpu" and row["dtype"] == "fp32"
    assert row["mpx_s"] > 0 and row["peak_rss_mb"] > 0 and row["peak_gpu_mb"] is None
    assert 0 <= row["efficiency"] <= 1 and row["forward_calls"] >= 1


def test_bench_table_reports_a_failed_run():
    text = bench_table([{"model": "nope", "size": 64, "device": "cpu", "dtype": "fp32", "error": "unknown model"}])
    assert "failed: unknown model" in text.splitlines()[1]


def test_bench_runs_an_sr_checkpoint_file(capsys, tmp_path):
    import torch

    from napari_attnrestore.models import build_model
    from napari_attnrestore.training import save_checkpoint

    torch.manual_seed(0)
    net = build_model("hat", "sr", scale=2, dim=16, depths=[1], heads=2, window=8).eval()
    ckpt = str(save_checkpoint(net, tmp_path / "sr.safetensors", task="sr", card={"name": "tiny-sr"}))
    assert main(["bench", "--sizes", "64", "--models", ckpt, "--device", "cpu", "--in-process", "--json",
                 "--workdir", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert "error" not in row and row["mpx_s"] > 0  # was refused as "a checkpoint for task 'sr', not 'denoise'"
