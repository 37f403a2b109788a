"""Speak text with a streaming TTS model and write the audio to a wav file.

The text goes in word by word, as it would from a live source, and audio frames come out
as the model speaks; each word prints with its time span in the output audio as soon as
it is known. `--server URL` uses a running `dsm serve` instead (Kyutai's protocol), and
can `--play` the audio as it arrives.

Kyutai's DSM TTS models (kyutai/tts-1.6b-en_fr, ...) speak with a voice: `--voice` takes a
voice name as Kyutai's server does (looked up in the model's voices/ folder and in the
cached kyutai/tts-voices repo) or a voice .safetensors file; give it twice for a dialogue's
two speakers. `--cfg-alpha` is the guidance strength (Kyutai's name; a CFG-distilled model
is told the value, others run guided by batch doubling) and `--n-q` how many audio
codebooks to generate.

Examples:
  dsm speak "Hello there, how are you?" -o hello.wav --model models/tts
  dsm speak "Hello" -o hi.wav --model kyutai/tts-1.6b-en_fr \\
      --voice expresso/ex03-ex01_happy_001_channel1_334s.wav --cfg-alpha 2 --n-q 16
  dsm speak "Bonjour" -o out.wav --server ws://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import sys


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
    parser.add_argument("--voice", action="append", default=None, metavar="NAME|FILE",
                        help="Kyutai TTS models: the voice (a name as in kyutai/tts-voices, or "
                        "a .safetensors voice file); repeat for more speakers")
    parser.add_argument("--cfg-alpha", type=float, default=None,
                        help="guidance strength (Kyutai's CFG-distilled models: one of the "
                        "values they were trained for, default 2.0; others: classifier-free "
                        "guidance by batch doubling, default off)")
    parser.add_argument("--n-q", type=int, default=None,
                        help="Kyutai TTS models: audio codebooks to generate (default all)")
    parser.add_argument("--temp", type=float, default=None,
                        help="sampling temperature of text and audio (0: greedy; default the "
                        "model's)")
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

    from dsm.models.model_dir import ModelDirError, resolve_model
    from dsm.streaming.batch import StreamFailed, TimedEvent, run_streams
    from dsm.streaming.events import AudioEvent, TextEvent
    from dsm.streaming.model_dir import load_model_dir
    from dsm.streams.tts_text import TextInputError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    voice = args.voice[0] if args.voice and len(args.voice) == 1 else args.voice
    try:
        model = load_model_dir(resolve_model(args.model, "tts"), device=device)
        if model.task != "tts":
            raise ModelDirError(f"{model.path} is a {model.task} model, not a TTS one")
        engine_options, session_options = model.guidance(args.cfg_alpha)
        if args.n_q is not None:
            engine_options["n_q"] = args.n_q
        if args.temp is not None:
            engine_options.update(temp=args.temp, temp_text=args.temp)
        session = model.tts_session(seed=args.seed, voice=voice, **session_options)
        for word in args.text.split():  # word by word, as a live source would send it
            session.push_text(word + " ")
        session.end_text()
        engine = model.engine(1, cuda_graph=not args.no_cuda_graph, **engine_options)
    except (ModelDirError, TextInputError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def show(_: int, timed: TimedEvent) -> None:
        event = timed.event
        if isinstance(event, TextEvent):
            print(f"{event.start_s:8.2f} {event.stop_s:8.2f}  {event.text}", flush=True)

    try:
        with engine:
            result, = run_streams(engine, 1, lambda _: session, show)
    except StreamFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    frames = [event.pcm for event in result.of(AudioEvent)]
    audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    soundfile.write(args.out, audio, model.codec.sample_rate, subtype="PCM_16")
    print(f"wrote {args.out}: {audio.size / model.codec.sample_rate:.2f} s", file=sys.stderr)
    return 0


def _remote(args: argparse.Namespace) -> int:
    from dsm.streaming.serve import clients

    if args.out is None and not args.play:
        print("error: with --server, give -o OUT.wav and/or --play", file=sys.stderr)
        return 2

    def show(event: object) -> None:
        print(f"{event.start_s:8.2f} {event.stop_s:8.2f}  {event.text}", flush=True)  # type: ignore[attr-defined]

    if args.voice and len(args.voice) > 1:
        print("error: with --server, give one --voice (the server's voice parameter)",
              file=sys.stderr)
        return 2
    if args.n_q is not None:
        print("error: --n-q is the server's setting (dsm serve --tts-n-q)", file=sys.stderr)
        return 2
    params = {name: str(value) for name, value in (
        ("voice", args.voice[0] if args.voice else None), ("cfg_alpha", args.cfg_alpha),
        ("temperature", args.temp), ("seed", args.seed)) if value is not None}
    try:
        clients.speak_remote(args.server, args.text, out_wav=args.out, play=args.play,
                             api_key=args.api_key, on_text=show, params=params)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
