"""Kyutai's TTS voices: speaker embeddings that the model cross-attends to.

A voice file is a safetensors file holding `speaker_wavs` `[1, D, T]` (D the speaker
conditioner's input width, T frames), named after the model it was made for:
`<voice>.<sig>@<epoch>.safetensors` with `sig` and `epoch` from the model's config.json
`model_id`. A stream speaks with up to `max_speakers` voices (moshi's TTSModel: 5): their
frames are laid one speaker after the other, `[max_speakers * T, D]`, with the slots of
absent speakers masked out (they read the conditioner's learnt padding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from dsm.models.conditioners import TensorValue

VOICE_KEY = "speaker_wavs"
MAX_SPEAKERS = 5


class VoiceError(ValueError):
    """A voice that this model cannot speak with: unknown, malformed, or made for another."""


def voice_suffix(model_id: dict[str, Any] | None) -> str:
    """The file-name ending of the voices made for the model `model_id` (Kyutai's naming)."""
    if not model_id:
        return ".safetensors"
    return f".{model_id['sig']}@{model_id['epoch']}.safetensors"


def load_voice(path: str | Path, *, dim: int, model_id: dict[str, Any] | None = None) -> torch.Tensor:
    """A voice file's embedding as `[T, dim]` float32 (checked against the model)."""
    file = Path(path)
    if not file.is_file():
        raise VoiceError(f"voice file not found: {file}")
    if file.suffix != ".safetensors":
        raise VoiceError(f"{file}: a voice is a .safetensors file of speaker embeddings")
    suffix = voice_suffix(model_id)
    if model_id and not file.name.endswith(suffix):
        made_for = file.name.rsplit(".", 2)[-2] if file.name.count(".") >= 2 else "?"
        raise VoiceError(
            f"{file.name}: made for model {made_for!r}, this model is "
            f"{model_id['sig']}@{model_id['epoch']} (its voices end in {suffix})"
        )
    try:
        tensors = load_file(str(file))
    except SafetensorError as error:
        raise VoiceError(f"{file}: not a readable safetensors file ({error})") from None
    if VOICE_KEY not in tensors:
        raise VoiceError(f"{file}: no {VOICE_KEY!r} tensor (found {sorted(tensors)})")
    embedding = tensors[VOICE_KEY]
    if embedding.dim() != 3 or embedding.shape[0] != 1 or embedding.shape[1] != dim:
        raise VoiceError(
            f"{file}: {VOICE_KEY} has shape {tuple(embedding.shape)}, this model takes "
            f"[1, {dim}, frames]"
        )
    if embedding.shape[2] == 0 or not torch.isfinite(embedding).all():
        raise VoiceError(f"{file}: the speaker embedding is empty or not finite")
    return embedding[0].t().float().contiguous()


def speakers_value(voices: list[torch.Tensor], max_speakers: int = MAX_SPEAKERS) -> TensorValue:
    """The speaker conditioner's input for a stream speaking with `voices` (each `[T, D]`,
    one length): `[max_speakers * T, D]`, absent speakers masked out."""
    if not voices:
        raise VoiceError("at least one voice is needed")
    if len(voices) > max_speakers:
        raise VoiceError(f"{len(voices)} voices, this model takes at most {max_speakers} speakers")
    frames, dim = voices[0].shape
    if any(v.shape != (frames, dim) for v in voices):
        raise VoiceError(f"voices of different shapes {[tuple(v.shape) for v in voices]}")
    tensor = torch.zeros(max_speakers, frames, dim)
    mask = torch.zeros(max_speakers, frames, dtype=torch.bool)
    for index, voice in enumerate(voices):
        tensor[index] = voice
        mask[index] = True
    return TensorValue(tensor.view(-1, dim), mask.view(-1))
