"""The shipped TTS model (dsm/assets/tts): intelligibility, as the WER of the shipped ASR
model (dsm/assets/asr, an independent model) on what it says.

The sentences are new draws of dsm's English text generator (a seed no training corpus
used), spoken through the streaming engine word by word as `dsm speak` does, with the
model directory's own sampling settings and fixed seeds. Both models must be shipped: a
missing one is a failure that names it, never a skip.

The target for a shipped TTS model is an intelligibility WER of at most 15 %; the test
holds it at `WER_CEILING`, under the target and a little above what the model measures
(docs/models/tts.md), so that a regression shows. These are generator sentences: in-domain
text, not open vocabulary.
"""

from __future__ import annotations

import json

import numpy as np
from helpers import HELD_OUT_SEED

from dsm.models.model_dir import DEFAULT_MODELS, resolve_model
from dsm.recipes.eval import metrics
from dsm.recipes.eval.tts import intelligibility
from dsm.recipes.synth.text import sentence
from dsm.recipes.tasks.tts import check_codec
from dsm.streaming.model_dir import load_model_dir

SENTENCES = 48
WER_CEILING = 0.10  # the target is 0.15


def _sentences() -> list[str]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    return [sentence(rng, "en") for _ in range(SENTENCES)]


def test_shipped_tts_files_are_small_and_share_the_codec() -> None:
    directory = DEFAULT_MODELS / "tts"
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert 0 < size <= 20 * 2**20, f"dsm/assets/tts holds {size / 2**20:.1f} MB"
    config = json.loads((directory / "config.json").read_text())
    assert config["codec"] == "../codec" and config["model_type"] == "tts"


def test_shipped_tts_intelligibility_stays_at_its_measured_level() -> None:
    tts = load_model_dir(resolve_model(None, "tts"))  # what `dsm speak TEXT -o OUT` loads
    asr = load_model_dir(resolve_model(None, "asr"))
    assert tts.task == "tts" and asr.task == "asr"
    check_codec(tts)  # dsm/assets/codec is the codec the TTS model was trained with
    texts = _sentences()
    speech, transcripts = intelligibility(tts, asr, texts, seed=0, tts_batch=8, asr_batch=8)
    for text, spoken in zip(texts, speech):  # every sentence spoken whole, not cut short
        assert [w for w, _, _ in spoken.words] == text.split()
        assert spoken.pcm.size > 0.15 * tts.codec.sample_rate * len(spoken.words)
    counts = [metrics.word_errors(t, h) for t, h in zip(texts, transcripts)]
    errors = sum(c.errors for c in counts)
    words = sum(c.reference_length for c in counts)
    shown = "\n".join(f"{t!r} -> {h!r}" for t, h in zip(texts, transcripts))
    assert errors / words <= WER_CEILING, f"WER {errors / words:.3f} ({errors}/{words})\n{shown}"
