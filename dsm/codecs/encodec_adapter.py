"""Adapter over the `encodec` package's causal 24 kHz EnCodec model, from a local checkpoint.

Offline only: `encode` / `decode` call the package's model directly (75 Hz, 320-sample
frames, 1024-entry codebooks, up to 32 codebooks = 24 kbps; fewer codebooks mean a lower
bandwidth, 0.75 kbps each). Streaming is not offered: `streaming()` raises.

About torchaudio: `import encodec` imports torchaudio at package import time, although the
model itself never calls it (torchaudio serves only encodec's file reading, resampling and
its training discriminator). torchaudio is not installable here. When, and only when, it is
absent, `_import_encodec` registers a stand-in module named `torchaudio` whose every
attribute access raises an ImportError saying so; nothing this adapter calls touches it.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch

from dsm.codecs.base import Codec

SAMPLE_RATE = 24_000
BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)  # kbps the 24 kHz model was trained for


class _MissingTorchaudio(types.ModuleType):
    """Stand-in for torchaudio so that `import encodec` works without it (see module doc)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"torchaudio.{name} is not available: dsm registered a stand-in torchaudio module "
            "only so that the `encodec` package imports; use soundfile/soxr for audio I/O"
        )


def _import_encodec() -> types.ModuleType:
    try:
        importlib.import_module("torchaudio")
    except ImportError:
        sys.modules["torchaudio"] = _MissingTorchaudio("torchaudio")
    try:
        return importlib.import_module("encodec")
    except ImportError as error:
        raise ImportError(
            "the EnCodec adapter needs the `encodec` package (pip install encodec --no-deps)"
        ) from error


def build_encodec_24khz() -> torch.nn.Module:
    """The `encodec` package's causal 24 kHz model, untrained (no download)."""
    encodec = _import_encodec()
    with warnings.catch_warnings():
        # encodec builds its convolutions with torch's deprecated (still working) weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return encodec.EncodecModel.encodec_model_24khz(pretrained=False)


class EncodecCodec(Codec):
    """`Codec` over an `encodec.EncodecModel` (24 kHz, mono, causal)."""

    def __init__(self, model: torch.nn.Module, num_codebooks: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.sample_rate = int(model.sample_rate)
        self.frame_size = int(model.encoder.hop_length)
        self.frame_rate = self.sample_rate / self.frame_size
        self.cardinality = int(model.quantizer.bins)
        self._total_codebooks = int(model.quantizer.n_q)
        self._num_codebooks = self._total_codebooks
        self.set_num_codebooks(num_codebooks or self._total_codebooks)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def total_codebooks(self) -> int:
        return self._total_codebooks

    def set_num_codebooks(self, n: int) -> None:
        """Use the first `n` codebooks; `n` must match one of the model's bandwidths."""
        per_codebook = self.frame_rate * 10 / 1000  # kbps per 10-bit codebook
        bandwidth = n * per_codebook
        if bandwidth not in self.model.target_bandwidths:
            allowed = [int(round(b / per_codebook)) for b in self.model.target_bandwidths]
            raise ValueError(f"EnCodec 24 kHz supports {allowed} codebooks, got {n}")
        self.model.set_target_bandwidth(bandwidth)
        self._num_codebooks = n

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        frames = self.model.encode(wav)
        return torch.cat([codes for codes, _ in frames], dim=-1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode([(codes, None)])[..., : codes.shape[-1] * self.frame_size]

    def streaming(self, batch_size: int):  # type: ignore[override]
        raise NotImplementedError(
            "the EnCodec adapter is offline only (encode/decode); streaming encode_step/"
            "decode_step needs a streaming codec such as Mimi (load_codec('mimi:...'))"
        )


def load_encodec_24khz(path: str | Path, num_codebooks: int | None = None,
                       device: str | torch.device = "cpu") -> EncodecCodec:
    """Load an `encodec_24khz-*.th` state dict (the package's checkpoint layout)."""
    from dsm.codecs.mimi import check_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EnCodec checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    model = build_encodec_24khz()
    check_state_dict(model, state, f"EnCodec checkpoint {path}")
    model.load_state_dict(state)
    model.eval()
    return EncodecCodec(model.to(device), num_codebooks)
