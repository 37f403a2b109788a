"""Small, deterministic stand-ins for tests: a tiny trained tokenizer and a toy codec.

`ToyCodecForTests` is a test double of the Codec contract (docs/interfaces): it is not
a neural codec. Each frame of `frame_size` samples becomes K codes computed from the
frame's samples by fixed, quantised projections, and `decode` makes a deterministic wave
from the codes, so encode/decode shapes, frame rate and streaming behave like a real codec
while costing nothing. Use `dsm.codecs.load_codec` for real codecs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from dsm.streams.tokenizer import TextTokenizer, train_tokenizer

TEST_WORDS = (
    "the a cat sat on mat and then it went to paris with forty two dogs bonjour le chat "
    "est noir river mountain seven hundred quickly brightly station london marie antoine "
    "yesterday tomorrow seventeen thousand elephant beautiful question answer streaming"
).split()


def train_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 400, seed: int = 0) -> TextTokenizer:
    """A small sentencepiece model trained on random sentences of `TEST_WORDS`."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(TEST_WORDS) for _ in range(12)) for _ in range(400)]
    return train_tokenizer(lines, Path(out_dir) / "tiny", vocab_size=vocab_size)


class ToyCodecForTests:
    """Test double of the Codec contract: `encode`, `decode`, `streaming`, step methods."""

    def __init__(
        self,
        sample_rate: int = 8000,
        frame_rate: float = 12.5,
        num_codebooks: int = 4,
        cardinality: int = 64,
        seed: int = 0,
    ) -> None:
        frame_size = sample_rate / frame_rate
        if frame_size != int(frame_size):
            raise ValueError("sample_rate / frame_rate must be a whole number of samples")
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.frame_size = int(frame_size)
        self.num_codebooks = num_codebooks
        self.cardinality = cardinality
        generator = torch.Generator().manual_seed(seed)
        self._projection = torch.randn(num_codebooks, self.frame_size, generator=generator)
        self._streaming_batch: int | None = None
        self.encode_calls = 0

    @property
    def fingerprint(self) -> str:
        """Identity for code caches: changes with the projection (the seed)."""
        return hashlib.sha1(self._projection.numpy().tobytes()).hexdigest()

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, N] -> codes [B, K, ceil(N / frame_size)] (the tail zero-padded)."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected wav [B, 1, N], got {tuple(wav.shape)}")
        self.encode_calls += 1
        batch, _, samples = wav.shape
        frames = -(-samples // self.frame_size)
        padded = torch.nn.functional.pad(wav[:, 0], (0, frames * self.frame_size - samples))
        windows = padded.view(batch, frames, self.frame_size)  # [B, T, F]
        features = torch.einsum("btf,kf->bkt", windows.float(), self._projection)
        codes = torch.floor(features * 7.0).long() % self.cardinality
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> wav [B, 1, T * frame_size] (a deterministic function of codes)."""
        batch, _, frames = codes.shape
        level = codes.float().mean(dim=1) / self.cardinality - 0.5  # [B, T]
        wav = level.repeat_interleave(self.frame_size, dim=-1)
        return wav.view(batch, 1, frames * self.frame_size)

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[ToyCodecForTests]:
        self._streaming_batch = batch_size
        try:
            yield self
        finally:
            self._streaming_batch = None

    def encode_step(self, frame: torch.Tensor) -> torch.Tensor:
        return self.encode(frame)

    def decode_step(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode(codes)

    def reset_slots(self, mask: torch.Tensor) -> None:
        """Stateless: nothing to reset."""

    def set_active(self, slots: torch.Tensor | None = None) -> None:
        """Stateless: every slot is always as it was."""
