"""Mimi: conformance with the `moshi` package (small and full configs, offline and
streaming), streaming equals offline with a slot reset, checkpoints, bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers import feed_in_chunks, stream_in_chunks
from safetensors.torch import save_file

from dsm.codecs import Mimi, MimiConfig, load_codec, save_codec
from dsm.codecs.mimi import CodecTransformer
from dsm.codecs.seanet import SEANetConfig
from dsm.codecs.testing import randomize_codebooks
from dsm.modules.transformer import TransformerConfig

# A small Mimi: 4 kHz, hop 20 (200 Hz) then stride 2 -> 100 Hz frames of 40 samples;
# transformer d_model 24 != latent 32 (projections used), context 10 encoder steps.
MOSHI_SMALL = dict(
    sample_rate=4000, channels=1, frame_rate=100.0,
    seanet=dict(channels=1, dimension=32, causal=True, n_filters=4, n_residual_layers=1,
                activation="ELU", compress=2, dilation_base=2, disable_norm_outer_blocks=0,
                kernel_size=7, residual_kernel_size=3, last_kernel_size=3, norm="none",
                pad_mode="constant", ratios=[5, 4], true_skip=True),
    quantizer=dict(dimension=16, n_q=4, bins=64, input_dimension=32, output_dimension=32),
    transformer=dict(d_model=24, num_heads=4, num_layers=2, causal=True, layer_scale=0.01,
                     context=10, conv_layout=True, max_period=10000, gating="none",
                     norm="layer_norm", positional_embedding="rope", dim_feedforward=48,
                     input_dimension=32, output_dimensions=[32]),
)
SMALL = MimiConfig(
    sample_rate=4000, frame_rate=100.0,
    seanet=SEANetConfig(dimension=32, n_filters=4, ratios=[5, 4]),
    transformer=TransformerConfig(d_model=24, num_heads=4, num_layers=2, dim_feedforward=48,
                                  context=10, layer_scale=0.01),
    codebook_dim=16, n_q=4, bins=64,
)


def _randomize(model: torch.nn.Module, layer_scale: float | None) -> torch.nn.Module:
    """Usable codebooks (ours or moshi's) and, optionally, bigger layer scales; eval mode."""
    randomize_codebooks(model)
    if layer_scale is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "layer_scale" in name:
                    param.fill_(layer_scale)
    return model.eval()


def _moshi_mimi(config: dict | None, num_codebooks: int, layer_scale: float | None):
    from moshi.models import loaders

    model = loaders.get_mimi(None, config, num_codebooks=num_codebooks)
    return _randomize(model, layer_scale)


def _save(model: torch.nn.Module, path: Path, kyutai_names: bool = False) -> Path:
    state = {}
    for key, value in model.state_dict().items():
        if kyutai_names:  # the published checkpoints' attention names
            key = key.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
            key = key.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
        state[key] = value.contiguous()
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    torch.manual_seed(1)
    reference = _moshi_mimi(MOSHI_SMALL, num_codebooks=4, layer_scale=1.0)
    path = _save(reference, tmp_path_factory.mktemp("mimi") / "small.safetensors")
    return reference, path


def test_small_config_matches_moshi_offline_and_streaming(small_pair):
    reference, path = small_pair
    ours = load_codec(f"mimi:{path}", config=SMALL)
    assert (ours.sample_rate, ours.frame_rate, ours.frame_size) == (4000, 100.0, 40)
    assert (ours.num_codebooks, ours.cardinality) == (4, 64)
    wav = 0.3 * torch.randn(2, 1, 40 * 30 + 13)  # 31 frames: well past the context
    with torch.no_grad():
        ref_codes = reference.encode(wav)
        codes = ours.encode(wav)
        assert torch.equal(codes, ref_codes)
        ref_audio = reference.decode(ref_codes)
        audio = ours.decode(codes)
        assert audio.shape == ref_audio.shape == (2, 1, 31 * 40)
        torch.testing.assert_close(audio, ref_audio, atol=1e-4, rtol=0)

        wav = torch.nn.functional.pad(wav, (0, 31 * 40 - wav.shape[-1]))  # whole frames
        with ours.streaming(2):
            stream_codes = feed_in_chunks(ours.encode_step, ours, wav, ours.frame_size)
            stream_audio = feed_in_chunks(ours.decode_step, ours, codes, 1)
        # streaming equals moshi's offline result over the whole sequence ...
        assert torch.equal(stream_codes, ref_codes)
        torch.testing.assert_close(stream_audio, ref_audio, atol=1e-4, rtol=0)
        # ... and moshi's streaming one while the attention window has not filled (past
        # it, moshi's ring cache drops the oldest key of a 2-step chunk's first query)
        frames = 4
        with reference.streaming(2):
            ref_stream_codes = torch.cat([reference.encode(wav[..., 40 * t:40 * t + 40])
                                          for t in range(frames)], dim=-1)
            ref_stream_audio = torch.cat([reference.decode(codes[..., t:t + 1])
                                          for t in range(frames)], dim=-1)
        assert torch.equal(stream_codes[..., :frames], ref_stream_codes)
        torch.testing.assert_close(stream_audio[..., : 40 * frames], ref_stream_audio,
                                   atol=1e-4, rtol=0)


def test_kyutai_attention_names_load_too(small_pair, tmp_path):
    reference, _ = small_pair
    path = _save(reference, tmp_path / "kyutai.safetensors", kyutai_names=True)
    ours = load_codec(f"mimi:{path}", config=SMALL)
    wav = 0.3 * torch.randn(1, 1, 400)
    with torch.no_grad():
        assert torch.equal(ours.encode(wav), reference.encode(wav))


def test_full_config_matches_moshi(tmp_path):
    """Kyutai's full Mimi (24 kHz, 12.5 Hz, 32 x 2048), random weights, ~1 s of audio."""
    torch.manual_seed(2)
    reference = _moshi_mimi(None, num_codebooks=32, layer_scale=None)
    path = _save(reference, tmp_path / "mimi.safetensors")
    ours = load_codec(f"mimi:{path}")
    assert (ours.sample_rate, ours.frame_rate, ours.frame_size) == (24000, 12.5, 1920)
    assert (ours.num_codebooks, ours.cardinality) == (32, 2048)
    frames = 12
    wav = 0.3 * torch.randn(2, 1, 1920 * frames)
    with torch.no_grad():
        ref_codes = reference.encode(wav)
        codes = ours.encode(wav)
        assert codes.shape == (2, 32, frames)
        assert torch.equal(codes, ref_codes)
        ref_audio = reference.decode(ref_codes)
        torch.testing.assert_close(ours.decode(codes), ref_audio, atol=1e-4, rtol=0)
        with reference.streaming(2):
            ref_stream = [(reference.encode(wav[..., 1920 * t:1920 * (t + 1)]),
                           reference.decode(ref_codes[..., t:t + 1])) for t in range(frames)]
        with ours.streaming(2):
            stream_codes = feed_in_chunks(ours.encode_step, ours, wav, ours.frame_size)
            stream_audio = feed_in_chunks(ours.decode_step, ours, codes, 1)
    assert torch.equal(stream_codes, torch.cat([c for c, _ in ref_stream], dim=-1))
    torch.testing.assert_close(stream_audio, torch.cat([a for _, a in ref_stream], dim=-1),
                               atol=1e-4, rtol=0)
    ours.set_num_codebooks(8)
    reference.set_num_codebooks(8)
    with torch.no_grad():
        assert torch.equal(ours.encode(wav[..., :3840]), reference.encode(wav[..., :3840]))


def test_streaming_equals_offline_with_slot_reset():
    torch.manual_seed(3)
    codec = _randomize(Mimi(SMALL), layer_scale=0.5)
    wav = 0.3 * torch.randn(3, 1, 40 * 24)
    codes = codec.encode(wav)
    audio = codec.decode(codes)
    reset_step, slot = 9, 1
    with codec.streaming(3):
        stream_codes = feed_in_chunks(codec.encode_step, codec, wav, codec.frame_size,
                                      reset_at=reset_step, reset_slot=slot)
    with codec.streaming(3):
        stream_audio = feed_in_chunks(codec.decode_step, codec, codes, 1, reset_at=reset_step,
                                      reset_slot=slot)
    others = [0, 2]
    assert torch.equal(stream_codes[others], codes[others])
    torch.testing.assert_close(stream_audio[others], audio[others], atol=1e-5, rtol=0)
    # the reset slot continues exactly like a stream that started at the reset
    fresh_codes = codec.encode(wav[slot:slot + 1, :, 40 * reset_step:])
    assert torch.equal(stream_codes[slot, :, :reset_step], codes[slot, :, :reset_step])
    assert torch.equal(stream_codes[slot, :, reset_step:], fresh_codes[0])
    fresh_audio = codec.decode(codes[slot:slot + 1, :, reset_step:])
    torch.testing.assert_close(stream_audio[slot, :, 40 * reset_step:], fresh_audio[0],
                               atol=1e-5, rtol=0)


def test_codec_transformer_streaming_equals_offline_with_reset():
    config = TransformerConfig(d_model=24, num_heads=4, num_layers=2, dim_feedforward=48,
                               context=6, layer_scale=1.0)
    block = CodecTransformer(32, config).eval()
    x = torch.randn(3, 32, 16)
    with torch.no_grad():
        offline = block(x)
        streamed = stream_in_chunks(block, x, 2, reset_at=5, reset_slot=2)
        fresh = block(x[2:, :, 10:])
    torch.testing.assert_close(streamed[:2], offline[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[2, :, 10:], fresh[0], atol=1e-5, rtol=1e-5)


def test_save_and_load_directory_round_trip(tmp_path):
    codec = _randomize(Mimi(SMALL), layer_scale=0.5)
    codec.set_num_codebooks(3)
    save_codec(codec, tmp_path / "codec")
    assert {p.name for p in (tmp_path / "codec").iterdir()} == {"config.json",
                                                                "model.safetensors"}
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, Mimi) and loaded.config == codec.config
    assert loaded.num_codebooks == 3
    wav = 0.3 * torch.randn(2, 1, 400)
    assert torch.equal(loaded.encode(wav), codec.encode(wav))


def test_training_pass_learns_codebooks():
    codec = Mimi(copy.deepcopy(SMALL)).train()
    wav = 0.3 * torch.randn(2, 1, 40 * 80)  # 160 latent vectors for 64-entry codebooks
    out = codec(wav)
    assert out.audio.shape == wav.shape and out.codes.shape == (2, 4, 80)
    assert codec.quantizer.rvq_first.layers[0].initialized.item() == 1  # k-means ran
    loss = (out.audio - wav).pow(2).mean() + out.commitment_loss
    loss.backward()
    assert codec.encoder.model[0].conv.weight.grad is not None  # through straight-through
    assert torch.isfinite(out.commitment_loss) and out.commitment_loss > 0


# --- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_codec():
    return _randomize(Mimi(SMALL), layer_scale=0.5)


def test_bad_audio_is_named(small_codec):
    codec = small_codec
    wav = torch.randn(1, 1, 400)
    with pytest.raises(ValueError, match="4000 Hz but the audio is at 16000 Hz"):
        codec.encode(wav, sample_rate=16000)
    with pytest.raises(TypeError, match="float samples.*torch.int16"):
        codec.encode((wav * 1000).to(torch.int16))
    with pytest.raises(ValueError, match="mono.*2 channels"):
        codec.encode(torch.randn(1, 2, 400))
    with pytest.raises(ValueError, match=r"\[B, 1, N\]"):
        codec.encode(torch.randn(400))
    with pytest.raises(TypeError, match="integer"):
        codec.decode(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"values must be in \[0, 64\)"):
        codec.decode(torch.full((1, 4, 3), 64))
    with pytest.raises(ValueError, match="4 codebooks|1 to 4"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))


def test_bad_streaming_input_is_named(small_codec):
    codec = small_codec
    with pytest.raises(RuntimeError, match="streaming"):
        codec.encode_step(torch.randn(2, 1, 40))
    with codec.streaming(2):
        with pytest.raises(ValueError, match="one frame of 40 samples.*got 39"):
            codec.encode_step(torch.randn(2, 1, 39))
        with pytest.raises(ValueError, match="batch of 3.*batch_size=2"):
            codec.encode_step(torch.randn(3, 1, 40))
        with pytest.raises(ValueError, match=r"one frame, shape \[B, K, 1\]"):
            codec.decode_step(torch.zeros(2, 4, 2, dtype=torch.long))
        with pytest.raises(ValueError, match="16000 Hz"):
            codec.encode_step(torch.randn(2, 1, 40), sample_rate=16000)
        # the stream still works after the rejected calls
        assert codec.encode_step(torch.randn(2, 1, 40)).shape == (2, 4, 1)


def test_bad_checkpoints_are_named(small_pair, tmp_path):
    reference, _ = small_pair
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    missing = dict(state)
    del missing["decoder.model.0.conv.conv.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: decoder\.model\.0\.conv\.weight"):
        load_codec(f"mimi:{tmp_path / 'missing.safetensors'}", config=SMALL)
    misshaped = dict(state)
    misshaped["encoder.model.0.conv.conv.weight"] = torch.zeros(5, 1, 7)
    save_file(misshaped, str(tmp_path / "misshaped.safetensors"))
    with pytest.raises(ValueError, match=r"misshaped.*encoder\.model\.0\.conv\.weight.*\(5, 1, 7\)"):
        load_codec(f"mimi:{tmp_path / 'misshaped.safetensors'}", config=SMALL)
    with pytest.raises(ValueError, match="does not match"):  # small file, full config
        load_codec(f"mimi:{small_pair[1]}")
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_codec(f"mimi:{tmp_path / 'nothere.safetensors'}")
    with pytest.raises(ValueError, match="unknown codec spec"):
        load_codec("wavtokenizer:x.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_codec(tmp_path / "empty")


def test_float64_audio_is_accepted(small_codec):
    wav = 0.3 * torch.randn(1, 1, 400)
    assert torch.equal(small_codec.encode(wav.double()), small_codec.encode(wav))


def test_kyutai_key_mapping():
    from dsm.codecs.mimi import kyutai_to_dsm_key as key

    assert key("encoder.model.0.conv.conv.weight") == "encoder.model.0.conv.weight"
    assert key("downsample.conv.conv.conv.weight") == "downsample.conv.weight"
    assert key("upsample.convtr.convtr.convtr.weight") == "upsample.convtr.weight"
    assert key("decoder.model.2.convtr.convtr.bias") == "decoder.model.2.convtr.bias"
    prefix = "encoder_transformer.transformer.layers.3.self_attn."
    assert key(prefix + "in_projs.0.weight") == prefix + "in_proj_weight"
    assert key(prefix + "in_proj_weight") == prefix + "in_proj_weight"
    assert key(prefix + "out_projs.0.weight") == prefix + "out_proj.weight"
    assert key("decoder_transformer.output_projs.0.weight") == \
        "decoder_transformer.output_proj.weight"
    book = "quantizer.rvq_rest.vq.layers.30._codebook."
    ours = "quantizer.rvq_rest.layers.30."
    for old, new in (("_initialized", "initialized"), ("inited", "initialized"),
                     ("cluster_usage", "cluster_usage"), ("cluster_size", "cluster_usage"),
                     ("embedding_sum", "embedding_sum"), ("embed_avg", "embedding_sum")):
        assert key(book + old) == ours + new
