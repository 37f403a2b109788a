"""Aligned token tensors for DSM training: manifest + codec + tokenizer -> `[S, T]` items.

Each item is one utterance laid out as the multistream LM reads it (rows per
`dsm.streams.spec.task_streams`, row 0 text):

- asr:         [text (lags the audio by `text_delay` frames), input audio K]
- tts:         [text, generated audio K (lags the text by `audio_delay` frames)]
- translation: [target text (lags the source by `text_delay`), target audio K (lags by
               `audio_delay`), source audio K]

The text row is `dsm.streams.text_stream.words_to_stream` of the row's words (the exact
convention is in that module's docstring; ASR and translation write end markers, TTS only
start markers, none in the session's first `INITIAL_PADDING` frames). Audio rows are codec codes, shifted right by their stream's delay. Where
an audio stream must go on after its recording (ASR: the text still runs `text_delay`
frames after the speech), the wav is extended with silence (`dsm.streams.silence`)
*before* encoding, so those frames are real codes of silence. Cells that hold no data (before a shifted stream starts,
after a short item ends) are -1 (Kyutai: zero embedding, no loss) and False in `mask`.
Per-codebook acoustic delays (Kyutai `delays`) are not applied here: the LM applies them.

Long items are cropped to `max_frames` (a window whose start is drawn from the item index,
the seed and the epoch, never from hidden random state; or the start, `crop="start"`);
short ones are padded to `max_frames` with -1 / False. Word-shift statistics of the text
layout are kept per item (`stats`); `alignment_summary()` sums them over the dataset.

Codes are cached on disk: `cache_dir/<codec fingerprint>/<ab>/<key>.npy`, where the codec
fingerprint hashes the codec's class, rates, codebook count and every weight, and the key
hashes the audio file's bytes and the silence appended. A changed codec or a changed
audio file therefore misses the cache and is encoded again; nothing is ever reused stale.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from dsm.audio_io import read_audio
from dsm.recipes.data.manifest import ManifestRow, SkippedRow, read_manifest, summarize_skipped
from dsm.streams.silence import silence_pcm
from dsm.streams.spec import TASKS, StreamSpec, row_slices, task_streams
from dsm.streams.text_stream import AlignmentStats, frames_needed, words_to_stream
from dsm.streams.tokenizer import TextTokenizer
from dsm.streams.tts_text import INITIAL_PADDING

MASKED = -1  # Kyutai's "zero" token: zero embedding and no loss


class CodecLike(Protocol):
    """The part of the Codec contract (dsm.codecs) the dataset needs."""

    sample_rate: int
    frame_rate: float
    frame_size: int
    num_codebooks: int
    cardinality: int

    def encode(self, wav: torch.Tensor) -> torch.Tensor: ...


class DatasetError(ValueError):
    """The dataset cannot be built as asked (bad task, delays, codebooks, no usable row)."""


@dataclass
class AlignedItem:
    """One utterance's rows before cropping: tokens `[S, L]` and their mask."""

    codes: torch.Tensor
    mask: torch.Tensor
    stats: AlignmentStats = field(default_factory=AlignmentStats)


def codec_fingerprint(codec: Any) -> str:
    """A hex digest that changes when the codec's kind, settings or code space change:
    all its weights, or for a codec with `fingerprint_state()` (Mimi) those that decide
    the codes and their meaning, so improving a decoder alone keeps the fingerprint."""
    digest = hashlib.sha1()
    header = (
        f"{type(codec).__module__}.{type(codec).__qualname__}|{codec.sample_rate}|"
        f"{codec.frame_rate}|{codec.frame_size}|{codec.num_codebooks}|{codec.cardinality}"
    )
    digest.update(header.encode())
    custom = getattr(codec, "fingerprint", None)
    if custom is not None:
        digest.update(str(custom() if callable(custom) else custom).encode())
    if isinstance(codec, torch.nn.Module):
        state_of = getattr(codec, "fingerprint_state", codec.state_dict)
        for name, tensor in sorted(state_of().items()):
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file's bytes (read every time: a rewritten file never hits a stale entry)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_audio(path: str, sample_rate: int) -> torch.Tensor:
    """Mono float32 wav `[N]` at `sample_rate` (`dsm.audio_io.read_audio`)."""
    return torch.from_numpy(read_audio(path, sample_rate))


class CodeCache:
    """Codec codes `[K, T]` of audio files on disk, keyed by codec and audio content."""

    def __init__(self, codec: CodecLike, cache_dir: str | os.PathLike[str] | None) -> None:
        self.codec = codec
        self.fingerprint = codec_fingerprint(codec)
        self.root = None if cache_dir is None else Path(cache_dir) / self.fingerprint[:20]
        self.hits = 0
        self.misses = 0

    def codes(self, audio: str, tail_seconds: float = 0.0) -> torch.Tensor:
        """Codes `[K, T]` of `audio` followed by `tail_seconds` of silence."""
        key_text = f"{file_digest(audio)}|tail={tail_seconds:.6f}"
        key = hashlib.sha1(key_text.encode()).hexdigest()
        target = None if self.root is None else self.root / key[:2] / f"{key}.npy"
        if target is not None and target.exists():
            self.hits += 1
            return torch.from_numpy(np.load(target).astype(np.int64))
        self.misses += 1
        codes = self._encode(audio, tail_seconds)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_suffix(f".{os.getpid()}.tmp.npy")
            dtype = np.int16 if self.codec.cardinality <= 32767 else np.int32
            np.save(temporary, codes.numpy().astype(dtype))
            os.replace(temporary, target)  # atomic: concurrent workers never see half a file
        return codes

    def _encode(self, audio: str, tail_seconds: float) -> torch.Tensor:
        wav = load_audio(audio, self.codec.sample_rate)
        tail = round(tail_seconds * self.codec.sample_rate)
        if tail > 0:
            wav = torch.cat([wav, torch.from_numpy(silence_pcm(tail))])
        device = _device_of(self.codec)
        with torch.no_grad():
            codes = self.codec.encode(wav.view(1, 1, -1).to(device))
        if codes.dim() != 3 or codes.shape[:2] != (1, self.codec.num_codebooks):
            raise DatasetError(
                f"codec returned codes of shape {tuple(codes.shape)} for {audio}, "
                f"expected [1, {self.codec.num_codebooks}, T]"
            )
        return codes[0].to("cpu", torch.int64)


def _device_of(codec: Any) -> torch.device:
    if isinstance(codec, torch.nn.Module):
        for tensor in list(codec.parameters()) + list(codec.buffers()):
            return tensor.device
    return torch.device("cpu")


class AlignedDataset(torch.utils.data.Dataset):
    """Map-style dataset of aligned DSM token tensors (see the module docstring).

    `__getitem__` returns {"codes": int64 [S, max_frames], "mask": bool [S, max_frames],
    "length": valid frames, "id", "text", "stats"}. Without `max_frames` items keep their
    own length and `collate` pads the batch.
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        task: str,
        tokenizer: TextTokenizer,
        codec: CodecLike,
        num_codebooks: int | None = None,
        text_delay: int = 0,
        audio_delay: int = 0,
        max_frames: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        target_manifest: str | os.PathLike[str] | None = None,
        crop: str = "random",
        seed: int = 0,
    ) -> None:
        if task not in TASKS:
            raise DatasetError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
        if text_delay < 0 or audio_delay < 0:
            raise DatasetError("delays are frame counts >= 0")
        if crop not in ("random", "start"):
            raise DatasetError(f"crop must be 'random' or 'start', got {crop!r}")
        if max_frames is not None and max_frames < 1:
            raise DatasetError("max_frames must be >= 1")
        self.num_codebooks = codec.num_codebooks if num_codebooks is None else num_codebooks
        if not 1 <= self.num_codebooks <= codec.num_codebooks:
            raise DatasetError(
                f"num_codebooks={self.num_codebooks} but the codec has {codec.num_codebooks}"
            )
        if (task == "translation") != (target_manifest is not None):
            raise DatasetError("translation needs target_manifest (and only translation)")
        self.task = task
        self.tokenizer = tokenizer
        self.codec = codec
        self.frame_rate = float(codec.frame_rate)
        self.text_delay = text_delay
        self.audio_delay = audio_delay
        self.max_frames = max_frames
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.streams: list[StreamSpec] = task_streams(
            task, self.num_codebooks, text_delay, audio_delay
        )
        self.rows = row_slices(self.streams)
        self.cache = CodeCache(codec, cache_dir)
        self.items, self.skipped = self._read(manifest, target_manifest)
        if not self.items:
            raise DatasetError(
                f"no usable row in {manifest}: {summarize_skipped(self.skipped)}"
            )

    # --- reading ------------------------------------------------------------------------
    def _read(
        self, manifest: str | os.PathLike[str], target_manifest: str | os.PathLike[str] | None
    ) -> tuple[list[tuple[ManifestRow, ManifestRow | None]], list[SkippedRow]]:
        rows, skipped = read_manifest(manifest, require_words=True)
        if target_manifest is None:
            return [(row, None) for row in rows], skipped
        targets, target_skipped = read_manifest(target_manifest, require_words=True)
        skipped = skipped + target_skipped
        by_id = {row.id: row for row in targets if row.id is not None}
        pairs = []
        for row in rows:
            target = by_id.get(row.id) if row.id is not None else None
            if target is None:
                skipped.append(
                    SkippedRow(row.line, "no translation pair", f"id {row.id!r}", row.audio)
                )
            else:
                pairs.append((row, target))
        return pairs, skipped

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def alignment_summary(self) -> AlignmentStats:
        """Word shifts of every item's text layout (text only: no audio is read)."""
        total = AlignmentStats()
        for row, target in self.items:
            words = (target or row).words
            delay = 0 if self.task == "tts" else self.text_delay
            _, stats = words_to_stream(words, self.tokenizer, self.frame_rate, delay=delay,
                                       mark_ends=self.task != "tts")
            total.merge(stats)
        return total

    def precompute(self, progress: bool = True) -> None:
        """Encode (or find in the cache) every item's audio once, with a progress bar."""
        from tqdm import tqdm

        for index in tqdm(range(len(self)), desc="codec codes", disable=not progress):
            self.aligned(index)

    # --- layout -------------------------------------------------------------------------
    def aligned(self, index: int) -> AlignedItem:
        """The whole utterance as `[S, L]` tokens and mask (before cropping/padding)."""
        row, target = self.items[index]
        if self.task == "asr":
            return self._asr(row)
        if self.task == "tts":
            return self._tts(row)
        assert target is not None
        return self._translation(row, target)

    def _audio(self, row: ManifestRow, tail_frames: int = 0) -> torch.Tensor:
        codes = self.cache.codes(row.audio, tail_frames / self.frame_rate)
        return codes[: self.num_codebooks]

    def _assemble(self, parts: dict[str, tuple[torch.Tensor, int]], length: int,
                  stats: AlignmentStats) -> AlignedItem:
        """Place each stream (values `[rows, n]`, shifted right by a delay) in `[S, length]`."""
        total_rows = sum(spec.codebooks for spec in self.streams)
        codes = torch.full((total_rows, length), MASKED, dtype=torch.long)
        mask = torch.zeros((total_rows, length), dtype=torch.bool)
        for name, (values, shift) in parts.items():
            rows = self.rows[name]
            span = min(values.shape[-1], length - shift)
            codes[rows, shift: shift + span] = values[..., :span]
            mask[rows, shift: shift + span] = True
        return AlignedItem(codes, mask, stats)

    def _asr(self, row: ManifestRow) -> AlignedItem:
        needed = frames_needed(row.words, self.tokenizer, self.frame_rate, self.text_delay)
        audio_frames = _frames(row.duration, self.frame_rate)
        tail = max(0, needed - audio_frames)  # silence so the audio lasts as long as the text
        audio = self._audio(row, tail)
        length = max(audio.shape[-1], needed)
        text, stats = words_to_stream(row.words, self.tokenizer, self.frame_rate,
                                      num_frames=length, delay=self.text_delay)
        return self._assemble({"text": (text[None], 0), "audio": (audio, 0)}, length, stats)

    def _tts(self, row: ManifestRow) -> AlignedItem:
        audio = self._audio(row)
        needed = frames_needed(row.words, self.tokenizer, self.frame_rate, 0, mark_ends=False,
                               first_marker=INITIAL_PADDING)
        length = max(audio.shape[-1] + self.audio_delay, needed)
        text, stats = words_to_stream(row.words, self.tokenizer, self.frame_rate,
                                      num_frames=length, mark_ends=False,
                                      first_marker=INITIAL_PADDING)
        return self._assemble(
            {"text": (text[None], 0), "audio": (audio, self.audio_delay)}, length, stats
        )

    def _translation(self, source: ManifestRow, target: ManifestRow) -> AlignedItem:
        target_audio = self._audio(target)
        needed = frames_needed(target.words, self.tokenizer, self.frame_rate, self.text_delay)
        length = max(needed, target_audio.shape[-1] + self.audio_delay)
        source_frames = _frames(source.duration, self.frame_rate)
        source_audio = self._audio(source, max(0, length - source_frames))
        length = max(length, source_audio.shape[-1])
        text, stats = words_to_stream(target.words, self.tokenizer, self.frame_rate,
                                      num_frames=length, delay=self.text_delay)
        return self._assemble(
            {"text": (text[None], 0), "target_audio": (target_audio, self.audio_delay),
             "source_audio": (source_audio, 0)},
            length, stats,
        )

    # --- items --------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.aligned(index)
        codes, mask = item.codes, item.mask
        length = codes.shape[-1]
        if self.max_frames is not None:
            if length > self.max_frames:
                start = self._crop_start(index, length - self.max_frames)
                codes = codes[:, start: start + self.max_frames]
                mask = mask[:, start: start + self.max_frames]
                length = self.max_frames
            elif length < self.max_frames:
                codes, mask = pad_frames(codes, mask, self.max_frames)
        row, _ = self.items[index]
        return {"codes": codes, "mask": mask, "length": length, "id": row.id,
                "text": row.text, "stats": item.stats}

    def _crop_start(self, index: int, slack: int) -> int:
        if self.crop == "start":
            return 0
        return random.Random(f"{self.seed}|{self.epoch}|{index}").randint(0, slack)


def _frames(seconds: float, frame_rate: float) -> int:
    return int(np.ceil(seconds * frame_rate - 1e-9))


def pad_frames(
    codes: torch.Tensor, mask: torch.Tensor, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad `[S, L]` tokens with -1 and the mask with False up to `frames`."""
    missing = frames - codes.shape[-1]
    if missing < 0:
        raise ValueError(f"cannot pad {codes.shape[-1]} frames down to {frames}")
    codes = torch.nn.functional.pad(codes, (0, missing), value=MASKED)
    mask = torch.nn.functional.pad(mask, (0, missing), value=False)
    return codes, mask


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: codes `[B, S, T]` and mask `[B, S, T]`, padded to the longest item."""
    frames = max(item["codes"].shape[-1] for item in items)
    padded = [pad_frames(item["codes"], item["mask"], frames) for item in items]
    return {
        "codes": torch.stack([codes for codes, _ in padded]),
        "mask": torch.stack([mask for _, mask in padded]),
        "lengths": torch.tensor([item["length"] for item in items]),
        "ids": [item["id"] for item in items],
        "texts": [item["text"] for item in items],
    }
