"""Layer scale: a learnt per-channel gain on a residual branch, initialised small."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiplies `[..., C]` inputs by `scale` (`[C]`, Kyutai's parameter name)."""

    def __init__(self, channels: int, init: float = 1e-4) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x
