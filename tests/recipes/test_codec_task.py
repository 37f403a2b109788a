"""Codec recipe: a tiny end-to-end run (loss goes down, checkpoint, exact resume, export),
the GAN step's order and isolation, quantizer dropout, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsm.codecs import load_codec
from dsm.recipes.config import RecipeError, load_recipe
from dsm.recipes.ship import ship_codec
from dsm.recipes.tasks.codec import CodecTask
from dsm.recipes.tasks.codec_losses import STOILoss
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.trainer import Trainer

SR = 8000

TINY_TASK = """
[task]
segment_seconds = 0.2
mel_log2_windows = [5, 6, 7, 8]
mel_bands = 32
discriminator_resolutions = [[256, 64, 256], [128, 32, 128]]
discriminator_filters = 8
adversarial_start = {adversarial_start}
[task.codec]
sample_rate = 8000
frame_rate = 250.0
codebook_dim = 8
n_q = 4
bins = 16
[task.codec.seanet]
dimension = 16
n_filters = 4
ratios = [4, 4]
[task.codec.transformer]
d_model = 16
num_heads = 2
num_layers = 1
dim_feedforward = 32
context = 50
layer_scale = 0.01
"""


def _corpus(root: Path, count: int = 8) -> Path:
    """Harmonic 'voices' of different pitches, 0.5 s each, and their manifest."""
    rows = []
    for i in range(count):
        t = np.arange(SR // 2) / SR
        f0 = 120 + 20 * i
        voice = sum(np.sin(2 * np.pi * k * f0 * t + i) / k for k in range(1, 8))
        voice *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
        sf.write(root / f"utt{i}.wav", (0.2 * voice).astype(np.float32), SR)
        rows.append({"audio": f"utt{i}.wav", "duration": 0.5, "text": "hello"})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _recipe(root: Path, manifest: Path, max_steps: int, adversarial_start: int = 0,
            extra: str = "") -> Path:
    text = f"""
kind = "codec"
seed = 0
[data]
train_manifest = "{manifest}"
batch_size = 4
[train]
max_steps = {max_steps}
log_every = 1
checkpoint_every = 100
progress = false
[optim]
lr = 1e-2
""" + TINY_TASK.format(adversarial_start=adversarial_start) + extra
    path = root / "codec.toml"
    path.write_text(text)
    return path


def test_tiny_codec_run_learns_checkpoints_resumes_and_exports(tmp_path: Path) -> None:
    manifest = _corpus(tmp_path)
    recipe_path = _recipe(tmp_path, manifest, max_steps=12, adversarial_start=6)

    full = Trainer(load_recipe(recipe_path), tmp_path / "full").fit()
    assert full.step == 12
    rows = read_metrics(tmp_path / "full" / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    # The GAN joined at step 7: the discriminator trained and the generator felt it.
    assert all(r.get("d_loss", "") in ("", None) for r in rows[:6])
    assert all(math.isfinite(float(r["d_loss"])) for r in rows[6:])
    assert all(float(r["balancer/adversarial"]) > 0 for r in rows[6:])
    assert (tmp_path / "full" / "checkpoints").is_dir()

    # Interrupted after 7 steps, resumed: the same losses, bit for bit.
    Trainer(load_recipe(recipe_path), tmp_path / "split").fit(stop_after=7)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == [
        "step_00000007.pt"
    ]
    resumed = Trainer(load_recipe(recipe_path), tmp_path / "split", resume=True)
    assert resumed.step == 7
    resumed.fit()
    split_rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in split_rows] == [r["step"] for r in rows]
    for a, b in zip(rows[7:], split_rows[7:]):
        for key in ("loss", "mel", "d_loss", "num_codebooks", "commitment"):
            assert float(a[key]) == float(b[key]), (a["step"], key)

    # The export is a codec directory that load_codec reads and that round-trips audio.
    codec = load_codec(tmp_path / "full" / "codec")
    assert (codec.sample_rate, codec.num_codebooks, codec.cardinality) == (SR, 4, 16)
    wav = torch.from_numpy(sf.read(tmp_path / "utt0.wav", dtype="float32")[0][:1600])[None, None]
    codes = codec.encode(wav)
    assert codes.shape == (1, 4, 50)
    assert codec.decode(codes).shape == (1, 1, 1600)


class _RecordingContext:
    """A stand-in for the trainer's step context that records updates."""

    def __init__(self, models: dict[str, torch.nn.Module], step: int) -> None:
        self.step, self.micro_batch, self.device = step, 0, torch.device("cpu")
        self.models = self.raw_models = models
        self.updates: list[tuple[str, dict[str, bool]]] = []

    def update(self, name: str, loss: torch.Tensor) -> None:
        for module in self.models.values():
            module.zero_grad(set_to_none=True)
        loss.backward()
        touched = {n: any(p.grad is not None and p.grad.abs().sum() > 0
                          for p in m.parameters()) for n, m in self.models.items()}
        self.updates.append((name, touched))

    def log(self, name: str, value: object) -> None:
        pass


def _task(tmp_path: Path, adversarial_start: int, extra: str = "") -> CodecTask:
    manifest = _corpus(tmp_path, count=4)
    recipe = load_recipe(_recipe(tmp_path, manifest, 10, adversarial_start, extra))
    return CodecTask(recipe)


def test_gan_step_order_and_isolation(tmp_path: Path) -> None:
    task = _task(tmp_path, adversarial_start=3)
    models = task.build_models()
    batch = torch.stack([task.build_dataset("train")[i] for i in range(2)])  # [2, 1, N]
    assert batch.shape == (2, 1, 1600)

    before = _RecordingContext(models, step=2)
    metrics = task.train_step(batch, before)
    assert [name for name, _ in before.updates] == ["generator"]
    assert "d_loss" not in metrics and "adversarial" not in metrics

    during = _RecordingContext(models, step=3)
    metrics = task.train_step(batch, during)
    (first, d_touched), (second, g_touched) = during.updates
    # Discriminator first, on a detached fake; then the generator, through the
    # discriminator without leaving gradients in it.
    assert (first, second) == ("discriminator", "generator")
    assert d_touched == {"generator": False, "discriminator": True, "balancer": False}
    assert g_touched == {"generator": True, "discriminator": False, "balancer": False}
    assert {"adversarial", "feature", "mel", "l1", "d_loss", "commitment"} <= set(metrics)


def test_quantizer_dropout_is_reproducible_and_in_range(tmp_path: Path) -> None:
    task = _task(tmp_path, adversarial_start=0)
    codec = task.build_models()["generator"]
    draws = [task._num_codebooks(codec, step, 0) for step in range(200)]
    assert draws == [task._num_codebooks(codec, step, 0) for step in range(200)]
    assert set(draws) == {1, 2, 3, 4}
    full_share = draws.count(4) / len(draws)  # 0.5 kept + 0.5 * 1/4 drawn as 4
    assert 0.5 < full_share < 0.75
    task.config.q_dropout = 0.0
    assert {task._num_codebooks(codec, step, 0) for step in range(50)} == {4}


def test_bad_recipes_fail_before_training(tmp_path: Path) -> None:
    manifest = _corpus(tmp_path, count=2)
    bad_key = _recipe(tmp_path, manifest, 5, extra="").read_text().replace(
        "bins = 16", "bins = 16\nbogus = 1")
    (tmp_path / "bad_key.toml").write_text(bad_key)
    with pytest.raises(RecipeError, match="bogus"):
        load_recipe(tmp_path / "bad_key.toml")
    wrong_type = _recipe(tmp_path, manifest, 5).read_text().replace(
        "segment_seconds = 0.2", 'segment_seconds = "long"')
    (tmp_path / "wrong_type.toml").write_text(wrong_type)
    with pytest.raises(RecipeError, match="segment_seconds"):
        load_recipe(tmp_path / "wrong_type.toml")

    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"audio": "nowhere.wav"}) + "\n")
    recipe = load_recipe(_recipe(tmp_path, missing, 5))
    with pytest.raises(RecipeError, match="nowhere.wav"):
        Trainer(recipe, tmp_path / "out_missing")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = load_recipe(_recipe(tmp_path, empty, 5))
    with pytest.raises(RecipeError, match="empty corpus"):
        Trainer(recipe, tmp_path / "out_empty")
    assert not (tmp_path / "out_empty" / "checkpoints").exists()


def test_decoder_only_run_keeps_the_codes_and_their_fingerprint(tmp_path: Path) -> None:
    """train_part = "decoder": from a finished run, only the decoder side learns; the
    encoder, the codebooks and so the codes (and the fingerprint models are trained
    against) stay exactly as they were."""
    from dsm.recipes.data.dataset import codec_fingerprint

    manifest = _corpus(tmp_path)
    Trainer(load_recipe(_recipe(tmp_path, manifest, max_steps=4)), tmp_path / "first").fit()
    before = load_codec(tmp_path / "first" / "codec")
    text = _recipe(tmp_path, manifest, max_steps=6).read_text().replace(
        "segment_seconds = 0.2",
        f'segment_seconds = 0.2\ninit_from = "{tmp_path / "first" / "codec"}"\n'
        'train_part = "decoder"')
    (tmp_path / "decoder.toml").write_text(text)
    Trainer(load_recipe(tmp_path / "decoder.toml"), tmp_path / "second").fit()
    after = load_codec(tmp_path / "second" / "codec")

    old, new = before.state_dict(), after.state_dict()
    side = tuple(f"{name}." for name in ("encoder", "encoder_transformer", "downsample",
                                         "quantizer"))
    assert all(torch.equal(old[k], new[k]) for k in old if k.startswith(side))
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    assert codec_fingerprint(after) == codec_fingerprint(before)
    wav = torch.from_numpy(sf.read(tmp_path / "utt1.wav", dtype="float32")[0][:1600])[None, None]
    with torch.no_grad():
        assert torch.equal(after.encode(wav), before.encode(wav))
        assert not torch.equal(after.decode(before.encode(wav)), before.decode(before.encode(wav)))

    # a checkpoint of a codec run is a valid start too (and `dsm ship codec` reads it: the
    # final checkpoint holds the exported codec); anything else is named
    checkpoint = next((tmp_path / "first" / "checkpoints").iterdir())
    ship_codec(checkpoint, tmp_path / "shipped")
    shipped = load_codec(tmp_path / "shipped").state_dict()
    assert all(torch.equal(shipped[k], old[k]) for k in old)
    ok = text.replace(str(tmp_path / "first" / "codec"), str(checkpoint))
    (tmp_path / "from_ckpt.toml").write_text(ok)
    assert CodecTask(load_recipe(tmp_path / "from_ckpt.toml")).build_models()
    for bad, match in ((str(tmp_path / "nowhere"), "does not exist"),
                       (str(manifest), "not a codec run's checkpoint")):
        (tmp_path / "bad.toml").write_text(text.replace(str(tmp_path / "first" / "codec"), bad))
        with pytest.raises(RecipeError, match=match):
            CodecTask(load_recipe(tmp_path / "bad.toml")).build_models()
    no_start = text.replace(f'init_from = "{tmp_path / "first" / "codec"}"\n', "")
    (tmp_path / "no_start.toml").write_text(no_start)
    with pytest.raises(RecipeError, match="needs init_from"):
        load_recipe(tmp_path / "no_start.toml")


def test_losses_compare_with_the_input_the_codec_s_declared_delay_earlier(tmp_path: Path) -> None:
    task = _task(tmp_path, adversarial_start=0)
    wav = 0.3 * torch.randn(2, 1, 1600)
    late = torch.nn.functional.pad(wav, (40, 0))[..., :1600]  # the input, 40 samples late
    aligned = task._reconstruction_losses(late, wav, delay=40)
    unaligned = task._reconstruction_losses(late, wav)
    assert all(float(value) < 1e-5 for value in aligned.values()), aligned
    assert float(unaligned["mel"]) > 0.1


def test_stoi_weight_adds_the_intelligibility_loss_to_the_balanced_ones(tmp_path: Path) -> None:
    extra = "[task.weights]\nl1 = 0.0\nmel = 1.0\nstoi = 1.0\nadversarial = 0.0\nfeature = 0.0\n"
    task = _task(tmp_path, adversarial_start=0, extra=extra)
    models = task.build_models()
    assert set(models["balancer"].weights) == {"mel", "stoi"}
    t = torch.arange(SR) / SR                                   # 1 s: enough for STOI segments
    wav = (0.3 * torch.sin(2 * torch.pi * 300 * t) * (1 + torch.sin(2 * torch.pi * 4 * t)))[None, None]
    noisy = wav + 0.2 * torch.randn_like(wav)
    losses = task._reconstruction_losses(noisy, wav)
    expected = STOILoss(SR)(noisy, wav)
    assert float(losses["stoi"]) == pytest.approx(float(expected), abs=1e-6) and float(expected) > 0.05
    assert float(task._reconstruction_losses(wav, wav)["stoi"]) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(RecipeError, match=">= 0"):
        _task(tmp_path, 0, extra.replace("stoi = 1.0", "stoi = -1.0"))
