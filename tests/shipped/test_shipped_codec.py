"""The shipped codec (dsm/assets/codec) on held-out synthesized speakers: its STOI, and
streaming decode equal to offline decode.

The utterances are synthesized here by dsm's corpus code with the eval split's voices only
(espeak variants m4 / f3 / klatt3 and flite rms, never used to train the codec) and a seed
other than the training corpora's, so the texts are new draws too.

The target for a shipped codec is a mean STOI of 0.8 on those, and 0.85 on held-out voices
speaking held-out texts (sentences of documents no model trained on, `held_out_text_utterances`);
the tests hold the codec to both (what it measures: docs/models/codec.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import held_out_text_utterances, held_out_utterances

from dsm.codecs import load_codec
from dsm.recipes.eval import metrics
from dsm.recipes.eval.codec import reconstruct

CODEC_DIR = Path(__file__).resolve().parents[2] / "dsm" / "assets" / "codec"
UTTERANCES = 8
STOI_FLOOR = 0.8   # the target
HELD_OUT_TEXT_UTTERANCES = 24
HELD_OUT_TEXT_STOI_FLOOR = 0.85  # the target on held-out voices and texts


@pytest.fixture(scope="module")
def codec():
    return load_codec(CODEC_DIR)


@pytest.fixture(scope="module")
def held_out() -> list:
    return held_out_utterances(UTTERANCES)


def test_shipped_codec_shape_and_size(codec) -> None:
    # The server protocol and the shipped LMs rely on these.
    assert (codec.sample_rate, codec.frame_rate, codec.frame_size) == (24000, 12.5, 1920)
    assert codec.num_codebooks == 16 and codec.cardinality == 1024
    assert codec.delay_samples == 240  # the spectral front end's declared 10 ms
    size = sum(f.stat().st_size for f in CODEC_DIR.rglob("*") if f.is_file())
    assert size <= 20 * 2**20, f"dsm/assets/codec holds {size / 2**20:.1f} MB"


def test_shipped_codec_stoi_on_held_out_speakers_stays_at_its_measured_level(codec, held_out) -> None:
    scores = []
    for utterance in held_out:
        reference = utterance.audio.astype(np.float32) / 32768.0
        decoded = reconstruct(codec, reference)
        assert decoded.shape == reference.shape
        scores.append(metrics.stoi(decoded, reference, codec.sample_rate))
    shown = "\n".join(f"{u.speaker}: STOI {s:.3f}" for u, s in zip(held_out, scores))
    assert float(np.mean(scores)) >= STOI_FLOOR, f"mean STOI {np.mean(scores):.3f}\n{shown}"


def test_shipped_codec_stoi_on_held_out_voices_and_texts_meets_the_target(codec) -> None:
    utterances = held_out_text_utterances(HELD_OUT_TEXT_UTTERANCES)
    scores = []
    for utterance in utterances:
        reference = utterance.audio.astype(np.float32) / 32768.0
        scores.append(metrics.stoi(reconstruct(codec, reference), reference, codec.sample_rate))
    shown = "\n".join(f"{u.speaker}: STOI {s:.3f}" for u, s in zip(utterances, scores))
    assert float(np.mean(scores)) >= HELD_OUT_TEXT_STOI_FLOOR, \
        f"mean STOI {np.mean(scores):.3f}\n{shown}"


def test_shipped_codec_streaming_equals_offline(codec, held_out) -> None:
    """Batch of 2 slots, frame by frame; slot 1 is reset mid-stream and starts another
    utterance. Codes and audio equal the offline encode / decode of what each slot heard."""
    frame = codec.frame_size
    frames, reset_at = 12, 5
    pcm = [torch.from_numpy(u.audio.astype(np.float32) / 32768.0) for u in held_out[:3]]
    first = torch.stack([pcm[0][: frames * frame], pcm[1][: frames * frame]])[:, None]
    second = pcm[2][: (frames - reset_at) * frame][None, None]           # [1, 1, N]
    # what slot 1 hears: utterance 1 until the reset, then utterance 2 from its start
    stream = first.clone()
    stream[1, 0, reset_at * frame:] = second[0, 0]
    mask = torch.tensor([False, True])

    codes_steps, audio_steps = [], []
    with codec.streaming(2):
        for step in range(frames):
            if step == reset_at:
                codec.reset_slots(mask)
            codes = codec.encode_step(stream[..., step * frame:(step + 1) * frame])
            codes_steps.append(codes)
            audio_steps.append(codec.decode_step(codes))
    codes = torch.cat(codes_steps, dim=-1)                                # [2, K, T]
    audio = torch.cat(audio_steps, dim=-1)                                # [2, 1, N]

    offline_codes = codec.encode(first)
    assert torch.equal(codes[0], offline_codes[0])
    assert torch.equal(codes[1, :, :reset_at], offline_codes[1, :, :reset_at])
    assert torch.equal(codes[1, :, reset_at:], codec.encode(second)[0])

    offline_audio = codec.decode(codes[:1])
    torch.testing.assert_close(audio[:1], offline_audio, atol=1e-4, rtol=1e-4)
    before = codec.decode(codes[1:, :, :reset_at])
    after = codec.decode(codes[1:, :, reset_at:])
    torch.testing.assert_close(audio[1:, :, :reset_at * frame], before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(audio[1:, :, reset_at * frame:], after, atol=1e-4, rtol=1e-4)
    assert audio.abs().max() > 1e-3  # the decoder says something
