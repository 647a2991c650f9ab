"""Supervised training loop as a generator of progress events; resumes exactly."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.model_handle import warn_compile_failed
from ..warning import warn
from .checkpoint import CheckpointError

log = logging.getLogger("attnrestore.training")


@dataclass
class TrainConfig:
    """Optimisation settings (AdamW, warmup + cosine schedule, EMA of the weights)."""

    steps: int = 1000
    batch: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 1e-4
    ema: float = 0.999
    loss: str = "charbonnier"
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    compile: bool = False  # train through torch.compile (falls back to eager, with a warning)
    precision: str = "fp32"  # "bf16": forward and loss under bfloat16 autocast (weights, AdamW and EMA stay fp32)


@dataclass
class TrainEvent:
    """One progress report: ``step`` of ``total``, the running loss, elapsed seconds.

    The last event has ``done=True`` and carries the trained (EMA) ``model``; any event's
    :meth:`current_model` gives the model as trained so far (to stop early: break out of the
    loop, then call it on the last event).
    """

    step: int
    total: int
    loss: float
    elapsed: float
    lr: float
    done: bool = False
    model: nn.Module | None = field(default=None, repr=False)
    snapshot: Callable[[], nn.Module] | None = field(default=None, repr=False, compare=False)

    def current_model(self) -> nn.Module | None:
        """The final model on the last event; on earlier ones a copy of the averaged (EMA)
        weights as they are when called (training stands still while the loop is not iterated)."""
        if self.model is not None:
            return self.model
        return self.snapshot() if self.snapshot is not None else None


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss, a smooth L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


PRECISIONS = ("fp32", "bf16")

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "charbonnier": charbonnier,
    "l1": nn.functional.l1_loss,
    "l2": nn.functional.mse_loss,
}


@dataclass
class Schedule:
    """The learning rate from step ``start`` on: a linear warmup over ``warmup`` steps to
    ``peak``, then a cosine down to ``min_lr`` at step ``end``.  A fresh run's is
    ``Schedule.of(cfg)``; a resumed run with other steps continues from where it was
    (:meth:`resumed`), and the state saves it."""

    start: int
    peak: float
    warmup: int
    end: int
    min_lr: float

    @classmethod
    def of(cls, cfg: TrainConfig) -> Schedule:
        return cls(0, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr)

    def lr(self, step: int) -> float:
        i = step - self.start
        if i < self.warmup:
            return self.peak * (i + 1) / self.warmup
        t = (i - self.warmup) / max(self.end - self.start - self.warmup, 1)
        return self.min_lr + 0.5 * (self.peak - self.min_lr) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))

    def describe(self) -> str:
        """The plan in words, for the log: where it starts, its warmup and where it ends."""
        start = (f"{self.lr(self.start):.2e}, warming up over {self.warmup} steps to {self.peak:.2e}"
                 if self.warmup else f"{self.peak:.2e}")
        return f"{start}, then down to {self.min_lr:.2e} at step {self.end}"

    @classmethod
    def resumed(cls, saved: Schedule | None, saved_peak: float | None, step: int, cfg: TrainConfig,
                fresh_optimizer: bool = False) -> Schedule:
        """The schedule of a run resumed at ``step`` under ``cfg``, from the one ``saved`` with
        its state (whose ``cfg.lr`` was ``saved_peak``).

        The same plan goes on unchanged.  A run still decaying that is asked for other steps
        decays from its current rate to ``min_lr`` at the new end (re-fitting the cosine
        made the rate jump, up or down).  A finished run given more steps, or one whose
        optimizer starts afresh (its moments empty, :func:`~.recipe.rebuild_state`),
        restarts at the rate the new plan's cosine has there, after a warmup: AdamW's first
        steps from empty moments are sign-like, full-size steps.  Another ``lr`` or
        ``min_lr`` takes the new plan's cosine from here.
        """
        new = cls.of(cfg)
        here = new.lr(step) if step >= cfg.warmup else cfg.lr
        warmup = min(cfg.warmup, max(1, (cfg.steps - step) // 10))
        if fresh_optimizer:
            return new if step == 0 else cls(step, here, warmup, cfg.steps, cfg.min_lr)
        if saved is None or saved_peak != cfg.lr or saved.min_lr != cfg.min_lr:
            return new if saved is None else cls(step, here, 0, cfg.steps, cfg.min_lr)
        if saved.end == cfg.steps:
            return saved
        if step < saved.end:
            return cls(step, saved.lr(step), 0, cfg.steps, cfg.min_lr)
        return cls(step, here, warmup, cfg.steps, cfg.min_lr)


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, m in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if e.is_floating_point():
                e.lerp_(m, 1 - d)
            else:
                e.copy_(m)


def training_state(
    model: nn.Module,
    ema_model: nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    history: list,
    elapsed: float,
    cfg: TrainConfig,
    sampler: dict | None = None,
    loss_gen: torch.Generator | None = None,
    torch_rng: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> dict:
    """The training state :func:`fit` saves and resumes from: weights, EMA, optimizer, step,
    history, elapsed seconds, config and the random generators (the pair maker's ``gen``, the
    sampler's state, the loss's generator, torch's global CPU one (``torch_rng``: its current
    state unless given) and, on CUDA, the device's)."""
    return {
        "model": model.state_dict(), "ema": ema_model.state_dict(), "opt": opt.state_dict(),
        "gen": gen.get_state(), "step": step, "history": history, "elapsed": elapsed, "config": asdict(cfg),
        "sampler": sampler,
        "loss_gen": loss_gen.get_state() if loss_gen is not None else None,
        "torch_rng": torch.get_rng_state() if torch_rng is None else torch_rng,
        "cuda_rng": torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None,
    }


def load_training_state(
    path: Path, model: nn.Module, ema_model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
) -> dict:
    """Read a state saved by :func:`fit` (tensors only) into the model, its EMA, the
    optimizer and the pair maker's generator; returns the whole state.

    Raises :class:`CheckpointError` naming ``path`` when the file is unreadable or was
    saved by another network.
    """
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(st, dict) or not {"model", "ema", "opt", "gen", "step"} <= set(st):
            raise ValueError("not a training state of this program")
    except Exception as e:  # truncated, corrupt, pickled code, another program's file
        raise CheckpointError(f"{path}: cannot resume: not a readable training state of this program, or a "
                              f"truncated one ({type(e).__name__})") from None
    try:
        model.load_state_dict(st["model"])
        ema_model.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))), lines[0])
        raise CheckpointError(f"{path}: this training state was saved by another network or settings "
                              f"({why if len(why) <= 120 else why[:117] + '...'}); start a new one or pass the matching model") from None
    return st


#: inputs that states of earlier versions do not record: a state without one resumes (and
#: records it from then on)
LATER_INPUTS = ("seed", "init", "precision", "init_map")


def _check_same_inputs(path: Path, saved: dict | None, given: dict | None) -> None:
    """A :class:`CheckpointError` naming what differs when a state trained on other inputs."""
    if not saved or not given:
        return
    saved = {**{k: given[k] for k in LATER_INPUTS if k not in saved and k in given}, **saved}
    if saved == given:
        return
    differ = [f"{k} {_said(saved.get(k))} (now {_said(given.get(k))})" for k in sorted(set(saved) | set(given))
              if saved.get(k) != given.get(k)]
    raise CheckpointError(f"{path}: cannot resume: this training state was trained with other inputs: "
                          f"{'; '.join(differ)}; continue with the same ones, or pass a new state path to start again")


def _said(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def _finite(*models: nn.Module) -> bool:
    """Whether every parameter and buffer of ``models`` is finite."""
    return all(bool(torch.isfinite(t).all()) for m in models for t in (*m.parameters(), *m.buffers())
               if t.is_floating_point())


def fit(
    model: nn.Module,
    sample_batch: Callable[[int], torch.Tensor],
    make_pair: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    state_path: str | Path | None = None,
    sampler_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None,
    device: str | torch.device = "cpu",
    loss_fn: Callable[..., torch.Tensor] | None = None,
    objective: str | None = None,
    network: dict | None = None,
    inputs: dict | None = None,
) -> Iterator[TrainEvent]:
    """Train ``model`` and yield a :class:`TrainEvent` every ``cfg.log_every`` steps.

    ``sample_batch(n)`` returns clean patches; ``make_pair(clean, gen)`` returns the
    network input and target.  ``loss_fn(model, inp, target)``, when given, replaces the
    plain ``loss(model(inp), target)`` (self-supervised losses mask pixels this way).
    With ``state_path``, the full training state (weights, EMA, optimizer, step, random
    generators: the pair maker's, the sampler's, the loss's ``gen`` and torch's global CPU
    and CUDA ones) is saved every ``cfg.checkpoint_every`` steps and at the end, and
    training resumes from it when the file exists.  ``objective`` (e.g. ``"denoise:
    self-supervised:sure"``) is saved with the state, and a state saved for another objective
    is refused rather than continued with a different loss.  ``network`` (the model card of
    ``model``: arch, config, task, ...) is saved with the state too, so that the state's EMA
    weights load as a model (:func:`~.checkpoint.load_training_state_model`).  ``inputs``
    (what it trains on and how: images, batch, patch, ...) is saved too, and a state saved
    with other inputs is refused.  Closing the generator stops training.
    """
    device = torch.device(device)
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"training precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16 arithmetic; train in fp32")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema)
    gen = torch.Generator().manual_seed(cfg.seed)
    crit = LOSSES[cfg.loss]
    step, history = 0, []
    prior_elapsed = 0.0
    schedule = Schedule.of(cfg)
    state_path = Path(state_path) if state_path else None
    loss_gen = getattr(loss_fn, "gen", None)  # a self-supervised loss's masks or probes
    loss_gen = loss_gen if isinstance(loss_gen, torch.Generator) else None

    def draws() -> tuple:
        """The random state a step starts from: the pair maker's, the sampler's, the loss's,
        torch's CPU and CUDA generators (the order :func:`put_back` takes)."""
        return (gen.get_state(), sampler_state[0]() if sampler_state else None,
                loss_gen.get_state() if loss_gen is not None else None, torch.get_rng_state(),
                torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    def put_back(d: tuple) -> None:
        """Set the generators to ``d`` (:func:`draws`' order; None leaves one as it is)."""
        if d[0] is not None:
            gen.set_state(d[0])
        if sampler_state and d[1] is not None:
            sampler_state[1](d[1])
        if loss_gen is not None and d[2] is not None:
            loss_gen.set_state(d[2])
        if d[3] is not None:  # the model's own randomness (ACLA's Gumbel key choice)
            torch.set_rng_state(d[3])
        if device.type == "cuda" and d[4] is not None:
            torch.cuda.set_rng_state(d[4], device)

    if state_path and state_path.exists():
        st = load_training_state(state_path, model, ema.model, opt, gen)
        if objective and st.get("objective") and st["objective"] != objective:
            raise CheckpointError(f"{state_path}: cannot resume: this training state is for {st['objective']}, "
                                  f"not {objective}; pass a new state path to start again")
        _check_same_inputs(state_path, st.get("inputs"), inputs)
        step, history, prior_elapsed = st["step"], list(st["history"]), st["elapsed"]
        if step == cfg.steps:
            warn(f"{state_path}: this training state is already at step {step} of {cfg.steps}: nothing "
                 "more to train; ask for more steps to go on")
        if step > cfg.steps:
            raise CheckpointError(f"{state_path}: this training state is already at step {step}, past the "
                                  f"{cfg.steps} steps asked for; ask for more steps to go on, or start a new state")
        conf = st.get("config") or {}
        saved = (Schedule(**st["schedule"]) if st.get("schedule")
                 else Schedule(0, conf["lr"], conf["warmup"], conf["steps"], conf["min_lr"]) if conf else None)
        schedule = Schedule.resumed(saved, conf.get("lr"), step, cfg, fresh_optimizer=bool(st.get("fresh_optimizer")))
        if saved is not None and schedule != saved:
            log.info("learning rate from step %d: %s (the state's plan ended at step %d)",
                     step, schedule.describe(), saved.end)
        put_back((None, st.get("sampler"), st.get("loss_gen"), st.get("torch_rng"), st.get("cuda_rng")))
    ema.model.to(device)

    def save() -> None:
        if not state_path:
            return
        state_path.parent.mkdir(parents=True, exist_ok=True)
        st = training_state(model, ema.model, opt, gen, step, history, prior_elapsed + time.perf_counter() - t0, cfg,
                            sampler=sampler_state[0]() if sampler_state else None, loss_gen=loss_gen, device=device)
        st["objective"] = objective
        st["schedule"] = asdict(schedule)
        if network is not None:
            st["network"] = network
        if inputs is not None:
            st["inputs"] = inputs
        tmp = state_path.with_suffix(".tmp")
        try:
            torch.save(st, tmp)
            tmp.replace(state_path)
        except BaseException:  # no half-written state left beside the last good one
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def step_loss(net: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = loss_fn(net, inp, target) if loss_fn else crit(net(inp), target)
        return loss.float()

    def forward_backward(net: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
        loss = step_loss(net, inp, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step}: loss is {loss.item()}; "
                                     "a lower learning rate may help")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def averaged() -> nn.Module:
        return copy.deepcopy(ema.model).eval().requires_grad_(True)

    net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if cfg.compile else model
    t0 = time.perf_counter()
    running, count = 0.0, 0
    keep_saved = False  # after a divergence the state on disk is the last good one: keep it
    start, in_step = None, False  # a step cut short (Ctrl-C in the forward pass) is saved undone, with
    # the random state it started from, so that a resumed run repeats that step's batch exactly
    try:
        while step < cfg.steps:
            start, in_step = draws(), True
            lr = schedule.lr(step)
            for g in opt.param_groups:
                g["lr"] = lr
            clean = sample_batch(cfg.batch)
            inp, target = make_pair(clean, gen)
            inp, target = inp.to(device), target.to(device)
            try:
                loss = forward_backward(net, inp, target)
            except FloatingPointError:
                raise
            except Exception as e:  # compilation fails lazily, on the first forward or backward pass
                if net is model:  # a real error recurs eagerly
                    raise
                warn_compile_failed(e, "training uncompiled")
                net = model
                loss = forward_backward(net, inp, target)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            in_step = False
            ema.update(model, step - 1)
            running += float(loss.detach())
            count += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                history.append((step, running / count))
                yield TrainEvent(step, cfg.steps, running / count, prior_elapsed + time.perf_counter() - t0, lr,
                                 snapshot=averaged)
                running, count = 0.0, 0
            if step % cfg.checkpoint_every == 0:
                save()
    except FloatingPointError as e:
        keep_saved = True
        if state_path and state_path.exists():
            raise FloatingPointError(f"{e}; the training state saved in {state_path} before it is kept") from None
        raise
    finally:
        if in_step and start is not None:
            put_back(start)
        if sys.is_finalizing():  # a paused training collected as Python exits: nothing can be written now
            pass
        elif not keep_saved and _finite(model, ema.model):
            save()
        elif not keep_saved:
            log.warning("the weights are no longer finite at step %d; the training state on disk is kept", step)
    yield TrainEvent(step, cfg.steps, history[-1][1] if history else float("nan"),
                     prior_elapsed + time.perf_counter() - t0, schedule.lr(step), done=True,
                     model=ema.model.eval().requires_grad_(True))  # trainable again: it may be fine-tuned next
