"""Ship trained models into the default-model layout (dsm/assets): codec directories, model
directories beside a shared codec, averaged weights, with their provenance."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dsm.models.model_dir import write_provenance

KINDS = ("codec", "asr", "tts", "translation")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def ship_codec(source: str | Path, target: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Re-save the codec `source` (any `load_codec` spec, or a codec run's trainer
    checkpoint `.pt`) as the directory `target`."""
    from dsm.codecs import load_codec, save_codec
    from dsm.recipes.tasks.codec import codec_from_checkpoint

    source_path = Path(source)
    codec = (codec_from_checkpoint(source_path) if source_path.is_file()
             and source_path.suffix == ".pt" else load_codec(source))
    directory = save_codec(codec, target, dtype=dtype)  # replaces its two files
    recipe, steps = run_recipe(source_path)
    write_provenance(directory, source=source, recipe=recipe, steps=steps)
    return directory


def run_recipe(source: Path) -> tuple[dict[str, Any] | None, int | None]:
    """The recipe and step count of the `dsm train` run a shipped model comes from: `source`
    itself when it is a trainer checkpoint, else the newest checkpoint of the run whose
    out_dir holds `source` (a task exports to OUT/model or OUT/codec); (None, None) when
    there is none."""
    from dsm.recipes.training.checkpoint import checkpoint_dir, list_checkpoints

    if source.is_file() and source.suffix == ".pt":
        paths = [source]
    else:
        paths = [path for _, path in list_checkpoints(checkpoint_dir(source.parent))][-1:]
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        if isinstance(state, dict) and isinstance(state.get("recipe"), dict):
            return state["recipe"], state.get("step")
    return None, None


def ship_model_dir(source: str | Path, target: str | Path, codec: str = "../codec",
                   dtype: torch.dtype | None = None,
                   average: Sequence[str | Path] = ()) -> Path:
    """Copy the model directory `source` to `target` without its codec; config.json names
    `codec` (a spec, or a path relative to `target`) and records the fingerprint of the
    codec `source` was made with. `dtype` stores the LM's floating weights in that type
    (recorded as `weights_dtype`). With `average`, the LM weights are the mean of the
    source's and those model directories' (`average_weights`). Files of a model directory
    already in `target` are replaced; nothing else there is touched."""
    from safetensors.torch import load_file, save_file

    source, target = Path(source), Path(target)
    raw = _read_model_config(source)
    raw["codec_fingerprint"] = _codec_fingerprint(source, raw)
    raw["codec"] = codec
    weights, tokenizer = _weights_file(source, raw), _tokenizer_file(source, raw)
    state = (average_weights(source, average, fingerprint=raw["codec_fingerprint"])
             if average else None)
    target.mkdir(parents=True, exist_ok=True)
    if state is None and dtype is None:
        shutil.copy(weights, target / weights.name)
    else:
        state = state if state is not None else load_file(str(weights))
        if dtype is not None:
            state = {key: value.to(dtype) if value.is_floating_point() else value
                     for key, value in state.items()}
            raw["weights_dtype"] = str(dtype).removeprefix("torch.")
        else:  # an average is float32, whatever its sources were stored in
            raw.pop("weights_dtype", None)
        save_file(state, str(target / weights.name))
    shutil.copy(tokenizer, target / tokenizer.name)
    (target / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    recipe, steps = run_recipe(source)
    write_provenance(target, source=source, recipe=recipe, steps=steps)
    return target


def average_weights(source: str | Path, others: Sequence[str | Path],
                    fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """The mean of the LM weights of the model directory `source` and of `others`, in
    float32 (integer tensors must agree and are kept). A ValueError when a directory's
    weights differ in names or shapes, or it was made with another tokenizer or codec:
    such an average would be noise, not a model. `fingerprint`: that of `source`'s codec,
    when the caller has it already (each costs a codec load)."""
    from safetensors.torch import load_file

    source = Path(source)
    raw = _read_model_config(source)
    fingerprint = fingerprint or _codec_fingerprint(source, raw)
    tokenizer = _tokenizer_file(source, raw).read_bytes()
    state = load_file(str(_weights_file(source, raw)))
    total = {key: value.float() if value.is_floating_point() else value
             for key, value in state.items()}
    for other in map(Path, others):
        other_raw = _read_model_config(other)
        other_state = load_file(str(_weights_file(other, other_raw)))
        if sorted(other_state) != sorted(state):
            names = sorted(set(other_state) ^ set(state))
            raise ValueError(f"cannot average {other} with {source}: their weights differ in "
                             f"names ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})")
        for key, value in other_state.items():
            if value.shape != state[key].shape:
                raise ValueError(f"cannot average {other} with {source}: {key} is "
                                 f"{tuple(value.shape)} there, {tuple(state[key].shape)} here")
            if value.is_floating_point():
                total[key] += value.float()
            elif not torch.equal(value, state[key]):
                raise ValueError(f"cannot average {other} with {source}: the integer "
                                 f"tensor {key} differs")
        if _tokenizer_file(other, other_raw).read_bytes() != tokenizer:
            raise ValueError(f"cannot average {other} with {source}: another tokenizer")
        if _codec_fingerprint(other, other_raw) != fingerprint:
            raise ValueError(f"cannot average {other} with {source}: made with another codec")
    count = 1 + len(others)
    return {key: value / count if value.is_floating_point() else value
            for key, value in total.items()}


def _read_model_config(directory: Path) -> dict:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} is not a model directory: config.json is missing")
    return json.loads(config_file.read_text())


def _weights_file(directory: Path, raw: dict) -> Path:
    """The LM weights file of a model directory (config `moshi_name`, as Kyutai's)."""
    return directory / str(raw.get("moshi_name", "model.safetensors"))


def _tokenizer_file(directory: Path, raw: dict) -> Path:
    return directory / str(raw.get("tokenizer_name", "tokenizer.model"))


def _codec_fingerprint(directory: Path, raw: dict) -> str:
    """The fingerprint of the weights of the codec a model directory names."""
    from dsm.codecs import load_codec
    from dsm.models.model_dir import codec_spec
    from dsm.recipes.data.dataset import codec_fingerprint

    return codec_fingerprint(load_codec(codec_spec(directory, raw)))
