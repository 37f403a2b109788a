"""Train a model from a recipe: dsm train RECIPE.toml [--resume] [--out DIR] [--set KEY=VALUE ...]

Recipes live in dsm/recipes/configs/ (toy.toml is the smallest). A recipe is a TOML file:

  kind = "toy"                  # the task: toy, codec, asr, tts, translation
  seed = 0                      # model init, data order and every random draw
  out_dir = "runs/toy"          # default output directory (--out overrides it;
                                # without either: runs/<recipe file name>)
  [data]
  train_manifest = "data/train.jsonl"   # JSONL manifest; relative to the current dir
  valid_manifest = "data/valid.jsonl"   # optional, used when train.eval_every > 0
  batch_size = 16               # per GPU/process and per micro-batch
  num_workers = 0               # DataLoader worker processes
  shuffle = true
  [train]
  max_steps = 1000              # optimizer steps; the cosine schedule ends here
  grad_accum = 1                # micro-batches per optimizer step
  log_every = 10                # a metrics.csv row (mean since the previous row)
  eval_every = 0                # validation every N steps (0: never)
  checkpoint_every = 500        # also at the end and at --stop-after
  keep_checkpoints = 3          # older checkpoints are deleted
  precision = "auto"            # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
  device = "auto"               # auto | cpu | cuda | cuda:N
  progress = true               # progress bar with loss and speed
  [optim]                       # AdamW for every optimizer of the task
  lr = 3e-4
  betas = [0.9, 0.95]
  eps = 1e-8
  weight_decay = 0.0            # matrices only; biases and norms are not decayed
  warmup_steps = 0              # linear warmup, then cosine decay ...
  min_lr_ratio = 0.0            # ... down to lr x min_lr_ratio at max_steps
  grad_clip = 1.0               # max grad norm per optimizer; 0 turns clipping off
  [optim.discriminator]         # per-optimizer overrides (codec: generator, discriminator)
  lr = 1e-4
  [task]                        # the task's own settings (see its config in the code)

Unknown keys, wrong types, missing manifests and empty corpora are reported (file and
key named) before training starts. --set overrides any key with a TOML value:
--set optim.lr=1e-3 --set train.max_steps=200 --set data.train_manifest='"x.jsonl"'
(a value that is not valid TOML is taken as a string: --set data.train_manifest=x.jsonl).

Output in DIR: checkpoints/step_XXXXXXXX.pt (atomic writes; the last N kept),
metrics.csv, and what the task exports at the end (e.g. a codec directory).
--resume continues from the newest checkpoint in DIR with the model, optimizers, lr
schedule, random states and data position restored: the run goes on exactly as if it had
never stopped. Without --resume, a DIR that already holds checkpoints is an error.

Many GPUs or machines: run the same command under torchrun, e.g.
  torchrun --nproc_per_node 4 -m dsm.cli train RECIPE.toml
(gloo on CPU, nccl on GPU; rank 0 writes checkpoints and logs; each process reads its
own share of every batch).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE.toml", help="the recipe file")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue from the newest checkpoint in the output directory "
        "(or from the given checkpoint file)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (overrides out_dir)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set optim.lr=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--stop-after", type=int, metavar="N",
        help="stop after N more steps with a checkpoint (the schedule still runs to "
        "train.max_steps); continue later with --resume",
    )


def main(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from dsm.recipes.config import RecipeError, load_recipe
    from dsm.recipes.data.manifest import ManifestError
    from dsm.recipes.training.trainer import train

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        result = train(recipe, args.out, resume=args.resume, stop_after=args.stop_after)
    except (RecipeError, ManifestError) as error:
        print(f"dsm train: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # a diverged loss: the last checkpoint is intact
        print(f"dsm train: training diverged: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        print(f"dsm train: {result.step} steps done; outputs in {result.out_dir}", file=sys.stderr)
    return 0
