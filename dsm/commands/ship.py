"""`dsm ship`: copy trained models into the layout of dsm/assets (the default models).

  dsm ship codec RUN/codec dsm/assets/codec --dtype float16
  dsm ship codec RUN/checkpoints/step_00000800.pt dsm/assets/codec   (a run in progress)
  dsm ship asr RUN/model dsm/assets/asr --dtype float16   (also tts, translation)
  dsm ship asr RUN2/model dsm/assets/asr --average RUN1/model   (the two models' mean)

A codec is re-saved, optionally in float16 (half the bytes; loading casts back to float32).
A model directory is copied, its LM weights optionally cast the same way (config.json then
records `weights_dtype`, and `load_model_dir` computes in float32), without its own codec/
folder: its config.json names the shared codec instead
(`--codec`, relative to the target; default ../codec) and records `codec_fingerprint`, the
weights fingerprint of the codec it was trained with, so that loading it with any other
codec is caught instead of producing noise. Ship the codec first and train the models on
the shipped copy (task.codec = "dsm/assets/codec"): the fingerprints then agree.

`--average DIR ...` ships the mean of the source's LM weights and those of other model
directories of the same shape (a weight average, e.g. of two stages of one model: it can
generalise better than either). They must share the tokenizer and the codec (by weights
fingerprint); the config is the source's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsm.recipes.ship import DTYPES, KINDS, ship_codec, ship_model_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("kind", choices=KINDS, help="what SOURCE holds")
    parser.add_argument("source", help="a codec directory (or spec) or a codec run's "
                        "checkpoint (RUN/checkpoints/step_N.pt); or a model directory written "
                        "by `dsm train` (RUN/model)")
    parser.add_argument("target", help="the directory to write, e.g. dsm/assets/asr")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="store the floating-point weights in this type (float16: half "
                        "the bytes; default: as trained); they load back as float32")
    parser.add_argument("--average", nargs="+", default=[], metavar="DIR",
                        help="models only: ship the mean of SOURCE's weights and these model "
                        "directories' (same shape, tokenizer and codec)")
    parser.add_argument("--codec", default="../codec",
                        help="models only: the codec the shipped config names, relative to "
                        "TARGET (default: ../codec, the shared dsm/assets/codec)")


def main(args: argparse.Namespace) -> int:
    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        if args.kind == "codec":
            if args.average:
                raise ValueError("--average is for model directories, not codecs")
            written = ship_codec(args.source, args.target, dtype)
        else:
            written = ship_model_dir(args.source, args.target, args.codec, dtype, args.average)
    except (OSError, ValueError) as error:
        print(f"dsm ship: error: {error}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(written).rglob("*") if f.is_file())
    print(f"dsm ship: {args.kind} written to {written} ({size / 2**20:.1f} MB)")
    return 0
