"""The codec recipe (`kind = "codec"`): train a Mimi-style codec as a GAN generator.

One training step on a batch of audio crops `wav [B, 1, N]`:
  1. quantizer dropout: with probability `q_dropout`, the step uses only the first
     n codebooks, n uniform in [n_q_semantic, n_q] (drawn from (seed, step, micro-batch),
     so a resumed run draws the same n and every rank uses the same n);
  2. the generator (the codec) reconstructs `fake = codec(wav).audio`; the RVQ returns its
     commitment loss and learns its codebooks by EMA;
  3. from step `adversarial_start` on, the multi-scale STFT discriminator takes one hinge
     step on (wav, fake.detach());
  4. the generator's losses on `fake` (waveform L1, multi-scale mel, optionally
     multi-scale STFT and differentiable STOI, and with the GAN the hinge adversarial and
     feature-matching losses through the just-updated discriminator) go through the
     `Balancer`, which turns their weights into shares of the gradient on `fake`; the
     commitment loss, which does not go through `fake`, is added with its own weight.

The reported `loss` is the weighted sum of the reconstruction losses (L1, mel, STFT, STOI),
the number that should go down. `export` writes `OUT/codec`, a directory `load_codec` reads.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dsm.audio_io import read_audio
from dsm.codecs.init import unit_gain_init
from dsm.codecs.loading import save_codec
from dsm.codecs.mimi import Mimi, MimiConfig
from dsm.models.hub import ModelRefError, is_repo_ref, resolve_model_ref
from dsm.recipes.config import RecipeError
from dsm.recipes.data.manifest import jsonl_objects
from dsm.recipes.tasks.base import Metrics, Split, StepContext, Task, register_task
from dsm.recipes.tasks.codec_losses import (
    MultiScaleMelLoss,
    MultiScaleSTFTLoss,
    STOILoss,
    waveform_l1_loss,
)
from dsm.recipes.tasks.discriminator import (
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)
from dsm.recipes.training.balancer import Balancer

RECONSTRUCTION_LOSSES = ("l1", "mel", "stft", "stoi")
TRAIN_PARTS = ("all", "decoder")
GAN_LOSSES = ("adversarial", "feature")


@dataclass
class CodecLossWeights:
    """Shares of the generator's gradient (through the balancer); 0 turns a loss off."""

    l1: float = 0.1
    mel: float = 1.0
    stft: float = 0.0
    stoi: float = 0.0        # 1 - differentiable STOI (see losses.STOILoss)
    adversarial: float = 3.0
    feature: float = 3.0

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        if any(v < 0 for v in values.values()):
            raise ValueError(f"loss weights must be >= 0, got {values}")
        if not any(values[name] > 0 for name in RECONSTRUCTION_LOSSES + GAN_LOSSES):
            raise ValueError("at least one loss weight must be > 0")


@dataclass
class CodecTaskConfig:
    """The codec to train (a `MimiConfig`, any size), its training crops and its losses."""

    codec: MimiConfig = field(default_factory=MimiConfig)
    segment_seconds: float = 2.0            # crop length, rounded to whole frames
    q_dropout: float = 0.5                  # probability that a step drops codebooks
    commitment_weight: float = 1.0          # RVQ commitment loss, outside the balancer
    weights: CodecLossWeights = field(default_factory=CodecLossWeights)
    balance: bool = True                    # False: plain weighted sum of gradients
    balancer_total_norm: float = 1.0
    balancer_ema_decay: float = 0.999
    mel_log2_windows: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9, 10, 11])
    mel_bands: int = 64
    stft_resolutions: list[tuple[int, int, int]] = field(
        default_factory=lambda: [(512, 128, 512), (1024, 256, 1024), (2048, 512, 2048)]
    )
    discriminator_resolutions: list[tuple[int, int, int]] = field(
        default_factory=lambda: [
            (2048, 512, 2048), (1024, 256, 1024), (512, 128, 512), (256, 64, 256),
            (128, 32, 128),
        ]
    )
    discriminator_filters: int = 32
    adversarial_start: int = 0              # reconstruction-only steps before the GAN starts
    init: str = "unit_gain"                 # conv init: "unit_gain" (dsm.codecs.init) | "torch"
    init_from: str | None = None            # start from this codec: a directory, a checkpoint
                                            # or a model's Hugging Face repo id (its Mimi)
    # "all", or "decoder": the encoder side (encoder, its transformer, downsampling,
    # quantizer with its codebooks) is frozen, so the codes stay what they are while the
    # decoder keeps learning. Models trained on the codes stay valid (same fingerprint).
    train_part: str = "all"

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0:
            raise ValueError("segment_seconds must be > 0")
        if not 0.0 <= self.q_dropout <= 1.0:
            raise ValueError("q_dropout must be a probability in [0, 1]")
        if self.commitment_weight < 0 or self.balancer_total_norm <= 0:
            raise ValueError("commitment_weight must be >= 0 and balancer_total_norm > 0")
        if not 0.0 <= self.balancer_ema_decay < 1.0:
            raise ValueError("balancer_ema_decay must be in [0, 1)")
        if not self.mel_log2_windows or any(not 3 <= e <= 14 for e in self.mel_log2_windows):
            raise ValueError("mel_log2_windows must be a non-empty list of exponents in [3, 14]")
        if self.adversarial_start < 0 or self.discriminator_filters < 1 or self.mel_bands < 1:
            raise ValueError("adversarial_start must be >= 0, discriminator_filters and "
                             "mel_bands >= 1")
        if not self.discriminator_resolutions:
            raise ValueError("discriminator_resolutions must not be empty")
        if self.init not in ("unit_gain", "torch"):
            raise ValueError(f"init must be 'unit_gain' or 'torch', got {self.init!r}")
        if self.train_part not in TRAIN_PARTS:
            raise ValueError(f"train_part must be one of {TRAIN_PARTS}, got {self.train_part!r}")
        if self.train_part == "decoder" and self.init_from is None:
            raise ValueError("train_part = 'decoder' needs init_from (the codec whose codes to keep)")

    def segment_samples(self) -> int:
        frame_size = round(self.codec.sample_rate / self.codec.frame_rate)
        frames = max(1, round(self.segment_seconds * self.codec.frame_rate))
        return frames * frame_size


def load_codec_checkpoint(path: str | Path) -> dict[str, Any]:
    """A codec run's trainer checkpoint; ValueError for any other file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if checkpoint.get("kind") != "codec" or "generator" not in checkpoint["models"]:
            raise KeyError("kind")
    except Exception:  # not a torch file, or a checkpoint of another kind of run
        raise ValueError(f"{path} is not a codec run's checkpoint") from None
    return checkpoint


def codec_from_checkpoint(path: str | Path) -> Mimi:
    """The codec of a codec run's trainer checkpoint (to ship or evaluate a run that has not
    finished), in eval mode."""
    from dsm.recipes.config import recipe_from_dict

    checkpoint = load_codec_checkpoint(path)
    recipe = recipe_from_dict(checkpoint["recipe"], str(path), check_paths=False)
    codec = Mimi(dataclasses.replace(recipe.task.codec, q_dropout=False))
    codec.load_state_dict(checkpoint["models"]["generator"])
    return codec.eval()


# ------------------------------------------------------------------------------ data


def manifest_audio_paths(manifest: str | Path) -> list[Path]:
    """The `audio` of every row of a JSONL manifest, relative paths taken from the
    manifest's directory (or the current one when only that exists). Each must exist."""
    manifest = Path(manifest)
    paths = []
    for number, row in jsonl_objects(manifest, RecipeError):
        audio = row.get("audio")
        if not isinstance(audio, str) or not audio:
            raise RecipeError(f"{manifest}:{number}: row has no string 'audio' path")
        path = Path(audio)
        if not path.is_absolute():
            beside = manifest.parent / path
            path = beside if beside.exists() or not path.exists() else path
        if not path.is_file():
            raise RecipeError(f"{manifest}:{number}: audio file {audio!r} not found ({path})")
        paths.append(path)
    return paths


class AudioCrops(Dataset):
    """One crop `[1, segment_samples]` per file; training crops start at a position drawn
    from (seed, epoch, index), validation crops at 0. Short files are zero-padded."""

    def __init__(self, paths: list[Path], sample_rate: int, segment_samples: int, seed: int,
                 random_offsets: bool) -> None:
        self.paths, self.sample_rate = paths, sample_rate
        self.segment_samples, self.seed = segment_samples, seed
        self.random_offsets = random_offsets
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        if index not in self._cache:
            self._cache[index] = read_audio(self.paths[index], self.sample_rate)
        audio = self._cache[index]
        spare = audio.size - self.segment_samples
        offset = 0
        if self.random_offsets and spare > 0:
            draw = random.Random(f"{self.seed}/{self.epoch}/{index}")
            offset = draw.randint(0, spare)
        crop = np.zeros(self.segment_samples, dtype=np.float32)
        piece = audio[offset:offset + self.segment_samples]
        crop[:piece.size] = piece
        return torch.from_numpy(crop)[None]


# ------------------------------------------------------------------------------ task


@register_task
class CodecTask(Task):
    """Codec: a Mimi-style codec trained with reconstruction and GAN losses."""

    kind = "codec"
    config_class = CodecTaskConfig
    optimizer_names = ("generator", "discriminator")
    needs_manifest = True
    find_unused_parameters = True   # quantizer dropout leaves codebook projections unused

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        config: CodecTaskConfig = self.config
        weights = config.weights
        self.mel_loss = MultiScaleMelLoss(
            config.codec.sample_rate, tuple(config.mel_log2_windows), n_mels=config.mel_bands)
        self.stft_loss = MultiScaleSTFTLoss(tuple(config.stft_resolutions))
        self.stoi_loss = STOILoss(config.codec.sample_rate)
        self.uses_gan = weights.adversarial > 0 or weights.feature > 0

    # --- data --------------------------------------------------------------------------
    def build_dataset(self, split: Split) -> Dataset | None:
        data = self.recipe.data
        manifest = data.train_manifest if split == "train" else data.valid_manifest
        if manifest is None:
            return None
        config: CodecTaskConfig = self.config
        return AudioCrops(
            manifest_audio_paths(manifest), config.codec.sample_rate, config.segment_samples(),
            self.recipe.seed, random_offsets=split == "train",
        )

    # --- models ------------------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        config: CodecTaskConfig = self.config
        # The task does quantizer dropout itself (reproducibly); the codec never does.
        codec = Mimi(dataclasses.replace(config.codec, q_dropout=False))
        if config.init == "unit_gain":
            unit_gain_init(codec)  # torch's default init stalls training (see dsm.codecs.init)
        if config.init_from is not None:
            codec.load_state_dict(self._initial_weights(config.init_from, codec))
        if config.train_part == "decoder":
            for module in codec.encoder_side():
                module.requires_grad_(False)
        # Built even without GAN losses (it then never steps), so every codec run has the
        # same optimizers and checkpoints.
        discriminator = MultiScaleSTFTDiscriminator(
            tuple(config.discriminator_resolutions), filters=config.discriminator_filters)
        models: dict[str, nn.Module] = {"generator": codec, "discriminator": discriminator}
        weights = {name: getattr(config.weights, name)
                   for name in RECONSTRUCTION_LOSSES + GAN_LOSSES
                   if getattr(config.weights, name) > 0}
        models["balancer"] = Balancer(
            weights, total_norm=config.balancer_total_norm,
            ema_decay=config.balancer_ema_decay, balance=config.balance,
        )
        return models

    def _initial_weights(self, source: str, codec: Mimi) -> dict[str, Tensor]:
        """Codec weights from a codec directory, a codec run's trainer checkpoint, or the
        codec of a model named by its Hugging Face repo id (e.g. a Kyutai repo's Mimi)."""
        from dsm.codecs import load_codec
        from dsm.codecs.mimi import check_state_dict

        where = f"{self.recipe.source}: key 'task.init_from'"
        path = Path(source)
        if not path.exists() and is_repo_ref(source):
            state = self._model_codec_weights(source, where)
        elif path.is_dir():
            state = load_codec(path).state_dict()
        elif path.is_file():
            try:
                state = load_codec_checkpoint(path)["models"]["generator"]
            except ValueError as error:
                raise RecipeError(f"{where}: {error}") from None
        else:
            raise RecipeError(f"{where}: {path} does not exist")
        try:
            check_state_dict(codec, state, f"{where} ({path})")
        except ValueError as error:
            raise RecipeError(str(error)) from None
        return state

    @staticmethod
    def _model_codec_weights(source: str, where: str) -> dict[str, Tensor]:
        """The codec weights of the model directory a Hugging Face repo id resolves to."""
        import json

        from dsm.codecs import load_codec
        from dsm.models.model_dir import ModelDirError, codec_spec

        try:
            directory = resolve_model_ref(source)
            extras = json.loads((directory / "config.json").read_text())
            return load_codec(codec_spec(directory, extras)).state_dict()
        except (ModelRefError, ModelDirError, OSError, ValueError) as error:
            raise RecipeError(f"{where}: {error}") from None

    def optimizer_parameters(self, models: Mapping[str, nn.Module]) -> dict[str, list[nn.Parameter]]:
        return {
            "generator": [p for p in models["generator"].parameters() if p.requires_grad],
            "discriminator": list(models["discriminator"].parameters()),
        }

    # --- steps -------------------------------------------------------------------------
    def _num_codebooks(self, codec: Mimi, step: int, micro_batch: int) -> int:
        config: CodecTaskConfig = self.config
        total, low = codec.total_codebooks, config.codec.n_q_semantic
        draw = random.Random(f"q_dropout/{self.recipe.seed}/{step}/{micro_batch}")
        if config.q_dropout > 0 and draw.random() < config.q_dropout:
            return draw.randint(low, total)
        return total

    @staticmethod
    def _schedule_dead_code_checks(codec: Mimi, step: int, micro_batch: int) -> None:
        """Make the codebooks' dead-code replacement a function of the step number.

        A `Codebook` counts its own calls in a plain attribute that checkpoints do not
        hold, so a resumed run would replace dead codes at other steps than the original.
        Here each codebook checks on the first micro-batch of every
        `check_unused_every`-th optimizer step instead, whatever happened before.
        """
        for layer in codec.modules():
            every = getattr(layer, "check_unused_every", None)
            if every is None or not hasattr(layer, "_steps_to_check"):
                continue
            due = micro_batch == 0 and step % every == every - 1
            layer._steps_to_check = 1 if due else 1 << 30

    def _reconstruction_losses(self, fake: Tensor, wav: Tensor, delay: int = 0
                               ) -> dict[str, Tensor]:
        """Losses of `fake` against `wav`; a codec that declares `delay` samples of delay
        is compared with the input that many samples earlier."""
        weights: CodecLossWeights = self.config.weights
        if delay:
            fake, wav = fake[..., delay:], wav[..., : wav.shape[-1] - delay]
        self.mel_loss.to(wav.device)
        losses: dict[str, Tensor] = {}
        if weights.l1 > 0:
            losses["l1"] = waveform_l1_loss(fake, wav)
        if weights.mel > 0:
            losses["mel"] = self.mel_loss(fake, wav)
        if weights.stft > 0:
            losses["stft"] = self.stft_loss(fake, wav)
        if weights.stoi > 0:
            losses["stoi"] = self.stoi_loss.to(wav.device)(fake, wav)
        return losses

    def _weighted_reconstruction(self, losses: Mapping[str, Tensor], like: Tensor) -> Tensor:
        weights: CodecLossWeights = self.config.weights
        total = like.new_zeros(())
        for name in RECONSTRUCTION_LOSSES:
            if name in losses:
                total = total + getattr(weights, name) * losses[name].detach()
        return total

    def train_step(self, batch: Tensor, ctx: StepContext) -> Metrics:
        config: CodecTaskConfig = self.config
        wav = batch.float()                                  # [B, 1, N]
        codec: Mimi = ctx.raw_models["generator"]            # type: ignore[assignment]
        balancer: Balancer = ctx.raw_models["balancer"]      # type: ignore[assignment]
        if config.train_part == "decoder":
            for module in codec.encoder_side():
                module.eval()  # codebooks keep their centroids: no EMA, no dead-code swaps
        num_codebooks = self._num_codebooks(codec, ctx.step, ctx.micro_batch)
        codec.set_num_codebooks(num_codebooks)
        self._schedule_dead_code_checks(codec, ctx.step, ctx.micro_batch)
        try:
            out = ctx.models["generator"](wav)
        finally:
            codec.set_num_codebooks(codec.total_codebooks)
        fake = out.audio.float()                             # [B, 1, N]
        metrics: dict[str, Tensor | float] = {"num_codebooks": float(num_codebooks)}

        gan_on = self.uses_gan and ctx.step >= config.adversarial_start
        if gan_on:
            real_logits, _ = ctx.models["discriminator"](wav)
            fake_logits, _ = ctx.models["discriminator"](fake.detach())
            d_loss = discriminator_hinge_loss(real_logits, fake_logits)
            ctx.update("discriminator", d_loss)
            metrics["d_loss"] = d_loss.detach()

        losses = self._reconstruction_losses(fake, wav, codec.delay_samples)
        if gan_on:
            # The updated discriminator judges the fake; its own gradients stay untouched.
            discriminator = ctx.raw_models["discriminator"]
            fake_logits, fake_features = discriminator(fake)
            with torch.no_grad():
                _, real_features = discriminator(wav)
            if config.weights.adversarial > 0:
                losses["adversarial"] = generator_hinge_loss(fake_logits)
            if config.weights.feature > 0:
                losses["feature"] = feature_matching_loss(real_features, fake_features)
        commitment = out.commitment_loss
        extra = config.commitment_weight * commitment if commitment.requires_grad else None
        surrogate, stats = balancer.surrogate_loss(losses, fake, extra=extra)
        ctx.update("generator", surrogate)

        metrics["loss"] = self._weighted_reconstruction(losses, wav)
        for name, value in losses.items():
            metrics[name] = value.detach()
        metrics["commitment"] = commitment.detach()
        for name, value in out.metrics.items():
            metrics[f"codebook_{name}"] = value.detach() if isinstance(value, Tensor) else value
        for name, value in stats.items():
            if name.startswith("share_norm/"):
                metrics[f"balancer/{name.split('/', 1)[1]}"] = value
        return metrics

    @torch.no_grad()
    def valid_step(self, models: Mapping[str, nn.Module], batch: Tensor) -> Metrics:
        wav = batch.float()
        codec = models["generator"]
        out = codec(wav)
        fake = out.audio.float()
        losses = self._reconstruction_losses(fake, wav, getattr(codec, "delay_samples", 0))
        metrics: dict[str, Tensor | float] = {"loss": self._weighted_reconstruction(losses, wav)}
        metrics.update({name: value.detach() for name, value in losses.items()})
        return metrics

    def export(self, models: Mapping[str, nn.Module], directory: Path) -> None:
        codec: Mimi = models["generator"]  # type: ignore[assignment]
        codec.set_num_codebooks(codec.total_codebooks)
        save_codec(codec, Path(directory) / "codec")
