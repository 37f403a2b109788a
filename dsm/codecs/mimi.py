"""Mimi: Kyutai's streaming neural audio codec, configurable and checkpoint compatible.

encode: audio `[B, 1, N]` -> SEANet encoder (hop 960: 25 Hz) -> causal transformer ->
strided conv to the frame rate (12.5 Hz) -> split RVQ -> codes `[B, K, T]`.
decode: codes -> RVQ centroids -> transposed conv back to the encoder rate -> causal
transformer -> SEANet decoder -> audio `[B, 1, T * frame_size]`.
Every stage is causal and streamable, so `encode_step` / `decode_step` (one 80 ms frame at
a time, per-slot state) give the offline result.

`load_mimi(path)` reads Kyutai's Mimi safetensors layout (as written by the `moshi`
package, or with the attention weights named `in_proj_weight` / `out_proj.weight`). Our own
module names differ in a few places; `kyutai_to_dsm_key` is the one place that maps them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsm.codecs.base import Codec
from dsm.codecs.quantization import QuantizerOutput, SplitResidualVectorQuantizer
from dsm.codecs.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from dsm.codecs.spectral import SpectralConfig, SpectralDecoder, SpectralEncoder
from dsm.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from dsm.modules.streaming import StreamingModule
from dsm.modules.transformer import StreamingTransformer, TransformerConfig

FRONTENDS = ("seanet", "spectral")


def _default_transformer() -> TransformerConfig:
    return TransformerConfig(
        d_model=512, num_heads=8, num_layers=8, dim_feedforward=2048, causal=True,
        context=250, positional_embedding="rope", max_period=10_000.0, norm="layer_norm",
        gating="none", layer_scale=0.01,
    )


@dataclass
class MimiConfig:
    """Full-size defaults: Kyutai's published Mimi (24 kHz, 12.5 Hz, 32 x 2048 codes)."""

    sample_rate: int = 24_000
    frame_rate: float = 12.5
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    transformer: TransformerConfig = field(default_factory=_default_transformer)
    codebook_dim: int = 256
    n_q: int = 32
    bins: int = 2048
    n_q_semantic: int = 1
    q_dropout: bool = False
    # "seanet" (Kyutai's layout) or "spectral" (dsm.codecs.spectral: learns faster from
    # scratch, made for codecs trained on a CPU). `spectral` is read only then.
    frontend: str = "seanet"
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    # Kyutai's upsampling to the encoder rate is depthwise (each latent channel stretched
    # on its own); dense gives every sub-step its own map of the whole latent (the shipped
    # spectral codec uses it; in short CPU runs it did about as well as depthwise).
    dense_upsample: bool = False
    # EMA decay of the codebooks (Kyutai's 0.99); lower values follow a moving encoder
    # faster, an option for short runs where a batch holds only ~100 latent vectors
    codebook_decay: float = 0.99

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")

    @property
    def hop_length(self) -> int:
        """Samples per latent step of the encoder / decoder front end."""
        return self.spectral.hop_length if self.frontend == "spectral" else self.seanet.hop_length

    @property
    def latent_dimension(self) -> int:
        return self.spectral.dimension if self.frontend == "spectral" else self.seanet.dimension

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def resample_stride(self) -> int:
        stride = self.encoder_frame_rate / self.frame_rate
        if stride < 1 or stride != int(stride):
            raise ValueError(
                f"the SEANet frame rate ({self.encoder_frame_rate} Hz) must be an integer "
                f"multiple of frame_rate ({self.frame_rate} Hz)"
            )
        return int(stride)

    def to_dict(self) -> dict[str, Any]:
        """The config as saved beside a codec's weights; transformer options that a codec
        does not use (grouped-query and cross-attention) only when they are set."""
        raw = dataclasses.asdict(self)
        transformer = raw.get("transformer")
        if isinstance(transformer, dict):
            for name, unused in (("kv_repeat", 1), ("cross_attention", False)):
                if transformer.get(name) == unused:
                    del transformer[name]
        return raw

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MimiConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Mimi config fields: {unknown}")
        if "seanet" in data:
            data["seanet"] = SEANetConfig(**data["seanet"])
        if "spectral" in data:
            data["spectral"] = SpectralConfig(**data["spectral"])
        if "transformer" in data:
            data["transformer"] = TransformerConfig(**data["transformer"])
        return cls(**data)


@dataclass
class MimiOutput:
    audio: torch.Tensor  # [B, 1, N] reconstruction
    codes: torch.Tensor  # [B, K, T]
    commitment_loss: torch.Tensor
    latent: torch.Tensor  # [B, D, T] unquantized encoder output at the frame rate
    metrics: dict[str, torch.Tensor]


class CodecTransformer(StreamingModule):
    """Causal transformer over `[B, C, T]` latents, with projections when C != d_model."""

    def __init__(self, dimension: int, config: TransformerConfig) -> None:
        super().__init__()
        self.transformer = StreamingTransformer(config)
        d_model = config.d_model
        self.input_proj = nn.Linear(dimension, d_model, bias=False) if dimension != d_model else None
        self.output_proj = (
            nn.Linear(d_model, dimension, bias=False) if dimension != d_model else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.input_proj is not None:
            x = self.input_proj(x)
        x = self.transformer(x)
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x.transpose(1, 2)


class Mimi(Codec):
    """The Mimi codec (see module docstring). Build with a `MimiConfig`."""

    def __init__(self, config: MimiConfig | None = None) -> None:
        super().__init__()
        config = config or MimiConfig()
        self.config = config
        self.sample_rate = config.sample_rate
        self.frame_rate = config.frame_rate
        frame_size = config.sample_rate / config.frame_rate
        if frame_size != int(frame_size):
            raise ValueError("sample_rate / frame_rate must be a whole number of samples")
        self.frame_size = int(frame_size)
        self.cardinality = config.bins
        dimension = config.latent_dimension
        stride = config.resample_stride
        self.encoder: SEANetEncoder | SpectralEncoder
        self.decoder: SEANetDecoder | SpectralDecoder
        if config.frontend == "spectral":
            self.encoder = SpectralEncoder(config.spectral)
            self.decoder = SpectralDecoder(config.spectral)
            self.delay_samples = config.spectral.delay_samples
        else:
            self.encoder = SEANetEncoder(config.seanet)
            self.decoder = SEANetDecoder(config.seanet)
        self.encoder_transformer = CodecTransformer(dimension, config.transformer)
        self.decoder_transformer = CodecTransformer(dimension, config.transformer)
        self.downsample: StreamingConv1d | None = None
        self.upsample: StreamingConvTranspose1d | None = None
        if stride > 1:
            self.downsample = StreamingConv1d(
                dimension, dimension, 2 * stride, stride, bias=False, pad_mode="replicate")
            self.upsample = StreamingConvTranspose1d(
                dimension, dimension, 2 * stride, stride,
                groups=1 if config.dense_upsample else dimension, bias=False)
        self.quantizer = SplitResidualVectorQuantizer(
            config.codebook_dim, config.n_q, config.bins,
            input_dimension=dimension, output_dimension=dimension,
            n_q_semantic=config.n_q_semantic, q_dropout=config.q_dropout,
            decay=config.codebook_decay,
        )

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    def set_num_codebooks(self, n: int) -> None:
        """Use the first `n` codebooks (1 semantic + n-1 acoustic) from now on."""
        self.quantizer.set_num_codebooks(n)

    def encoder_side(self) -> list[nn.Module]:
        """The modules that decide the codes and what each code means (a decoder trained
        alone leaves these as they are)."""
        side: list[nn.Module] = [self.encoder, self.encoder_transformer, self.quantizer]
        if self.downsample is not None:
            side.append(self.downsample)
        return side

    def fingerprint_state(self) -> dict[str, torch.Tensor]:
        """The weights that define the code space: `codec_fingerprint` hashes these, so a
        codec whose decoder was trained further keeps the fingerprint of its codes."""
        prefixes = tuple(f"{name}." for name, module in self.named_children()
                         if any(module is side for side in self.encoder_side()))
        return {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}

    # --- stages ------------------------------------------------------------------------------
    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """wav `[B, 1, N]` (N a multiple of frame_size) -> latent `[B, D, N / frame_size]`."""
        latent = self.encoder_transformer(self.encoder(wav))
        if self.downsample is not None:
            latent = self.downsample(latent)
        return latent

    def decode_latent(self, quantized: torch.Tensor) -> torch.Tensor:
        """quantized latent `[B, D, T]` -> wav `[B, 1, T * frame_size]`."""
        if self.upsample is not None:
            quantized = self.upsample(quantized)
        return self.decoder(self.decoder_transformer(quantized))

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encode_latent(wav))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latent(self.quantizer.decode(codes))

    _encode_step = _encode
    _decode_step = _decode

    def forward(self, wav: torch.Tensor) -> MimiOutput:
        """Training pass: reconstruct `wav` `[B, 1, N]` (N a multiple of frame_size) through
        the quantizer (which learns its codebooks in training mode)."""
        self.check_audio(wav)
        if wav.shape[-1] % self.frame_size:
            raise ValueError(
                f"training audio length must be a multiple of {self.frame_size} samples, got "
                f"{wav.shape[-1]}"
            )
        latent = self.encode_latent(wav)
        quantized: QuantizerOutput = self.quantizer(latent)
        audio = self.decode_latent(quantized.quantized)
        return MimiOutput(audio, quantized.codes, quantized.commitment_loss, latent,
                          quantized.metrics)


# --- Kyutai checkpoints -------------------------------------------------------------------

_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\.self_attn\.in_projs\.0\.weight$"), ".self_attn.in_proj_weight"),
    (re.compile(r"\.self_attn\.out_projs\.0\.weight$"), ".self_attn.out_proj.weight"),
    (re.compile(r"_transformer\.output_projs\.0\.weight$"), "_transformer.output_proj.weight"),
    (re.compile(r"\.vq\.layers\."), ".layers."),
    (re.compile(r"\._codebook\._initialized$"), ".initialized"),
    # older codebook names, still accepted by moshi
    (re.compile(r"\._codebook\.inited$"), ".initialized"),
    (re.compile(r"\._codebook\.cluster_size$"), ".cluster_usage"),
    (re.compile(r"\._codebook\.embed_(avg|sum)$"), ".embedding_sum"),
    (re.compile(r"\._codebook\."), "."),
]


def kyutai_to_dsm_key(key: str) -> str:
    """Map one key of Kyutai's Mimi layout to our module names."""
    for nested, single in ((".conv.conv.", ".conv."), (".convtr.convtr.", ".convtr.")):
        while nested in key:
            key = key.replace(nested, single)
    for pattern, replacement in _KEY_RULES:
        key = pattern.sub(replacement, key)
    return key


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one clear error listing missing, unexpected and misshaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("misshaped tensors", misshaped)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise ValueError(
            f"{source} does not match the {type(model).__name__} configuration: "
            + "; ".join(problems)
        )


def load_mimi(path: str | Path, config: MimiConfig | None = None,
              num_codebooks: int | None = None, device: str | torch.device = "cpu") -> Mimi:
    """Build a `Mimi` (full-size config unless `config`) and load Kyutai-layout weights."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Mimi checkpoint not found: {path}")
    raw = load_file(str(path), device=str(device))
    state = {kyutai_to_dsm_key(key): value for key, value in raw.items()}
    model = Mimi(config).to(device)
    check_state_dict(model, state, f"Mimi checkpoint {path}")
    model.load_state_dict(state)
    model.eval()
    if num_codebooks is not None:
        model.set_num_codebooks(num_codebooks)
    return model
