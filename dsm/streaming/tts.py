"""Streaming text to speech: text in word by word, audio frames and word timings out.

The text stream of a TTS model is an *output* row that the session forces: the model
proposes pad (3) or word start (0) at each step and `dsm.streams.tts_text.TextFeeder`
decides what the stream really holds, by the rules training data is made with (that
module's docstring); each word is encoded as training encodes it (`word_tokens`), and
break tags become pauses (`split_text`, `break_tokens`).

Timing: words are consumed at text position `m` (the 0's step); the word starts at
`(m + 1) / fr` in the output audio (the alignment's boundary), and its span ends where
the next word starts (or where the stream ended). The audio row lags the text by
`audio_delay` frames (how the model was trained), so the first `audio_delay` output frames
are not the speech (the model generates its codes of silence there, `dsm.streams.silence`,
as it was trained) and are dropped: output audio frame `f` comes from output frame
`f + audio_delay`.
"""

from __future__ import annotations

import numpy as np

from dsm.streaming.engine import Session, SessionClosedError, SlotOutput
from dsm.streaming.events import AudioEvent, Event, TextEvent
from dsm.streams.tokenizer import TextTokenizer
from dsm.streams.tts_text import (
    INITIAL_PADDING,
    TextFeeder,
    TextInputError,
    break_label,
    break_tokens,
    split_text,
    word_tokens,
)


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
        initial_padding: int = INITIAL_PADDING,
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
        if self.feeder.closed:
            raise SessionClosedError("push_text after end_text(): this stream's text is closed")
        items, self._partial = split_text(self._partial + text, complete=whole_words)
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
            self._queue_words(split_text(partial, complete=True)[0])
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
                    encoded.append((break_label(word), break_tokens(
                        word, self.frame_rate, self.tokenizer.pad_id)))
            elif word:
                encoded.append((word, word_tokens(self.tokenizer, word)))
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
