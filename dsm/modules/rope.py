"""Interleaved rotary position embedding (RoPE).

Channel pairs (2i, 2i+1) of each head are rotated by angle `position * f_i` with
`f_i = max_period ** (-2i / D)`. Positions are per batch slot (`[B, T]`), so every slot of
a streaming batch can be at its own step. Computed in fp32, returned in the input dtype.

A transformer computes the rotation tables once per call (`rope_tables`) and every layer
rotates its queries and keys with them (`rotate_pairs`): a few kernels per layer instead
of recomputing the angles. The arithmetic is moshi's, term for term:
`real' = real cos - imag sin`, `imag' = real sin + imag cos`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_angles(positions: torch.Tensor, head_dim: int, max_period: float) -> torch.Tensor:
    """Rotation angles `[B, T, head_dim // 2]` for integer positions `[B, T]`."""
    half = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(half * (-2.0 * math.log(max_period) / head_dim))
    return positions.to(torch.float32)[..., None] * freqs


def rope_tables(positions: torch.Tensor, head_dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 tables `(cos, signed_sin)`, each `[B, T, head_dim // 2, 2]`, for `rotate_pairs`.

    `cos` holds (cos, cos) for every channel pair, `signed_sin` holds (-sin, sin).
    """
    angles = rope_angles(positions, head_dim, max_period)[..., None]  # [B, T, D/2, 1]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return cos.expand(*cos.shape[:-1], 2).contiguous(), torch.cat([-sin, sin], dim=-1)


def rotate_pairs(pairs: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate `pairs [..., D/2, 2]` (channel pairs last) by tables that broadcast to it.

    `pairs * cos + swapped * signed_sin` with `swapped` = (imag, real) gives exactly
    `real cos - imag sin` and `imag cos + real sin` (IEEE: a + (-b) == a - b).
    """
    dtype = pairs.dtype
    if dtype != torch.float32:
        pairs = pairs.float()
    out = pairs * cos + pairs.flip(-1) * signed_sin
    return out if dtype == torch.float32 else out.to(dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, max_period: float) -> torch.Tensor:
    """Rotate `x` `[B, H, T, D]` (D even) by its positions `[B, T]` (or `[1, T]`)."""
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {D}")
    cos, signed_sin = rope_tables(positions, D, max_period)  # [B, T, D/2, 2]
    pairs = x.reshape(B, H, T, D // 2, 2)
    return rotate_pairs(pairs, cos[:, None], signed_sin[:, None]).reshape(B, H, T, D)


class RotaryEmbedding(nn.Module):
    """RoPE with a configurable `max_period` (1e4 for Mimi and Moshi, 1e5 for the STT LMs)."""

    def __init__(self, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.max_period = float(max_period)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return apply_rope(q, positions, self.max_period), apply_rope(k, positions, self.max_period)
