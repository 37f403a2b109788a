"""TTS intelligibility: speak texts and transcribe the speech with an independent recognizer;
`dsm eval tts --model REF` scores it per manifest row.

The recognizer is a dsm ASR model (default the shipped dsm/assets/asr) or, by the reserved
name "pocketsphinx", CMU PocketSphinx (`dsm.recipes.eval.pocketsphinx`). With
`reference_audio`, the same recognizer also transcribes each row's own audio: its WER there
is the recognizer's floor, against which the TTS figure is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dsm.recipes.data.manifest import ManifestRow
from dsm.recipes.eval import pocketsphinx
from dsm.recipes.eval.outputs import EvalError, Output, row_key

# (mono float signals, their sample rate) -> one transcript per signal
Transcriber = Callable[[Sequence[np.ndarray], int], list[str]]


def intelligibility(tts_model: Any, asr_model: Any, texts: Sequence[str], *, seed: int = 0,
                    tts_batch: int = 1, asr_batch: int = 8,
                    **sampling: Any) -> tuple[list[Any], list[str]]:
    """Speak `texts` (`dsm.speak`) and transcribe the speech with an independent ASR model:
    the `Speech`es and their transcripts."""
    from dsm.api import speak

    speech = speak(list(texts), model=tts_model, seed=seed, batch_size=tts_batch, **sampling)
    transcripts = dsm_transcriber(asr_model, asr_batch)([s.pcm for s in speech],
                                                        int(tts_model.codec.sample_rate))
    return speech, transcripts


def dsm_transcriber(asr_model: Any, batch_size: int = 8) -> Transcriber:
    """A loaded dsm ASR model as a `Transcriber` (`dsm.transcribe`)."""
    from dsm.api import transcribe

    def run(pcms: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        return [t.text for t in transcribe(list(pcms), model=asr_model, sample_rate=sample_rate,
                                           batch_size=batch_size)]

    return run


def recognizer(asr_model: str | None, device: str | None = None) -> Transcriber:
    """The `Transcriber` an --asr-model value names: "pocketsphinx", or a dsm ASR model
    directory or repo id (None: the shipped dsm/assets/asr). Raises
    `pocketsphinx.RecognizerUnavailable` when that package is not installed."""
    if asr_model == pocketsphinx.NAME:
        pocketsphinx.check_installed()
        return pocketsphinx.transcribe_pocketsphinx
    from dsm.api import load

    return dsm_transcriber(load(asr_model, "asr", device))


def reference_pcms(rows: Sequence[ManifestRow], sample_rate: int) -> list[np.ndarray]:
    """Each row's own audio, mono at `sample_rate`; an unreadable file is an EvalError."""
    from dsm.audio_io import AudioFileError, read_audio

    pcms = []
    for row in rows:
        try:
            pcms.append(read_audio(row.audio, sample_rate))
        except AudioFileError as error:
            raise EvalError(f"--reference-audio: {error}") from None
    return pcms


def tts_outputs(model: Any, rows: Sequence[ManifestRow], *, asr_model: str | None = None,
                seed: int = 0, device: str | None = None,
                reference_audio: bool = False) -> list[Output]:
    """{"id"|"audio", "transcript", "first_audio_s", "audio_s"} per row: its text spoken by
    `model` and heard by the `asr_model` recognizer (see `recognizer`); with
    `reference_audio`, also "reference_transcript": the same recognizer on the row's audio."""
    from dsm.api import load, speak
    from dsm.recipes.tasks.tts import check_codec

    tts_model = load(model, "tts", device)
    check_codec(tts_model)
    rate = int(tts_model.codec.sample_rate)
    try:
        hear = recognizer(asr_model, device)  # before speaking: a missing recognizer fails fast
    except pocketsphinx.RecognizerUnavailable as error:
        raise EvalError(str(error)) from None
    references = reference_pcms(rows, rate) if reference_audio else []
    speech = speak([row.text for row in rows], model=tts_model, seed=seed, batch_size=1)
    heard = hear([spoken.pcm for spoken in speech] + references, rate)  # one recognizer run
    transcripts, reference_transcripts = heard[:len(rows)], heard[len(rows):]
    outputs = [{**row_key(row), "transcript": transcript,
                "first_audio_s": round(spoken.first_audio_s, 4),
                "audio_s": round(spoken.pcm.size / rate, 3)}
               for row, spoken, transcript in zip(rows, speech, transcripts, strict=True)]
    if reference_audio:
        for output, reference_transcript in zip(outputs, reference_transcripts, strict=True):
            output["reference_transcript"] = reference_transcript
    return outputs
