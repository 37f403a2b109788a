"""Silence: the one definition that training and inference share.

Silence is digital zeros. That is what the sessions feed: the ASR session pads a stream's
last partial frame with zeros, flushes its delays with `text_delay + max_delay + 1` frames
of zeros, and puts a model's `audio_silence_prefix_seconds` of zeros in front of the
stream; the clients send zeros until their marker comes back. The engine turns every
frame into codes with the codec's streaming encoder, from a fresh state per stream.

`silence_codes` computes the codes of silence the same way (zeros from the start of a
stream, through `encode_step`), so that a model trains on exactly the codes it hears:
- TTS: the `audio_delay` frames before the recording starts (the model generates them,
  the session drops them);
- translation: the target audio frames before the target speech starts;
- ASR: silence in front of a training item (the stream start, as the silence prefix) and
  between chained utterances.
Silence after speech (the ASR flush) is not these codes: the codec still hears the speech
there, so training appends `silence_pcm` to the recording before encoding it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def silence_pcm(num_samples: int) -> np.ndarray:
    """`num_samples` samples of silence, float32 `[num_samples]`."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return np.zeros(int(num_samples), dtype=np.float32)


@torch.no_grad()
def silence_codes(codec: Any, frames: int) -> torch.Tensor:
    """Codes `[K, frames]` (int64, CPU) of `frames` frames of silence from the start of a
    stream, through the codec's streaming encoder as the engine runs it.

    A codec without a streaming encoder (the EnCodec adapter) cannot serve a session; its
    offline codes of the same zeros stand in, which a streaming codec matches."""
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    frame_size = int(codec.frame_size)
    device = _device_of(codec)
    if frames == 0:
        return torch.zeros((int(codec.num_codebooks), 0), dtype=torch.long)
    frame = torch.from_numpy(silence_pcm(frame_size)).view(1, 1, frame_size).to(device)
    try:
        with codec.streaming(1):
            steps = [codec.encode_step(frame) for _ in range(frames)]  # each [1, K, 1]
        codes = torch.cat(steps, dim=-1)
    except NotImplementedError:
        wav = torch.from_numpy(silence_pcm(frames * frame_size)).view(1, 1, -1).to(device)
        codes = codec.encode(wav)[..., :frames]
    return codes[0].to("cpu", torch.long)  # [K, frames]


def _device_of(codec: Any) -> torch.device:
    if isinstance(codec, torch.nn.Module):
        parameter = next(iter(codec.parameters()), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
