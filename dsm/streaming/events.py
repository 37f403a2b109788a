"""What streaming sessions emit, independent of how it is transported.

The websocket server turns these into Kyutai's msgpack messages one to one; local
commands print them. Times are seconds from the start of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WordEvent:
    """ASR: a word is complete; `start_time` is when it began in the input audio."""

    text: str
    start_time: float


@dataclass(frozen=True)
class EndWordEvent:
    """ASR: the last word emitted ended at `stop_time`."""

    stop_time: float


@dataclass(frozen=True)
class StepEvent:
    """ASR: one model step ran; `prs` are the VAD heads' end-of-turn probabilities."""

    step_idx: int
    prs: list[float]
    buffered_pcm: int


@dataclass(frozen=True)
class MarkerEvent:
    """Echo of a client marker, sent once everything pushed before it has been processed."""

    id: int


@dataclass(frozen=True)
class AudioEvent:
    """TTS / translation: one frame of output audio, `pcm` float32 `[frame_size]`."""

    pcm: np.ndarray


@dataclass(frozen=True)
class TextEvent:
    """TTS / translation: a word of text with the time span it occupies in the output audio."""

    text: str
    start_s: float
    stop_s: float


@dataclass(frozen=True)
class ReadyEvent:
    """The stream (again) takes input: sent after a client's `Init` reset it."""


Event = WordEvent | EndWordEvent | StepEvent | MarkerEvent | AudioEvent | TextEvent | ReadyEvent
