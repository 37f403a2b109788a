"""Translate speech in an audio file with a streaming translation model.

The source audio is fed frame by frame like a live stream; target words print as the model
writes them (timed on the source audio's clock), and with `-o OUT.wav` the target speech is
written when the model has audio heads.

Kyutai's Hibiki (`model_type: "hibiki"`) is conditioned on the description "very_good";
`--cfg-coef 3` steers it away from "very_bad" too (classifier-free guidance, the batch run
twice), which brings the voice closer to the source speaker.

Example:
  dsm translate english.wav --model models/en-fr -o french.wav
  dsm translate french.wav --model kyutai/hibiki-1b-pytorch-bf16 --cfg-coef 3 -o english.wav
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="source audio file (any rate, mixed to mono)")
    parser.add_argument("--model", default=None, metavar="REF",
                        help="translation model: a model directory or a Hugging Face repo id "
                        "(kyutai/hibiki-1b-pytorch-bf16[@REVISION]); default: "
                        "dsm/assets/translation")
    parser.add_argument("-o", "--out", default=None, help="write the target speech here (wav)")
    parser.add_argument("--json", action="store_true", help="print the words as JSON at the end")
    parser.add_argument("--cfg-coef", type=float, default=None,
                        help="classifier-free guidance strength (default: the model's "
                        "lm_gen_config, else 1 = none; Hibiki: 3 is typical)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="run the step eagerly")


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile

    from dsm.commands.transcribe import load_model_and_audio, run_to_end
    from dsm.models.model_dir import ModelDirError
    from dsm.streaming.events import AudioEvent
    from dsm.streaming.translation import push_source

    try:
        model, pcm = load_model_and_audio(args.model, "translation", ("translation",),
                                          "translation", args.file, args.device)
    except (ModelDirError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sampling = {} if args.cfg_coef is None else {"cfg_coef": args.cfg_coef}
    with model.engine(1, cuda_graph=not args.no_cuda_graph, **sampling) as engine:
        session = model.translation_session(audio_out=args.out is not None)
        push_source(session, pcm, model.codec.sample_rate)
        words, others = run_to_end(engine, session, echo=not args.json)
    frames = [event.pcm for event in others if isinstance(event, AudioEvent)]
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
