"""The attnrestore command line: restore, models, demo; one-line errors with exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr

import napari_attnrestore as ar
from napari_attnrestore.cli import main


def test_restore_tif_to_ome_zarr(tmp_path, tiny_checkpoint, capsys):
    img = (np.random.default_rng(0).random((80, 96)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "noisy.tif", img)
    out = tmp_path / "clean.ome.zarr"
    assert main(["restore", str(tmp_path / "noisy.tif"), str(out), "--task", "denoise", "--weights", str(tiny_checkpoint), "-q"]) == 0
    res = zarr.open_group(str(out), mode="r")
    assert res["0"].shape == img.shape and res["0"].dtype == np.uint8
    assert res.attrs["attnrestore"]["status"] == "complete"


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_restore_to_tif_and_png(tmp_path, tiny_checkpoint, suffix):
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img)
    out = tmp_path / f"out{suffix}"
    assert main(["restore", str(tmp_path / "in.tif"), str(out), "--weights", str(tiny_checkpoint), "-q"]) == 0
    assert out.exists()


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_overwriting_through_a_link_keeps_the_link(tmp_path, tiny_checkpoint, suffix):
    """A results/latest.tif link to a dated file: --overwrite replaced the link by a file and
    left the file it named stale."""
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img)
    (tmp_path / "runs").mkdir()
    target, link = tmp_path / "runs" / f"2026-11-23{suffix}", tmp_path / f"latest{suffix}"
    target.write_bytes(b"the old result")
    link.symlink_to(target)
    assert main(["restore", str(tmp_path / "in.tif"), str(link), "--weights", str(tiny_checkpoint), "--overwrite",
                 "-q"]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert target.read_bytes() != b"the old result" and ar.io.open_image(link).shape == img.shape
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [target.name]  # no scratch file left


def test_restore_refuses_to_write_a_tif_over_its_input(tmp_path, tiny_checkpoint, capsys):
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", img)
    assert main(["restore", str(tmp_path / "in.tif"), str(tmp_path / "in.tif"), "--weights", str(tiny_checkpoint),
                 "--overwrite", "-q"]) == 2
    assert "overlap the input" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "in.tif"), img)


@pytest.mark.parametrize("source", ["la.png", "la.tif"])
def test_restore_gray_alpha_to_png(tmp_path, tiny_checkpoint, source):
    """Gray + alpha to PNG, its opacity as it came in; a TIFF declaring its second sample
    alpha was refused as "the result has 2 channels"."""
    from skimage import io as skio

    img = (np.random.default_rng(0).random((40, 44, 2)) * 255).astype(np.uint8)
    img[..., 1] = np.where(img[..., 1] > 128, 255, 0)
    skio.imsave(tmp_path / "la.png", img, check_contrast=False)
    tifffile.imwrite(tmp_path / "la.tif", img, photometric="minisblack", extrasamples=["unassalpha"])
    assert main(["restore", str(tmp_path / source), str(tmp_path / "out.png"), "--weights", str(tiny_checkpoint),
                 "-q"]) == 0
    out = skio.imread(tmp_path / "out.png")
    assert out.shape == (40, 44, 2)
    np.testing.assert_array_equal(out[..., 1], img[..., 1])


def test_two_channels_are_not_written_as_gray_and_alpha(tmp_path, tiny_checkpoint, capsys):
    """A DAPI + GFP OME-TIFF restored to .png became a gray + alpha PNG: GFP as transparency."""
    img = (np.random.default_rng(0).random((2, 40, 44)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c2.ome.tif", img, ome=True, metadata={"axes": "CYX"})
    assert main(["restore", str(tmp_path / "c2.ome.tif"), str(tmp_path / "out.png"), "--weights",
                 str(tiny_checkpoint), "-q"]) == 2
    assert "the result has 2 channels (the second would be shown as transparency)" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_a_png_that_cannot_be_written_leaves_the_old_one(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """A full disk left a truncated out.png in place of the old one, with a message naming no file."""
    from skimage import io as skio

    img = (np.random.default_rng(0).random((40, 44)) * 255).astype(np.uint8)
    skio.imsave(tmp_path / "in.png", img, check_contrast=False)
    (tmp_path / "out.png").write_bytes(b"the old result")
    imsave = skio.imsave

    def disk_full(path, *a, **k):
        imsave(path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skio, "imsave", disk_full)
    assert main(["restore", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--weights", str(tiny_checkpoint),
                 "--overwrite", "-q"]) == 2
    assert "out.png: cannot write PNG (No space left on device)" in capsys.readouterr().err
    assert (tmp_path / "out.png").read_bytes() == b"the old result"
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "napari_attnrestore.cli", *args], capture_output=True, text=True)


def test_bad_input_is_one_line_exit_2(tmp_path, tiny_checkpoint):
    missing = _run("restore", str(tmp_path / "nope.tif"), str(tmp_path / "o.zarr"), "--weights", str(tiny_checkpoint))
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.tif" in lines[0] and "Traceback" not in missing.stderr

    (tmp_path / "o.zarr").mkdir()
    exists = _run("restore", str(tmp_path / "nope.tif"), str(tmp_path / "o.zarr"))
    assert exists.returncode == 2 and "--overwrite" in exists.stderr

    bad_weights = tmp_path / "w.pth"
    bad_weights.write_bytes(b"not a checkpoint")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    r = _run("restore", str(tmp_path / "a.tif"), str(tmp_path / "b.zarr"), "--weights", str(bad_weights))
    assert r.returncode == 2 and "w.pth" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_models_lists_architectures(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "hat" in out and "Architectures" in out
    # the defaults are marked, each with the number it was chosen by (denoising: sigma 25, not 15)
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("denoise-acla-tiny "))
    assert " denoise " in line and "set12_sigma25" in line


def test_architecture_measurements():
    from napari_attnrestore.benchmarking import table

    out = table(["hat", "psal"], [64])
    assert "Mpx/s" in out and "MB" in out and "MACs/px" in out
    assert "full non-local attention" in out  # PSAL's memory is compared with it


def test_corrupt_zarr_chunk_is_named(tmp_path, tiny_checkpoint):
    from napari_attnrestore.io import write_ome_zarr

    img = (np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)
    src = write_ome_zarr(img, tmp_path / "in.ome.zarr", axes="yx", chunks=(64, 64), pyramid=False)
    (tmp_path / "in.ome.zarr" / "0" / "c" / "1" / "0").write_bytes(b"garbage")
    r = _run("restore", src, str(tmp_path / "out.ome.zarr"), "--weights", str(tiny_checkpoint))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in.ome.zarr" in lines[0] and "c/1/0" in lines[0]


def test_arch_picks_the_default_weight_of_its_architecture():
    from napari_attnrestore.cli import _arch_default
    from napari_attnrestore.zoo import defaults, list_models

    cards = {m["name"]: m for m in list_models()}
    for key, name in defaults().items():
        task, _, scale = key.partition("-x")
        assert _arch_default(cards[name]["arch"], task, int(scale) if scale else None) == name


def test_sr_tiff_output_carries_the_model_scale_and_units(tmp_path):
    import torch

    from napari_attnrestore.io import open_image, write_tiff
    from napari_attnrestore.models import build_model
    from napari_attnrestore.training import save_checkpoint

    torch.manual_seed(0)
    net = build_model("hat", "sr", scale=2, dim=16, depths=[1], heads=2, window=8).eval()
    ckpt = save_checkpoint(net, tmp_path / "sr.safetensors", task="sr", card={"name": "tiny-sr"})
    src = write_tiff((np.random.default_rng(0).random((3, 24, 20)) * 255).astype(np.uint8), tmp_path / "in.ome.tif",
                     axes="zyx", scale=(0.3, 60.0, 50.0), units="nanometer")
    out = tmp_path / "out.ome.tif"
    assert main(["restore", src, str(out), "--task", "sr", "--weights", str(ckpt), "-q"]) == 0  # no --scale
    img = open_image(out)
    assert img.data.shape == (3, 48, 40)
    assert img.scale == pytest.approx((0.3, 30.0, 25.0))
    assert img.units["x"] == img.units["y"] == "nanometer"


def test_png_output_of_a_float_result_is_refused_before_restoring(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "f.tif", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    assert main(["restore", str(tmp_path / "f.tif"), str(tmp_path / "o.png"), "--weights", str(tiny_checkpoint),
                 "-q"]) == 2
    assert "o.png: PNG holds 8- or 16-bit integers; the result is float32" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_png_outputs_pillow_cannot_write_are_refused_before_restoring(tmp_path, tiny_checkpoint, capsys):
    """A 16-bit RGB result failed in Pillow after the whole image was computed."""
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((32, 32, 3), np.uint16), photometric="rgb")
    assert main(["restore", str(tmp_path / "rgb16.tif"), str(tmp_path / "o.png"), "--weights", str(tiny_checkpoint),
                 "-q"]) == 2
    assert "o.png: a 16-bit PNG is written as one gray image only; the result has 3 channels" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((32, 32), np.uint8))
    assert main(["restore", str(tmp_path / "g.tif"), str(tmp_path / "no" / "o.png"), "--weights",
                 str(tiny_checkpoint), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_output_in_a_folder_that_does_not_exist_is_one_line(tmp_path, tiny_checkpoint, capsys):
    """.tif, .ome.zarr and train --out made the missing folders (a typo became /nonexist/dir),
    while .png refused: every output now names the missing folder."""
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((32, 32), np.uint8))
    for out in ("o.tif", "o.ome.zarr"):
        assert main(["restore", str(tmp_path / "g.tif"), str(tmp_path / "no" / out), "--weights",
                     str(tiny_checkpoint), "-q"]) == 2
        assert f"folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "g.tif"), "--steps", "2", "--out", str(tmp_path / "no" / "m.safetensors")]) == 2
    assert f"folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_bench_and_demo_options_are_checked_first(capsys):
    for args, said in ((["bench", "--sizes", "64", "--models", "nope"], "nope"),
                       (["bench", "--sizes", "64", "--models", "conv3x3", "--tile", "4"], "--tile must be at least 8"),
                       (["demo", "--size", "0"], "--size must be at least 32"),
                       (["demo", "--sigma", "-5"], "--sigma is a noise level")):
        assert main([*args, "-q"]) == 2, args
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, err


def test_restore_options_are_named_as_typed(tmp_path, tiny_checkpoint, capsys):
    """The engine's checks name the API's arguments ("chunk must be at least 16"); the CLI
    names its options."""
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    for opt, value, said in (("--chunks", "8", "--chunks must be at least 16"),
                             ("--overlap", "-2", "--overlap must be at least 0"),
                             ("--batch", "0", "--batch must be at least 1")):
        assert main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "o.tif"), "--weights", str(tiny_checkpoint),
                     opt, value, "-q"]) == 2
        assert f"error: {said}" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_restore_takes_a_normalization_or_an_intensity_range(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.full((32, 32), 200, np.uint16))
    for value in ("dtype", "100,4500"):
        assert main(["restore", str(tmp_path / "a.tif"), str(tmp_path / f"{value}.tif"), "--weights",
                     str(tiny_checkpoint), "--normalize", value, "-q"]) == 0
    with pytest.raises(SystemExit):
        main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "o.tif"), "--normalize", "5,1"])
    err = capsys.readouterr().err
    assert "expected auto, dtype, percentile, none, LO,HI" in err and "got '5,1'" in err
    with pytest.raises(SystemExit):  # a range per channel, one of them upside down
        main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "o.tif"), "--normalize", "0,10;5,1"])
    assert "got '0,10;5,1'" in capsys.readouterr().err


def test_a_tiff_is_refused_for_a_cluster_before_the_store_is_made(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    assert main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "o.ome.zarr"), "--weights", str(tiny_checkpoint),
                 "--scheduler", "tcp://127.0.0.1:1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "a.tif: a TIFF's open file cannot be sent to dask.distributed workers" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.ome.zarr").exists()


def test_geotiff_input_gives_a_geotiff_with_its_georeference_and_nodata(tmp_path, tiny_checkpoint):
    from napari_attnrestore.io import open_image

    keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
    scene = np.random.default_rng(0).integers(1, 250, (40, 48), dtype=np.uint8)
    scene[:, 20:23] = 0  # a scan-line gap
    tifffile.imwrite(tmp_path / "scene.tif", scene, extratags=[
        (33550, "d", 3, (30.0, 30.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 355185.0, -3723285.0, 0), False),
        (34735, "H", len(keys), keys, False), (42113, "s", 0, "0", False)])
    out = tmp_path / "den.tif"
    assert main(["restore", str(tmp_path / "scene.tif"), str(out), "--weights", str(tiny_checkpoint), "-q"]) == 0
    src, res = open_image(tmp_path / "scene.tif"), open_image(out)
    assert res.scale == src.scale and res.translate == pytest.approx(src.translate) and res.units == src.units
    assert res.meta["nodata"] == 0 and (np.asarray(res.data[:])[:, 20:23] == 0).all()
    assert res.meta["geotiff"]["geokeys"]["GTModelTypeGeoKey"] == "Projected"


def test_a_geotiffs_band_scale_offset_and_description_go_on_without_its_statistics(tmp_path, tiny_checkpoint):
    """GDAL_METADATA was dropped: a reflectance band's scale and offset (Landsat Collection 2)
    were lost, so GIS tools read the result as raw counts."""
    gdal = ('<GDALMetadata>\n  <Item name="DESCRIPTION" sample="0" role="description">SR_B3</Item>\n'
            '  <Item name="SCALE" sample="0" role="scale">2.75e-05</Item>\n'
            '  <Item name="OFFSET" sample="0" role="offset">-0.2</Item>\n'
            '  <Item name="STATISTICS_MEAN" sample="0">9123.5</Item>\n</GDALMetadata>')
    keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
    tifffile.imwrite(tmp_path / "b3.tif", np.random.default_rng(0).integers(7000, 12000, (32, 40), dtype=np.uint16),
                     extratags=[(33550, "d", 3, (30.0, 30.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 5e5, 4e6, 0), False),
                                (34735, "H", len(keys), keys, False), (42112, "s", 0, gdal, False)])
    for out in ("den.tif", "sr.tif"):
        extra = ["--task", "sr", "--scale", "2", "--weights", "default:sr"] if out == "sr.tif" else [
            "--weights", str(tiny_checkpoint)]
        assert main(["restore", str(tmp_path / "b3.tif"), str(tmp_path / out), *extra, "-q"]) == 0
        with tifffile.TiffFile(tmp_path / out) as tif:
            kept = tif.pages[0].tags[42112].value
        assert 'role="scale">2.75e-05<' in kept and 'role="offset">-0.2<' in kept and ">SR_B3<" in kept
        assert "STATISTICS_MEAN" not in kept  # the input's mean is not the result's


def test_geotiff_restored_to_zarr_saves_as_a_geotiff_again(tmp_path, tiny_checkpoint):
    from napari_attnrestore.io import open_image
    from napari_attnrestore.io.napari_hooks import napari_get_reader, write_tiff_layer

    keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
    tifffile.imwrite(tmp_path / "scene.tif", np.full((32, 40), 7, np.uint8), extratags=[
        (33550, "d", 3, (30.0, 30.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 5e5, 4e6, 0), False),
        (34735, "H", len(keys), keys, False), (42113, "s", 0, "0", False)])
    store = tmp_path / "den.ome.zarr"
    assert main(["restore", str(tmp_path / "scene.tif"), str(store), "--weights", str(tiny_checkpoint), "-q"]) == 0
    ((data, kwargs, _),) = napari_get_reader(str(store))(None)
    write_tiff_layer(str(tmp_path / "den.tif"), data, kwargs)
    src, out = open_image(tmp_path / "scene.tif"), open_image(tmp_path / "den.tif")
    assert out.translate == pytest.approx(src.translate) and out.meta["nodata"] == 0
    assert out.meta["geotiff"]["geokeys"]["GTModelTypeGeoKey"] == "Projected"


@pytest.mark.parametrize("kind", ["geotiff bands", "planar colour"])
def test_channels_of_one_page_stay_one_page(tmp_path, tiny_checkpoint, kind):
    """A 4-band GeoTIFF came out as 4 single-band pages (GDAL: 1 band and 4 subdatasets, the
    georeference on the first only), and a planar RGB TIFF as 3 gray pages."""
    rng = np.random.default_rng(0)
    if kind == "geotiff bands":
        keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3076, 0, 1, 9001)
        planes = rng.integers(1, 250, (4, 32, 40), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "in.tif", planes, photometric="minisblack", planarconfig="separate", extratags=[
            (33550, "d", 3, (30.0, 30.0, 0.0), False), (33922, "d", 6, (0, 0, 0, 5e5, 4e6, 0), False),
            (34735, "H", len(keys), keys, False)])
    else:
        planes = rng.integers(1, 250, (3, 32, 40), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "in.tif", planes, photometric="rgb", planarconfig="separate")
    assert main(["restore", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--weights", str(tiny_checkpoint),
                 "-q"]) == 0
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert len(tif.pages) == 1 and page.samplesperpixel == len(planes) and page.planarconfig == 2
        assert page.photometric == (2 if kind == "planar colour" else 1)  # RGB, MINISBLACK
        assert (33550 in page.tags) == (kind == "geotiff bands")


def test_a_one_channel_mosaic_store_demosaics_into_a_tif(tmp_path, monkeypatch):
    """The CLI took the output geometry from the tczyx input but the shape from the result
    (tzyx + colour): ZeroDivisionError in output_geometry."""
    from standins import SplitCFA

    import napari_attnrestore.api as api
    from napari_attnrestore.io import open_image, write_ome_zarr

    resolve = api.resolve_model
    monkeypatch.setattr(api, "resolve_model", lambda model, *a, **k: resolve(SplitCFA(), *a, **k))
    cfa = np.random.default_rng(0).integers(0, 255, (1, 1, 1, 32, 48)).astype(np.uint8)
    src = write_ome_zarr(cfa, tmp_path / "cfa.ome.zarr", "tczyx", pyramid=False)
    assert main(["restore", src, str(tmp_path / "rgb.tif"), "--task", "demosaic", "--cfa", "RGGB", "-q"]) == 0
    assert open_image(tmp_path / "rgb.tif").shape == (1, 1, 32, 48, 3)


def test_a_miniswhite_tiff_keeps_its_photometric(tmp_path, tiny_checkpoint):
    """Written back as MINISBLACK with the same values, a scan whose 0 is white looked inverted."""
    from napari_attnrestore.io.napari_hooks import read_images

    scan = np.random.default_rng(0).integers(0, 255, (32, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", scan, photometric="miniswhite")
    assert read_images(tmp_path / "scan.tif")[0][1]["colormap"] == "gray_r"  # shown as it looks
    assert main(["restore", str(tmp_path / "scan.tif"), str(tmp_path / "out.tif"), "--weights", str(tiny_checkpoint),
                 "-q"]) == 0
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].photometric == 0  # MINISWHITE


# ---------------------------------------------------------------- train


def _train_image(tmp_path, name="noisy.tif"):
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / name, img)
    return str(tmp_path / name)


def _no_training(monkeypatch):
    import napari_attnrestore as ar

    monkeypatch.setattr(ar, "train", lambda *a, **k: pytest.fail("trained before the output was checked"))


def test_train_checks_where_it_writes_before_training(tmp_path, capsys, monkeypatch):
    """A file in the way of --out's folder, or --out a folder, failed only after all the steps."""
    _no_training(monkeypatch)
    img = _train_image(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "dirout.safetensors").mkdir()
    cases = [
        (["--out", str(tmp_path / "notes.txt" / "x.safetensors")], "notes.txt is a file, not a folder"),
        (["--out", str(tmp_path / "dirout.safetensors"), "--overwrite"], "dirout.safetensors: is a folder"),
        (["--out", str(tmp_path / "m.safetensors"), "--state", str(tmp_path / "notes.txt" / "s.pt")],
         "cannot write the training state there"),
        # the state was overwritten by the weights it trained, silently
        (["--out", str(tmp_path / "m.safetensors"), "--state", str(tmp_path / "m.safetensors")],
         "the training state and the weights (--out) are one file"),
        (["--out", str(tmp_path / "m.safetensors"), "--state", str(tmp_path / "m.json")],
         "the training state and the model card (--out) are one file"),
    ]
    for extra, says in cases:
        assert main(["train", img, "--steps", "30", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("attnrestore: error: ") and says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "dirout.safetensors.tmp").exists()


def test_train_clean_images_given_first_are_one_clear_line(tmp_path, capsys):
    img, clean = _train_image(tmp_path), _train_image(tmp_path, "clean.tif")
    assert main(["train", "--clean", clean, img, "--out", str(tmp_path / "q.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "put the images before --clean" in err and "required: images" not in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as bare:  # a bare --clean trained self-supervised, silently
        main(["train", img, "--out", str(tmp_path / "q.safetensors"), "--clean"])
    assert bare.value.code == 2 and "--clean: expected at least one argument" in capsys.readouterr().err


def test_train_clean_once_per_file(tmp_path, monkeypatch):
    import napari_attnrestore as ar

    seen = {}

    def fake_train(images, clean=None, **kw):
        seen.update(images=images, clean=clean)
        raise KeyboardInterrupt

    monkeypatch.setattr(ar, "train", fake_train)
    a, b = _train_image(tmp_path, "a.tif"), _train_image(tmp_path, "b.tif")
    ca, cb = _train_image(tmp_path, "ca.tif"), _train_image(tmp_path, "cb.tif")
    assert main(["train", a, b, "--clean", ca, "--clean", cb, "--out", str(tmp_path / "q.safetensors"), "-q"]) == 130
    assert seen == {"images": [a, b], "clean": [ca, cb]}


def test_train_takes_folders_and_pairs_a_clean_folder_by_name(tmp_path, monkeypatch, capsys):
    """A folder was refused as 'unsupported file type (directory)': users had to glob."""
    import napari_attnrestore as ar

    seen = {}

    def fake_train(images, clean=None, **kw):
        seen.update(images=images, clean=clean)
        raise KeyboardInterrupt

    monkeypatch.setattr(ar, "train", fake_train)
    for folder in ("noisy", "clean"):
        (tmp_path / folder).mkdir()
        for name in ("b.tif", "a.tif"):
            _train_image(tmp_path / folder, name)
    (tmp_path / "noisy" / "notes.txt").write_text("not an image")
    assert main(["train", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--out",
                 str(tmp_path / "q.safetensors"), "-q"]) == 130
    assert seen["images"] == [str(tmp_path / "noisy" / n) for n in ("a.tif", "b.tif")]
    assert seen["clean"] == [str(tmp_path / "clean" / n) for n in ("a.tif", "b.tif")]
    (tmp_path / "clean" / "b.tif").unlink()
    assert main(["train", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--out",
                 str(tmp_path / "q.safetensors"), "-q"]) == 2
    assert "a clean folder pairs its images by name, and it has no b.tif" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "q.safetensors"), "-q"]) == 2
    assert "empty: no images in this folder" in capsys.readouterr().err
    import zarr  # a zarr store is one image, whatever its folder's name (a pyramid level: img.ome.zarr/0)

    zarr.create_array(str(tmp_path / "store"), shape=(64, 64), chunks=(32, 32), dtype="uint8")
    assert main(["train", str(tmp_path / "store"), "--out", str(tmp_path / "q.safetensors"), "-q"]) == 130
    assert seen["images"] == [str(tmp_path / "store")]


def test_train_warnings_are_one_line_without_source(tmp_path, capsys):
    img = _train_image(tmp_path)
    small = _train_image(tmp_path, "small.tif")
    tifffile.imwrite(small, np.random.default_rng(1).integers(0, 255, (20, 20), dtype=np.uint8))
    assert main(["train", img, small, "--out", str(tmp_path / "q.safetensors"), "--steps", "1", "--batch", "1",
                 "--patch", "32", "-q"]) == 0
    err = capsys.readouterr().err
    assert "attnrestore: warning: 1 of 2 training planes are smaller than the 32x32 patch" in err
    assert "UserWarning" not in err and ".py:" not in err


def test_train_card_records_absolute_images_batch_and_seed(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    _train_image(tmp_path)
    assert main(["train", "noisy.tif", "--out", "q.safetensors", "--steps", "1", "--batch", "2", "--patch", "32",
                 "--seed", "5", "--nodata", "nan", "-q"]) == 0
    card = json.loads((tmp_path / "q.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the card"))
    assert card["training_images"] == [str(tmp_path / "noisy.tif")]
    assert card["training"]["batch"] == 2 and card["training"]["seed"] == 5 and card["training"]["nodata"] == "nan"
    assert "clean_images" not in card and "sigma" not in card["training"]
    _train_image(tmp_path, "clean.tif")  # paired: the clean counterparts are on the card too
    assert main(["train", "noisy.tif", "--clean", "clean.tif", "--out", "p.safetensors", "--steps", "1", "--batch", "1",
                 "--patch", "32", "-q"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["clean_images"] == [str(tmp_path / "clean.tif")]
    assert main(["train", "clean.tif", "--mode", "synthetic", "--out", "s.safetensors", "--steps", "1", "--batch", "1",
                 "--patch", "32", "-q"]) == 0  # the noise added: the levels it learned
    assert json.loads((tmp_path / "s.json").read_text())["training"]["sigma"] == [0.0, 50.0]


def test_train_help_explains_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--mode", "--scale", "--steps", "--batch", "--patch", "--lr"):
        assert f"{option} " in out
        assert len(out.split(option, 2)[-1].split("--", 1)[0].split()) > 3, f"{option} has no help text"
    assert ".jpg" in out and "--clean a.tif --clean b.tif" in out
    assert "(default 500) (default: 500)" not in out and "(default: 500)" not in out  # said once


def test_workers_sets_the_threads_and_is_checked(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """--scheduler local always started one worker process per core, and the thread count of
    the default scheduler could not be set from the command line."""
    import dask

    import napari_attnrestore.engine.execute as execute

    tifffile.imwrite(tmp_path / "a.tif", (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8))
    base = ["restore", str(tmp_path / "a.tif")]
    with pytest.raises(SystemExit) as e:
        main([*base, str(tmp_path / "o.ome.zarr"), "--workers", "0", "-q"])
    assert e.value.code == 2 and "expected a whole number of at least 1, got '0'" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "o.ome.zarr"), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "-q"]) == 2
    assert "--workers sets the threads" in capsys.readouterr().err  # not the API's num_workers
    seen, run = [], execute.execute
    monkeypatch.setattr(execute, "execute", lambda *a, **kw: seen.append(kw["num_workers"]) or run(*a, **kw))
    assert main([*base, str(tmp_path / "o.ome.zarr"), "--weights", str(tiny_checkpoint), "--workers", "2", "-q"]) == 0
    assert seen == [2]
    with dask.config.set(num_workers=None):  # restored after: the CLI sets it for its whole process
        assert main([*base, str(tmp_path / "o.tif"), "--weights", str(tiny_checkpoint), "--workers", "1", "-q"]) == 0
        assert dask.config.get("num_workers") == 1


def test_sigterm_leaves_a_zarr_job_cancelled_and_resumable(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """SIGTERM (a batch system's time limit) killed a restore on the spot, its store left
    'running'; it now ends as Ctrl-C does: status 'cancelled', exit 143, --resume finishes it."""
    import signal

    from napari_attnrestore.engine.store import job_state

    img = (np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img)
    real = ar.restore_to_zarr

    sent = [signal.SIGTERM, signal.SIGTERM]  # twice, as timeout and SLURM send it: the cleanup was cut short

    def terminated_after_one_chunk(*args, progress=None, **kwargs):
        def tick(done, total):
            progress(done, total)
            if done == 1:
                for sig in sent:
                    os.kill(os.getpid(), sig)

        return real(*args, progress=tick, **kwargs)

    monkeypatch.setattr(ar, "restore_to_zarr", terminated_after_one_chunk)
    out = tmp_path / "o.ome.zarr"
    args = ["restore", str(tmp_path / "a.tif"), str(out), "--weights", str(tiny_checkpoint), "--chunks", "32", "-q"]
    assert main([*args, "--workers", "1"]) == 143
    assert f"attnrestore: terminated; {out} can be continued with --resume" in capsys.readouterr().err
    assert job_state(out)["status"] == "cancelled"
    sent[:] = [signal.SIGHUP]  # the ssh session closed: handled alike (it ended the run with no word)
    assert main([*args, "--resume"]) == 129 and job_state(out)["status"] == "cancelled"
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # the caller's handlers are back
    monkeypatch.setattr(ar, "restore_to_zarr", real)
    assert main([*args, "--resume"]) == 0 and job_state(out)["status"] == "complete"


def test_a_closed_pipe_is_not_reported_as_bad_input():
    """`attnrestore models | head -1` said "error: [Errno 32] Broken pipe" with exit status 2."""
    import subprocess
    import sys

    run = subprocess.run(["bash", "-o", "pipefail", "-c",
                          f"'{sys.executable}' -m napari_attnrestore.cli models | head -c 1 > /dev/null"],
                         capture_output=True, text=True)
    assert "Broken pipe" not in run.stderr and "error" not in run.stderr, run.stderr
    assert run.returncode in (0, 141)


def test_progress_in_a_log_file_is_one_line_per_update():
    """Redirected to a file, the bar's updates were carriage returns on one endless line (no
    progress for tail or grep until the end), the last one printed twice."""
    import io

    from napari_attnrestore.cli import _ProgressBar

    log = io.StringIO()
    bar = _ProgressBar("restore", resumable=False)
    stderr, sys.stderr = sys.stderr, log
    try:
        bar(1, 3)
        bar.bar.refresh()
        bar(3, 3)
        bar.close()
    finally:
        sys.stderr = stderr
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == "" and len(lines) == len(set(lines))
    counts = [line.split("[", 1)[0] for line in lines if line]
    assert len(counts) == len(set(counts)), lines
    from napari_attnrestore.cli import _Lines

    log = io.StringIO()
    out = _Lines(log)
    for rate in ("63.27", "43.68"):  # closing a TIFF's bar printed its last count again, with another rate
        out.write(f"\rrestore: 100%|##########| 2048/2048 [00:32<00:00, {rate}row/s]")
    assert log.getvalue().count("2048/2048") == 1
    assert lines[0].startswith("restore:  33%|###") and lines[-2].startswith("restore: 100%|##########| 3/3")


def test_models_measure_refuses_sizes_and_threads_below_one(capsys):
    """models --measure --sizes 0 --threads 0 printed a table of failed rows with exit status 0."""
    for args in (["--sizes", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(["models", "--measure", *args])
        assert stop.value.code == 2 and "expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_errors_name_the_command_lines_options(tmp_path, tiny_checkpoint, capsys):
    """The message named the API's spelling first: "replace it with overwrite=True (CLI:
    --overwrite; Restore widget: ...)"."""
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    args = ["restore", str(tmp_path / "a.tif"), str(tmp_path / "o.ome.zarr"), "--weights", str(tiny_checkpoint), "-q"]
    assert main(args) == 0
    assert main([*args, "--resume", "--overlap", "4"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the existing output was made with other settings (overlap differ); start again with " \
           "--overwrite" in err and "overwrite=True" not in err


def test_a_band_stack_stored_as_pages_warns_and_channel_axis_scales_each_band(tmp_path, tiny_checkpoint, capsys):
    """Pages read as time share one range: a band 100 times dimmer than the other came out
    worse than it went in, silently, and the CLI had no way to say the pages are bands."""
    import napari_attnrestore as ar

    rng = np.random.default_rng(0)
    bands = np.stack([rng.integers(100, 300, (48, 48)), rng.integers(20000, 40000, (48, 48))]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "pages.tif", bands)  # two pages, as tifffile and many tools write a stack
    assert main(["restore", str(tmp_path / "pages.tif"), str(tmp_path / "shared.tif"), "--weights",
                 str(tiny_checkpoint), "-q"]) == 0
    assert "differ 1" in capsys.readouterr().err  # (about 100-fold) ... give --channel-axis
    assert main(["restore", str(tmp_path / "pages.tif"), str(tmp_path / "bands.tif"), "--weights",
                 str(tiny_checkpoint), "--channel-axis", "0", "-q"]) == 0
    assert "differ" not in capsys.readouterr().err
    each = np.asarray(ar.restore(str(tmp_path / "pages.tif"), model=str(tiny_checkpoint), channel_axis=0))
    assert np.array_equal(tifffile.imread(tmp_path / "bands.tif"), each)
    assert not np.array_equal(tifffile.imread(tmp_path / "shared.tif"), each)
    from napari_attnrestore.io import open_image  # the result says its pages are channels, not time

    assert open_image(tmp_path / "bands.tif").axes == "cyx"
    assert main(["restore", str(tmp_path / "pages.tif"), str(tmp_path / "bands.ome.zarr"), "--weights",
                 str(tiny_checkpoint), "--channel-axis", "0", "-q"]) == 0
    assert open_image(tmp_path / "bands.ome.zarr").axes == "cyx"


def test_restoring_a_file_onto_itself_says_so_first(tmp_path, tiny_checkpoint, capsys):
    """'output exists; pass --overwrite', then with --overwrite 'would overlap the input'."""
    src = _train_image(tmp_path, "self.tif")
    assert main(["restore", src, src, "--weights", str(tiny_checkpoint), "-q"]) == 2
    assert "overlap the input" in capsys.readouterr().err


def test_a_nodata_the_image_cannot_hold_is_warned_about(tmp_path, tiny_checkpoint, capsys):
    src = _train_image(tmp_path, "bytes.tif")
    assert main(["restore", src, str(tmp_path / "o.tif"), "--weights", str(tiny_checkpoint), "--nodata", "300",
                 "-q"]) == 0
    assert "nodata 300 cannot occur in this uint8 image" in capsys.readouterr().err


def test_scripts_get_json_models_and_errors_that_name_the_option(tmp_path, capsys, monkeypatch):
    """From a review of the CLI in batch jobs: `models` had no --json and a blank column;
    'steps and batch must be at least 1' and 'missing port number in address' named no option."""
    import json

    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {w["name"] for w in listed["weights"]} >= {"denoise-acla-tiny"} and listed["architectures"]
    src = _train_image(tmp_path)
    assert main(["train", src, "--out", str(tmp_path / "m.safetensors"), "--steps", "0", "-q"]) == 2
    assert "error: --steps and --batch must be at least 1" in capsys.readouterr().err
    assert main(["train", src, "--out", str(tmp_path / "m.safetensors"), "--lr", "-1", "-q"]) == 2
    assert "error: --lr must be between 0 and 1" in capsys.readouterr().err
    from napari_attnrestore.io import write_ome_zarr

    store = write_ome_zarr(np.zeros((64, 64), np.uint8), tmp_path / "in.ome.zarr", "yx", pyramid=False)
    assert main(["restore", store, str(tmp_path / "o.ome.zarr"), "--scheduler", "bogus", "-q"]) == 2
    assert "scheduler 'bogus' (CLI --scheduler): cannot connect" in capsys.readouterr().err


def test_main_called_from_python_gives_the_signal_handlers_back_after_a_ctrl_c(monkeypatch):
    """After one Ctrl-C in cli.main called from a script or notebook, SIGINT, SIGTERM and
    SIGHUP stayed ignored: the process could no longer be interrupted or stopped."""
    import os
    import signal
    import time

    from napari_attnrestore import cli

    def interrupted(a):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # (the handler raises before this ends)
        return 0

    monkeypatch.setattr(cli, "cmd_models", interrupted)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert main(["models"]) == 130
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_failed_overwrite_says_where_the_output_it_replaces_is(tmp_path, capsys):
    """A failed --overwrite left the old output hidden as .OUT.replaced, and only the README said so."""
    (tmp_path / ".out.ome.zarr.replaced").mkdir()  # kept aside by a job that then failed
    (tmp_path / "out.ome.zarr").mkdir()
    assert main(["restore", str(tmp_path / "missing.tif"), str(tmp_path / "out.ome.zarr"), "--overwrite", "-q"]) == 2
    assert "the output it replaces is kept as" in capsys.readouterr().err


def test_a_bayer_pattern_is_taken_in_any_case(tmp_path, capsys):
    """The API took cfa='bggr', the CLI refused --cfa bggr."""
    raw = _train_image(tmp_path, "raw.tif")
    assert main(["restore", raw, str(tmp_path / "rgb.tif"), "--task", "demosaic", "--cfa", "bggr", "-q"]) == 0
    assert tifffile.imread(tmp_path / "rgb.tif").shape == (64, 64, 3)


def test_tif_output_takes_a_compression_and_resume_says_it_is_for_zarr(tmp_path, tiny_checkpoint, capsys):
    """From a digital-pathology review: TIFF output was always zlib (an SR x2 of a 2.3 MB
    JPEG slide made 39 MB) with no way to ask for JPEG; an OME-TIFF result had no resolution
    tags for tools that skip its XML; --resume of a .tif answered only 'pass --overwrite'."""
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    src = tmp_path / "slide.ome.tif"
    tifffile.imwrite(src, image, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.25,
                                                              "PhysicalSizeY": 0.25})
    args = ["restore", str(src), str(tmp_path / "jpeg.ome.tif"), "--weights", str(tiny_checkpoint), "-q"]
    assert main([*args, "--compression", "JPEG"]) == 0
    with tifffile.TiffFile(tmp_path / "jpeg.ome.tif") as tif:
        page = tif.pages.first
        assert page.compression == tifffile.COMPRESSION.JPEG and page.shape == (96, 128, 3)
        assert page.get_resolution(tifffile.RESUNIT.MICROMETER) == pytest.approx((4.0, 4.0))
    assert main([*args[:2], str(tmp_path / "lossless.tif"), *args[3:], "--compression", "zstd"]) == 0
    with tifffile.TiffFile(tmp_path / "lossless.tif") as tif:
        assert tif.pages.first.compression == tifffile.COMPRESSION.ZSTD
    assert main([*args[:2], str(tmp_path / "o.ome.zarr"), *args[3:], "--compression", "jpeg"]) == 2
    assert "--compression is for .tif output" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2
    assert "jpeg.ome.tif: --resume continues a .zarr output; a TIFF or PNG is written whole" in capsys.readouterr().err
    with pytest.raises(ar.io.ImageWriteError, match="JPEG compression holds 8-bit data, not uint16"):
        ar.restore_to_tiff(image.astype(np.uint16), tmp_path / "deep.tif", model=str(tiny_checkpoint),
                           compression="jpeg")


def test_out_dtype_gives_a_float_result(tmp_path, tiny_checkpoint):
    """From a quantitative review: low counts lose their fractions when rounded to the
    input's integers (a background of 1.24 photons came out 1), and the CLI had no way to
    ask for float output as the API's dtype= does."""
    src = tmp_path / "counts.tif"
    tifffile.imwrite(src, np.random.default_rng(0).poisson(1.2, (64, 64)).astype(np.uint16))
    assert main(["restore", str(src), str(tmp_path / "f.tif"), "--weights", str(tiny_checkpoint),
                 "--out-dtype", "float32", "-q"]) == 0
    out = tifffile.imread(tmp_path / "f.tif")
    assert out.dtype == np.float32 and not np.array_equal(out, np.rint(out))


def test_white_level_on_the_command_line(tmp_path, tiny_checkpoint, capsys):
    image = np.random.default_rng(0).integers(100, 3000, (64, 64)).astype(np.uint16)
    image[:16] = 4095
    tifffile.imwrite(tmp_path / "cam.tif", image)
    args = ["restore", str(tmp_path / "cam.tif"), str(tmp_path / "o.tif"), "--weights", str(tiny_checkpoint), "-q"]
    assert main([*args, "--white-level", "4095"]) == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.max() <= 4095 and (out[:16] == 4095).all()
    assert main([*args, "--overwrite", "--white-level", "10"]) == 2
    assert "white_level 10.0 (CLI --white-level) must be a finite value above" in capsys.readouterr().err


def test_series_restores_another_image_of_a_tiff(tmp_path, tiny_checkpoint, capsys):
    """A multi-position OME-TIFF (a slide's label) restored only its first image: the others
    could not be chosen. --series N, and the API's open_image(path, series=N), choose one."""
    rng = np.random.default_rng(0)
    first, second = (rng.random((40, 48)) * 255).astype(np.uint8), (rng.random((56, 64)) * 255).astype(np.uint8)
    src = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as w:
        w.write(first)
        w.write(second)
    args = ["restore", str(src), "--weights", str(tiny_checkpoint), "-q", "--series", "1"]
    for out in ("s1.tif", "s1.ome.zarr", "s1.png"):
        assert main([*args[:2], str(tmp_path / out), *args[2:]]) == 0
    assert tifffile.imread(tmp_path / "s1.tif").shape == second.shape
    assert zarr.open_group(str(tmp_path / "s1.ome.zarr"), mode="r")["0"].shape == second.shape
    # the same as the API gives for that image, opened
    picked = ar.io.open_image(src, series=1)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s1.tif"),
                                  np.asarray(ar.restore(picked, model=str(tiny_checkpoint)).compute()))
    # resuming the store with the first image is refused: it is another input
    assert main([*args[:2], str(tmp_path / "s1.ome.zarr"), *args[2:-2], "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "s5.tif"), *args[2:-1], "5"]) == 2
    assert "holds 2 images, not series 5" in capsys.readouterr().err
    assert not (tmp_path / "s5.tif").exists()
