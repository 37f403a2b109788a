"""LMConfig: Kyutai config.json in and out, validation that names the field, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsm.models import LMConfig, LMConfigError, count_parameters, preset

STT_JSON = {  # the shape of kyutai/stt-1b-en_fr's config.json
    "dim": 2048, "num_heads": 16, "num_layers": 16, "hidden_scale": 4.125, "context": 750,
    "max_period": 100000, "n_q": 32, "dep_q": 0, "card": 2048, "text_card": 8000,
    "delays": [0] * 33, "existing_text_padding_id": 3, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "causal": True, "layer_scale": None,
    "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 6,
    "depformer_multi_linear": True, "depformer_pos_emb": "none", "depformer_weights_per_step": True,
    "extra_heads_num_heads": 4, "extra_heads_dim": 6, "cross_attention": False,
    "conditioners": {}, "model_type": "stt", "tokenizer_name": "tokenizer_en_fr_audio_8000.model",
    "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
}


def test_kyutai_config_round_trips_with_loader_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(STT_JSON))
    config = LMConfig.from_json(path)
    assert config.max_period == 100_000.0 and config.num_codebooks == 33
    assert config.extras["stt_config"]["audio_delay_seconds"] == 0.5
    assert config.depformer_max_period == 100_000.0  # inherited, as in moshi
    again = LMConfig.from_dict(config.to_dict())
    assert again == config
    assert count_parameters(config) == count_parameters(preset("stt-1b"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dim": None}, "dim"),
        ({"delays": [0] * 32}, "delays"),
        ({"dep_q": 40}, "dep_q"),
        ({"num_heads": 15}, "num_heads"),
        ({"norm": "batch_norm"}, "norm"),
        ({"gating": "swish"}, "gating"),
        ({"existing_text_padding_id": 9000}, "existing_text_padding_id"),
        ({"context": 0}, "context"),
        ({"hidden_scale": "big"}, "hidden_scale"),
        ({"cross_attention": True}, "cross_attention"),
        ({"conditioners": {"speaker": {}}}, "conditioners"),
        ({"kv_repeat": 3}, "kv_repeat"),  # 16 heads: 3 does not divide them
        ({"dep_q": 2, "delays": [0] * 33, "depformer_num_heads": None}, "depformer_num_heads"),
        ({"dep_q": 2, "depformer_weights_per_step_schedule": [0, 1, 2]},
         "depformer_weights_per_step_schedule"),
        ({"dep_q": 2, "depformer_weights_per_step": False,
          "depformer_weights_per_step_schedule": [0, 1]}, "depformer_weights_per_step_schedule"),
        ({"depformer_dim_feedforward": [64, 64]}, "depformer_dim_feedforward"),
        ({"audio_heads": "mlp"}, "audio_heads"),
    ],
)
def test_bad_field_is_named(change: dict, field: str) -> None:
    raw = dict(STT_JSON)
    for key, value in change.items():
        if value is None and key in ("dim",):
            del raw[key]
        else:
            raw[key] = value
    with pytest.raises(LMConfigError, match=f"'{field}'"):
        LMConfig.from_dict(raw)


def test_missing_required_field_and_bad_files(tmp_path: Path) -> None:
    raw = dict(STT_JSON)
    del raw["n_q"]
    with pytest.raises(LMConfigError, match="'n_q': missing"):
        LMConfig.from_dict(raw)
    with pytest.raises(LMConfigError, match="not found"):
        LMConfig.from_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{dim: 3")
    with pytest.raises(LMConfigError, match="not valid JSON"):
        LMConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(LMConfigError, match="JSON object"):
        LMConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_preset_parameter_counts_match_moshi() -> None:
    """Counted on the meta device; equal to moshi's LMModel built from the same config."""
    from moshi.models.lm import LMModel

    expected = {"stt-1b": 0.99e9, "stt-2.6b": 2.62e9, "moshi-7b": 7.69e9}
    for name, approx in expected.items():
        config = preset(name)
        count = count_parameters(config)
        assert abs(count - approx) / approx < 0.005, (name, count)
        if name != "moshi-7b":  # moshi-7b's reference build is the slowest; two suffice
            reference = LMModel(device=torch.device("meta"), **config.moshi_kwargs())
            assert count == sum(p.numel() for p in reference.parameters()), name
    with pytest.raises(ValueError, match="unknown LM preset"):
        preset("stt-9b")
    assert preset("tiny-stt", n_q=4, delays=[0] * 5).n_q == 4
