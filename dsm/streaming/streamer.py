"""`LMStreamer`: batched frame-by-frame generation with per-stream delays.

One call to `step` advances every batch slot by one frame (80 ms at 12.5 Hz): the
caller's input audio tokens go in, the text token and (when the model has audio heads)
the audio tokens of that frame come out, re-aligned so that all streams of a returned
frame belong to the same time step.

Delay bookkeeping (the facts of `moshi.models.lm.LMGen.step`, which this matches token for
token with greedy sampling):
- a ring `cache[B, K, T]` (T >= max_delay + 2, a power of two) holds tokens by sequence position; the step with
  offset `o` (per slot) reads position `o` as the model input;
- input rows (the caller's audio) are written at `o + delay[k]`; generated rows
  (text, audio 1..dep_q) sampled at offset `o` are written at `o + 1`;
- a row whose position is not past its delay (`o <= delay[k]`) reads the initial token
  (`text_card` for text, `card` for audio), so the first input frame is only ever read as
  the initial token;
- the returned frame at offset `o` (after the step) is the cache at
  `o - max_delay + delay[k]` for the generated rows: `step` returns None for the first
  `max_delay` steps after the streamer is made or fully reset; a slot reset on its own
  returns rows of -2 (`UNGENERATED`) until its own delays have filled.

Slots are independent: each has its own offset, its own KV cache rows in the model's
streaming state, and its own random stream (`SlotRandom`), so a stream's tokens do not
depend on its neighbours. `step(..., active=mask)` advances only the slots in `mask`: the
others keep their offset, KV cache, token cache and random stream exactly as they were
(what the step returns for them is to be ignored), so a stream that has no input yet
waits instead of being fed something, whatever its neighbours do. All state is
preallocated; the step path has no host syncs, and on a GPU it is captured as CUDA graphs
(see `cuda_graph.GraphedStep`; the active mask is one of its static buffers).

Classifier-free guidance (`cfg_coef != 1`) runs the batch twice. For a model without
conditioners the second half sees the text stream replaced by -1 (a zero embedding) past
its initial token, and audio logits become `null + (cond - null) * cfg_coef` (text logits
stay the conditional ones), as moshi's LMGen with `cfg_is_no_text=True`. For a conditioned
model (Hibiki) both halves read the same tokens and differ only by their condition (the
slot's own and its "null" one, e.g. "very_good" and "very_bad"), and text and audio logits
are both guided, as moshi's LMGen given doubled condition tensors.

`cfg_is_no_text` chooses between the two explicitly (Kyutai's TTS guides a conditioned
model the first way: nulled conditions and no text in the second half, text unguided).

A conditioned model's per-slot conditions live in a static buffer (`set_condition`), set
when a stream attaches and read by every step; a cross-attending model's per-slot source
is turned into keys and values there, once, and held by the model's streaming state.

Kyutai's TTS (`dsm.streaming.kyutai_tts`) adds two things. `dep_q` may be below the
model's: only the first `dep_q` codebooks are generated, and the others become input rows
the caller fills (with -1, "no token"), as moshi's TTSModel does for `n_q`. And each slot
may have an audio delay (`set_audio_delay`): codebook k of the step at offset o is forced
to -1 while `o < delays[1 + k] + audio_delay` (the audio lags the text by that much).
While every stepping slot is in that window for all its codebooks the depformer does not
run at all (host-side offsets decide; a separate captured step), as Kyutai's server does.
A slot may also have an audio prefix (`set_audio_prefix`, the voice of Kyutai's
tts-0.75b-en-public: audio codes spoken first): codebook k at offset o is forced to
`prefix[k, o - audio_delay - delays[1 + k]]` while that index is inside the prefix, and
with guidance the null half reads "no token" until the prefix has gone by (moshi's
`cfg_is_masked_until`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch

from dsm.streaming.cuda_graph import GraphedStep
from dsm.streaming.sampling import (
    SamplingParams,
    SlotRandom,
    SlotSampling,
    candidates_needed,
    default_slot_seed,
    sample_tokens,
)

UNGENERATED = -2
"""Token value of a returned row whose slot has not filled its delays yet."""

TextHook = Callable[[torch.Tensor], torch.Tensor]
"""Receives the sampled text tokens [B] and returns the text tokens to use [B] (TTS)."""


# A per-slot step limit below any offset: the audio delay or prefix mask it bounds never applies.
NEVER = -(1 << 40)


class LMStreamer:
    """Batched streaming generation over a `MultistreamLM` (see the module docstring).

    Sampling keywords (moshi's names): `temp`, `top_k`, `top_p` for audio tokens,
    `temp_text`, `top_k_text`, `top_p_text` for text; temperature 0 is greedy.
    `max_slot_top_k` > 0 lets each slot choose its own temperature and top-k (up to that),
    both kinds of tokens alike (`set_slot_sampling`), as Kyutai's TTS server lets a stream.
    """

    def __init__(
        self,
        lm: Any,
        batch_size: int,
        *,
        temp: float = 0.8,
        top_k: int = 250,
        top_p: float = 0.0,
        temp_text: float = 0.7,
        top_k_text: int = 25,
        top_p_text: float = 0.0,
        cfg_coef: float = 1.0,
        seed: int = 0,
        cuda_graph: bool = True,
        max_slot_top_k: int = 0,
        dep_q: int | None = None,
        cfg_is_no_text: bool | None = None,
        max_prefix: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        config = lm.config
        self.lm = lm
        self.batch_size = batch_size
        if dep_q is not None and not 0 < dep_q <= config.dep_q:
            raise ValueError(f"dep_q={dep_q}: the model generates 1..{config.dep_q} codebooks")
        self.dep_q: int = config.dep_q if dep_q is None else dep_q
        self.n_q: int = config.n_q
        self.card: int = config.card
        self.text_card: int = config.text_card
        self.num_codebooks: int = 1 + config.n_q
        self.num_inputs: int = self.num_codebooks - 1 - self.dep_q
        delays = list(config.delays)
        if len(delays) != self.num_codebooks:
            raise ValueError(f"config.delays has {len(delays)} entries, expected {self.num_codebooks}")
        self.max_delay = max(delays)
        self.text_params = SamplingParams(temp_text, top_k_text, top_p_text)
        self.audio_params = SamplingParams(temp, top_k, top_p)
        self.cfg_coef = float(cfg_coef)
        self.use_cfg = self.cfg_coef != 1.0
        self.conditioned = bool(getattr(lm, "is_conditioned", False))
        # guidance without the text (and, for a conditioned model, with its null condition)
        self.cfg_is_no_text = (not self.conditioned) if cfg_is_no_text is None else cfg_is_no_text
        self.has_depformer = self.dep_q > 0 and getattr(lm, "depformer", None) is not None
        self.num_extra_heads = int(getattr(config, "extra_heads_num_heads", 0) or 0)
        self.extra_heads_dim = int(getattr(config, "extra_heads_dim", 0) or 0)

        param = next(lm.parameters())
        self.device = param.device
        device = self.device
        B = batch_size
        # Ring length: at least max_delay + 2 (as LMGen); a power of two so `%` is a mask.
        self._cache_len = 1 << (self.max_delay + 1).bit_length()
        self._ring_mask = self._cache_len - 1
        self.delays = torch.tensor(delays, dtype=torch.long, device=device)  # [K]
        self.cache = torch.full(
            (B, self.num_codebooks, self._cache_len), UNGENERATED, dtype=torch.long, device=device
        )
        initial = [self.text_card] + [self.card] * config.n_q
        self.initial = torch.tensor(initial, dtype=torch.long, device=device)[None, :, None]
        self.offsets = torch.zeros(B, dtype=torch.long, device=device)
        self.active = torch.ones(B, dtype=torch.bool, device=device)  # slots this step advances
        self.rng = SlotRandom(B, device, seed)
        self._seed = seed
        # Static buffers the step reads and writes (CUDA graphs keep pointing at them).
        self.input_buf = torch.zeros(B, max(self.num_inputs, 0), 1, dtype=torch.long, device=device)
        self.text_buf = torch.zeros(B, dtype=torch.long, device=device)
        self.out_buf = torch.full(
            (B, 1 + self.dep_q, 1), UNGENERATED, dtype=torch.long, device=device
        )
        self.extra_probs = torch.zeros(
            B, self.num_extra_heads, self.extra_heads_dim, dtype=torch.float32, device=device
        )
        self._hidden: torch.Tensor | None = None
        # Gumbel noise of one step for every stream (text, audio 1..dep_q), drawn at once.
        self._noise_streams = 1 + self.dep_q
        text_vocab = getattr(config, "text_out_card", config.text_card)
        self._noise_width = max(
            candidates_needed(self.text_params, text_vocab),
            candidates_needed(self.audio_params, config.card) if self.dep_q else 0,
        )
        self.slot_sampling: tuple[SlotSampling, SlotSampling] | None = None  # text, audio
        if max_slot_top_k > 0:
            self.slot_sampling = (
                SlotSampling(self.text_params, text_vocab, max_slot_top_k, B, device),
                SlotSampling(self.audio_params, config.card, max_slot_top_k, B, device),
            )
            widths = [self.slot_sampling[0].width] + [self.slot_sampling[1].width] * (
                1 if self.dep_q else 0)
            self._noise_width = max([self._noise_width, *widths])
        self._noise: torch.Tensor | None = None
        self._steps_since_reset = 0
        self._active_host = torch.ones(B, dtype=torch.bool)  # host copy of `active`

        # Conditioned models: each slot's "sum" condition, then (with CFG) its null one.
        self.condition: torch.Tensor | None = None
        self.cross_attention = bool(getattr(config, "cross_attention", False))
        rows = 2 * B if self.use_cfg else B
        if self.conditioned and getattr(config, "sum_conditions", True):
            self.condition = torch.zeros(rows, 1, config.dim, dtype=torch.float32, device=device)
        # Per-slot audio delay (Kyutai's TTS); far below any offset: nothing forced.
        self.audio_delay = torch.full((B,), NEVER, dtype=torch.long, device=device)
        # Host copies of the offsets and audio delays: whether the depformer can be skipped.
        self._offsets_host = np.zeros(B, dtype=np.int64)
        self._audio_delay_host = np.full(B, NEVER, dtype=np.int64)
        self._first_audio_delay = min(delays[1 : 1 + self.dep_q]) if self.dep_q else 0
        # Per-slot audio prefixes [B, dep_q, max_prefix] and lengths; the null half of
        # guidance reads -1 while a slot's offset is at most delays[k] + `cfg_masked_until`.
        self.max_prefix = int(max_prefix)
        self.audio_prefix = torch.full((B, self.dep_q, max(self.max_prefix, 1)), UNGENERATED,
                                       dtype=torch.long, device=device)
        self.prefix_len = torch.zeros(B, dtype=torch.long, device=device)
        self.cfg_masked_until = torch.full((B,), NEVER, dtype=torch.long, device=device)

        self._exit = ExitStack()
        lm_batch = 2 * B if self.use_cfg else B
        self._exit.enter_context(lm.streaming(lm_batch))
        on_gpu = device.type == "cuda"
        self._phase_text = GraphedStep(self._run_temporal, enabled=cuda_graph and on_gpu)
        self._phase_audio = GraphedStep(self._run_audio, enabled=cuda_graph and on_gpu)
        self._phase_no_audio = GraphedStep(lambda: self._run_audio(skip_depformer=True),
                                           enabled=cuda_graph and on_gpu)

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the model's streaming mode (the streamer cannot step after this)."""
        self._exit.close()

    def __enter__(self) -> LMStreamer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def graphs_captured(self) -> bool:
        return self._phase_text.captured and self._phase_audio.captured

    # --- slots ----------------------------------------------------------------------------
    @torch.inference_mode()
    def reset_slots(self, slots: torch.Tensor | None = None, seeds: torch.Tensor | None = None) -> None:
        """Restart the chosen slots (bool [B]; None: all) as fresh streams; the others go on.

        `seeds` ([B] ints) gives the restarted slots their random streams; by default each
        gets the seed it had when the streamer was made.
        """
        B = self.batch_size
        if slots is None:
            slots = torch.ones(B, dtype=torch.bool)
        slots = torch.as_tensor(slots, dtype=torch.bool)
        if slots.shape != (B,):
            raise ValueError(f"slots must be a bool tensor of shape [{B}], got {tuple(slots.shape)}")
        if seeds is None:
            seeds = torch.tensor([default_slot_seed(self._seed, b) for b in range(B)])
        seeds = torch.as_tensor(seeds, dtype=torch.long)
        if seeds.shape != (B,):
            raise ValueError(f"seeds must have shape [{B}], got {tuple(seeds.shape)}")
        slots_dev = slots.to(self.device)
        self.offsets.masked_fill_(slots_dev, 0)
        self._offsets_host[slots.numpy()] = 0
        self.cache.masked_fill_(slots_dev[:, None, None], UNGENERATED)
        self.rng.reseed(slots_dev, seeds.to(self.device))
        self.lm.reset_slots(slots.repeat(2) if self.use_cfg else slots)
        if bool(slots.all()):
            self._steps_since_reset = 0

    @torch.inference_mode()
    def set_condition(self, slot: int, condition: torch.Tensor | None,
                      null_condition: torch.Tensor | None = None, *,
                      cross: torch.Tensor | None = None,
                      null_cross: torch.Tensor | None = None) -> None:
        """Give `slot` its condition `[1, 1, dim]` (`lm.condition_sum`) and, with CFG, the
        condition its guidance pushes away from (required then). A cross-attending model
        also takes the slot's source `cross` `[1, S, dim]` (`lm.condition_cross`), and its
        null one with CFG. Call after `reset_slots` of that slot (a reset clears it)."""
        if not self.conditioned:
            raise ValueError("this model has no conditioners")
        if not 0 <= slot < self.batch_size:
            raise ValueError(f"slot {slot} outside 0..{self.batch_size - 1}")
        if self.condition is not None:
            if condition is None:
                raise ValueError("this model's conditions include a sum: give the condition")
            self.condition[slot] = condition.reshape(1, -1).to(self.condition)
            if self.use_cfg:
                if null_condition is None:
                    raise ValueError("CFG on a conditioned model needs the null condition")
                self.condition[self.batch_size + slot] = null_condition.reshape(1, -1).to(self.condition)
        if self.cross_attention:
            if cross is None or (self.use_cfg and null_cross is None):
                raise ValueError("this model cross-attends: give the slot's cross source"
                                 + (" and its null one (CFG)" if self.use_cfg else ""))
            rows = [slot]
            sources = [cross.reshape(1, *cross.shape[-2:])]
            if self.use_cfg:
                assert null_cross is not None
                rows.append(self.batch_size + slot)
                sources.append(null_cross.reshape(1, *null_cross.shape[-2:]))
            self.lm.set_cross_source(torch.tensor(rows, device=self.device),
                                     torch.cat(sources).to(self.device))

    @torch.inference_mode()
    def set_audio_delay(self, slot: int, steps: int | None) -> None:
        """Force `slot`'s audio codebook k to -1 while its offset is below
        `delays[1 + k] + steps` (Kyutai's TTS: audio lags text); None: never."""
        if not 0 <= slot < self.batch_size:
            raise ValueError(f"slot {slot} outside 0..{self.batch_size - 1}")
        self.audio_delay[slot] = NEVER if steps is None else int(steps)
        self._audio_delay_host[slot] = NEVER if steps is None else int(steps)

    @torch.inference_mode()
    def set_audio_prefix(self, slot: int, codes: torch.Tensor | None) -> None:
        """`slot` speaks the audio codes `codes` `[>= dep_q, P]` first (None: no prefix).
        Call after `set_audio_delay` (the prefix starts where the audio delay ends)."""
        if not 0 <= slot < self.batch_size:
            raise ValueError(f"slot {slot} outside 0..{self.batch_size - 1}")
        self.audio_prefix[slot].fill_(UNGENERATED)
        if codes is None:
            self.prefix_len[slot] = 0
            self.cfg_masked_until[slot] = NEVER
            return
        if codes.dim() != 2 or codes.shape[0] < self.dep_q:
            raise ValueError(f"an audio prefix is [>= {self.dep_q}, frames], got {tuple(codes.shape)}")
        frames = codes.shape[1]
        if frames > self.max_prefix:
            raise ValueError(f"an audio prefix of {frames} frames, this streamer holds at most "
                             f"{self.max_prefix}")
        self.audio_prefix[slot, :, :frames] = codes[: self.dep_q].to(self.device)
        self.prefix_len[slot] = frames
        self.cfg_masked_until[slot] = frames + max(int(self._audio_delay_host[slot]), 0)

    def _audio_all_forced(self) -> bool:
        """Every stepping slot's audio is forced to -1 this step (no need for the depformer)."""
        if self.dep_q == 0 or not self.has_depformer:
            return False
        active = self._active_host.numpy()
        limit = self._audio_delay_host[active] + self._first_audio_delay
        return bool(active.any()) and bool((self._offsets_host[active] < limit).all())

    def check_slot_sampling(self, temperature: float | None, top_k: int | None) -> None:
        """Raises ValueError when a slot may not choose these (see `set_slot_sampling`)."""
        if temperature is None and top_k is None:
            return
        if self.slot_sampling is None:
            raise ValueError("this engine takes no per-stream temperature or top_k")
        for kind in self.slot_sampling:
            kind.check(temperature, top_k)

    @torch.inference_mode()
    def set_slot_sampling(self, slot: int, temperature: float | None,
                          top_k: int | None) -> None:
        """Slot `slot` samples text and audio at `temperature` from the `top_k` best (None:
        the streamer's settings). Kyutai's rule for a stream's choice: temperature 0 or
        top_k <= 1 is greedy."""
        self.check_slot_sampling(temperature, top_k)
        if self.slot_sampling is None:
            return
        if top_k is not None and top_k <= 1:
            temperature, top_k = 0.0, None
        for kind in self.slot_sampling:
            kind.set(slot, temperature, top_k)

    def _sample(self, logits: torch.Tensor, stream: int) -> torch.Tensor:
        """One token per slot of `logits` [B, V]; stream 0 is text, 1.. the audio rows."""
        noise = self._stream_noise(stream)
        if self.slot_sampling is not None:
            return self.slot_sampling[min(stream, 1)].sample(logits, noise)
        params = self.text_params if stream == 0 else self.audio_params
        return sample_tokens(logits, params, noise=noise)

    # --- stepping -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(
        self, input_tokens: torch.Tensor | None = None, text_hook: TextHook | None = None,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """One frame for every slot: `input_tokens` [B, n_in, 1] -> tokens [B, 1 + dep_q, 1].

        Returns None while the delays fill after a full reset. `text_hook` (TTS) sees the
        sampled text tokens [B] and returns those to use instead; they feed the depformer and
        the next step. Extra heads' probabilities (VAD) are in `extra_probs` afterwards.
        `active` (bool [B], default all): the slots this step advances; the others stay as
        they were and their rows of the result mean nothing.
        """
        self._set_active(active)
        self._load_input(input_tokens)
        self._phase_text()
        if text_hook is not None:
            forced = text_hook(self.text_buf.clone())
            forced = torch.as_tensor(forced, dtype=torch.long)
            if forced.shape != (self.batch_size,):
                raise ValueError(
                    f"text_hook must return [{self.batch_size}] tokens, got {tuple(forced.shape)}"
                )
            self.text_buf.copy_(forced)
        if self._audio_all_forced():
            self._phase_no_audio()
        else:
            self._phase_audio()
        self._offsets_host += self._active_host.numpy()
        self._steps_since_reset += 1
        if self._steps_since_reset <= self.max_delay:
            return None
        return self.out_buf.clone()

    def _set_active(self, active: torch.Tensor | None) -> None:
        """Copy the mask into the streamer's and the model's buffers when it changes (most
        steps it does not: walking the model's modules every step would cost)."""
        if active is None:
            active = torch.ones(self.batch_size, dtype=torch.bool)
        active = torch.as_tensor(active, dtype=torch.bool).cpu()
        if active.shape != (self.batch_size,):
            raise ValueError(f"active must be a bool tensor of shape [{self.batch_size}], "
                             f"got {tuple(active.shape)}")
        if torch.equal(active, self._active_host):
            return
        self._active_host = active.clone()
        self.active.copy_(active)
        self.lm.set_active(active.repeat(2) if self.use_cfg else active)

    def _load_input(self, input_tokens: torch.Tensor | None) -> None:
        B, n_in = self.batch_size, self.num_inputs
        if n_in == 0:
            return
        if input_tokens is None:
            raise ValueError(f"this model needs input tokens [{B}, {n_in}, 1] at every step")
        if input_tokens.dim() != 3 or input_tokens.shape[0] != B or input_tokens.shape[2] != 1:
            raise ValueError(
                f"input_tokens must be [{B}, {n_in}, 1], got {tuple(input_tokens.shape)}"
            )
        if input_tokens.shape[1] < n_in:
            raise ValueError(
                f"input_tokens has {input_tokens.shape[1]} codebooks, the model reads {n_in}"
            )
        self.input_buf.copy_(input_tokens[:, :n_in])

    # The two phases below are the graph-captured bodies: tensors in place, no host syncs.
    def _run_temporal(self) -> None:
        B, mask = self.batch_size, self._ring_mask
        first_input = 1 + self.dep_q
        offsets = self.offsets[:, None, None]  # [B, 1, 1]
        if self.num_inputs > 0:
            write_at = (offsets + self.delays[first_input:][None, :, None]) & mask  # [B, n_in, 1]
            self.cache[:, first_input:].scatter_(2, write_at, self.input_buf)
        read_at = (offsets & mask).expand(B, self.num_codebooks, 1)
        codes = self.cache.gather(2, read_at)  # [B, K, 1]
        is_initial = offsets <= self.delays[None, :, None]
        codes = torch.where(is_initial, self.initial, codes)
        if self.use_cfg and not self.cfg_is_no_text:
            codes = torch.cat([codes, codes], dim=0)  # the halves differ by their condition
        elif self.use_cfg:
            null = codes.clone()
            if self.max_prefix:  # no prefix in the null half (moshi's cfg_is_masked_until)
                limit = self.delays[None, :, None] + self.cfg_masked_until[:, None, None]
                null = torch.where((offsets <= limit) & ~is_initial, -1, null)
            null[:, :1] = torch.where(is_initial[:, :1], codes[:, :1], torch.full_like(codes[:, :1], -1))
            codes = torch.cat([codes, null], dim=0)
        # [B', 1, D], [B', 1, 1, Vt]
        if self.condition is not None or self.cross_attention:
            hidden, text_logits = self.lm.forward_temporal(codes, self.condition)
        else:
            hidden, text_logits = self.lm.forward_temporal(codes)
        self._hidden = hidden
        if self._noise_width > 0:
            self._noise = self.rng.gumbel_block(self._noise_streams, self._noise_width)
        text_logits = text_logits[:, 0, 0]
        text_logits = text_logits[:B] if self.cfg_is_no_text else self._guided(text_logits)
        text = self._sample(text_logits, 0)
        self.text_buf.copy_(text)
        if self.num_extra_heads > 0:
            probs = self.lm.extra_heads_probs(hidden[:B])  # list of [B, 1, n]
            self.extra_probs.copy_(torch.stack([p[:, 0] for p in probs], dim=1))

    def _stream_noise(self, stream: int) -> torch.Tensor | None:
        return None if self._noise is None else self._noise[:, stream]

    def _guided(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.use_cfg:
            return logits
        cond, null = logits.chunk(2)
        return null + (cond - null) * self.cfg_coef

    def _sample_audio(self) -> list[torch.Tensor]:
        hidden = self._hidden
        assert hidden is not None
        tokens: list[torch.Tensor] = []
        if self.has_depformer:
            self.lm.depformer_reset()
            prev = self.text_buf
            for k in range(self.dep_q):
                prev_in = prev.repeat(2) if self.use_cfg else prev
                logits = self.lm.depformer_step(k, hidden, prev_in[:, None])  # [B', 1, card]
                prev = self._sample(self._guided(logits[:, 0]), 1 + k)
                tokens.append(prev)
        else:
            all_logits = self._guided(self.lm.parallel_audio_logits(hidden))  # [B, dep_q, 1, card]
            for k in range(self.dep_q):
                tokens.append(self._sample(all_logits[:, k, 0], 1 + k))
        return tokens

    def _run_audio(self, skip_depformer: bool = False) -> None:
        mask = self._ring_mask
        rows = [self.text_buf]
        if self.dep_q > 0:
            audio = ([torch.full_like(self.text_buf, -1)] * self.dep_q if skip_depformer
                     else self._sample_audio())
            # Kyutai's TTS: no audio yet while the audio delay runs (per slot, per codebook)
            audio_delays = self.delays[1 : 1 + self.dep_q]  # [dep_q]
            forced = self.offsets[:, None] < audio_delays + self.audio_delay[:, None]
            tokens = torch.where(forced, -1, torch.stack(audio, dim=1))  # [B, dep_q]
            if self.max_prefix:
                index = self.offsets[:, None] - self.audio_delay[:, None] - audio_delays
                inside = (index >= 0) & (index < self.prefix_len[:, None])
                index = index.clamp(0, self.max_prefix - 1)[:, :, None]
                prefix = self.audio_prefix.gather(2, index)[:, :, 0]
                tokens = torch.where(inside, prefix, tokens)
            rows.extend(tokens.unbind(1))
        generated = torch.stack(rows, dim=1)[:, :, None]  # [B, 1 + dep_q, 1]
        self.offsets.add_(self.active.long())
        offsets = self.offsets[:, None, None]
        write_at = (offsets & mask).expand_as(generated)
        generated_rows = self.cache[:, : 1 + self.dep_q]
        # a skipped slot writes back what is there (its offset did not move: that is the
        # token its next step reads)
        kept = generated_rows.gather(2, write_at)
        generated = torch.where(self.active[:, None, None], generated, kept)
        generated_rows.scatter_(2, write_at, generated)
        gen_delays = self.delays[: 1 + self.dep_q][None, :, None]
        read_at = (offsets - self.max_delay + gen_delays) & mask  # [B, 1 + dep_q, 1]
        out = self.cache[:, : 1 + self.dep_q].gather(2, read_at)
        filling = offsets <= self.max_delay  # [B, 1, 1]
        self.out_buf.copy_(torch.where(filling, torch.full_like(out, UNGENERATED), out))
        self.rng.advance(self.active)
