"""Silence has one definition (`dsm.streams.silence`): the zeros the sessions feed, and
their codes as the engine's streaming encoder gives them. Training uses those codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsm.codecs import Mimi, MimiConfig
from dsm.codecs.seanet import SEANetConfig
from dsm.modules.transformer import TransformerConfig
from dsm.streaming.asr import ASRSession
from dsm.streams.silence import silence_codes, silence_pcm
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer

TINY_MIMI = MimiConfig(
    seanet=SEANetConfig(dimension=32, n_filters=4, ratios=[8, 6, 5, 4]),
    transformer=TransformerConfig(d_model=32, num_heads=4, num_layers=1, dim_feedforward=64,
                                  context=20, layer_scale=0.01),
    codebook_dim=16, n_q=4, bins=64,
)


@pytest.fixture(scope="module")
def codec() -> Mimi:
    """A tiny random Mimi with usable codebooks and random biases."""
    torch.manual_seed(3)
    model = Mimi(TINY_MIMI)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.copy_(torch.randn_like(buffer))
            elif name.endswith("cluster_usage"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    return model.eval()


def test_silence_pcm_is_float32_zeros() -> None:
    pcm = silence_pcm(7)
    assert pcm.dtype == np.float32 and pcm.shape == (7,) and not pcm.any()
    assert silence_pcm(0).shape == (0,)
    with pytest.raises(ValueError, match="num_samples"):
        silence_pcm(-1)


def test_silence_codes_are_what_the_engine_encodes_from_an_asr_sessions_prefix(
    codec: Mimi, tmp_path
) -> None:
    """An ASR session with a silence prefix hands the engine frames of zeros; the
    streaming encoder turns them into exactly `silence_codes`."""
    frames = 6
    session = ASRSession(train_tiny_tokenizer(tmp_path), sample_rate=codec.sample_rate,
                         frame_size=codec.frame_size, frame_rate=float(codec.frame_rate),
                         text_delay=2, silence_prefix=frames * codec.frame_size)
    heard = []
    with codec.streaming(1):
        for _ in range(frames):
            assert session.ready()
            frame = torch.from_numpy(session.take_frame()).view(1, 1, -1)
            heard.append(codec.encode_step(frame))
    assert not session.ready()
    expected = silence_codes(codec, frames)
    assert expected.shape == (codec.num_codebooks, frames) and expected.dtype == torch.long
    assert torch.equal(torch.cat(heard, dim=-1)[0], expected)


def test_silence_codes_start_at_the_stream_start(codec: Mimi) -> None:
    """A stream's first frames of silence do not depend on how long it lasts (the codec is
    causal; training cuts lead silence from the front), and the streaming codes equal the
    offline codes of the same zeros."""
    long = silence_codes(codec, 12)
    assert torch.equal(silence_codes(codec, 5), long[:, :5])
    offline = codec.encode(torch.zeros(1, 1, 12 * codec.frame_size))[0]
    assert torch.equal(long, offline)
    assert silence_codes(codec, 0).shape == (codec.num_codebooks, 0)
    with pytest.raises(ValueError, match="frames"):
        silence_codes(codec, -1)


def test_silence_codes_of_an_offline_only_codec_are_its_offline_codes() -> None:
    class OfflineOnly(ToyCodecForTests):
        def streaming(self, batch_size: int):  # type: ignore[override]
            raise NotImplementedError("offline only")

    toy = OfflineOnly(sample_rate=8000, num_codebooks=3, cardinality=64)
    expected = toy.encode(torch.zeros(1, 1, 4 * toy.frame_size))[0]
    assert torch.equal(silence_codes(toy, 4), expected)


def test_asr_session_flushes_and_pads_with_silence(tmp_path) -> None:
    """The ASR session pads the last partial frame and flushes its delays with zeros."""
    toy = ToyCodecForTests(sample_rate=8000)
    session = ASRSession(train_tiny_tokenizer(tmp_path), sample_rate=8000,
                         frame_size=toy.frame_size, frame_rate=12.5, text_delay=2, max_delay=1)
    session.push_pcm(np.full(toy.frame_size + 10, 0.5, dtype=np.float32))
    session.end()
    frames = []
    while session.ready():
        frames.append(session.take_frame())
    assert len(frames) == 2 + 2 + 1 + 1  # two frames of audio, then the flush
    assert (frames[0] == 0.5).all() and (frames[1][:10] == 0.5).all()
    assert not frames[1][10:].any()
    assert all(np.array_equal(frame, silence_pcm(toy.frame_size)) for frame in frames[2:])
