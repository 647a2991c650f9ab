"""Checkpoints: safetensors + JSON card round trip; unsafe pickles are refused unexecuted."""

import pickle

import numpy as np
import pytest
import torch

import napari_attnrestore as ar
from napari_attnrestore.training import CheckpointError, load_checkpoint, read_card


def test_round_trip(tiny_checkpoint, tiny_hat):
    m = load_checkpoint(tiny_checkpoint)
    card = read_card(tiny_checkpoint)
    assert card["arch"] == "hat" and card["task"] == "denoise"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), tiny_hat(x), atol=2e-2)  # weights stored as fp16


def test_wrong_task_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="for task 'denoise', not 'sr'"):
        load_checkpoint(tiny_checkpoint, task="sr")


def test_checkpoint_restores_through_api(tiny_checkpoint):
    out = ar.restore(np.random.default_rng(0).random((40, 40)).astype(np.float32), model=str(tiny_checkpoint))
    assert out.compute().shape == (40, 40)


MARKER = []


class Evil:
    def __reduce__(self):
        return (MARKER.append, ("code ran",))


def test_pickled_code_is_refused_without_running(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"state_dict": {"w": Evil()}}, f)
    torch.save({"params": {"w": Evil()}}, tmp_path / "evil2.pth")
    for path in (p, tmp_path / "evil2.pth"):
        with pytest.raises(CheckpointError, match="refused"):
            ar.load_model(str(path))
    assert MARKER == []


def test_corrupt_safetensors(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:100])
    tiny_checkpoint.with_suffix(".json").rename(bad.with_suffix(".json"))
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_checkpoint(bad)


def test_weights_holding_nan_or_a_card_that_is_no_object_are_refused(tmp_path, tiny_checkpoint):
    """A damaged file whose tensors read as NaN restored every image to black, exit status 0."""
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan.safetensors"
    state = load_file(tiny_checkpoint)
    save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, bad)
    bad.with_suffix(".json").write_text(tiny_checkpoint.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        load_checkpoint(bad)
    bad.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_card(bad)


def test_a_pth_that_is_no_checkpoint_is_not_called_pickled_code(tmp_path):
    from napari_attnrestore.training.checkpoint import load_state

    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a checkpoint; give a .safetensors file"):
        load_state(tmp_path / "notes.pth")
    import tifffile  # a TIFF given for --weights was said to hold pickled code

    tifffile.imwrite(tmp_path / "image.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(CheckpointError, match=r"image\.tif: not a checkpoint but a TIFF image"):
        load_state(tmp_path / "image.tif")
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 20)  # a zip cut short
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state(tmp_path / "cut.pth")
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file"):
        load_state(tmp_path / "dir.pth")


def test_a_dot_in_the_name_is_kept(tmp_path, tiny_hat):
    out = ar.save_model(tiny_hat, tmp_path / "denoise_v1.5", task="denoise")
    assert out.name == "denoise_v1.5.safetensors" and (tmp_path / "denoise_v1.5.json").exists()
    assert load_checkpoint(out, task="denoise") is not None  # was written as denoise_v1.safetensors


def test_saved_weights_are_readable_like_their_card(tmp_path):
    import os

    from napari_attnrestore.models import build_model
    from napari_attnrestore.training.checkpoint import save_checkpoint

    path = save_checkpoint(build_model("hat", "denoise", dim=16, depths=[1], heads=2, window=8), tmp_path / "m.safetensors",
                      task="denoise")
    assert os.stat(path).st_mode & 0o777 == os.stat(path.with_suffix(".json")).st_mode & 0o777


def test_the_output_place_is_checked_before_writing(tmp_path, tiny_hat):
    """A file in the way of the folder, or a folder of the checkpoint's name, failed only at the end of training."""
    from napari_attnrestore.training.checkpoint import check_output, save_checkpoint

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt/x.safetensors: cannot write the checkpoint there: .*notes.txt is "
                                         "a file, not a folder"):
        check_output(tmp_path / "notes.txt" / "x.safetensors", "checkpoint")
    (tmp_path / "dirout.safetensors").mkdir()
    with pytest.raises(ValueError, match=r"dirout\.safetensors: is a folder"):
        save_checkpoint(tiny_hat, tmp_path / "dirout.safetensors", task="denoise")
    assert not (tmp_path / "dirout.safetensors.tmp").exists()
    assert check_output(tmp_path / "new" / "deeper" / "m.safetensors") == tmp_path / "new" / "deeper" / "m.safetensors"


def test_a_failed_save_leaves_no_temporary_file(tmp_path, tiny_hat, monkeypatch):
    import os

    from napari_attnrestore.training import checkpoint

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(tiny_hat, tmp_path / "m.safetensors", task="denoise")
    assert os.listdir(tmp_path) == []


def test_a_nan_nodata_is_written_as_valid_json_and_read_back_as_nan(tmp_path, tiny_hat):
    import json
    import math

    from napari_attnrestore.training import save_checkpoint

    path = save_checkpoint(tiny_hat, tmp_path / "qn.safetensors", task="denoise",
                           card={"training": {"nodata": float("nan"), "steps": 2}})
    text = path.with_suffix(".json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))  # strict JSON: no NaN
    assert '"nodata": "nan"' in text
    assert math.isnan(read_card(path)["training"]["nodata"])
    assert math.isnan(load_checkpoint(path).card["training"]["nodata"])


def test_save_refuses_what_load_could_not_rebuild(tmp_path, tiny_hat):
    """A module of the user's own, or a denoiser saved as 'sr' or 'foo', was written and then
    refused by load_model."""
    own = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 1, 3, padding=1))
    with pytest.raises(ValueError, match="architectures acla, csattn, grl, hat, psal, not Sequential"):
        ar.save_model(own, tmp_path / "own.safetensors", task="denoise")
    with pytest.raises(ValueError, match=r"cannot be saved as a 'sr' checkpoint.*supports scale 2, 4, not 1"):
        ar.save_model(tiny_hat, tmp_path / "sr.safetensors", task="sr")
    with pytest.raises(ValueError, match="unknown task 'foo'"):
        ar.save_model(tiny_hat, tmp_path / "foo.safetensors", task="foo")
    # a denoiser saved as an inpainter loaded, and restoring with it failed (1 channel, not 2)
    with pytest.raises(ValueError, match=r"task 'inpaint' takes the image and the mask of its gaps \(2, 4 or 5 "
                                         r"input channels\); this network takes 1"):
        ar.save_model(tiny_hat, tmp_path / "ip.safetensors", task="inpaint")
    assert not list(tmp_path.iterdir())
    ar.load_model(ar.save_model(tiny_hat, tmp_path / "ok.safetensors", task="denoise"), task="denoise")
    rgba = ar.build_model("hat", task="denoise", in_channels=4, out_channels=4, dim=16, depths=[1], heads=2, window=8)
    ar.save_model(rgba, tmp_path / "rgba.safetensors", task="denoise")  # an RGBA network the engine runs


def test_files_given_for_weights_by_mistake_are_named(tmp_path, tiny_checkpoint):
    """A TorchScript archive got torch's advice to unpickle unsafely; our own weights without
    their card asked for spandrel; a folder named .safetensors said 'No such device'; a
    shipped name with its extension was 'not found' without a word more."""
    scripted = torch.jit.script(torch.nn.Conv2d(1, 1, 3))
    scripted.save(str(tmp_path / "s.pt"))
    with pytest.raises(CheckpointError, match="a TorchScript archive, not a checkpoint of weights; load it with"):
        ar.load_model(tmp_path / "s.pt")
    torch.save(torch.nn.Conv2d(1, 1, 3), tmp_path / "code.pt")  # (its archive's top folder is code/)
    with pytest.raises(CheckpointError, match="it may hold pickled code"):
        ar.load_model(tmp_path / "code.pt")
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(tiny_checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match=r"attnrestore weights \(hat, denoise\) whose model card alone.json"):
        ar.load_model(alone)
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file"):
        ar.load_model(tmp_path / "dir.safetensors")
    with pytest.raises(CheckpointError, match=r"the shipped model is named 'denoise-acla-tiny', without \.safetensors"):
        ar.load_model("denoise-acla-tiny.safetensors")


def test_weights_beyond_fp16s_range_are_kept_in_fp32(tmp_path, tiny_hat):
    with torch.no_grad():
        next(tiny_hat.parameters()).view(-1)[0] = 1e5
    ar.save_model(tiny_hat, tmp_path / "big.safetensors", task="denoise")
    back = ar.load_model(tmp_path / "big.safetensors")
    assert next(back.parameters()).view(-1)[0] == 1e5


def test_a_changed_shipped_model_is_saved_under_its_own_name_without_the_shipped_numbers(tmp_path):
    model = ar.load_model("denoise-hat-tiny")
    ar.save_model(model, tmp_path / "mine.safetensors", task="denoise")
    card = read_card(tmp_path / "mine.safetensors")
    assert card["name"] == "mine" and card["derived_from"] == "denoise-hat-tiny"
    assert not {"metrics", "recipe", "default_for", "default_choice"} & card.keys()
    assert card["arch"] == "hat" and card["config"] == model.card["config"]


def test_a_network_whose_result_depends_on_its_tile_records_its_training_tile(tmp_path, tiny_hat):
    """CSAttn's channel attention pools over the whole input: its card names the input side
    of its training patches (the target's side over the scale), for the engine to run it on."""
    from napari_attnrestore.models import build_model
    from napari_attnrestore.training import save_checkpoint

    net = build_model("csattn", task="sr", scale=2, dim=8, depths=[1, 1, 1], heads=[1, 1, 1])
    path = save_checkpoint(net, tmp_path / "sr.safetensors", task="sr", card={"training": {"patch": 64}})
    assert read_card(path)["tile"] == 32
    assert ar.load_model(str(path)).card["tile"] == 32
    kept = save_checkpoint(net, tmp_path / "kept.safetensors", task="sr", card={"tile": 48, "training": {"patch": 64}})
    assert read_card(kept)["tile"] == 48
    other = save_checkpoint(tiny_hat, tmp_path / "hat.safetensors", task="denoise", card={"training": {"patch": 64}})
    assert "tile" not in read_card(other)
