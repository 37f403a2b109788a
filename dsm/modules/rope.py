"""Interleaved rotary position embedding (RoPE).

Channel pairs (2i, 2i+1) of each head are rotated by angle `position * f_i` with
`f_i = max_period ** (-2i / D)`. Positions are per batch slot (`[B, T]`), so every slot of
a streaming batch can be at its own step. Computed in fp32, returned in the input dtype.
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


def apply_rope(x: torch.Tensor, positions: torch.Tensor, max_period: float) -> torch.Tensor:
    """Rotate `x` `[B, H, T, D]` (D even) by its positions `[B, T]` (or `[1, T]`)."""
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {D}")
    angles = rope_angles(positions, D, max_period)[:, None]  # [B, 1, T, D/2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.reshape(B, H, T, D // 2, 2)
    real, imag = pairs[..., 0].float(), pairs[..., 1].float()
    out_real = real * cos - imag * sin
    out_imag = real * sin + imag * cos
    return torch.stack([out_real.to(x.dtype), out_imag.to(x.dtype)], dim=-1).reshape(B, H, T, D)


class RotaryEmbedding(nn.Module):
    """RoPE with a configurable `max_period` (1e4 for Mimi and Moshi, 1e5 for the STT LMs)."""

    def __init__(self, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.max_period = float(max_period)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return apply_rope(q, positions, self.max_period), apply_rope(k, positions, self.max_period)
