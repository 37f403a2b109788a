"""The spectral codec front end (dsm.codecs.spectral) and a Mimi built on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import feed_in_chunks, stream_in_chunks

from dsm.codecs import load_codec, save_codec
from dsm.codecs.init import unit_gain_init
from dsm.codecs.mimi import Mimi, MimiConfig
from dsm.codecs.spectral import SpectralConfig, SpectralDecoder, SpectralEncoder
from dsm.codecs.testing import randomize_codebooks
from dsm.modules.transformer import TransformerConfig

SMALL_SPECTRAL = MimiConfig(
    frontend="spectral",
    spectral=SpectralConfig(dimension=24, hop_length=240, hidden=16, n_residual_layers=2),
    transformer=TransformerConfig(d_model=24, num_heads=4, num_layers=1, dim_feedforward=48,
                                  context=12, layer_scale=0.5),
    codebook_dim=8, n_q=4, bins=32, dense_upsample=True,
)


@pytest.mark.parametrize(("window", "delay"), [("half_sine", 6), ("sqrt_hann", 60)])
def test_transforms_start_as_a_perfect_reconstruction_delayed_as_declared(window, delay):
    config = SpectralConfig(hop_length=60, crossfade=6, window=window)
    assert config.delay_samples == delay
    encoder, decoder = SpectralEncoder(config), SpectralDecoder(config)
    unit_gain_init(torch.nn.ModuleList([encoder, decoder]))  # must leave the bases alone
    wav = torch.randn(2, 1, 60 * 20)
    with torch.no_grad():
        back = decoder.synthesis(encoder.analysis(wav))
    torch.testing.assert_close(back[..., delay:], wav[..., :-delay], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="crossfade"):
        SpectralConfig(hop_length=60, crossfade=0)
    with pytest.raises(ValueError, match="window must be one of"):
        SpectralConfig(window="kaiser")
    # the encoder reads log power: a louder input gives larger features, not NaN
    with torch.no_grad():
        quiet, loud = encoder(torch.zeros(1, 1, 600)), encoder(torch.ones(1, 1, 600))
    assert torch.isfinite(quiet).all() and not torch.allclose(quiet, loud)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_front_end_streaming_equals_offline_with_slot_reset(part):
    torch.manual_seed(0)
    config = SpectralConfig(dimension=12, hop_length=48, hidden=16, n_residual_layers=2)
    if part == "encoder":
        module, x, chunk, shift = SpectralEncoder(config).eval(), torch.randn(3, 1, 48 * 12), 96, 48
    else:
        module, x, chunk, shift = SpectralDecoder(config).eval(), torch.randn(3, 12, 12), 2, 1
    with torch.no_grad():
        offline = module(x)
        streamed = stream_in_chunks(module, x, chunk, reset_at=3, reset_slot=1)
        fresh = module(x[1:2, :, 3 * chunk:])
    torch.testing.assert_close(streamed[[0, 2]], offline[[0, 2]], atol=1e-5, rtol=1e-5)
    start = 3 * chunk // shift * (1 if part == "encoder" else 48)
    torch.testing.assert_close(streamed[1, :, start:], fresh[0], atol=1e-5, rtol=1e-5)


def test_spectral_mimi_streams_like_offline_and_round_trips_through_a_directory(tmp_path):
    torch.manual_seed(1)
    codec = Mimi(SMALL_SPECTRAL).eval()
    randomize_codebooks(codec)
    assert codec.config.encoder_frame_rate == 100 and codec.config.resample_stride == 8
    assert codec.upsample is not None and codec.upsample.convtr.groups == 1  # dense
    wav = 0.3 * torch.randn(2, 1, 1920 * 6)
    with torch.no_grad():
        codes = codec.encode(wav)
        audio = codec.decode(codes)
        with codec.streaming(2):
            stream_codes = feed_in_chunks(codec.encode_step, codec, wav, codec.frame_size)
        with codec.streaming(2):
            stream_audio = feed_in_chunks(codec.decode_step, codec, codes, 1)
    assert codes.shape == (2, 4, 6) and audio.shape == wav.shape
    assert torch.equal(stream_codes, codes)
    torch.testing.assert_close(stream_audio, audio, atol=1e-5, rtol=0)

    save_codec(codec, tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, Mimi) and loaded.config == codec.config
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), codes)

    # stored in float16 (how the shipped codec saves space): half the bytes, float32 again
    # once loaded, and the same audio up to float16 rounding
    save_codec(codec, tmp_path / "half", dtype=torch.float16)
    full_bytes = (tmp_path / "codec" / "model.safetensors").stat().st_size
    half_bytes = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half_bytes < 0.6 * full_bytes
    half = load_codec(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    with torch.no_grad():
        torch.testing.assert_close(half.decode(codes), audio, atol=2e-2, rtol=0)


def test_evaluation_compares_with_the_input_a_declared_delay_earlier():
    """A codec that declares `delay_samples` is scored on its output advanced by that
    delay: here a spectral Mimi whose whole path is the identity transform (encoder and
    decoder reduced to analysis -> synthesis), so the aligned output is the input."""
    from dsm.recipes.eval.codec import reconstruct

    codec = Mimi(dataclasses.replace(SMALL_SPECTRAL, spectral=SpectralConfig(
        dimension=24, hop_length=240, hidden=16, n_residual_layers=1, window="sqrt_hann")))
    assert codec.delay_samples == 240
    identity = lambda wav: codec.decoder.synthesis(codec.encoder.analysis(wav))  # noqa: E731
    codec.encode = lambda wav: wav  # the "codes" are the audio itself  # type: ignore
    codec.decode = identity  # type: ignore
    samples = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    with torch.no_grad():
        aligned = reconstruct(codec, samples)
    assert aligned.shape == samples.shape
    np.testing.assert_allclose(aligned, samples, atol=1e-4)
    assert Mimi(SMALL_SPECTRAL).delay_samples == 24 and Mimi(MimiConfig()).delay_samples == 0


def test_unknown_front_end_is_named():
    with pytest.raises(ValueError, match="frontend must be one of"):
        MimiConfig(frontend="wavelet")
