"""The main job on the bundled default models (what `make demo` runs), with no download.

1. Codec: the bundled sample (dsm/assets/sample.wav, a sentence spoken by a voice held out
   of every training set) goes through the shipped codec frame by frame (80 ms), and the
   decoded audio is scored against the original (STOI, SI-SNR).
2. ASR: the sample is transcribed by the shipped ASR model as a live stream; words print
   with their start times as they come out, then the word error rate against the sample's
   reference text.
3. TTS: a sentence is spoken by the shipped TTS model into OUT/speech.wav, words printing
   with their times as the audio streams out; the shipped ASR model then says what it
   hears in it (the sentence is one of the TTS corpus's kind: the model knows that lexicon).

Each step says what it did. A default model that is not installed is reported as such
and its step is left out (the codec step then runs a small random-weight Mimi, to show the
streaming path); a step that fails makes the command fail.

`dsm demo --make-sample` rewrites the bundled sample (and its reference words) the way it
was made: the corpus synthesizer's held-out split with a fixed seed (voice, sentence, word times).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLE = ASSETS / "sample.wav"
SAMPLE_WORDS = ASSETS / "sample.json"
SAMPLE_SEED = 2026
TTS_TEXT = "It is thirty eight degrees in Lisbon tonight."  # the TTS knows its corpus's words


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out",
                        help="folder for the demo's audio files (default: demo_out)")
    parser.add_argument("--text", default=TTS_TEXT, help="sentence for the TTS step")
    parser.add_argument("--make-sample", action="store_true",
                        help="re-make dsm/assets/sample.wav and sample.json, then stop")


def main(args: argparse.Namespace) -> int:
    if args.make_sample:
        return _make_sample()
    if not SAMPLE.is_file() or not SAMPLE_WORDS.is_file():
        print(f"error: the bundled sample is missing ({SAMPLE}); reinstall dsm", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "codec": _codec_step(out),
        "asr": _asr_step(),
        "tts": _tts_step(out, args.text),
    }
    print("\nsummary: " + ", ".join(f"{name} {result}" for name, result in results.items()))
    return 1 if "failed" in results.values() else 0


def _heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _codec_step(out: Path) -> str:
    import numpy as np
    import soundfile
    import torch

    from dsm.codecs import load_codec
    from dsm.models.model_dir import read_audio
    from dsm.recipes.eval.metrics import si_snr, stoi

    _heading("codec: streaming round trip of the bundled sample")
    codec_dir = ASSETS / "codec"
    if codec_dir.is_dir():
        codec = load_codec(str(codec_dir)).eval()
    else:
        from dsm.codecs.testing import tiny_random_mimi

        print(f"no default codec is installed ({codec_dir}): using a small Mimi with RANDOM "
              "weights, so the decoded audio is noise; this shows the streaming path only")
        codec = tiny_random_mimi(0).eval()
    pcm = read_audio(SAMPLE, codec.sample_rate)
    frame_size = codec.frame_size
    delay = codec.delay_samples  # the decoder's output is this much behind its input
    num_frames = -(-(pcm.size + delay) // frame_size)
    padded = np.zeros(num_frames * frame_size, dtype=np.float32)
    padded[: pcm.size] = pcm
    frames = torch.from_numpy(padded).view(1, 1, num_frames, frame_size)
    decoded: list[torch.Tensor] = []
    started = time.perf_counter()
    with torch.no_grad(), codec.streaming(1):
        for index in range(num_frames):
            codes = codec.encode_step(frames[:, :, index])
            decoded.append(codec.decode_step(codes))
    elapsed = time.perf_counter() - started
    audio = torch.cat(decoded, dim=-1)[0, 0, delay: delay + pcm.size].numpy()
    path = out / "codec_roundtrip.wav"
    soundfile.write(path, audio, codec.sample_rate, subtype="PCM_16")
    seconds = pcm.size / codec.sample_rate
    print(f"{seconds:.2f} s of audio -> {num_frames} frames of {codec.num_codebooks} codes "
          f"({codec.frame_rate:g} Hz, {codec.cardinality} entries each), "
          f"{elapsed / seconds:.3f}x real time on CPU"
          + (f", output {1000 * delay / codec.sample_rate:g} ms behind by design" if delay else ""))
    print(f"STOI {stoi(audio, pcm, codec.sample_rate):.3f}, "
          f"SI-SNR {si_snr(audio, pcm):.1f} dB; wrote {path}")
    return "ok" if codec_dir.is_dir() else "ok (random weights)"


def _asr_step() -> str:
    from dsm.models.model_dir import installed_default
    from dsm.recipes.eval.metrics import corpus_cer, corpus_wer

    _heading("ASR: streaming transcription of the bundled sample (start time, word)")
    if installed_default("asr") is None:
        print(f"no default ASR model is installed ({ASSETS / 'asr'})")
        return "not installed"
    hypothesis = _transcript(SAMPLE, echo=True)
    if hypothesis is None:
        return "failed"
    reference = json.loads(SAMPLE_WORDS.read_text())["text"]
    print(f"reference: {reference}")
    print(f"WER {corpus_wer([reference], [hypothesis]):.1%}, "
          f"CER {corpus_cer([reference], [hypothesis]):.1%}")
    return "ok"


def _tts_step(out: Path, text: str) -> str:
    from dsm.cli import main as dsm_main
    from dsm.models.model_dir import installed_default

    _heading(f"TTS: speaking {text!r} (start, end, word as the audio streams)")
    if installed_default("tts") is None:
        print(f"no default TTS model is installed ({ASSETS / 'tts'}); `dsm speak TEXT "
              "--model DIR` speaks with yours")
        return "not installed"
    if dsm_main(["speak", text, "-o", str(out / "speech.wav")]) != 0:
        return "failed"
    if installed_default("asr") is not None:  # how intelligible it was, by the other model
        from dsm.recipes.eval.metrics import corpus_wer

        heard = _transcript(out / "speech.wav", echo=False)
        if heard is None:
            return "failed"
        print(f"heard by the ASR model: {heard}")
        print(f"WER {corpus_wer([text], [heard]):.1%}")
    return "ok"


def _transcript(path: Path, echo: bool) -> str | None:
    """The words `dsm transcribe PATH` prints (streamed to stdout too when `echo`), joined;
    None when it fails."""
    import contextlib
    import io

    from dsm.cli import main as dsm_main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(buffer) if echo else buffer):
        code = dsm_main(["transcribe", str(path)])
    if code != 0:
        return None
    return " ".join(line.split(None, 1)[1] for line in buffer.getvalue().splitlines()
                    if line.strip())


class _Tee:
    """Write to stdout and keep a copy (the words print as they stream)."""

    def __init__(self, buffer) -> None:
        self.buffer = buffer
        self.stdout = sys.stdout

    def write(self, text: str) -> int:
        self.buffer.write(text)
        return self.stdout.write(text)

    def flush(self) -> None:
        self.stdout.flush()


def _make_sample() -> int:
    import soundfile

    from dsm.recipes.synth.corpus import Job, make_item

    # eval_fraction 1: the held-out split, so the voice is one no model was trained on
    job = Job(seed=SAMPLE_SEED, index=0, lang="en", parallel=False, engines=("espeak", "flite"),
              eval_fraction=1.0, sample_rate=24_000)
    (utterance,) = make_item(job)
    soundfile.write(SAMPLE, utterance.audio, 24_000, subtype="PCM_16")
    SAMPLE_WORDS.write_text(json.dumps(
        {"text": utterance.text, "speaker": utterance.speaker, "words": utterance.words},
        indent=1) + "\n")
    print(f"wrote {SAMPLE} ({utterance.audio.size / 24_000:.2f} s, held-out voice "
          f"{utterance.speaker}): {utterance.text!r}")
    return 0
