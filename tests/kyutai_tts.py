"""A tiny Kyutai DSM TTS model with tts-1.6b-en_fr's feature flags, built by `moshi`.

Shared by the TTS conformance tests: the config (the shape of kyutai/tts-1.6b-en_fr's
config.json, scaled down: cross-attention on speaker embeddings, "cfg" and "control"
lookup tables fused by sum, 32 generated codebooks with an acoustic delay, a multi-linear
depformer with a weight schedule and low-rank embeddings, the muxed second text stream),
moshi's LMModel with random weights, and voice files in Kyutai's layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import moshi_conditioned_lm
from safetensors.torch import save_file

VOICE_DIM = 16  # the speaker embedding width (Mimi's latent width in the real model)
VOICE_FRAMES = 5  # frames of one voice embedding
MAX_SPEAKERS = 5  # moshi's TTSModel.max_speakers
CFG_VALUES = ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]
MODEL_ID = {"sig": "1e68beda", "epoch": 240}
SCHEDULE = list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8


def tts_raw(**fields: object) -> dict:
    """The shape of kyutai/tts-1.6b-en_fr's config.json, scaled down."""
    raw = dict(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=64, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", causal=True,
        layer_scale=None, card=64, n_q=32, dep_q=32, text_card=100,
        existing_text_padding_id=3, delays=[0, 0] + [2] * 31,
        depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2,
        depformer_dim_feedforward=64, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_weights_per_step_schedule=list(SCHEDULE),
        depformer_low_rank_embeddings=16, depformer_pos_emb="none", depformer_context=32,
        demux_second_stream=True, cross_attention=True,
        conditioners={
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": VOICE_DIM}},
            "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                           "possible_values": list(CFG_VALUES)}},
            "control": {"type": "lut", "lut": {"n_bins": 2, "dim": 16, "tokenizer": "noop",
                                               "possible_values": ["ok", "bad"]}},
        },
        fuser={"sum": ["control", "cfg"], "cross": ["speaker_wavs"], "prepend": [],
               "cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1.0},
        model_id=dict(MODEL_ID),
        tts_config={"audio_delay": 0.32, "second_stream_ahead": 2},
        model_type="tts",
    )
    raw.update(fields)
    return raw


def moshi_tts_lm(raw: dict, seed: int = 0) -> torch.nn.Module:
    """moshi's LMModel with the conditioners and fuser its loader builds from `raw`."""
    return moshi_conditioned_lm(raw, seed)


def save_kyutai_lm(model: torch.nn.Module, path: Path) -> Path:
    """moshi's state dict in Kyutai's published layout (stacked attention projections)."""
    from dsm.modules.transformer import normalize_attention_keys

    state = normalize_attention_keys({k: v.contiguous() for k, v in model.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_voice(path: Path, seed: int, frames: int = VOICE_FRAMES, dim: int = VOICE_DIM) -> Path:
    """A voice file as Kyutai ships them: `speaker_wavs` `[1, dim, frames]` in safetensors."""
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"speaker_wavs": torch.randn(1, dim, frames, generator=g)}, str(path))
    return path
