"""The shipped ASR model (dsm/assets/asr) on held-out synthesized speakers, streamed
through the engine as `dsm transcribe` runs it: its corpus WER, and word emission times.

The utterances are synthesized here by dsm's corpus code with the eval split's voices only
(espeak variants m4 / f3 / klatt3 and flite rms, never used in training) and a seed other
than the training corpora's, so the texts are new draws too.

The target for a shipped ASR model is a WER of at most 10 %. The model shipped now,
trained in 7 h 04 min on one CPU thread, measures 0.166 on these utterances (16 of them,
163 words: two words more than the previous model's 0.153, while it gained on all three
larger held-out sets; 0.178 on the 231 of the corpus's eval split: 0.03 to 0.07 on
espeak's held-out variants, 0.37 on the held-out flite voice): short of the target,
reported as such in the README. This test holds it at `WER_CEILING`, a little above what
it measures, so that a regression shows.
"""

from __future__ import annotations

import numpy as np
from helpers import held_out_utterances

from dsm.recipes import metrics
from dsm.recipes.asr_task import transcribe_pcms
from dsm.streaming.model_dir import DEFAULT_MODELS, load_model_dir, resolve_model

UTTERANCES = 16
WER_CEILING = 0.18  # measured 0.166 (the target, 0.10, is not met)


def test_shipped_asr_model_files_are_small() -> None:
    directory = DEFAULT_MODELS / "asr"
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    # float16 weights; it reads all 16 codebooks (16 input tables of 1025 x 192)
    assert size <= 11 * 2**20, f"dsm/assets/asr holds {size / 2**20:.1f} MB"


def test_shipped_asr_wer_on_held_out_speakers_stays_at_its_measured_level() -> None:
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
    assert wer <= WER_CEILING, f"WER {wer:.3f} ({errors}/{words} words)\n{shown}"
    # Streaming: every word comes out after the audio of its start has been heard.
    for transcript in transcripts:
        assert all(w["time"] >= w["start"] for w in transcript.words)
