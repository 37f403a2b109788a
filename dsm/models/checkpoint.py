"""Kyutai-layout LM checkpoints: `load_lm(weights, config)` and `save_lm(lm, path)`.

The weights are one safetensors file whose keys are the module paths of `MultistreamLM`
(Kyutai's names: `emb.{i}.weight`, `text_emb.weight`, `transformer.layers.{l}.self_attn.
in_proj_weight`, `depformer_in.{i}.weight`, `linears.{k}.weight`, ...). Attention
projections are stored stacked (`in_proj_weight`, and for the depformer's per-step weights
all sets along dim 0), as in Kyutai's published files; files written by `moshi`'s own
`state_dict()` (`in_projs.{i}.weight`) load too. The config is Kyutai's config.json.
Anything missing, extra or misshaped is an error naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dsm.models.config import LMConfig
from dsm.models.lm import MultistreamLM
from dsm.modules.transformer import normalize_attention_keys

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Weights kept in float32 whatever dtype the rest is cast to (as moshi's loader does).
FLOAT32_PREFIXES = ("condition_provider.", "fuser.")


class CheckpointError(ValueError):
    """The weights do not fit the config: missing, unexpected or misshaped keys."""


def _as_config(config: LMConfig | dict[str, Any] | str | Path) -> LMConfig:
    if isinstance(config, LMConfig):
        return config
    if isinstance(config, dict):
        return LMConfig.from_dict(config)
    return LMConfig.from_json(config)


def build_lm(config: LMConfig | dict[str, Any] | str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> MultistreamLM:
    """A `MultistreamLM` with fresh random weights."""
    lm = MultistreamLM(_as_config(config))
    return lm.to(device=device, dtype=dtype)


def count_parameters(config: LMConfig | dict[str, Any] | str | Path) -> int:
    """Parameter count of the LM for `config`, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        lm = MultistreamLM(_as_config(config))
    return sum(p.numel() for p in lm.parameters())


def check_state_dict(lm: MultistreamLM, state: dict[str, torch.Tensor]) -> None:
    """Raise `CheckpointError` listing missing, unexpected and misshaped keys."""
    expected = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: expected {list(expected[k])}, got {list(state[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}"
                        + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                        + (" ..." if len(unexpected) > 8 else ""))
    if misshaped:
        problems.append(f"misshaped keys ({len(misshaped)}): {'; '.join(misshaped[:8])}"
                        + (" ..." if len(misshaped) > 8 else ""))
    if problems:
        raise CheckpointError("LM weights do not match the config: " + " | ".join(problems))


def load_lm(weights: str | Path, config: LMConfig | dict[str, Any] | str | Path | None = None,
            device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MultistreamLM:
    """Load a Kyutai-layout LM.

    `weights`: a safetensors file, or a directory holding `model.safetensors` (or the file its
    config names in `moshi_name`) and `config.json`. `config`: LMConfig, dict or path to a
    config.json (default: the directory's config.json). `dtype`: cast floating weights
    (None keeps the stored dtypes).
    """
    weights = Path(weights)
    if weights.is_dir():
        if config is None:
            config = weights / CONFIG_NAME
        cfg = _as_config(config)
        weights = weights / str(cfg.extras.get("moshi_name", WEIGHTS_NAME))
    else:
        if config is None:
            raise ValueError("load_lm needs a config (dict, LMConfig or config.json path) for a weights file")
        cfg = _as_config(config)
    if not weights.is_file():
        raise FileNotFoundError(f"LM weights not found: {weights}")
    try:
        state = load_file(str(weights), device=str(device))
    except SafetensorError as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from None
    state = normalize_attention_keys(state)
    with torch.device("meta"):
        lm = MultistreamLM(cfg)
    check_state_dict(lm, state)
    if dtype is not None:  # conditioners stay in float32, as Kyutai stores and runs them
        state = {k: v.to(dtype) if v.is_floating_point() and not k.startswith(FLOAT32_PREFIXES)
                 else v for k, v in state.items()}
    lm.load_state_dict(state, strict=True, assign=True)
    return lm.eval()


def save_lm(lm: MultistreamLM, path: str | Path, config_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write the weights (Kyutai layout) and config.json; returns (weights, config) paths.

    `path` a directory: `model.safetensors` and `config.json` in it (the config names the
    weights in `moshi_name`, as Kyutai's repositories do). `path` a file: the weights there
    and the config at `config_path` (default: `config.json` beside it).
    """
    path = Path(path)
    if path.suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        weights_path, default_config = path / WEIGHTS_NAME, path / CONFIG_NAME
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        weights_path, default_config = path, path.parent / CONFIG_NAME
    config_file = Path(config_path) if config_path is not None else default_config
    state = {k: v.detach().contiguous().cpu() for k, v in lm.state_dict().items()}
    save_file(state, str(weights_path))
    raw = lm.config.to_dict()
    raw["moshi_name"] = weights_path.name
    config_file.write_text(json.dumps(raw, indent=2) + "\n")
    return weights_path, config_file
