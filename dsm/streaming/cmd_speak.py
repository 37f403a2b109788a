"""Speak text with a streaming TTS model and write the audio to a wav file.

The text goes in word by word, as it would from a live source, and audio frames come out
as the model speaks; each word prints with its time span in the output audio as soon as
it is known. `--server URL` uses a running `dsm serve` instead (Kyutai's protocol), and
can `--play` the audio as it arrives.

Examples:
  dsm speak "Hello there, how are you?" -o hello.wav --model models/tts
  dsm speak "Bonjour" -o out.wav --server ws://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import sys

HELP = "speak text with a streaming TTS model into a wav file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to speak")
    parser.add_argument("-o", "--out", default=None, help="output wav file")
    parser.add_argument("--model", default=None, metavar="REF",
                        help="TTS model: a model directory or a Hugging Face repo id "
                        "(kyutai/stt-1b-en_fr[@REVISION]); default: the shipped model in "
                        "dsm/assets/tts")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run the step eagerly")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--server", default=None,
                        help="speak through a running `dsm serve` at this URL instead")
    parser.add_argument("--play", action="store_true",
                        help="with --server: play the audio as it arrives (needs sounddevice)")
    parser.add_argument("--api-key", default=None, help="with --server: the server's API key")


def main(args: argparse.Namespace) -> int:
    if not args.text.strip():
        print("error: the text is empty: nothing to speak", file=sys.stderr)
        return 2
    if args.server:
        return _remote(args)
    if args.out is None:
        print("error: -o OUT.wav is required (where to write the audio)", file=sys.stderr)
        return 2
    import numpy as np
    import soundfile
    import torch

    from dsm.streaming.events import AudioEvent, TextEvent
    from dsm.streaming.model_dir import ModelDirError, load_model_dir, resolve_model
    from dsm.streaming.tts import TextInputError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model_dir(resolve_model(args.model, "tts"), device=device)
        if model.task != "tts":
            raise ModelDirError(f"{model.path} is a {model.task} model, not a TTS one")
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frames: list[np.ndarray] = []
    with model.engine(1, cuda_graph=not args.no_cuda_graph) as engine:
        session = model.tts_session(seed=args.seed)
        engine.attach(session)
        try:
            for word in args.text.split():  # word by word, as a live source would send it
                session.push_text(word + " ")
            session.end_text()
        except TextInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        while engine.ready():
            for event in engine.step().get(session, []):
                if isinstance(event, AudioEvent):
                    frames.append(event.pcm)
                elif isinstance(event, TextEvent):
                    print(f"{event.start_s:8.2f} {event.stop_s:8.2f}  {event.text}", flush=True)
    audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    soundfile.write(args.out, audio, model.codec.sample_rate, subtype="PCM_16")
    print(f"wrote {args.out}: {audio.size / model.codec.sample_rate:.2f} s", file=sys.stderr)
    return 0


def _remote(args: argparse.Namespace) -> int:
    from dsm.streaming import clients

    if args.out is None and not args.play:
        print("error: with --server, give -o OUT.wav and/or --play", file=sys.stderr)
        return 2

    def show(event: object) -> None:
        print(f"{event.start_s:8.2f} {event.stop_s:8.2f}  {event.text}", flush=True)  # type: ignore[attr-defined]

    try:
        clients.speak_remote(args.server, args.text, out_wav=args.out, play=args.play,
                             api_key=args.api_key, on_text=show)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
