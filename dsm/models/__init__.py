"""Multistream LM (Kyutai-compatible): config, model, checkpoints and presets."""

from dsm.models.checkpoint import (
    CheckpointError,
    build_lm,
    check_state_dict,
    count_parameters,
    load_lm,
    save_lm,
)
from dsm.models.config import LMConfig, LMConfigError
from dsm.models.lm import LMLoss, LMOutput, MultistreamLM, TokenEmbedding
from dsm.models.presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "CheckpointError",
    "LMConfig",
    "LMConfigError",
    "LMLoss",
    "LMOutput",
    "MultistreamLM",
    "TokenEmbedding",
    "build_lm",
    "check_state_dict",
    "count_parameters",
    "load_lm",
    "preset",
    "save_lm",
]
