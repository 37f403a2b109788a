"""dsm from Python: transcribe, speak and translate with one call.

    import dsm

    transcript = dsm.transcribe("speech.wav")                 # the shipped ASR model
    print(transcript.text, transcript.words[0].start)
    speech = dsm.speak("Hello there.", model="kyutai/tts-1.6b-en_fr")
    soundfile.write("hello.wav", speech.pcm, speech.sample_rate)
    french = dsm.translate("talk.wav", model="kyutai/hibiki-2b-pytorch-bf16")

`model` is a model directory, a Hugging Face repo id (`owner/name[@REVISION]`), a model
loaded once with `dsm.load`, or None for the shipped default. Every call streams the way
the commands do (`dsm.streaming.batch`): a list of inputs gives a list of results, up to
`batch_size` streams side by side, and a stream that fails raises `StreamFailed`.
Audio is a path, the bytes of a sound file, or a mono float32 array at the model's rate
(or at `sample_rate`, then resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsm.streaming.batch import StreamResult, run_streams
from dsm.streaming.events import AudioEvent, EndWordEvent, TextEvent, WordEvent

Audio = str | Path | bytes | np.ndarray
_A = {"asr": "an ASR", "tts": "a TTS", "translation": "a translation", "dialogue": "a dialogue"}


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds into the audio
    end: float | None  # None: the model did not close the word before the stream ended
    emitted: float  # seconds of stream the model had stepped when it gave the word


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word]


@dataclass(frozen=True)
class Speech:
    pcm: np.ndarray  # float32 [N]
    sample_rate: int
    words: list[tuple[str, float, float]]  # (word, start, stop) in the audio, seconds
    first_audio_s: float  # wall time from the stream taking its slot to its first audio


@dataclass(frozen=True)
class Translation:
    text: str
    words: list[Word]  # target words; start: their time in the stream
    pcm: np.ndarray | None  # target speech, for models with audio heads and audio_out=True
    sample_rate: int


def load(model: Any = None, task: str = "asr", device: str | None = None) -> Any:
    """A loaded model directory (`ModelDir`) for `task`; `model` as in the module docstring.
    Raises `ModelDirError` with what to do."""
    from dsm.models.model_dir import ModelDirError, resolve_model
    from dsm.streaming.model_dir import ModelDir, load_model_dir

    if isinstance(model, ModelDir):
        loaded = model
    else:
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model_dir(resolve_model(model, task), device=device)
    if loaded.task != task:
        raise ModelDirError(f"{loaded.path} is {_A.get(loaded.task, loaded.task)} model; this "
                            f"needs {_A[task]} one")
    return loaded


def _as_list(items: Any, single: type | tuple[type, ...]) -> tuple[list[Any], bool]:
    if isinstance(items, single):
        return [items], True
    return list(items), False


def _pcm(audio: Audio, rate: int, sample_rate: int | None) -> np.ndarray:
    from dsm.audio_io import read_audio

    if isinstance(audio, str | Path | bytes | bytearray):
        return read_audio(audio, rate)
    pcm = np.asarray(audio, dtype=np.float32)
    if pcm.ndim != 1:
        raise ValueError(f"audio arrays must be mono [N], got shape {pcm.shape}")
    if sample_rate is not None and sample_rate != rate:
        import soxr

        pcm = soxr.resample(pcm, sample_rate, rate).astype(np.float32)
    return np.ascontiguousarray(pcm)


def words_of(result: StreamResult, frame_rate: float) -> list[Word]:
    """A stream's `WordEvent`s with the `EndWordEvent`s that close them."""
    words: list[list[Any]] = []
    for timed in result.events:
        event = timed.event
        if isinstance(event, WordEvent):
            words.append([event.text, event.start_time, None, timed.step / frame_rate])
        elif isinstance(event, EndWordEvent) and words and words[-1][2] is None:
            words[-1][2] = event.stop_time
    return [Word(*w) for w in words]


def transcribe(audio: Audio | Sequence[Audio], model: Any = None, *,
               sample_rate: int | None = None, device: str | None = None,
               batch_size: int = 8, cuda_graph: bool = True) -> Any:
    """Speech to text: a `Transcript` per input (one, or a list for a list)."""
    asr = load(model, "asr", device)
    items, single = _as_list(audio, (str, Path, bytes, bytearray, np.ndarray))
    pcms = [_pcm(item, asr.codec.sample_rate, sample_rate) for item in items]

    def start(index: int) -> Any:
        session = asr.asr_session()
        if pcms[index].size:
            session.push_pcm(pcms[index])
        session.end()
        return session

    with asr.engine(max(1, min(batch_size, len(pcms))), cuda_graph=cuda_graph) as engine:
        results = run_streams(engine, len(pcms), start)
    transcripts = []
    for result in results:
        words = words_of(result, asr.frame_rate)
        transcripts.append(Transcript(" ".join(w.text for w in words), words))
    return transcripts[0] if single else transcripts


def speak(text: str | Sequence[str], model: Any = None, *,
          voice: str | Sequence[str] | None = None, cfg_alpha: float | None = None,
          seed: int = 0, device: str | None = None, batch_size: int = 1,
          cuda_graph: bool = True, **sampling: Any) -> Any:
    """Text to speech: a `Speech` per text (one, or a list for a list). Text i gets the
    random stream `seed + i`. `voice` (Kyutai's TTS): a voice name or file, or one per
    speaker; `cfg_alpha`: guidance strength; `sampling` (temp, top_k, n_q, ...) goes to the
    engine."""
    tts = load(model, "tts", device)
    texts, single = _as_list(text, str)
    for index, item in enumerate(texts):
        if not item.split():
            raise ValueError(f"text {index} is empty: nothing to speak")
    guidance, options = tts.guidance(cfg_alpha)
    sampling = {**guidance, **sampling}
    if voice is not None:
        options["voice"] = voice if isinstance(voice, str) else list(voice)

    def start(index: int) -> Any:
        session = tts.tts_session(seed=seed + index, **options)
        for word in texts[index].split():
            session.push_text(word + " ")
        session.end_text()
        return session

    with tts.engine(max(1, min(batch_size, len(texts))), cuda_graph=cuda_graph,
                    **sampling) as engine:
        results = run_streams(engine, len(texts), start)
    speeches = []
    for result in results:
        audio = [t for t in result.events if isinstance(t.event, AudioEvent)]
        pcm = (np.concatenate([t.event.pcm for t in audio]) if audio
               else np.zeros(0, dtype=np.float32))
        words = [(e.text, e.start_s, e.stop_s) for e in result.of(TextEvent)]
        first = audio[0].wall_s if audio else float("nan")
        speeches.append(Speech(pcm, int(tts.codec.sample_rate), words, first))
    return speeches[0] if single else speeches


def translate(audio: Audio | Sequence[Audio], model: Any = None, *,
              sample_rate: int | None = None, device: str | None = None,
              batch_size: int = 8, audio_out: bool = False, cuda_graph: bool = True,
              **sampling: Any) -> Any:
    """Speech translation: a `Translation` per input (one, or a list for a list)."""
    from dsm.streaming.translation import push_source

    model_dir = load(model, "translation", device)
    items, single = _as_list(audio, (str, Path, bytes, bytearray, np.ndarray))
    rate = model_dir.codec.sample_rate
    pcms = [_pcm(item, rate, sample_rate) for item in items]

    def start(index: int) -> Any:
        session = model_dir.translation_session(audio_out=audio_out)
        push_source(session, pcms[index], rate)
        return session

    with model_dir.engine(max(1, min(batch_size, len(pcms))), cuda_graph=cuda_graph,
                          **sampling) as engine:
        results = run_streams(engine, len(pcms), start)
    translations = []
    for result in results:
        words = words_of(result, model_dir.frame_rate)
        frames = [e.pcm for e in result.of(AudioEvent)]
        pcm = np.concatenate(frames) if frames else None
        translations.append(Translation(" ".join(w.text for w in words), words, pcm, rate))
    return translations[0] if single else translations
