"""Rotary position embedding (RoPE), interleaved (Kyutai's "rope") or not ("rope_concat").

Channel pairs of each head are rotated by angle `position * f_i` with
`f_i = max_period ** (-2i / D)`. Interleaved, pair i is channels (2i, 2i+1); non-interleaved
("rope_concat", Hibiki-Zero), pair i is channels (i, i + D/2): the real parts are the first
D/2 channels, the imaginary parts the last D/2. Positions are per batch slot (`[B, T]`), so
every slot of a streaming batch can be at its own step. Computed in fp32, returned in the
input dtype.

A transformer computes the rotation tables once per call (`rope_tables`) and every layer
rotates its queries and keys with them (`rotate_pairs` / `rotate_halves`): a few kernels per
layer instead of recomputing the angles. The arithmetic is moshi's, term for term:
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


def rope_tables(
    positions: torch.Tensor, head_dim: int, max_period: float, interleave: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 tables `(cos, signed_sin)` for integer positions `[B, T]`.

    Interleaved (for `rotate_pairs`): each `[B, T, head_dim // 2, 2]`, `cos` holding (cos, cos)
    for every channel pair and `signed_sin` (-sin, sin). Non-interleaved (for `rotate_halves`):
    each `[B, T, 2, head_dim // 2]`, the same values with the (real, imag) axis first.
    """
    angles = rope_angles(positions, head_dim, max_period)  # [B, T, D/2]
    axis = -1 if interleave else -2
    angles = angles.unsqueeze(axis)  # [B, T, D/2, 1] or [B, T, 1, D/2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.cat([cos, cos], dim=axis), torch.cat([-sin, sin], dim=axis)


def rotate_pairs(pairs: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate `pairs [..., D/2, 2]` (channel pairs last) by tables that broadcast to it.

    `pairs * cos + swapped * signed_sin` with `swapped` = (imag, real) gives exactly
    `real cos - imag sin` and `imag cos + real sin` (IEEE: a + (-b) == a - b).
    """
    return _rotate(pairs, cos, signed_sin, -1)


def rotate_halves(
    halves: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor
) -> torch.Tensor:
    """Rotate `halves [..., 2, D/2]` (real parts, then imaginary parts) by tables that
    broadcast to it: the non-interleaved layout, with `rotate_pairs`' arithmetic."""
    return _rotate(halves, cos, signed_sin, -2)


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, axis: int
) -> torch.Tensor:
    """`x * cos + x.flip(axis) * signed_sin` in fp32, where `axis` (size 2) is (real, imag)."""
    dtype = x.dtype
    if dtype != torch.float32:
        x = x.float()
    out = x * cos + x.flip(axis) * signed_sin
    return out if dtype == torch.float32 else out.to(dtype)


def apply_rope(
    x: torch.Tensor, positions: torch.Tensor, max_period: float, interleave: bool = True
) -> torch.Tensor:
    """Rotate `x` `[B, H, T, D]` (D even) by its positions `[B, T]` (or `[1, T]`)."""
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {D}")
    cos, signed_sin = rope_tables(positions, D, max_period, interleave)
    cos, signed_sin = cos[:, None], signed_sin[:, None]  # [B, 1, T, ...]
    if interleave:
        return rotate_pairs(x.reshape(B, H, T, D // 2, 2), cos, signed_sin).reshape(B, H, T, D)
    return rotate_halves(x.reshape(B, H, T, 2, D // 2), cos, signed_sin).reshape(B, H, T, D)


class RotaryEmbedding(nn.Module):
    """RoPE with a configurable `max_period` (1e4 for Mimi and Moshi, 1e5 for the STT LMs);
    `interleave=False` is Kyutai's "rope_concat" layout."""

    def __init__(self, max_period: float = 10_000.0, interleave: bool = True) -> None:
        super().__init__()
        self.max_period = float(max_period)
        self.interleave = interleave

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            apply_rope(q, positions, self.max_period, self.interleave),
            apply_rope(k, positions, self.max_period, self.interleave),
        )
