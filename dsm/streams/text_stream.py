"""DSM text stream: words with start/end times <-> one text token per codec frame.

This module is the single definition of the text-stream layout: writing it for training
data (`words_to_stream`), reading a whole stream back (`stream_to_words`), and reading it
one position at a time as a model emits it (`TextStreamDecoder`, which the ASR session
runs). The two readers follow the same rules (below) and are tested to agree on any token
sequence.

Frames and times
----------------
`fr` is the codec frame rate (12.5 Hz for Mimi: a frame is 80 ms). Audio frame `f` covers
`[f/fr, (f+1)/fr)`. A time `t` is quantised to the frame boundary `F(t) = floor(t*fr + 0.5)`
(nearest boundary, ties up). The text stream is shifted by the task's text delay `d >= 0`
frames: text position `p` sits alongside audio frame `p - d`. ASR uses `d > 0` (text after
audio, e.g. 0.5 s = 6 frames at 12.5 Hz); TTS builds the text with `d = 0` and delays the
*audio* instead (that shift is not done here).

Token values
------------
- `pad` (3, Kyutai `existing_text_padding_id`): nothing starts or ends here.
- `word_start` (0, Kyutai "end of padding"): a **boundary** at the *end* of this frame.
  A 0 at position `p` stands for time `B(p) = (p + 1 - d) / fr`.
- any other id: a text token of the current word (`tokenizer.encode(word)`, per word).
- negative ids (-1, masked / not generated) are ignored when reading.

Layout written by `words_to_stream` (words sorted, not overlapping)
-------------------------------------------------------------------
For word i with `n_i` tokens, start frame `S_i = F(start_i)`, end frame `E_i = F(end_i)`:
1. Start marker: a 0 at `m_i = S_i - 1 + d`, so that the word's tokens occupy positions
   `m_i + 1 .. m_i + n_i`: the tokens begin at the word's start frame, as in Kyutai's STT
   and TTS data (the 0 just before a word; `B(m_i) = S_i / fr` is the start time).
2. End marker (`mark_ends=True`, the default, used for ASR): a 0 at `q_i = E_i - 1 + d`,
   so `B(q_i) = E_i / fr` is the end time. When a word ends where the next one starts
   (`q_i == m_{i+1}`) the one 0 is both its end marker and the next start marker.
   With `mark_ends=False` (TTS, whose decoder reads every 0 as "next word") no end marker
   is written and a word's end reads as the next boundary.
3. Every other position is `pad`.
4. Crowding: positions are never shared between tokens, so when a marker's natural
   position is already taken it moves to the first free position (a start marker may
   reuse the previous end marker's 0). A moved start marker shifts the word and its tokens
   later (`AlignmentStats.shifted_words`, `.shift_frames`); a moved end marker
   (the word is shorter than its `n_i + 1` frames) makes its end late
   (`.late_ends`, `.late_end_frames`). Shifts propagate to the following words; no token is
   ever dropped. A word needs `n_i + 1` frames between its start and end boundaries
   (marker + tokens) for an exact layout: 160 ms for a one-token word at 12.5 Hz.
   `first_marker = k` makes positions before `k` taken (TTS: the session pads its first
   `k` steps, `dsm.streams.tts_text.INITIAL_PADDING`), so an earlier first word moves too.

Reading a stream (`stream_to_words`; `TextStreamDecoder` does the same, step by step)
-------------------------------------------------------------------------------------
Keep `boundary` (time of the last 0; None before the first) and the open word's tokens.
At position `p`, token `x`:
- `x == 0`: if the open word has tokens, it ends at `B(p)`: emit it with
  `start = boundary`, `end = B(p)` (streaming: the `EndWord(stop_time=B(p))` event).
  Then `boundary = B(p)` and a new, empty word opens.
- `x` a text token: append it to the open word; its start is `boundary` (or, if no 0 was
  seen yet, `(p - d) / fr`, the start of its first token's frame). If the open word was
  already *complete* (a pad or negative id came after its tokens, see below), it ends at
  `(p - d) / fr` and `x` opens a new word starting there (`boundary` moves there too).
  Our layout never produces this (a word's tokens are contiguous and a 0 precedes every
  word); it only happens in model output.
- `pad` / negative: the open word, if it has tokens, is complete (streaming: its
  `Word{text, start_time=boundary}` goes out now, as in Kyutai's server; its end waits for
  the next 0).
At the end of the stream a word still open ends at `(p_last + 1 - d) / fr` where `p_last`
is its last token's position. If the tokens between two 0s decode to several
whitespace-separated words (a model output that skipped boundaries), they are split at
pieces starting with U+2581, each piece taking one frame from the segment start, the last
word keeping the segment end.

Relation to Kyutai
------------------
Kyutai's moshi-server ASR (`asr.rs`) reads a 0 at step `p` as the time `(p + 1 - d)/fr`,
uses the previous 0 as a word's `start_time` and the next 0 after the word as its
`EndWord.stop_time`; their Python timestamp example also takes a word's span between
consecutive 0s. This layout is the one those readers decode exactly: 0 just before the
tokens, and a 0 at the word end whenever the end is not the next word's start. Kyutai has
not published whether their STT training streams carry end markers; with `mark_ends=False`
this writes only start markers, the layout their TTS state machine consumes.

Round trip: with no crowding, `stream_to_words(words_to_stream(w))` returns the same word
texts (as the tokenizer decodes them) with every start and end within half a frame of the
original (quantisation only); crowding moves times by exactly the counted shifts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from dsm.streams.tokenizer import TextTokenizer


@dataclass(frozen=True)
class Word:
    """One word of a transcript with its span in seconds."""

    word: str
    start: float
    end: float


@dataclass
class AlignmentStats:
    """What `words_to_stream` had to move to fit every token (nothing is ever dropped)."""

    num_words: int = 0
    num_tokens: int = 0
    shifted_words: int = 0  # start marker placed later than its natural position
    shift_frames: int = 0  # total frames those start markers moved
    late_ends: int = 0  # end marker placed later than its natural position
    late_end_frames: int = 0
    shifted_indices: list[int] = field(default_factory=list)

    def merge(self, other: AlignmentStats) -> None:
        base = self.num_words
        self.num_words += other.num_words
        self.num_tokens += other.num_tokens
        self.shifted_words += other.shifted_words
        self.shift_frames += other.shift_frames
        self.late_ends += other.late_ends
        self.late_end_frames += other.late_end_frames
        self.shifted_indices.extend(base + i for i in other.shifted_indices)


class AlignmentError(ValueError):
    """Words cannot be laid out (unsorted, overlapping, negative times, empty text...)."""


def time_to_frame(seconds: float, frame_rate: float) -> int:
    """Nearest frame boundary of `seconds` (ties go up)."""
    return math.floor(seconds * frame_rate + 0.5)


def delay_frames(seconds: float, frame_rate: float) -> int:
    """A delay in seconds as a whole number of frames (0.5 s at 12.5 Hz -> 6)."""
    return time_to_frame(seconds, frame_rate)


def check_words(words: Sequence[Word], tolerance: float = 1e-6) -> None:
    """Raise `AlignmentError` unless words are non-empty, well-formed, sorted, disjoint."""
    previous: Word | None = None
    for index, word in enumerate(words):
        where = f"word {index} {word.word!r} [{word.start:.3f}, {word.end:.3f}]"
        if not word.word.strip():
            raise AlignmentError(f"{where}: empty word text")
        if not (math.isfinite(word.start) and math.isfinite(word.end)):
            raise AlignmentError(f"{where}: non-finite time")
        if word.start < -tolerance:
            raise AlignmentError(f"{where}: negative start time")
        if word.end < word.start - tolerance:
            raise AlignmentError(f"{where}: ends before it starts")
        if previous is not None:
            if word.start < previous.start - tolerance:
                raise AlignmentError(f"{where}: starts before the previous word (unsorted)")
            if word.start < previous.end - tolerance:
                raise AlignmentError(
                    f"{where}: overlaps the previous word {previous.word!r} "
                    f"which ends at {previous.end:.3f}"
                )
        previous = word


def frames_needed(
    words: Sequence[Word],
    tokenizer: TextTokenizer,
    frame_rate: float,
    delay: int = 0,
    mark_ends: bool = True,
    first_marker: int = 0,
) -> int:
    """Length of the shortest text stream holding all of `words` (see `words_to_stream`)."""
    _, length, _ = _layout(words, tokenizer, frame_rate, delay, mark_ends, first_marker)
    return length


def words_to_stream(
    words: Sequence[Word],
    tokenizer: TextTokenizer,
    frame_rate: float,
    num_frames: int | None = None,
    delay: int = 0,
    mark_ends: bool = True,
    first_marker: int = 0,
) -> tuple[torch.Tensor, AlignmentStats]:
    """Text stream `[num_frames]` (int64) for `words`, and what had to be shifted.

    `num_frames=None` gives the shortest stream holding everything; a given `num_frames`
    shorter than that is an error (crop the returned stream instead: never drop tokens
    silently).
    """
    placements, length, stats = _layout(words, tokenizer, frame_rate, delay, mark_ends,
                                        first_marker)
    if num_frames is None:
        num_frames = length
    elif num_frames < length:
        raise AlignmentError(
            f"{len(words)} words need {length} frames of text stream (delay {delay}), "
            f"only {num_frames} given"
        )
    stream = torch.full((num_frames,), tokenizer.pad_id, dtype=torch.long)
    for position, token in placements:
        stream[position] = token
    return stream, stats


def _layout(
    words: Sequence[Word],
    tokenizer: TextTokenizer,
    frame_rate: float,
    delay: int,
    mark_ends: bool,
    first_marker: int = 0,
) -> tuple[list[tuple[int, int]], int, AlignmentStats]:
    """(position, token) pairs of the layout, its length and its stats."""
    if delay < 0:
        raise AlignmentError(f"text delay must be >= 0 frames, got {delay} (delay audio)")
    if frame_rate <= 0:
        raise AlignmentError(f"frame rate must be positive, got {frame_rate}")
    check_words(words)
    stats = AlignmentStats(num_words=len(words))
    placements: list[tuple[int, int]] = []
    if first_marker < 0:
        raise AlignmentError(f"first_marker must be >= 0, got {first_marker}")
    cursor = first_marker  # first free position
    last_zero = -1  # position of the last 0 written (a start marker may reuse it)
    for index, word in enumerate(words):
        tokens = tokenizer.encode(word.word)
        if not tokens:
            raise AlignmentError(f"word {index} {word.word!r} encodes to no token")
        stats.num_tokens += len(tokens)
        natural_start = time_to_frame(word.start, frame_rate) - 1 + delay
        earliest = last_zero if last_zero == cursor - 1 and last_zero >= 0 else cursor
        marker = max(natural_start, earliest)
        if marker > natural_start:
            stats.shifted_words += 1
            stats.shift_frames += marker - natural_start
            stats.shifted_indices.append(index)
        if marker != last_zero:
            placements.append((marker, tokenizer.word_start_id))
        for offset, token in enumerate(tokens, start=1):
            placements.append((marker + offset, token))
        cursor = marker + len(tokens) + 1
        if mark_ends:
            natural_end = time_to_frame(word.end, frame_rate) - 1 + delay
            end_marker = max(natural_end, cursor)
            if end_marker > natural_end:
                stats.late_ends += 1
                stats.late_end_frames += end_marker - natural_end
            placements.append((end_marker, tokenizer.word_start_id))
            last_zero = end_marker
            cursor = end_marker + 1
    return placements, cursor, stats


def stream_to_words(
    stream: Sequence[int] | torch.Tensor,
    tokenizer: TextTokenizer,
    frame_rate: float,
    delay: int = 0,
) -> list[Word]:
    """Words with start/end seconds read from a text stream `[T]` (rules in the docstring)."""
    if isinstance(stream, torch.Tensor):
        if stream.dim() != 1:
            raise ValueError(f"expected a text stream [T], got shape {tuple(stream.shape)}")
        values = [int(v) for v in stream.tolist()]
    else:
        values = [int(v) for v in stream]
    words: list[Word] = []
    boundary: float | None = None
    tokens: list[int] = []
    token_start = 0.0  # start of the open word
    last_position = -1

    def boundary_time(position: int) -> float:
        return (position + 1 - delay) / frame_rate

    def close(end: float) -> None:
        words.extend(_segment_words(tokens, token_start, end, tokenizer, frame_rate))

    complete = False  # a pad / negative id followed the open word's tokens
    for position, token in enumerate(values):
        if token == tokenizer.word_start_id:
            if tokens:
                close(boundary_time(position))
                tokens = []
            boundary = boundary_time(position)
            complete = False
        elif token < 0 or token == tokenizer.pad_id:
            complete = bool(tokens)
        else:
            if tokens and complete:  # more text after a complete word: a new word
                boundary = (position - delay) / frame_rate
                close(boundary)
                tokens = []
            complete = False
            if not tokens:
                token_start = boundary if boundary is not None else (position - delay) / frame_rate
            tokens.append(token)
            last_position = position
    if tokens:
        close(boundary_time(last_position))
    return words


def _segment_words(
    tokens: list[int],
    start: float,
    end: float,
    tokenizer: TextTokenizer,
    frame_rate: float,
) -> list[Word]:
    """One segment's words: split at word-initial pieces, each but the last one frame per
    token from the segment start, the last keeping the segment end."""
    kept = split_segment(tokens, tokenizer)
    words: list[Word] = []
    cursor = start
    for index, (group, text) in enumerate(kept):
        if index == len(kept) - 1:
            words.append(Word(text, cursor, max(end, cursor)))
        else:
            group_end = min(cursor + len(group) / frame_rate, end)
            words.append(Word(text, cursor, group_end))
            cursor = group_end
    return words


def split_segment(tokens: list[int], tokenizer: TextTokenizer) -> list[tuple[list[int], str]]:
    """The tokens between two 0s as (tokens, text) words: a new word at each piece starting
    with U+2581 once the current one has text; words that decode to nothing are dropped."""
    groups: list[list[int]] = []
    for token in tokens:
        piece = tokenizer.id_to_piece(token)
        if not groups or (piece.startswith("\u2581") and _has_text(groups[-1], tokenizer)):
            groups.append([token])
        else:
            groups[-1].append(token)
    texts = [(group, tokenizer.decode(group).strip()) for group in groups]
    return [(group, text) for group, text in texts if text]


def _has_text(group: list[int], tokenizer: TextTokenizer) -> bool:
    return bool(tokenizer.decode(group).strip())


# ------------------------------------------------------------------ incremental reading


@dataclass(frozen=True)
class DecodedWord:
    """A word read from the stream is complete; `start_time` in seconds."""

    text: str
    start_time: float


@dataclass(frozen=True)
class DecodedWordEnd:
    """The last `DecodedWord` ended at `stop_time` seconds."""

    stop_time: float


DecodedEvent = DecodedWord | DecodedWordEnd


class TextStreamDecoder:
    """`stream_to_words`, one position at a time: `push` each text token as the model emits
    it and get `DecodedWord` (as soon as a pad, 0 or end shows the word complete) and
    `DecodedWordEnd` (at the next 0) back; `flush` at the end of the stream. Every word
    comes as a `DecodedWord` then its `DecodedWordEnd`, with the times `stream_to_words`
    gives for the same tokens."""

    def __init__(self, tokenizer: TextTokenizer, frame_rate: float, delay: int = 0) -> None:
        self.tokenizer = tokenizer
        self.frame_rate = float(frame_rate)
        self.delay = int(delay)
        self.position = -1  # text position of the last token pushed
        self._boundary: float | None = None  # time of the last 0
        self._tokens: list[int] = []  # the open word's tokens
        self._start = 0.0  # the open word's start
        self._last_token_position = -1
        self._sent = False  # the open word's DecodedWord(s) went out

    def _boundary_time(self, position: int) -> float:
        return (position + 1 - self.delay) / self.frame_rate

    def push(self, token: int) -> list[DecodedEvent]:
        """Read the token at the next text position."""
        self.position += 1
        p = self.position
        token = int(token)
        events: list[DecodedEvent] = []
        if token == self.tokenizer.word_start_id:
            time = self._boundary_time(p)
            if self._tokens:
                if not self._sent:
                    events.extend(self._send_words(time))
                events.append(DecodedWordEnd(stop_time=time))
                self._tokens = []
                self._sent = False
            self._boundary = time
        elif token < 0 or token == self.tokenizer.pad_id:
            if self._tokens and not self._sent:
                events.extend(self._send_words(None))
        else:
            if self._tokens and self._sent:
                # More tokens after the word went out (no 0 between): a new word starts here.
                start = (p - self.delay) / self.frame_rate
                events.append(DecodedWordEnd(stop_time=start))
                self._tokens = []
                self._sent = False
                self._boundary = start
            if not self._tokens:
                if self._boundary is not None:
                    self._start = self._boundary
                else:
                    self._start = (p - self.delay) / self.frame_rate
            self._tokens.append(token)
            self._last_token_position = p
        return events

    def flush(self) -> list[DecodedEvent]:
        """End of stream: close the open word, if any."""
        events: list[DecodedEvent] = []
        if self._tokens:
            end = self._boundary_time(self._last_token_position)
            if not self._sent:
                events.extend(self._send_words(end))
            events.append(DecodedWordEnd(stop_time=end))
            self._tokens = []
            self._sent = False
        return events

    def _send_words(self, end: float | None) -> list[DecodedEvent]:
        """The open segment's words; all but the last also get their end (`end`, when
        known, caps them as in `_segment_words`)."""
        kept = split_segment(self._tokens, self.tokenizer)
        self._sent = True
        events: list[DecodedEvent] = []
        cursor = self._start
        for index, (group, text) in enumerate(kept):
            events.append(DecodedWord(text=text, start_time=cursor))
            if index < len(kept) - 1:
                group_end = cursor + len(group) / self.frame_rate
                if end is not None:
                    group_end = min(group_end, end)
                events.append(DecodedWordEnd(stop_time=group_end))
                cursor = group_end
        return events
