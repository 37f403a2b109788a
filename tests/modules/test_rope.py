"""Interleaved RoPE: moshi's numerics, per-slot positions, relative-position property."""

from __future__ import annotations

import pytest
import torch

from dsm.modules.rope import apply_rope


@pytest.mark.parametrize("max_period", [10_000.0, 100_000.0])
def test_rope_matches_moshi_with_per_slot_offsets(max_period: float) -> None:
    from moshi.modules.rope import apply_rope as moshi_rope
    from moshi.utils.compile import no_compile

    q, k = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    offsets = torch.tensor([0, 11])
    with no_compile():
        expected_q, expected_k = moshi_rope(q, k, offsets, max_period, True, False)
    positions = offsets[:, None] + torch.arange(6)
    torch.testing.assert_close(apply_rope(q, positions, max_period), expected_q)
    torch.testing.assert_close(apply_rope(k, positions, max_period), expected_k)


def test_rope_scores_depend_only_on_relative_position() -> None:
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: int, pk: int) -> torch.Tensor:
        rq = apply_rope(q, torch.tensor([[pq]]), 10_000.0)
        rk = apply_rope(k, torch.tensor([[pk]]), 10_000.0)
        return (rq * rk).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(7, 3), score(7, 5), atol=1e-4)


def test_rope_refuses_odd_head_dim() -> None:
    with pytest.raises(ValueError, match="even head dimension"):
        apply_rope(torch.randn(1, 1, 2, 5), torch.zeros(1, 2, dtype=torch.long), 10_000.0)
