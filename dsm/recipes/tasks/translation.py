"""Translation recipe (`kind = "translation"`): source speech in, target text (and, with
`target_audio = true`, target speech) out, trained as one delayed multistream LM.

Data: two manifests paired by `id` (`dsm data synth --parallel` writes them): the source
language's in `data.train_manifest` (e.g. train.en.jsonl), the target language's in
`task.train_target_manifest` (train.fr.jsonl). Each pair becomes one aligned item
(dsm.recipes.data.dataset, task "translation") on the source audio's clock:

- row 0: the target words' text stream (`dsm.streams.text_stream`), shifted right by
  `text_delay_s`: the model writes a target word that long after the target speaker said
  it, which leaves it time to have heard the source words it translates (a fixed lag, not
  a per-word alignment: choose it larger than the usual reordering);
- target audio rows (only with `target_audio`): the target speech's codec codes, shifted
  right by `audio_delay_s` (>= text_delay_s, so the speech follows its own text, as in
  TTS). The frames before it are codes of silence (`dsm.streams.silence`; trained on,
  not masked): at inference the model's own audio tokens are fed back from the first
  frame, so it must learn to be silent until the target speech starts;
- source audio rows: the source speech's codes, extended with silence for as long as the
  target still runs (the input the model reads).

So the text-only model is an ASR-shaped LM (`dep_q = 0`, n_q = K input codebooks) and the
speech model a Hibiki-shaped one (`dep_q = K` generated rows, then K input rows, with
Kyutai's acoustic delay on generated codebooks 2..K). `export` writes a model directory
(dsm.models.model_dir, `model_type = "translation"`) to OUT/model, which
`dsm translate FILE --model OUT/model` and `dsm eval translation --model OUT/model` read.

`dsm eval translation --model DIR` (dsm.recipes.eval.translation) scores it by BLEU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from dsm.recipes.config import Recipe, RecipeError
from dsm.recipes.data.dataset import AlignedDataset, AlignedItem, DatasetError, collate
from dsm.recipes.data.manifest import ManifestError
from dsm.recipes.tasks.base import Metrics, Split, Task, register_task
from dsm.streams.silence import silence_codes


@dataclass
class TranslationConfig:
    """The `[task]` table of a translation recipe (see the module docstring)."""

    codec: str                              # load_codec spec: a codec dir, "mimi:FILE", ...
    tokenizer: str                          # sentencepiece model of the target language
    train_target_manifest: str              # target-language manifest, paired by id
    valid_target_manifest: str | None = None  # pairs with data.valid_manifest
    target_audio: bool = False              # also generate the target speech
    num_codebooks: int = 8                  # codec codebooks per audio stream
    text_delay_s: float = 2.0               # target text behind the source audio
    audio_delay_s: float = 3.0              # target audio behind the source audio
    max_frames: int = 250                   # training window (frames; random crops)
    crop: Literal["random", "start"] = "random"
    cache_dir: str | None = None            # codec codes cache (default: none)
    # temporal transformer
    dim: int = 256
    num_heads: int = 8
    num_layers: int = 6
    hidden_scale: float = 4.125
    context: int = 250
    max_period: float = 10_000.0
    # depth transformer (target_audio only)
    depformer_dim: int = 128
    depformer_num_heads: int = 4
    depformer_num_layers: int = 2
    acoustic_delay: int = 1                 # Kyutai delay of generated codebooks 2..K
    # loss weights
    text_weight: float = 1.0
    first_codebook_weight: float = 1.0
    audio_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("num_codebooks", "max_frames", "dim", "num_heads", "num_layers", "context",
                     "depformer_dim", "depformer_num_heads", "depformer_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.dim % self.num_heads or self.depformer_dim % self.depformer_num_heads:
            raise ValueError("dim (depformer_dim) must be a multiple of num_heads "
                             "(depformer_num_heads)")
        if self.text_delay_s < 0 or self.audio_delay_s < 0 or self.acoustic_delay < 0:
            raise ValueError("text_delay_s, audio_delay_s and acoustic_delay must be >= 0")
        if self.target_audio and self.audio_delay_s < self.text_delay_s:
            raise ValueError(
                f"audio_delay_s ({self.audio_delay_s}) must be >= text_delay_s "
                f"({self.text_delay_s}): the target speech follows its text"
            )
        if self.hidden_scale <= 0 or min(self.text_weight, self.first_codebook_weight,
                                         self.audio_weight) < 0:
            raise ValueError("hidden_scale must be > 0 and loss weights >= 0")
        for name in ("tokenizer", "train_target_manifest", "valid_target_manifest"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name} = {value!r}: no such file "
                                 f"(relative paths are taken from {Path.cwd()})")


class TranslationDataset(AlignedDataset):
    """AlignedDataset (task "translation") with the layout of this recipe: without
    `target_audio` the target audio rows are dropped (`[1 + K, T]` items: text, source);
    with it, the frames before the target speech hold codes of silence (`[1 + 2K, T]`)."""

    def __init__(self, *args: Any, target_audio: bool, **kwargs: Any) -> None:
        self.target_audio = target_audio
        self._silence: Tensor | None = None
        super().__init__(*args, **kwargs)

    def lead_silence(self) -> Tensor:
        """Codes `[K, audio_delay]` of `audio_delay` frames of silence from the stream start
        (`dsm.streams.silence`)."""
        if self._silence is None:
            frames = max(1, self.audio_delay)
            self._silence = silence_codes(self.codec, frames)[: self.num_codebooks]
        return self._silence

    def aligned(self, index: int) -> AlignedItem:
        item = super().aligned(index)
        target = self.rows["target_audio"]
        source = self.rows["source_audio"]
        if not self.target_audio:
            keep = [0, *range(source.start, source.stop)]
            return AlignedItem(item.codes[keep], item.mask[keep], item.stats)
        lead = min(self.audio_delay, item.codes.shape[-1])
        if lead > 0:
            item.codes[target, :lead] = self.lead_silence()[:, :lead]
            item.mask[target, :lead] = True
        return item


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DistributedDataParallel keeps it in .module


@register_task
class TranslationTask(Task):
    """Speech translation: source codes in, target text (and target codes) out."""

    kind = "translation"
    config_class = TranslationConfig
    needs_manifest = True

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        config: TranslationConfig = self.config
        if (recipe.data.valid_manifest is None) != (config.valid_target_manifest is None):
            raise RecipeError(
                f"{recipe.source}: data.valid_manifest and task.valid_target_manifest go "
                "together (the source and target sides of the validation pairs)"
            )
        self._codec: Any = None
        self._tokenizer: Any = None

    # --- parts ---------------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        if self._codec is None:
            from dsm.codecs import load_codec

            config: TranslationConfig = self.config
            try:
                codec = load_codec(config.codec)
            except (ValueError, OSError) as error:
                raise RecipeError(f"{self.recipe.source}: task.codec = {config.codec!r}: "
                                  f"{error}") from None
            if config.num_codebooks > codec.num_codebooks:
                raise RecipeError(
                    f"{self.recipe.source}: task.num_codebooks = {config.num_codebooks} but "
                    f"the codec has {codec.num_codebooks}"
                )
            self._codec = codec.eval() if isinstance(codec, nn.Module) else codec
        return self._codec

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from dsm.streams.tokenizer import TextTokenizer

            self._tokenizer = TextTokenizer.load(self.config.tokenizer)
        return self._tokenizer

    def delays(self) -> tuple[int, int]:
        """(text_delay, audio_delay) in frames of the codec."""
        rate = float(self.codec.frame_rate)
        return round(self.config.text_delay_s * rate), round(self.config.audio_delay_s * rate)

    def lm_config(self) -> Any:
        from dsm.models import LMConfig

        c: TranslationConfig = self.config
        K = c.num_codebooks
        dep_q = K if c.target_audio else 0
        generated = ([0] + [c.acoustic_delay] * (K - 1)) if c.target_audio else []
        return LMConfig(
            dim=c.dim, num_heads=c.num_heads, num_layers=c.num_layers,
            hidden_scale=c.hidden_scale, context=c.context, max_period=c.max_period,
            norm="rms_norm_f32", gating="silu", positional_embedding="rope",
            card=int(self.codec.cardinality), n_q=dep_q + K, dep_q=dep_q,
            text_card=int(self.tokenizer.vocab_size), delays=[0, *generated] + [0] * K,
            depformer_dim=c.depformer_dim, depformer_num_heads=c.depformer_num_heads,
            depformer_num_layers=c.depformer_num_layers, depformer_multi_linear=True,
            depformer_weights_per_step=True, depformer_pos_emb="none",
            extras={"model_type": "translation"},
        )

    # --- data ----------------------------------------------------------------------------
    def build_dataset(self, split: Split) -> TranslationDataset | None:
        c: TranslationConfig = self.config
        data = self.recipe.data
        source, target = ((data.train_manifest, c.train_target_manifest) if split == "train"
                          else (data.valid_manifest, c.valid_target_manifest))
        if source is None or target is None:
            return None
        text_delay, audio_delay = self.delays()
        try:
            return TranslationDataset(
                source, "translation", self.tokenizer, self.codec,
                num_codebooks=c.num_codebooks, text_delay=text_delay, audio_delay=audio_delay,
                max_frames=c.max_frames, cache_dir=c.cache_dir, target_manifest=target,
                crop=c.crop if split == "train" else "start", seed=self.recipe.seed,
                target_audio=c.target_audio,
            )
        except (DatasetError, ManifestError) as error:
            raise RecipeError(f"{self.recipe.source}: {split} pairs ({source} + {target}): "
                              f"{error}") from None

    def collate(self, items: list[Any]) -> Any:
        return collate(items)

    # --- model and loss ------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        from dsm.models import build_lm

        return {"lm": build_lm(self.lm_config())}

    def compute_loss(self, models: Mapping[str, nn.Module], batch: Any) -> tuple[Tensor, Metrics]:
        c: TranslationConfig = self.config
        codes = batch["codes"]                              # [B, 1 (+K) + K, T]
        output = models["lm"](codes)
        loss = _unwrap(models["lm"]).compute_loss(
            codes, output, text_weight=c.text_weight,
            first_codebook_weight=c.first_codebook_weight, audio_weight=c.audio_weight)
        metrics: Metrics = {"text_loss": loss.text.detach()}
        if loss.audio.numel():
            metrics["audio_loss"] = loss.audio.detach().mean()
        valid = output.text_mask[:, 0] & (codes[:, 0] >= 0)     # [B, T]
        if bool(valid.any()):
            guess = output.text_logits[:, 0].argmax(-1)
            metrics["text_accuracy"] = (guess == codes[:, 0])[valid].float().mean()
        return loss.total, metrics

    def export(self, models: Mapping[str, nn.Module], directory: Path) -> None:
        """OUT/model: a translation model directory (LM, codec copy, tokenizer, delays).
        Text is decoded greedily; target speech is sampled (temperature 0.8, top 250), as
        greedy audio tokens tend to loop."""
        from dsm.models.model_dir import write_model_dir

        text_delay, _ = self.delays()
        lm = _unwrap(models["lm"])
        was_training = lm.training
        sampling = {"temp": 0.8, "top_k": 250, "temp_text": 0.0} if self.config.target_audio else None
        write_model_dir(Path(directory) / "model", lm.eval(), self.codec, self.config.tokenizer,
                        "translation", text_delay_s=text_delay / float(self.codec.frame_rate),
                        sampling=sampling)
        lm.train(was_training)
