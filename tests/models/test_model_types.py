"""Kyutai's model types beyond STT and TTS: a full-duplex Moshi directory loads for the engine,
the LM API and `dsm bench lm --model`; and a config.json field dsm does not implement is
refused by name, every one of them, instead of loading and computing something else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_hibiki import hibiki_raw

from dsm.cli import main as dsm_main
from dsm.codecs.testing import tiny_random_mimi
from dsm.models import LMConfig, LMConfigError, build_lm
from dsm.models.model_dir import ModelDirError, write_model_dir
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer


def moshi_like(text_card: int) -> dict:
    """Moshi 7B's flags (moshi.models.loaders._lm_kwargs), tiny: 4 generated + 4 heard."""
    return dict(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=40, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", card=64, n_q=8, dep_q=4,
        text_card=text_card, existing_text_padding_id=3, delays=[0, 0, 1, 1, 1, 0, 1, 1, 1],
        depformer_dim=32, depformer_dim_feedforward=64, depformer_num_heads=2,
        depformer_num_layers=2, depformer_multi_linear=True, depformer_context=4,
        depformer_gating="silu", depformer_pos_emb="none", depformer_weights_per_step=True,
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("types")
    tokenizer = train_tiny_tokenizer(root / "tok")
    out = {}
    for name, raw, model_type in (
        ("moshi", moshi_like(tokenizer.vocab_size), "moshi"),
        ("hibiki", hibiki_raw(n_q=8, dep_q=4, delays=[0, 0, 2, 2, 2, 0, 2, 2, 2],
                              text_card=tokenizer.vocab_size), "hibiki"),
    ):
        torch.manual_seed(0)
        lm = build_lm(LMConfig.from_dict(raw)).eval()
        directory = write_model_dir(root / name, lm, tiny_random_mimi(1),
                                    root / "tok" / "tiny.model", "translation")
        config_file = directory / "config.json"
        written = json.loads(config_file.read_text())
        written["model_type"] = model_type
        if model_type == "moshi":
            del written["stt_config"]
        config_file.write_text(json.dumps(written))
        out[name] = directory
    return out


def test_a_moshi_directory_loads_as_a_full_duplex_model(dirs) -> None:
    model = load_model_dir(dirs["moshi"])
    assert model.task == "dialogue" and model.model_type == "moshi"
    with model.engine(2) as engine:  # the engine steps it (audio in, text and audio out)
        assert engine.num_inputs == 4 and engine.streamer.dep_q == 4
        out = None
        for _ in range(3):
            out = engine.streamer.step(torch.zeros(2, 4, 1, dtype=torch.long))
        assert out is not None and out.shape == (2, 5, 1)


def test_commands_of_other_tasks_refuse_a_moshi_model_clearly(dirs, tmp_path, capsys) -> None:
    import numpy as np
    import soundfile

    path = tmp_path / "a.wav"
    soundfile.write(path, np.zeros(24000, dtype=np.float32), 24000)
    assert dsm_main(["transcribe", str(path), "--model", str(dirs["moshi"])]) == 2
    assert "dialogue model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["moshi", "hibiki"])
def test_bench_lm_runs_a_model_directory_against_moshi(dirs, name, capsys) -> None:
    assert dsm_main(["bench", "lm", "--model", str(dirs[name]), "--batch", "1,2", "--steps", "3",
                     "--warmup", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(line[0]) for line in lines] == [1, 2]
    assert all(float(line[2]) > 0 and float(line[3]) > 0 for line in lines)  # moshi ran too
    assert f"model {dirs[name]}" in out


def test_unknown_config_fields_are_refused_by_name(dirs, tmp_path) -> None:
    raw = json.loads((dirs["moshi"] / "config.json").read_text())
    with pytest.raises(LMConfigError, match="'depformer_kv_repeat', 'frobnicate'"):
        LMConfig.from_dict({**raw, "depformer_kv_repeat": 2, "frobnicate": True})
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dirs["moshi"], copy)
    (copy / "config.json").write_text(json.dumps({**raw, "frobnicate": True}))
    with pytest.raises((LMConfigError, ModelDirError), match="frobnicate"):
        load_model_dir(copy)
    # Kyutai's switched-off features and loader keys still load.
    LMConfig.from_dict({**raw, "cross_attention": False, "lora": False, "model_id": {"sig": 1}})
    with pytest.raises(LMConfigError, match="cross_attention"):
        LMConfig.from_dict({**raw, "cross_attention": True})


def test_a_mimi_of_another_shape_is_refused(dirs, tmp_path) -> None:
    import shutil

    copy = tmp_path / "mimi-config"
    shutil.copytree(dirs["moshi"], copy)
    raw = json.loads((copy / "config.json").read_text())
    raw.pop("codec", None)
    raw.update(mimi_name="mimi.safetensors", mimi_config_name="mimi_config.json")
    (copy / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelDirError, match="mimi_config.json"):
        load_model_dir(copy)
