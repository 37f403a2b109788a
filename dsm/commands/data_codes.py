"""Fill a recipe's codec-code cache before training: dsm data codes RECIPE.toml [--workers N]

ASR, TTS and translation recipes train on codec codes, which their datasets read from
`task.cache_dir` or encode on first use. Encoding inside training is serial and slow
(about 10 utterances a second per CPU thread for the default codec), and a new codec or a
new text delay (the ASR silence tail is part of the key) misses the whole cache. This
command encodes every row of the recipe's train (and valid) manifest in N processes, with
a progress bar, so that training then only reads the cache.

It builds the datasets exactly as `dsm train` does, from the same recipe and the same
`--set` overrides, so the cached entries are the ones training will look up. Rows already
cached are counted and left alone; a run can be stopped and started again. A row that
cannot be encoded (corrupt or unreadable audio) is reported with its file and reason and
the command exits with status 1 once every other row is done: nothing is skipped silently.

Examples:
  dsm data codes dsm/recipes/configs/asr-cpu.toml --workers 2 \\
      --set data.train_manifest='"data/asr-mix/h.jsonl"'
  dsm data codes dsm/recipes/configs/asr-cpu.toml --workers 8 --set task.text_delay_s=1.0
"""

from __future__ import annotations

import argparse
import sys
import time

from dsm.commands.arguments import positive_int
from dsm.recipes.data.codes import SPLITS, fill_cache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].split("\nExamples:")[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("recipe", metavar="RECIPE.toml", help="an asr, tts or translation recipe")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, as for dsm train (repeatable)",
    )
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="encoding processes, one CPU thread each (default 1)")
    parser.add_argument("--split", choices=(*SPLITS, "all"), default="all",
                        help="which manifest to encode (default: train, and valid if the "
                        "recipe names one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from dsm.recipes.config import RecipeError
    from dsm.recipes.data.manifest import ManifestError

    splits = SPLITS if args.split == "all" else (args.split,)
    started = time.monotonic()
    try:
        reports, cache_root = fill_cache(args.recipe, args.overrides, splits, args.workers,
                                         progress=not args.no_progress)
    except (RecipeError, ManifestError) as error:
        print(f"dsm data codes: error: {error}", file=sys.stderr)
        return 2
    minutes = (time.monotonic() - started) / 60
    for report in reports.values():
        print(f"{report.split}: {report.items} items, {report.hits} codes found in the cache, "
              f"{report.misses} encoded, {len(report.failures)} failed"
              + (f"; {report.skipped}" if report.skipped else ""))
    print(f"cache: {cache_root} ({minutes:.1f} min, {args.workers} worker(s))")
    failures = [failure for report in reports.values() for failure in report.failures]
    for audio, reason in failures[:20]:
        print(f"  failed: {audio}: {reason}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    if failures:
        print(f"dsm data codes: {len(failures)} item(s) could not be encoded; training would "
              "stop on them: fix or drop those rows", file=sys.stderr)
        return 1
    return 0
