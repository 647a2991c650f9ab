"""Hard-patch mining: fill part of every batch with the patches a classical method gets most wrong.

Most patches of a photograph are smooth, and there a classical demosaic is already nearly
exact; the error that PSNR measures sits in the few patches with fine colour detail, where
it makes zippers and false colour.  Gharbi et al. (2016, "Deep joint demosaicking and
denoising") found that training on such patches, mined with the baseline's error, is what
teaches a network to fix them.  :class:`HardPatches` draws ``candidates`` times more
patches than it needs for the hard part of a batch and keeps the worst ones by
:data:`DIFFICULTY`; the rest of the batch is drawn as usual, so the smooth regions are not
forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def demosaic_difficulty(clean: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean squared error of Malvar 2004 on RGB patches ``(B, 3, H, W)`` mosaicked
    with RGGB (2-pixel border left out, where the mirrored padding decides)."""
    from ..models.layers import cfa_malvar
    from ..tasks.demosaic import cfa_masks_torch

    b, _, h, w = clean.shape
    masks = cfa_masks_torch((h, w), ["RGGB"] * b, device=clean.device).to(clean.dtype)
    cfa = (clean * masks).sum(dim=1, keepdim=True)
    err = (cfa_malvar(torch.cat([cfa, masks], dim=1)) - clean)[..., 2:-2, 2:-2]
    return err.square().mean(dim=(1, 2, 3))


#: Per task, ``difficulty(clean patches) -> (B,)`` scores (higher: harder).
DIFFICULTY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"demosaic": demosaic_difficulty}


class HardPatches:
    """A patch sampler whose batches are part hardest-of-many, part plain draws.

    Parameters
    ----------
    sampler
        The plain sampler (``sample(n)``, ``state()``, ``set_state()``); its generator is the
        only randomness, so training state saves and resumes as before.
    difficulty
        ``difficulty(patches) -> (B,)`` scores.
    candidates
        Patches scored per hard patch kept.
    share
        Fraction of every batch that is mined.
    """

    def __init__(self, sampler: Any, difficulty: Callable[[torch.Tensor], torch.Tensor], candidates: int = 4,
                 share: float = 0.5) -> None:
        if int(candidates) < 2:
            raise ValueError(f"hard_patches: candidates must be at least 2, got {candidates}")
        if not 0 < share <= 1:
            raise ValueError(f"hard_patches: share must lie in (0, 1], got {share}")
        self.sampler, self.difficulty = sampler, difficulty
        self.candidates, self.share = int(candidates), float(share)

    def __getattr__(self, name: str) -> Any:  # images, patch, channels, weights of the plain sampler
        return getattr(self.__dict__["sampler"], name)

    def sample(self, batch: int) -> torch.Tensor:
        hard = max(1, round(self.share * batch))
        pool = self.sampler.sample(batch - hard + hard * self.candidates)
        plain, cand = pool[: batch - hard], pool[batch - hard :]
        with torch.no_grad():
            worst = self.difficulty(cand).topk(hard).indices
        return torch.cat([plain, cand[worst]])

    def state(self) -> dict:
        return self.sampler.state()

    def set_state(self, state: dict) -> None:
        self.sampler.set_state(state)


def with_hard_patches(sampler: Any, task: str, config: dict[str, Any] | None) -> Any:
    """``sampler`` wrapped in :class:`HardPatches` per a recipe's ``hard_patches`` block
    (``{"candidates": k, "share": s}``), or as it is without one."""
    if not config:
        return sampler
    unknown = set(config) - {"candidates", "share"}
    if unknown:
        raise ValueError(f"hard_patches: expected candidates and share, got {sorted(config)}")
    if task not in DIFFICULTY:
        raise ValueError(f"hard_patches: no difficulty measure for {task}; available for {', '.join(DIFFICULTY)}")
    return HardPatches(sampler, DIFFICULTY[task], config.get("candidates", 4), config.get("share", 0.5))
