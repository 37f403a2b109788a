"""Fill a recipe's codec-code cache ahead of training, in N worker processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

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
