"""Normalisation layers with Kyutai's parameter names and numerics.

`RMSNorm` keeps its gain in `alpha` with shape `[1, 1, dim]` (the checkpoint layout);
LayerNorm is torch's (`weight`, `bias`). `make_norm(kind, dim)` picks one by the names used
in Kyutai configs: "layer_norm", "layer_norm_f32", "rms_norm", "rms_norm_f32".
"""

from __future__ import annotations

import torch
from torch import nn

NORM_KINDS = ("layer_norm", "layer_norm_f32", "rms_norm", "rms_norm_f32")


class RMSNorm(nn.Module):
    """y = x * alpha / sqrt(eps + mean(x^2)) over the last dim, optionally computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.compute_dtype = compute_dtype
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        if self.compute_dtype is not None and in_dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        var = torch.mean(x * x, dim=-1, keepdim=True).add_(self.eps)
        alpha = self.alpha
        gain = (alpha if alpha.dtype == var.dtype else alpha.to(var.dtype)).view(-1)
        y = x * (gain * torch.rsqrt_(var))
        return y if y.dtype == in_dtype else y.to(in_dtype)


class LayerNormF32(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (Kyutai's `layer_norm_f32`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).to(x.dtype)


def make_norm(kind: str, dim: int) -> nn.Module:
    """Build the norm named `kind` (eps as in Kyutai's models)."""
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "layer_norm_f32":
        return LayerNormF32(dim, eps=1e-8)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=1e-5)
    if kind == "rms_norm_f32":
        return RMSNorm(dim, eps=1e-8, compute_dtype=torch.float32)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORM_KINDS)}")
