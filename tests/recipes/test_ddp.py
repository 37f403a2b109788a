"""`torchrun --nproc_per_node 2` with gloo on CPU: both ranks train, hold identical weights
after every step, and match one process that sees both ranks' items in one batch; a task
with two optimizers (a GAN) keeps both models identical across ranks too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from dsm.recipes.config import load_recipe
from dsm.recipes.training.checkpoint import list_checkpoints, load_checkpoint
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.trainer import train

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

RECIPE = """
kind = "toy"
seed = 4
[data]
batch_size = {batch_size}
[train]
max_steps = 3
grad_accum = 2          # exercises DDP's no_sync on the first micro-batch
log_every = 1
checkpoint_every = 2
progress = false
[optim]
lr = 2e-2
weight_decay = 0.01
grad_clip = 0.5
[task]
num_sequences = 64
seq_len = 10
hidden = 12
"""

WORKER = """
import sys
import torch
import torch.distributed as dist
from torch import nn
from dsm.recipes.config import load_recipe
from dsm.recipes.tasks.base import Task, register_task
from dsm.recipes.training.trainer import train


@register_task
class TinyGan(Task):
    # the codec recipe's pattern: the discriminator, DDP-wrapped, sees real and detached
    # fake in two calls and steps; then judges the fake unwrapped for the generator's loss
    kind = "test-gan"
    optimizer_names = ("generator", "discriminator")

    def build_dataset(self, split):
        if split == "valid":
            return None
        return torch.randn(48, 6, generator=torch.Generator().manual_seed(1))

    def build_models(self):
        return {"generator": nn.Linear(6, 6), "discriminator": nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))}

    def optimizer_parameters(self, models):
        return {name: list(models[name].parameters()) for name in self.optimizer_names}

    def train_step(self, real, ctx):
        fake = ctx.models["generator"](real)
        d_loss = (1 - ctx.models["discriminator"](real)).relu().mean()
        d_loss = d_loss + (1 + ctx.models["discriminator"](fake.detach())).relu().mean()
        ctx.update("discriminator", d_loss)
        g_loss = -ctx.raw_models["discriminator"](fake).mean() + (fake - real).abs().mean()
        ctx.update("generator", g_loss)
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach()}


recipe_path, gan_recipe_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
result = train(load_recipe(recipe_path), out)
gan = train(load_recipe(gan_recipe_path), out + "-gan")
rank = dist.get_rank()
weights = {k: v.clone() for k, v in result.models["model"].state_dict().items()}
gan_weights = {f"{n}.{k}": v.clone() for n in ("generator", "discriminator")
               for k, v in gan.models[n].state_dict().items()}
torch.save({"weights": weights, "gan": gan_weights, "world": dist.get_world_size(),
            "backend": dist.get_backend()}, f"{out}/rank{rank}.pt")
dist.destroy_process_group()
"""

GAN_RECIPE = """
kind = "test-gan"
seed = 2
[data]
batch_size = 4
[train]
max_steps = 3
grad_accum = 2
log_every = 1
progress = false
[optim]
lr = 1e-2
[optim.discriminator]
lr = 5e-2
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_ranks_gloo_identical_weights(tmp_path: Path) -> None:
    recipe_path = tmp_path / "ddp.toml"
    recipe_path.write_text(RECIPE.format(batch_size=3))
    gan_recipe_path = tmp_path / "gan.toml"
    gan_recipe_path.write_text(GAN_RECIPE)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(worker), str(recipe_path), str(gan_recipe_path), str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in ranks)
    # both ranks hold the same weights, bit for bit
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
    # two optimizers (a GAN's generator and discriminator) stay in sync too, and trained
    assert len(ranks[0]["gan"]) == 6
    for name, tensor in ranks[0]["gan"].items():
        assert torch.equal(tensor, ranks[1]["gan"][name]), name
    gan_rows = read_metrics(Path(f"{out}-gan") / "metrics.csv")
    assert [int(r["step"]) for r in gan_rows] == [1, 2, 3]
    assert all(float(r["grad_norm/discriminator"]) > 0 for r in gan_rows)
    # rank 0 alone wrote the logs and checkpoints, with both ranks' RNG states
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 3]
    state = load_checkpoint(out / "checkpoints" / "step_00000003.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    for name, tensor in state["models"]["model"].items():
        assert torch.equal(tensor, ranks[0]["weights"][name])

    # a 2-rank checkpoint resumes in one process (with a warning that draws will differ)
    resumed = train(load_recipe(recipe_path, ["train.max_steps=4"]), out, resume=True)
    assert resumed.step == 4 and load_checkpoint(out / "checkpoints" / "step_00000004.pt")["world_size"] == 1

    # gradients really were averaged over ranks: one process with batch 2 x 3 sees the same
    # items per micro-batch and lands on the same weights (up to float summation order)
    single_recipe = tmp_path / "single.toml"
    single_recipe.write_text(RECIPE.format(batch_size=6))
    single = train(load_recipe(single_recipe), tmp_path / "single")
    initial = train(load_recipe(single_recipe, ["train.max_steps=1", "optim.lr=1e-9"]), tmp_path / "init")
    moved = 0.0
    for name, tensor in single.models["model"].state_dict().items():
        torch.testing.assert_close(ranks[0]["weights"][name], tensor, rtol=1e-4, atol=1e-5)
        moved = max(moved, (tensor - initial.models["model"].state_dict()[name]).abs().max().item())
    assert moved > 1e-3          # the comparison is not between untrained weights
    ddp_loss = [float(r["loss"]) for r in read_metrics(out / "metrics.csv")]
    single_loss = [float(r["loss"]) for r in read_metrics(tmp_path / "single" / "metrics.csv")]
    assert all(abs(a - b) < 1e-4 for a, b in zip(ddp_loss, single_loss)), (ddp_loss, single_loss)
