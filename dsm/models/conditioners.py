"""Conditioning of a multistream LM on per-stream attributes (Kyutai's `conditioners`).

Hibiki is conditioned on a "description" label ("very_good", ...) through a lookup table
whose output is added to every step's input (the "sum" fuser). A conditioner maps one value
per batch item to a vector `[B, 1, dim]`:

- `LUTConditioner`: the value is an index into `embed` (its position in `possible_values`,
  or a sha256 hash of it modulo `n_bins` when the values are open); `output_proj` maps the
  table width to the model's `dim`. A missing value (None) gives `learnt_padding` instead.

Module and parameter names are Kyutai's (`condition_provider.conditioners.<name>.embed`,
`.output_proj`, `.learnt_padding`), and their weights stay in float32 as Kyutai stores them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

ConditionValues = dict[str, "str | None"]
"""One batch item's conditions: conditioner name -> value (None: absent)."""


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


class ConditionProvider(nn.Module):
    """The model's conditioners by name (`conditioners.<name>`), as in Kyutai's layout."""

    def __init__(self, specs: dict[str, dict[str, Any]], output_dim: int) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict()
        for name, spec in specs.items():
            kind = spec["type"]
            if kind != "lut":
                raise ConditionError(f"conditioner {name!r}: type {kind!r} is not supported")
            self.conditioners[name] = LUTConditioner(output_dim, **spec[kind])

    @property
    def names(self) -> list[str]:
        return list(self.conditioners.keys())

    def sum_condition(self, batch: list[ConditionValues], names: list[str]) -> torch.Tensor:
        """The "sum" fuser: the named conditioners' outputs added, `[B, 1, dim]` (float32).

        Every batch item must give every conditioner a value (None for "absent").
        """
        out: torch.Tensor | None = None
        for item in batch:
            missing = [n for n in self.names if n not in item]
            extra = [n for n in item if n not in self.names]
            if missing or extra:
                raise ConditionError(
                    f"conditions {sorted(item)} do not match the model's conditioners "
                    f"{self.names}" + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else "")
                )
        for name in names:
            cond = self.conditioners[name]([item[name] for item in batch])
            out = cond if out is None else out + cond
        if out is None:
            raise ConditionError("no conditioner is fused by sum")
        return out.float()
