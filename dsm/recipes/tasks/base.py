"""What a recipe trains: the task interface the trainer drives, (the registry by `kind` is dsm.recipes.registry).

A task owns everything specific to one kind of model (codec, ASR, TTS, ...); the trainer
(dsm.recipes.training.trainer) owns everything generic (optimizers, schedules, accumulation,
clipping, precision, data order, checkpoints, distribution, logging). The contract:

- Class attributes: `kind` (the recipe's `kind = ...`), `config_class` (dataclass checked
  against the recipe's `[task]` table, or None), `optimizer_names` (one AdamW per name;
  `[optim.NAME]` tables override `[optim]` for one of them), `needs_manifest`.
- `build_dataset(split)` -> a map-style Dataset for "train" (required) or "valid" (None if
  there is none); `collate(items)` -> one batch. Items must not depend on hidden random
  state: a dataset that augments randomly derives its draws from the item index and from
  the epoch (the trainer calls `dataset.set_epoch(epoch)` when the method exists), so that
  a resumed run sees exactly the batches an uninterrupted one would.
- `build_models()` -> named modules, e.g. {"generator": ..., "discriminator": ...}. All of
  them are saved in checkpoints and wrapped in DistributedDataParallel under torchrun.
- `optimizer_parameters(models)` -> {optimizer name: parameters}; every name of
  `optimizer_names` once. The default gives all parameters to the single optimizer "model".
- `train_step(batch, ctx)` -> metrics {name: scalar tensor or float}, one micro-batch. The
  task runs its forward passes and calls `ctx.update(name, loss)` once per optimizer it
  wants to move: that back-propagates `loss / grad_accum` into *that optimizer's
  parameters only* (other models' .grad stay untouched) and, on the micro-batch that ends
  the accumulation window, clips that optimizer's gradients and steps it at once. So a
  GAN updates the discriminator on a detached fake, then computes the generator's
  adversarial loss through the freshly updated discriminator, then updates the generator.
  Single-optimizer tasks only implement `compute_loss(models, batch)`; the default
  `train_step` calls it and `ctx.update("model", loss)`.
- Forward through `ctx.models[name]` (the DDP-wrapped module under torchrun) for passes
  whose gradients should train that model; use `ctx.raw_models[name]` for passes that
  must not touch its gradients (e.g. the discriminator inside the generator's loss), since
  a DDP forward whose backward never reaches its parameters stalls gradient sync.
- `valid_step(models, batch)` -> metrics (no grad; default: compute_loss's metrics).
- `export(models, directory)`: write the deployable result (e.g. a codec directory for
  `load_codec`) when training completes; the default writes nothing more than checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from dsm.recipes.config import Recipe
from dsm.recipes.registry import register_task

__all__ = ["Metrics", "Split", "StepContext", "Task", "register_task"]

Split = Literal["train", "valid"]
Metrics = dict[str, "Tensor | float"]


class StepContext(Protocol):
    """What the trainer hands to `Task.train_step` (implemented in dsm.recipes.training.trainer)."""

    step: int                          # optimizer steps completed before this one
    micro_batch: int                   # 0 .. grad_accum-1 within the step
    device: torch.device
    models: Mapping[str, nn.Module]    # DDP-wrapped under torchrun, else the plain modules
    raw_models: Mapping[str, nn.Module]

    def update(self, name: str, loss: Tensor) -> None:
        """Accumulate d(loss)/d(params of optimizer `name`); step it at the window's end."""

    def log(self, name: str, value: Tensor | float) -> None:
        """Add one scalar to this step's metrics (averaged over micro-batches and ranks)."""


class Task:
    """Base class of every recipe task; see the module docstring for the contract."""

    kind: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    optimizer_names: ClassVar[tuple[str, ...]] = ("model",)
    needs_manifest: ClassVar[bool] = False
    find_unused_parameters: ClassVar[bool] = False   # DDP option for models with unused params

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.config = recipe.task

    # --- data -------------------------------------------------------------------------
    def build_dataset(self, split: Split) -> Dataset | None:
        raise NotImplementedError

    def collate(self, items: list[Any]) -> Any:
        return default_collate(items)

    # --- models and optimizers ---------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizer_parameters(self, models: Mapping[str, nn.Module]) -> dict[str, list[nn.Parameter]]:
        if self.optimizer_names != ("model",):
            raise NotImplementedError(
                f"task '{self.kind}' has optimizers {self.optimizer_names}: it must say which "
                "parameters each one trains (optimizer_parameters)"
            )
        return {"model": [p for m in models.values() for p in m.parameters()]}

    # --- steps ------------------------------------------------------------------------
    def compute_loss(self, models: Mapping[str, nn.Module], batch: Any) -> tuple[Tensor, Metrics]:
        raise NotImplementedError

    def train_step(self, batch: Any, ctx: StepContext) -> Metrics:
        loss, metrics = self.compute_loss(ctx.models, batch)
        ctx.update("model", loss)
        return {"loss": loss.detach(), **metrics}

    def valid_step(self, models: Mapping[str, nn.Module], batch: Any) -> Metrics:
        loss, metrics = self.compute_loss(models, batch)
        return {"loss": loss.detach(), **metrics}

    def export(self, models: Mapping[str, nn.Module], directory: Path) -> None:
        """Write the trained model where `load_*` functions read it (default: nothing)."""
