"""Norms match Kyutai's numerics and parameter names."""

from __future__ import annotations

import pytest
import torch

from dsm.modules.layer_scale import LayerScale
from dsm.modules.norm import NORM_KINDS, RMSNorm, make_norm


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_norms_match_moshi(kind: str) -> None:
    from moshi.modules.transformer import create_norm_fn
    from moshi.utils.compile import no_compile

    reference = create_norm_fn(kind, 24)
    ours = make_norm(kind, 24)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = 3.0 * torch.randn(2, 5, 24)
    with no_compile():  # moshi compiles its norm kernel lazily; the eager path is the oracle
        expected = reference(x)
    torch.testing.assert_close(ours(x), expected, atol=1e-6, rtol=1e-6)


def test_rms_norm_normalises_and_keeps_dtype() -> None:
    norm = RMSNorm(16, eps=1e-8, compute_dtype=torch.float32)
    assert norm.alpha.shape == (1, 1, 16)
    x = torch.randn(3, 4, 16).to(torch.bfloat16) * 7
    y = norm(x)
    assert y.dtype == torch.bfloat16
    rms = y.float().pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=2e-2, rtol=0)


def test_unknown_norm_is_named() -> None:
    with pytest.raises(ValueError, match="batch_norm"):
        make_norm("batch_norm", 8)


def test_layer_scale_scales_channels() -> None:
    scale = LayerScale(4, init=0.01)
    assert torch.allclose(scale(torch.ones(2, 3, 4)), torch.full((2, 3, 4), 0.01))
