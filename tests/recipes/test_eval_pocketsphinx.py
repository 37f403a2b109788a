"""CMU PocketSphinx as `dsm eval tts`'s independent recognizer: it hears real speech (flite's
slt voice), silence is "", a missing package is a clear error, and `dsm eval tts --asr-model
pocketsphinx --reference-audio` reports the recognizer's floor on the manifest's own audio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_model_dir

from dsm.audio_io import read_audio
from dsm.cli import main as dsm_main
from dsm.recipes.eval.evaluate import run_eval
from dsm.recipes.eval.metrics import corpus_wer
from dsm.recipes.eval.outputs import EvalError
from dsm.recipes.eval.pocketsphinx import RecognizerUnavailable, transcribe_pocketsphinx

# flite's slt voice (an HTS voice of a US-English speaker) saying these, heard by
# PocketSphinx 5.1.1's default en-us model at 24 kHz (resampled to its 16 kHz): 2 word
# errors in 27 (WER 0.074; "stella and" is heard as "stallion"). Not resampled (its 24 kHz
# samples taken for 16 kHz ones) the same audio scores 0.59, so the bound of 0.2 catches a
# broken resampling or sample conversion while leaving room for another release's model.
SENTENCES = ("the weather is nice today", "i would like a cup of coffee",
             "please call stella and ask her to bring these things with her from the store")
WER_BOUND = 0.2
# Short texts for the end-to-end run, where the tiny random TTS model speaks each row (its
# speech lasts about 1.5 s a word): PocketSphinx hears both flite files exactly (WER 0);
# the bound allows one word wrong in the four plus one inserted.
SHORT = ("hello world", "thank you")
SHORT_BOUND = 0.5
RATE = 24000  # the codec rate of dsm's models: the recognizer must resample


def _flite(text: str, path: Path) -> Path:
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flite's wav file of each text of SENTENCES and SHORT."""
    folder = tmp_path_factory.mktemp("flite")
    return {text: _flite(text, folder / f"s{index}.wav")
            for index, text in enumerate(SENTENCES + SHORT)}


def test_pocketsphinx_hears_flite_speech(spoken: dict[str, Path]) -> None:
    transcripts = transcribe_pocketsphinx([read_audio(spoken[t], RATE) for t in SENTENCES], RATE)
    assert all(t == t.lower() and "<" not in t and "[" not in t for t in transcripts)
    assert transcripts[0] == "the weather is nice today"
    assert corpus_wer(SENTENCES, transcripts) <= WER_BOUND, transcripts


def test_silence_and_empty_audio_give_empty_transcripts() -> None:
    # Digital silence: without dither PocketSphinx hears "dog" in it.
    silences = [np.zeros(0, np.float32), np.zeros(RATE, np.float32),
                np.zeros(3 * RATE, np.float32)]
    assert transcribe_pocketsphinx(silences, RATE) == ["", "", ""]


def test_missing_package_is_a_clear_error(tmp_path: Path, spoken: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(RecognizerUnavailable, match="pip install pocketsphinx"):
        transcribe_pocketsphinx([np.zeros(RATE, np.float32)], RATE)
    # `dsm eval` says so before it speaks anything (the TTS model is loaded, not run).
    model = write_tiny_model_dir(tmp_path / "tts", tmp_path / "tok", "tts")
    manifest = _manifest(tmp_path / "ref.jsonl", spoken, SHORT)
    code = dsm_main(["eval", "tts", "--manifest", str(manifest), "--model", str(model),
                     "--asr-model", "pocketsphinx"])
    assert code == 2 and "pip install pocketsphinx" in capsys.readouterr().err


def _manifest(path: Path, spoken: dict[str, Path], texts: tuple[str, ...]) -> Path:
    rows = [{"id": f"u{index}", "audio": str(spoken[text]), "text": text}
            for index, text in enumerate(texts)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_reference_transcripts_in_outputs_give_the_floor(tmp_path: Path,
                                                         spoken: dict[str, Path]) -> None:
    manifest = _manifest(tmp_path / "ref.jsonl", spoken, SENTENCES[:2])
    hyp = tmp_path / "hyp.jsonl"
    outputs = [{"id": "u0", "transcript": "the weather", "reference_transcript":
                "the weather is nice today"},
               {"id": "u1", "transcript": "", "reference_transcript": "i would like a cup"}]
    hyp.write_text("".join(json.dumps(o) + "\n" for o in outputs), encoding="utf-8")
    result, _ = run_eval("tts", str(manifest), str(hyp))
    assert result.summary["wer"] == pytest.approx((3 + 7) / 12)
    assert result.summary["reference_audio_wer"] == pytest.approx(2 / 12)  # "of coffee"
    assert [u["reference_audio_wer"] for u in result.utterances] == [0.0, pytest.approx(2 / 7)]
    del outputs[1]["reference_transcript"]
    hyp.write_text("".join(json.dumps(o) + "\n" for o in outputs), encoding="utf-8")
    with pytest.raises(EvalError, match="for all or none"):
        run_eval("tts", str(manifest), str(hyp))


def test_eval_tts_with_pocketsphinx_and_reference_audio(tmp_path: Path,
                                                        spoken: dict[str, Path],
                                                        capsys: pytest.CaptureFixture) -> None:
    model = write_tiny_model_dir(tmp_path / "tts", tmp_path / "tok", "tts")
    manifest = _manifest(tmp_path / "ref.jsonl", spoken, SHORT)
    out_json = tmp_path / "eval.json"
    code = dsm_main(["eval", "tts", "--manifest", str(manifest), "--model", str(model),
                     "--asr-model", "pocketsphinx", "--reference-audio",
                     "--json", str(out_json)])
    assert code == 0
    table = capsys.readouterr().out
    assert "reference_audio_wer" in table and "pocketsphinx on the manifest's own" in table
    result = json.loads(out_json.read_text())
    assert result["asr_model"] == "pocketsphinx" and result["summary"]["utterances"] == 2
    # The tiny model is random (its speech means nothing); the reference audio is flite's.
    assert result["summary"]["wer"] >= 0
    assert 0 <= result["summary"]["reference_audio_wer"] <= SHORT_BOUND
    assert 0 <= result["summary"]["reference_audio_cer"] <= SHORT_BOUND
    assert [set(u) >= {"wer", "reference_audio_wer", "first_audio_s"}
            for u in result["utterances"]] == [True, True]


def test_reference_audio_needs_tts_with_a_model(tmp_path: Path, spoken: dict[str, Path],
                                                capsys: pytest.CaptureFixture) -> None:
    manifest = _manifest(tmp_path / "ref.jsonl", spoken, SENTENCES[:1])
    hyp = tmp_path / "hyp.jsonl"
    hyp.write_text(json.dumps({"id": "u0", "transcript": "the weather"}) + "\n")
    code = dsm_main(["eval", "tts", "--manifest", str(manifest), "--hyp", str(hyp),
                     "--reference-audio"])
    assert code == 2 and "--reference-audio applies to tts with --model" in capsys.readouterr().err
