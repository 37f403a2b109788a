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


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xor-shift-multiply) on int64 tensors holding 32-bit values.

    The multipliers are odd and below 2**31, so products of 32-bit values stay below 2**63:
    plain int64 arithmetic, no overflow, the same result on every device.
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK32
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
        self._index_cache: dict[int, torch.Tensor] = {}
        self._stream_cache: dict[tuple[int, int], torch.Tensor] = {}
        for slot in range(batch_size):
            self.seeds[slot] = default_slot_seed(seed, slot)
        self._seed_hashes = hash32(self.seeds)  # [B], refreshed in place by reseed

    def reseed(self, slots: torch.Tensor, seeds: torch.Tensor) -> None:
        """Give the slots where `slots` (bool [B]) is set the seeds `seeds` ([B]) and restart them."""
        slots = slots.to(self.seeds.device)
        self.seeds.copy_(torch.where(slots, seeds.to(self.seeds) & _MASK32, self.seeds))
        self._seed_hashes.copy_(hash32(self.seeds))
        self.counters.masked_fill_(slots, 0)

    def advance(self, active: torch.Tensor | None = None) -> None:
        """Move every slot (or the `active` ones, bool `[B]`) to its next step (call once
        per model step)."""
        if active is None:
            self.counters.add_(1)
        else:
            self.counters.add_(active.long())

    def _step_keys(self, stream_constants: torch.Tensor) -> torch.Tensor:
        """[B, S] keys of this step for streams given by their constants [S]."""
        step = ((self.counters * _GOLDEN) & _MASK32)[:, None]  # [B, 1]
        return hash32(self._seed_hashes[:, None] ^ (step + stream_constants[None, :]))

    def _stream_constants(self, first: int, count: int) -> torch.Tensor:
        """[count] constants of streams first..first+count-1 (cached)."""
        cached = self._stream_cache.get((first, count))
        if cached is None:
            ids = torch.arange(first, first + count, device=self.seeds.device, dtype=torch.long)
            cached = hash32(ids * _GOLDEN + 0x632BE5AB)
            self._stream_cache[(first, count)] = cached
        return cached

    def _index_hashes(self, num: int) -> torch.Tensor:
        cached = self._index_cache.get(num)
        if cached is None:
            index = torch.arange(num, device=self.seeds.device, dtype=torch.long)
            cached = hash32(index + 0x5BD1E995)
            self._index_cache[num] = cached
        return cached

    def uniform_block(self, streams: int, num: int) -> torch.Tensor:
        """[B, streams, num] floats in (0, 1): this step's draws for streams 0..streams-1."""
        keys = self._step_keys(self._stream_constants(0, streams))  # [B, S]
        bits = hash32(keys[:, :, None] ^ self._index_hashes(num)[None, None, :])
        return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def uniform(self, stream: int, num: int) -> torch.Tensor:
        """[B, num] floats in (0, 1) for this step; `stream` separates draws within a step."""
        keys = self._step_keys(self._stream_constants(stream, 1))  # [B, 1]
        bits = hash32(keys ^ self._index_hashes(num)[None, :])
        return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def gumbel(self, stream: int, num: int) -> torch.Tensor:
        """[B, num] standard Gumbel noise."""
        return -torch.log(-torch.log(self.uniform(stream, num)))

    def gumbel_block(self, streams: int, num: int) -> torch.Tensor:
        """[B, streams, num] standard Gumbel noise; `[:, s]` equals `gumbel(s, num)`."""
        return -torch.log(-torch.log(self.uniform_block(streams, num)))


def candidates_needed(params: SamplingParams, vocab: int) -> int:
    """How many noise values `sample_tokens` draws for these params and vocabulary size."""
    if params.greedy:
        return 0
    if 0 < params.top_k < vocab:
        return params.top_k
    return vocab


def default_slot_seed(seed: int, slot: int) -> int:
    """The seed slot `slot` starts from when the streamer was made with `seed`."""
    return (seed * 1_000_003 + slot * 7919 + 12345) & _MASK32


def sample_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    rng: SlotRandom | None = None,
    stream: int = 0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row of `logits` [B, V] -> [B] (long), per `params`.

    Greedy when `params.temperature == 0` (then `rng` may be None). top-k keeps the k best
    tokens, top-p then keeps the smallest prefix of them whose probability reaches p.
    Noise comes from `rng.gumbel(stream, n)`, or from `noise` ([B, >= n] Gumbel values, e.g. a
    slice of `SlotRandom.gumbel_block` drawn once per step).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    if params.greedy:
        return logits.argmax(dim=-1)
    if rng is None and noise is None:
        raise ValueError("sampling with temperature > 0 needs a SlotRandom (or noise)")

    def draw(num: int) -> torch.Tensor:
        if noise is not None:
            return noise[:, :num]
        assert rng is not None
        return rng.gumbel(stream, num)

    inverse_temperature = 1.0 / params.temperature
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        # temperature keeps the order: pick the k best first, scale only them
        candidates, indices = logits.topk(params.top_k, dim=-1)  # sorted, descending
        candidates = candidates.float() * inverse_temperature
    elif params.top_p > 0.0:
        candidates, indices = (logits.float() * inverse_temperature).sort(dim=-1, descending=True)
    else:
        return (logits.float() * inverse_temperature + draw(vocab)).argmax(dim=-1)
    if params.top_p > 0.0:
        probs = candidates.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the better candidates
        candidates = candidates.masked_fill(before > params.top_p, float("-inf"))
    choice = (candidates + draw(candidates.shape[-1])).argmax(dim=-1, keepdim=True)  # [B, 1]
    return indices.gather(-1, choice)[:, 0]


class SlotSampling:
    """Per-slot temperature and top-k for one kind of token (text or audio), in static
    buffers `[B]` so a captured step reads them; a served stream's own choice (Kyutai's
    `temperature` / `top_k` query parameters) or the streamer's `default`.

    `max_top_k` is the largest top-k a slot may ask for; the noise drawn each step is as
    wide as the default or that, whichever is wider. A slot left at the default samples
    exactly as `sample_tokens(logits, default)` does with the same noise.
    """

    def __init__(self, default: SamplingParams, vocab: int, max_top_k: int, batch_size: int,
                 device: torch.device | str) -> None:
        self.default = default
        self.vocab = vocab
        self.width = max(candidates_needed(default, vocab), min(max_top_k, vocab))
        self.greedy = torch.empty(batch_size, dtype=torch.bool, device=device)
        self.inverse_temperature = torch.empty(batch_size, dtype=torch.float32, device=device)
        self.top_k = torch.empty(batch_size, dtype=torch.long, device=device)
        for slot in range(batch_size):
            self.set(slot, None, None)

    def check(self, temperature: float | None, top_k: int | None) -> None:
        """Raises ValueError when a slot may not ask for these values."""
        if temperature is not None and temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        sampled = temperature if temperature is not None else self.default.temperature
        if sampled > 0 and self.width == 0:
            raise ValueError("this server decodes greedily: it takes no temperature above 0 "
                             "(dsm serve --stream-top-k K lets streams sample)")
        if top_k is not None and self.width < self.vocab and top_k > self.width:
            raise ValueError(f"top_k {top_k} is above this server's limit {self.width} "
                             "(dsm serve --stream-top-k)")

    def set(self, slot: int, temperature: float | None, top_k: int | None) -> None:
        """Slot `slot` samples at `temperature` from its `top_k` best tokens (None: the
        default's value; top_k 0: all `width` candidates)."""
        self.check(temperature, top_k)
        temperature = self.default.temperature if temperature is None else temperature
        top_k = self.default.top_k if top_k is None else top_k
        self.greedy[slot] = temperature == 0.0
        self.inverse_temperature[slot] = 0.0 if temperature == 0.0 else 1.0 / temperature
        limit = self.width if self.width < self.vocab else self.vocab
        self.top_k[slot] = limit if top_k <= 0 else min(top_k, limit)

    def sample(self, logits: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """`logits` [B, V] -> tokens [B]; `noise` [B, >= width] Gumbel values (one step's)."""
        best = logits.argmax(dim=-1)
        if self.width == 0 or noise is None:
            return best
        scale = self.inverse_temperature[:, None]
        top_p = self.default.top_p
        if self.width >= self.vocab and top_p == 0.0:
            # all tokens are candidates, noise by token id (as `sample_tokens` does); a slot's
            # top-k keeps the tokens at least as likely as its k-th best
            kth = logits.sort(dim=-1, descending=True).values.gather(-1, self.top_k[:, None] - 1)
            scaled = (logits.float() * scale).masked_fill(logits < kth, float("-inf"))
            sampled = (scaled + noise[:, : self.vocab]).argmax(dim=-1)
        else:
            if self.width >= self.vocab:
                candidates, indices = (logits.float() * scale).sort(dim=-1, descending=True)
            else:
                candidates, indices = logits.topk(self.width, dim=-1)  # sorted, descending
                candidates = candidates.float() * scale
            rank = torch.arange(candidates.shape[-1], device=logits.device)
            candidates = candidates.masked_fill(rank[None, :] >= self.top_k[:, None],
                                                float("-inf"))
            if top_p > 0.0:
                probs = candidates.softmax(dim=-1)
                before = probs.cumsum(dim=-1) - probs
                candidates = candidates.masked_fill(before > top_p, float("-inf"))
            choice = (candidates + noise[:, : candidates.shape[-1]]).argmax(dim=-1, keepdim=True)
            sampled = indices.gather(-1, choice)[:, 0]
        return torch.where(self.greedy, best, sampled)
