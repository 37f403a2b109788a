"""SEANet encoder/decoder: shapes, streaming equals offline with a slot reset, and the same
numbers as moshi's SEANet for the same weights."""

from __future__ import annotations

import torch
from helpers import stream_in_chunks

from dsm.codecs.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder

SMALL = SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2], n_residual_layers=2,
                     true_skip=False)


def test_shapes():
    encoder, decoder = SEANetEncoder(SMALL), SEANetDecoder(SMALL)
    wav = torch.randn(2, 1, 8 * 5)
    latent = encoder(wav)
    assert latent.shape == (2, 16, 5)
    assert decoder(latent).shape == (2, 1, 40)


def test_encoder_streaming_equals_offline_with_reset():
    encoder = SEANetEncoder(SMALL)
    wav = torch.randn(3, 1, 8 * 10)
    offline = encoder(wav)
    streamed = stream_in_chunks(encoder, wav, 8, reset_at=4)
    torch.testing.assert_close(streamed[[0, 2]], offline[[0, 2]], atol=1e-5, rtol=1e-5)
    fresh = encoder(wav[1:2, :, 32:])
    torch.testing.assert_close(streamed[1, :, 4:], fresh[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1, :, :4], offline[1, :, :4], atol=1e-5, rtol=1e-5)


def test_decoder_streaming_equals_offline_with_reset():
    decoder = SEANetDecoder(SMALL)
    latent = torch.randn(3, 16, 9)
    offline = decoder(latent)
    streamed = stream_in_chunks(decoder, latent, 1, reset_at=5, reset_slot=0)
    torch.testing.assert_close(streamed[1:], offline[1:], atol=1e-5, rtol=1e-5)
    fresh = decoder(latent[0:1, :, 5:])
    torch.testing.assert_close(streamed[0, :, 40:], fresh[0], atol=1e-5, rtol=1e-5)


def test_matches_moshi_seanet():
    from moshi.modules.seanet import SEANetDecoder as MoshiDecoder
    from moshi.modules.seanet import SEANetEncoder as MoshiEncoder

    kwargs = dict(channels=1, dimension=16, n_filters=4, n_residual_layers=2, ratios=[4, 2],
                  causal=True, pad_mode="constant", true_skip=False, last_kernel_size=3,
                  kernel_size=7, residual_kernel_size=3, compress=2, norm="none")
    ref_encoder, ref_decoder = MoshiEncoder(**kwargs), MoshiDecoder(**kwargs)
    encoder, decoder = SEANetEncoder(SMALL), SEANetDecoder(SMALL)

    def ours(key: str) -> str:
        return key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".convtr.")

    encoder.load_state_dict({ours(k): v for k, v in ref_encoder.state_dict().items()})
    decoder.load_state_dict({ours(k): v for k, v in ref_decoder.state_dict().items()})
    wav = torch.randn(2, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(wav), ref_encoder(wav), atol=1e-6, rtol=1e-5)
        latent = torch.randn(2, 16, 8)
        torch.testing.assert_close(decoder(latent), ref_decoder(latent), atol=1e-6, rtol=1e-5)
