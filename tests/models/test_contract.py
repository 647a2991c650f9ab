"""The contract every architecture keeps: any size and head, gradients everywhere, it can
learn, and inference is deterministic.  Mechanism-specific tests live in test_<arch>.py."""

import pytest
import torch

from napari_attnrestore.models import build_model, get_architecture, list_architectures

#: (small config for shape/gradient checks, config for the overfit check, overfit steps)
CONFIGS = {
    "hat": (dict(dim=16, depths=[1, 1], heads=2, window=8), dict(dim=16, depths=[1], heads=2, window=8), 300),
    "grl": (dict(dim=16, depths=[4], heads_window=2, heads_stripe=2, window=8, stripe=[8, 16], anchor_down=2, cpb_hidden=16),
            dict(dim=16, depths=[2], window=8, stripe=[8, 16], anchor_down=2, cpb_hidden=16), 300),
    "csattn": (dict(dim=8, levels=2, depths=[1, 1, 1], heads=[1, 2, 2]),
               dict(dim=16, levels=1, depths=[1, 1], heads=[1, 2]), 300),
    "acla": (dict(dim=16, n_blocks=4, positions=[1, 3], keys=3), dict(dim=16, n_blocks=4, positions=[1, 3], keys=3), 250),
    "psal": (dict(dims=[12, 24], blocks=1, mid_blocks=1, match_dim=4, iters=2),
             dict(dims=[12, 24], blocks=1, mid_blocks=1, match_dim=4, iters=2), 200),
}
HEADS = {
    "denoise": (1, 1, 1, 1), "denoise-unshuffle": (1, 1, 1, 2), "inpaint": (2, 1, 1, 1),
    "demosaic": (1, 3, 1, 1), "sr2": (1, 1, 2, 1), "sr4": (1, 1, 4, 1),
}


def test_every_registered_architecture_is_covered():
    assert sorted(CONFIGS) == list_architectures()


def _cls(arch):
    return get_architecture(arch).cls


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_odd_sizes_give_right_shape(arch, head):
    cin, cout, scale, unshuffle = HEADS[head]
    m = _cls(arch)(cin, cout, scale, unshuffle=unshuffle, **CONFIGS[arch][0]).eval()
    with torch.no_grad():
        y = m(torch.rand(2, cin, 37, 53))
    assert y.shape == (2, cout, 37 * scale, 53 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("head", ["sr2", "inpaint"])
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_gradients_reach_every_parameter(arch, head):
    torch.manual_seed(0)
    cin, cout, scale, _ = HEADS[head]
    m = _cls(arch)(cin, cout, scale, **CONFIGS[arch][0])
    x = torch.rand(1, cin, 24, 40)
    if cin == 2:
        x[:, 1] = (x[:, 1] > 0.7).float()  # a mask channel
    m(x).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_overfits_one_image(arch):
    torch.manual_seed(0)
    _, cfg, steps = CONFIGS[arch]
    m = _cls(arch)(1, 1, 1, image_residual=False, **cfg)
    x = torch.rand(1, 1, 32, 32)
    y = x.flip(-1)  # not the identity: the network has to learn it
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    first = None
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(m(x), y)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_eval_is_deterministic(arch):
    m = _cls(arch)(**CONFIGS[arch][0]).eval()
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


def test_build_model_defaults_to_the_tasks_first_scale_and_names_bad_architectures():
    from napari_attnrestore.models import build_model

    assert build_model("hat", task="sr").scale == 2  # was refused: "supports scale 2, 4, not 1"
    with pytest.raises(ValueError, match="unknown architecture None"):
        get_architecture(None)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_build_model_names_a_setting_the_architecture_lacks(arch):
    """A misspelt setting raised the config dataclass's raw TypeError
    ("HATConfig.__init__() got an unexpected keyword argument")."""
    from napari_attnrestore.models import build_model

    with pytest.raises(ValueError, match=rf"^{arch} has no setting 'windw'; its settings are .*image_residual"):
        build_model(arch, windw=8)


def test_an_architecture_of_another_package_registers_by_its_module_path():
    from napari_attnrestore.models.registry import _REGISTRY, Architecture, register

    register(Architecture("hatcopy", "napari_attnrestore.models.hat", "HAT", {"tiny": {}}, "a copy"))
    try:
        assert type(build_model("hatcopy", task="denoise", dim=16, depths=[1], heads=2, window=8)).__name__ == "HAT"
    finally:
        del _REGISTRY["hatcopy"]
