"""Transcribe an audio file with a streaming ASR model; words print as they stream.

The file is read, mixed to mono and resampled to the model's rate, then fed frame by frame
(80 ms) through the model like a live stream; each word prints as soon as the model has
finished it, with its start time. `--json` prints the final words with start and end times.
`--server URL` sends the file to a running `dsm serve` instead (Kyutai's protocol).

Examples:
  dsm transcribe speech.wav --model models/asr
  dsm transcribe speech.wav --model models/asr --json
  dsm transcribe speech.wav --server ws://127.0.0.1:8080 --rtf 1
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "transcribe an audio file (streaming ASR), printing words as they come"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="audio file (wav, flac, ...; any rate, mixed to mono)")
    parser.add_argument("--model", default=None,
                        help="ASR model directory (default: the shipped model in dsm/assets/asr)")
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
    import torch

    from dsm.streaming.events import EndWordEvent, WordEvent
    from dsm.streaming.model_dir import ModelDirError, load_model_dir, read_audio, resolve_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model_dir(resolve_model(args.model, "asr"), device=device)
        if model.task not in ("asr", "translation"):
            raise ModelDirError(f"{model.path} is a {model.task} model, not a speech-to-text one")
        pcm = read_audio(args.file, model.codec.sample_rate)
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    words: list[dict[str, object]] = []
    with model.engine(1, cuda_graph=not args.no_cuda_graph) as engine:
        session = model.asr_session()
        engine.attach(session)
        session.push_pcm(pcm)
        session.end()
        while engine.ready():
            for event in engine.step().get(session, []):
                if isinstance(event, WordEvent):
                    words.append({"word": event.text, "start": round(event.start_time, 3)})
                    if not args.json:
                        print(f"{event.start_time:8.2f}  {event.text}", flush=True)
                elif isinstance(event, EndWordEvent) and words and "end" not in words[-1]:
                    words[-1]["end"] = round(event.stop_time, 3)
    if args.json:
        print(json.dumps(words, ensure_ascii=False, indent=1))
    return 0


def _remote(args: argparse.Namespace) -> int:
    from dsm.streaming import clients

    def show(word: object) -> None:
        if not args.json:
            print(f"{word.start_time:8.2f}  {word.text}", flush=True)  # type: ignore[attr-defined]

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
