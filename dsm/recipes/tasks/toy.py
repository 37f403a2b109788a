"""The `toy` task: a tiny GRU language model over synthetic arithmetic sequences (or the
bytes of a manifest's `text` fields). It exercises the trainer end to end without the real
models; tests and `configs/toy.toml` use it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from dsm.recipes.config import RecipeError
from dsm.recipes.data.manifest import jsonl_objects
from dsm.recipes.tasks.base import Metrics, Split, Task, register_task


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
