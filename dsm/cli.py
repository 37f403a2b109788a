"""The `dsm` command.

Each subcommand is a thin module of dsm/commands/ (arguments, printing, exit codes; the
work is done by the library it calls); the module exposes
`add_arguments(parser)` and `main(args) -> int`, its docstring is the command's
description, and its one-line help is in `COMMANDS` below. Grouped commands
(`dsm bench codec`, `dsm data synth`) are two-level entries of the same table.
Only the module of the command being run is imported, so `dsm --help` (and every
command's own start) does not pay for torch or the other commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# command path -> (module implementing it, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("transcribe",): ("dsm.commands.transcribe",
                      "transcribe an audio file (streaming ASR), printing words as they come"),
    ("speak",): ("dsm.commands.speak",
                 "speak text with a streaming TTS model into a wav file"),
    ("translate",): ("dsm.commands.translate",
                     "translate speech in an audio file (streaming), printing target words as "
                     "they come"),
    ("serve",): ("dsm.commands.serve",
                 "serve streaming ASR / TTS over websockets (Kyutai's protocol) and the browser "
                 "demo"),
    ("mic",): ("dsm.commands.mic",
               "live captions from the microphone through a streaming server"),
    ("train",): ("dsm.commands.train",
                 "train a codec, ASR, TTS or translation model from a TOML recipe "
                 "(torchrun-ready)"),
    ("eval",): ("dsm.commands.eval",
                "evaluate ASR / TTS / codec / translation outputs (WER, latency, BLEU, SI-SNR, "
                "STOI)"),
    ("ship",): ("dsm.commands.ship",
                "copy a trained codec or model directory into the default-model layout "
                "(dsm/assets)"),
    ("data", "synth"): ("dsm.commands.data_synth",
                        "synthesize a word-aligned speech corpus with espeak-ng, flite and "
                        "festival"),
    ("data", "text"): ("dsm.commands.data_text",
                       "sentences from real English and French text (Debian packages), "
                       "normalised, split train/eval by document"),
    ("data", "tokenizer"): ("dsm.commands.data_tokenizer",
                            "train a sentencepiece tokenizer from text files or manifests"),
    ("data", "perturb"): ("dsm.commands.data_perturb",
                          "speed-, tempo-, pitch-, treble-, formant- or random-EQ-perturbed "
                          "copies of a word-aligned corpus (more voices and rates)"),
    ("data", "merge"): ("dsm.commands.data_merge",
                        "merge manifests into one (filter by speaker, drop texts of another "
                        "manifest)"),
    ("data", "codes"): ("dsm.commands.data_codes",
                        "encode a recipe's corpus into its codec-code cache ahead of training "
                        "(N processes)"),
    ("bench", "codec"): ("dsm.commands.bench_codec",
                         "streaming Mimi encode+decode speed, ours vs moshi's (real-time factors "
                         "and ratio)"),
    ("bench", "lm"): ("dsm.commands.bench_lm",
                      "LM streaming steps/s: dsm's LMStreamer vs moshi's LMGen (same weights, "
                      "same run)"),
    ("bench", "serve"): ("dsm.commands.bench_serve",
                         "N concurrent real-time streaming clients against dsm serve: added "
                         "latency p50/p95"),
    ("demo",): ("dsm.commands.demo",
                "run the main job on the bundled default models (codec round trip, ASR, TTS)"),
}

GROUP_HELP = {
    "data": "make data: synthesized aligned corpora, tokenizers, codec-code caches",
    "bench": "benchmarks that print ratios against a reference measured in the same run",
}


def named_command(argv: list[str]) -> tuple[str, ...] | None:
    """The command path `argv` starts with (`("data", "synth")`), or None."""
    if argv and (argv[0],) in COMMANDS:
        return (argv[0],)
    if len(argv) > 1 and (argv[0], argv[1]) in COMMANDS:
        return (argv[0], argv[1])
    return None


def _load(path: tuple[str, ...]) -> ModuleType:
    module_name = COMMANDS[path][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise SystemExit(f"dsm {' '.join(path)}: not part of this build "
                             f"({module_name} is missing)") from None
        raise


def build_parser(only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, every command is listed but only that one's module is
    imported and its arguments defined (what `main` runs)."""
    parser = argparse.ArgumentParser(
        prog="dsm",
        description="Streaming speech with Delayed Streams Modeling: ASR, TTS, translation, "
        "serving and training.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (_, help_text) in COMMANDS.items():
        load = only is None or path == only
        module = _load(path) if load else None
        options = {"help": help_text, "formatter_class": argparse.RawDescriptionHelpFormatter}
        if module is not None:
            options["description"] = module.__doc__
        if len(path) == 1:
            sub = top.add_parser(path[0], **options)
        else:
            group, name = path
            if group not in groups:
                group_parser = top.add_parser(group, help=GROUP_HELP[group])
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="WHAT")
                groups[group].required = True
            sub = groups[group].add_parser(name, **options)
        if module is not None:
            module.add_arguments(sub)
            sub.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = named_command(argv)
    parser = build_parser(only) if only is not None else build_parser(only=("",))
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
