"""Training checkpoints, written atomically (temp file, fsync, rename, fsync of the
directory), and the RNG states they carry so that a resumed run is bit for bit the same."""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsm.recipes.config import RecipeError

CHECKPOINT_FORMAT = "dsm-train-checkpoint"


CHECKPOINT_VERSION = 1


_CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `directory` as (step, path), oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint_atomic(state: dict[str, Any], directory: Path, step: int, keep: int) -> Path:
    """Write `state` as step_<step>.pt so that no crash can leave it half written: the bytes
    go to a hidden temp file, are fsynced, then renamed over the final name (atomic on
    POSIX); the directory is fsynced so the rename itself is durable. Then only the
    newest `keep` checkpoints are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:08d}.pt"
    temp = directory / f".{final.name}.tmp-{os.getpid()}"
    try:
        with open(temp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path) -> None:
    """Temp files left by a crash mid-write are incomplete by construction."""
    if directory.is_dir():
        for path in directory.glob(".step_*.pt.tmp-*"):
            path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint (tensors on CPU), checking that it is one."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RecipeError(f"{path} is not a dsm training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise RecipeError(f"{path}: checkpoint version {state.get('version')} is not supported")
    return state


def latest_loadable_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except Exception as error:  # damaged file (e.g. disk full): fall back, say so
            print(f"dsm train: skipping unreadable checkpoint {path}: {error}", file=sys.stderr)
    return None


def capture_rng() -> dict[str, Any]:
    """Every random generator the training loop may draw from, as checkpointable data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, keys, *rest = state["numpy"]
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state((version, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
