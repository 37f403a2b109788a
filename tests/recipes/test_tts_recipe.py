"""TTS recipe: a tiny end-to-end run (loss goes down, checkpoint, exact resume, export to a
model directory that speaks), training data equal to what the streaming session feeds,
the text-loss targets, and bad input."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsm import cli
from dsm.api import speak
from dsm.codecs import load_codec, save_codec
from dsm.codecs.mimi import Mimi, MimiConfig
from dsm.codecs.seanet import SEANetConfig
from dsm.commands import eval as cmd_eval
from dsm.models import build_lm, preset
from dsm.models.model_dir import write_model_dir
from dsm.modules.transformer import TransformerConfig
from dsm.recipes.config import RecipeError, load_recipe
from dsm.recipes.ship import ship_model_dir
from dsm.recipes.tasks import init_from
from dsm.recipes.tasks.tts import (
    TTSTask,
    check_codec,
    export_checkpoint,
    noisy_audio,
)
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.trainer import Trainer
from dsm.streaming.model_dir import load_model_dir
from dsm.streaming.tts import TTSSession
from dsm.streams.silence import silence_codes
from dsm.streams.testing import train_tiny_tokenizer
from dsm.streams.text_stream import Word
from dsm.streams.tts_text import session_text_inputs, text_loss_targets

SR = 8000

UTTERANCES = [
    (2.0, [Word("the", 0.3, 0.5), Word("cat", 0.5, 0.9), Word("sat", 1.1, 1.6)]),
    (2.4, [Word("bonjour", 0.4, 1.0), Word("le", 1.0, 1.2), Word("chat", 1.2, 1.9)]),
    (1.6, [Word("river", 0.3, 0.8), Word("mountain", 0.8, 1.4)]),
    (2.2, [Word("seven", 0.35, 0.8), Word("hundred", 0.8, 1.3), Word("dogs", 1.3, 1.9)]),
    (1.8, [Word("paris", 0.3, 0.9), Word("station", 0.9, 1.5)]),
    (2.0, [Word("marie", 0.3, 0.7), Word("went", 0.7, 1.0), Word("to", 1.0, 1.2),
           Word("london", 1.2, 1.8)]),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny random Mimi codec directory, a tiny tokenizer, and a corpus manifest."""
    root = tmp_path_factory.mktemp("tts_assets")
    torch.manual_seed(0)
    config = MimiConfig(
        sample_rate=SR, frame_rate=12.5, codebook_dim=8, n_q=4, bins=32,
        seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[8, 8]),
        transformer=TransformerConfig(d_model=16, num_heads=2, num_layers=1,
                                      dim_feedforward=32, context=50, layer_scale=0.01),
    )
    codec = Mimi(config)
    for name, buffer in codec.named_buffers():  # give the codebooks distinct entries
        if name.endswith("embedding_sum"):
            buffer.copy_(torch.randn_like(buffer))
        elif name.endswith("cluster_usage"):
            buffer.fill_(1.0)
        elif name.endswith("_initialized"):
            buffer.fill_(1)
    save_codec(codec.eval(), root / "codec")
    train_tiny_tokenizer(root / "tok")
    rows = []
    rng = np.random.default_rng(0)
    for index, (seconds, words) in enumerate(UTTERANCES):
        wav = np.zeros(int(seconds * SR), dtype=np.float32)
        for number, word in enumerate(words):
            a, b = int(word.start * SR), int(word.end * SR)
            t = np.arange(b - a) / SR
            wav[a:b] = 0.3 * np.sin(2 * np.pi * (150 + 40 * number) * t) + \
                0.05 * rng.standard_normal(b - a)
        audio = root / f"utt{index}.wav"
        sf.write(audio, wav, SR)
        rows.append({"audio": str(audio), "duration": seconds, "id": f"u{index}", "lang": "en",
                     "speaker": "espeak:en" if index % 2 else "flite:awb",
                     "text": " ".join(w.word for w in words),
                     "words": [w.__dict__ for w in words]})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "codec", root / "tok" / "tiny.model", manifest


def _recipe(root: Path, assets: tuple[Path, Path, Path], max_steps: int = 12,
            extra: str = "") -> Path:
    codec, tokenizer, manifest = assets
    text = f"""
kind = "tts"
seed = 0
[data]
train_manifest = "{manifest}"
batch_size = 3
[train]
max_steps = {max_steps}
log_every = 1
checkpoint_every = 100
progress = false
[optim]
lr = 3e-3
warmup_steps = 2
[task]
codec = "{codec}"
tokenizer = "{tokenizer}"
audio_delay_seconds = 0.32
max_frames = 48
cache_dir = "{root / 'cache'}"
{extra}
[task.model]
dim = 32
num_heads = 2
num_layers = 2
depformer_dim = 32
depformer_num_heads = 2
depformer_num_layers = 1
"""
    path = root / "tts.toml"
    path.write_text(text)
    return path


def test_tiny_tts_run_learns_checkpoints_resumes_and_exports(
    tmp_path: Path, assets: tuple[Path, Path, Path]
) -> None:
    recipe_path = _recipe(tmp_path, assets, extra="audio_noise = 0.2")  # noise resumes exactly too
    full = Trainer(load_recipe(recipe_path), tmp_path / "full").fit()
    assert full.step == 12
    rows = read_metrics(tmp_path / "full" / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    assert all(k in rows[0] for k in ("text", "audio0", "audio_rest"))
    assert (tmp_path / "full" / "checkpoints" / "step_00000012.pt").is_file()

    # Interrupted after 5 steps and resumed: the same step count and losses, bit for bit.
    Trainer(load_recipe(recipe_path), tmp_path / "split").fit(stop_after=5)
    assert [p.name for p in (tmp_path / "split" / "checkpoints").iterdir()] == [
        "step_00000005.pt"]
    resumed = Trainer(load_recipe(recipe_path), tmp_path / "split", resume=True)
    assert resumed.step == 5
    resumed.fit()
    split_rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in split_rows] == [r["step"] for r in rows]
    for a, b in zip(rows[5:], split_rows[5:]):
        for key in ("loss", "text", "audio0", "audio_rest"):
            assert float(a[key]) == float(b[key]), (a["step"], key)

    # The export is a TTS model directory that the streaming engine speaks with.
    model = load_model_dir(tmp_path / "full" / "model")
    assert model.task == "tts" and model.audio_delay == 4
    assert model.sampling == {"temp": 0.7, "top_k": 50, "temp_text": 0.0, "top_k_text": 1}
    # A checkpoint exports to the same model directory (how an unfinished run is tried).
    again = load_model_dir(export_checkpoint(
        tmp_path / "full" / "checkpoints" / "step_00000012.pt", tmp_path / "again"))
    for (name, a), b in zip(model.lm.state_dict().items(), again.lm.state_dict().values()):
        assert torch.equal(a, b), name
    # task.init_from starts a new run from that model directory or that checkpoint, exactly
    for source in (tmp_path / "full" / "model",
                   tmp_path / "full" / "checkpoints" / "step_00000012.pt"):
        started = _task(tmp_path, assets, extra=f"init_from = '{source}'").build_models()["lm"]
        for (name, a), b in zip(model.lm.state_dict().items(), started.state_dict().values()):
            assert torch.equal(a, b), (source.name, name)
    # ... and with init_from_text = false (a new tokenizer) its text tables start fresh,
    # the depformer's included, and nothing else does
    torch.manual_seed(3)
    retokenized = _task(tmp_path, assets, extra=f"init_from = '{tmp_path / 'full' / 'model'}'"
                        "\ninit_from_text = false").build_models()["lm"]
    torch.manual_seed(3)
    fresh = _task(tmp_path, assets).build_models()["lm"].state_dict()
    tables = [key for key in fresh if init_from.TEXT_TABLES.fullmatch(key)]
    assert "depformer_text_emb.weight" in tables and "text_linear.weight" in tables
    for key, value in retokenized.state_dict().items():
        expected = fresh[key] if key in tables else model.lm.state_dict()[key]
        assert torch.equal(value, expected), key
    speech = speak(["the cat sat", "river"], model=model, batch_size=2)
    for spoken in speech:
        assert spoken.pcm.size > 0 and spoken.pcm.size % model.codec.frame_size == 0
        assert np.isfinite(spoken.pcm).all() and spoken.first_audio_s > 0
    assert [w for w, _, _ in speech[0].words] == ["the", "cat", "sat"]

    # Shipped beside a shared codec ("../codec"): loads, and a swapped codec is caught.
    shipped = ship_model_dir(tmp_path / "full" / "model", tmp_path / "assets" / "tts")
    shutil.copytree(tmp_path / "full" / "model" / "codec", tmp_path / "assets" / "codec")
    assert not (shipped / "codec").exists()
    check_codec(load_model_dir(shipped))
    other = load_codec(tmp_path / "assets" / "codec")
    with torch.no_grad():
        next(iter(other.parameters())).add_(0.01)
    shutil.rmtree(tmp_path / "assets" / "codec")
    save_codec(other, tmp_path / "assets" / "codec")
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        check_codec(load_model_dir(shipped))

    # `dsm eval tts --model DIR --asr-model DIR` runs it end to end (a random ASR model here:
    # the figures are garbage, the wiring and the table are what is checked).
    codec_dir, tokenizer, manifest = assets
    asr = build_lm(preset("tiny-stt", num_layers=1, dim=32, num_heads=2, card=32, n_q=4,
                          text_card=model.tokenizer.vocab_size, delays=[0] * 5,
                          extra_heads_num_heads=0)).eval()
    asr_dir = write_model_dir(tmp_path / "asr", asr, load_codec(codec_dir), tokenizer, "asr",
                              text_delay_s=0.24)
    args = cmd_eval_args(["tts", "--manifest", str(manifest), "--model",
                          str(tmp_path / "full" / "model"), "--asr-model", str(asr_dir),
                          "--json", str(tmp_path / "eval.json")])
    assert cmd_eval.main(args) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["summary"]["utterances"] == len(UTTERANCES)
    assert all(u["first_audio_s"] > 0 for u in result["utterances"])
    assert 0 <= result["summary"]["wer"]
    args = cmd_eval_args(["tts", "--manifest", str(manifest), "--model", str(asr_dir)])
    assert cmd_eval.main(args) == 2  # an ASR model is not a TTS model: a clear error


def cmd_eval_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cmd_eval.add_arguments(parser)
    return parser.parse_args(argv)


def _task(root: Path, assets: tuple[Path, Path, Path], extra: str = "") -> TTSTask:
    return TTSTask(load_recipe(_recipe(root, assets, extra=extra)))


def test_training_text_row_is_what_the_session_feeds(
    tmp_path: Path, assets: tuple[Path, Path, Path]
) -> None:
    """A TTS session given the item's words as text (cut into chunks anywhere), its model
    proposing the training row's own decisions (pad / word start), feeds exactly the row's
    text inputs, ending at the end marker; the frames before the audio hold the codes of
    silence (`dsm.streams.silence`)."""
    task = _task(tmp_path, assets)
    dataset = task.build_dataset("train")
    tokenizer = task.tokenizer
    pad, start = tokenizer.pad_id, tokenizer.word_start_id
    silence = silence_codes(task.codec, task.audio_delay)
    for index in range(len(dataset)):
        item = dataset.aligned(index)
        text = item.codes[0].tolist()
        row, _ = dataset.items[index]
        session = TTSSession(tokenizer, frame_rate=float(task.codec.frame_rate),
                             audio_delay=task.audio_delay)
        spoken = "  ".join(word.word for word in row.words)
        for cut in range(0, len(spoken), 3):
            session.push_text(spoken[cut:cut + 3])
        session.end_text()
        fed = [session.force_text(token) for token in text]  # the row's decisions proposed
        inputs = session_text_inputs(item.codes[None], pad, start)[0, 0].tolist()
        assert fed == inputs, index
        assert inputs != text and sum(t == start for t in text) == len(row.words) + 1
        feeder = session.feeder
        assert feeder.end_position == max(i for i, t in enumerate(text) if t == start)
        assert [w for w, _ in feeder.consumed] == [w.word for w in row.words]
        assert torch.equal(item.codes[1:, : task.audio_delay], silence)
        assert item.mask[1:, : task.audio_delay].all()
        audio_frames = item.codes.shape[1] - task.audio_delay
        assert (item.codes[1:, task.audio_delay:] >= 0).sum() >= audio_frames - 1


def test_text_loss_only_where_the_session_listens() -> None:
    codes = torch.tensor([[[3, 3, 0, 17, 42, 3, 0, 9, 0, 3], [5] * 10]])
    targets = text_loss_targets(codes, pad_id=3, word_start_id=0)
    assert targets[0, 0].tolist() == [3, 3, 0, -1, -1, 3, 0, -1, 0, 3]
    assert torch.equal(targets[0, 1], codes[0, 1])
    inputs = session_text_inputs(codes, pad_id=3, word_start_id=0)
    assert inputs[0, 0].tolist() == [3, 3, 0, 17, 42, 3, 0, 9, 3, 3]  # end marker read as pad
    assert torch.equal(inputs[0, 1], codes[0, 1])
    assert codes[0, 0, 8] == 0  # the batch itself is left untouched


def test_audio_noise_replaces_audio_codes_only_at_its_rate() -> None:
    torch.manual_seed(0)
    codes = torch.randint(0, 64, (4, 5, 500))
    codes[:, 0] = 3
    codes[:, 2, :10] = -1
    noisy = noisy_audio(codes, 0.3, card=64)
    assert torch.equal(noisy[:, 0], codes[:, 0])            # text untouched
    assert (noisy[:, 2, :10] == -1).all()                   # "no token" stays
    assert noisy.min() >= -1 and noisy.max() < 64
    changed = (noisy[:, 1:] != codes[:, 1:]).float().mean().item()
    assert 0.25 < changed < 0.33                            # 0.3, less same-code draws
    assert torch.equal(noisy_audio(codes, 0.0, card=64), codes)


def test_speaker_filter_and_bad_recipes(tmp_path: Path, assets: tuple[Path, Path, Path]) -> None:
    task = _task(tmp_path, assets, extra='speakers = ["flite:"]')
    assert len(task.build_dataset("train")) == 3
    with pytest.raises(RecipeError, match="speakers"):
        _task(tmp_path, assets, extra='speakers = ["nobody"]').build_dataset("train")
    with pytest.raises(RecipeError, match="task.num_codebooks"):
        _task(tmp_path, assets, extra="num_codebooks = 9").build_models()
    with pytest.raises(RecipeError, match="audio_noise"):
        _task(tmp_path, assets, extra="audio_noise = 1.5")
    with pytest.raises(RecipeError, match="unknown|bogus"):
        _task(tmp_path, assets, extra="bogus = 1")
    with pytest.raises(RecipeError, match="neither a model directory nor a checkpoint"):
        _task(tmp_path, assets, extra=f"init_from = '{tmp_path / 'nowhere'}'").build_models()
    torch.save({"models": {"model": {}}}, tmp_path / "asr-run.pt")
    with pytest.raises(RecipeError, match="not a dsm train checkpoint of a TTS run"):
        _task(tmp_path, assets, extra=f"init_from = '{tmp_path / 'asr-run.pt'}'").build_models()
    torch.save({"models": {"lm": {"stray": torch.zeros(1)}}}, tmp_path / "other-shapes.pt")
    with pytest.raises(RecipeError, match="do not fit this recipe's model"):
        _task(tmp_path, assets,
              extra=f"init_from = '{tmp_path / 'other-shapes.pt'}'").build_models()
    recipe = load_recipe(_recipe(tmp_path, assets))
    recipe.task.tokenizer = str(tmp_path / "missing.model")
    with pytest.raises(RecipeError, match="task.tokenizer"):
        Trainer(recipe, tmp_path / "out")


def test_dsm_data_codes_fills_the_tts_cache_for_the_recipes_speakers(
        tmp_path: Path, assets: tuple[Path, Path, Path], capsys) -> None:
    recipe_path = _recipe(tmp_path, assets, extra='speakers = ["flite:"]')
    assert cli.main(["data", "codes", str(recipe_path), "--workers", "2", "--no-progress"]) == 0
    assert "train: 3 items, 0 codes found in the cache, 3 encoded" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3  # the filtered rows only
    dataset = _task(tmp_path, assets, extra='speakers = ["flite:"]').build_dataset("train")
    for index in range(len(dataset)):
        dataset.aligned(index)
    assert (dataset.cache.hits, dataset.cache.misses) == (3, 0)
