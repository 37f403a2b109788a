"""Transcribe an audio file with a streaming ASR model; words print as they stream.

The file is read, mixed to mono and resampled to the model's rate, then fed frame by frame
(80 ms) through the model like a live stream; each word prints as soon as the model has
finished it, with its start time. `--json` prints the final words with start and end times.
`--server URL` sends the file to a running `dsm serve` instead (Kyutai's protocol).

Examples:
  dsm transcribe speech.wav --model models/asr
  dsm transcribe speech.wav --model models/asr --json
  dsm transcribe speech.wav --model kyutai/stt-1b-en_fr     # a Hugging Face repo id
  dsm transcribe speech.wav --server ws://127.0.0.1:8080 --rtf 1
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from dsm.streaming.engine import BatchedEngine, Session
    from dsm.streaming.events import Event
    from dsm.streaming.model_dir import ModelDir



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="audio file (wav, flac, ...; any rate, mixed to mono)")
    parser.add_argument("--model", default=None, metavar="REF",
                        help="ASR model: a model directory or a Hugging Face repo id "
                        "(kyutai/stt-1b-en_fr[@REVISION]); default: the shipped model in "
                        "dsm/assets/asr")
    parser.add_argument("--json", action="store_true",
                        help="print the words as JSON [{word, start, end}] at the end")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run the step eagerly")
    parser.add_argument("--server", default=None,
                        help="transcribe through a running `dsm serve` at this URL instead")
    parser.add_argument("--rtf", type=float, default=None,
                        help="with --server: send audio at this multiple of real time")
    parser.add_argument("--api-key", default=None, help="with --server: the server's API key")


def main(args: argparse.Namespace) -> int:
    if args.server:
        return _remote(args)
    from dsm.models.model_dir import ModelDirError

    try:
        model, pcm = load_model_and_audio(args.model, "asr", ("asr", "translation"),
                                          "speech-to-text", args.file, args.device)
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with model.engine(1, cuda_graph=not args.no_cuda_graph) as engine:
        session = model.asr_session()
        session.push_pcm(pcm)
        session.end()
        words, _ = run_to_end(engine, session, echo=not args.json)
    if args.json:
        print(json.dumps(words, ensure_ascii=False, indent=1))
    return 0


def load_model_and_audio(model: str | None, default: str, tasks: tuple[str, ...], what: str,
                         file: str, device: str | None) -> tuple[ModelDir, np.ndarray]:
    """The model `model` (a directory or Hugging Face repo id; None: the shipped `default`,
    see `resolve_model`) on `device` (None: cuda
    if present), which must do one of `tasks` (else "not a `what` one"), and `file` read
    as mono float32 at its codec's rate. Raises ModelDirError, ValueError or
    FileNotFoundError with a message for the user."""
    import torch

    from dsm.models.model_dir import ModelDirError, read_audio, resolve_model
    from dsm.streaming.model_dir import load_model_dir

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = load_model_dir(resolve_model(model, default), device=device)
    if model_dir.task not in tasks:
        raise ModelDirError(f"{model_dir.path} is a {model_dir.task} model, not a {what} one")
    return model_dir, read_audio(file, model_dir.codec.sample_rate)


def run_to_end(engine: BatchedEngine, session: Session, echo: bool
               ) -> tuple[list[dict[str, object]], list[Event]]:
    """Run `session` (its input pushed and ended) in `engine` to its end; returns its words
    as the `--json` rows {word, start, end} (each printed as it comes when `echo`) and its
    other events. Raises `StreamFailed` if the stream fails."""
    from dsm.api import words_of
    from dsm.streaming.batch import TimedEvent, run_streams
    from dsm.streaming.events import EndWordEvent, WordEvent

    def show(_: int, timed: TimedEvent) -> None:
        if echo and isinstance(timed.event, WordEvent):
            print_word(timed.event.start_time, timed.event.text)

    (result,) = run_streams(engine, 1, lambda _: session, on_event=show)
    rows: list[dict[str, object]] = []
    for word in words_of(result, engine.frame_rate):
        rows.append({"word": word.text, "start": round(word.start, 3)})
        if word.end is not None:
            rows[-1]["end"] = round(word.end, 3)
    others = [t.event for t in result.events
              if not isinstance(t.event, WordEvent | EndWordEvent)]
    return rows, others


def print_word(start_time: float, text: str) -> None:
    """One word as the commands print it while streaming: its start time, then the word."""
    print(f"{start_time:8.2f}  {text}", flush=True)


def _remote(args: argparse.Namespace) -> int:
    from dsm.streaming.serve import clients

    def show(word: object) -> None:
        if not args.json:
            print_word(word.start_time, word.text)  # type: ignore[attr-defined]

    try:
        words = clients.transcribe_remote(args.server, args.file, rtf=args.rtf,
                                          api_key=args.api_key, on_word=show)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        rows = [{"word": w.text, "start": round(w.start_time, 3),
                 "end": None if w.stop_time is None else round(w.stop_time, 3)} for w in words]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    return 0
