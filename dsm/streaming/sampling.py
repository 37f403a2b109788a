"""Token sampling for batched streaming: temperature, top-k, top-p, without host syncs.

Randomness comes from `SlotRandom`, a counter-based generator: the noise a slot draws at a
step is a hash of (the slot's seed, the slot's step counter, the stream, the candidate
index). Nothing is shared between slots, so a stream samples the same tokens whether it
runs alone or next to others that join and leave, and the whole computation is plain
tensor arithmetic that a CUDA graph can capture (no `torch.Generator`, no `.item()`).

Sampling draws with the Gumbel-max trick: `argmax(logits / T + G)` with `G` Gumbel noise
picks token `i` with probability `softmax(logits / T)[i]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


@dataclass(frozen=True)
class SamplingParams:
    """How one kind of token (text or audio) is drawn. temperature 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1] (0: off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2**32 for int64 x in [0, 2**32), without int64 overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xor-shift-multiply) on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


class SlotRandom:
    """Independent random streams, one per batch slot, as preallocated device tensors.

    `seeds[B]` and `counters[B]` are updated in place (`advance`, `reseed`), so a captured
    CUDA graph keeps reading the current values.
    """

    def __init__(self, batch_size: int, device: torch.device | str = "cpu", seed: int = 0):
        self.seeds = torch.empty(batch_size, dtype=torch.long, device=device)
        self.counters = torch.zeros(batch_size, dtype=torch.long, device=device)
        for slot in range(batch_size):
            self.seeds[slot] = default_slot_seed(seed, slot)

    def reseed(self, slots: torch.Tensor, seeds: torch.Tensor) -> None:
        """Give the slots where `slots` (bool [B]) is set the seeds `seeds` ([B]) and restart them."""
        slots = slots.to(self.seeds.device)
        self.seeds.copy_(torch.where(slots, seeds.to(self.seeds) & _MASK32, self.seeds))
        self.counters.masked_fill_(slots, 0)

    def advance(self) -> None:
        """Move every slot to its next step (call once per model step)."""
        self.counters.add_(1)

    def uniform(self, stream: int, num: int) -> torch.Tensor:
        """[B, num] floats in (0, 1) for this step; `stream` separates draws within a step."""
        key = hash32(hash32(self.seeds) ^ hash32(self.counters * 2 + 1))
        key = hash32(key ^ ((stream * _GOLDEN + 0x632BE5AB) & _MASK32))  # [B]
        index = torch.arange(num, device=key.device, dtype=torch.long)
        bits = hash32(key[:, None] ^ hash32(index + 0x5BD1E995)[None, :])  # [B, num]
        return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def gumbel(self, stream: int, num: int) -> torch.Tensor:
        """[B, num] standard Gumbel noise."""
        return -torch.log(-torch.log(self.uniform(stream, num)))


def default_slot_seed(seed: int, slot: int) -> int:
    """The seed slot `slot` starts from when the streamer was made with `seed`."""
    return (seed * 1_000_003 + slot * 7919 + 12345) & _MASK32


def sample_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    rng: SlotRandom | None = None,
    stream: int = 0,
) -> torch.Tensor:
    """Draw one token per row of `logits` [B, V] -> [B] (long), per `params`.

    Greedy when `params.temperature == 0` (then `rng` may be None). top-k keeps the k best
    tokens, top-p then keeps the smallest prefix of them whose probability reaches p.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    if params.greedy:
        return logits.argmax(dim=-1)
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a SlotRandom")
    scaled = logits.float() / params.temperature  # [B, V]
    vocab = scaled.shape[-1]
    if 0 < params.top_k < vocab:
        candidates, indices = scaled.topk(params.top_k, dim=-1)  # sorted, descending
    elif params.top_p > 0.0:
        candidates, indices = scaled.sort(dim=-1, descending=True)
    else:
        noise = rng.gumbel(stream, vocab)
        return (scaled + noise).argmax(dim=-1)
    if params.top_p > 0.0:
        probs = candidates.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the better candidates
        candidates = candidates.masked_fill(before > params.top_p, float("-inf"))
    noise = rng.gumbel(stream, candidates.shape[-1])
    choice = (candidates + noise).argmax(dim=-1, keepdim=True)  # [B, 1]
    return indices.gather(-1, choice)[:, 0]
