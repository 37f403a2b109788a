"""Manifest reading: bad rows are skipped with a reason and counted, broken files raise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsm.recipes.data.manifest import (
    ManifestError,
    ManifestRow,
    read_manifest,
    summarize_skipped,
    write_manifest,
)
from dsm.streams.text_stream import Word

RATE = 8000


def wav(folder: Path, name: str, seconds: float) -> str:
    (folder / "audio").mkdir(exist_ok=True)
    sf.write(folder / "audio" / name, np.zeros(int(seconds * RATE), dtype=np.float32), RATE)
    return f"audio/{name}"


def words(*spans: tuple[str, float, float]) -> list[dict]:
    return [{"word": w, "start": s, "end": e} for w, s, e in spans]


def write_rows(path: Path, rows: list[object]) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    good = {"audio": wav(tmp_path, "a.wav", 2.0), "duration": 2.0, "text": "the cat",
            "lang": "en", "speaker": "espeak:en+m1", "id": "a", "tag": 7,
            "words": words(("the", 0.1, 0.3), ("cat", 0.3, 0.8))}
    rows = [
        good,
        {**good, "audio": "audio/missing.wav", "id": "b"},
        {**good, "text": "  ", "id": "c"},
        {**good, "words": words(("the", 0.1, 0.3), ("cat", 1.8, 2.5)), "id": "d"},
        {**good, "words": words(("the", 0.1, 0.5), ("cat", 0.3, 0.8)), "id": "e"},
        {**good, "words": words(("the", 0.5, 0.3)), "id": "f"},
        {**good, "duration": 3.0, "id": "g"},
        {**good, "words": words(("", 0.1, 0.3)), "id": "h"},
        "",  # blank lines are ignored
        {**good, "words": words(("the", -0.01, 0.3), ("cat", 0.29, 2.01)), "id": "i"},
    ]
    manifest = tmp_path / "train.jsonl"
    write_rows(manifest, rows)
    kept, skipped = read_manifest(manifest)
    assert [r.id for r in kept] == ["a", "i"]
    assert [(s.line, s.reason) for s in skipped] == [
        (2, "missing audio"),
        (3, "empty text"),
        (4, "words outside the audio"),
        (5, "overlapping words"),
        (6, "word ends before it starts"),
        (7, "duration mismatch"),
        (8, "empty word"),
    ]
    assert "missing.wav" in skipped[0].detail and "line 2" in str(skipped[0])
    summary = summarize_skipped(skipped)
    assert summary.startswith("7 row(s) skipped:") and "1 missing audio" in summary
    first = kept[0]
    assert Path(first.audio) == tmp_path / "audio" / "a.wav"
    assert first.words == [Word("the", 0.1, 0.3), Word("cat", 0.3, 0.8)]
    assert first.extra == {"tag": 7} and first.lang == "en" and first.line == 1
    # tolerated slivers are clamped into the audio and apart
    assert kept[1].words == [Word("the", 0.0, 0.3), Word("cat", 0.3, 2.0)]


def test_strict_mode_and_required_words(tmp_path: Path) -> None:
    audio = wav(tmp_path, "a.wav", 1.0)
    manifest = tmp_path / "m.jsonl"
    write_rows(manifest, [{"audio": audio, "text": "hello"},
                          {"audio": "nope.wav", "text": "hello"}])
    kept, skipped = read_manifest(manifest)
    assert len(kept) == 1 and kept[0].duration == pytest.approx(1.0)  # read from the header
    assert [s.reason for s in skipped] == ["missing audio"]
    kept, skipped = read_manifest(manifest, require_words=True)
    assert kept == [] and [s.reason for s in skipped] == ["no word timings", "missing audio"]
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: missing audio"):
        read_manifest(manifest, strict=True)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a row must be a JSON object"),
        ('{"text": "hi"}', "missing required key 'audio'"),
        ('{"audio": "a.wav", "text": 3}', "'text' must be a string"),
        ('{"audio": "a.wav", "text": "hi", "duration": "long"}', "'duration' must be a number"),
        ('{"audio": "a.wav", "text": "hi", "words": [{"word": "hi"}]}', r"words\[0\]"),
    ],
)
def test_broken_files_raise_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "broken.jsonl"
    manifest.write_text('{"audio": "x.wav", "text": "fine", "duration": 1}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"broken\.jsonl:2: {message}"):
        read_manifest(manifest, check_audio=False)


def test_missing_manifest_and_unreadable_audio(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    manifest = tmp_path / "m.jsonl"
    write_rows(manifest, [{"audio": "bad.wav", "text": "hello"}])
    kept, skipped = read_manifest(manifest)
    assert kept == [] and skipped[0].reason == "unreadable audio"


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    audio = folder / wav(folder, "x.wav", 1.5)
    row = ManifestRow(audio=str(audio), duration=1.5, text="the cat", lang="en", speaker="s1",
                      words=[Word("the", 0.1, 0.2), Word("cat", 0.25, 0.9)], id="x",
                      extra={"split": "train"})
    manifest = tmp_path / "data" / "out.jsonl"
    assert write_manifest(manifest, [row]) == 1
    stored = json.loads(manifest.read_text())
    assert stored["audio"] == "audio/x.wav" and stored["split"] == "train"
    [back], skipped = read_manifest(manifest)
    assert skipped == []
    assert (back.text, back.words, back.speaker, back.id) == (row.text, row.words, "s1", "x")
    assert Path(back.audio).resolve() == audio.resolve()


def test_rows_read_from_a_relative_manifest_are_written_relative_to_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row read through a cwd-relative manifest path has a cwd-relative audio path; another
    folder's manifest must point at the same file (and one given absolute stays absolute)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_rows(corpus / "train.jsonl", [{"audio": wav(corpus, "a.wav", 1.0), "text": "a b"}])
    elsewhere = tmp_path / "music"
    elsewhere.mkdir()
    absolute = ManifestRow(audio=str(elsewhere / wav(elsewhere, "b.wav", 1.0)), duration=1.0,
                           text="b c")
    monkeypatch.chdir(tmp_path)
    [row], _ = read_manifest(Path("corpus") / "train.jsonl")
    assert not Path(row.audio).is_absolute()
    assert write_manifest(tmp_path / "merged" / "m.jsonl", [row, absolute]) == 2
    stored = [json.loads(line) for line in (tmp_path / "merged" / "m.jsonl").open()]
    assert [s["audio"] for s in stored] == ["../corpus/audio/a.wav", absolute.audio]
    monkeypatch.chdir(elsewhere)  # read from anywhere, the rows find their files
    back, skipped = read_manifest(tmp_path / "merged" / "m.jsonl")
    assert skipped == [] and [r.text for r in back] == ["a b", "b c"]
