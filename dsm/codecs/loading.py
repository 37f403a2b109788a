"""`load_codec(spec)` and `save_codec(codec, directory)`.

Specs:
  - `"mimi:PATH.safetensors"`: Kyutai's Mimi checkpoint layout (full-size config unless a
    `config=MimiConfig(...)` is passed);
  - `"encodec_24khz:PATH.th"`: the `encodec` package's 24 kHz checkpoint (offline only);
  - a directory written by `save_codec` (the codec recipe's output), holding
      config.json        {"format": "dsm-codec", "version": 1, "type": "mimi" | "encodec_24khz",
                          "num_codebooks": K, "config": {...MimiConfig fields...}}
      model.safetensors  the codec's `state_dict()` in dsm's own module names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dsm.codecs.base import Codec
from dsm.codecs.encodec_adapter import EncodecCodec, build_encodec_24khz, load_encodec_24khz
from dsm.codecs.mimi import Mimi, MimiConfig, check_state_dict, load_mimi

FORMAT = "dsm-codec"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def load_codec(spec: str | Path, *, config: MimiConfig | None = None,
               num_codebooks: int | None = None, device: str | torch.device = "cpu") -> Codec:
    """A ready (eval mode) `Codec` from a spec string (see the module docstring)."""
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind == "mimi":
        return load_mimi(rest, config=config, num_codebooks=num_codebooks, device=device)
    if sep and kind == "encodec_24khz":
        return load_encodec_24khz(rest, num_codebooks=num_codebooks, device=device)
    path = Path(text)
    if path.is_dir():
        return _load_directory(path, num_codebooks, device)
    raise ValueError(
        f"unknown codec spec {text!r}: use 'mimi:PATH.safetensors', "
        "'encodec_24khz:PATH.th' or a directory written by save_codec (config.json + "
        "model.safetensors)"
    )


def save_codec(codec: Codec, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `codec` as a directory that `load_codec(directory)` reads back. `dtype`
    (e.g. torch.float16, half the bytes: how the shipped default codec is stored) casts
    the floating-point weights; loading casts them back to the model's float32."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                            "num_codebooks": codec.num_codebooks}
    if isinstance(codec, Mimi):
        meta.update(type="mimi", config=codec.config.to_dict())
    elif isinstance(codec, EncodecCodec):
        meta.update(type="encodec_24khz")
    else:
        raise TypeError(f"save_codec does not know how to save a {type(codec).__name__}")
    state = {key: value.detach().contiguous().cpu() for key, value in codec.state_dict().items()}
    if dtype is not None:
        state = {key: value.to(dtype) if value.is_floating_point() else value
                 for key, value in state.items()}
        meta["weights_dtype"] = str(dtype).removeprefix("torch.")
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def _load_directory(directory: Path, num_codebooks: int | None,
                    device: str | torch.device) -> Codec:
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved codec: {needed.name} is missing "
                f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
    meta = json.loads(config_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a dsm codec config (format {meta.get('format')!r})")
    kind = meta.get("type")
    codec: Codec
    if kind == "mimi":
        codec = Mimi(MimiConfig.from_dict(meta["config"]))
    elif kind == "encodec_24khz":
        codec = EncodecCodec(build_encodec_24khz())
    else:
        raise ValueError(f"{config_path}: unknown codec type {kind!r}")
    state = load_file(str(weights_path))
    check_state_dict(codec, state, f"codec weights {weights_path}")
    codec.load_state_dict(state)
    codec.to(device).eval()
    wanted = num_codebooks or meta.get("num_codebooks")
    if wanted:
        codec.set_num_codebooks(int(wanted))
    return codec
