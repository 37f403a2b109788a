"""Conditioning of a multistream LM on per-stream attributes (Kyutai's `conditioners`).

Hibiki is conditioned on a "description" label ("very_good", ...) through a lookup table
whose output is added to every step's input (the "sum" fuser). Kyutai's TTS adds labels
("cfg": the guidance strength it was distilled for, "control") fused by sum, and speaker
embeddings read by a cross-attention in every temporal layer (the "cross" fuser). A
conditioner maps one value per batch item to vectors `[B, T, dim]`:

- `LUTConditioner`: the value is an index into `embed` (its position in `possible_values`,
  or a sha256 hash of it modulo `n_bins` when the values are open); `output_proj` maps the
  table width to the model's `dim`; T = 1. A missing value (None) gives `learnt_padding`.
- `TensorConditioner`: the value is a `TensorValue` (vectors `[T, D]` and a mask `[T]`);
  `output_proj` maps them to `dim`, and masked-out positions read `learnt_padding`.

The "cross" fuser concatenates its conditioners' outputs along time and, when the config
says so, adds a sinusoidal position embedding (`cross_attention_pos_emb`, scaled).

Module and parameter names are Kyutai's (`condition_provider.conditioners.<name>.embed`,
`.output_proj`, `.learnt_padding`), and their weights stay in float32 as Kyutai stores them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dsm.modules.transformer import sin_embedding


@dataclass(frozen=True)
class TensorValue:
    """A tensor conditioner's input for one stream: vectors `[T, D]` and which are real `[T]`."""

    tensor: torch.Tensor  # [T, D]
    mask: torch.Tensor  # [T] bool

    def nulled(self) -> TensorValue:
        """The same length with nothing real (what guidance pushes away from)."""
        return TensorValue(torch.zeros_like(self.tensor), torch.zeros_like(self.mask))


ConditionValues = dict[str, "str | TensorValue | None"]
"""One batch item's conditions: conditioner name -> value (None: absent)."""


@dataclass
class Conditioning:
    """What the temporal transformer reads besides the tokens (float32)."""

    sum: torch.Tensor | None  # [B, 1, dim] added to every step's input
    cross: torch.Tensor | None  # [B, S, dim] the cross-attention's source


class ConditionError(ValueError):
    """A condition value the model's conditioners cannot take."""


class LUTConditioner(nn.Module):
    """A lookup table over a closed (or hashed) set of labels, projected to `output_dim`."""

    def __init__(self, output_dim: int, *, n_bins: int, dim: int, tokenizer: str = "noop",
                 possible_values: list[str] | None = None, force_linear: bool = True,
                 learn_padding: bool = True, pad_empty: bool = True, init_scale: float = 1.0,
                 output_bias: bool = False) -> None:
        super().__init__()
        if tokenizer != "noop":
            raise ConditionError(f"LUT tokenizer {tokenizer!r} is not supported (only 'noop')")
        if output_bias:
            raise ConditionError("LUT conditioners with output_bias are not supported")
        self.n_bins = n_bins
        self.possible_values = list(possible_values) if possible_values is not None else None
        self.embed = nn.Embedding(n_bins + 1, dim)  # the last row: padding
        with torch.no_grad():
            self.embed.weight.mul_(init_scale)
        self.output_proj: nn.Module = (
            nn.Linear(dim, output_dim, bias=False) if force_linear or dim != output_dim
            else nn.Identity()
        )
        self.learnt_padding = (
            nn.Parameter(0.2 * torch.randn(1, 1, output_dim)) if learn_padding else None
        )

    def index(self, value: str | None) -> int:
        """The table row of `value` (n_bins, the padding row, for None)."""
        if value is None:
            return self.n_bins
        if self.possible_values is None:
            return int(hashlib.sha256(value.encode("utf-8")).hexdigest(), 16) % self.n_bins
        if value not in self.possible_values:
            raise ConditionError(f"{value!r} is not one of {self.possible_values}")
        return self.possible_values.index(value)

    def forward(self, values: list[str | None]) -> torch.Tensor:
        """One value per batch item -> `[B, 1, output_dim]` (float32)."""
        device = self.embed.weight.device
        rows = torch.tensor([self.index(v) for v in values], dtype=torch.long, device=device)
        present = torch.tensor([v is not None for v in values], device=device)[:, None, None]
        out = self.output_proj(self.embed(rows[:, None]))
        if self.learnt_padding is not None:
            return torch.where(present, out, self.learnt_padding.to(out.dtype).expand_as(out))
        return torch.where(present, out, torch.zeros_like(out))


class TensorConditioner(nn.Module):
    """Given vectors `[B, T, dim]` projected to `output_dim`; masked positions read padding."""

    def __init__(self, output_dim: int, *, dim: int, force_linear: bool = True,
                 learn_padding: bool = True, pad_empty: bool = True,
                 output_bias: bool = False) -> None:
        super().__init__()
        if output_bias:
            raise ConditionError("tensor conditioners with output_bias are not supported")
        self.dim = dim
        self.output_proj: nn.Module = (
            nn.Linear(dim, output_dim, bias=False) if force_linear or dim != output_dim
            else nn.Identity()
        )
        self.learnt_padding = (
            nn.Parameter(0.2 * torch.randn(1, 1, output_dim)) if learn_padding else None
        )

    def forward(self, values: list[TensorValue]) -> torch.Tensor:
        """One `TensorValue` per batch item (all of one length) -> `[B, T, output_dim]`."""
        device = self.output_proj.weight.device if isinstance(self.output_proj, nn.Linear) else None
        lengths = {v.tensor.shape[0] for v in values}
        if len(lengths) != 1:
            raise ConditionError(f"tensor conditions of different lengths {sorted(lengths)}")
        for v in values:
            if v.tensor.dim() != 2 or v.tensor.shape[1] != self.dim:
                raise ConditionError(f"a tensor condition must be [T, {self.dim}], got "
                                     f"{tuple(v.tensor.shape)}")
            if v.mask.shape != v.tensor.shape[:1]:
                raise ConditionError(f"mask {tuple(v.mask.shape)} does not match the tensor "
                                     f"{tuple(v.tensor.shape)}")
        tensor = torch.stack([v.tensor for v in values]).float().to(device)  # [B, T, D]
        mask = torch.stack([v.mask for v in values]).to(device, torch.bool)[..., None]
        out = self.output_proj(tensor)
        padding = (torch.zeros_like(out[:, :1]) if self.learnt_padding is None
                   else self.learnt_padding.to(out.dtype))
        return torch.where(mask, out, padding.expand_as(out))


class ConditionProvider(nn.Module):
    """The model's conditioners by name (`conditioners.<name>`), as in Kyutai's layout."""

    def __init__(self, specs: dict[str, dict[str, Any]], output_dim: int) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict()
        for name, spec in specs.items():
            kind = spec["type"]
            if kind == "lut":
                self.conditioners[name] = LUTConditioner(output_dim, **spec[kind])
            elif kind == "tensor":
                self.conditioners[name] = TensorConditioner(output_dim, **spec[kind])
            else:
                raise ConditionError(f"conditioner {name!r}: type {kind!r} is not supported")

    @property
    def names(self) -> list[str]:
        return list(self.conditioners.keys())

    def _check(self, batch: list[ConditionValues]) -> None:
        """Every batch item gives every conditioner a value of its kind (None: absent)."""
        for item in batch:
            missing = [n for n in self.names if n not in item]
            extra = [n for n in item if n not in self.names]
            if missing or extra:
                raise ConditionError(
                    f"conditions {sorted(item)} do not match the model's conditioners "
                    f"{self.names}" + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else "")
                )
            for name, value in item.items():
                is_tensor = isinstance(self.conditioners[name], TensorConditioner)
                if is_tensor and not isinstance(value, TensorValue):
                    raise ConditionError(f"condition {name!r} takes a TensorValue, got "
                                         f"{type(value).__name__}")
                if not is_tensor and value is not None and not isinstance(value, str):
                    raise ConditionError(f"condition {name!r} takes a string or None, got "
                                         f"{type(value).__name__}")

    def sum_condition(self, batch: list[ConditionValues], names: list[str]) -> torch.Tensor:
        """The "sum" fuser: the named conditioners' outputs added, `[B, 1, dim]` (float32)."""
        self._check(batch)
        out: torch.Tensor | None = None
        for name in names:
            cond = self.conditioners[name]([item[name] for item in batch])
            out = cond if out is None else out + cond
        if out is None:
            raise ConditionError("no conditioner is fused by sum")
        return out.float()

    def cross_source(self, batch: list[ConditionValues], names: list[str],
                     pos_emb_scale: float | None) -> torch.Tensor:
        """The "cross" fuser: the named outputs concatenated in time `[B, S, dim]` (float32),
        plus `pos_emb_scale` times a sinusoidal embedding of the positions when given."""
        self._check(batch)
        parts = [self.conditioners[name]([item[name] for item in batch]).float() for name in names]
        if not parts:
            raise ConditionError("no conditioner is fused by cross")
        source = torch.cat(parts, dim=1)
        if pos_emb_scale is not None:
            positions = torch.arange(source.shape[1], device=source.device)[None]
            source = source + pos_emb_scale * sin_embedding(positions, source.shape[-1], 10_000.0)
        return source
