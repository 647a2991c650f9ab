"""The model zoo: shipped cards, and defaults chosen by measurement."""

from __future__ import annotations

import json

from napari_attnrestore import zoo


def _card(folder, name, task, psnr, scale=1):
    key = {"denoise": "set12_sigma25", "sr": f"set5_x{scale}_Y"}[task]
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "task": task, "scale": scale, "arch": "hat",
                                                     "metrics": {key: {"psnr": psnr, "psnr_in": 20.0}}}))
    (folder / f"{name}.safetensors").write_bytes(b"")


def test_defaults_are_the_best_measured_weight_per_task(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    _card(tmp_path, "den-a", "denoise", 29.1)
    _card(tmp_path, "den-b", "denoise", 29.6)
    _card(tmp_path, "sr-a", "sr", 35.0, scale=2)
    _card(tmp_path, "sr-b", "sr", 29.0, scale=4)
    chosen = zoo.choose_defaults(write=True)
    assert {k: v["name"] for k, v in chosen.items()} == {"denoise": "den-b", "sr-x2": "sr-a", "sr-x4": "sr-b"}
    assert zoo.defaults() == {"denoise": "den-b", "sr-x2": "sr-a", "sr-x4": "sr-b"}
    card = json.loads((tmp_path / "den-b.json").read_text())
    assert card["default_for"] == ["denoise"]
    assert card["default_choice"]["denoise"] == {"metric": "set12_sigma25", "candidates": {"den-b": 29.6, "den-a": 29.1}}
    assert json.loads((tmp_path / "den-a.json").read_text())["default_for"] == []
    assert zoo.resolve_weight("default:denoise") == tmp_path / "den-b.safetensors"


def test_shipped_cards_describe_their_training():
    for card in zoo.list_models():
        assert card["task"] in ("denoise", "sr", "demosaic", "inpaint")
        assert card["training"]["machine"] and card["training"]["steps_done"] > 0
        key, value = zoo.headline_metric(card)
        assert value is not None, f"{card['name']} has no {key} metric in its card"
