"""The `dsm` command.

Each subcommand lives in the module that owns its work; the module exposes
`HELP: str`, `add_arguments(parser)` and `main(args) -> int`. Grouped commands
(`dsm bench codec`, `dsm data synth`) are two-level entries of the same table.
A command whose module is not part of this build is left out of `--help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# command path -> module implementing it
COMMANDS: dict[tuple[str, ...], str] = {
    ("transcribe",): "dsm.streaming.cmd_transcribe",
    ("speak",): "dsm.streaming.cmd_speak",
    ("translate",): "dsm.streaming.cmd_translate",
    ("serve",): "dsm.streaming.cmd_serve",
    ("mic",): "dsm.streaming.cmd_mic",
    ("train",): "dsm.recipes.cmd_train",
    ("eval",): "dsm.recipes.cmd_eval",
    ("ship",): "dsm.recipes.ship",
    ("data", "synth"): "dsm.recipes.cmd_synth",
    ("data", "tokenizer"): "dsm.streams.cmd_tokenizer",
    ("data", "perturb"): "dsm.recipes.cmd_perturb",
    ("data", "merge"): "dsm.recipes.cmd_merge",
    ("data", "codes"): "dsm.recipes.cmd_codes",
    ("bench", "codec"): "dsm.codecs.cmd_bench",
    ("bench", "lm"): "dsm.streaming.cmd_bench_lm",
    ("bench", "serve"): "dsm.streaming.cmd_bench_serve",
    ("demo",): "dsm.cmd_demo",
}

GROUP_HELP = {
    "data": "make data: synthesized aligned corpora, tokenizers, codec-code caches",
    "bench": "benchmarks that print ratios against a reference measured in the same run",
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            return None  # this command is not part of the build
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsm",
        description="Streaming speech with Delayed Streams Modeling: ASR, TTS, translation, "
        "serving and training.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name in COMMANDS.items():
        module = _load(module_name)
        if module is None:
            continue
        if len(path) == 1:
            sub = top.add_parser(
                path[0], help=module.HELP, description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        else:
            group, name = path
            if group not in groups:
                group_parser = top.add_parser(group, help=GROUP_HELP[group])
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="WHAT")
                groups[group].required = True
            sub = groups[group].add_parser(
                name, help=module.HELP, description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        module.add_arguments(sub)
        sub.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
