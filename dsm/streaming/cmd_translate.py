"""Translate speech in an audio file with a streaming translation model.

The source audio is fed frame by frame like a live stream; target words print as the model
writes them (timed on the source audio's clock), and with `-o OUT.wav` the target speech is
written when the model has audio heads.

Example:
  dsm translate english.wav --model models/en-fr -o french.wav
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "translate speech in an audio file (streaming), printing target words as they come"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="source audio file (any rate, mixed to mono)")
    parser.add_argument("--model", default=None,
                        help="translation model directory (default: dsm/assets/translation)")
    parser.add_argument("-o", "--out", default=None, help="write the target speech here (wav)")
    parser.add_argument("--json", action="store_true", help="print the words as JSON at the end")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run the step eagerly")


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile
    import torch

    from dsm.streaming.events import AudioEvent, EndWordEvent, WordEvent
    from dsm.streaming.model_dir import ModelDirError, load_model_dir, read_audio, resolve_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model_dir(resolve_model(args.model, "translation"), device=device)
        if model.task != "translation":
            raise ModelDirError(f"{model.path} is a {model.task} model, not a translation one")
        pcm = read_audio(args.file, model.codec.sample_rate)
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    words: list[dict[str, object]] = []
    frames: list[np.ndarray] = []
    with model.engine(1, cuda_graph=not args.no_cuda_graph) as engine:
        session = model.translation_session(audio_out=args.out is not None)
        engine.attach(session)
        session.push_pcm(pcm)
        # The target may run longer than the source (the model reads silence meanwhile; the
        # translation recipe trains it so): max(1 s, half the source) of silence to finish.
        rate = model.codec.sample_rate
        session.push_pcm(np.zeros(max(rate, pcm.size // 2), dtype=np.float32))
        session.end()
        while engine.ready():
            for event in engine.step().get(session, []):
                if isinstance(event, WordEvent):
                    words.append({"word": event.text, "start": round(event.start_time, 3)})
                    if not args.json:
                        print(f"{event.start_time:8.2f}  {event.text}", flush=True)
                elif isinstance(event, EndWordEvent) and words and "end" not in words[-1]:
                    words[-1]["end"] = round(event.stop_time, 3)
                elif isinstance(event, AudioEvent):
                    frames.append(event.pcm)
    if args.json:
        print(json.dumps(words, ensure_ascii=False, indent=1))
    if args.out is not None:
        if not frames:
            print("error: this model has no audio heads: no target speech to write",
                  file=sys.stderr)
            return 2
        soundfile.write(args.out, np.concatenate(frames), model.codec.sample_rate,
                        subtype="PCM_16")
    return 0
