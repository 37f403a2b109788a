"""Reading sound files (a path or the bytes of one) as mono float32 at a chosen rate.

libsndfile (through `soundfile`) reads WAV, FLAC, Ogg Vorbis, Ogg Opus and MP3; `soxr`
resamples. torchaudio is not used (its registry build needs CUDA).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


class AudioFileError(ValueError):
    """A file that is missing, unreadable as sound, or holds no samples."""


def read_audio(source: str | Path | bytes, sample_rate: int) -> np.ndarray:
    """A sound file -> mono float32 `[N]` at `sample_rate` (channels averaged, resampled).

    `source` is a path or the file's bytes (an upload); errors name what was wrong.
    """
    return read_audio_with_rate(source, sample_rate)[0]


def read_audio_with_rate(source: str | Path | bytes, sample_rate: int | None = None
                         ) -> tuple[np.ndarray, int]:
    """(mono float32 `[N]`, its rate): at `sample_rate`, or at the file's own rate for None."""
    import soundfile
    import soxr

    if isinstance(source, bytes | bytearray):
        name = "the uploaded audio"
        if not source:
            raise AudioFileError(f"{name} is empty (0 bytes)")
        handle: object = io.BytesIO(bytes(source))
    else:
        name = str(source)
        if not Path(source).is_file():
            raise AudioFileError(f"audio file not found: {source}")
        handle = name
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as error:
        raise AudioFileError(f"{name}: not a readable sound file ({error})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{name}: the audio is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{name}: the audio holds non-finite samples (NaN or inf)")
    mono = data.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        mono, rate = soxr.resample(mono, rate, sample_rate), sample_rate
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)
