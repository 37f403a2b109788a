"""Streaming text to speech: text in word by word, audio frames and word timings out.

The text stream of a TTS model is an *output* row that the session forces
(`TextFeeder`): the model proposes pad (3) or word start (0) at each step, and the feeder
decides what the stream really holds, in the layout `dsm.streams.alignment` writes for TTS
(`mark_ends=False`): a 0 just before each word's tokens, the tokens on the following
positions, pads elsewhere. Rules, per step, given the model's proposal:

1. while a word's tokens are being fed, the next token goes in (the proposal is ignored);
2. during the first `initial_padding` steps, pad;
3. the model wants a new word when it proposes 0, or after `max_padding` pads in a row;
   then, if a word is waiting, 0 goes in and the word's tokens follow; if none is
   waiting but more text may come, pad (the text is late: the voice waits, nothing is
   skipped, and the next proposal of 0 tries again); if the text is finished, the
   stream has ended;
4. otherwise pad.
Every pushed word is consumed exactly once, in order.

Timing: words are consumed at text position `m` (the 0's step); the word starts at
`(m + 1) / fr` in the output audio (the alignment's boundary), and its span ends where
the next word starts (or where the stream ended). The audio row lags the text by
`audio_delay` frames (how the model was trained), so the first `audio_delay` output frames
are not audio and are dropped: output audio frame `f` comes from output frame
`f + audio_delay`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np

from dsm.streaming.engine import Session, SessionClosedError, SlotOutput
from dsm.streaming.events import AudioEvent, Event, TextEvent
from dsm.streams.tokenizer import TextTokenizer, TokenizerError


class TextInputError(ValueError):
    """Text that cannot be spoken: empty, or with characters the tokenizer cannot encode."""


@dataclass
class _Word:
    text: str
    tokens: list[int]


class TextFeeder:
    """The TTS text-stream state machine (rules in the module docstring)."""

    def __init__(
        self,
        pad_id: int,
        word_start_id: int,
        *,
        max_padding: int = 8,
        initial_padding: int = 2,
    ) -> None:
        self.pad_id = pad_id
        self.word_start_id = word_start_id
        self.max_padding = max_padding
        self.initial_padding = initial_padding
        self.waiting: deque[_Word] = deque()
        self.closed = False  # no more words will come
        self.step = 0  # text position of the next token
        self.consumed: list[tuple[str, int]] = []  # (word, position of its 0)
        self.late_steps = 0  # steps the model wanted a word that had not arrived
        self.end_position: int | None = None
        self._feeding: deque[int] = deque()
        self._pads_in_row = 0

    def add_word(self, text: str, tokens: list[int]) -> None:
        if self.closed:
            raise SessionClosedError("text pushed after the end of the text")
        if not tokens:
            raise TextInputError(f"word {text!r} encodes to no token")
        self.waiting.append(_Word(text, list(tokens)))

    def close(self) -> None:
        self.closed = True

    @property
    def ended(self) -> bool:
        return self.end_position is not None

    @property
    def pending(self) -> bool:
        """Words wait to be spoken, or a word's tokens are still being fed."""
        return bool(self.waiting or self._feeding)

    def next_token(self, proposed: int) -> int:
        """The text token at this position, given the model's proposal."""
        position = self.step
        self.step += 1
        if self._feeding:
            return self._feeding.popleft()
        if position < self.initial_padding or self.ended:
            return self._pad()
        wants_word = proposed == self.word_start_id or self._pads_in_row >= self.max_padding
        if not wants_word:
            return self._pad()
        if self.waiting:
            word = self.waiting.popleft()
            self.consumed.append((word.text, position))
            self._feeding.extend(word.tokens)
            self._pads_in_row = 0
            return self.word_start_id
        if self.closed:
            self.end_position = position
        else:
            self.late_steps += 1
        return self._pad()

    def _pad(self) -> int:
        self._pads_in_row += 1
        return self.pad_id


_SPACE = re.compile(r"\s+")
# Kyutai's pause markup in TTS text: <break time="1.5s"/>
_BREAK = re.compile(r'<break\s+time="([0-9.]+)s"\s*/>')
MAX_BREAK_S = 10.0


class TTSSession(Session):
    """One text-to-speech stream: `push_text` (any chunks), `end_text()`, audio out.

    Text arrives in pieces that may cut a word; a word is queued once whitespace (or the
    end of the text) shows it is complete. Events: `AudioEvent` per output frame, and
    `TextEvent(word, start_s, stop_s)` for each word once its span is known.
    """

    uses_text_hook = True

    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        frame_rate: float,
        audio_delay: int,
        max_padding: int = 8,
        initial_padding: int = 2,
        tail_frames: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.tokenizer = tokenizer
        self.frame_rate = float(frame_rate)
        self.audio_delay = int(audio_delay)
        self.first_audio_frame = self.audio_delay
        self.tail_frames = tail_frames
        self.feeder = TextFeeder(
            tokenizer.pad_id, tokenizer.word_start_id,
            max_padding=max_padding, initial_padding=initial_padding,
        )
        self._partial = ""
        self._any_text = False
        self._frames_out = 0  # output frames seen (text positions read back)
        self._words_timed = 0
        self.audio_frames = 0

    # --- input ----------------------------------------------------------------------------
    def push_text(self, text: str, whole_words: bool = False) -> None:
        """Add text (a word, several, or part of one). Raises on empty or unencodable text.

        `whole_words`: the text ends on a word boundary (Kyutai's protocol: each `Text`
        message holds whole words, so "Hello" then "world" are two words)."""
        if self.finished:
            raise SessionClosedError("push_text on a finished or detached TTS session")
        if not isinstance(text, str):
            raise TextInputError(f"text must be a string, got {type(text).__name__}")
        if not text:
            raise TextInputError("empty text")
        buffer = self._partial + text
        self._partial = ""
        if not whole_words:  # an unclosed break tag, or the last word, may go on next time
            cut = buffer.rfind("<break")
            if cut >= 0 and "/>" not in buffer[cut:]:
                buffer, self._partial = buffer[:cut], buffer[cut:]
        items: list[str | float] = []
        last = 0
        for tag in _BREAK.finditer(buffer):
            items.extend(w for w in _SPACE.split(buffer[last:tag.start()]) if w)
            try:
                items.append(float(tag.group(1)))
            except ValueError:  # "1.2.3s": not a duration, dropped as Kyutai's parser does
                pass
            last = tag.end()
        tail = _SPACE.split(buffer[last:])
        if not whole_words and not self._partial and tail:
            self._partial = tail.pop()
        items.extend(w for w in tail if w)
        self._queue_words(items)
        self._notify()

    @property
    def has_text(self) -> bool:
        """Whether any word was queued (a stream ended with none has nothing to say)."""
        return self._any_text or bool(self._partial.strip())

    def end_text(self) -> None:
        """No more text: the last partial word is queued, and the stream ends after it."""
        if self.feeder.closed:
            return
        if self._partial:
            partial, self._partial = self._partial, ""
            self._queue_words([w for w in _SPACE.split(partial) if w])
        if not self._any_text:
            raise TextInputError("the text is empty: nothing to speak")
        self.feeder.close()
        self._notify()

    def _queue_words(self, words: list[str | float]) -> None:
        """Words, and pauses (seconds, from `<break time="1.0s"/>`: pad tokens fed as one
        word, as Kyutai's preprocessing does, up to 10 s)."""
        encoded: list[tuple[str, list[int]]] = []
        for word in words:
            if isinstance(word, float):
                if word > 0:
                    frames = max(int(min(word, MAX_BREAK_S) * self.frame_rate), 1)
                    encoded.append((f'<break time="{word:.2f}s">',
                                    [self.tokenizer.pad_id] * frames))
                continue
            if not word:
                continue
            try:
                tokens = self.tokenizer.encode(word)
            except TokenizerError as error:
                raise TextInputError(f"cannot speak {word!r}: {error}") from error
            encoded.append((word, tokens))
        for word, tokens in encoded:  # all or nothing: a bad word queues none of the chunk
            self.feeder.add_word(word, tokens)
            self._any_text = True

    # --- engine side ----------------------------------------------------------------------
    def ready(self) -> bool:
        """Steps only while it has words to speak or is finishing: a stream waiting for its
        next words keeps its state (its slot skips the steps its neighbours take), so its
        audio depends on its own text, not on who else is speaking."""
        return not self.finished and (self.feeder.pending or self.feeder.closed)

    def force_text(self, sampled: int) -> int:
        return self.feeder.next_token(sampled)

    def on_output(self, output: SlotOutput) -> list[Event]:
        events: list[Event] = []
        if output.tokens is None:
            return events
        frame = self._frames_out
        self._frames_out += 1
        events.extend(self._timed_words(frame))
        if frame >= self.audio_delay and output.pcm is not None:
            events.append(AudioEvent(pcm=np.asarray(output.pcm, dtype=np.float32).copy()))
            self.audio_frames += 1
        end = self.feeder.end_position
        if end is not None and frame >= end + self.audio_delay + self.tail_frames:
            events.extend(self._timed_words(frame, final=True))
            self.finished = True
        return events

    def _timed_words(self, frame: int, final: bool = False) -> list[Event]:
        """TextEvents for consumed words whose end is known by output frame `frame`."""
        events: list[Event] = []
        consumed = self.feeder.consumed
        while self._words_timed < len(consumed):
            word, position = consumed[self._words_timed]
            if position > frame:
                break
            if self._words_timed + 1 < len(consumed):
                stop_position = consumed[self._words_timed + 1][1]
            elif self.feeder.end_position is not None:
                stop_position = self.feeder.end_position
            else:
                break
            if stop_position > frame and not final:
                break
            events.append(TextEvent(
                text=word,
                start_s=(position + 1) / self.frame_rate,
                stop_s=(stop_position + 1) / self.frame_rate,
            ))
            self._words_timed += 1
        return events
