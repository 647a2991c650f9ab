"""The recipe runner: every task trains, writes a card with its metrics, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

import napari_attnrestore as ar
from napari_attnrestore.training import recipe as rc
from napari_attnrestore.training.checkpoint import load_state

SMALL_HAT = {"dim": 16, "depths": [1], "heads": 2, "window": 8, "compress": 2}


def _images(folder, n, shape, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(n):
        base = 0.5 + 0.4 * np.sin(xx / (3 + i) + rng.uniform(0, 6)) * np.cos(yy / (4 + i))
        img = base[..., None] * rng.uniform(0.5, 1, size=(1, 1, 3)) if len(shape) == 3 else base
        skio.imsave(folder / f"im{i}.png", (np.clip(img, 0, 1) * 255).astype(np.uint8), check_contrast=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    _images(root / "train" / "gray", 3, (80, 80), 0)
    _images(root / "train" / "color", 3, (80, 80, 3), 1)
    _images(root / "bench" / "gray", 2, (48, 64), 2)
    _images(root / "bench" / "color", 2, (48, 64, 3), 3)
    return root


def _recipe(tmp_path, task, **extra):
    color = task == "demosaic"
    r = {
        "name": f"test-{task}", "task": task, "arch": "hat", "config": SMALL_HAT,
        "data": ["train/color" if color else "train/gray"], "patch": 32, "degradation": {},
        "train": {"steps": 2, "batch": 2, "lr": 1e-3, "warmup": 1, "log_every": 1, "checkpoint_every": 1},
        "eval": {"set": "bench/color" if color or task == "sr" else "bench/gray"},
        **({"color": True} if color else {}), **extra,
    }
    path = tmp_path / f"{task}.json"
    path.write_text(json.dumps(r))
    return path


@pytest.mark.parametrize(
    ("task", "extra", "metric"),
    [
        ("sr", {"scale": 2}, "color_x2_Y"),
        ("demosaic", {"eval": {"set": "bench/color", "patterns": ["RGGB", "GBRG"]}}, "color_GBRG"),
        ("inpaint", {}, "gray_stripes"),
    ],
)
def test_recipe_trains_every_task(tmp_path, data, task, extra, metric):
    path = rc.run(_recipe(tmp_path, task, **extra), data, tmp_path / "out", tmp_path / "runs")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["task"] == task and card["training"]["steps_done"] == 2
    assert {"psnr", "psnr_in"} <= set(card["metrics"][metric])
    model = ar.load_model(str(path))
    assert model.card["task"] == task and model.card["name"] == f"test-{task}"


def test_recipe_resumes_from_its_state(tmp_path, data):
    path = _recipe(tmp_path, "sr", scale=2)
    rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2)
    first = (tmp_path / "runs" / "test-sr" / "loss.tsv").read_text().splitlines()
    recipe = json.loads(path.read_text())
    recipe["train"]["loss"] = "l2"  # a recipe that changes its loss part-way
    path.write_text(json.dumps(recipe))
    rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=4, precision="bf16")
    curve = (tmp_path / "runs" / "test-sr" / "loss.tsv").read_text().splitlines()
    assert curve[: len(first)] == first
    assert [int(line.split("\t")[0]) for line in curve] == [1, 2, 3, 4]
    card = json.loads((tmp_path / "out" / "test-sr.safetensors").with_suffix(".json").read_text())
    assert card["training"]["steps_done"] == 4
    segs = card["training"]["segments"]
    assert [(g["from_step"], g["to_step"], g["schedule_steps"]) for g in segs] == [(0, 2, 2), (2, 4, 4)]
    assert all("threads" in g["machine"] for g in segs)
    assert "precision" not in segs[0] and segs[1]["precision"] == "bf16"  # the run that overrode it says so
    assert [g["loss"] for g in segs] == ["charbonnier", "l2"]  # each segment names its loss


def test_a_damaged_or_finished_state_names_what_a_recipe_run_can_do(tmp_path, data):
    """A truncated state.pt raised torch's own unpickling error; the loop's advice named
    train's --state, which the recipe runner has not."""
    from napari_attnrestore.training.checkpoint import CheckpointError

    path = _recipe(tmp_path, "sr", scale=2)
    rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2)
    with pytest.raises(CheckpointError, match=r"already at step 2.*recipe test-sr: --steps N goes on"):
        rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=1)
    state = tmp_path / "runs" / "test-sr" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"state\.pt: cannot resume: not a readable training state.*remove it"):
        rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=3)


def test_recipe_continues_a_trained_weight_without_its_state(tmp_path, data):
    path = _recipe(tmp_path, "sr", scale=2)
    first = rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for f in (first, first.with_suffix(".json")):
        (shipped / f.name).write_bytes(f.read_bytes())
    fresh = tmp_path / "fresh-runs"  # a new checkout: no saved state
    model = rc.build_model("hat", task="sr", scale=2, **SMALL_HAT)
    cfg = rc.TrainConfig(steps=4, batch=2, lr=1e-3)
    assert rc.rebuild_state(model, cfg, shipped / first.name, fresh / "test-sr") == 2
    st = torch.load(fresh / "test-sr" / "state.pt", weights_only=True)
    assert st["step"] == 2 and st["opt"]["state"] == {} and st["fresh_optimizer"]  # fit warms up again
    for k, v in load_state(shipped / first.name).items():
        assert torch.equal(st["ema"][k], v.float()) and torch.equal(st["model"][k], v.float())
    with pytest.raises(FileExistsError, match="resumes from it"):
        rc.rebuild_state(model, cfg, shipped / first.name, fresh / "test-sr")
    (fresh / "test-sr" / "state.pt").unlink()

    out = rc.run(path, data, tmp_path / "out2", fresh, steps=4, continue_weight=shipped / first.name)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["steps_done"] == 4
    segs = card["training"]["segments"]
    assert [(g["from_step"], g["to_step"], g["schedule_steps"]) for g in segs] == [(0, 2, 2), (2, 4, 4)]
    assert "optimizer" not in segs[0] and "rebuilt" in segs[1]["optimizer"]
    assert [int(line.split("\t")[0]) for line in (fresh / "test-sr" / "loss.tsv").read_text().splitlines()] == [3, 4]


def test_continuing_refuses_a_weight_of_another_recipe_or_network(tmp_path, data):
    other = rc.run(_recipe(tmp_path, "sr", scale=2), data, tmp_path / "out", tmp_path / "runs")
    model = rc.build_model("hat", task="denoise", **SMALL_HAT)
    with pytest.raises(ValueError, match="does not fit this recipe's network"):
        rc.rebuild_state(model, rc.TrainConfig(steps=4), other, tmp_path / "fresh")
    with pytest.raises(ValueError, match="only a weight of the same recipe"):
        rc.rebuild_state(model, rc.TrainConfig(steps=4), other, tmp_path / "fresh", name="test-sr-x4")


def test_recipe_refuses_benchmark_data(tmp_path, data):
    path = _recipe(tmp_path, "inpaint", data=["bench/gray"])
    with pytest.raises(ValueError, match="benchmark sets are never used"):
        rc.run(path, data, tmp_path / "out", tmp_path / "runs")


def test_recipe_starts_x4_from_x2_weights(tmp_path, data):
    x2 = rc.run(_recipe(tmp_path, "sr", scale=2), data, tmp_path / "out", tmp_path / "runs")
    x4 = _recipe(tmp_path, "sr", scale=4, name="test-sr-x4", init=str(x2), patch=64)
    model = rc.build_model("hat", task="sr", scale=4, **SMALL_HAT)
    rc.init_from(model, str(x2), tmp_path / "out")
    src = load_state(x2)
    body = [k for k in model.state_dict() if k in src and src[k].shape == model.state_dict()[k].shape]
    assert body and any(k not in body for k in model.state_dict())  # the upsampler differs
    for k in body:
        assert model.state_dict()[k].equal(src[k].float())
    path = rc.run(x4, data, tmp_path / "out", tmp_path / "runs", steps=1)
    card = ar.load_model(str(path)).card
    assert card["scale"] == 4 and card["training"]["init"] == str(x2)  # the card names its starting point


def test_recipe_grows_a_deeper_network_from_a_shallower_one(tmp_path, data):
    small = {"dim": 8, "n_blocks": 2, "positions": [1], "keys": 2}
    src = rc.run(_recipe(tmp_path, "inpaint", arch="acla", config=small, name="test-shallow"), data,
                 tmp_path / "out", tmp_path / "runs")
    grow = [["blocks.0.", "blocks.0."], ["blocks.1.", "blocks.2."], ["attn.1.", "attn.3."]]
    deep = {**small, "n_blocks": 4, "positions": [3]}
    model = rc.build_model("acla", task="inpaint", **deep)
    rc.init_from(model, str(src), tmp_path / "out", grow)
    before = ar.load_model(str(src)).float().eval()
    model.eval()
    x = torch.rand(1, 2, 24, 24)  # image and mask
    x[:, 1] = (x[:, 1] > 0.7).float()
    with torch.no_grad():
        assert torch.allclose(model(x), before(x), atol=1e-6)  # blocks 1 and 3 pass through: the same function
    assert model.blocks[1].conv2.weight.abs().sum() == 0 and model.blocks[2].conv2.weight.abs().sum() > 0
    # without the map the names do not line up: nothing is grown, block 3 keeps its random start
    plain = rc.build_model("acla", task="inpaint", **deep)
    rc.init_from(plain, str(src), tmp_path / "out")
    assert plain.blocks[3].conv2.weight.abs().sum() > 0
    # a GRL grows by stages appended at the end: their names line up (an empty map), the new one passes through
    grl = {"dim": 8, "depths": [1], "heads_window": 1, "heads_stripe": 1, "window": 4, "stripe": [8, 8],
           "anchor_down": 2, "cpb_hidden": 8}
    shallow = rc.build_model("grl", task="denoise", **grl).eval()
    weight = ar.save_model(shallow, tmp_path / "grl.safetensors", task="denoise")
    deeper = rc.build_model("grl", task="denoise", **{**grl, "depths": [1, 1]}).eval()
    rc.init_from(deeper, str(weight), tmp_path / "out", [])
    y = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(deeper(y), shallow(y), atol=1e-6)
    path = rc.run(_recipe(tmp_path, "inpaint", arch="acla", config=deep, name="test-deep", init=str(src),
                          init_map=grow), data, tmp_path / "out", tmp_path / "runs", steps=1)
    assert ar.load_model(str(path)).card["training"]["init_map"] == grow  # the card says how it was grown


def test_recipe_anneals_acla_temperature(tmp_path, data):
    path = _recipe(tmp_path, "sr", scale=2, arch="acla", config={"dim": 8, "n_blocks": 2, "positions": [1], "keys": 2},
                   anneal_tau=[1.0, 0.1], name="test-acla")
    seen = []
    orig = rc.build_model

    def spy(*args, **kw):
        model = orig(*args, **kw)
        set_t = model.set_temperature
        model.set_temperature = lambda tau: (seen.append(tau), set_t(tau))
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rc, "build_model", spy)
        rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2)
    assert seen[0] == 1.0 and seen[-1] == pytest.approx(0.1)


def test_tau_schedule_holds_the_end_temperature_past_its_horizon():
    model = rc.build_model("acla", task="denoise", dim=8, n_blocks=2, positions=[1], keys=2)

    def tau() -> float:
        (t,) = {m.tau for m in model.attn.values()}
        return t

    set_tau = rc.tau_schedule(model, [1.0, 0.1, 100], steps=1000)
    set_tau(50)
    assert tau() == pytest.approx(0.1 ** 0.5)
    set_tau(100)
    assert tau() == pytest.approx(0.1)
    set_tau(900)  # an extended schedule no longer raises the temperature again
    assert tau() == pytest.approx(0.1)
    rc.tau_schedule(model, [1.0, 0.1], steps=1000)(500)  # without a horizon: the run's steps
    assert tau() == pytest.approx(0.1 ** 0.5)
    for bad in ([1.0], [1.0, 0.0], [1.0, 0.1, 0]):
        with pytest.raises(ValueError, match="anneal_tau"):
            rc.tau_schedule(model, bad, steps=10)
    rc.tau_schedule(torch.nn.Identity(), [1.0, 0.1], steps=10)(5)  # other models: nothing to set


def test_recipe_downscales_training_images(tmp_path, data):
    full = rc.load_training_images(json.loads(_recipe(tmp_path, "demosaic").read_text()), data)
    half = rc.load_training_images(json.loads(_recipe(tmp_path, "demosaic", downscale=2).read_text()), data)
    assert [im.shape for im in full] == [(3, 80, 80)] * 3 and [im.shape for im in half] == [(3, 40, 40)] * 3
    np.testing.assert_allclose(half[0][:, 0, 0], full[0][:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)
    odd = rc.block_mean(np.arange(35, dtype=np.float32).reshape(5, 7), 2)
    np.testing.assert_array_equal(odd, [[4, 6, 8], [18, 20, 22]])


def test_self_supervised_recipe_trains_on_fixed_noisy_images(tmp_path, data):
    recipe = _recipe(tmp_path, "denoise", self_supervised="neighbor2neighbor", degradation={"sigma": [10, 30]},
                     eval={"set": "bench/gray", "sigmas": [25]})
    path = rc.run(recipe, data, tmp_path / "out", tmp_path / "runs")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["self_supervised"] == "neighbor2neighbor" and card["training"]["clean_images_used"] is False
    assert "gray_sigma25" in card["metrics"]
    flat = card["metrics"]["flat_fields"]  # what zoo.choose_defaults weighs between tied denoisers
    assert 0 <= flat["noise_left"] and flat["sigma"] in (0.005, 0.01, 0.02) and flat["bias"] >= 0
    clean = rc.load_training_images(json.loads(recipe.read_text()), data)
    noisy = rc.noisy_once(clean, 0, sigma=(10.0, 30.0))
    assert all(np.array_equal(a, b) for a, b in zip(noisy, rc.noisy_once(clean, 0, sigma=(10.0, 30.0)), strict=True))
    sigmas = [float(np.std(n - c)) * 255 for n, c in zip(noisy, clean, strict=True)]
    assert all(9 < s < 31 for s in sigmas) and len(set(np.round(sigmas))) > 1  # one sigma per image
    bad = _recipe(tmp_path, "sr", scale=2, self_supervised="neighbor2neighbor")
    with pytest.raises(ValueError, match="self_supervised recipes are for denoising"):
        rc.run(bad, data, tmp_path / "out", tmp_path / "runs")


def test_sure_recipe_carries_each_image_noise_level_estimated_from_it(tmp_path, data):
    recipe = json.loads(_recipe(tmp_path, "denoise", self_supervised="sure", degradation={"sigma": [10, 30]}).read_text())
    cfg = rc.TrainConfig(**recipe["train"])
    _, sampler, make_pair, loss_fn = rc.training_parts(recipe, data, cfg)
    noisy = rc.noisy_once(rc.load_training_images(recipe, data), cfg.seed, sigma=(10.0, 30.0))
    assert [im.shape for im in sampler.images] == [(2, 80, 80)] * 3
    for im, n in zip(sampler.images, noisy, strict=True):
        np.testing.assert_array_equal(im[0], n)
        assert np.all(im[1] == im[1, 0, 0]) and abs(im[1, 0, 0] - rc.estimate_noise_sigma(n)) < 1e-6
    inp, sigma = make_pair(sampler.sample(2), None)
    assert inp.shape == (2, 1, 32, 32) and sigma.shape == (2, 1, 32, 32)
    assert type(loss_fn).__name__ == "SureLoss"


def test_recipe_compile_flag_reaches_the_loop(tmp_path, data, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    recipe = _recipe(tmp_path, "denoise", degradation={"sigma": [10, 30]}, eval={"set": "bench/gray", "sigmas": [25]})
    path = rc.run(recipe, data, tmp_path / "out", tmp_path / "runs", compile=True)
    assert json.loads(path.with_suffix(".json").read_text())["training"]["compile"] is True
    assert len(compiled) == 1 and compiled[0].arch == "hat"
    model, sampler, make_pair, loss_fn = rc.training_parts(json.loads(recipe.read_text()), data, rc.TrainConfig())
    assert model.arch == "hat"
    assert loss_fn is None and sampler.patch == 32 and make_pair(sampler.sample(2), torch.Generator())[0].shape == (2, 1, 32, 32)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "recipes").glob("*.json")), ids=lambda p: p.stem)
def test_committed_recipes_are_valid(path):
    """Every committed recipe names its file, builds its network and degrades a batch."""
    from napari_attnrestore import tasks
    from napari_attnrestore.models import build_model

    r = json.loads(path.read_text())
    assert r["name"].replace("-", "_") == path.stem
    task = tasks.get_task(r["task"])
    scale = r.get("scale", 1)
    build_model(r["arch"], task=task.name, scale=scale, preset=r.get("preset", "tiny"), **r.get("config", {}))
    rc.TrainConfig(**{**r["train"], **r.get("train_gpu", {})})
    assert r["patch"] % max(scale, 2 if r.get("self_supervised") else 1) == 0
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in r.get("degradation", {}).items()}
    if task.name == "sr":
        kwargs["scale"] = scale
    channels = 3 if r.get("color") else 1
    clean = torch.rand(2, channels, r["patch"], r["patch"])
    inp, target = getattr(tasks, task.name).make_training_pair(clean, torch.Generator().manual_seed(0), **kwargs)
    assert torch.isfinite(inp).all() and target.shape[-1] == r["patch"]


def test_recipe_mixes_in_synthetic_pictures_at_its_share(tmp_path, data):
    recipe = json.loads(_recipe(tmp_path, "demosaic", synthetic={"dead_leaves": 4, "share": 0.25, "size": 48}).read_text())
    _, sampler, _, _ = rc.training_parts(recipe, data, rc.TrainConfig(**recipe["train"]))
    assert [im.shape for im in sampler.images] == [(3, 80, 80)] * 3 + [(3, 48, 48)] * 4
    np.testing.assert_allclose(sampler.weights[3:], 0.25 / 4)
    np.testing.assert_allclose(sampler.weights[:3], 0.75 / 3)
    gray, weights = rc.with_synthetic([np.zeros((40, 40), np.float32)], {"dead_leaves": 2, "size": 32})
    assert [im.shape for im in gray] == [(40, 40), (32, 32), (32, 32)] and weights == [0.5, 0.25, 0.25]
    assert rc.with_synthetic(gray, None) == (gray, None)
    # a photo smaller than the patch is skipped by the sampler, so it takes no part of the share
    mixed, weights = rc.with_synthetic([np.zeros((40, 40), np.float32), np.zeros((20, 60), np.float32)],
                                       {"dead_leaves": 2, "size": 32}, patch=32)
    assert weights == [0.5, 0.0, 0.25, 0.25]
    np.testing.assert_allclose(rc.PatchSampler(mixed, 32, weights=weights).weights, [0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match="smaller than the training patch"):
        rc.with_synthetic(gray, {"dead_leaves": 2, "size": 32}, patch=48)
    for bad in ({"share": 0.5}, {"dead_leaves": 2, "share": 1.0}, {"dead_leaves": 2, "leaves": 3}, {"dead_leaves": 0}):
        with pytest.raises(ValueError, match="synthetic"):
            rc.with_synthetic(gray, bad)
    selfsup = json.loads(_recipe(tmp_path, "denoise", self_supervised="neighbor2neighbor", synthetic={"dead_leaves": 2}).read_text())
    with pytest.raises(ValueError, match="noisy pictures only"):
        rc.training_parts(selfsup, data, rc.TrainConfig(**selfsup["train"]))
    card_recipe = _recipe(tmp_path, "demosaic", synthetic={"dead_leaves": 2, "size": 40})
    card = json.loads(rc.run(card_recipe, data, tmp_path / "out", tmp_path / "runs").with_suffix(".json").read_text())
    assert card["training"]["synthetic"] == {"dead_leaves": 2, "size": 40}


def test_the_card_names_the_recipe_as_the_repository_does(tmp_path, data):
    """A run from another folder (a clone in /tmp) wrote its absolute recipe path into the
    shipped card: the README's 'every weight comes from a committed recipe' pointed at /tmp."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "napari_attnrestore").mkdir()  # a checkout: the package beside its recipes
    path = _recipe(tmp_path, "sr", scale=2).rename(tmp_path / "recipes" / "sr_test.json")
    out = rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=1)
    assert json.loads(out.with_suffix(".json").read_text())["recipe"] == "recipes/sr_test.json"
    (tmp_path / "mine" / "recipes").mkdir(parents=True)  # a user's copy in a folder of the same name
    path = path.rename(tmp_path / "mine" / "recipes" / "sr_test.json")
    out = rc.run(path, data, tmp_path / "out", tmp_path / "runs2", steps=1)
    assert json.loads(out.with_suffix(".json").read_text())["recipe"] == str(path.resolve())


def test_a_recipe_edited_under_its_state_is_refused_not_resumed(tmp_path, data):
    """Its card credited the new data, patch and batch for every step, the first run's too."""
    from napari_attnrestore.training.checkpoint import CheckpointError

    path = _recipe(tmp_path, "sr", scale=2)
    rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2)
    recipe = json.loads(path.read_text())
    path.write_text(json.dumps({**recipe, "patch": 48, "data": ["train/color"]}))
    with pytest.raises(CheckpointError, match=r"other inputs: data train/gray \(now train/color\); patch 32 \(now 48\)"):
        rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=4)


def test_the_runner_says_interrupted_in_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rc, "run", interrupted)
    assert rc.main([str(tmp_path / "r.json"), "--workdir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted; the training state is kept under") and len(err.splitlines()) == 1


def test_a_recipe_folder_gives_every_plane_of_a_tiff_and_names_a_corrupt_one(tmp_path):
    import tifffile

    from napari_attnrestore.io import ImageReadError
    from napari_attnrestore.training.data import load_folder

    rng = np.random.default_rng(0)
    (tmp_path / "d").mkdir()
    tifffile.imwrite(tmp_path / "d" / "stack.tif", rng.integers(0, 4000, (3, 40, 48), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "d" / "two.tif", rng.integers(0, 4000, (2, 40, 48), dtype=np.uint16),
                     metadata={"axes": "CYX"})
    planes = load_folder(tmp_path / "d")  # the first page of each was all a recipe trained on
    assert [p.shape for p in planes] == [(40, 48)] * 5 and all(0 <= p.mean() <= 1 for p in planes)
    data = (tmp_path / "d" / "stack.tif").read_bytes()
    (tmp_path / "d" / "stack.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"stack\.tif: truncated"):
        load_folder(tmp_path / "d")


def test_a_run_a_gpu_trained_is_scored_and_saved_on_a_cpu_under_the_gpu_settings(tmp_path, data):
    """A GPU run whose scoring failed (a package missing there) is finished on a CPU: the
    recipe's train_gpu block and run folder are used, no CPU segment is added and the card
    names the GPU that trained it."""
    path = _recipe(tmp_path, "sr", scale=2, train_gpu={"batch": 3})
    rc.run(path, data, tmp_path / "out", tmp_path / "runs", steps=2, gpu_settings=True)
    run_dir = tmp_path / "runs" / "test-sr-gpu"
    segments = json.loads((run_dir / "segments.json").read_text())
    segments[0]["machine"] = "NVIDIA H100 (CUDA), torch 2.11"  # as the GPU wrote it
    (run_dir / "segments.json").write_text(json.dumps(segments))
    with pytest.warns(ar.AttnRestoreWarning, match="nothing more to train"):
        out = rc.run(path, data, tmp_path / "out2", tmp_path / "runs", steps=2, gpu_settings=True)
    card = json.loads(out.with_suffix(".json").read_text())["training"]
    assert card["batch"] == 3 and card["steps_done"] == 2 and card["machine"] == "NVIDIA H100 (CUDA), torch 2.11"
    assert [(g["from_step"], g["to_step"], g["machine"]) for g in card["segments"]] == [(0, 2, segments[0]["machine"])]
    assert not (tmp_path / "runs" / "test-sr").exists()  # the CPU settings' folder was not used


def test_a_tile_dependent_network_is_scored_on_its_tiles_and_rescored_on_request(tmp_path, data):
    """CSAttn's result depends on its tile's size: its card names the input side of its
    training patches, its metrics are measured on such tiles (as the engine runs it), and
    ``--rescore`` writes them again into the card of a trained weight."""
    from napari_attnrestore.training.evaluate import recipe_metrics

    small = {"dim": 8, "depths": [1, 1, 1], "heads": [1, 1, 1]}
    path = rc.run(_recipe(tmp_path, "sr", scale=2, arch="csattn", config=small), data, tmp_path / "out",
                  tmp_path / "runs")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["tile"] == 16  # 32-px patches of the target, x2
    model = ar.load_model(str(path))
    ev = {"set": "bench/color"}
    tiled = recipe_metrics("sr", model, data, ev, scale=2, tile=16)["color_x2_Y"]["psnr"]
    whole = recipe_metrics("sr", model, data, ev, scale=2)["color_x2_Y"]["psnr"]
    assert card["metrics"]["color_x2_Y"]["psnr"] == pytest.approx(tiled, abs=0.01)  # (the card's weights: fp16)
    assert abs(tiled - whole) > 0.01

    card["metrics"]["color_x2_Y"]["psnr"] = 0.0
    path.with_suffix(".json").write_text(json.dumps(card))
    assert rc.main([str(tmp_path / "sr.json"), "--data", str(data), "--rescore", str(path)]) == 0
    again = json.loads(path.with_suffix(".json").read_text())
    assert again["metrics"]["color_x2_Y"]["psnr"] == round(tiled, 3) and again["tile"] == 16
    other = _recipe(tmp_path, "denoise")  # another recipe's weight is not rescored by it
    assert rc.main([str(other), "--data", str(data), "--rescore", str(path)]) == 2
