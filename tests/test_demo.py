"""The demo of README command (a): shipped denoiser, chunked OME-Zarr, before/after PNG."""

import zarr

from napari_attnrestore.cli import main


def test_demo_writes_outputs_and_improves_the_image(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "256", "-q"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "SSIM" in out and "one chunk" in out  # 256 px: not "chunks of 512 px"
    assert (tmp_path / "before_after.png").exists()
    g = zarr.open_group(str(tmp_path / "restored.ome.zarr"), mode="r")
    assert g["0"].shape == (256, 256) and g.attrs["attnrestore"]["status"] == "complete"
    from napari_attnrestore.demo import run_demo

    res = run_demo(tmp_path / "again", size=256, quiet=True)
    assert res["psnr_after"] > res["psnr_before"] + 5 and res["ssim_after"] > res["ssim_before"]


def test_demo_checks_its_device_and_folder_before_writing(tmp_path, capsys):
    """demo --device cuda on a CPU machine wrote its noisy input and a progress bar first;
    --out naming a file failed with "[Errno 17] File exists"."""
    import torch

    from napari_attnrestore.cli import main

    if not torch.cuda.is_available():
        assert main(["demo", "--out", str(tmp_path / "d"), "--device", "cuda", "--size", "64", "-q"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "d").exists()
    (tmp_path / "f").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "f"), "--size", "64", "-q"]) == 2
    assert "f: exists and is no folder" in capsys.readouterr().err and (tmp_path / "f").read_text() == "mine"


def test_demo_progress_in_a_log_is_lines_not_carriage_returns(tmp_path, capsys):
    """In a log file (stderr not a terminal) the demo drew tqdm's bar with carriage returns and
    block characters, where restore and train print plain lines."""
    assert main(["demo", "--out", str(tmp_path), "--size", "64"]) == 0
    err = capsys.readouterr().err
    assert "denoise:" in err and "\r" not in err and "█" not in err
