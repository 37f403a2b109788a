"""`dsm ship`: copy trained models into the layout of dsm/assets (the default models).

  dsm ship codec RUN/codec dsm/assets/codec --dtype float16
  dsm ship codec RUN/checkpoints/step_00000800.pt dsm/assets/codec   (a run in progress)
  dsm ship asr RUN/model dsm/assets/asr --dtype float16   (also tts, translation)

A codec is re-saved, optionally in float16 (half the bytes; loading casts back to float32).
A model directory is copied, its LM weights optionally cast the same way (config.json then
records `weights_dtype`, and `load_model_dir` computes in float32), without its own codec/
folder: its config.json names the shared codec instead
(`--codec`, relative to the target; default ../codec) and records `codec_fingerprint`, the
weights fingerprint of the codec it was trained with, so that loading it with any other
codec is caught instead of producing noise. Ship the codec first and train the models on
the shipped copy (task.codec = "dsm/assets/codec"): the fingerprints then agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

HELP = "copy a trained codec or model directory into the default-model layout (dsm/assets)"
KINDS = ("codec", "asr", "tts", "translation")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def ship_codec(source: str | Path, target: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Re-save the codec `source` (any `load_codec` spec, or a codec run's trainer
    checkpoint `.pt`) as the directory `target`."""
    from dsm.codecs import load_codec, save_codec
    from dsm.recipes.codec_task import codec_from_checkpoint

    source_path = Path(source)
    codec = (codec_from_checkpoint(source_path) if source_path.is_file()
             and source_path.suffix == ".pt" else load_codec(source))
    return save_codec(codec, target, dtype=dtype)  # replaces its two files


def ship_model_dir(source: str | Path, target: str | Path, codec: str = "../codec",
                   dtype: torch.dtype | None = None) -> Path:
    """Copy the model directory `source` to `target` without its codec; config.json names
    `codec` (a spec, or a path relative to `target`) and records the fingerprint of the
    codec `source` was made with. `dtype` stores the LM's floating weights in that type
    (recorded as `weights_dtype`). Files of a model directory already in `target` are
    replaced; nothing else there is touched."""
    from safetensors.torch import load_file, save_file

    from dsm.codecs import load_codec
    from dsm.recipes.dataset import codec_fingerprint
    from dsm.streaming.model_dir import codec_spec

    source, target = Path(source), Path(target)
    config_file = source / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{source} is not a model directory: config.json is missing")
    raw = json.loads(config_file.read_text())
    raw["codec_fingerprint"] = codec_fingerprint(load_codec(codec_spec(source, raw)))
    raw["codec"] = codec
    target.mkdir(parents=True, exist_ok=True)
    weights = str(raw.get("moshi_name", "model.safetensors"))
    tokenizer = str(raw.get("tokenizer_name", "tokenizer.model"))
    if dtype is None:
        shutil.copy(source / weights, target / weights)
    else:
        state = load_file(str(source / weights))
        save_file({key: value.to(dtype) if value.is_floating_point() else value
                   for key, value in state.items()}, str(target / weights))
        raw["weights_dtype"] = str(dtype).removeprefix("torch.")
    shutil.copy(source / tokenizer, target / tokenizer)
    (target / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    return target


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
    parser.add_argument("--codec", default="../codec",
                        help="models only: the codec the shipped config names, relative to "
                        "TARGET (default: ../codec, the shared dsm/assets/codec)")


def main(args: argparse.Namespace) -> int:
    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        if args.kind == "codec":
            written = ship_codec(args.source, args.target, dtype)
        else:
            written = ship_model_dir(args.source, args.target, args.codec, dtype)
    except (OSError, ValueError) as error:
        print(f"dsm ship: error: {error}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(written).rglob("*") if f.is_file())
    print(f"dsm ship: {args.kind} written to {written} ({size / 2**20:.1f} MB)")
    return 0
