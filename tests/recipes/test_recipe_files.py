"""The recipes in dsm/recipes/configs: each parses against its task's schema, and the ones
the model cards (docs/models) name as the makers of the shipped default models describe those models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from dsm.codecs.mimi import MimiConfig
from dsm.recipes.config import recipe_from_dict

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "dsm" / "recipes" / "configs"
ASSETS = REPO / "dsm" / "assets"
# translation.toml checks its tokenizer path when parsed: test_translation_recipe.py
# parses it against tiny files at those paths
PARSE_ALONE = sorted(p.name for p in CONFIGS.glob("*.toml") if p.name != "translation.toml")


def _recipe(name: str):
    path = CONFIGS / name
    return recipe_from_dict(tomllib.loads(path.read_text()), str(path), check_paths=False)


@pytest.mark.parametrize("name", PARSE_ALONE)
def test_recipe_parses(name: str) -> None:
    recipe = _recipe(name)
    assert recipe.kind in {"toy", "codec", "asr", "tts"}


def test_codec_spectral_recipe_is_the_shipped_codec_s() -> None:
    shipped = json.loads((ASSETS / "codec" / "config.json").read_text())
    recipe_codec = _recipe("codec-spectral.toml").task.codec
    assert MimiConfig.from_dict(shipped["config"]) == recipe_codec
    assert shipped["num_codebooks"] == recipe_codec.n_q


def test_asr_cpu_recipe_is_the_shipped_asr_model_s() -> None:
    shipped = json.loads((ASSETS / "asr" / "config.json").read_text())
    task = _recipe("asr-cpu.toml").task
    assert (shipped["dim"], shipped["num_layers"], shipped["num_heads"], shipped["n_q"]) == (
        task.dim, task.num_layers, task.num_heads, task.num_codebooks)
    assert shipped["stt_config"]["audio_delay_seconds"] == task.text_delay_s
    assert shipped["codec"] == "../codec"


def test_tts_cpu_recipe_is_the_shipped_tts_model_s() -> None:
    shipped = json.loads((ASSETS / "tts" / "config.json").read_text())
    task = _recipe("tts-cpu.toml").task
    model = task.model
    assert (shipped["dim"], shipped["num_layers"], shipped["num_heads"], shipped["dep_q"]) == (
        model.dim, model.num_layers, model.num_heads, task.num_codebooks)
    assert (shipped["depformer_dim"], shipped["depformer_num_layers"]) == (
        model.depformer_dim, model.depformer_num_layers)
    assert shipped["tts_config"]["audio_delay"] == task.audio_delay_seconds
    assert shipped["lm_gen_config"] == {"temp": task.temp, "top_k": task.top_k,
                                        "temp_text": task.temp_text, "top_k_text": task.top_k_text}
    assert shipped["codec"] == "../codec"
