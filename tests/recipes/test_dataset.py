"""Aligned dataset: task layouts, delays, crop/pad with masks, on-disk code cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsm.recipes.data.dataset import (
    MASKED,
    AlignedDataset,
    DatasetError,
    codec_fingerprint,
    collate,
    load_audio,
)
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import Word, stream_to_words
from dsm.streams.tokenizer import TextTokenizer

FILE_RATE = 16000  # written at 16 kHz, the toy codec runs at 8 kHz: exercises resampling
FR = 12.5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def speech(path: Path, words: list[Word], seconds: float, seed: int) -> None:
    """Noise bursts where the words are, silence elsewhere."""
    rng = np.random.default_rng(seed)
    wav = np.zeros(int(seconds * FILE_RATE), dtype=np.float32)
    for word in words:
        a, b = int(word.start * FILE_RATE), int(word.end * FILE_RATE)
        wav[a:b] = 0.3 * rng.standard_normal(b - a).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, FILE_RATE)


UTTERANCES = {
    "u0": (2.0, [Word("the", 0.2, 0.4), Word("cat", 0.4, 0.9), Word("sat", 1.2, 1.6)]),
    "u1": (3.1, [Word("bonjour", 0.5, 1.1), Word("le", 1.1, 1.3), Word("chat", 1.3, 2.0),
                 Word("noir", 2.2, 2.9)]),
    "u2": (1.0, [Word("river", 0.3, 0.8)]),
}


def make_manifest(folder: Path, utterances: dict = UTTERANCES, name: str = "train.jsonl",
                  extra_rows: tuple = ()) -> Path:
    rows = []
    for index, (uid, (seconds, words)) in enumerate(utterances.items()):
        audio = folder / "audio" / f"{name}.{uid}.wav"
        speech(audio, words, seconds, seed=index)
        rows.append({"audio": str(audio.relative_to(folder)), "duration": seconds,
                     "text": " ".join(w.word for w in words), "id": uid, "lang": "en",
                     "speaker": "s", "words": [w.__dict__ for w in words]})
    manifest = folder / name
    manifest.write_text("\n".join(json.dumps(r) for r in [*rows, *extra_rows]) + "\n")
    return manifest


def expected_codes(codec: ToyCodecForTests, audio: str, tail_frames: int = 0) -> torch.Tensor:
    wav = load_audio(audio, codec.sample_rate)
    wav = torch.cat([wav, torch.zeros(tail_frames * codec.frame_size)])
    return codec.encode(wav.view(1, 1, -1))[0]


def test_asr_layout_text_after_audio(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    codec = ToyCodecForTests(sample_rate=8000, num_codebooks=4)
    data = AlignedDataset(make_manifest(tmp_path), "asr", tokenizer, codec, num_codebooks=3,
                          text_delay=6, max_frames=60, crop="start")
    assert len(data) == 3 and [s.name for s in data.streams] == ["text", "audio"]
    for index, (uid, (seconds, words)) in enumerate(UTTERANCES.items()):
        item = data[index]
        codes, mask, length = item["codes"], item["mask"], item["length"]
        assert codes.shape == mask.shape == (1 + 3, 60) and item["id"] == uid
        # the text row reads back as the words, times within half a frame (delay undone)
        back = stream_to_words(codes[0, :length], tokenizer, FR, delay=6)
        assert [w.word for w in back] == [w.word for w in words]
        for original, read in zip(words, back):
            assert abs(read.start - original.start) <= 0.5 / FR + 1e-6
            assert abs(read.end - original.end) <= 0.5 / FR + 1e-6
        # the audio rows are the codec's codes (3 of 4 codebooks), silence appended so the
        # audio lasts as long as the delayed text
        row, _ = data.items[index]
        audio_frames = int(np.ceil(seconds * FR))
        reference = expected_codes(codec, row.audio, max(0, length - audio_frames))[:3]
        assert torch.equal(codes[1:, :length], reference[:, :length])
        assert length >= audio_frames and length >= 6
        # padding after the item: -1 and masked
        assert bool(mask[:, :length].all()) and not bool(mask[:, length:].any())
        assert bool((codes[:, length:] == MASKED).all())


def test_tts_layout_audio_after_text(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    codec = ToyCodecForTests(sample_rate=8000)
    data = AlignedDataset(make_manifest(tmp_path), "tts", tokenizer, codec, audio_delay=16,
                          max_frames=80, crop="start")
    item = data[1]
    codes, mask, length = item["codes"], item["mask"], item["length"]
    seconds, words = UTTERANCES["u1"]
    audio = expected_codes(codec, data.items[1][0].audio)
    assert length == audio.shape[-1] + 16
    assert torch.equal(codes[1:, 16:length], audio)
    assert bool((codes[1:, :16] == MASKED).all()) and not bool(mask[1:, :16].any())
    assert bool(mask[0, :length].all())  # text (pads included) is a target everywhere
    # TTS text carries start markers only, one per word, with no lag
    assert int((codes[0, :length] == 0).sum()) == len(words)
    back = stream_to_words(codes[0, :length], tokenizer, FR)
    assert [round(w.start * FR) for w in back] == [round(w.start * FR) for w in words]


def test_translation_pairs_by_id(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    source = make_manifest(tmp_path, {k: UTTERANCES[k] for k in ("u0", "u2")}, "src.jsonl")
    target = make_manifest(tmp_path, {"u0": UTTERANCES["u1"]}, "tgt.jsonl")
    codec = ToyCodecForTests(sample_rate=8000, num_codebooks=2)
    data = AlignedDataset(source, "translation", tokenizer, codec, text_delay=10,
                          audio_delay=12, target_manifest=target)
    assert len(data) == 1
    assert [(s.reason, s.detail) for s in data.skipped] == [("no translation pair", "id 'u2'")]
    item = data[0]
    codes, length = item["codes"], item["length"]
    assert codes.shape[0] == 1 + 2 + 2 and item["text"] == "the cat sat"
    target_words = UTTERANCES["u1"][1]
    back = stream_to_words(codes[0], tokenizer, FR, delay=10)
    assert [w.word for w in back] == [w.word for w in target_words]
    target_audio = expected_codes(codec, data.items[0][1].audio)
    assert torch.equal(codes[1:3, 12:12 + target_audio.shape[-1]], target_audio)
    assert bool((codes[1:3, :12] == MASKED).all())
    source_audio = expected_codes(codec, data.items[0][0].audio,
                                  length - int(np.ceil(2.0 * FR)))
    assert torch.equal(codes[3:5], source_audio[:, :length])
    with pytest.raises(DatasetError, match="target_manifest"):
        AlignedDataset(source, "translation", tokenizer, codec)


def test_crop_is_deterministic_per_epoch_and_pads_short_items(
    tmp_path: Path, tokenizer: TextTokenizer
) -> None:
    codec = ToyCodecForTests(sample_rate=8000)
    manifest = make_manifest(tmp_path)
    full = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6)
    crop = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6, max_frames=20)
    whole = full[1]["codes"]
    assert whole.shape[-1] > 20
    windows = []
    for epoch in range(6):
        crop.set_epoch(epoch)
        first, again = crop[1]["codes"], crop[1]["codes"]
        assert torch.equal(first, again) and first.shape[-1] == 20
        starts = [s for s in range(whole.shape[-1] - 19) if torch.equal(whole[:, s:s + 20], first)]
        assert starts
        windows.append(starts[0])
    assert len(set(windows)) > 1  # the window moves between epochs
    short = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6, max_frames=200)
    item = short[2]
    assert item["codes"].shape[-1] == 200 and not bool(item["mask"][:, item["length"]:].any())
    batch = collate([full[0], full[1]])
    assert batch["codes"].shape == (2, 1 + 4, whole.shape[-1])
    assert batch["lengths"].tolist() == [full[0]["length"], whole.shape[-1]]
    assert not bool(batch["mask"][0, :, full[0]["length"]:].any())


def test_code_cache_hits_and_invalidation(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    manifest = make_manifest(tmp_path)
    cache = tmp_path / "cache"
    codec = ToyCodecForTests(sample_rate=8000, seed=1)
    first = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6, cache_dir=cache)
    first.precompute(progress=False)
    calls = codec.encode_calls
    assert calls == 3 and first.cache.misses == 3
    reference = first[0]["codes"]
    second = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6, cache_dir=cache)
    assert torch.equal(second[0]["codes"], reference)
    assert codec.encode_calls == calls and second.cache.hits == 1  # served from disk
    # a changed audio file misses the cache
    audio = Path(first.items[0][0].audio)
    data, rate = sf.read(audio, dtype="float32")
    sf.write(audio, data[::-1].copy(), rate)
    third = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6, cache_dir=cache)
    changed = third[0]["codes"]
    assert third.cache.misses == 1 and not torch.equal(changed[1:], reference[1:])
    # a different codec (other weights) uses another cache
    other = ToyCodecForTests(sample_rate=8000, seed=2)
    fourth = AlignedDataset(manifest, "asr", tokenizer, other, text_delay=6, cache_dir=cache)
    fourth[0]
    assert fourth.cache.misses == 1 and other.encode_calls == 1
    assert codec_fingerprint(other) != codec_fingerprint(codec)


class TinyModuleCodec(torch.nn.Module):
    sample_rate, frame_rate, frame_size, num_codebooks, cardinality = 8000, 12.5, 640, 2, 16

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(2, 640))
        self.register_buffer("_initialized", torch.tensor(True))

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav.shape[-1] // 640
        windows = wav[0, 0, : frames * 640].view(frames, 640)
        return (windows @ self.weight.T * 10).long().abs().T[None] % 16


def test_module_codec_fingerprint_follows_weights(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    codec = TinyModuleCodec()
    before = codec_fingerprint(codec)
    assert codec_fingerprint(codec) == before
    with torch.no_grad():
        codec.weight[0, 0] += 1.0
    assert codec_fingerprint(codec) != before
    data = AlignedDataset(make_manifest(tmp_path), "asr", tokenizer, codec, text_delay=3,
                          cache_dir=tmp_path / "c")
    assert data[0]["codes"].shape[0] == 3


def test_bad_rows_are_counted_and_bad_settings_named(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    bad = ({"audio": "audio/none.wav", "duration": 1.0, "text": "x", "id": "m",
            "words": [{"word": "x", "start": 0.1, "end": 0.2}]},
           {"audio": "audio/train.jsonl.u0.wav", "duration": 2.0, "text": "cat", "id": "n"})
    manifest = make_manifest(tmp_path, extra_rows=bad)
    codec = ToyCodecForTests(sample_rate=8000)
    data = AlignedDataset(manifest, "asr", tokenizer, codec, text_delay=6)
    assert len(data) == 3
    assert [s.reason for s in data.skipped] == ["missing audio", "no word timings"]
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(DatasetError, match="no usable row.*1 missing audio"):
        AlignedDataset(only_bad, "asr", tokenizer, codec)
    with pytest.raises(DatasetError, match="unknown task"):
        AlignedDataset(manifest, "music", tokenizer, codec)
    with pytest.raises(DatasetError, match="num_codebooks=9"):
        AlignedDataset(manifest, "asr", tokenizer, codec, num_codebooks=9)


def test_works_with_a_dataloader(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    codec = ToyCodecForTests(sample_rate=8000)
    data = AlignedDataset(make_manifest(tmp_path), "tts", tokenizer, codec, audio_delay=2,
                          max_frames=32)
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [b["codes"].shape for b in batches] == [(2, 5, 32), (1, 5, 32)]
    summary = data.alignment_summary()
    assert summary.num_words == sum(len(w) for _, w in UTTERANCES.values())
    assert summary.shifted_words == sum(data[i]["stats"].shifted_words for i in range(len(data)))
