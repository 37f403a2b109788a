"""The TTS text rules: what the session feeds the model's text stream, and what training
teaches, in one place so that the two cannot drift.

The text stream of a dsm TTS model is an output row that the session forces
(`TextFeeder`): the model proposes pad (3) or word start (0) at each step, and the feeder
decides what the stream really holds, in the layout `dsm.streams.text_stream` writes with
`mark_ends=False`: a 0 just before each word's tokens, the tokens on the following
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

Text comes in as words split at whitespace (`split_text`), each encoded on its own
(`word_tokens`, as `words_to_stream` encodes each word of a transcript), and Kyutai's pause
markup `<break time="1.5s"/>` becomes that many pads fed as one word (`break_tokens`).

Training items match that, token for token:
- no word starts in the first `INITIAL_PADDING` positions (`words_to_stream`'s
  `first_marker`): the session pads them whatever the model proposes;
- a final 0 follows the last word (`end_marker_position`: at its end, or right after its
  tokens): the session reads a proposed 0 with no word left as the end of the speech and
  answers it with a pad, so that 0 is a text *target* only, read as a pad
  (`session_text_inputs`);
- the text head is trained only where the session listens to it: on pad-or-start
  positions; positions that hold a word's tokens are forced by the session, so they carry
  no text loss (`text_loss_targets`), though they are still inputs.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from dsm.streams.text_stream import time_to_frame
from dsm.streams.tokenizer import TextTokenizer, TokenizerError

MASKED_TEXT = -1  # a text cell with no token: zero embedding, no loss
INITIAL_PADDING = 2  # steps the session pads before the first word can start
MAX_BREAK_S = 10.0  # longest pause one break tag asks for
BREAK_TAG = re.compile(r'<break\s+time="([0-9.]+)s"\s*/>')  # Kyutai's pause markup
_WHITESPACE = re.compile(r"\s+")


class TextInputError(ValueError):
    """Text that cannot be spoken: empty, or with characters the tokenizer cannot encode."""


# ------------------------------------------------------------------------------ text in


def split_text(text: str, complete: bool) -> tuple[list[str | float], str]:
    """Words (str) and pauses (float seconds, from break tags) of `text`, in order, and the
    rest that may go on in the next chunk: with `complete=False` the last word, or an
    unclosed break tag, is held back ("" when `text` ends on a boundary)."""
    rest = ""
    if not complete:  # an unclosed break tag may be closed by the next chunk
        cut = text.rfind("<break")
        if cut >= 0 and "/>" not in text[cut:]:
            text, rest = text[:cut], text[cut:]
    items: list[str | float] = []
    last = 0
    for tag in BREAK_TAG.finditer(text):
        items.extend(word for word in _WHITESPACE.split(text[last:tag.start()]) if word)
        try:
            items.append(float(tag.group(1)))
        except ValueError:  # "1.2.3s": not a duration, dropped as Kyutai's parser does
            pass
        last = tag.end()
    tail = _WHITESPACE.split(text[last:])
    if not complete and not rest and tail:
        rest = tail.pop()
    items.extend(word for word in tail if word)
    return items, rest


def word_tokens(tokenizer: TextTokenizer, word: str) -> list[int]:
    """The tokens of one word, as the training layout encodes each word."""
    try:
        tokens = tokenizer.encode(word)
    except TokenizerError as error:
        raise TextInputError(f"cannot speak {word!r}: {error}") from error
    if not tokens:
        raise TextInputError(f"word {word!r} encodes to no token")
    return tokens


def break_tokens(seconds: float, frame_rate: float, pad_id: int) -> list[int]:
    """A pause of `seconds` (at most `MAX_BREAK_S`) as the pads fed in place of a word's
    tokens: one per frame, at least one."""
    frames = max(int(min(seconds, MAX_BREAK_S) * frame_rate), 1)
    return [pad_id] * frames


def break_label(seconds: float) -> str:
    """How a pause is named among the spoken words."""
    return f'<break time="{seconds:.2f}s">'


# ------------------------------------------------------------------------------ feeding


@dataclass
class QueuedWord:
    """A word waiting to be fed: its text and the tokens that follow its 0."""

    text: str
    tokens: list[int]


class FeederClosedError(RuntimeError):
    """A word was added after the text was closed."""


class TextFeeder:
    """The TTS text-stream state machine (rules in the module docstring)."""

    def __init__(
        self,
        pad_id: int,
        word_start_id: int,
        *,
        max_padding: int = 8,
        initial_padding: int = INITIAL_PADDING,
    ) -> None:
        self.pad_id = pad_id
        self.word_start_id = word_start_id
        self.max_padding = max_padding
        self.initial_padding = initial_padding
        self.waiting: deque[QueuedWord] = deque()
        self.closed = False  # no more words will come
        self.step = 0  # text position of the next token
        self.consumed: list[tuple[str, int]] = []  # (word, position of its 0)
        self.late_steps = 0  # steps the model wanted a word that had not arrived
        self.end_position: int | None = None
        self._feeding: deque[int] = deque()
        self._pads_in_row = 0

    def add_word(self, text: str, tokens: list[int]) -> None:
        if self.closed:
            raise FeederClosedError("text pushed after the end of the text")
        if not tokens:
            raise TextInputError(f"word {text!r} encodes to no token")
        self.waiting.append(QueuedWord(text, list(tokens)))

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


# ------------------------------------------------------------------------------ training


def end_marker_position(text: Tensor, last_word_end: float, frame_rate: float,
                        pad_id: int) -> int:
    """Where a training item's final 0 goes in its text row `[T]`: at the last word's end
    boundary, or right after its last token if that comes later (may be `T`: the row must
    grow by one frame)."""
    written = ((text != pad_id) & (text != MASKED_TEXT)).nonzero()
    last_token = int(written[-1]) if written.numel() else -1
    natural = time_to_frame(last_word_end, frame_rate) - 1
    return max(natural, last_token + 1)


def end_markers(text: Tensor, pad_id: int, word_start_id: int) -> Tensor:
    """Bool mask of the end markers in text rows `[..., T]`: a word start (0) that no word
    token follows (a word's own 0 is always followed by its first token)."""
    following = torch.nn.functional.pad(text[..., 1:], (0, 1), value=MASKED_TEXT)
    is_token = (following != pad_id) & (following != word_start_id) & (following >= 0)
    return (text == word_start_id) & ~is_token


def session_text_inputs(codes: Tensor, pad_id: int, word_start_id: int) -> Tensor:
    """The tokens the model reads, `codes [B, S, T]` with each end marker read as a pad:
    the session answers the model's final 0 with a pad (the text has ended), so the 0 is
    a target only."""
    inputs = codes.clone()
    text = inputs[:, 0]
    inputs[:, 0] = torch.where(end_markers(text, pad_id, word_start_id),
                               torch.full_like(text, pad_id), text)
    return inputs


def text_loss_targets(codes: Tensor, pad_id: int, word_start_id: int) -> Tensor:
    """`codes [B, S, T]` with the text row's word tokens set to -1: the text head is only
    trained where the session uses it (pad or word start), never on forced tokens."""
    text = codes[:, 0]
    decision = (text == pad_id) | (text == word_start_id)
    targets = codes.clone()
    targets[:, 0] = torch.where(decision, text, torch.full_like(text, MASKED_TEXT))
    return targets
