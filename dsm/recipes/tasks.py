"""What a recipe trains: the task interface the trainer drives, and the registry by `kind`.

A task owns everything specific to one kind of model (codec, ASR, TTS, ...); the trainer
(dsm.recipes.trainer) owns everything generic (optimizers, schedules, accumulation,
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

The `toy` task below is a toy: a tiny GRU language model over synthetic arithmetic
sequences (or the bytes of a manifest's `text` fields). It exists to exercise the trainer
end to end without the real models, and is what tests and `configs/toy.toml` use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from dsm.models.hub import ModelRefError, is_repo_ref, resolve_model_ref
from dsm.recipes.config import Recipe, RecipeError
from dsm.recipes.manifest import jsonl_objects

Split = Literal["train", "valid"]
Metrics = dict[str, "Tensor | float"]


class StepContext(Protocol):
    """What the trainer hands to `Task.train_step` (implemented in dsm.recipes.trainer)."""

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


def load_initial_lm_weights(lm: nn.Module, source: str, recipe_source: str, model_name: str,
                            kind: str) -> None:
    """Load `task.init_from` into `lm`: a model directory (`load_lm`), a Hugging Face repo
    id resolved to one (`dsm.models.hub`, e.g. "kyutai/stt-1b-en_fr@main") or a `dsm train`
    checkpoint whose models hold `model_name` (a run of the same kind). Every weight must
    fit (a missing, extra or differently shaped tensor is a RecipeError naming them), with
    two exceptions, both of which start out computing exactly what the source did:
    - a model that reads more audio codebooks than the source gets zero input embeddings
      for the extra ones, and training teaches it to use the finer codes;
    - a model whose temporal transformer has more layers than the source's (a multiple of
      them) gets each source layer followed by copies of it whose residual outputs are
      zero (`_with_new_layers`): a deeper model that training then puts to use."""
    path = Path(source)
    where = f"{recipe_source}: key 'task.init_from'"
    if not path.exists() and is_repo_ref(source):
        try:
            path = resolve_model_ref(source)
        except ModelRefError as error:
            raise RecipeError(f"{where}: {error}") from None
    if path.is_dir():
        from dsm.models import load_lm

        try:
            weights = load_lm(path).state_dict()
        except (ValueError, OSError) as error:
            raise RecipeError(f"{where}: {error}") from None
    elif not path.is_file():
        raise RecipeError(f"{where}: {path} is neither a model directory nor a checkpoint (nor "
                          "a Hugging Face repo id, owner/name[@REVISION])")
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        models = state.get("models") if isinstance(state, dict) else None
        if not isinstance(models, dict) or model_name not in models:
            raise RecipeError(f"{where}: {path} is not a dsm train checkpoint of a {kind} run")
        weights = models[model_name]
    weights = _with_new_input_embeddings(lm, _with_new_layers(lm, dict(weights)))
    try:
        lm.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise RecipeError(f"{where}: its weights do not fit this recipe's model: {error}"
                          ) from None


def _with_new_input_embeddings(lm: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """`weights` plus zero tables for the audio input embeddings (`emb.K.weight`) that `lm`
    has beyond the source's `emb.0` .. `emb.{N-1}`; unchanged when anything else differs."""
    target = lm.state_dict()
    extra = [key for key in target if key not in weights]
    source_rows = sum(1 for key in weights if key.startswith("emb.") and key.endswith(".weight"))
    grown = [f"emb.{k}.weight" for k in range(source_rows, source_rows + len(extra))]
    if not extra or sorted(extra) != sorted(grown) or any(key not in target for key in weights):
        return weights
    return {**weights, **{key: torch.zeros_like(target[key]) for key in extra}}


_LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.(.+)")
# The last projection of each residual branch (attention, plain or gated feed-forward):
# zero, the layer adds nothing to the residual stream.
_RESIDUAL_OUTPUT = re.compile(r"(self_attn\.out_proj|linear2|gating(\.\d+)?\.linear_out)"
                              r"\.(weight|bias)$")


def _with_new_layers(lm: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """`weights` with the temporal transformer's N layers spread over `lm`'s M layers when
    M is a multiple of N: layer j is source layer j * N // M, and every copy after the
    first has zero residual outputs, so it passes its input through unchanged. Its other
    weights are the source layer's, a better start than noise once the outputs grow.
    Unchanged when the layer counts are equal or do not divide."""
    def layer_count(keys: Iterable[str]) -> int:
        found = [int(match.group(1)) for key in keys if (match := _LAYER_KEY.fullmatch(key))]
        return 1 + max(found) if found else 0

    source_layers, target_layers = layer_count(weights), layer_count(lm.state_dict())
    if not source_layers or target_layers <= source_layers or target_layers % source_layers:
        return weights
    per_source = target_layers // source_layers
    grown = {key: value for key, value in weights.items() if not _LAYER_KEY.fullmatch(key)}
    for key, value in weights.items():
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            continue
        layer, name = int(match.group(1)), match.group(2)
        for copy in range(per_source):
            silent = copy > 0 and _RESIDUAL_OUTPUT.search(name) is not None
            grown[f"transformer.layers.{layer * per_source + copy}.{name}"] = (
                torch.zeros_like(value) if silent else value.clone())
    return grown


# ------------------------------------------------------------------------------ registry

TASKS: dict[str, type[Task]] = {}

# Tasks that live in their own modules, imported on first use (they register themselves).
TASK_MODULES: dict[str, str] = {
    "codec": "dsm.recipes.codec_task",
    "asr": "dsm.recipes.asr_task",
    "tts": "dsm.recipes.tts_task",
    "translation": "dsm.recipes.translation_task",
}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` trainable by recipes with `kind = cls.kind`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no `kind`")
    TASKS[cls.kind] = cls
    return cls


def get_task_class(kind: str, source: str = "recipe") -> type[Task]:
    """The task class for a recipe kind, importing its module when needed."""
    if kind not in TASKS and kind in TASK_MODULES:
        module_name = TASK_MODULES[kind]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                raise RecipeError(
                    f"{source}: recipe kind '{kind}' needs {module_name}, which is not part "
                    "of this build"
                ) from None
            raise
    if kind not in TASKS:
        known = sorted(set(TASKS) | set(TASK_MODULES))
        raise RecipeError(f"{source}: key 'kind': unknown recipe kind '{kind}' (known: {', '.join(known)})")
    return TASKS[kind]


# ------------------------------------------------------------------------------ toy task

@dataclass
class ToyConfig:
    """A toy next-token model. Without a manifest it learns synthetic sequences
    x[t] = (start + stride * t) mod vocab_size; with data.train_manifest it reads the
    UTF-8 bytes of each row's `text` (vocabulary 256) cut into seq_len windows."""

    vocab_size: int = 16
    seq_len: int = 24
    num_sequences: int = 256         # synthetic corpus size
    hidden: int = 32
    dropout: float = 0.0             # on the GRU's input: makes training draw random numbers

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.seq_len < 2 or self.num_sequences < 0 or self.hidden < 1:
            raise ValueError("vocab_size and seq_len must be >= 2, num_sequences >= 0, hidden >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


class ToySequences(Dataset):
    """Token sequences `[seq_len]` (long) held in memory."""

    def __init__(self, sequences: Tensor, source: str) -> None:
        self.sequences = sequences      # [N, T]
        self.source = source

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.sequences[index]


def synthetic_sequences(count: int, seq_len: int, vocab_size: int, seed: int) -> Tensor:
    """`[count, seq_len]` arithmetic sequences modulo vocab_size, from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab_size, (count, 1), generator=generator)
    stride = torch.randint(1, 4, (count, 1), generator=generator)
    return (start + stride * torch.arange(seq_len)) % vocab_size


def manifest_byte_windows(path: str, seq_len: int) -> Tensor:
    """The `text` of every JSONL row as UTF-8 bytes, rows joined by newlines, cut into
    `[N, seq_len]` windows (N may be 0: an empty corpus)."""
    data = bytearray()
    for number, row in jsonl_objects(path, RecipeError):
        text = row.get("text")
        if not isinstance(text, str):
            raise RecipeError(f"{path}:{number}: row has no string 'text'")
        data += text.encode("utf-8") + b"\n"
    count = len(data) // seq_len
    flat = torch.tensor(list(data[: count * seq_len]), dtype=torch.long)
    return flat.view(count, seq_len)


class ToyLM(nn.Module):
    """Embedding -> dropout -> one-layer GRU -> logits. tokens [B, T] -> logits [B, T, V]."""

    def __init__(self, vocab_size: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        hidden, _ = self.rnn(self.dropout(self.embed(tokens)))
        return self.head(hidden)


@register_task
class ToyTask(Task):
    """Toy: a tiny sequence model on synthetic data, for testing the trainer."""

    kind = "toy"
    config_class = ToyConfig

    def _vocab_size(self) -> int:
        return 256 if self.recipe.data.train_manifest else self.config.vocab_size

    def build_dataset(self, split: Split) -> Dataset | None:
        config: ToyConfig = self.config
        manifest = self.recipe.data.train_manifest if split == "train" else self.recipe.data.valid_manifest
        if manifest is not None:
            return ToySequences(manifest_byte_windows(manifest, config.seq_len), manifest)
        if split == "valid":
            return None
        sequences = synthetic_sequences(config.num_sequences, config.seq_len, config.vocab_size, self.recipe.seed)
        return ToySequences(sequences, "synthetic sequences (task.num_sequences)")

    def build_models(self) -> dict[str, nn.Module]:
        return {"model": ToyLM(self._vocab_size(), self.config.hidden, self.config.dropout)}

    def compute_loss(self, models: Mapping[str, nn.Module], batch: Tensor) -> tuple[Tensor, Metrics]:
        tokens = batch                                        # [B, T]
        logits = models["model"](tokens[:, :-1])              # [B, T-1, V]
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        return loss, {}


def parameter_count(modules: Iterable[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
