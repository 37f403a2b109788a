"""espeak-ng speech with word onsets, through libespeak-ng's own word events (ctypes).

libespeak-ng is initialised in synchronous mode (`AUDIO_OUTPUT_SYNCHRONOUS`): `espeak_Synth`
returns when the whole text is spoken, and the synth callback receives the samples and an
event list as they are produced. Each `espeakEVENT_WORD` event carries the character
position of the word in the text (`text_position`, 1-based, in characters) and the time
at which its sound starts in the output (`audio_position`, ms). That is the synthesizer's
own knowledge of where it placed the word, so onsets are exact up to espeak's 1 ms
resolution; the corpus writer then refines them on the signal (see `synth_corpus`).

Voice, rate (words per minute), pitch (0-100), pitch range (0-100) and the gap between
words (units of 10 ms) are set with `espeak_SetVoiceByName` / `espeak_SetParameter`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

LIBRARY = "libespeak-ng.so.1"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 3, 4, 7

_SAMPLE_RATE: int | None = None  # set by the first espeak_Initialize of this process


class EngineUnavailable(RuntimeError):
    """A speech engine's library or voice cannot be loaded on this machine."""


class SynthesisError(RuntimeError):
    """The engine spoke, but its timing output does not cover every word of the text."""


class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h (x86-64 layout: 40 bytes)
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass
class Spoken:
    """One text spoken by an engine, at the engine's own sample rate."""

    audio: np.ndarray          # [N] float32 in [-1, 1]
    sample_rate: int
    onsets: list[float]        # seconds, one per whitespace token of the text
    ends: list[float] | None   # engine word ends in seconds when the engine knows them


def token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the whitespace tokens of `text`."""
    spans, start = [], None
    for i, char in enumerate(text + " "):
        if char.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    return spans


class EspeakEngine:
    """One libespeak-ng instance (the library holds global state: one per process)."""

    def __init__(self, library: str = LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as error:
            raise EngineUnavailable(
                f"espeak-ng is not available: cannot load {library} ({error}). Install it "
                "with `apt-get install espeak-ng libespeak-ng1`."
            ) from error
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        global _SAMPLE_RATE
        if _SAMPLE_RATE is None:  # the library is initialised once per process
            _SAMPLE_RATE = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0))
        if _SAMPLE_RATE <= 0:
            raise EngineUnavailable("espeak-ng failed to initialise (espeak-ng-data missing?)")
        self.sample_rate = _SAMPLE_RATE
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []  # (text_position, audio_position ms)
        self._callback = _Callback(self._on_audio)  # kept alive as long as the engine

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._events.append((events[i].text_position, events[i].audio_position))
            i += 1
        return 0  # continue synthesis

    def speak(self, text: str, voice: str, rate: int = 175, pitch: int = 50,
              pitch_range: int = 50, word_gap: int = 0) -> Spoken:
        """Speak `text` with espeak voice `voice` (e.g. 'en-gb+f3'); rate in words/minute."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EngineUnavailable(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                             (_PARAM_RANGE, pitch_range), (_PARAM_WORDGAP, word_gap)):
            lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        lib.espeak_SetSynthCallback(self._callback)  # this engine's, even if another exists
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                  None, None)
        if status != 0:
            raise SynthesisError(f"espeak_Synth failed with status {status} on {text!r}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        audio = samples.astype(np.float32) / 32768.0
        onsets = _onsets_for_tokens(text, self._events, audio, self.sample_rate)
        return Spoken(audio, self.sample_rate, onsets, None)


def _onsets_for_tokens(text: str, events: list[tuple[int, int]], audio: np.ndarray,
                       sample_rate: int) -> list[float]:
    """Each whitespace token's onset: its first word event, or a share of its unit's sound.

    espeak speaks some English word pairs as one unit with one word event ("of the",
    "in the", "to be"): the later tokens of such a unit get no event. Their onsets split
    the unit, from its event to the end of its sound before the next event, in proportion
    to the tokens' letters. The first token must have an event of its own.
    """
    ordered = sorted(events)
    spans = token_spans(text)
    own: list[float | None] = []
    for start, end in spans:
        inside = [ms for position, ms in ordered if start <= position - 1 < end]
        own.append(inside[0] / 1000.0 if inside else None)
    if own and own[0] is None:
        raise SynthesisError(f"espeak gave no word event for {text[slice(*spans[0])]!r} "
                             f"in {text!r}")
    timed = [i for i, onset in enumerate(own) if onset is not None]
    if any(own[b] < own[a] for a, b in zip(timed, timed[1:])):
        raise SynthesisError(f"espeak word events out of order in {text!r}")
    duration = len(audio) / sample_rate
    onsets = [float(onset) if onset is not None else 0.0 for onset in own]
    for unit, first in enumerate(timed):
        stop = timed[unit + 1] if unit + 1 < len(timed) else len(spans)
        if stop - first == 1:
            continue
        unit_start = onsets[first]
        unit_end = _sound_end(audio, sample_rate, unit_start,
                              onsets[stop] if stop < len(spans) else duration)
        letters = [sum(char.isalnum() for char in text[slice(*spans[i])]) or 1
                   for i in range(first, stop)]
        total, done = float(sum(letters)), 0
        for i, count in zip(range(first, stop), letters):
            onsets[i] = unit_start + (unit_end - unit_start) * done / total
            done += count
    return onsets


def _sound_end(audio: np.ndarray, sample_rate: int, start: float, stop: float) -> float:
    """The end (seconds) of the last audible 10 ms frame in [start, stop), or `stop` when
    none is: a unit's sound ends before the pause that may follow it. Audible is within
    40 dB of the loudest frame of the whole text, as for the corpus's word ends."""
    win = max(1, round(0.010 * sample_rate))
    frames = len(audio) // win
    if frames == 0:
        return stop
    rms = np.sqrt(np.mean(audio[:frames * win].astype(np.float64).reshape(frames, win) ** 2,
                          axis=1))  # [F]
    audible = rms > rms.max() * 10 ** (-40 / 20)
    first, last = int(start * sample_rate) // win, min(int(stop * sample_rate) // win, frames)
    heard = np.nonzero(audible[first:last])[0]
    if len(heard) == 0:
        return stop
    return min(stop, (first + int(heard[-1]) + 1) * win / sample_rate)
