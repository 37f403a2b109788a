"""Parallel audio heads trained with a codebook pattern learn a toy sequence task.

Toy codes: codebook 0 follows c0[t] = 5 c0[t-1] + 1 (mod 8) from a random start, and
codebook k of a frame is 3 c[k-1] + k (mod 8). Everything but the very first code is
predictable once the pattern orders the codes so their inputs come first: the delay pattern
(0, 1, 2, 3) and stack-and-delay (2 stacks, delay 1) both do. The LM sees the pattern's
rows as its audio rows (text row empty, -1), predicts every row in parallel, and the loss
must fall far below chance (ln 8) in 200 CPU steps; the reverted logits then predict the
codes on the original grid.
"""

from __future__ import annotations

import math

import pytest
import torch

from dsm.models import LMConfig, MultistreamLM
from dsm.streams.patterns import make_pattern

K, CARD, T = 4, 8, 12


def _toy_codes(batch: int, generator: torch.Generator) -> torch.Tensor:
    codes = torch.empty(batch, K, T, dtype=torch.long)
    codes[:, 0, 0] = torch.randint(0, CARD, (batch,), generator=generator)
    for t in range(T):
        if t:
            codes[:, 0, t] = (codes[:, 0, t - 1] * 5 + 1) % CARD
        for k in range(1, K):
            codes[:, k, t] = (codes[:, k - 1, t] * 3 + k) % CARD
    return codes


@pytest.mark.parametrize(
    ("name", "options"),
    [("delay", {"delays": [0, 1, 2, 3]}), ("stack_delay", {"num_stacks": 2, "stack_delay": 1})],
)
def test_parallel_heads_learn_toy_task_with_pattern(name: str, options: dict) -> None:
    pattern = make_pattern(name, K, **options)
    rows = pattern.num_rows
    config = LMConfig(
        dim=64, num_heads=4, num_layers=2, hidden_scale=2, context=None, norm="rms_norm_f32",
        gating="silu", positional_embedding="rope", card=CARD, n_q=rows, dep_q=rows, text_card=4,
        delays=[0] * (rows + 1), audio_heads="parallel",
    )
    lm = MultistreamLM(config)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        codes = _toy_codes(size, generator)
        sequence, _ = pattern.build(codes, fill_value=-1)  # empty cells: no input, no loss
        text = torch.full((size, 1, sequence.shape[2]), -1)
        return codes, torch.cat([text, sequence], dim=1)

    chance = math.log(CARD)
    losses = []
    for _ in range(200):
        _, tokens = batch(16)
        loss = lm.compute_loss(tokens, text_weight=0.0).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * chance  # it starts at chance
    codes, tokens = batch(64)
    with torch.no_grad():
        out = lm(tokens)
        final = lm.compute_loss(tokens, out, text_weight=0.0).total.item()
        grid_logits, grid_mask = pattern.revert_logits(out.logits, num_frames=T)
    assert final < 0.2 * chance, (name, final)
    assert grid_mask.all()
    accuracy = (grid_logits.argmax(-1) == codes)[:, :, 1:].float().mean().item()
    assert accuracy > 0.95, (name, accuracy)
