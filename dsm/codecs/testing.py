"""Random codec weights for tests and benchmarks: usable codebooks and a tiny Mimi.

A freshly built Mimi (ours or `moshi`'s) has codebooks that map every vector to the same
code, so random-weight tests and benchmarks first give them random centroids.
"""

from __future__ import annotations

import torch

from dsm.codecs.mimi import Mimi, MimiConfig
from dsm.codecs.seanet import SEANetConfig
from dsm.modules.transformer import TransformerConfig

TINY_MIMI = MimiConfig(
    seanet=SEANetConfig(dimension=32, n_filters=4, ratios=[8, 6, 5, 4]),
    transformer=TransformerConfig(d_model=32, num_heads=4, num_layers=1, dim_feedforward=64,
                                  context=20, layer_scale=0.01),
    codebook_dim=16, n_q=4, bins=64,
)
"""Mimi's rates (24 kHz, 12.5 Hz, 1920-sample frames) at a size that costs nothing."""


@torch.no_grad()
def randomize_codebooks(module: torch.nn.Module) -> None:
    """Give every codebook in `module` (ours or `moshi`'s) random centroids, in place:
    `embedding_sum` normal, `cluster_usage` in [0.5, 1.5), moshi's `_initialized` set."""
    for name, buffer in module.named_buffers():
        if name.endswith("embedding_sum"):
            buffer.copy_(torch.randn_like(buffer))
        elif name.endswith("cluster_usage"):
            buffer.copy_(torch.rand_like(buffer) + 0.5)
        elif name.endswith("_initialized"):
            buffer.fill_(1.0)


def tiny_random_mimi(seed: int, config: MimiConfig = TINY_MIMI) -> Mimi:
    """A Mimi of `config` with weights drawn after `torch.manual_seed(seed)`, usable
    codebooks, in eval mode."""
    torch.manual_seed(seed)
    codec = Mimi(config)
    randomize_codebooks(codec)
    return codec.eval()
