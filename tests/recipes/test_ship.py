"""`dsm ship`: codecs and model directories copied into the default-model layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dsm.cli import main as dsm_main
from dsm.codecs import load_codec, save_codec
from dsm.codecs.testing import tiny_random_mimi
from dsm.models import build_lm, preset
from dsm.models.model_dir import write_model_dir
from dsm.recipes.data.dataset import codec_fingerprint
from dsm.streaming.model_dir import load_model_dir
from dsm.streams.testing import train_tiny_tokenizer


def test_ship_codec_in_float16_and_a_model_sharing_it(tmp_path: Path, capsys) -> None:
    codec = tiny_random_mimi(3)
    save_codec(codec, tmp_path / "run" / "codec")
    assets = tmp_path / "assets"
    assert dsm_main(["ship", "codec", str(tmp_path / "run" / "codec"), str(assets / "codec"),
                     "--dtype", "float16"]) == 0
    assert "codec written to" in capsys.readouterr().out
    shipped = load_codec(assets / "codec")
    meta = json.loads((assets / "codec" / "config.json").read_text())
    assert meta["weights_dtype"] == "float16"
    wav = 0.3 * torch.randn(1, 1, 1920 * 4)
    with torch.no_grad():
        torch.testing.assert_close(shipped.decode(codec.encode(wav)),
                                   codec.decode(codec.encode(wav)), atol=2e-2, rtol=0)

    # an ASR model trained on the shipped codec, shipped next to it
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    config = preset("tiny-stt", num_layers=1, dim=32, text_card=tokenizer.vocab_size, card=64,
                    n_q=4, delays=[0] * 5, extra_heads_num_heads=0, extra_heads_dim=0)
    write_model_dir(tmp_path / "run" / "model", build_lm(config), shipped,
                    tmp_path / "tok" / "tiny.model", "asr", text_delay_s=0.24)
    assert dsm_main(["ship", "asr", str(tmp_path / "run" / "model"), str(assets / "asr")]) == 0
    assert sorted(p.name for p in (assets / "asr").iterdir()) == [
        "config.json", "model.safetensors", "provenance.json", "tokenizer.model"]
    provenance = json.loads((assets / "asr" / "provenance.json").read_text())
    assert provenance["recipe"] is None and provenance["steps"] is None  # not a dsm train run
    assert provenance["shipped_from"] == str(tmp_path / "run" / "model")
    raw = json.loads((assets / "asr" / "config.json").read_text())
    assert raw["codec"] == "../codec"
    assert raw["codec_fingerprint"] == codec_fingerprint(shipped)
    model = load_model_dir(assets / "asr")
    assert model.task == "asr" and codec_fingerprint(model.codec) == raw["codec_fingerprint"]

    # the LM weights in float16: half the bytes, computed in float32 with the same results
    assert dsm_main(["ship", "asr", str(tmp_path / "run" / "model"), str(assets / "asr16"),
                     "--dtype", "float16"]) == 0
    full, half = assets / "asr" / "model.safetensors", assets / "asr16" / "model.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert json.loads((assets / "asr16" / "config.json").read_text())["weights_dtype"] == "float16"
    model16 = load_model_dir(assets / "asr16")
    assert {p.dtype for p in model16.lm.parameters()} == {torch.float32}
    codes = torch.randint(0, 64, (1, 5, 6))
    codes[:, 0] = torch.randint(0, tokenizer.vocab_size, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model16.lm(codes).text_logits, model.lm(codes).text_logits,
                                   atol=2e-2, rtol=0)


def test_ship_refuses_what_it_cannot_do(tmp_path: Path, capsys) -> None:
    assert dsm_main(["ship", "asr", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert dsm_main(["ship", "codec", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "dsm ship: error" in capsys.readouterr().err
    assert dsm_main(["ship", "tts", str(tmp_path), str(tmp_path / "out"),
                     "--dtype", "float16"]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
