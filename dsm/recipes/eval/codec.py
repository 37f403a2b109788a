"""`dsm eval codec --model DIR`: pass each manifest row's audio through a codec.

Each utterance is read at the codec's sample rate, zero-padded to whole frames, encoded
to codes `[1, K, T]` and decoded back; the decoded audio, advanced by the codec's declared
`delay_samples` (a design constant, 0 for Mimi) and cut to the input's length, is
written as a 16-bit wav at the same rate and scored by `dsm eval codec` against the row's
audio (SI-SNR, mel distance, STOI). The decoded files go to a temporary folder that is
removed when the process exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsm.audio_io import read_audio
from dsm.codecs.base import Codec
from dsm.recipes.eval.outputs import row_key


@torch.inference_mode()
def reconstruct(codec: Codec, samples: np.ndarray) -> np.ndarray:
    """Encode then decode mono `samples` `[N]` (at the codec's rate); returns the `[N]`
    samples that reconstruct them (the output `delay_samples` later, for a codec that
    declares a delay)."""
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"expected non-empty mono samples, got shape {samples.shape}")
    delay = codec.delay_samples
    frames = -(-(samples.size + delay) // codec.frame_size)
    wav = torch.zeros(1, 1, frames * codec.frame_size)        # [1, 1, N padded]
    wav[0, 0, : samples.size] = torch.from_numpy(samples)
    codes = codec.encode(wav)                                  # [1, K, T]
    decoded = codec.decode(codes)                              # [1, 1, T * frame_size]
    return decoded[0, 0, delay: delay + samples.size].float().numpy()


def codec_outputs(model: str, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Outputs `{"id" | "audio": ..., "decoded": PATH}` for `dsm eval codec`, one per row."""
    import soundfile

    from dsm.codecs import load_codec

    torch.manual_seed(0)
    codec = load_codec(model)
    folder = Path(tempfile.mkdtemp(prefix="dsm-eval-codec-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    outputs = []
    for index, row in enumerate(rows):
        decoded = reconstruct(codec, read_audio(row.audio, codec.sample_rate))
        path = folder / f"{index:06d}.wav"
        soundfile.write(str(path), np.clip(decoded, -1.0, 1.0), codec.sample_rate,
                        subtype="PCM_16")
        outputs.append({**row_key(row), "decoded": str(path)})
    return outputs
