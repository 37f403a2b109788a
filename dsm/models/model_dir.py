"""A model directory: everything a streaming task needs, in Kyutai's layout.

```
DIR/
  config.json        the LM config (Kyutai field names, `dsm.models.LMConfig`) plus:
                       tokenizer_name   text tokenizer file (default "tokenizer.model")
                       codec            codec spec or path relative to DIR ("mimi:mimi.safetensors",
                                        "codec"), or Kyutai's mimi_name (a Mimi safetensors file),
                                        or, when neither is given, a codec/ folder (save_codec)
                       model_type       "stt" | "tts" | "translation" | "hibiki" | "moshi"
                                        (optional: guessed from stt_config / tts_config, then
                                        from the stream shapes). "hibiki": Kyutai's speech
                                        translation (conditioned on description "very_good",
                                        end-of-input frame, text EOS ends the stream);
                                        "moshi": a full-duplex dialogue LM (engine and LM API)
                       stt_config       {"audio_delay_seconds": s}: text behind audio (ASR and
                                        translation; default 0.5 s);
                                        "audio_silence_prefix_seconds": silence fed before the
                                        audio, as moshi's run_inference (stt-2.6b-en: 1 s)
                       tts_config       {"audio_delay": s}: audio behind text (TTS; default 1.28 s);
                                        Kyutai's TTS: "second_stream_ahead" (words of lookahead
                                        in the muxed second text stream)
                       model_id         Kyutai's TTS: {"sig", "epoch"}, naming its voice files
                       lm_gen_config    optional sampling defaults (temp, temp_text, top_k, ...)
                       weights_dtype    set by `dsm ship --dtype`: the weights are stored in
                                        this type and computed in float32
  model.safetensors  LM weights, Kyutai key layout (or the file named by moshi_name)
  tokenizer.model    sentencepiece model
  codec/ or a Mimi safetensors file
  voices/            Kyutai's TTS (optional): voice files, <name><model_id suffix>.safetensors
  provenance.json    written by `dsm ship` (optional): the recipe and training steps that
                     made the model, the dsm commit that shipped it (see `write_provenance`)
```
`write_model_dir` writes one (recipes, tests); `dsm.streaming.model_dir.load_model_dir`
reads one and makes the engine and sessions of its task. `resolve_model` turns what a user
names (`--model`) into one: a directory, or a Hugging Face repo id (`kyutai/stt-1b-en_fr[@REVISION]`) resolved to
its cached snapshot by `dsm.models.hub`, whose Kyutai config.json names moshi_name,
mimi_name and tokenizer_name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TASKS = ("asr", "tts", "translation")  # what write_model_dir writes; loading also knows
# "dialogue": Kyutai's full-duplex Moshi, usable through the engine, the LM API and `dsm bench`
_MODEL_TYPES = {"stt": "asr", "asr": "asr", "tts": "tts", "translation": "translation",
                "hibiki": "translation", "moshi": "dialogue"}


class ModelDirError(ValueError):
    """A model directory is missing a file or names something inconsistent."""


def codec_spec(directory: Path, extras: dict[str, Any]) -> str:
    """Where the directory's codec is (see the module docstring), as a `load_codec` spec."""
    if "codec" in extras:
        spec = str(extras["codec"])
        kind, sep, rest = spec.partition(":")
        if sep and kind in ("mimi", "encodec_24khz"):
            return spec if Path(rest).is_absolute() else f"{kind}:{directory / rest}"
        return spec if Path(spec).is_absolute() else str(directory / spec)
    if extras.get("mimi_config_name"):
        raise ModelDirError(
            f"{directory}: config.json names a Mimi config ({extras['mimi_config_name']}); dsm "
            "loads Kyutai's published full-size Mimi only, so a Mimi of another shape is "
            "refused rather than loaded wrongly"
        )
    if "mimi_name" in extras:
        return f"mimi:{directory / str(extras['mimi_name'])}"
    if (directory / "codec").is_dir():
        return str(directory / "codec")
    raise ModelDirError(
        f"{directory}: no codec (config.json names none in 'codec' or 'mimi_name', and there "
        "is no codec/ folder)"
    )


def task_of(extras: dict[str, Any], config: Any) -> str:
    model_type = extras.get("model_type")
    if model_type is not None:
        if model_type not in _MODEL_TYPES:
            raise ModelDirError(
                f"config.json model_type {model_type!r} is not one of {sorted(_MODEL_TYPES)}"
            )
        return _MODEL_TYPES[model_type]
    if "tts_config" in extras:
        return "tts"
    if "stt_config" in extras:
        return "asr"
    if config.dep_q == 0:
        return "asr"
    return "tts" if config.n_q == config.dep_q else "translation"


def write_model_dir(
    directory: str | Path,
    lm: Any,
    codec: Any,
    tokenizer_file: str | Path,
    task: str,
    *,
    text_delay_s: float = 0.5,
    audio_delay_s: float = 1.28,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory that `load_model_dir` reads back."""
    from dsm.codecs import save_codec
    from dsm.models import save_lm

    if task not in TASKS:
        raise ModelDirError(f"task must be one of {TASKS}, got {task!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_lm(lm, directory)
    save_codec(codec, directory / "codec")
    shutil.copy(tokenizer_file, directory / "tokenizer.model")
    config_file = directory / "config.json"
    raw = json.loads(config_file.read_text())
    raw["tokenizer_name"] = "tokenizer.model"
    raw["codec"] = "codec"
    raw["model_type"] = {"asr": "stt", "tts": "tts", "translation": "translation"}[task]
    if task in ("asr", "translation"):
        raw["stt_config"] = {"audio_delay_seconds": text_delay_s}
    if task == "tts":
        raw["tts_config"] = {"audio_delay": audio_delay_s}
    if sampling:
        raw["lm_gen_config"] = dict(sampling)
    config_file.write_text(json.dumps(raw, indent=2) + "\n")
    return directory


DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "assets"


def installed_default(task: str) -> Path | None:
    """The shipped default model directory for `task` (dsm/assets/<task>), if installed."""
    default = DEFAULT_MODELS / task
    return default if (default / "config.json").is_file() else None


MODEL_REF_HELP = "a model directory or a Hugging Face repo id (kyutai/stt-1b-en_fr[@REVISION])"


def resolve_model(path: str | Path | None, task: str) -> Path:
    """`--model REF` as a model directory: REF a directory, or a Hugging Face repo id
    resolved through the cache (`dsm.models.hub`); None: the shipped default model for
    `task` (dsm/assets/<task>). Raises ModelDirError saying what is missing."""
    if path is not None:
        from dsm.models.hub import ModelRefError, resolve_model_ref

        try:
            return resolve_model_ref(path)
        except ModelRefError as error:
            raise ModelDirError(str(error)) from None
    default = installed_default(task)
    if default is None:
        raise ModelDirError(
            f"no default {task} model is installed ({DEFAULT_MODELS / task}); pass --model "
            f"REF ({MODEL_REF_HELP})"
        )
    return default


PROVENANCE_FILE = "provenance.json"


def write_provenance(directory: str | Path, *, source: str | Path, recipe: dict[str, Any] | None,
                     steps: int | None) -> Path:
    """Record beside a shipped model how it was made: the recipe (its tables as the run's
    last checkpoint holds them, None when the source is not a `dsm train` run's), the
    training steps, the directory it was shipped from, the dsm commit (`dsm_dirty` when
    the checkout had uncommitted changes under dsm/) and the date. Kept apart from
    config.json, which a pipeline reproduces exactly."""
    commit, dirty = _dsm_commit()
    record = {"steps": steps, "recipe": recipe,
              "shipped_from": str(source), "dsm_commit": commit, "dsm_dirty": dirty,
              "shipped_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = Path(directory) / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_provenance(directory: str | Path) -> dict[str, Any] | None:
    """The provenance `dsm ship` recorded for a model directory, or None."""
    path = Path(directory) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _dsm_commit() -> tuple[str | None, bool | None]:
    """The commit of the dsm checkout this package runs from (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             check=True, capture_output=True, text=True).stdout.strip()
        if Path(top).resolve() != root:  # an installed copy inside some other repository
            return None, None
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "dsm"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def read_audio(path: str | Path, sample_rate: int) -> Any:
    """A sound file as mono float32 at `sample_rate` (`dsm.audio_io.read_audio`), its
    errors as `ModelDirError` for the commands."""
    from dsm.audio_io import AudioFileError
    from dsm.audio_io import read_audio as read

    try:
        return read(path, sample_rate)
    except AudioFileError as error:
        raise ModelDirError(str(error)) from None
