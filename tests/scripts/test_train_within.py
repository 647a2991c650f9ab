"""scripts/train_within.py: several recipes sharing one machine end by a deadline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from skimage import io as skio

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("train_within", ROOT / "scripts" / "train_within.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_step_rate_comes_from_the_end_of_the_curve_after_the_start():
    tw = _script()
    rows = [(s, 10.0 + s) for s in range(1, 5)] + [(s, 14.0 + (s - 4) / 10) for s in range(5, 105)]
    assert abs(tw.step_rate(rows, since_step=0, window=5.0) - 10.0) < 1e-6  # compiling's slow steps left out
    assert tw.step_rate(rows, since_step=104, window=5.0) is None  # nothing after the resumed step
    assert tw.step_rate([(7, 3.0), (8, 3.5)], since_step=0, window=0.1) == 2.0


def test_jobs_are_measured_then_resumed_to_end_by_the_deadline(tmp_path):
    tw = _script()
    train = tmp_path / "data" / "train" / "gray"
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        skio.imsave(train / f"{i}.png", rng.integers(0, 255, (48, 48), dtype=np.uint8), check_contrast=False)
    recipe = {"name": "tw-test", "task": "denoise", "arch": "hat", "data": ["train/gray"], "patch": 32,
              "config": {"dim": 8, "depths": [1], "heads": 2, "window": 8, "compress": 2},
              "degradation": {"sigma": [0, 50]},
              "train": {"steps": 10, "batch": 2, "lr": 1e-3, "warmup": 1, "log_every": 1, "checkpoint_every": 5}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    args = ["--minutes", "0.9", "--probe", "20", "--margin", "5", "--threads", "1", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "runs"), "--job", str(tmp_path / "r.json")]
    assert tw.main(args) == 0, (tmp_path / "runs" / "r.log").read_text()
    assert json.loads((tmp_path / "runs" / "DONE").read_text()) == {str(tmp_path / "r.json"): 0}
    card = json.loads((tmp_path / "out" / "tw-test.json").read_text())["training"]
    first, second = card["segments"]
    assert first["schedule_steps"] == 10**6 and second["from_step"] == first["to_step"] > 0
    assert second["schedule_steps"] == card["steps_done"] > second["from_step"]  # its cosine ran to its end
    assert "resuming with --steps" in (tmp_path / "runs" / "train_within.log").read_text()
    assert sys.executable in (tmp_path / "runs" / "r.log").read_text()
