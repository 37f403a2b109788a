"""ASR recipe: a tiny end-to-end run (loss goes down, checkpoint, exact resume, export to a
model directory), the delayed text layout it trains on, the streaming transcription that
`dsm eval asr --model` runs (emission times), and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from dsm import cli
from dsm.api import transcribe
from dsm.codecs import Mimi, MimiConfig, save_codec
from dsm.codecs.seanet import SEANetConfig
from dsm.models.model_dir import read_provenance
from dsm.modules.transformer import TransformerConfig
from dsm.recipes.config import RecipeError, load_recipe
from dsm.recipes.data.codes import aligned_datasets
from dsm.recipes.data.dataset import AlignedDataset
from dsm.recipes.data.manifest import read_manifest
from dsm.recipes.eval.evaluate import evaluate_asr
from dsm.recipes.ship import ship_model_dir
from dsm.recipes.tasks import init_from
from dsm.recipes.tasks.asr import ASRTask
from dsm.recipes.training.metrics_log import read_metrics
from dsm.recipes.training.trainer import Trainer
from dsm.streaming.model_dir import ModelDir, load_model_dir
from dsm.streaming.testing import ScriptedLMForTests
from dsm.streams.silence import silence_codes
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import Word, words_to_stream

SR = 24000
WORDS = ["cat", "river", "seven", "london", "mountain", "quickly"]

TINY_MIMI = MimiConfig(
    seanet=SEANetConfig(dimension=32, n_filters=4, ratios=[8, 6, 5, 4]),
    transformer=TransformerConfig(d_model=32, num_heads=4, num_layers=1, dim_feedforward=64,
                                  context=20, layer_scale=0.01),
    codebook_dim=16, n_q=4, bins=64,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random Mimi directory, a tiny tokenizer and a corpus where every word is a
    tone of its own pitch (so text can be learnt from the codes)."""
    root = tmp_path_factory.mktemp("asr")
    torch.manual_seed(1)
    codec = Mimi(TINY_MIMI)
    with torch.no_grad():  # usable codebooks (a fresh one maps everything alike)
        for name, buffer in codec.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.copy_(torch.randn_like(buffer))
            elif name.endswith("cluster_usage"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    save_codec(codec.eval(), root / "codec")
    train_tiny_tokenizer(root / "tok")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        chosen = [WORDS[j] for j in rng.choice(len(WORDS), size=3, replace=False)]
        audio = np.zeros(int(2.0 * SR), dtype=np.float32)
        words = []
        for k, word in enumerate(chosen):
            start, end = 0.3 + 0.5 * k, 0.7 + 0.5 * k
            t = np.arange(int((end - start) * SR)) / SR
            f0 = 150.0 + 60.0 * WORDS.index(word)
            tone = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 5))
            audio[int(start * SR): int(start * SR) + t.size] = 0.2 * tone
            words.append({"word": word, "start": start, "end": end})
        sf.write(root / f"utt{i}.wav", audio, SR)
        rows.append({"audio": f"utt{i}.wav", "duration": 2.0, "text": " ".join(chosen),
                     "words": words, "id": f"u{i}"})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "codec": root / "codec", "tokenizer": root / "tok" / "tiny.model",
            "manifest": root / "train.jsonl"}


def _recipe(assets: dict[str, Path], max_steps: int = 16, task_extra: str = "",
            name: str = "asr.toml") -> Path:
    text = f"""
kind = "asr"
seed = 0

[data]
train_manifest = "{assets['manifest']}"
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
codec = "{assets['codec']}"
tokenizer = "{assets['tokenizer']}"
text_delay_s = 0.24
max_frames = 24
cache_dir = "{assets['root'] / 'cache'}"
dim = 32
num_heads = 2
num_layers = 1
context = 50
""" + task_extra
    path = assets["root"] / name
    path.write_text(text)
    return path


def test_tiny_asr_run_learns_checkpoints_resumes_and_exports(assets, tmp_path: Path,
                                                               capsys) -> None:
    recipe_path = _recipe(assets)
    full = Trainer(load_recipe(recipe_path), tmp_path / "full").fit()
    assert full.step == 16
    rows = read_metrics(tmp_path / "full" / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert (tmp_path / "full" / "checkpoints" / "step_00000016.pt").is_file()

    # Interrupted after 7 steps, resumed: it goes on at step 8 with the same losses.
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
        for key in ("loss", "acc_text", "acc_pad"):
            assert float(a[key]) == float(b[key]), (a["step"], key)

    # The export is a model directory that the streaming engine loads.
    model = load_model_dir(tmp_path / "full" / "model")
    assert model.task == "asr" and model.text_delay == 3
    assert model.lm.config.dep_q == 0 and model.lm.config.n_q == 4
    pcm = sf.read(assets["root"] / "utt0.wav", dtype="float32")[0]
    transcript = transcribe(pcm, model=model)
    assert all(w.emitted >= w.start for w in transcript.words)

    # init_from: a new run starts from these weights (model directory or checkpoint).
    for source in (tmp_path / "full" / "model",
                   tmp_path / "full" / "checkpoints" / "step_00000016.pt"):
        recipe = load_recipe(recipe_path, [f'task.init_from="{source}"'])
        warm = ASRTask(recipe).build_models()["model"]
        for key, value in model.lm.state_dict().items():
            assert torch.equal(warm.state_dict()[key], value), (source.name, key)
    # ... a model reading more codebooks than its source starts with zero embeddings for
    # them, so it computes exactly what the source computed
    narrow = ASRTask(load_recipe(recipe_path, ["task.num_codebooks=2"])).build_models()["model"]
    torch.save({"models": {"model": narrow.state_dict()}}, tmp_path / "two-codebooks.pt")
    recipe = load_recipe(recipe_path, [f'task.init_from="{tmp_path / "two-codebooks.pt"}"'])
    wide = ASRTask(recipe).build_models()["model"]
    assert wide.config.n_q == 4 and narrow.config.n_q == 2
    assert not wide.emb[2].weight.any() and not wide.emb[3].weight.any()
    tokens = torch.randint(0, 60, (2, 5, 9))  # [B, 1 + K, T]: text row, then 4 audio rows
    with torch.no_grad():
        narrow_hidden, narrow_logits = narrow.eval().forward_temporal(tokens[:, :3])
        wide_hidden, wide_logits = wide.eval().forward_temporal(tokens)
    assert torch.allclose(wide_hidden, narrow_hidden, atol=1e-6)
    assert torch.allclose(wide_logits, narrow_logits, atol=1e-6)
    # ... a deeper model than its source (3 layers from 1) follows each source layer with
    # copies that add nothing to the residual stream: the same outputs, and the copies'
    # residual outputs get gradients, so training can put them to use
    source = tmp_path / "full" / "checkpoints" / "step_00000016.pt"
    recipe = load_recipe(recipe_path, [f'task.init_from="{source}"', "task.num_layers=3"])
    deep = ASRTask(recipe).build_models()["model"]
    assert len(deep.transformer.layers) == 3
    first, *copies = deep.transformer.layers
    for copy in copies:
        assert torch.equal(copy.self_attn.in_proj_weight, first.self_attn.in_proj_weight)
        assert torch.equal(copy.gating.linear_in.weight, first.gating.linear_in.weight)
        assert not copy.self_attn.out_proj.weight.any() and not copy.gating.linear_out.weight.any()
    with torch.no_grad():
        shallow_hidden, shallow_logits = model.lm.eval().forward_temporal(tokens)
        deep_hidden, deep_logits = deep.eval().forward_temporal(tokens)
    assert torch.allclose(deep_hidden, shallow_hidden, atol=1e-5)
    assert torch.allclose(deep_logits, shallow_logits, atol=1e-5)
    deep.train().forward_temporal(tokens)[1].square().sum().backward()
    assert all(copy.self_attn.out_proj.weight.grad.abs().sum() > 0 for copy in copies)
    # ... and a depth that is not a multiple of the source's is refused, naming the layers
    recipe = load_recipe(recipe_path, [f'task.init_from="{tmp_path / "two-codebooks.pt"}"',
                                       "task.num_layers=2", "task.num_codebooks=2"])
    two_layers = ASRTask(recipe).build_models()["model"]
    torch.save({"models": {"model": two_layers.state_dict()}}, tmp_path / "two-layers.pt")
    recipe = load_recipe(recipe_path, [f'task.init_from="{tmp_path / "two-layers.pt"}"',
                                       "task.num_layers=3", "task.num_codebooks=2"])
    with pytest.raises(RecipeError, match="(?s)do not fit.*transformer.layers.2"):
        ASRTask(recipe).build_models()
    # ... and weights of another shape are a recipe error, not a torch traceback
    torch.save({"models": {"model": {"stray": torch.zeros(1)}}}, tmp_path / "other-shapes.pt")
    recipe = load_recipe(recipe_path, [f'task.init_from="{tmp_path / "other-shapes.pt"}"'])
    with pytest.raises(RecipeError, match="(?s)do not fit this recipe's model.*stray"):
        ASRTask(recipe).build_models()

    # ... and a model with a new tokenizer (another text vocabulary) takes everything but the
    # text tables with task.init_from_text = false; without it the sizes are refused
    source = tmp_path / "full" / "model"
    card = model.lm.config.text_card
    recipe = load_recipe(recipe_path, [f'task.init_from="{source}"', f"task.text_card={card + 7}",
                                       "task.init_from_text=false"])
    torch.manual_seed(5)
    retokenized = ASRTask(recipe).build_models()["model"]
    torch.manual_seed(5)
    fresh = ASRTask(load_recipe(recipe_path, [f"task.text_card={card + 7}"])).build_models()
    assert retokenized.text_linear.weight.shape[0] == card + 7
    for key, value in retokenized.state_dict().items():
        text_table = init_from.TEXT_TABLES.fullmatch(key) is not None
        expected = fresh["model"].state_dict()[key] if text_table else model.lm.state_dict()[key]
        assert torch.equal(value, expected), key
    recipe = load_recipe(recipe_path, [f'task.init_from="{source}"', f"task.text_card={card + 7}"])
    with pytest.raises(RecipeError, match="(?s)do not fit.*text_linear"):
        ASRTask(recipe).build_models()

    # Shipped beside a shared codec folder: config names it, no codec copy.
    shared = tmp_path / "assets"
    save_codec(model.codec, shared / "codec")
    ship_model_dir(tmp_path / "full" / "model", shared / "asr")
    assert not (shared / "asr" / "codec").exists()
    assert json.loads((shared / "asr" / "config.json").read_text())["codec"] == "../codec"
    provenance = read_provenance(shared / "asr")  # the run's recipe and steps, dsm's commit
    assert provenance is not None and provenance["steps"] == 16
    assert provenance["recipe"] == load_recipe(recipe_path).raw
    assert provenance["shipped_from"] == str(tmp_path / "full" / "model")
    commit = provenance["dsm_commit"]
    assert commit is None or (len(commit) == 40 and isinstance(provenance["dsm_dirty"], bool))
    shipped = load_model_dir(shared / "asr")
    for key, value in model.lm.state_dict().items():
        assert torch.equal(shipped.lm.state_dict()[key], value), key

    # `dsm ship --average`: the mean of model directories' weights, in float16 if asked
    def variant(name: str, change, codec: str = "../codec") -> Path:
        directory = shared / name
        shutil.copytree(shared / "asr", directory)
        weights = load_file(str(directory / "model.safetensors"))
        save_file(change(weights), str(directory / "model.safetensors"))
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, "codec": codec}))
        return directory

    shifted = variant("shifted", lambda w: {k: v + 1 if v.is_floating_point() else v
                                             for k, v in w.items()})
    assert cli.main(["ship", "asr", str(shared / "asr"), str(shared / "mean"),
                     "--average", str(shifted), "--dtype", "float16"]) == 0
    mean = load_model_dir(shared / "mean")
    for key, value in model.lm.state_dict().items():
        assert torch.allclose(mean.lm.state_dict()[key], (value + 0.5).half().float()), key
    assert json.loads((shared / "mean" / "config.json").read_text())["weights_dtype"] == "float16"
    # ... and of float16 sources, without --dtype, in float32 (and the config says no more)
    ship_model_dir(shared / "mean", shared / "mean32", average=[shared / "mean"])
    assert "weights_dtype" not in json.loads((shared / "mean32" / "config.json").read_text())
    assert load_file(str(shared / "mean32" / "model.safetensors"))["emb.0.weight"].dtype == torch.float32
    # ... refused, writing nothing, for weights of another shape or another codec
    missing = variant("missing", lambda w: {k: v for k, v in w.items() if k != "emb.0.weight"})
    torch.manual_seed(5)
    save_codec(Mimi(TINY_MIMI), shared / "codec2")  # fresh weights: another fingerprint
    elsewhere = variant("elsewhere", lambda w: w, codec="../codec2")
    for other, message in ((missing, "differ in names (emb.0.weight)"),
                           (elsewhere, "made with another codec")):
        assert cli.main(["ship", "asr", str(shared / "asr"), str(tmp_path / "refused"),
                         "--average", str(other)]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()


def test_training_items_put_the_text_behind_the_audio(assets) -> None:
    task = ASRTask(load_recipe(_recipe(assets)))
    dataset = task.build_dataset("train")
    assert task.text_delay == 3  # 0.24 s at 12.5 Hz
    rows, _ = read_manifest(assets["manifest"])
    item = dataset[0]
    codes = item["codes"]  # [1 + K, T]
    assert codes.shape[0] == 1 + 4
    expected, _ = words_to_stream([Word(w.word, w.start, w.end) for w in rows[0].words],
                                  task.tokenizer, 12.5, num_frames=codes.shape[1], delay=3)
    assert torch.equal(codes[0], expected)
    first_token = int(torch.nonzero((codes[0] != 0) & (codes[0] != 3))[0])
    assert first_token == round(0.3 * 12.5) + 3  # the word's start frame + the delay
    assert (codes[1:] >= 0).all()  # the audio covers the delayed text (silence appended)


def test_streaming_transcription_reports_emission_times(tmp_path: Path) -> None:
    """With a model that writes the exact training stream, words come out right, each at
    the input-audio time of the frame after its last token; 3 streams share 2 slots."""
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    codec = ToyCodecForTests(sample_rate=8000, num_codebooks=2, cardinality=64)
    delay = 3
    words = [Word("the", 0.3, 0.5), Word("elephant", 0.6, 1.3), Word("sat", 1.4, 1.6)]
    script = words_to_stream(words, tokenizer, 12.5, num_frames=30, delay=delay)[0].tolist()
    lm = ScriptedLMForTests([script], n_q=2, card=64, text_card=tokenizer.vocab_size)
    model = ModelDir(tmp_path, "asr", lm, codec, tokenizer, text_delay=delay, audio_delay=0)
    pcms = [np.zeros(int(s * 8000), dtype=np.float32) + 0.01 for s in (2.0, 1.7, 2.2)]
    transcripts = transcribe(pcms, model=model, batch_size=2)
    assert [t.text for t in transcripts] == ["the elephant sat"] * 3
    is_text = [token not in (0, 3) for token in script]
    last_tokens = [p for p in range(len(script) - 1) if is_text[p] and not is_text[p + 1]]
    for transcript in transcripts:
        times = [w.emitted for w in transcript.words]
        assert times == pytest.approx([(p + 2) / 12.5 for p in last_tokens])
        for word, reference in zip(transcript.words, words):
            assert word.start == pytest.approx(reference.start, abs=0.041)
    # Latency = emission time - true end, as `dsm eval asr` reports it.
    manifest = tmp_path / "ref.jsonl"
    sf.write(tmp_path / "a.wav", pcms[0], 8000)
    manifest.write_text(json.dumps({
        "audio": "a.wav", "text": "the elephant sat", "id": "a",
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in words]}) + "\n")
    rows, _ = read_manifest(manifest)
    output = {"id": "a", "text": transcripts[0].text, "_line": 1,
              "words": [{"word": w.text, "time": w.emitted} for w in transcripts[0].words]}
    result = evaluate_asr(rows, [output])
    assert result.summary["wer"] == 0.0
    expected = np.mean([(p + 2) / 12.5 - w.end for p, w in zip(last_tokens, words)])
    assert result.summary["latency_mean_s"] == pytest.approx(expected)


def test_dsm_eval_asr_with_a_model_directory(assets, tmp_path: Path, capsys) -> None:
    Trainer(load_recipe(_recipe(assets, max_steps=2)), tmp_path / "run").fit()
    report = tmp_path / "eval.json"
    code = cli.main(["eval", "asr", "--model", str(tmp_path / "run" / "model"),
                     "--manifest", str(assets["manifest"]), "--json", str(report)])
    assert code == 0
    assert "wer" in capsys.readouterr().out
    payload = json.loads(report.read_text())
    assert payload["summary"]["utterances"] == 6 and len(payload["utterances"]) == 6
    assert payload["summary"]["wer"] >= 0.0
    # A directory that is not a model is a clear error, not a traceback.
    code = cli.main(["eval", "asr", "--model", str(tmp_path / "nothing"),
                     "--manifest", str(assets["manifest"])])
    assert code == 2
    assert "model directory not found" in capsys.readouterr().err


def test_bad_asr_recipes_fail_before_training(assets, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="task.bogus"):
        load_recipe(_recipe(assets, task_extra="bogus = 1\n", name="bad1.toml"))
    with pytest.raises(RecipeError, match="task.num_codebooks"):
        load_recipe(_recipe(assets, task_extra='num_codebooks = "four"\n', name="bad2.toml"))
    recipe = load_recipe(_recipe(assets, name="bad3.toml"))
    recipe.task.codec = str(tmp_path / "no-codec")
    with pytest.raises(RecipeError, match="task.codec"):
        Trainer(recipe, tmp_path / "out")
    recipe = load_recipe(_recipe(assets, name="bad4.toml"))
    recipe.task.text_card = 10
    with pytest.raises(RecipeError, match="text_card"):
        Trainer(recipe, tmp_path / "out2")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = load_recipe(_recipe(assets, name="bad5.toml"))
    recipe.data.train_manifest = str(empty)
    with pytest.raises(RecipeError, match="no usable row|empty"):
        Trainer(recipe, tmp_path / "out3")


def test_input_dropout_hides_inputs_only_while_training(assets) -> None:
    recipe = load_recipe(_recipe(assets, name="drop.toml"),
                         ["task.audio_dropout=0.5", "task.text_dropout=0.25"])
    task = ASRTask(recipe)
    codes = torch.randint(0, 60, (4, 5, 400))
    torch.manual_seed(0)
    hidden = task._hide_inputs(codes)
    audio_share = (hidden[:, 1:] == -1).float().mean().item()
    text_share = (hidden[:, 0] == -1).float().mean().item()
    assert 0.45 < audio_share < 0.55 and 0.2 < text_share < 0.3
    kept = hidden != -1
    assert torch.equal(hidden[kept], codes[kept])
    model = task.build_models()["model"]
    batch = {"codes": codes[..., :30], "mask": torch.ones(4, 5, 30, dtype=torch.bool)}
    model.eval()
    with torch.no_grad():
        first, _ = task.compute_loss({"model": model}, batch)
        second, _ = task.compute_loss({"model": model}, batch)
    assert first == second  # no hiding outside training: validation is deterministic


def test_lead_silence_puts_silent_frames_before_training_items_only(assets) -> None:
    """task.lead_silence_s: each training item gets a drawn number of frames of the codes
    of silence in front (`dsm.streams.silence`, the first frames of a stream of zeros; text
    pad over them), the item itself unchanged after them, the same draw for the same
    (seed, epoch, index); validation items get none."""
    recipe = load_recipe(_recipe(assets, name="lead.toml"),
                         ["task.lead_silence_s=2.0", "task.max_frames=100"])
    task = ASRTask(recipe)
    train = task.build_dataset("train")
    lead_max = round(2.0 * float(task.codec.frame_rate))
    assert train.lead_frames == lead_max
    assert train.silence_codes.shape == (task.codec.num_codebooks, lead_max)
    assert torch.equal(train.silence_codes, silence_codes(task.codec, lead_max))  # the one silence
    leads = []
    for index in range(len(train)):
        plain, item = train.dataset[index], train[index]
        lead = item["codes"].shape[-1] - plain["codes"].shape[-1]
        leads.append(lead)
        assert 0 <= lead <= lead_max and item["length"] == plain["length"] + lead
        assert torch.equal(item["codes"][:, lead:], plain["codes"])
        assert torch.equal(item["mask"][:, lead:], plain["mask"]) and item["mask"][:, :lead].all()
        assert (item["codes"][0, :lead] == task.tokenizer.pad_id).all()
        assert torch.equal(item["codes"][1:, :lead], train.silence_codes[:, :lead])  # stream start
        assert torch.equal(train[index]["codes"], item["codes"])  # the same draw again
    assert len(set(leads)) > 1, leads  # drawn per item
    train.set_epoch(1)  # a new epoch, new draws
    assert [train[i]["codes"].shape[-1] - train.dataset[i]["codes"].shape[-1]
            for i in range(len(train))] != leads
    assert ASRTask(load_recipe(_recipe(assets, name="lead0.toml"))).build_dataset(
        "train").lead_frames == 0  # off by default
    recipe.data.valid_manifest = recipe.data.train_manifest
    valid = task.build_dataset("valid")
    assert valid.lead_frames == 0 and torch.equal(valid[0]["codes"], valid.dataset[0]["codes"])
    with pytest.raises((RecipeError, ValueError), match="lead_silence_s"):
        ASRTask(load_recipe(_recipe(assets, name="lead_bad.toml"), ["task.lead_silence_s=-1.0"]))


def test_chained_items_are_streams_of_utterances_with_silence_between(assets) -> None:
    """task.chain_fraction: that share of training items are streams of several utterances
    of the corpus, each after a drawn gap of the codec's silence codes (text pad over it),
    filling max_frames, the last one cut; the same draw for the same (seed, epoch, index);
    validation items are never chained."""
    recipe = load_recipe(_recipe(assets, name="chain.toml"),
                         ["task.chain_fraction=0.5", "task.chain_gap_s=[0.4, 1.0]",
                          "task.max_frames=120"])
    task = ASRTask(recipe)
    train = task.build_dataset("train")
    rate = float(task.codec.frame_rate)
    low, high = round(0.4 * rate), round(1.0 * rate)
    assert train.gap_frames == (low, high) and train.silence_codes.shape[-1] == high
    plain = [train.dataset[i]["codes"] for i in range(len(train))]

    def silence(frames: int) -> torch.Tensor:
        return torch.cat([torch.full((1, frames), task.tokenizer.pad_id),
                          train.silence_codes[:, high - frames:]])

    def parse(codes: torch.Tensor, start: int) -> list[tuple[int, int]]:
        """(gap, utterance index) pairs that make up codes[:, start:], the last one cut."""
        if start >= codes.shape[-1]:
            return []
        for gap in range(low, high + 1):
            for j, utterance in enumerate(plain):
                end = min(codes.shape[-1], start + gap + utterance.shape[-1])
                if (end > start + gap
                        and torch.equal(codes[:, start:start + gap], silence(gap))
                        and torch.equal(codes[:, start + gap:end], utterance[:, :end - start - gap])):
                    rest = parse(codes, end)
                    if end == codes.shape[-1] or rest:
                        return [(gap, j)] + rest
        return []

    chained, gaps = 0, set()
    for index in range(len(train)):
        item, first = train[index], plain[index]
        codes = item["codes"]
        assert torch.equal(codes[:, :first.shape[-1]], first)  # the item's own utterance first
        assert item["mask"].all() and torch.equal(train[index]["codes"], codes)  # same draw
        if codes.shape[-1] == first.shape[-1]:
            continue
        chained += 1
        assert codes.shape[-1] == item["length"] == 120  # filled, the last utterance cut
        following = parse(codes, first.shape[-1])
        assert len(following) >= 2, following  # several utterances, each after silence
        gaps.update(gap for gap, _ in following)
    assert 0 < chained < len(train), chained  # about half of them
    assert len(gaps) > 1, gaps  # the gaps are drawn

    recipe.data.valid_manifest = recipe.data.train_manifest
    valid = task.build_dataset("valid")
    assert all(torch.equal(valid[i]["codes"], valid.dataset[i]["codes"]) for i in range(len(valid)))
    for bad in (["task.chain_fraction=1.5"], ["task.chain_gap_s=[2.0, 1.0]"]):
        with pytest.raises((RecipeError, ValueError), match="chain_"):
            ASRTask(load_recipe(_recipe(assets, name="chain_bad.toml"), bad))


def test_dsm_data_codes_fills_the_cache_that_training_reads(assets, tmp_path: Path,
                                                            capsys) -> None:
    recipe_path = _recipe(assets, name="codes.toml")
    cache = tmp_path / "cache"
    override = f"task.cache_dir='{cache}'"
    command = ["data", "codes", str(recipe_path), "--no-progress", "--set", override]
    assert cli.main([*command, "--workers", "2"]) == 0
    assert "train: 6 items, 0 codes found in the cache, 6 encoded, 0 failed" in capsys.readouterr().out
    assert len(list(cache.rglob("*.npy"))) == 6

    # training's dataset, built from the same recipe, finds every item: nothing left to encode
    dataset = aligned_datasets(load_recipe(recipe_path, [override]), ("train",))["train"]
    dataset.precompute(progress=False)
    assert (dataset.cache.hits, dataset.cache.misses) == (6, 0)
    # and the worker processes cached what the codec gives in this process
    uncached = AlignedDataset(assets["manifest"], "asr", dataset.tokenizer, dataset.codec,
                              text_delay=dataset.text_delay, cache_dir=None)
    for index in range(6):
        assert torch.equal(dataset.aligned(index).codes, uncached.aligned(index).codes)

    assert cli.main(command) == 0  # a second run only finds them
    assert "train: 6 items, 6 codes found in the cache, 0 encoded, 0 failed" in capsys.readouterr().out


def test_dsm_data_codes_reports_bad_audio_and_recipes_without_a_cache(assets, tmp_path: Path,
                                                                      capsys) -> None:
    rows = read_manifest(assets["manifest"])[0]
    # a FLAC file whose header reads (so the manifest check passes) but whose frames do not
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    sf.write(tmp_path / "broken.flac", noise, SR)
    data = bytearray((tmp_path / "broken.flac").read_bytes())
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    (tmp_path / "broken.flac").write_bytes(bytes(data))
    (tmp_path / "empty.wav").write_bytes(b"")  # unreadable: skipped as training skips it
    lines = [json.dumps({"audio": str(row.audio), "duration": row.duration, "text": row.text,
                         "words": [w.__dict__ for w in row.words], "id": row.id})
             for row in rows]
    broken = json.loads(lines[0]) | {"audio": str(tmp_path / "broken.flac"), "id": "broken"}
    empty = json.loads(lines[0]) | {"audio": str(tmp_path / "empty.wav"), "id": "empty"}
    manifest = tmp_path / "with-broken.jsonl"
    manifest.write_text("\n".join([json.dumps(broken), json.dumps(empty), *lines]) + "\n")
    recipe_path = _recipe(assets, name="codes-broken.toml")
    cache = tmp_path / "cache"
    code = cli.main(["data", "codes", str(recipe_path), "--no-progress",
                     "--set", f"task.cache_dir='{cache}'",
                     "--set", f"data.train_manifest='{manifest}'"])
    captured = capsys.readouterr()
    assert code == 1
    assert "train: 7 items, 0 codes found in the cache, 6 encoded, 1 failed" in captured.out
    assert "1 row(s) skipped" in captured.out and "empty.wav" not in captured.out
    assert "broken.flac" in captured.err and "could not be encoded" in captured.err
    assert len(list(cache.rglob("*.npy"))) == 6  # every other row was still encoded

    assert cli.main(["data", "codes", str(recipe_path), "--set", "task.cache_dir=''"]) == 2
    assert "task.cache_dir" in capsys.readouterr().err
    assert cli.main(["data", "codes", str(recipe_path), "--split", "valid"]) == 2
    assert "data.valid_manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["data", "codes", str(recipe_path), "--workers", "0"])
