"""Translation recipe: tiny end-to-end runs on a tiny synthesized EN→FR corpus (text-only
and text+speech targets): loss goes down, checkpoints, exact resume, export that
`dsm translate` and `dsm eval translation --model` read; the eval runner's BLEU is
sacrebleu's on the hypotheses it reports; bad input fails before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import soundfile
import torch
from helpers import keep_text_pieces

from dsm import cli
from dsm.api import translate
from dsm.codecs import save_codec
from dsm.codecs.testing import tiny_random_mimi
from dsm.models import build_lm
from dsm.models.model_dir import read_audio, write_model_dir
from dsm.recipes.config import RecipeError, load_recipe
from dsm.recipes.data.manifest import read_manifest
from dsm.recipes.eval.translation import source_manifest_for
from dsm.recipes.synth.corpus import synthesize_corpus
from dsm.recipes.tasks.translation import TranslationTask
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.trainer import Trainer
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny EN→FR corpus (5 pairs), a tiny random Mimi dir and a French tokenizer."""
    root = tmp_path_factory.mktemp("translation")
    synthesize_corpus(root / "enfr", parallel=True, hours=20 / 3600, seed=2, progress=False)
    save_codec(tiny_random_mimi(1), root / "codec")
    french = [row.text for row in read_manifest(root / "enfr" / "train.fr.jsonl")[0]]
    words = sorted({w for line in french for w in line.split()})
    lines = french + [" ".join(words[i:] + words[:i]) for i in range(0, len(words), 3)]
    train_tokenizer(lines, root / "tok_fr", vocab_size=300)
    return {"root": root, "en": root / "enfr" / "train.en.jsonl",
            "fr": root / "enfr" / "train.fr.jsonl", "codec": root / "codec",
            "tokenizer": root / "tok_fr.model", "cache": root / "cache"}


def _recipe(parts: dict[str, Path], directory: Path, *, target_audio: bool,
            max_steps: int = 8, extra: str = "") -> Path:
    text = f"""
kind = "translation"
seed = 0
[data]
train_manifest = "{parts['en']}"
batch_size = 2
[train]
max_steps = {max_steps}
log_every = 1
checkpoint_every = 100
progress = false
[optim]
lr = 1e-2
warmup_steps = 1
[task]
codec = "{parts['codec']}"
tokenizer = "{parts['tokenizer']}"
train_target_manifest = "{parts['fr']}"
target_audio = {str(target_audio).lower()}
num_codebooks = 4
text_delay_s = 0.32
audio_delay_s = 0.48
max_frames = 40
cache_dir = "{parts['cache']}"
dim = 64
num_heads = 4
num_layers = 2
context = 64
depformer_dim = 32
depformer_num_heads = 2
depformer_num_layers = 1
{extra}
"""
    path = directory / f"translation-{target_audio}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def trained(parts, tmp_path_factory) -> dict[bool, Path]:
    """Each variant trained 8 steps uninterrupted (its run dir), and 4 + resumed 4."""
    runs: dict[bool, Path] = {}
    for target_audio in (False, True):
        root = tmp_path_factory.mktemp(f"run-{target_audio}")
        recipe = _recipe(parts, root, target_audio=target_audio)
        result = Trainer(load_recipe(recipe), root / "full").fit()
        assert result.step == 8
        Trainer(load_recipe(recipe), root / "split").fit(stop_after=4)
        resumed = Trainer(load_recipe(recipe), root / "split", resume=True)
        assert resumed.step == 4
        resumed.fit()
        runs[target_audio] = root
    return runs


@pytest.mark.parametrize("target_audio", [False, True], ids=["text", "text+speech"])
def test_tiny_run_learns_checkpoints_resumes_and_exports(trained, target_audio) -> None:
    root = trained[target_audio]
    rows = read_metrics(root / "full" / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert ("audio_loss" in rows[0]) == target_audio
    assert sorted(p.name for p in (root / "full" / "checkpoints").iterdir()) == [
        "step_00000008.pt"]
    # Stopped after 4 steps and resumed: steps 5..8 have the same losses, bit for bit.
    split = read_metrics(root / "split" / "metrics.csv")
    assert [r["step"] for r in split] == [r["step"] for r in rows]
    for a, b in zip(rows[4:], split[4:]):
        for key in ("loss", "text_loss") + (("audio_loss",) if target_audio else ()):
            assert float(a[key]) == float(b[key]), (a["step"], key)
    # The export is a translation model directory of the right shape.
    model = load_model_dir(root / "full" / "model")
    assert model.task == "translation" and model.text_delay == 4  # 0.32 s at 12.5 Hz
    assert (model.lm.config.dep_q, model.lm.config.n_q) == ((4, 8) if target_audio else (0, 4))
    assert model.sampling == ({"temp": 0.8, "top_k": 250, "temp_text": 0.0} if target_audio else {})


def test_layout_of_items(parts, tmp_path) -> None:
    """Text-only items drop the target audio rows; text+speech items start their target
    audio with codes of silence (trained on), and hold the source codes below."""
    for target_audio in (False, True):
        task = TranslationTask(load_recipe(_recipe(parts, tmp_path, target_audio=target_audio)))
        data = task.build_dataset("train")
        full = super(type(data), data).aligned(0)  # the dataset's own layout [1 + 2K, L]
        item = data.aligned(0)
        if not target_audio:
            assert item.codes.shape[0] == 5
            assert torch.equal(item.codes[0], full.codes[0])
            assert torch.equal(item.codes[1:], full.codes[5:])
            continue
        assert item.codes.shape[0] == 9
        lead = data.audio_delay
        assert lead == 6 and bool((full.codes[1:5, :lead] == -1).all())
        silence = task.codec.encode(torch.zeros(1, 1, lead * task.codec.frame_size))[0]
        assert torch.equal(item.codes[1:5, :lead], silence)
        assert bool(item.mask[1:5, :lead].all())
        assert torch.equal(item.codes[:, lead:], full.codes[:, lead:])


def test_translate_command_reads_the_export(trained, parts, tmp_path, capsys) -> None:
    source = read_manifest(parts["en"])[0][0].audio
    out = tmp_path / "fr.wav"
    speech_model = trained[True] / "full" / "model"
    assert cli.main(["translate", source, "--model", str(speech_model), "-o", str(out),
                     "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    audio, rate = soundfile.read(out)
    assert rate == 24000 and audio.size >= soundfile.info(source).duration * rate
    text_model = trained[False] / "full" / "model"
    assert cli.main(["translate", source, "--model", str(text_model), "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert cli.main(["translate", source, "--model", str(text_model), "-o", str(out)]) == 2
    assert "no audio heads" in capsys.readouterr().err


def _talkative_model(parts: dict[str, Path], directory: Path) -> Path:
    """A random text-only translation model whose text head often writes pieces."""
    tokenizer_vocab = 300
    torch.manual_seed(0)
    task_config = dict(dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=64,
                       norm="rms_norm_f32", gating="silu", positional_embedding="rope",
                       card=64, n_q=4, dep_q=0, text_card=tokenizer_vocab, delays=[0] * 5)
    lm = build_lm(task_config).eval()
    keep_text_pieces(lm, range(270, 280))
    from dsm.codecs import load_codec

    return write_model_dir(directory, lm, load_codec(parts["codec"]), parts["tokenizer"],
                           "translation", text_delay_s=0.32)


def test_eval_translation_with_a_model_gives_sacrebleu_bleu(parts, tmp_path, capsys) -> None:
    model_dir = _talkative_model(parts, tmp_path / "model")
    results = tmp_path / "bleu.json"
    assert source_manifest_for(str(parts["fr"])) == parts["en"]
    assert cli.main(["eval", "translation", "--manifest", str(parts["fr"]), "--model",
                     str(model_dir), "--json", str(results)]) == 0
    assert "bleu" in capsys.readouterr().out
    report = json.loads(results.read_text())
    refs = {row.id: row.text for row in read_manifest(parts["fr"])[0]}
    hyps = {u["id"]: u["hyp"] for u in report["utterances"]}
    assert set(hyps) == set(refs) and any(hyps.values())
    ids = sorted(refs)
    expected = sacrebleu.corpus_bleu([hyps[i] for i in ids], [[refs[i] for i in ids]]).score
    assert report["summary"]["bleu"] == pytest.approx(expected, abs=1e-9)
    # The runner's batched slots give each utterance the words it gets alone (3 s clips of
    # different lengths, so one slot finishes and frees its place while the other runs).
    model = load_model_dir(model_dir)
    sources = {row.id: row.audio for row in read_manifest(parts["en"])[0]}
    rate = model.codec.sample_rate
    pcms = [read_audio(sources[i], rate)[: seconds * rate] for i, seconds in zip(ids, (3, 2, 3))]
    alone = [translate(pcm, model=model, batch_size=1).text.split() for pcm in pcms]
    assert any(alone)
    assert [t.text.split() for t in translate(pcms, model=model, batch_size=2)] == alone


def test_eval_translation_bad_input(parts, tmp_path, capsys) -> None:
    model_dir = _talkative_model(parts, tmp_path / "model")
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text(parts["fr"].read_text())
    assert cli.main(["eval", "translation", "--manifest", str(lonely), "--model",
                     str(model_dir)]) == 2
    assert "--source-manifest" in capsys.readouterr().err
    assert cli.main(["eval", "translation", "--manifest", str(parts["fr"]), "--model",
                     str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bad_recipes_fail_before_training(parts, tmp_path) -> None:
    good = _recipe(parts, tmp_path, target_audio=True).read_text()

    def load(text: str) -> None:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        Trainer(load_recipe(path), tmp_path / "out")

    with pytest.raises(RecipeError, match="train_target_manifest.*no such file"):
        load(good.replace(str(parts["fr"]), str(tmp_path / "missing.jsonl")))
    with pytest.raises(RecipeError, match="audio_delay_s .* must be >= text_delay_s"):
        load(good.replace("audio_delay_s = 0.48", "audio_delay_s = 0.16"))
    with pytest.raises(RecipeError, match="task.target_audio"):
        load(good.replace("target_audio = true", "target_audio = 7"))
    with pytest.raises(RecipeError, match="valid_target_manifest go together"):
        load(good.replace("batch_size = 2", f'batch_size = 2\nvalid_manifest = "{parts["en"]}"'))
    # Target rows whose ids match no source row: nothing to train on, said before training.
    other = tmp_path / "other.fr.jsonl"
    other.write_text("".join(
        json.dumps({**json.loads(line), "id": f"x{i}",
                    "audio": str(parts["fr"].parent / json.loads(line)["audio"])}) + "\n"
        for i, line in enumerate(parts["fr"].read_text().splitlines())))
    with pytest.raises(RecipeError, match="no translation pair"):
        load(good.replace(str(parts["fr"]), str(other)))
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_shipped_recipe_is_valid(parts) -> None:
    """configs/translation.toml checks out once its data paths exist (here: the tiny ones)."""
    shipped = Path(__file__).resolve().parents[2] / "dsm" / "recipes" / "configs" / "translation.toml"
    recipe = load_recipe(shipped, [
        f'data.train_manifest="{parts["en"]}"', f'data.valid_manifest="{parts["en"]}"',
        f'task.train_target_manifest="{parts["fr"]}"',
        f'task.valid_target_manifest="{parts["fr"]}"',
        f'task.tokenizer="{parts["tokenizer"]}"', f'task.codec="{parts["codec"]}"',
        "task.num_codebooks=4",
    ])
    assert recipe.kind == "translation" and recipe.task.text_delay_s == 2.0
    task = TranslationTask(recipe)
    config = task.lm_config()
    assert (config.n_q, config.dep_q, config.text_card) == (4, 0, 300)
    recipe.task.target_audio = True
    config = TranslationTask(recipe).lm_config()
    assert (config.n_q, config.dep_q, config.delays) == (8, 4, [0, 0, 1, 1, 1, 0, 0, 0, 0])
