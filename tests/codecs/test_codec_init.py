"""A fresh codec must pass its input through, or training stalls on a constant output."""

from __future__ import annotations

import pytest
import torch

from dsm.codecs.init import unit_gain_init
from dsm.codecs.mimi import Mimi
from dsm.codecs.testing import TINY_MIMI
from dsm.recipes.tasks.codec import CodecTaskConfig


def _input_dependence(codec: Mimi) -> tuple[float, float]:
    """Relative difference of latents and of decoded audio for two unrelated inputs."""
    generator = torch.Generator().manual_seed(1)
    first, second = (0.1 * torch.randn(1, 1, 1920 * 8, generator=generator) for _ in range(2))

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / (0.5 * (a.norm() + b.norm())))

    with torch.no_grad():
        latents = codec.encode_latent(first), codec.encode_latent(second)
        audio = codec.decode_latent(latents[0]), codec.decode_latent(latents[1])
    return relative(*latents), relative(*audio)


def test_unit_gain_init_lets_the_input_through_where_torch_default_does_not() -> None:
    torch.manual_seed(0)
    default = Mimi(TINY_MIMI).eval()
    torch.manual_seed(0)
    unit_gain = unit_gain_init(Mimi(TINY_MIMI)).eval()
    _, default_audio = _input_dependence(default)
    latent, audio = _input_dependence(unit_gain)
    assert default_audio < 0.01  # the failure it fixes: the same output whatever goes in
    assert latent > 0.3 and audio > 0.3
    for module in unit_gain.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0


def test_codec_recipe_uses_it_by_default_and_checks_the_choice() -> None:
    assert CodecTaskConfig().init == "unit_gain"
    with pytest.raises(ValueError, match="init must be"):
        CodecTaskConfig(init="xavier")
