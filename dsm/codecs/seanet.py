"""SEANet convolutional encoder and decoder (causal, streamable).

The encoder maps audio `[B, channels, N]` to latents `[B, dimension, N / hop]` through a
first convolution, then per downsampling ratio some residual blocks and a strided
convolution (kernel 2·ratio), then a last convolution. The decoder mirrors it with
transposed convolutions. Module order inside `model` (activations included) follows
Kyutai's layout, so their checkpoints line up index by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from dsm.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from dsm.modules.streaming import StreamingModule


@dataclass
class SEANetConfig:
    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 6, 5, 4])  # decoder order
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    true_skip: bool = True
    pad_mode: str = "constant"
    activation_alpha: float = 1.0  # ELU alpha

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


class SEANetResnetBlock(StreamingModule):
    """x + block(x), block = ELU, conv(k, dilation) to dim/compress, ELU, conv(1) back."""

    def __init__(self, dim: int, dilation: int, config: SEANetConfig) -> None:
        super().__init__()
        hidden = dim // config.compress
        self.block = nn.Sequential(
            nn.ELU(config.activation_alpha),
            StreamingConv1d(dim, hidden, config.residual_kernel_size, dilation=dilation,
                            pad_mode=config.pad_mode),
            nn.ELU(config.activation_alpha),
            StreamingConv1d(hidden, dim, 1, pad_mode=config.pad_mode),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if config.true_skip
            else StreamingConv1d(dim, dim, 1, pad_mode=config.pad_mode)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(StreamingModule):
    """audio `[B, channels, N]` (N a multiple of hop_length) -> latents `[B, dimension, N/hop]`."""

    def __init__(self, config: SEANetConfig) -> None:
        super().__init__()
        self.config = config
        self.dimension = config.dimension
        self.hop_length = config.hop_length
        c, alpha = config, config.activation_alpha
        width = c.n_filters
        layers: list[nn.Module] = [
            StreamingConv1d(c.channels, width, c.kernel_size, pad_mode=c.pad_mode)
        ]
        for ratio in reversed(c.ratios):
            for j in range(c.n_residual_layers):
                layers.append(SEANetResnetBlock(width, c.dilation_base**j, c))
            layers += [
                nn.ELU(alpha),
                StreamingConv1d(width, 2 * width, 2 * ratio, stride=ratio, pad_mode=c.pad_mode),
            ]
            width *= 2
        layers += [
            nn.ELU(alpha),
            StreamingConv1d(width, c.dimension, c.last_kernel_size, pad_mode=c.pad_mode),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(StreamingModule):
    """latents `[B, dimension, T]` -> audio `[B, channels, T * hop_length]`."""

    def __init__(self, config: SEANetConfig) -> None:
        super().__init__()
        self.config = config
        self.dimension = config.dimension
        self.hop_length = config.hop_length
        c, alpha = config, config.activation_alpha
        width = c.n_filters * 2 ** len(c.ratios)
        layers: list[nn.Module] = [
            StreamingConv1d(c.dimension, width, c.kernel_size, pad_mode=c.pad_mode)
        ]
        for ratio in c.ratios:
            layers += [
                nn.ELU(alpha),
                StreamingConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio),
            ]
            width //= 2
            for j in range(c.n_residual_layers):
                layers.append(SEANetResnetBlock(width, c.dilation_base**j, c))
        layers += [
            nn.ELU(alpha),
            StreamingConv1d(width, c.channels, c.last_kernel_size, pad_mode=c.pad_mode),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
