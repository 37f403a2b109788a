"""Streaming text to speech with Kyutai's DSM TTS models (tts-1.6b-en_fr, tts-0.75b-en-public).

Kyutai's TTS feeds its text stream differently from dsm's own models (`dsm.streaming.tts`):

- Words are entries: a word's tokens (the first word of the stream led by the main
  speaker's token 1 when the model has speaker conditioning), and the number of steps the
  model must pad after it starts (`padding_between + len(tokens) - 1`, Kyutai's
  `padding_between` 1); a pause (`<break time="1.5s"/>`) is an entry with no token and
  `round(seconds * frame_rate)` steps of padding.
- At each step the model proposes pad (3) or new word (0); `KyutaiTextFeeder` decides:
  pad while a word's tokens are still queued or padding is forced; a new word when the
  model went `max_padding` steps without one; the first `initial_padding` steps pad. A new
  word pops the next entry and queues its tokens, which go in on the following pads.
- The second text stream (`second_stream_ahead` words ahead): each position carries a
  second token, muxed into one id `(second + 1) * (text_card + 1) + first` (second -1:
  none). On a new word the 0 goes to the second stream and the first stream takes the
  word's first token at once; otherwise the second stream feeds the tokens of the word
  `second_stream_ahead` entries ahead, queued when the current word was popped. When the
  text runs out the model is told "new word" once more (the end).
- A stream only steps when it has the words its lookahead needs (or its text is
  complete), as Kyutai's server does; its audio depends on its own text only.

A model without speaker conditioning (tts-0.75b-en-public) takes its voice as an audio
prefix: the voice's codes are spoken first while the text reads "no token", the text
feeding starts after them, and their audio is not sent.

The audio lags the text by `audio_delay` frames (`tts_config.audio_delay` seconds): the
streamer forces the audio to -1 ("no token") until then (`LMStreamer.set_audio_delay`), and
the session sends audio from output frame `audio_delay` on. The stream ends
`final_padding` frames of audio after the step where the text ran out, as Kyutai's server.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsm.models.conditioners import ConditionValues
from dsm.streaming.engine import SessionClosedError, SlotOutput
from dsm.streaming.events import AudioEvent, Event, TextEvent
from dsm.streaming.tts import TTSSession
from dsm.streams.tokenizer import TextTokenizer
from dsm.streams.tts_text import MAX_BREAK_S, break_label, word_tokens

NEW_WORD = 0
MAIN_SPEAKER = 1
PAD = 3


@dataclass
class Entry:
    """One word (its tokens) or a pause (no token), and the pads forced after it starts."""

    text: str
    tokens: list[int]
    padding: int = 0


class KyutaiTextFeeder:
    """Kyutai's TTS text state machine (the rules in the module docstring)."""

    def __init__(self, card: int, *, second_stream_ahead: int = 0, max_padding: int = 8,
                 initial_padding: int = 2) -> None:
        self.card = card  # text_card + 1: the base of the muxed ids
        self.ahead = second_stream_ahead
        self.max_padding = max_padding
        self.entries: deque[Entry] = deque()
        self.closed = False
        self.step = 0
        self.remaining_padding = initial_padding  # pads the model may still choose in a row
        self.forced_padding = initial_padding  # pads it must still take
        self.queued: deque[int] = deque()  # the current word's tokens, first stream
        self.ahead_queued: deque[int] = deque()  # a later word's tokens, second stream
        self.end_step: int | None = None
        self.consumed: list[tuple[str, int]] = []  # (word, step it started)

    def add(self, entry: Entry) -> None:
        if self.closed:
            raise SessionClosedError("text pushed after the end of the text")
        self.entries.append(entry)

    def close(self) -> None:
        self.closed = True

    def can_step(self) -> bool:
        """Whether the next step has what it needs (Kyutai server's `is_active`)."""
        if self.closed:
            return True
        if not self.entries:
            return False
        if self.ahead == 0 or not self.entries[0].tokens:
            return True
        return sum(1 for e in self.entries if e.tokens) >= self.ahead + 1

    def _tokens_ahead(self) -> list[int]:
        words = [e.tokens for e in self.entries if e.tokens]
        return words[self.ahead - 1] if len(words) >= self.ahead else []

    def next_token(self, proposed: int) -> int:
        """The (muxed) text id that goes in at this step, given the model's proposal."""
        step = self.step
        self.step += 1
        token = proposed if proposed in (NEW_WORD, PAD) else PAD
        if self.queued or self.forced_padding > 0:
            token = PAD
        elif self.remaining_padding <= 0:
            token = NEW_WORD
        if token == NEW_WORD:
            if self.entries:
                entry = self.entries.popleft()
                if entry.tokens:
                    self.consumed.append((entry.text, step))
                    self.queued.extend(entry.tokens)
                    if self.ahead:
                        self.ahead_queued.extend(self._tokens_ahead())
                    self.remaining_padding = self.max_padding
                else:  # a pause: nothing to say, padding forced
                    token = PAD
                self.forced_padding = entry.padding
            else:  # past the last word: the end
                ended_now = self.end_step is None
                token = NEW_WORD if self.ahead and ended_now else PAD
                if ended_now:
                    self.end_step = step
        if token == PAD:
            self.remaining_padding = max(self.remaining_padding - 1, 0)
            self.forced_padding = max(self.forced_padding - 1, 0)
            first = self.queued.popleft() if self.queued else PAD
        else:
            first = NEW_WORD
        if not self.ahead:
            return first
        second = -1
        if first == NEW_WORD:  # (a queued token equal to 0 reads as a new word too, as Kyutai's)
            second = NEW_WORD
            first = self.queued.popleft() if self.queued else PAD
        elif self.ahead_queued:
            second = self.ahead_queued.popleft()
        return (second + 1) * self.card + first


_SPACE = re.compile(r"\s+")


def _kyutai_words(word: str) -> list[str]:
    """Kyutai's clean-up of a word: curly apostrophes straightened, ':' a space, no parens."""
    word = word.replace("\u2019", "'").replace(":", " ").replace("(", "").replace(")", "")
    return [w for w in _SPACE.split(word) if w]


class KyutaiTTSSession(TTSSession):
    """One text-to-speech stream of a Kyutai DSM TTS model (see the module docstring).

    `conditions` (and `null_conditions` with batch-doubling guidance) are the stream's
    conditioner values: voice, cfg label, control; `ModelDir.tts_session` makes them.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        frame_rate: float,
        audio_delay: int,
        text_card: int,
        conditions: ConditionValues | None,
        null_conditions: ConditionValues | None = None,
        second_stream_ahead: int = 0,
        multi_speaker: bool = True,
        padding_between: int = 1,
        max_padding: int = 8,
        initial_padding: int = 2,
        final_padding: int = 4,
        audio_prefix: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__(tokenizer, frame_rate=frame_rate, audio_delay=audio_delay, seed=seed)
        self.feeder = KyutaiTextFeeder(  # type: ignore[assignment]
            text_card + 1, second_stream_ahead=second_stream_ahead, max_padding=max_padding,
            initial_padding=initial_padding,
        )
        self.audio_prefix = audio_prefix  # [K, P] codes spoken first, or None
        self.prefix_frames = 0 if audio_prefix is None else int(audio_prefix.shape[-1])
        self.kyutai_feeder.step = self.prefix_frames  # Kyutai counts steps from the start
        self.conditions = conditions
        self.null_conditions = null_conditions
        self.multi_speaker = multi_speaker
        self.padding_between = padding_between
        self.final_padding = final_padding
        self.tokens: list[np.ndarray] = []  # every output frame's tokens [1 + n_q]
        self._prefix_steps = 0

    @property
    def kyutai_feeder(self) -> KyutaiTextFeeder:
        assert isinstance(self.feeder, KyutaiTextFeeder)
        return self.feeder

    def _queue_words(self, words: list[str | float]) -> None:
        entries: list[Entry] = []
        first_word = not self._any_text
        for item in words:
            if isinstance(item, float):
                if item > 0:
                    frames = int(round(min(item, MAX_BREAK_S) * self.frame_rate))
                    entries.append(Entry(break_label(item), [], frames))
                continue
            for word in _kyutai_words(item):
                tokens = word_tokens(self.tokenizer, word)
                if first_word and self.multi_speaker:
                    tokens = [MAIN_SPEAKER, *tokens]
                first_word = False
                padding = max(0, self.padding_between + len(tokens) - 1) if self.padding_between > 0 else 0
                entries.append(Entry(word, tokens, padding))
        for entry in entries:  # all or nothing: a bad word queues none of the chunk
            self.kyutai_feeder.add(entry)
            if entry.tokens:
                self._any_text = True

    def ready(self) -> bool:
        return not self.finished and self.kyutai_feeder.can_step()

    def force_text(self, sampled: int) -> int:
        if self._prefix_steps < self.prefix_frames:  # the voice prefix: no text
            self._prefix_steps += 1
            return -1
        return self.kyutai_feeder.next_token(sampled)

    def on_output(self, output: SlotOutput) -> list[Event]:
        events: list[Event] = []
        if output.tokens is None:
            return events
        self.tokens.append(np.asarray(output.tokens).copy())
        frame = self._frames_out
        self._frames_out += 1
        events.extend(self._timed_words(frame))
        if frame >= self.audio_delay + self.prefix_frames and output.pcm is not None:
            events.append(AudioEvent(pcm=np.clip(np.asarray(output.pcm, dtype=np.float32), -0.99, 0.99)))
            self.audio_frames += 1
        end = self.kyutai_feeder.end_step
        if end is not None and frame + 1 >= end + self.audio_delay + self.final_padding:
            events.extend(self._timed_words(frame, final=True))
            self.finished = True
        return events

    def _timed_words(self, frame: int, final: bool = False) -> list[Event]:
        """TextEvents for words whose span is known: a word starts at its step and ends
        where the next one starts (or where the text ran out)."""
        events: list[Event] = []
        consumed = self.kyutai_feeder.consumed
        while self._words_timed < len(consumed):
            word, step = consumed[self._words_timed]
            if self._words_timed + 1 < len(consumed):
                stop = consumed[self._words_timed + 1][1]
            elif self.kyutai_feeder.end_step is not None:
                stop = self.kyutai_feeder.end_step
            else:
                break
            if stop > frame and not final:
                break
            events.append(TextEvent(text=word, start_s=step / self.frame_rate,
                                    stop_s=stop / self.frame_rate))
            self._words_timed += 1
        return events


# --- a model directory's Kyutai TTS settings and voices ----------------------------------------

DEFAULT_VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"  # Kyutai's tts_pytorch.py default
VOICE_REPO = "kyutai/tts-voices"
SPEAKER_CONDITIONER = "speaker_wavs"


@dataclass
class KyutaiTTSSettings:
    """What a Kyutai TTS model directory says about feeding and conditioning its model."""

    second_stream_ahead: int
    model_id: dict | None  # names the voice files made for this model
    speaker_dim: int | None  # the voice embedding width; None: no speaker conditioning
    cfg_values: list[str] | None  # labels of the "cfg" conditioner (CFG distillation)
    conditioner_names: list[str]
    voice_dirs: list[Path]

    @property
    def cfg_distilled(self) -> bool:
        return self.cfg_values is not None

    def resolve_voice(self, voice: str) -> Path:
        """A voice file from a path, or from a name as Kyutai's server takes it
        ("expresso/ex03-...wav", looked up with this model's suffix in `voice_dirs`)."""
        from dsm.models.voices import VoiceError, voice_suffix

        path = Path(voice).expanduser()
        if path.suffix == ".safetensors" and path.is_file():
            return path
        name = voice if voice.endswith(".safetensors") else voice + voice_suffix(self.model_id)
        stays_inside = not path.is_absolute() and ".." not in Path(voice).parts
        for directory in self.voice_dirs if stays_inside else []:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        where = ", ".join(str(d) for d in self.voice_dirs) or "no voice directory"
        raise VoiceError(
            f"unknown voice {voice!r}: no file {name} in {where} (give a path to a voice "
            f".safetensors file, or download {VOICE_REPO} into the Hugging Face cache)"
        )

    def conditions(self, voices: list[Path], cfg_alpha: float | None) -> ConditionValues:
        """The stream's conditioner values: its voices, the cfg label, control "ok"."""
        from dsm.models.voices import VoiceError, load_voice, speakers_value

        values: ConditionValues = {}
        for name in self.conditioner_names:
            if name == SPEAKER_CONDITIONER:
                assert self.speaker_dim is not None
                embeddings = [load_voice(v, dim=self.speaker_dim, model_id=self.model_id)
                              for v in voices]
                values[name] = speakers_value(embeddings)
            elif name == "cfg":
                values[name] = None if cfg_alpha is None else self.cfg_label(cfg_alpha)
            elif name == "control":
                values[name] = "ok"
        if voices and self.speaker_dim is None:
            raise VoiceError("this model has no speaker conditioning: it takes no voice file")
        return values

    def cfg_label(self, cfg_alpha: float) -> str:
        label = format(float(cfg_alpha), ".1f")
        assert self.cfg_values is not None
        if label not in self.cfg_values:
            raise ValueError(f"cfg_alpha {cfg_alpha} is not one this model was distilled for: "
                             f"{', '.join(self.cfg_values)}")
        return label


def nulled_conditions(values: ConditionValues) -> ConditionValues:
    """Every condition dropped, as guidance's second half reads them (Kyutai's dropout)."""
    from dsm.models.conditioners import TensorValue

    return {name: value.nulled() if isinstance(value, TensorValue) else None
            for name, value in values.items()}


def kyutai_tts_settings(directory: Path, lm: Any, extras: dict) -> KyutaiTTSSettings:
    """Read a Kyutai TTS model's settings; refuses conditioners it would not know to fill."""
    from dsm.models.conditioners import LUTConditioner, TensorConditioner

    provider = lm.condition_provider
    names = list(provider.names) if provider is not None else []
    known = {SPEAKER_CONDITIONER, "cfg", "control"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{directory}: TTS conditioners {unknown} are not Kyutai's "
                         f"({sorted(known)}): dsm would not know what to give them")
    speaker_dim = None
    cfg_values = None
    if SPEAKER_CONDITIONER in names:
        speaker = provider.conditioners[SPEAKER_CONDITIONER]
        if not isinstance(speaker, TensorConditioner):
            raise ValueError(f"{directory}: {SPEAKER_CONDITIONER} must be a tensor conditioner")
        speaker_dim = speaker.dim
    if "cfg" in names:
        cfg = provider.conditioners["cfg"]
        if not isinstance(cfg, LUTConditioner) or cfg.possible_values is None:
            raise ValueError(f"{directory}: the 'cfg' conditioner must list its possible_values")
        cfg_values = list(cfg.possible_values)
    tts = extras.get("tts_config") or {}
    voice_dirs = [directory / "voices"]
    cached = _cached_voice_repo()
    if cached is not None:
        voice_dirs.append(cached)
    return KyutaiTTSSettings(
        second_stream_ahead=int(tts.get("second_stream_ahead", 0)),
        model_id=extras.get("model_id"), speaker_dim=speaker_dim, cfg_values=cfg_values,
        conditioner_names=names, voice_dirs=[d for d in voice_dirs if d.is_dir()],
    )


def _cached_voice_repo() -> Path | None:
    """The newest snapshot of kyutai/tts-voices in the local Hugging Face cache, if any."""
    from dsm.models.hub import hub_cache_dir

    storage = hub_cache_dir() / ("models--" + VOICE_REPO.replace("/", "--"))
    snapshots = storage / "snapshots"
    if not snapshots.is_dir():
        return None
    main = storage / "refs" / "main"
    if main.is_file() and (snapshots / main.read_text().strip()).is_dir():
        return snapshots / main.read_text().strip()
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
