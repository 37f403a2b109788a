"""EnCodec adapter: a random-weight `encodec` 24 kHz model saved in its checkpoint layout
loads through `load_codec("encodec_24khz:...")` and gives the package's codes."""

from __future__ import annotations

import sys

import pytest
import torch

from dsm.codecs import load_codec, save_codec
from dsm.codecs.encodec_adapter import build_encodec_24khz


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(4)
    model = build_encodec_24khz()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("._codebook.embed"):
                buffer.copy_(torch.randn_like(buffer))
            elif name.endswith("._codebook.inited"):
                buffer.fill_(1.0)
    model.eval()
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz-random.th"
    torch.save(model.state_dict(), path)
    return model, path


def test_same_codes_and_audio_as_encodec(checkpoint):
    reference, path = checkpoint
    codec = load_codec(f"encodec_24khz:{path}", num_codebooks=8)
    assert (codec.sample_rate, codec.frame_rate, codec.frame_size) == (24000, 75.0, 320)
    assert (codec.num_codebooks, codec.cardinality) == (8, 1024)
    wav = 0.3 * torch.randn(2, 1, 320 * 10)
    codes = codec.encode(wav)
    reference.set_target_bandwidth(6.0)
    with torch.no_grad():
        (ref_codes, scale), = reference.encode(wav)
        assert scale is None
        assert codes.shape == (2, 8, 10)
        assert torch.equal(codes, ref_codes)
        ref_audio = reference.decode([(ref_codes, None)])
    audio = codec.decode(codes)
    assert audio.shape == (2, 1, 3200)
    torch.testing.assert_close(audio, ref_audio[..., :3200], atol=1e-5, rtol=0)
    # all 32 codebooks by default; a partial last frame is padded like encodec pads it
    full = load_codec(f"encodec_24khz:{path}")
    assert full.num_codebooks == 32
    assert full.encode(wav[..., :3000]).shape == (2, 32, 10)


def test_directory_round_trip(checkpoint, tmp_path):
    _, path = checkpoint
    codec = load_codec(f"encodec_24khz:{path}", num_codebooks=4)
    save_codec(codec, tmp_path / "encodec")
    again = load_codec(tmp_path / "encodec")
    wav = 0.3 * torch.randn(1, 1, 960)
    assert again.num_codebooks == 4
    assert torch.equal(again.encode(wav), codec.encode(wav))


def test_streaming_is_refused_clearly(checkpoint):
    codec = load_codec(f"encodec_24khz:{checkpoint[1]}")
    with pytest.raises(NotImplementedError, match="offline only.*Mimi"):
        with codec.streaming(1):
            pass
    with pytest.raises(RuntimeError, match="streaming"):
        codec.encode_step(torch.zeros(1, 1, 320))


def test_bad_input_and_checkpoints(checkpoint, tmp_path):
    reference, path = checkpoint
    codec = load_codec(f"encodec_24khz:{path}")
    with pytest.raises(ValueError, match="24000 Hz but the audio is at 48000 Hz"):
        codec.encode(torch.zeros(1, 1, 320), sample_rate=48000)
    with pytest.raises(ValueError, match="mono"):
        codec.encode(torch.zeros(1, 2, 320))
    with pytest.raises(ValueError, match=r"supports \[2, 4, 8, 16, 32\] codebooks, got 5"):
        codec.set_num_codebooks(5)
    state = reference.state_dict()
    del state["decoder.model.0.conv.conv.bias"]
    state["encoder.model.0.conv.conv.weight_v"] = torch.zeros(3, 1, 7)
    torch.save(state, tmp_path / "broken.th")
    with pytest.raises(ValueError, match=r"missing keys: decoder\.model\.0\.conv\.conv\.bias.*"
                       r"misshaped.*weight_v: checkpoint \(3, 1, 7\)"):
        load_codec(f"encodec_24khz:{tmp_path / 'broken.th'}")


def test_torchaudio_stand_in_only_when_absent():
    stand_in = sys.modules.get("torchaudio")
    if stand_in is None or not type(stand_in).__name__ == "_MissingTorchaudio":
        pytest.skip("a real torchaudio is installed, so no stand-in was registered")
    with pytest.raises(ImportError, match="stand-in torchaudio"):
        stand_in.load("x.wav")
