"""`dsm data merge`: corpora combined into one manifest, filtered, ids kept distinct."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dsm.cli import main as dsm_main
from dsm.recipes.data.manifest import read_manifest

RATE = 8000


def _corpus(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A corpus folder like `dsm data synth` writes: rows (id, speaker, text), ids from 0."""
    (root / "audio").mkdir(parents=True)
    lines = []
    for ident, speaker, text in rows:
        soundfile.write(root / "audio" / f"{ident}.wav", np.zeros(RATE, np.float32), RATE)
        words = [{"word": w, "start": 0.1 + 0.2 * i, "end": 0.3 + 0.2 * i}
                 for i, w in enumerate(text.split())]
        lines.append(json.dumps({"audio": f"audio/{ident}.wav", "duration": 1.0, "text": text,
                                 "speaker": speaker, "id": ident, "words": words}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"


@pytest.fixture
def corpora(tmp_path: Path) -> tuple[Path, Path]:
    first = _corpus(tmp_path / "en", [("000000", "flite:slt", "one cat"),
                                      ("000001", "espeak:en+m1", "two dogs")])
    second = _corpus(tmp_path / "en2", [("000000", "flite:slt", "three birds"),
                                        ("000001", "flite:awb", "one cat")])
    return first, second


def test_merge_keeps_order_prefixes_ids_and_points_at_the_inputs_audio(
        tmp_path: Path, corpora: tuple[Path, Path], capsys) -> None:
    out = tmp_path / "all" / "train.jsonl"
    assert dsm_main(["data", "merge", str(out), *map(str, corpora), "--prefix-ids"]) == 0
    assert "wrote" in capsys.readouterr().out
    stored = [json.loads(line) for line in out.open()]
    assert [s["id"] for s in stored] == ["en-000000", "en-000001", "en2-000000", "en2-000001"]
    assert stored[2]["audio"] == "../en2/audio/000000.wav"  # no audio copied
    rows, skipped = read_manifest(out, require_words=True)
    assert skipped == [] and [r.text for r in rows] == ["one cat", "two dogs", "three birds",
                                                         "one cat"]
    assert [w.word for w in rows[2].words] == ["three", "birds"]
    assert dsm_main(["data", "merge", str(out), str(corpora[1]), "--absolute"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["audio"] == str(
        corpora[1].parent / "audio" / "000000.wav")


def test_speaker_filter_and_excluded_texts(tmp_path: Path, corpora: tuple[Path, Path]) -> None:
    out = tmp_path / "slt.jsonl"
    assert dsm_main(["data", "merge", str(out), *map(str, corpora), "--prefix-ids",
                     "--speakers", "flite:slt"]) == 0
    assert [r.text for r in read_manifest(out)[0]] == ["one cat", "three birds"]
    held = tmp_path / "held.jsonl"
    assert dsm_main(["data", "merge", str(held), *map(str, corpora), "--prefix-ids",
                     "--speakers", "flite:*,espeak:*+m1", "--exclude-texts", str(out)]) == 0
    assert [r.id for r in read_manifest(held)[0]] == ["en-000001"]


def test_sample_keeps_n_rows_in_order_the_same_for_the_same_seed(
        tmp_path: Path, corpora: tuple[Path, Path], capsys) -> None:
    ids = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2), ("d", 3), ("e", 4)):
        out = tmp_path / f"{name}.jsonl"
        assert dsm_main(["data", "merge", str(out), *map(str, corpora), "--prefix-ids",
                         "--sample", "2", "--seed", str(seed)]) == 0
        ids[name] = [r.id for r in read_manifest(out)[0]]
    order = ["en-000000", "en-000001", "en2-000000", "en2-000001"]
    for chosen in ids.values():
        assert len(chosen) == 2 and chosen == sorted(chosen, key=order.index)
    assert ids["a"] == ids["b"]
    assert len({tuple(chosen) for chosen in ids.values()}) > 1  # the seed matters
    out = tmp_path / "too-many.jsonl"
    assert dsm_main(["data", "merge", str(out), *map(str, corpora), "--prefix-ids",
                     "--sample", "5"]) == 2
    assert "only 4 rows" in capsys.readouterr().err and not out.exists()


def test_bad_merges_are_refused_before_anything_is_written(
        tmp_path: Path, corpora: tuple[Path, Path], capsys) -> None:
    out = tmp_path / "out.jsonl"
    # two synth corpora both number their rows from 000000
    assert dsm_main(["data", "merge", str(out), *map(str, corpora)]) == 2
    err = capsys.readouterr().err
    assert "id '000000'" in err and "--prefix-ids" in err
    assert dsm_main(["data", "merge", str(out), str(corpora[0]), "--speakers", "nobody"]) == 2
    assert "no row is left" in capsys.readouterr().err
    assert dsm_main(["data", "merge", str(corpora[0]), str(corpora[0]), str(corpora[1])]) == 2
    assert "also an input" in capsys.readouterr().err
    assert dsm_main(["data", "merge", str(out), str(tmp_path / "none.jsonl")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert dsm_main(["data", "merge", str(out), str(corpora[0]),
                     "--exclude-texts", str(tmp_path / "none.jsonl")]) == 2
    assert "--exclude-texts: manifest not found" in capsys.readouterr().err
    assert not out.exists()


def test_rows_training_would_skip_are_left_out_and_counted(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path / "c", [("a", "s", "hello there"), ("b", "s", "bye now")])
    (tmp_path / "c" / "audio" / "b.wav").unlink()
    out = tmp_path / "out.jsonl"
    assert dsm_main(["data", "merge", str(out), str(manifest)]) == 0
    assert "1 row(s) skipped: 1 missing audio" in capsys.readouterr().out
    assert [r.id for r in read_manifest(out)[0]] == ["a"]
