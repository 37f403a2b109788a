"""Checkpoint loading: bad weights files give errors naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsm.models import CheckpointError, LMConfig, MultistreamLM, load_lm, save_lm

RAW = dict(
    dim=32, num_heads=2, num_layers=1, hidden_scale=4.125, context=8, norm="rms_norm_f32",
    gating="silu", positional_embedding="rope", card=16, n_q=3, dep_q=2, text_card=20,
    delays=[0, 0, 1, 1], depformer_dim=16, depformer_num_heads=2, depformer_num_layers=1,
    depformer_multi_linear=True, depformer_weights_per_step=True, depformer_pos_emb="none",
)


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[MultistreamLM, Path]:
    lm = MultistreamLM(LMConfig.from_dict(RAW)).eval()
    weights, _ = save_lm(lm, tmp_path / "lm.safetensors")
    return lm, weights


def test_stacked_per_step_layout_and_reload(saved: tuple[MultistreamLM, Path]) -> None:
    lm, weights = saved
    state = load_file(str(weights))
    # Kyutai's layout: per-step attention weights stacked along dim 0, nothing split.
    assert state["depformer.layers.0.self_attn.in_proj_weight"].shape == (2 * 3 * 16, 16)
    assert state["depformer.layers.0.self_attn.out_proj.weight"].shape == (2 * 16, 16)
    assert "depformer.layers.0.gating.1.linear_in.weight" in state
    assert not any("in_projs" in key for key in state)
    again = load_lm(weights, weights.parent / "config.json", dtype=torch.bfloat16)
    assert again.text_emb.weight.dtype == torch.bfloat16
    torch.testing.assert_close(again.text_emb.weight.float(), lm.text_emb.weight.to(torch.bfloat16).float())


def test_missing_key_is_named(saved: tuple[MultistreamLM, Path], tmp_path: Path) -> None:
    _, weights = saved
    state = load_file(str(weights))
    del state["linears.1.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): linears\.1\.weight"):
        load_lm(tmp_path / "missing.safetensors", RAW)


def test_misshaped_and_unexpected_keys_are_named(saved: tuple[MultistreamLM, Path], tmp_path: Path) -> None:
    _, weights = saved
    state = load_file(str(weights))
    state["text_emb.weight"] = torch.zeros(22, 32)
    state["extra_heads.0.weight"] = torch.zeros(6, 32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"text_emb\.weight: expected \[21, 32\], got \[22, 32\]") as error:
        load_lm(tmp_path / "bad.safetensors", RAW)
    assert "unexpected keys (1): extra_heads.0.weight" in str(error.value)


def test_bad_files_and_missing_config(saved: tuple[MultistreamLM, Path], tmp_path: Path) -> None:
    _, weights = saved
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lm(tmp_path / "none.safetensors", RAW)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_lm(tmp_path / "junk.safetensors", RAW)
    with pytest.raises(ValueError, match="needs a config"):
        load_lm(weights)
