"""The shipped ASR model (dsm/assets/asr) on held-out synthesized speakers: corpus WER at
most 10%, streamed through the engine as `dsm transcribe` runs it.

The utterances are synthesized here by dsm's corpus code with the eval split's voices only
(espeak variants m4 / f3 / klatt3 and flite rms, never used in training) and a seed other
than the training corpus's, so the texts are new draws too.
"""

from __future__ import annotations

import numpy as np
from helpers import held_out_utterances

from dsm.recipes import metrics
from dsm.recipes.asr_task import transcribe_pcms
from dsm.streaming.model_dir import DEFAULT_MODELS, load_model_dir, resolve_model

UTTERANCES = 16


def test_shipped_asr_model_files_are_small() -> None:
    directory = DEFAULT_MODELS / "asr"
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert size <= 15 * 2**20, f"dsm/assets/asr holds {size / 2**20:.1f} MB"


def test_shipped_asr_wer_on_held_out_speakers() -> None:
    model = load_model_dir(resolve_model(None, "asr"))  # what `dsm transcribe FILE` loads
    assert model.task == "asr" and model.lm.config.dep_q == 0
    utterances = held_out_utterances(UTTERANCES)
    pcms = [u.audio.astype(np.float32) / 32768.0 for u in utterances]
    transcripts = transcribe_pcms(model, pcms, num_slots=8)
    counts = [metrics.word_errors(u.text, t.text) for u, t in zip(utterances, transcripts)]
    errors = sum(c.errors for c in counts)
    words = sum(c.reference_length for c in counts)
    wer = errors / words
    shown = "\n".join(f"{u.speaker}: {u.text!r} -> {t.text!r}"
                      for u, t in zip(utterances, transcripts) if u.text != t.text)
    assert wer <= 0.10, f"WER {wer:.3f} ({errors}/{words} words)\n{shown}"
    # Streaming: every word comes out after the audio of its start has been heard.
    for transcript in transcripts:
        assert all(w["time"] >= w["start"] for w in transcript.words)
