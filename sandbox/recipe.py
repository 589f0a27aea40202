"""The parts of a candidate's training recipe beyond the trainer's default loop: SGD with momentum, the augmentations.

The host checked the recipe against the task's bounds before the job started (agentarch/tasks/recipes.py, which
holds the same names); the trainer (trainer.py) builds the optimizer, the schedule and the loss from it and calls
`augment` on each training batch. Like the trainer, this imports only torch and the standard library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OPTIMIZERS = ("adamw", "adam", "sgd", "nesterov")
SCHEDULES = ("cosine", "linear", "constant", "step")
AUGMENTATIONS = ("shift", "flip", "noise")
MOMENTUM = 0.9
"""SGD's momentum, plain or Nesterov: the one value a recipe does not choose (its learning rate does the work)."""
MAX_SHIFT = 2
"""`shift` moves each image by up to this many pixels along each axis, the gap filled with zeros (the mean)."""
NOISE_STD = 0.1
"""`noise`'s standard deviation on normalized inputs; a dense task's pixels in [0, 1] get a third of it."""


def zero_grad(param_groups: list[dict], set_to_none: bool = True) -> None:
    """Drop (or zero) every gradient of the groups: what both optimizers' `zero_grad` do."""
    for group in param_groups:
        for p in group["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


class SGD:
    """SGD with momentum (MOMENTUM), plain or Nesterov, L2 weight decay in the gradient, as torch.optim.SGD computes
    it; its own class for the reason AdamW has one (torch's `step` imports the compiler on first use)."""

    def __init__(self, groups: list[dict], lr: float, nesterov: bool) -> None:
        self.param_groups = [{**group, "lr": lr} for group in groups]
        self.nesterov = nesterov
        self.state: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                buffer = self.state.get(p)
                if buffer is None:
                    buffer = self.state[p] = grad.detach().clone()
                else:
                    buffer.mul_(MOMENTUM).add_(grad)
                p.add_(grad.add(buffer, alpha=MOMENTUM) if self.nesterov else buffer, alpha=-group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grad(self.param_groups, set_to_none)


def augment(
    kind: str, x: torch.Tensor, y: torch.Tensor, names: list[str], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch with the recipe's augmentations applied, each drawn per example from `generator` (seeded, so
    a run repeats): `shift` moves each image up to MAX_SHIFT pixels, `flip` mirrors half the images left to right (a
    dense task's target image with its input), `noise` adds Gaussian noise to float inputs. The host allows only
    those that mean something for the task's kind (agentarch/tasks/recipes.py); ids are never touched here."""
    if not x.is_floating_point():
        return x, y
    n = x.shape[0]
    if "shift" in names and x.ndim == 4:
        height, width = x.shape[-2:]
        padded = F.pad(x, (MAX_SHIFT,) * 4)
        dy, dx = (torch.randint(0, 2 * MAX_SHIFT + 1, (n,), generator=generator, device=x.device) for _ in "yx")
        rows = (torch.arange(height, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(width, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, channel, rows, cols]
    if "flip" in names and x.ndim == 4:
        mirrored = (torch.rand(n, generator=generator, device=x.device) < 0.5)[:, None, None, None]
        x = torch.where(mirrored, x.flip(-1), x)
        if kind == "dense":
            y = torch.where(mirrored, y.flip(-1), y)
    if "noise" in names:
        std = NOISE_STD / 3 if kind == "dense" else NOISE_STD
        x = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x, y
