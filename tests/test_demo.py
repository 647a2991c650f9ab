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
