"""The training loop: progress events, loss goes down, exact resume."""

import numpy as np
import pytest
import torch

from napari_attnrestore.models import build_model
from napari_attnrestore.tasks.denoise import make_training_pair
from napari_attnrestore.training import TrainConfig, fit
from napari_attnrestore.training.data import PatchSampler
from napari_attnrestore.training.selfsupervised import BlindSpotLoss


def _setup(seed=0):
    torch.manual_seed(seed)
    model = build_model("hat", "denoise", dim=16, depths=[1], heads=2, window=8)
    g = torch.Generator().manual_seed(5)
    images = [torch.rand(64, 64, generator=g).numpy() for _ in range(3)]
    sampler = PatchSampler(images, 32, seed=seed)
    return model, sampler


def test_events_and_final_model():
    model, sampler = _setup()
    cfg = TrainConfig(steps=6, batch=2, log_every=2, warmup=2)
    events = list(fit(model, sampler.sample, make_training_pair, cfg))
    assert [e.step for e in events] == [2, 4, 6, 6]
    assert events[-1].done and events[-1].model is not None
    assert all(e.elapsed >= 0 and e.loss > 0 for e in events)


@pytest.mark.parametrize("variant", ["plain", "blind-spot loss", "stochastic model"])
def test_resume_continues_exactly(tmp_path, variant):
    """Interrupted and resumed in a fresh process, training repeats the uninterrupted losses,
    also when the loss draws its own masks or the network its own random numbers."""
    cfg = TrainConfig(steps=8, batch=2, log_every=1, warmup=2, checkpoint_every=4)

    def setup(seed=0):
        model, sampler = _setup(seed)
        if variant == "stochastic model":  # ACLA draws its keys by Gumbel-softmax from torch's RNG
            model = build_model("acla", "denoise", dim=8, n_blocks=2, positions=[1], keys=2)
        loss = BlindSpotLoss(fraction=0.1, seed=seed) if variant == "blind-spot loss" else None
        torch.manual_seed(seed + 1)  # the global RNG differs per process
        return model, sampler, loss

    model, sampler, loss = setup()
    straight = [e for e in fit(model, sampler.sample, make_training_pair, cfg, loss_fn=loss) if not e.done]

    model, sampler, loss = setup()
    state = tmp_path / "state.pt"
    gen = fit(model, sampler.sample, make_training_pair, cfg, state_path=state,
              sampler_state=(sampler.state, sampler.set_state), loss_fn=loss)
    first = [next(gen) for _ in range(4)]
    gen.close()  # interrupted after step 4 (state saved on close)

    model, sampler, loss = setup(seed=99)  # a fresh process: different weights, sampler and RNGs
    rest = [e for e in fit(model, sampler.sample, make_training_pair, cfg, state_path=state,
                           sampler_state=(sampler.state, sampler.set_state), loss_fn=loss) if not e.done]
    assert [e.step for e in rest] == [5, 6, 7, 8]
    losses = [e.loss for e in first + rest]
    assert losses == [e.loss for e in straight]


class _CtrlC(BaseException):
    """Stands for a KeyboardInterrupt (a BaseException) without interrupting pytest."""


def test_resume_after_an_interrupt_in_the_middle_of_a_step_is_exact(tmp_path):
    """Cut short after its batch was drawn, step 5 is saved undone, with the random state it
    started from: resumed, it draws the same batch again."""
    cfg = TrainConfig(steps=8, batch=2, log_every=1, warmup=2, checkpoint_every=100)
    calls = [0]

    def l1(net, inp, target, interrupt_at=None):
        calls[0] += 1
        if calls[0] == interrupt_at:
            raise _CtrlC
        return torch.nn.functional.l1_loss(net(inp), target)

    model, sampler = _setup()
    straight = [e.loss for e in fit(model, sampler.sample, make_training_pair, cfg, loss_fn=l1) if not e.done]
    model, sampler = _setup()
    state, kw = tmp_path / "state.pt", {"sampler_state": (sampler.state, sampler.set_state)}
    calls[0] = 0
    with pytest.raises(_CtrlC):
        list(fit(model, sampler.sample, make_training_pair, cfg, state_path=state, **kw,
                 loss_fn=lambda n, i, t: l1(n, i, t, interrupt_at=5)))
    model, sampler = _setup(seed=99)
    kw = {"sampler_state": (sampler.state, sampler.set_state)}
    rest = [e for e in fit(model, sampler.sample, make_training_pair, cfg, state_path=state, **kw, loss_fn=l1)
            if not e.done]
    assert [e.step for e in rest] == [5, 6, 7, 8]
    assert [e.loss for e in rest] == straight[4:]


def test_a_diverged_run_keeps_its_last_good_state(tmp_path):
    """Weights that turn non-finite end training with an error, and the state on disk stays
    the last good checkpoint instead of being overwritten by the broken weights."""
    model, sampler = _setup()
    cfg = TrainConfig(steps=12, batch=2, log_every=1, warmup=2, checkpoint_every=4)
    calls = [0]

    def nan_gradient_at_step_6(net, inp, target):
        calls[0] += 1
        loss = torch.nn.functional.l1_loss(net(inp), target)
        if calls[0] == 6:  # finite loss, NaN gradient: the update leaves NaN weights behind
            loss = loss + torch.sqrt(0 * next(net.parameters()).sum())
        return loss

    state = tmp_path / "state.pt"
    with pytest.raises(FloatingPointError, match="diverged at step 6") as err:
        list(fit(model, sampler.sample, make_training_pair, cfg, state_path=state, loss_fn=nan_gradient_at_step_6))
    assert f"the training state saved in {state} before it is kept" in str(err.value)  # the CLI prints str()
    st = torch.load(state, weights_only=True)
    assert st["step"] == 4
    assert all(torch.isfinite(t).all() for t in st["model"].values())


def test_a_state_past_the_steps_asked_for_is_refused(tmp_path):
    """Resuming a 6-step state with 4 steps asked for is an error, not a silent no-op."""
    from napari_attnrestore.training.checkpoint import CheckpointError

    state = tmp_path / "state.pt"
    model, sampler = _setup()
    list(fit(model, sampler.sample, make_training_pair, TrainConfig(steps=6, batch=2, warmup=2), state_path=state))
    model, sampler = _setup()
    with pytest.raises(CheckpointError, match="already at step 6, past the 4 steps asked for"):
        next(fit(model, sampler.sample, make_training_pair, TrainConfig(steps=4, batch=2, warmup=2), state_path=state))
    events = list(fit(model, sampler.sample, make_training_pair, TrainConfig(steps=6, batch=2, warmup=2),
                      state_path=state))  # a finished state finishes again (its weights are written)
    assert [(e.step, e.done) for e in events] == [(6, True)]


def test_bf16_mixed_precision_trains_like_fp32():
    """``precision="bf16"``: the network computes in bfloat16, its weights and the EMA stay
    float32, and the loss falls as it does in float32; an unknown precision is refused."""
    curves = {}
    for precision in ("fp32", "bf16"):
        model, sampler = _setup()
        seen = set()
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o, seen=seen: seen.add(o.dtype))
        cfg = TrainConfig(steps=40, batch=4, log_every=5, warmup=4, lr=2e-3, precision=precision)
        events = list(fit(model, sampler.sample, make_training_pair, cfg))
        curves[precision] = [e.loss for e in events if not e.done]
        assert seen == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in events[-1].model.parameters())
        assert all(p.dtype == torch.float32 for p in model.parameters())
    for curve in curves.values():
        assert curve[-1] < 0.6 * curve[0]
    assert curves["bf16"][-1] == pytest.approx(curves["fp32"][-1], rel=0.15)
    model, sampler = _setup()
    with pytest.raises(ValueError, match="precision 'fp16'"):
        next(fit(model, sampler.sample, make_training_pair, TrainConfig(steps=2, precision="fp16")))


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    model, sampler = _setup()
    with pytest.raises(ValueError, match="Tesla V100 has no bfloat16 arithmetic; train in fp32"):
        next(fit(model, sampler.sample, make_training_pair, TrainConfig(steps=2, precision="bf16"), device="cuda"))


def test_compile_failure_falls_back_to_eager(monkeypatch):
    """``compile=True`` on a platform where compilation fails trains eagerly, with a warning."""
    cfg = TrainConfig(steps=4, batch=2, log_every=1, warmup=2)
    model, sampler = _setup()
    eager = [e.loss for e in fit(model, sampler.sample, make_training_pair, cfg) if not e.done]

    def broken_compile(module, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model, sampler = _setup()
    cfg.compile = True
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*training uncompiled"):
        fallback = [e.loss for e in fit(model, sampler.sample, make_training_pair, cfg) if not e.done]
    assert fallback == eager


class _FailsBackward(torch.autograd.Function):
    """Identity forward whose backward fails, as inductor's can on its first backward pass."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("expected size 8==8, stride 1==1024 at dim=1")


def test_compiled_backward_failure_falls_back_to_eager(monkeypatch):
    """A compiled network whose backward pass fails on the first step trains eagerly instead,
    with a warning, and repeats the eager losses (no stale gradient is kept)."""
    cfg = TrainConfig(steps=4, batch=2, log_every=1, warmup=2)
    model, sampler = _setup()
    eager = [e.loss for e in fit(model, sampler.sample, make_training_pair, cfg) if not e.done]
    monkeypatch.setattr(torch, "compile", lambda module, **kw: lambda *a, **k: _FailsBackward.apply(module(*a, **k)))
    model, sampler = _setup()
    cfg.compile = True
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*stride.*training uncompiled"):
        fallback = [e.loss for e in fit(model, sampler.sample, make_training_pair, cfg) if not e.done]
    assert fallback == eager


def test_training_errors_still_raise_when_compiled(monkeypatch):
    """A real error (here a wrong input shape) is not hidden by the compile fallback."""
    monkeypatch.setattr(torch, "compile", lambda module, **kw: lambda *a, **k: module(*a, **k))
    model, sampler = _setup()
    cfg = TrainConfig(steps=2, batch=2, warmup=1, compile=True)

    def bad_pair(clean, gen):
        return clean[:, :, :, None], clean

    with pytest.raises(RuntimeError, match="not supported for 5D input"), pytest.warns(RuntimeWarning):
        list(fit(model, sampler.sample, bad_pair, cfg))


def test_sampler_follows_given_weights():
    images = [np.zeros((40, 40), np.float32), np.ones((40, 40), np.float32), np.full((20, 20), 2, np.float32)]
    sampler = PatchSampler(images, 32, weights=[0.0, 1.0, 5.0])  # the third is too small and dropped
    assert len(sampler.images) == 2 and np.all(sampler.sample(8).numpy() == 1)
    with pytest.raises(ValueError, match="2 sampling weights for 3 images"):
        PatchSampler(images, 32, weights=[1.0, 1.0])


def _rates(state, steps, cfg_kw, stop_at=None):
    """The learning rate of every step of a run of ``steps`` (resumed from ``state``)."""
    model, sampler = _setup()
    cfg = TrainConfig(steps=steps, batch=2, log_every=1, lr=1e-3, min_lr=1e-5, **cfg_kw)
    rates = {}
    for ev in fit(model, sampler.sample, make_training_pair, cfg, state_path=state):
        if not ev.done:
            rates[ev.step] = ev.lr  # the rate the step ran with
            if ev.step == stop_at:
                break
    return rates


def test_other_steps_on_resume_continue_the_learning_rate_instead_of_jumping(tmp_path):
    """Re-fitting the cosine to a new step count made the rate jump (4000 -> 6500 steps at
    step 2500 took it up from 2.9e-4 to 6.2e-4); a run still decaying now decays on from its
    current rate, and a finished one given more steps restarts after a warmup."""
    from napari_attnrestore.training.loop import Schedule

    state = tmp_path / "state.pt"
    first = _rates(state, 20, {"warmup": 2}, stop_at=8)  # interrupted at step 8 of 20
    more = _rates(state, 40, {"warmup": 2})  # resumed, asked for 40
    assert more[9] == pytest.approx(Schedule(0, 1e-3, 2, 20, 1e-5).lr(8))  # step 9 runs where step 8 left off
    assert more[9] < first[8] and all(more[s + 1] <= more[s] for s in range(9, 40))
    assert more[40] < 1.5e-5  # the last step runs just above min_lr
    again = _rates(state, 50, {"warmup": 4})  # a finished run given 10 more steps: a warm restart
    assert again[41] == pytest.approx(Schedule(0, 1e-3, 4, 50, 1e-5).lr(40))  # (50 - 40) // 10 = 1 warmup step
    assert again[41] > 10 * more[40] and all(again[s + 1] <= again[s] for s in range(41, 50))
    state.unlink()
    plain = _rates(state, 20, {"warmup": 2})  # a fresh run: warmup, then the cosine over its steps
    assert [plain[s] for s in (1, 2)] == pytest.approx([5e-4, 1e-3]) and plain[20] < 2e-5


def test_a_rebuilt_state_warms_up_again():
    from napari_attnrestore.training.loop import Schedule

    cfg = TrainConfig(steps=1000, lr=1e-3, min_lr=1e-5, warmup=100)
    s = Schedule.resumed(None, None, 500, cfg, fresh_optimizer=True)
    assert s.lr(500) == pytest.approx(Schedule.of(cfg).lr(500) / 50)  # 50 warmup steps: (1000-500)//10
    assert s.lr(549) == pytest.approx(Schedule.of(cfg).lr(500)) and s.lr(999) > 1e-5 >= s.lr(1000) - 1e-12
    # the log names the warmup's peak, not only the first, tiny rate
    assert s.describe() == "1.18e-05, warming up over 50 steps to 5.91e-04, then down to 1.00e-05 at step 1000"
    assert Schedule(500, 3e-4, 0, 1000, 1e-5).describe() == "3.00e-04, then down to 1.00e-05 at step 1000"
