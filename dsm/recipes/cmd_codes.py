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
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from dsm.recipes.cmd_merge import positive_int

SPLITS = ("train", "valid")


@dataclass
class Counts:
    """What encoding a run of items gave (one chunk, or a whole split summed)."""

    split: str
    items: int = 0
    hits: int = 0
    misses: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (audio file, reason)

    def add(self, other: Counts) -> None:
        self.items += other.items
        self.hits += other.hits
        self.misses += other.misses
        self.failures.extend(other.failures)


@dataclass
class SplitReport(Counts):
    skipped: str = ""        # rows the manifest check left out, as training does


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


# --- the datasets, as training builds them --------------------------------------------------

def aligned_datasets(recipe: Any, splits: tuple[str, ...]) -> dict[str, Any]:
    """split -> the `AlignedDataset` that `dsm train` would read for it (splits without a
    manifest are left out). Raises RecipeError for a recipe that keeps no code cache."""
    from dsm.recipes.config import RecipeError
    from dsm.recipes.data.dataset import AlignedDataset
    from dsm.recipes.registry import get_task_class

    task = get_task_class(recipe.kind, recipe.source)(recipe)
    if not getattr(task.config, "cache_dir", None):
        if recipe.kind in ("asr", "tts", "translation"):
            raise RecipeError(
                f"{recipe.source}: key 'task.cache_dir' is not set, so training keeps no "
                "codes to fill in advance; set it (e.g. --set task.cache_dir='\"data/codes-cache\"')"
            )
        raise RecipeError(
            f"{recipe.source}: a '{recipe.kind}' recipe trains on no cached codec codes "
            "(only asr, tts and translation recipes do)"
        )
    datasets = {}
    for split in splits:
        dataset = task.build_dataset(split)
        if dataset is None:
            continue
        if not isinstance(dataset, AlignedDataset):  # e.g. ASR's cropping wrapper
            dataset = dataset.dataset
        datasets[split] = dataset
    return datasets


def encode_items(dataset: Any, split: str, indices: list[int]) -> Counts:
    """Encode (or find cached) the codes of `dataset`'s items at `indices`."""
    result = Counts(split)
    cache = dataset.cache
    for index in indices:
        result.items += 1
        hits, misses = cache.hits, cache.misses
        try:
            dataset.aligned(index)
        except Exception as error:  # noqa: BLE001 - reported per file, never dropped
            row = dataset.items[index][0]
            result.failures.append((str(row.audio), f"{type(error).__name__}: {error}"))
            continue
        result.hits += cache.hits - hits
        result.misses += cache.misses - misses
    return result


# --- worker processes ------------------------------------------------------------------------

_WORKER_DATASETS: dict[str, Any] = {}


def _start_worker(recipe_path: str, overrides: list[str], splits: tuple[str, ...]) -> None:
    import torch

    from dsm.recipes.config import load_recipe

    torch.set_num_threads(1)
    _WORKER_DATASETS.update(aligned_datasets(load_recipe(recipe_path, overrides), splits))


def _encode_in_worker(split: str, indices: list[int]) -> Counts:
    import torch

    with torch.no_grad():
        return encode_items(_WORKER_DATASETS[split], split, indices)


def _chunks(count: int, workers: int) -> list[list[int]]:
    size = max(1, min(64, count // (workers * 8) or 1))
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def _skipped_text(dataset: Any) -> str:
    from dsm.recipes.data.manifest import summarize_skipped

    return summarize_skipped(dataset.skipped) if dataset.skipped else ""


def fill_cache(recipe_path: str, overrides: list[str], splits: tuple[str, ...], workers: int,
               progress: bool = True) -> tuple[dict[str, SplitReport], str]:
    """Encode every item of the recipe's datasets; returns the reports and the cache folder."""
    import torch
    from tqdm import tqdm

    from dsm.recipes.config import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    datasets = aligned_datasets(recipe, splits)
    if not datasets:
        from dsm.recipes.config import RecipeError

        raise RecipeError(f"{recipe.source}: key 'data.valid_manifest': not set, nothing to encode")
    reports = {split: SplitReport(split, skipped=_skipped_text(dataset)) for split, dataset in datasets.items()}
    cache_root = str(next(iter(datasets.values())).cache.root)
    lengths = {split: len(dataset) for split, dataset in datasets.items()}
    total = sum(lengths.values())
    with tqdm(total=total, desc="codec codes", unit="item", disable=not progress) as bar:
        if workers == 1:
            with torch.no_grad():
                for split, dataset in datasets.items():
                    for chunk in _chunks(len(dataset), 1):
                        result = encode_items(dataset, split, chunk)
                        reports[split].add(result)
                        bar.update(result.items)
            return reports, cache_root
        del datasets  # each worker builds its own (and loads its own codec)
        context = multiprocessing.get_context("spawn")  # no forked torch threads
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(recipe_path, list(overrides), tuple(reports))) as pool:
            futures = [
                pool.submit(_encode_in_worker, split, chunk)
                for split, length in lengths.items()
                for chunk in _chunks(length, workers)
            ]
            for future in as_completed(futures):
                result = future.result()
                reports[result.split].add(result)
                bar.update(result.items)
    return reports, cache_root


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
