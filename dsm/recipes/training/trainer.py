"""The trainer behind `dsm train`: one loop for every task, on CPU, one GPU or under torchrun
(its parts beside it: schedule, data_order, checkpoint, distributed, metrics_log).

What it does, and the guarantees it keeps:

- One AdamW per optimizer name of the task, weight decay on matrices only, a linear
  warmup then cosine decay (WarmupCosineLR, stepped once per optimizer step), gradient
  accumulation over `train.grad_accum` micro-batches, clipping of each optimizer's global
  grad norm, bf16 autocast on GPU (`train.precision`).
- Data order is a pure function of (seed, epoch): each epoch is a seeded permutation cut
  into per-rank batches the way DistributedSampler does it (rank r takes every W-th item),
  with the incomplete tail dropped so every rank runs the same number of steps.
- Checkpoints `OUT/checkpoints/step_XXXXXXXX.pt` hold the models, optimizers, schedulers,
  every rank's RNG states, the data position (epoch, batches consumed) and the open
  logging window. They are written atomically: a hidden temp file in the same directory,
  fsync, rename, fsync of the directory; a crash at any point leaves the previous
  checkpoints whole. The last `train.keep_checkpoints` are kept.
- `resume=True` restores all of it, so step N+1 of a resumed run computes the same loss,
  bit for bit, as step N+1 of an uninterrupted run (same hardware and world size).
- Under torchrun (WORLD_SIZE > 1) it joins the process group through env:// (gloo on CPU,
  nccl on GPU), wraps every model in DistributedDataParallel, and only rank 0 writes
  checkpoints, metrics.csv and the progress bar. Metrics are averaged over ranks.
- `OUT/metrics.csv`: one row every `train.log_every` steps: step, epoch, seconds, lr of
  each optimizer, the mean of each metric over the steps since the previous row, and
  `valid/...` rows' columns when `train.eval_every` is set.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from dsm.recipes.config import Recipe, RecipeError
from dsm.recipes.registry import get_task_class
from dsm.recipes.tasks.base import Task
from dsm.recipes.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    capture_rng,
    checkpoint_dir,
    latest_loadable_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng,
    save_checkpoint_atomic,
    seed_everything,
)
from dsm.recipes.training.data_order import EpochBatchSampler
from dsm.recipes.training.distributed import init_distributed, resolve_device
from dsm.recipes.training.metrics_log import MetricsCSV
from dsm.recipes.training.schedule import WarmupCosineLR, build_optimizer


class _StepContext:
    """`tasks.StepContext`: what train_step sees of the trainer for one micro-batch."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.step = 0
        self.micro_batch = 0
        self.last_micro_batch = True
        self.device = trainer.device
        self.models: Mapping[str, nn.Module] = trainer.wrapped_models
        self.raw_models: Mapping[str, nn.Module] = trainer.models
        self.extra_metrics: dict[str, Tensor | float] = {}

    def update(self, name: str, loss: Tensor) -> None:
        trainer = self._trainer
        if name not in trainer.optimizers:
            raise KeyError(f"task has no optimizer '{name}' (optimizers: {', '.join(trainer.optimizers)})")
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(f"step {self.step + 1}: loss for optimizer '{name}' is {loss.item()}")
        params = trainer.trainable[name]
        with torch.autocast(device_type=self.device.type, enabled=False):
            (loss / trainer.recipe.train.grad_accum).backward(inputs=params)
        if self.last_micro_batch:
            clip = trainer.recipe.optim[name].grad_clip
            if clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, clip)
                self.log(f"grad_norm/{name}", norm.detach())
            trainer.optimizers[name].step()
            trainer.optimizers[name].zero_grad(set_to_none=True)

    def log(self, name: str, value: Tensor | float) -> None:
        self.extra_metrics[name] = value


@dataclass
class TrainResult:
    step: int                              # optimizer steps completed
    out_dir: Path
    models: dict[str, nn.Module]           # the plain (unwrapped) modules
    last_row: dict[str, Any] = field(default_factory=dict)   # last metrics.csv row


class Trainer:
    """Builds task, data, models and optimizers from a recipe, then `fit()`s."""

    def __init__(self, recipe: Recipe, out_dir: Path, resume: bool | str | Path = False) -> None:
        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.device = resolve_device(recipe.train.device)
        self.dist_info = init_distributed(self.device)
        self.autocast_dtype = self._autocast_dtype()
        self.task: Task = get_task_class(recipe.kind, recipe.source)(recipe)
        ckpt_dir = checkpoint_dir(self.out_dir)

        resume_state = self._find_resume_state(resume, ckpt_dir)

        # Data first: an empty or too small corpus fails before any model is built.
        self.train_set = self._checked_dataset("train")
        self.valid_set = self.task.build_dataset("valid") if recipe.train.eval_every else None
        self.sampler = EpochBatchSampler(
            len(self.train_set), recipe.data.batch_size, self.dist_info, recipe.seed, recipe.data.shuffle
        )
        if self.sampler.batches_per_epoch() == 0:
            raise RecipeError(
                f"{recipe.source}: the training corpus ({_dataset_source(self.train_set)}) has "
                f"{len(self.train_set)} items, fewer than one batch (data.batch_size "
                f"{recipe.data.batch_size} x {self.dist_info.world_size} ranks)"
            )

        seed_everything(recipe.seed)   # same initial weights on every rank
        self.models = {name: m.to(self.device) for name, m in self.task.build_models().items()}
        parameters = self.task.optimizer_parameters(self.models)
        if set(parameters) != set(self.task.optimizer_names):
            raise ValueError(
                f"task '{recipe.kind}': optimizer_parameters gave {sorted(parameters)}, "
                f"expected {sorted(self.task.optimizer_names)}"
            )
        self.trainable = {n: [p for p in ps if p.requires_grad] for n, ps in parameters.items()}
        self.optimizers = {n: build_optimizer(ps, recipe.optim[n]) for n, ps in parameters.items()}
        self.schedulers = {
            n: WarmupCosineLR(opt, recipe.optim[n], recipe.train.max_steps) for n, opt in self.optimizers.items()
        }
        self.step_lrs: dict[str, float] = {}     # the lr each optimizer used in the last step
        self.wrapped_models = self._wrap_models()

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.window: dict[str, float] = {}       # metric sums since the last csv row
        self.window_steps = 0
        seed_everything(recipe.seed + 7919 * self.dist_info.rank)  # per-rank draws (dropout)
        if resume_state is not None:
            self._restore(*resume_state)

    # --- setup helpers ------------------------------------------------------------------
    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.recipe.train.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _checked_dataset(self, split: str) -> Dataset:
        dataset = self.task.build_dataset(split)  # type: ignore[arg-type]
        if dataset is None:
            raise RecipeError(f"{self.recipe.source}: task '{self.recipe.kind}' built no {split} dataset")
        if len(dataset) == 0:
            skipped = getattr(dataset, "skipped", None)
            why = f"; {len(skipped)} rows were skipped as unusable" if skipped else ""
            raise RecipeError(
                f"{self.recipe.source}: empty corpus: {_dataset_source(dataset)} gives no "
                f"training items (data.train_manifest = {self.recipe.data.train_manifest!r}){why}"
            )
        return dataset


    def _wrap_models(self) -> dict[str, nn.Module]:
        if not self.dist_info.distributed:
            return dict(self.models)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return {
            name: DistributedDataParallel(
                module, device_ids=device_ids,
                find_unused_parameters=self.task.find_unused_parameters,
            )
            if any(p.requires_grad for p in module.parameters()) else module
            for name, module in self.models.items()
        }

    def _find_resume_state(self, resume: bool | str | Path, ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
        if resume is False:
            if list_checkpoints(ckpt_dir):
                raise RecipeError(
                    f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                    "or choose another --out"
                )
            return None
        if resume is True:
            found = latest_loadable_checkpoint(ckpt_dir)
            if found is None:
                raise RecipeError(f"--resume: no checkpoint to resume in {ckpt_dir}")
            return found
        return Path(resume), load_checkpoint(resume)

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        if state["kind"] != self.recipe.kind:
            raise RecipeError(f"{path} was trained by recipe kind '{state['kind']}', not '{self.recipe.kind}'")
        changed = _changed_keys(state.get("recipe", {}), self.recipe.raw)
        if changed and self.dist_info.is_main:
            print(f"dsm train: resuming with recipe changes: {', '.join(changed)}", file=sys.stderr)
        for name, module in self.models.items():
            module.load_state_dict(state["models"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.window = dict(state["log_window"]["sums"])
        self.window_steps = state["log_window"]["steps"]
        rng_states = state["rng"]
        if len(rng_states) == self.dist_info.world_size:
            restore_rng(rng_states[self.dist_info.rank])
        elif self.dist_info.is_main:
            print(
                f"dsm train: {path} was written by {len(rng_states)} ranks, this run has "
                f"{self.dist_info.world_size}: data order within the epoch and random draws "
                "will differ from the original run",
                file=sys.stderr,
            )
        if self.dist_info.is_main:
            print(f"dsm train: resumed from {path} at step {self.step}", file=sys.stderr)

    # --- checkpoints --------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any] | None:
        """Everything to resume exactly; collective under torchrun (gathers RNG states).
        Returns the state on rank 0, None elsewhere."""
        rng = capture_rng()
        if self.dist_info.distributed:
            gathered: list[Any] = [None] * self.dist_info.world_size
            dist.all_gather_object(gathered, rng)
            rng_states = gathered
        else:
            rng_states = [rng]
        if not self.dist_info.is_main:
            return None
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": self.recipe.kind,
            "recipe": self.recipe.raw,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist_info.world_size,
            "models": {n: m.state_dict() for n, m in self.models.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng": rng_states,
            "log_window": {"sums": dict(self.window), "steps": self.window_steps},
        }

    def save_checkpoint(self) -> Path | None:
        state = self.checkpoint_state()
        path = None
        if state is not None:
            path = save_checkpoint_atomic(
                state, checkpoint_dir(self.out_dir), self.step, self.recipe.train.keep_checkpoints
            )
        self._barrier()
        return path

    def _barrier(self) -> None:
        if self.dist_info.distributed:
            dist.barrier()

    # --- data ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_position(self.epoch, self.batch_in_epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.epoch)
        generator = torch.Generator().manual_seed(
            self.recipe.seed * 1_000_003 + self.epoch * 7919 + self.dist_info.rank
        )
        return DataLoader(
            self.train_set, batch_sampler=self.sampler, collate_fn=self.task.collate,
            num_workers=self.recipe.data.num_workers, generator=generator,
            pin_memory=self.device.type == "cuda",
        )

    def _batches(self) -> Iterator[Any]:
        """Batches forever, epoch after epoch, keeping (epoch, batch_in_epoch) current."""
        while True:
            for batch in self._loader():
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # --- training -----------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to train.max_steps (or `stop_after` more steps, then checkpoint and return)."""
        recipe = self.recipe
        train = recipe.train
        main = self.dist_info.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(checkpoint_dir(self.out_dir))
        resumed_at = self.step if self.step > 0 else None
        csv_log = MetricsCSV(self.out_dir / "metrics.csv", resumed_at) if main else None
        target = train.max_steps if stop_after is None else min(train.max_steps, self.step + stop_after)
        progress = _progress_bar(train.max_steps, self.step) if main and train.progress else None
        for module in self.models.values():
            module.train()
        items_per_step = recipe.data.batch_size * train.grad_accum * self.dist_info.world_size
        ctx = _StepContext(self)
        batches = self._batches()
        started = time.monotonic()
        last_row: dict[str, Any] = {}
        try:
            while self.step < target:
                step_metrics = self._train_one_step(ctx, batches)
                self.step += 1
                for name, value in step_metrics.items():
                    self.window[name] = self.window.get(name, 0.0) + value
                self.window_steps += 1
                if progress is not None:
                    progress.update(1)
                    postfix = _postfix(step_metrics)
                    rate = progress.format_dict.get("rate")
                    if rate:
                        postfix["items/s"] = f"{rate * items_per_step:.4g}"
                    progress.set_postfix(postfix, refresh=False)
                if self.step % train.log_every == 0 or self.step == train.max_steps:
                    row = self._log_row(started)
                    if self.valid_set is not None and (self.step % train.eval_every == 0 or self.step == train.max_steps):
                        row.update(self.validate())
                    if csv_log is not None:
                        csv_log.write(row)
                    last_row = row
                if self.step % train.checkpoint_every == 0 or self.step == target:
                    self.save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        if self.step == train.max_steps and main:
            self.task.export(self.models, self.out_dir)
        self._barrier()
        return TrainResult(self.step, self.out_dir, dict(self.models), last_row)

    def _train_one_step(self, ctx: _StepContext, batches: Iterator[Any]) -> dict[str, float]:
        accum = self.recipe.train.grad_accum
        sums: dict[str, float] = {}
        ctx.step = self.step
        for micro in range(accum):
            batch = _to_device(next(batches), self.device)
            ctx.micro_batch = micro
            ctx.last_micro_batch = micro == accum - 1
            ctx.extra_metrics = {}
            with contextlib.ExitStack() as stack:
                if self.dist_info.distributed and not ctx.last_micro_batch:
                    for module in self.wrapped_models.values():
                        if isinstance(module, DistributedDataParallel):
                            stack.enter_context(module.no_sync())
                if self.autocast_dtype is not None:
                    stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
                metrics = self.task.train_step(batch, ctx)
            for name, value in {**metrics, **ctx.extra_metrics}.items():
                scale = 1.0 if name.startswith("grad_norm/") else 1.0 / accum
                sums[name] = sums.get(name, 0.0) + float(value) * scale
        self.step_lrs = {name: s.current_lr() for name, s in self.schedulers.items()}
        for scheduler in self.schedulers.values():
            scheduler.step()
        return sums

    def _log_row(self, started: float) -> dict[str, Any]:
        names = sorted(self.window)
        means = torch.tensor([self.window[n] / self.window_steps for n in names], dtype=torch.float64)
        if self.dist_info.distributed:
            dist.all_reduce(means)
            means /= self.dist_info.world_size
        row: dict[str, Any] = {"step": self.step, "epoch": self.epoch,
                               "seconds": round(time.monotonic() - started, 3)}
        for name, lr in self.step_lrs.items():
            row[f"lr/{name}"] = lr
        row.update({n: float(v) for n, v in zip(names, means.tolist())})
        self.window, self.window_steps = {}, 0
        return row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean of valid_step's metrics over the valid set (sharded over ranks)."""
        assert self.valid_set is not None
        rank, world = self.dist_info.rank, self.dist_info.world_size
        indices = list(range(rank, len(self.valid_set), world))
        batch_size = self.recipe.data.batch_size
        sums: dict[str, float] = {}
        count = 0
        for module in self.models.values():
            module.eval()
        try:
            for start in range(0, len(indices), batch_size):
                items = [self.valid_set[i] for i in indices[start : start + batch_size]]
                batch = _to_device(self.task.collate(items), self.device)
                with contextlib.ExitStack() as stack:
                    if self.autocast_dtype is not None:
                        stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
                    metrics = self.task.valid_step(self.models, batch)
                for name, value in metrics.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(items)
                count += len(items)
        finally:
            for module in self.models.values():
                module.train()
        names = sorted(sums)
        totals = torch.tensor([sums[n] for n in names] + [float(count)], dtype=torch.float64)
        if self.dist_info.distributed:
            dist.all_reduce(totals)
        total_count = max(1.0, float(totals[-1]))
        return {f"valid/{n}": float(v) / total_count for n, v in zip(names, totals[:-1].tolist())}


def train(
    recipe: Recipe, out_dir: str | Path | None = None, resume: bool | str | Path = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train `recipe` into `out_dir` (default: recipe.out_dir, else runs/<recipe name>)."""
    if out_dir is None:
        out_dir = recipe.out_dir or Path("runs") / Path(recipe.source).stem
    return Trainer(recipe, Path(out_dir), resume).fit(stop_after)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def _dataset_source(dataset: Dataset) -> str:
    return str(getattr(dataset, "source", type(dataset).__name__))


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            changed += _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return changed
    return [] if old == new else [prefix]


def _progress_bar(total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def _postfix(metrics: dict[str, float]) -> dict[str, str]:
    shown = {k: v for k, v in metrics.items() if not k.startswith("grad_norm/")}
    return {k: f"{v:.4g}" for k, v in list(shown.items())[:4]}
