"""The trainer end to end on the toy task: loss decreases, checkpoints are atomic and kept
N at a time, and a resumed run is bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dsm import cli
from dsm.recipes.config import RecipeError, load_recipe
from dsm.recipes.registry import TASKS
from dsm.recipes.tasks.base import Task, register_task
from dsm.recipes.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint_atomic,
)
from dsm.recipes.training.data_order import EpochBatchSampler
from dsm.recipes.training.distributed import DistInfo
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.schedule import lr_factor
from dsm.recipes.training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[2]

TOY = """
kind = "toy"
seed = 1
[data]
batch_size = 4
[train]
max_steps = {max_steps}
grad_accum = 2
log_every = 1
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2
progress = false
[optim]
lr = 1e-2
warmup_steps = 3
min_lr_ratio = 0.1
weight_decay = 0.01
grad_clip = 0.5
[task]
num_sequences = 40     # 5 optimizer steps per epoch: runs cross epoch boundaries
seq_len = 12
hidden = 16
"""


def toy_recipe(tmp_path: Path, max_steps: int = 12, checkpoint_every: int = 100, name: str = "toy.toml") -> Path:
    path = tmp_path / name
    path.write_text(TOY.format(max_steps=max_steps, checkpoint_every=checkpoint_every))
    return path


def losses(out: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["loss"]) for row in read_metrics(out / "metrics.csv")}


def test_lr_schedule_warms_up_then_decays() -> None:
    factors = [lr_factor(s, 4, 20, 0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))     # cosine never rises
    assert factors[-1] > 0.1 and lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_sampler_shards_like_one_big_batch_and_resumes_mid_epoch() -> None:
    single = EpochBatchSampler(23, 6, DistInfo(0, 1, 0), seed=5, shuffle=True)
    ranks = [EpochBatchSampler(23, 3, DistInfo(r, 2, r), seed=5, shuffle=True) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.set_position(epoch=2, start_batch=0)
    assert single.batches_per_epoch() == 3 == ranks[0].batches_per_epoch()
    per_rank = [list(s) for s in ranks]
    for k, big in enumerate(single):
        assert sorted(per_rank[0][k] + per_rank[1][k]) == sorted(big)   # same items per step
        assert not set(per_rank[0][k]) & set(per_rank[1][k])            # ranks see different items
    ranks[1].set_position(epoch=2, start_batch=2)
    assert list(ranks[1]) == per_rank[1][2:]
    ranks[1].set_position(epoch=3, start_batch=0)
    assert list(ranks[1]) != per_rank[1]                                # new epoch, new order


def test_tiny_run_learns_and_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = load_recipe(toy_recipe(tmp_path, max_steps=30, checkpoint_every=10), ["optim.lr=0.05"])
    result = train(recipe, out)
    assert result.step == 30
    loss = losses(out)
    assert sorted(loss) == list(range(1, 31))
    first, last = sum(loss[s] for s in (1, 2, 3)) / 3, sum(loss[s] for s in (28, 29, 30)) / 3
    assert last < 0.5 * first, (first, last)
    rows = read_metrics(out / "metrics.csv")
    assert float(rows[0]["lr/model"]) == pytest.approx(0.05 / 3)         # lr used in step 1
    assert float(rows[2]["lr/model"]) == pytest.approx(0.05)             # warmup done at step 3
    assert float(rows[-1]["lr/model"]) < 0.01                           # cosine decayed
    # checkpoints every 10 steps, the last 2 kept, each loadable with the full state
    steps = [step for step, _ in list_checkpoints(out / "checkpoints")]
    assert steps == [20, 30]
    state = load_checkpoint(out / "checkpoints" / "step_00000030.pt")
    assert state["step"] == 30 and (state["epoch"], state["batch_in_epoch"]) == (5, 10)  # 60 batches
    assert set(state["models"]) == {"model"} and set(state["optimizers"]) == {"model"}
    final = result.models["model"].state_dict()
    for name, tensor in state["models"]["model"].items():
        assert torch.equal(tensor, final[name])


def test_resume_is_exact(tmp_path: Path) -> None:
    """Stop at step 7 (mid-epoch, mid-schedule), resume: every later loss, the lr and the
    final weights equal the uninterrupted run's exactly. Dropout makes the RNG matter."""
    recipe_path = toy_recipe(tmp_path, max_steps=12)
    overrides = ["task.dropout=0.2"]
    whole = train(load_recipe(recipe_path, overrides), tmp_path / "whole")
    first = train(load_recipe(recipe_path, overrides), tmp_path / "split", stop_after=7)
    assert first.step == 7
    assert [s for s, _ in list_checkpoints(tmp_path / "split" / "checkpoints")] == [7]
    torch.manual_seed(123)      # a fresh process would not share the first run's RNG
    resumed = train(load_recipe(recipe_path, overrides), tmp_path / "split", resume=True)
    assert resumed.step == 12
    whole_rows = read_metrics(tmp_path / "whole" / "metrics.csv")
    split_rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in split_rows] == [str(s) for s in range(1, 13)]
    for a, b in zip(whole_rows, split_rows):
        for key in ("step", "epoch", "lr/model", "loss", "grad_norm/model"):
            assert a[key] == b[key], (key, a, b)      # exact float text, not approx
    assert float(whole_rows[7]["loss"]) != float(whole_rows[6]["loss"])
    for name, tensor in whole.models["model"].state_dict().items():
        assert torch.equal(tensor, resumed.models["model"].state_dict()[name]), name


def test_resume_refusals(tmp_path: Path) -> None:
    recipe = load_recipe(toy_recipe(tmp_path, max_steps=2))
    with pytest.raises(RecipeError, match="no checkpoint to resume"):
        train(recipe, tmp_path / "empty", resume=True)
    train(recipe, tmp_path / "run")
    with pytest.raises(RecipeError, match="already holds checkpoints: pass --resume"):
        train(recipe, tmp_path / "run")


def test_failure_between_write_and_rename_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "ckpt"
    save_checkpoint_atomic({"format": "x", "value": torch.ones(3)}, directory, 1, keep=3)

    def broken_replace(src: str, dst: str) -> None:
        assert Path(src).stat().st_size > 0       # the temp file was fully written
        raise OSError("injected: crash before rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        save_checkpoint_atomic({"format": "x", "value": torch.zeros(3)}, directory, 2, keep=3)
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(directory)] == [1]
    assert sorted(p.name for p in directory.iterdir()) == ["step_00000001.pt"]   # temp cleaned
    assert torch.equal(torch.load(directory / "step_00000001.pt")["value"], torch.ones(3))


KILLED_WRITER = """
import io, sys, time
import torch
from dsm.recipes.config import load_recipe
from dsm.recipes.training.trainer import train

real_save = torch.save
calls = [0]

def half_then_hang(obj, handle):
    calls[0] += 1
    if calls[0] == 1:
        return real_save(obj, handle)
    buffer = io.BytesIO()
    real_save(obj, buffer)
    data = buffer.getvalue()
    handle.write(data[: len(data) // 2])
    handle.flush()
    open(sys.argv[3], "w").close()   # tell the test: the second checkpoint is half written
    time.sleep(600)

torch.save = half_then_hang
train(load_recipe(sys.argv[1]), sys.argv[2])
"""


def test_sigkill_during_checkpoint_write_leaves_previous_loadable(tmp_path: Path) -> None:
    recipe_path = toy_recipe(tmp_path, max_steps=6, checkpoint_every=2)
    out, marker = tmp_path / "run", tmp_path / "half-written"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(script), str(recipe_path), str(out), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "writer exited before reaching the checkpoint write"
            assert time.monotonic() < deadline, "writer never reached the second checkpoint"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    ckpt_dir = out / "checkpoints"
    temps = list(ckpt_dir.glob(".step_00000004.pt.tmp-*"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0          # killed mid-write
    with pytest.raises((RuntimeError, OSError)):
        torch.load(temps[0], weights_only=True)                     # the half file is garbage
    assert [s for s, _ in list_checkpoints(ckpt_dir)] == [2]
    assert load_checkpoint(ckpt_dir / "step_00000002.pt")["step"] == 2
    trainer = Trainer(load_recipe(recipe_path), out, resume=True)
    assert trainer.step == 2
    assert trainer.fit().step == 6
    assert not list(ckpt_dir.glob(".step_*"))                       # stale temp removed
    assert [s for s, _ in list_checkpoints(ckpt_dir)] == [4, 6]


def test_cli_train_resume_and_set(tmp_path: Path) -> None:
    recipe_path = toy_recipe(tmp_path, max_steps=6)
    out = tmp_path / "run"
    base = ["train", str(recipe_path), "--out", str(out), "--set", "train.log_every=2"]
    assert cli.main([*base, "--stop-after", "3"]) == 0
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3]
    assert cli.main(base) == 2                                      # refuses to overwrite
    assert cli.main([*base, "--resume"]) == 0
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")] == [2, 4, 6]
    final = load_checkpoint(out / "checkpoints" / "step_00000006.pt")
    assert final["recipe"]["train"]["log_every"] == 2
    # --resume FILE: continue a given checkpoint into another directory, same result
    other = tmp_path / "other"
    step_3 = out / "checkpoints" / "step_00000003.pt"
    assert cli.main(["train", str(recipe_path), "--out", str(other), "--resume", str(step_3)]) == 0
    again = load_checkpoint(other / "checkpoints" / "step_00000006.pt")
    for name, tensor in final["models"]["model"].items():
        assert torch.equal(tensor, again["models"]["model"][name])


def test_validation_rows_and_manifest_corpus(tmp_path: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    rows = [{"text": f"word {i} and word {i + 1} then more words"} for i in range(40)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(
        toy_recipe(tmp_path, max_steps=4),
        [f'data.train_manifest="{manifest}"', f'data.valid_manifest="{manifest}"', "train.eval_every=2"],
    )
    train(recipe, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [bool(r["valid/loss"]) for r in metrics] == [False, True, False, True]
    assert float(metrics[3]["valid/loss"]) < float(metrics[1]["valid/loss"])


def test_diverged_loss_stops_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsm.recipes.tasks.toy import ToyTask

    real = ToyTask.compute_loss
    calls = [0]

    def nan_on_fifth_micro_batch(self, models, batch):
        calls[0] += 1
        loss, metrics = real(self, models, batch)
        return (loss * float("nan") if calls[0] == 5 else loss), metrics

    monkeypatch.setattr(ToyTask, "compute_loss", nan_on_fifth_micro_batch)
    out = tmp_path / "run"
    recipe = load_recipe(toy_recipe(tmp_path, max_steps=6, checkpoint_every=2))
    with pytest.raises(FloatingPointError, match="step 3: loss for optimizer 'model' is nan"):
        train(recipe, out)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2]
    assert load_checkpoint(out / "checkpoints" / "step_00000002.pt")["step"] == 2


def test_bf16_autocast_path_trains(tmp_path: Path) -> None:
    recipe = load_recipe(toy_recipe(tmp_path, max_steps=3), ["train.precision=\"bf16\""])
    train(recipe, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(tmp_path / "run").values())


# --- tasks with two optimizers ------------------------------------------------------------

@dataclass
class PairConfig:
    update_second: bool = True


class PairTask(Task):
    """Two linear maps a -> b; `a` learns through b (b's gradients are not wanted there),
    `b` learns on a detached input, like a generator and a discriminator."""

    kind = "test-pair"
    config_class = PairConfig
    optimizer_names = ("first", "second")

    def build_dataset(self, split: str) -> torch.utils.data.Dataset | None:
        if split == "valid":
            return None
        return torch.utils.data.TensorDataset(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)))

    def collate(self, items: list[tuple[Tensor]]) -> Tensor:
        return torch.stack([item[0] for item in items])

    def build_models(self) -> dict[str, nn.Module]:
        return {"a": nn.Linear(4, 4), "b": nn.Linear(4, 1)}

    def optimizer_parameters(self, models: Mapping[str, nn.Module]) -> dict[str, list[nn.Parameter]]:
        return {"first": list(models["a"].parameters()), "second": list(models["b"].parameters())}

    def train_step(self, batch: Tensor, ctx) -> dict[str, Tensor]:
        hidden = ctx.models["a"](batch)
        loss_first = ctx.raw_models["b"](hidden).pow(2).mean()
        ctx.update("first", loss_first)
        assert all(p.grad is None for p in ctx.raw_models["b"].parameters())
        metrics = {"loss_first": loss_first.detach()}
        if self.config.update_second:
            loss_second = (ctx.models["b"](hidden.detach()) - 1).pow(2).mean()
            ctx.update("second", loss_second)
            metrics["loss_second"] = loss_second.detach()
        return metrics


@pytest.fixture
def pair_task():
    register_task(PairTask)
    yield PairTask
    TASKS.pop(PairTask.kind)


def test_two_optimizers_update_only_their_own_parameters(tmp_path: Path, pair_task) -> None:
    recipe_path = tmp_path / "pair.toml"
    recipe_path.write_text(
        'kind = "test-pair"\n[data]\nbatch_size = 8\n[train]\nmax_steps = 4\nlog_every = 1\n'
        "progress = false\n[optim]\nlr = 0.05\n[optim.second]\nlr = 0.2\n[task]\nupdate_second = false\n"
    )
    recipe = load_recipe(recipe_path)
    assert recipe.optim["first"].lr == 0.05 and recipe.optim["second"].lr == 0.2
    trainer = Trainer(recipe, tmp_path / "frozen")
    b_before = {k: v.clone() for k, v in trainer.models["b"].state_dict().items()}
    a_before = {k: v.clone() for k, v in trainer.models["a"].state_dict().items()}
    trainer.fit()
    # "first" trained `a` through `b`, but never wrote into b's gradients or weights
    assert all(torch.equal(v, trainer.models["b"].state_dict()[k]) for k, v in b_before.items())
    assert not all(torch.equal(v, trainer.models["a"].state_dict()[k]) for k, v in a_before.items())
    rows = read_metrics(tmp_path / "frozen" / "metrics.csv")
    assert float(rows[-1]["loss_first"]) < float(rows[0]["loss_first"])
    assert float(rows[0]["lr/second"]) == 0.2 and float(rows[0]["lr/first"]) == 0.05

    both = load_recipe(recipe_path, ["task.update_second=true"])
    whole = train(both, tmp_path / "whole")
    train(both, tmp_path / "split", stop_after=2)
    resumed = train(both, tmp_path / "split", resume=True)
    state = load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000004.pt")
    assert set(state["optimizers"]) == {"first", "second"}
    for name in ("a", "b"):
        for key, tensor in whole.models[name].state_dict().items():
            assert torch.equal(tensor, resumed.models[name].state_dict()[key])
    assert read_metrics(tmp_path / "whole" / "metrics.csv") != []
    whole_loss = [r["loss_second"] for r in read_metrics(tmp_path / "whole" / "metrics.csv")]
    split_loss = [r["loss_second"] for r in read_metrics(tmp_path / "split" / "metrics.csv")]
    assert whole_loss == split_loss
