"""Helpers shared by several test files: chunked streaming with a slot reset, and random
LMs whose text head says something. Import explicitly: `from helpers import ...`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def feed_in_chunks(step: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
                   x: torch.Tensor, chunk: int, reset_at: int | None = None,
                   reset_slot: int = 1) -> torch.Tensor:
    """`step` on `x` `[B, ..., T]` in chunks of `chunk` along T, outputs joined on the last
    dim; before chunk number `reset_at`, `module.reset_slots` resets slot `reset_slot`.
    The caller holds `module`'s streaming context."""
    outputs = []
    for index, start in enumerate(range(0, x.shape[-1], chunk)):
        if index == reset_at:
            mask = torch.zeros(x.shape[0], dtype=torch.bool)
            mask[reset_slot] = True
            module.reset_slots(mask)
        outputs.append(step(x[..., start:start + chunk]))
    return torch.cat(outputs, dim=-1)


def stream_in_chunks(module: torch.nn.Module, x: torch.Tensor, chunk: int,
                     reset_at: int | None = None, reset_slot: int = 1) -> torch.Tensor:
    """`module` called on `x` `[B, C, T]` chunk by chunk inside `module.streaming(B)`
    (see `feed_in_chunks`)."""
    with module.streaming(x.shape[0]):
        return feed_in_chunks(module, module, x, chunk, reset_at, reset_slot)


def keep_text_pieces(lm: torch.nn.Module, pieces: Iterable[int]) -> None:
    """Random text heads rarely end a word: keep only pad (3), word start (0) and `pieces`
    in `lm.text_linear`, scaled up so that they win, in place."""
    with torch.no_grad():
        weight = lm.text_linear.weight
        keep = torch.zeros(weight.shape[0], dtype=torch.bool)
        keep[[0, 3, *pieces]] = True
        weight[~keep] = 0.0
        weight[keep] *= 20.0
