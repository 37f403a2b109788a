"""The ASR recipe (`kind = "asr"`): a multistream LM reads audio codes and writes text that
lags the audio by `text_delay_s` (Kyutai's STT: 0.5 s = 6 frames at 12.5 Hz).

Each item of `AlignedDataset(task="asr")` is one utterance: row 0 is the text
stream (`dsm.streams.text_stream`: word-start and end markers, pads, the word's tokens from
its start frame, all shifted `text_delay` frames later), rows 1..K the codec codes of the
audio (extended with silence so the audio lasts as long as the delayed text). The model is
a `MultistreamLM` with `dep_q = 0`: it only predicts text, teacher-forced on the whole
token tensor (`lm.forward`, moshi's meaning: logits at position t predict row 0 at t from
everything before t). Items longer than `max_frames` are cropped to a window drawn from
(seed, epoch, index); shorter ones are not padded here, the batch pads to its longest item
(-1: zero embedding, no loss). `CroppedItems` can put silence before an item
(`lead_silence_s`; `dsm.streams.silence`: the codes of the zeros a session feeds) and make
items streams of several utterances (`chain_fraction`): a live stream starts anywhere and
goes on past its first utterance. A `max_frames` above the model's `context` trains on
streams longer than its attention window, as a long session is.

Loss: cross-entropy of the text row over its valid positions, with pad targets weighted
by `pad_weight` (they are most positions; a lower weight keeps the rare word tokens from
being drowned, as Kyutai's fine-tuning code does with its text padding weight).

`export` writes `OUT/model`, a model directory (`dsm.models.model_dir`) that
`dsm transcribe --model` and `dsm eval asr --model` read; `dsm ship asr` copies one to
a place where the codec is shared (`dsm/assets/asr` with `"codec": "../codec"`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from dsm.recipes.config import RecipeError
from dsm.recipes.data.dataset import AlignedDataset, DatasetError, collate
from dsm.recipes.tasks.base import Metrics, Split, Task, register_task
from dsm.recipes.tasks.init_from import load_initial_lm_weights
from dsm.streams.silence import silence_codes

MODEL_DIR = "model"  # export: OUT/model


@dataclass
class ASRTaskConfig:
    """What the ASR model reads (codec, tokenizer), its text delay, its size and its loss.

    Paths are taken from the current directory. LM fields left out keep the preset's
    value; `text_card` defaults to the tokenizer's vocabulary, `card` and `n_q` to the codec.
    """

    codec: str                              # load_codec spec: a codec directory or mimi:FILE
    tokenizer: str                          # sentencepiece .model of the text stream
    text_delay_s: float = 0.5               # text behind audio, seconds (Kyutai STT: 0.5)
    num_codebooks: int | None = None        # audio codebooks read (default: all the codec's)
    max_frames: int = 250                   # training crop, frames (20 s at 12.5 Hz)
    cache_dir: str | None = None            # on-disk codec code cache (AlignedDataset)
    pad_weight: float = 0.5                 # loss weight of pad targets (others weigh 1)
    preset: str = "tiny-stt"                # dsm.models.presets name
    dim: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    hidden_scale: float | None = None
    context: int | None = None              # attention window, frames
    text_card: int | None = None
    extra_heads_num_heads: int = 0          # VAD heads (untrained by this recipe: 0)
    audio_dropout: float = 0.0              # training: share of input audio codes hidden (-1)
    text_dropout: float = 0.0               # training: share of input text tokens hidden (-1)
    lead_silence_s: float = 0.0             # training: up to this much silence before an item
    chain_fraction: float = 0.0             # training: share of items that are streams of
                                            # several utterances, filling max_frames
    chain_gap_s: tuple[float, float] = (0.3, 4.0)  # training: silence between them, seconds
    init_from: str | None = None            # start from these LM weights: a model directory,
                                            # a Hugging Face repo id (owner/name[@REVISION])
                                            # or a `dsm train` checkpoint of the same shapes
    init_from_text: bool = True             # false: the text embeddings and head start fresh
                                            # (a new tokenizer); the rest from init_from

    def __post_init__(self) -> None:
        if not self.text_delay_s >= 0:
            raise ValueError("text_delay_s must be >= 0")
        if self.max_frames < 2:
            raise ValueError("max_frames must be >= 2")
        if not 0 <= self.pad_weight <= 1:
            raise ValueError("pad_weight must be in [0, 1]")
        if not (0 <= self.audio_dropout < 1 and 0 <= self.text_dropout < 1):
            raise ValueError("audio_dropout and text_dropout must be in [0, 1)")
        if not self.lead_silence_s >= 0:
            raise ValueError("lead_silence_s must be >= 0")
        if not 0 <= self.chain_fraction <= 1:
            raise ValueError("chain_fraction must be in [0, 1]")
        low, high = self.chain_gap_s
        if not 0 <= low <= high:
            raise ValueError(f"chain_gap_s must be [low, high] with 0 <= low <= high, "
                             f"got {list(self.chain_gap_s)}")
        if self.num_codebooks is not None and self.num_codebooks < 1:
            raise ValueError("num_codebooks must be >= 1")
        if self.extra_heads_num_heads < 0:
            raise ValueError("extra_heads_num_heads must be >= 0")


class CroppedItems(Dataset):
    """An `AlignedDataset` (built without `max_frames`) with long items cropped to
    `max_frames`; the window start is drawn from (seed, epoch, index) only.

    `silence_codes` (`[K, L]`, `dsm.streams.silence.silence_codes`: the codes of `L` frames
    of silence from the start of a stream) make two kinds of training streams, both with
    text pad over the silence:
    - `lead_frames` > 0: each item first gets a drawn number (0 to `lead_frames`, within
      `max_frames`) of silent frames in front: speech need not start where the stream does.
      They are the first frames of `silence_codes`, the codes a session hears when a
      stream starts with silence (the codec is causal: `L` frames begin as `lead` do).
    - `chain_fraction` > 0: that share of the items are streams of several utterances.
      Drawn items follow the first, each after a drawn gap of `gap_frames` (low, high)
      silent frames, until `max_frames` is filled (the last one cut short). A gap is the
      last frames of `silence_codes` (the codec settled on silence, not at a stream
      start). A live stream holds one utterance after another. A model trained on single
      ones hears the first and then loses its way. With `max_frames` above the model's
      attention window, the later ones are also heard without the stream's start in view,
      as in a long session.
    """

    def __init__(self, dataset: AlignedDataset, max_frames: int, seed: int, random_crop: bool,
                 silence_codes: Tensor | None = None, pad_id: int = 0, lead_frames: int = 0,
                 chain_fraction: float = 0.0, gap_frames: tuple[int, int] = (0, 0)) -> None:
        needed = max(lead_frames, gap_frames[1] if chain_fraction > 0 else 0)
        if needed > 0 and (silence_codes is None or silence_codes.shape[-1] < needed):
            raise ValueError(f"silence_codes must hold at least {needed} frames")
        self.dataset = dataset
        self.max_frames = max_frames
        self.seed = seed
        self.random_crop = random_crop
        self.epoch = 0
        self.skipped = dataset.skipped
        self.silence_codes = silence_codes
        self.pad_id = pad_id
        self.lead_frames = lead_frames
        self.chain_fraction = chain_fraction
        self.gap_frames = gap_frames

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def _silence(self, frames: int, at_start: bool) -> tuple[Tensor, Tensor]:
        """`frames` of silence, `[1 + K, frames]`: text pad over the codes of silence (the
        first frames of a stream's silence when `at_start`, else the last), all valid."""
        assert self.silence_codes is not None
        length = self.silence_codes.shape[-1]
        audio = self.silence_codes[:, :frames] if at_start else self.silence_codes[:, length - frames:]
        codes = torch.full((1 + audio.shape[0], frames), self.pad_id, dtype=torch.long)
        codes[1:] = audio
        return codes, torch.ones_like(codes, dtype=torch.bool)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        parts = [(item["codes"], item["mask"])]
        length = item["codes"].shape[-1]
        room = min(self.lead_frames, self.max_frames - length)
        if room > 0:
            lead = random.Random(f"asr-lead|{self.seed}|{self.epoch}|{index}").randint(0, room)
            if lead > 0:
                parts.insert(0, self._silence(lead, at_start=True))
                length += lead
        chained = False
        if self.chain_fraction > 0 and length < self.max_frames:
            draw = random.Random(f"asr-chain|{self.seed}|{self.epoch}|{index}")
            chained = draw.random() < self.chain_fraction
            while chained and length < self.max_frames:
                gap = draw.randint(*self.gap_frames)
                following = self.dataset[draw.randrange(len(self.dataset))]
                if gap > 0:
                    parts.append(self._silence(gap, at_start=False))
                parts.append((following["codes"], following["mask"]))
                length += gap + following["codes"].shape[-1]
        if len(parts) > 1:
            item["codes"] = torch.cat([codes for codes, _ in parts], dim=-1)
            item["mask"] = torch.cat([mask for _, mask in parts], dim=-1)
            item["length"] = length
        if length > self.max_frames:
            start = 0
            if self.random_crop and not chained:  # a stream keeps its start, its end is cut
                draw = random.Random(f"asr-crop|{self.seed}|{self.epoch}|{index}")
                start = draw.randint(0, length - self.max_frames)
            item["codes"] = item["codes"][:, start:start + self.max_frames]
            item["mask"] = item["mask"][:, start:start + self.max_frames]
            item["length"] = self.max_frames
        return item


def text_loss(logits: Tensor, targets: Tensor, valid: Tensor, pad_id: int,
              pad_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted CE of text logits `[B, T, C]` against `[B, T]` where `valid` (and the target
    is a class); also accuracies on pad and non-pad targets (for the log)."""
    valid = valid & (targets >= 0) & (targets < logits.shape[-1])
    safe_targets = torch.where(valid, targets, 0)
    ce = F.cross_entropy(logits.float().flatten(0, 1), safe_targets.flatten(), reduction="none")
    ce = ce.view_as(targets)
    is_pad = safe_targets == pad_id
    weights = torch.where(is_pad, pad_weight, 1.0) * valid
    loss = (ce * weights).sum() / weights.sum().clamp(min=1e-6)
    with torch.no_grad():
        correct = (logits.argmax(-1) == safe_targets) & valid
        words = valid & ~is_pad
        pads = valid & is_pad
        metrics = {
            "acc_text": correct[words].float().sum() / words.sum().clamp(min=1),
            "acc_pad": correct[pads].float().sum() / pads.sum().clamp(min=1),
        }
    return loss, metrics


@register_task
class ASRTask(Task):
    """ASR: a text-only multistream LM over codec codes, text delayed behind the audio."""

    kind = "asr"
    config_class = ASRTaskConfig
    needs_manifest = True

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        self._codec: Any = None
        self._tokenizer: Any = None

    # --- shared pieces --------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        if self._codec is None:
            from dsm.codecs import load_codec

            try:
                self._codec = load_codec(self.config.codec)
            except (ValueError, OSError) as error:
                raise RecipeError(f"{self.recipe.source}: key 'task.codec': {error}") from None
            self._codec.eval()
        return self._codec

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from dsm.streams.tokenizer import TextTokenizer, TokenizerError

            try:
                self._tokenizer = TextTokenizer.load(self.config.tokenizer)
            except TokenizerError as error:
                raise RecipeError(f"{self.recipe.source}: key 'task.tokenizer': {error}") from None
        return self._tokenizer

    @property
    def text_delay(self) -> int:
        """The text delay in whole frames."""
        return round(self.config.text_delay_s * float(self.codec.frame_rate))

    def lm_config(self) -> Any:
        from dsm.models import preset

        config: ASRTaskConfig = self.config
        n_q = config.num_codebooks or self.codec.num_codebooks
        if n_q > self.codec.num_codebooks:
            raise RecipeError(f"{self.recipe.source}: key 'task.num_codebooks': {n_q}, but the "
                              f"codec has {self.codec.num_codebooks}")
        text_card = config.text_card or self.tokenizer.vocab_size
        if text_card < self.tokenizer.vocab_size:
            raise RecipeError(f"{self.recipe.source}: key 'task.text_card': {text_card} is "
                              f"smaller than the tokenizer's vocabulary ({self.tokenizer.vocab_size})")
        overrides: dict[str, Any] = {
            name: getattr(config, name)
            for name in ("dim", "num_heads", "num_layers", "hidden_scale", "context")
            if getattr(config, name) is not None
        }
        extras = {"model_type": "stt",
                  "stt_config": {"audio_delay_seconds": config.text_delay_s}}
        try:
            return preset(
                config.preset, card=self.codec.cardinality, n_q=n_q, dep_q=0,
                text_card=text_card, delays=[0] * (1 + n_q),
                extra_heads_num_heads=config.extra_heads_num_heads, extras=extras, **overrides,
            )
        except ValueError as error:
            raise RecipeError(f"{self.recipe.source}: [task] LM settings: {error}") from None

    # --- data -----------------------------------------------------------------------------
    def build_dataset(self, split: Split) -> Dataset | None:
        data = self.recipe.data
        manifest = data.train_manifest if split == "train" else data.valid_manifest
        if manifest is None:
            return None
        config: ASRTaskConfig = self.config
        try:
            dataset = AlignedDataset(
                manifest, "asr", self.tokenizer, self.codec, num_codebooks=config.num_codebooks,
                text_delay=self.text_delay, cache_dir=config.cache_dir, seed=self.recipe.seed,
            )
        except DatasetError as error:
            raise RecipeError(f"{self.recipe.source}: {split} data: {error}") from None
        rate = float(self.codec.frame_rate)
        lead_frames = round(config.lead_silence_s * rate) if split == "train" else 0
        chain_fraction = config.chain_fraction if split == "train" else 0.0
        gap_frames = (round(config.chain_gap_s[0] * rate), round(config.chain_gap_s[1] * rate))
        silence_frames = max(lead_frames, gap_frames[1] if chain_fraction > 0 else 0)
        silence = None
        if silence_frames > 0:
            silence = silence_codes(self.codec, silence_frames)[: config.num_codebooks or None]
        return CroppedItems(dataset, config.max_frames, self.recipe.seed,
                            random_crop=split == "train", silence_codes=silence,
                            pad_id=self.tokenizer.pad_id, lead_frames=lead_frames,
                            chain_fraction=chain_fraction, gap_frames=gap_frames)

    def collate(self, items: list[Any]) -> Any:
        batch = collate(items)
        return {"codes": batch["codes"], "mask": batch["mask"]}

    # --- model and loss ------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        from dsm.models import build_lm

        lm = build_lm(self.lm_config())
        if self.config.init_from is not None:
            load_initial_lm_weights(lm, self.config.init_from, self.recipe.source, "model",
                                    "ASR", text=self.config.init_from_text)
        return {"model": lm}

    def compute_loss(self, models: Mapping[str, nn.Module], batch: Any) -> tuple[Tensor, Metrics]:
        codes: Tensor = batch["codes"]                       # [B, 1 + K, T]
        model = models["model"]
        inputs = self._hide_inputs(codes) if model.training else codes
        output = model(inputs)
        logits = output.text_logits[:, 0]                    # [B, T, text_card]
        loss, metrics = text_loss(logits, codes[:, 0], output.text_mask[:, 0],
                                  self.tokenizer.pad_id, self.config.pad_weight)
        return loss, dict(metrics)

    def _hide_inputs(self, codes: Tensor) -> Tensor:
        """Training inputs with random cells set to -1 (zero embedding): audio codes with
        probability `audio_dropout`, text tokens with `text_dropout`, so the model cannot
        lean on every code of a voice or on its own text history alone. Targets stay whole.
        Draws come from torch's RNG, which the trainer seeds and checkpoints."""
        config: ASRTaskConfig = self.config
        if config.audio_dropout == 0 and config.text_dropout == 0:
            return codes
        rates = torch.full(codes.shape[:2], config.audio_dropout, device=codes.device)
        rates[:, 0] = config.text_dropout
        hidden = torch.rand(codes.shape, device=codes.device) < rates[..., None]
        return torch.where(hidden, torch.full_like(codes, -1), codes)

    def export(self, models: Mapping[str, nn.Module], directory: Path) -> None:
        from dsm.models.model_dir import write_model_dir

        lm = models["model"]
        lm = getattr(lm, "module", lm)  # unwrap DDP
        write_model_dir(Path(directory) / MODEL_DIR, lm, self.codec, self.config.tokenizer, "asr",
                        text_delay_s=self.config.text_delay_s)
