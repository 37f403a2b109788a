"""The shipped TTS model (dsm/assets/tts): intelligibility WER at most 15%, measured as
the shipped ASR model (dsm/assets/asr, an independent model) transcribes what it says.

The sentences are new draws of dsm's English text generator (a seed other than the
training corpus's), spoken through the streaming engine word by word as `dsm speak` does,
with the model directory's own sampling settings and fixed seeds. Both models must be
shipped: a missing one is a failure that names it, never a skip.
"""

from __future__ import annotations

import json

import numpy as np

from dsm.recipes import metrics
from dsm.recipes.synth_text import sentence
from dsm.recipes.tts_task import check_codec, intelligibility
from dsm.streaming.model_dir import DEFAULT_MODELS, load_model_dir, resolve_model

SENTENCES = 16
SEED = 2026  # the training corpus used seed 0


def _sentences() -> list[str]:
    rng = np.random.default_rng(SEED)
    return [sentence(rng, "en") for _ in range(SENTENCES)]


def test_shipped_tts_files_are_small_and_share_the_codec() -> None:
    directory = DEFAULT_MODELS / "tts"
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert 0 < size <= 20 * 2**20, f"dsm/assets/tts holds {size / 2**20:.1f} MB"
    config = json.loads((directory / "config.json").read_text())
    assert config["codec"] == "../codec" and config["model_type"] == "tts"


def test_shipped_tts_intelligibility_wer() -> None:
    tts = load_model_dir(resolve_model(None, "tts"))  # what `dsm speak TEXT -o OUT` loads
    asr = load_model_dir(resolve_model(None, "asr"))
    assert tts.task == "tts" and asr.task == "asr"
    check_codec(tts)  # dsm/assets/codec is the codec the TTS model was trained with
    texts = _sentences()
    speech, transcripts = intelligibility(tts, asr, texts, seed=0, tts_batch=8, asr_batch=8)
    for spoken in speech:  # every sentence was spoken, and not cut short
        assert spoken.pcm.size > 0.2 * tts.codec.sample_rate * len(spoken.words)
    counts = [metrics.word_errors(t, h) for t, h in zip(texts, transcripts)]
    errors = sum(c.errors for c in counts)
    words = sum(c.reference_length for c in counts)
    shown = "\n".join(f"{t!r} -> {h!r}" for t, h in zip(texts, transcripts))
    assert errors / words <= 0.15, f"WER {errors / words:.3f} ({errors}/{words})\n{shown}"
