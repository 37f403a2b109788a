"""`dsm eval` on precomputed outputs: every kind, hand-checked figures, table and JSON,
pairing rules and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsm.cli import main as dsm_main
from dsm.recipes.data.manifest import read_manifest
from dsm.recipes.eval.evaluate import run_eval
from dsm.recipes.eval.outputs import EvalError, pair_outputs, read_outputs

SR = 16000


def _voice(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    return (0.2 * voice * envelope).astype(np.float32)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Two utterances with audio and word timings."""
    rows = []
    for i, (text, words) in enumerate([
        ("the cat sat", [("the", 0.1, 0.3), ("cat", 0.35, 0.6), ("sat", 0.7, 1.0)]),
        ("hello world", [("hello", 0.2, 0.5), ("world", 0.6, 1.1)]),
    ]):
        sf.write(tmp_path / f"u{i}.wav", _voice(1.2, 130 + 40 * i), SR)
        rows.append({"audio": f"u{i}.wav", "duration": 1.2, "text": text, "id": f"u{i}",
                     "words": [{"word": w, "start": s, "end": e} for w, s, e in words]})
    return _write_jsonl(tmp_path / "ref.jsonl", rows)


def test_asr_eval_table_and_json(corpus: Path, tmp_path: Path, capsys) -> None:
    hyp = _write_jsonl(tmp_path / "hyp.jsonl", [
        # in reverse order: pairing is by id
        {"id": "u1", "text": "hello there world",
         "words": [{"word": "hello", "time": 0.9}, {"word": "there", "time": 1.0},
                   {"word": "world", "time": 1.5}]},
        {"id": "u0", "text": "the cat sit",
         "words": [{"word": "the", "time": 0.6}, {"word": "cat", "time": 0.9},
                   {"word": "sit", "time": 1.2}]},
    ])
    out_json = tmp_path / "results" / "asr.json"
    code = dsm_main(["eval", "asr", "--manifest", str(corpus), "--hyp", str(hyp),
                     "--json", str(out_json), "--per-utterance"])
    assert code == 0
    table = capsys.readouterr().out
    assert "wer" in table and "0.4000" in table  # 2 errors / 5 words
    result = json.loads(out_json.read_text())
    summary = result["summary"]
    assert summary["wer"] == pytest.approx(2 / 5)
    assert (summary["substitutions"], summary["insertions"], summary["deletions"]) == (1, 1, 0)
    # Latencies: the 0.3, cat 0.3, sit 0.2, hello 0.4, world 0.4 -> mean 0.32.
    assert summary["latency_words"] == 5
    assert summary["latency_mean_s"] == pytest.approx(0.32)
    per_utt = {u["id"]: u for u in result["utterances"]}
    assert per_utt["u0"]["wer"] == pytest.approx(1 / 3)
    assert per_utt["u1"]["wer"] == pytest.approx(1 / 2)


def test_asr_missing_output_counts_as_deleted(corpus: Path, tmp_path: Path) -> None:
    hyp = _write_jsonl(tmp_path / "hyp.jsonl", [{"id": "u0", "text": "the cat sat"}])
    result, _ = run_eval("asr", str(corpus), str(hyp))
    assert result.summary["missing"] == 1
    assert result.summary["wer"] == pytest.approx(2 / 5)  # "hello world" all deleted
    assert math.isnan(result.summary["latency_mean_s"])  # no emission times given


def test_translation_eval(tmp_path: Path) -> None:
    refs = _write_jsonl(tmp_path / "fr.jsonl", [
        {"audio": "a.wav", "duration": 1.0, "id": "a", "text": "le chat est assis sur le tapis"},
        {"audio": "b.wav", "duration": 1.0, "id": "b", "text": "il fait très beau aujourd'hui"},
    ])
    exact = _write_jsonl(tmp_path / "exact.jsonl", [
        {"id": "a", "text": "le chat est assis sur le tapis"},
        {"id": "b", "text": "il fait très beau aujourd'hui"}])
    result, _ = run_eval("translation", str(refs), str(exact))
    assert result.summary["bleu"] == pytest.approx(100.0)
    wrong = _write_jsonl(tmp_path / "wrong.jsonl", [
        {"id": "a", "text": "bonjour"}, {"id": "b", "text": "merci"}])
    assert run_eval("translation", str(refs), str(wrong))[0].summary["bleu"] < 1.0


def test_codec_eval(corpus: Path, tmp_path: Path) -> None:
    decoded_dir = tmp_path / "decoded"
    decoded_dir.mkdir()
    rng = np.random.default_rng(0)
    rows = read_manifest(corpus)[0]
    for row in rows:
        clean, _ = sf.read(row.audio, dtype="float32")
        # Half volume, a little noise, and 320 samples of frame padding at the end.
        decoded = np.concatenate([0.5 * clean + 0.001 * rng.standard_normal(clean.size),
                                  np.zeros(320)]).astype(np.float32)
        sf.write(decoded_dir / f"{row.id}.wav", decoded, SR)
    hyp = _write_jsonl(tmp_path / "codec.jsonl", [
        {"id": row.id, "decoded": f"decoded/{row.id}.wav"} for row in rows])
    result, _ = run_eval("codec", str(corpus), str(hyp))
    assert result.summary["si_snr_db"] > 25  # scale does not count, the noise does
    assert result.summary["stoi"] > 0.85
    # Pure noise scores badly.
    for row in rows:
        sf.write(decoded_dir / f"{row.id}.wav",
                 (0.1 * rng.standard_normal(int(1.2 * SR))).astype(np.float32), SR)
    noisy = run_eval("codec", str(corpus), str(hyp))[0].summary
    assert noisy["si_snr_db"] < 0 and noisy["stoi"] < 0.5
    assert noisy["mel_distance"] > result.summary["mel_distance"] + 0.5


def test_tts_eval_with_transcripts_and_with_a_transcriber(corpus: Path, tmp_path: Path) -> None:
    hyp = _write_jsonl(tmp_path / "tts.jsonl", [
        {"id": "u0", "wav": "u0.wav", "transcript": "the cat sat", "first_audio_s": 0.2},
        {"id": "u1", "wav": "u1.wav", "transcript": "hello word", "first_audio_s": 0.4},
    ])
    result, _ = run_eval("tts", str(corpus), str(hyp))
    assert result.summary["wer"] == pytest.approx(1 / 5)
    assert result.summary["first_audio_mean_s"] == pytest.approx(0.3)

    from dsm.recipes.eval.evaluate import evaluate_tts
    rows = read_manifest(corpus)[0]
    outputs = pair_outputs(rows, [{"id": "u0", "wav": "u0.wav", "_line": 1,
                                   "_base": str(tmp_path)},
                                  {"id": "u1", "wav": "u1.wav", "_line": 2,
                                   "_base": str(tmp_path)}])
    heard = []

    def transcribe(samples: np.ndarray, rate: int) -> str:
        heard.append((samples.size, rate))
        return "the cat sat" if len(heard) == 1 else "hello world"

    result = evaluate_tts(rows, outputs, transcribe=transcribe)
    assert result.summary["wer"] == 0.0
    assert heard == [(int(1.2 * SR), SR)] * 2


def test_pairing_by_position_and_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    rows = read_manifest(corpus)[0]
    by_position = _write_jsonl(tmp_path / "pos.jsonl", [{"text": "a"}, {"text": "b"}])
    assert [o["text"] for o in pair_outputs(rows, read_outputs(by_position))] == ["a", "b"]
    too_few = _write_jsonl(tmp_path / "few.jsonl", [{"text": "a"}])
    with pytest.raises(EvalError, match="1 outputs without 'id'"):
        pair_outputs(rows, read_outputs(too_few))
    unknown = _write_jsonl(tmp_path / "unknown.jsonl", [{"id": "zz", "text": "a"}])
    with pytest.raises(EvalError, match="'zz' is not in the manifest"):
        run_eval("asr", str(corpus), str(unknown))
    twice = _write_jsonl(tmp_path / "twice.jsonl", [{"id": "u0", "text": "a"},
                                                    {"id": "u0", "text": "b"}])
    with pytest.raises(EvalError, match="second output"):
        run_eval("asr", str(corpus), str(twice))
    by_audio = _write_jsonl(tmp_path / "audio.jsonl", [{"audio": "u1.wav", "text": "hello world"}])
    result, _ = run_eval("asr", str(corpus), str(by_audio))
    assert result.utterances[1]["wer"] == 0.0 and result.utterances[0]["missing"]
    no_text = _write_jsonl(tmp_path / "notext.jsonl", [{"id": "u0", "txt": "a"}])
    with pytest.raises(EvalError, match=r"notext.jsonl:1: output has no 'text'"):
        run_eval("asr", str(corpus), str(no_text))

    # The command reports problems in one line and exits 2.
    assert dsm_main(["eval", "asr", "--manifest", str(corpus),
                     "--hyp", str(tmp_path / "absent.jsonl")]) == 2
    assert "outputs file not found" in capsys.readouterr().err
    assert dsm_main(["eval", "asr", "--manifest", str(tmp_path / "none.jsonl"),
                     "--hyp", str(unknown)]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert dsm_main(["eval", "asr", "--manifest", str(corpus)]) == 2
    assert "--hyp" in capsys.readouterr().err


def test_errors_split_by_vocabulary_count_each_reference_word_in_its_class() -> None:
    from dsm.recipes.eval import metrics as M

    vocabulary = M.vocabulary_of(["The cat sat on the mat."])
    assert vocabulary == {"the", "cat", "sat", "on", "mat"}
    # "zebra" (unknown) substituted, "the" -> "a" (known) substituted, "mat" inserted
    split = M.errors_by_vocabulary("the zebra sat on the mat", "the cat sat on a mat mat",
                                   vocabulary)
    assert split == M.VocabularyErrors(in_vocabulary_errors=1, in_vocabulary_words=5,
                                       oov_errors=1, oov_words=1, insertions=1)
    assert M.errors_by_vocabulary("the zebra", "", vocabulary) == M.VocabularyErrors(1, 1, 1, 1, 0)
    assert M.errors_by_vocabulary("", "the", vocabulary) == M.VocabularyErrors(0, 0, 0, 0, 1)
    # the split's errors and insertions add up to the word errors of the utterance
    ref, hyp = "the zebra sat on the mat", "cat sat on a mat mat"
    split = M.errors_by_vocabulary(ref, hyp, vocabulary)
    assert (split.in_vocabulary_errors + split.oov_errors + split.insertions
            == M.word_errors(ref, hyp).errors)


def test_asr_eval_splits_the_wer_by_the_training_vocabulary(corpus: Path, tmp_path: Path,
                                                            capsys) -> None:
    hyp = _write_jsonl(tmp_path / "hyp.jsonl", [
        {"id": "u0", "text": "the cat sit"}, {"id": "u1", "text": "hello word"}])
    train = tmp_path / "train.en.txt"
    train.write_text("The cat sat.\nHello, you.\n", encoding="utf-8")
    out_json = tmp_path / "asr.json"
    assert dsm_main(["eval", "asr", "--manifest", str(corpus), "--hyp", str(hyp),
                     "--vocabulary", str(train), "--json", str(out_json)]) == 0
    summary = json.loads(out_json.read_text())["summary"]
    # known: the cat sat hello (one error: sat); unknown: world (one error)
    assert summary["iv_words"] == 4 and summary["oov_words"] == 1
    assert summary["iv_wer"] == pytest.approx(0.25) and summary["oov_wer"] == 1.0
    assert summary["oov_rate"] == pytest.approx(0.2)
    assert "oov_wer" in capsys.readouterr().out
    # a manifest works as the vocabulary too; bad uses are clear errors
    result, _ = run_eval("asr", str(corpus), str(hyp), vocabulary={"the", "cat", "sat"})
    assert result.summary["oov_words"] == 2
    assert dsm_main(["eval", "asr", "--manifest", str(corpus), "--hyp", str(hyp),
                     "--vocabulary", str(tmp_path / "nope.txt")]) == 2
    assert "vocabulary file not found" in capsys.readouterr().err
    with pytest.raises(EvalError, match="applies to asr"):
        run_eval("translation", str(corpus), str(hyp), vocabulary={"x"})
    assert dsm_main(["eval", "asr", "--manifest", str(corpus), "--hyp", str(hyp),
                     "--vocabulary", str(corpus)]) == 0
