"""Optimizers and learning-rate schedules: AdamW with weight decay on matrices only, linear
warmup then cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dsm.recipes.config import OptimConfig


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based): linear warmup from
    1/warmup to 1, then cosine from 1 down to min_lr_ratio at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR:
    """Sets every param group's lr to base_lr x lr_factor(step). `step()` is called once per
    optimizer step of the run, also when a task skipped this optimizer, so the schedule
    follows the run's step count; its state (step, base lrs) goes into checkpoints."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int) -> None:
        self.optimizer = optimizer
        self.config = config
        self.max_steps = max_steps
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        factor = lr_factor(self.last_step, self.config.warmup_steps, self.max_steps, self.config.min_lr_ratio)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()


def build_optimizer(params: list[nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2) only."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, betas=config.betas, eps=config.eps,
    )
