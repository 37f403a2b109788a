"""JSONL manifests of aligned speech: reading with validation, and writing.

One JSON object per line:

    {"audio": "audio/000/000000.wav", "duration": 3.52, "text": "the cat sat",
     "lang": "en", "speaker": "espeak:en+m1", "id": "000000",
     "words": [{"word": "the", "start": 0.31, "end": 0.45}, ...]}

`audio` is relative to the manifest's folder (or absolute); times are seconds. `duration`,
`lang`, `speaker`, `id` and `words` are optional (`duration` is then read from the audio
header); other keys are kept in `extra`.

Two kinds of problems, never silent:
- A row that is not usable data but does not make the file unreadable (audio file
  missing, empty text, words outside the audio, overlapping or reversed words, a duration
  that disagrees with the audio file, no word timings where they are required) is
  *skipped*: `read_manifest` returns it in `skipped` with its line number and reason
  (`summarize_skipped` counts them per reason). `strict=True` raises on the first one.
- A broken file (a line that is not JSON, not an object, missing `audio` or `text`, a field
  of the wrong type) raises `ManifestError` naming the file and line.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from dsm.streams.text_stream import Word

TIME_TOLERANCE = 0.02  # seconds a word may poke past the audio end / into its neighbour
DURATION_TOLERANCE = 0.1  # seconds `duration` may differ from the audio header's length


class ManifestError(ValueError):
    """The manifest file itself is broken (the message names the file and line)."""


@dataclass
class ManifestRow:
    """One utterance. `audio` is resolved (absolute or relative to the cwd)."""

    audio: str
    duration: float
    text: str
    lang: str | None = None
    speaker: str | None = None
    words: list[Word] = field(default_factory=list)
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class SkippedRow:
    """A row left out of the data, and why."""

    line: int
    reason: str
    detail: str
    audio: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason} ({self.detail})"


REASONS = (
    "missing audio",
    "empty text",
    "empty word",
    "words outside the audio",
    "overlapping words",
    "word ends before it starts",
    "duration mismatch",
    "no word timings",
    "unreadable audio",
)


class _Skip(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def read_manifest(
    path: str | os.PathLike[str],
    require_words: bool = False,
    check_audio: bool = True,
    strict: bool = False,
) -> tuple[list[ManifestRow], list[SkippedRow]]:
    """Rows that passed validation, and the skipped ones with their reasons.

    `check_audio=False` trusts `duration` and does not look at the audio files (a row then
    needs a `duration`). `require_words` skips rows without word timings.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    rows: list[ManifestRow] = []
    skipped: list[SkippedRow] = []
    for number, raw in jsonl_objects(manifest, ManifestError):
        _check_fields(manifest, number, raw)
        audio = _resolve_audio(manifest, raw["audio"])
        try:
            rows.append(_validate(manifest, number, raw, audio, require_words, check_audio))
        except _Skip as skip:
            entry = SkippedRow(number, skip.reason, skip.detail, audio)
            if strict:
                raise ManifestError(
                    f"{manifest}:{number}: {skip.reason}: {skip.detail}"
                ) from None
            skipped.append(entry)
    return rows, skipped


def jsonl_objects(
    path: str | os.PathLike[str], error: type[Exception] = ValueError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; a line that is not a
    JSON object raises `error` naming the file and line."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as problem:
                raise error(f"{path}:{number}: not valid JSON: {problem}") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: a row must be a JSON object, "
                            f"got {type(row).__name__}")
            yield number, row


def summarize_skipped(skipped: Sequence[SkippedRow]) -> str:
    """'3 rows skipped: 2 missing audio, 1 empty text' (or 'no row skipped')."""
    if not skipped:
        return "no row skipped"
    counts = Counter(entry.reason for entry in skipped)
    parts = ", ".join(f"{count} {reason}" for reason, count in counts.most_common())
    return f"{len(skipped)} row(s) skipped: {parts}"


def write_manifest(path: str | os.PathLike[str], rows: Iterable[ManifestRow],
                   relative: bool = False) -> int:
    """Write rows as JSONL. Audio paths become relative to the manifest's folder, except an
    absolute path outside it, which stays absolute unless `relative`. Returns the number
    of rows written."""
    manifest = Path(path)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    base = manifest.parent.resolve()
    count = 0
    with manifest.open("w", encoding="utf-8") as handle:
        for row in rows:
            audio = Path(row.audio)
            resolved = audio.resolve()
            if resolved.is_relative_to(base):
                audio_text = resolved.relative_to(base).as_posix()
            elif audio.is_absolute() and not relative:
                audio_text = str(audio)
            else:  # relative to the working directory: made relative to the manifest
                audio_text = Path(os.path.relpath(resolved, base)).as_posix()
            data: dict[str, Any] = {"audio": audio_text, "duration": row.duration, "text": row.text}
            for key in ("lang", "speaker", "id"):
                value = getattr(row, key)
                if value is not None:
                    data[key] = value
            data["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in row.words]
            data.update(row.extra)
            handle.write(json.dumps(data, ensure_ascii=False) + "\n")
            count += 1
    return count


# --- helpers --------------------------------------------------------------------------------


def _check_fields(manifest: Path, number: int, raw: dict[str, Any]) -> None:
    where = f"{manifest}:{number}"
    for key in ("audio", "text"):
        if key not in raw:
            raise ManifestError(f"{where}: missing required key {key!r}")
        if not isinstance(raw[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string")
    for key in ("lang", "speaker", "id"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], (str, int)):
            raise ManifestError(f"{where}: {key!r} must be a string")
    if "duration" in raw and not _is_number(raw["duration"]):
        raise ManifestError(f"{where}: 'duration' must be a number")
    words = raw.get("words", [])
    if not isinstance(words, list):
        raise ManifestError(f"{where}: 'words' must be a list")
    for index, word in enumerate(words):
        if not isinstance(word, dict) or not {"word", "start", "end"} <= word.keys():
            raise ManifestError(f"{where}: words[{index}] must be {{word, start, end}}")
        if not isinstance(word["word"], str):
            raise ManifestError(f"{where}: words[{index}].word must be a string")
        if not (_is_number(word["start"]) and _is_number(word["end"])):
            raise ManifestError(f"{where}: words[{index}] start/end must be numbers")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _resolve_audio(manifest: Path, audio: str) -> str:
    path = Path(audio)
    return str(path if path.is_absolute() else manifest.parent / path)


def _validate(
    manifest: Path,
    number: int,
    raw: dict[str, Any],
    audio: str,
    require_words: bool,
    check_audio: bool,
) -> ManifestRow:
    duration = raw.get("duration")
    if check_audio:
        if not Path(audio).is_file():
            raise _Skip("missing audio", audio)
        try:
            info = sf.info(audio)
        except Exception as error:  # soundfile raises its own RuntimeError subclasses
            raise _Skip("unreadable audio", f"{audio}: {error}") from error
        actual = info.frames / info.samplerate
        if duration is None:
            duration = actual
        elif abs(duration - actual) > DURATION_TOLERANCE:
            raise _Skip(
                "duration mismatch", f"manifest says {duration:.3f} s, {audio} lasts {actual:.3f} s"
            )
    elif duration is None:
        raise ManifestError(
            f"{manifest}:{number}: no 'duration' and audio checks are off (check_audio=False)"
        )
    duration = float(duration)
    text = raw["text"].strip()
    if not text:
        raise _Skip("empty text", "the text is empty")
    words = [Word(w["word"].strip(), float(w["start"]), float(w["end"])) for w in raw.get("words", [])]
    if require_words and not words:
        raise _Skip("no word timings", "the row has no 'words'")
    previous: Word | None = None
    for index, word in enumerate(words):
        label = f"words[{index}] {word.word!r} [{word.start:.3f}, {word.end:.3f}]"
        if not word.word:
            raise _Skip("empty word", f"words[{index}] has no text")
        if word.end < word.start:
            raise _Skip("word ends before it starts", label)
        if word.start < -TIME_TOLERANCE or word.end > duration + TIME_TOLERANCE:
            raise _Skip("words outside the audio", f"{label} outside [0, {duration:.3f}]")
        if previous is not None and word.start < previous.end - TIME_TOLERANCE:
            raise _Skip(
                "overlapping words",
                f"{label} starts before {previous.word!r} ends at {previous.end:.3f}",
            )
        previous = word
    words = _clamp(words, duration)
    extra = {k: v for k, v in raw.items() if k not in
             {"audio", "duration", "text", "lang", "speaker", "id", "words"}}
    row_id = raw.get("id")
    return ManifestRow(
        audio=audio,
        duration=duration,
        text=text,
        lang=raw.get("lang"),
        speaker=raw.get("speaker"),
        words=words,
        id=None if row_id is None else str(row_id),
        extra=extra,
        line=number,
    )


def _clamp(words: list[Word], duration: float) -> list[Word]:
    """Remove the tolerated slivers: times inside [0, duration], no overlap left."""
    clamped: list[Word] = []
    for word in words:
        start = min(max(word.start, 0.0), duration)
        if clamped and start < clamped[-1].end:
            start = clamped[-1].end
        end = min(max(word.end, start), duration)
        clamped.append(Word(word.word, start, end))
    return clamped
