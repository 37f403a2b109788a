"""The TTS recipe (`kind = "tts"`): a multistream LM that speaks the text it is fed.

Layout of one training item (`[1 + K, T]`, `dsm.recipes.data.dataset.AlignedDataset` task "tts"):
row 0 is the text stream of the utterance's words with start markers only (a 0 just
before each word's tokens, pads elsewhere: `dsm.streams.text_stream`, `mark_ends=False`);
rows 1..K are the codec codes of the recording, delayed `audio_delay` frames behind the
text. So when the model writes audio frame f it has already read the text up to frame
f + audio_delay: the text stream is its lookahead (1.28 s in Kyutai's TTS).

The data is made to match, token for token, what `dsm.streaming.tts.TTSSession` feeds
at inference, where the model's text head only decides *when* the next word starts; the
rules live in `dsm.streams.tts_text`, which the session's `TextFeeder` also follows:
- no word starts in the session's first `INITIAL_PADDING` positions (it pads them);
- the text head is trained only where the session listens to it (`text_loss_targets`);
- a final 0 follows the last word (`end_marker`, `end_marker_position`), read as a pad
  (`session_text_inputs`);
- the `audio_delay` frames before the recording starts hold the codec codes of silence
  (`silence_before_audio`, `dsm.streams.silence.silence_codes`: zeros from the stream
  start through the streaming encoder), with loss: at inference the model generates (and
  reads back) those frames itself, and the session throws them away.

The LM is a `MultistreamLM` whose depformer generates all K codebooks of a frame (text
token first, then codebook 0, 1, ...; acoustic codebooks lag codebook 0 by
`model.acoustic_delay` frames, as Kyutai's `delays`). The loss weights the text stream,
the first (semantic) codebook and the other codebooks separately.

`export` writes OUT/model, a model directory (`dsm.models.model_dir`) with the
sampling defaults in `lm_gen_config`; `dsm ship tts` (dsm.recipes.ship) copies one into
dsm/assets/tts with `"codec": "../codec"` (the shared codec). `dsm.recipes.eval.tts`
are the evaluation: speak each text through the streaming engine, transcribe the audio
with an independent ASR model, and time the first audio frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dsm.models.config import LMConfig
from dsm.models.lm import MultistreamLM
from dsm.recipes.config import RecipeError
from dsm.recipes.data.dataset import AlignedDataset, AlignedItem, codec_fingerprint, collate
from dsm.recipes.tasks.base import Metrics, Split, Task, register_task
from dsm.recipes.tasks.init_from import load_initial_lm_weights
from dsm.streams.silence import silence_codes
from dsm.streams.text_stream import delay_frames
from dsm.streams.tokenizer import TextTokenizer
from dsm.streams.tts_text import (
    MASKED_TEXT,
    end_marker_position,
    session_text_inputs,
    text_loss_targets,
)


@dataclass
class TTSModelConfig:
    """Size of the LM (Kyutai field names); streams and cards come from codec and tokenizer."""

    dim: int = 128
    num_heads: int = 4
    num_layers: int = 4
    hidden_scale: float = 4.125
    context: int = 250                # frames the temporal transformer attends (20 s)
    max_period: float = 10_000.0
    depformer_dim: int = 128
    depformer_num_heads: int = 4
    depformer_num_layers: int = 2
    acoustic_delay: int = 2           # frames codebooks 1.. lag codebook 0 (Kyutai `delays`)

    def __post_init__(self) -> None:
        if min(self.dim, self.num_heads, self.num_layers, self.depformer_dim,
               self.depformer_num_heads, self.depformer_num_layers, self.context) < 1:
            raise ValueError("model sizes must be >= 1")
        if self.dim % self.num_heads or self.depformer_dim % self.depformer_num_heads:
            raise ValueError("dim (depformer_dim) must be a multiple of num_heads "
                             "(depformer_num_heads)")
        if self.acoustic_delay < 0:
            raise ValueError("acoustic_delay must be >= 0")


@dataclass
class TTSTaskConfig:
    """The TTS recipe's `[task]` table."""

    codec: str                        # `load_codec` spec: a codec directory, "mimi:FILE", ...
    tokenizer: str                    # sentencepiece model (the shared English one)
    num_codebooks: int = 0            # codebooks generated; 0: all of the codec's
    audio_delay_seconds: float = 1.28  # audio behind text (rounded to frames)
    max_frames: int = 160             # training crop (frames); 0: whole utterances, each
                                      # batch padded to its longest
    cache_dir: str = ""               # codec code cache ("": none)
    speakers: list[str] = field(default_factory=list)  # keep rows whose speaker starts
                                      # with one of these ([]: every row)
    end_marker: bool = True
    silence_before_audio: bool = True
    text_weight: float = 1.0
    first_codebook_weight: float = 2.0
    audio_weight: float = 1.0
    audio_noise: float = 0.0          # training: share of the past audio codes the temporal
                                      # transformer reads replaced by random codes
    # sampling defaults written into the exported model directory (lm_gen_config)
    temp: float = 0.7
    top_k: int = 50
    temp_text: float = 0.0
    top_k_text: int = 1
    init_from: str | None = None      # start from these LM weights: a TTS model directory, a
                                      # Hugging Face repo id (owner/name[@REVISION]) or
                                      # a `dsm train` checkpoint of the same shapes (e.g. to
                                      # adapt a model to a retrained codec's codes)
    init_from_text: bool = True       # false: the text embeddings and head start fresh (a
                                      # new tokenizer); the rest from init_from
    model: TTSModelConfig = field(default_factory=TTSModelConfig)

    def __post_init__(self) -> None:
        if self.num_codebooks < 0:
            raise ValueError("num_codebooks must be >= 0 (0: all of the codec's)")
        if self.audio_delay_seconds < 0:
            raise ValueError("audio_delay_seconds must be >= 0")
        if self.max_frames < 0 or self.max_frames == 1:
            raise ValueError("max_frames must be 0 (whole utterances) or >= 2")
        weights = (self.text_weight, self.first_codebook_weight, self.audio_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("loss weights must be >= 0 and not all 0")
        if not 0 <= self.audio_noise < 1:
            raise ValueError("audio_noise must be in [0, 1)")
        if self.temp < 0 or self.temp_text < 0 or self.top_k < 0 or self.top_k_text < 0:
            raise ValueError("temperatures and top-k must be >= 0")


def tts_lm_config(model: TTSModelConfig, num_codebooks: int, card: int, text_card: int,
                  audio_delay_s: float) -> LMConfig:
    """The `LMConfig` of a TTS model: text row (delay 0), then `num_codebooks` generated rows."""
    return LMConfig(
        dim=model.dim, num_heads=model.num_heads, num_layers=model.num_layers,
        hidden_scale=model.hidden_scale, context=model.context, max_period=model.max_period,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope",
        card=card, n_q=num_codebooks, dep_q=num_codebooks, text_card=text_card,
        delays=[0, 0] + [model.acoustic_delay] * (num_codebooks - 1),
        depformer_dim=model.depformer_dim, depformer_num_heads=model.depformer_num_heads,
        depformer_num_layers=model.depformer_num_layers, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_pos_emb="none",
        extras={"model_type": "tts", "tts_config": {"audio_delay": audio_delay_s}},
    )


# ------------------------------------------------------------------------------ data


class TTSDataset(AlignedDataset):
    """`AlignedDataset(task="tts")` plus the inference-matching details of the module
    docstring: the end marker and the silence codes before the audio."""

    def __init__(self, manifest: str | Path, tokenizer: TextTokenizer, codec: Any, *,
                 end_marker: bool = True, silence_before_audio: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(manifest, "tts", tokenizer, codec, **kwargs)
        self.end_marker = end_marker
        self.silence: Tensor | None = None     # [K, audio_delay] codes of silence
        if silence_before_audio and self.audio_delay > 0:
            self.silence = silence_codes(self.codec, self.audio_delay)[: self.num_codebooks]

    def aligned(self, index: int) -> AlignedItem:
        item = super().aligned(index)
        codes, mask = item.codes.clone(), item.mask.clone()
        row, _ = self.items[index]
        if self.end_marker:
            pad, start = self.tokenizer.pad_id, self.tokenizer.word_start_id
            position = end_marker_position(codes[0], row.words[-1].end, self.frame_rate, pad)
            if position >= codes.shape[1]:   # the stream must hold it: one more frame
                codes, mask = _extend(codes, mask, position + 1 - codes.shape[1], pad)
            codes[0, position] = start
            mask[0, position] = True
        if self.silence is not None:
            delay = self.audio_delay
            codes[1:, :delay] = self.silence
            mask[1:, :delay] = True
        return AlignedItem(codes, mask, item.stats)


def _extend(codes: Tensor, mask: Tensor, frames: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Add `frames` frames at the end: text pads, audio -1 (the recording has ended)."""
    extra_codes = torch.full((codes.shape[0], frames), MASKED_TEXT, dtype=codes.dtype)
    extra_mask = torch.zeros((mask.shape[0], frames), dtype=torch.bool)
    extra_codes[0], extra_mask[0] = pad_id, True
    return torch.cat([codes, extra_codes], 1), torch.cat([mask, extra_mask], 1)


def _filter_speakers(dataset: AlignedDataset, prefixes: Sequence[str], source: str) -> None:
    if not prefixes:
        return
    kept = [(row, target) for row, target in dataset.items
            if any((row.speaker or "").startswith(p) for p in prefixes)]
    if not kept:
        raise RecipeError(f"{source}: no manifest row has a speaker starting with "
                          f"{list(prefixes)} (task.speakers)")
    dataset.items = kept


# ------------------------------------------------------------------------------ task


@register_task
class TTSTask(Task):
    """TTS: audio codes delayed behind a text stream, generated by a depformer."""

    kind = "tts"
    config_class = TTSTaskConfig
    needs_manifest = True

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        self._codec: Any = None
        self._tokenizer: TextTokenizer | None = None

    # --- resources -----------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        if self._codec is None:
            from dsm.codecs import load_codec

            try:
                self._codec = load_codec(self.config.codec)
            except (OSError, ValueError) as error:
                raise RecipeError(f"{self.recipe.source}: task.codec {self.config.codec!r}: "
                                  f"{error}") from None
            self._codec.eval()
        return self._codec

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            path = Path(self.config.tokenizer)
            if not path.is_file():
                raise RecipeError(f"{self.recipe.source}: task.tokenizer: file not found: {path}")
            self._tokenizer = TextTokenizer.load(path)
        return self._tokenizer

    @property
    def num_codebooks(self) -> int:
        total = int(self.codec.num_codebooks)
        wanted = self.config.num_codebooks or total
        if wanted > total:
            raise RecipeError(f"{self.recipe.source}: task.num_codebooks = {wanted} but the "
                              f"codec has {total}")
        return wanted

    @property
    def audio_delay(self) -> int:
        return delay_frames(self.config.audio_delay_seconds, float(self.codec.frame_rate))

    def lm_config(self) -> LMConfig:
        return tts_lm_config(
            self.config.model, self.num_codebooks, int(self.codec.cardinality),
            self.tokenizer.vocab_size, self.audio_delay / float(self.codec.frame_rate),
        )

    # --- data ----------------------------------------------------------------------------
    def build_dataset(self, split: Split) -> Dataset | None:
        data = self.recipe.data
        manifest = data.train_manifest if split == "train" else data.valid_manifest
        if manifest is None:
            return None
        config: TTSTaskConfig = self.config
        dataset = TTSDataset(
            manifest, self.tokenizer, self.codec, num_codebooks=self.num_codebooks,
            audio_delay=self.audio_delay, max_frames=config.max_frames or None,
            cache_dir=config.cache_dir or None, crop="random" if split == "train" else "start",
            seed=self.recipe.seed, end_marker=config.end_marker,
            silence_before_audio=config.silence_before_audio,
        )
        _filter_speakers(dataset, config.speakers, self.recipe.source)
        return dataset

    def collate(self, items: list[Any]) -> Any:
        batch = collate(items)
        return {"codes": batch["codes"], "mask": batch["mask"]}

    # --- model and loss --------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        lm = MultistreamLM(self.lm_config())
        if self.config.init_from is not None:
            load_initial_lm_weights(lm, self.config.init_from, self.recipe.source, "lm",
                                    "TTS", text=self.config.init_from_text)
        return {"lm": lm}

    def compute_loss(self, models: Mapping[str, nn.Module], batch: Any) -> tuple[Tensor, Metrics]:
        codes: Tensor = batch["codes"]                        # [B, 1 + K, T]
        model = models["lm"]
        lm: MultistreamLM = getattr(model, "module", model)   # unwrapped (DDP)
        pad, start = self.tokenizer.pad_id, self.tokenizer.word_start_id
        inputs = session_text_inputs(codes, pad, start)
        noisy = None
        if model.training and self.config.audio_noise > 0:
            noisy = noisy_audio(inputs, self.config.audio_noise, lm.config.card)
        output = model(inputs, noisy)
        targets = text_loss_targets(codes, pad, start)
        config: TTSTaskConfig = self.config
        losses = lm.compute_loss(
            targets, output, text_weight=config.text_weight,
            first_codebook_weight=config.first_codebook_weight, audio_weight=config.audio_weight,
        )
        metrics: Metrics = {"text": losses.text.detach(), "audio0": losses.audio[0].detach()}
        if losses.audio.numel() > 1:
            metrics["audio_rest"] = losses.audio[1:].mean().detach()
        return losses.total, metrics

    # --- export ----------------------------------------------------------------------------
    def export(self, models: Mapping[str, nn.Module], directory: Path) -> None:
        lm: MultistreamLM = getattr(models["lm"], "module", models["lm"])
        export_model_dir(lm, self.codec, self.config, Path(directory) / "model",
                         self.audio_delay / float(self.codec.frame_rate))


def noisy_audio(codes: Tensor, rate: float, card: int) -> Tensor:
    """`codes [B, 1 + K, T]` with each audio code (rows 1..K, -1 left alone) replaced by a
    uniformly random one with probability `rate`: read as the past by the temporal
    transformer, they teach it to go on from its own imperfect samples (exposure bias) and
    to lean on the text. Draws come from torch's RNG, which the trainer checkpoints."""
    audio = codes[:, 1:]
    replace = (torch.rand(audio.shape, device=codes.device) < rate) & (audio >= 0)
    random_codes = torch.randint_like(audio, card)
    noisy = codes.clone()
    noisy[:, 1:] = torch.where(replace, random_codes, audio)
    return noisy


def sampling_settings(config: TTSTaskConfig) -> dict[str, Any]:
    return {"temp": config.temp, "top_k": config.top_k, "temp_text": config.temp_text,
            "top_k_text": config.top_k_text}


def export_model_dir(lm: MultistreamLM, codec: Any, config: TTSTaskConfig, directory: Path,
                     audio_delay_s: float) -> Path:
    from dsm.models.model_dir import write_model_dir

    was_training = lm.training
    lm.eval()
    try:
        return write_model_dir(directory, lm, codec, config.tokenizer, "tts",
                               audio_delay_s=audio_delay_s, sampling=sampling_settings(config))
    finally:
        lm.train(was_training)


def export_checkpoint(checkpoint: str | Path, directory: str | Path) -> Path:
    """A model directory from a trainer checkpoint of a TTS run (e.g. to try or ship the
    newest checkpoint of a run that has not finished)."""
    from dsm.recipes.config import recipe_from_dict
    from dsm.recipes.training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    if state.get("kind") != "tts":
        raise RecipeError(f"{checkpoint}: a {state.get('kind')!r} checkpoint, not a TTS one")
    task = TTSTask(recipe_from_dict(state["recipe"], str(checkpoint)))
    lm = MultistreamLM(task.lm_config())
    lm.load_state_dict(state["models"]["lm"])
    return export_model_dir(lm, task.codec, task.config, Path(directory),
                            task.audio_delay / float(task.codec.frame_rate))


def check_codec(model: Any) -> None:
    """Raise unless a loaded model directory's codec is the one its LM was trained with
    (when config.json records `codec_fingerprint`)."""
    expected = model.lm.config.extras.get("codec_fingerprint")
    if expected is not None and codec_fingerprint(model.codec) != expected:
        raise ValueError(f"{model.path}: its codec is not the one the model was trained with "
                         f"(codec_fingerprint {expected[:12]}...)")
