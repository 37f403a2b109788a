"""Test doubles for the streaming engine (not models: they only honour the LM contract).

`ScriptedLMForTests` stands in for `MultistreamLM` where a test needs to know exactly what
the model outputs: slot `b`'s text logits at its `p`-th step put all their mass on
`text_scripts[b][p]` (pad once the script is over), whatever the input; its "depformer"
proposes audio code `(prev + k + 1) % card` for codebook k. It keeps a position counter per
slot in explicit streaming state, so `reset_slots` restarts a slot's script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dsm.modules.streaming import StreamingModule, StreamingState


@dataclass
class ScriptedConfig:
    n_q: int
    dep_q: int
    card: int
    text_card: int
    delays: list[int] = field(default_factory=list)
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 0


class _ScriptState(StreamingState):
    def __init__(self, batch_size: int) -> None:
        self.positions = torch.zeros(batch_size, dtype=torch.long)
        self.active = torch.ones(batch_size, dtype=torch.bool)  # slots the step advances

    def reset(self, slots: torch.Tensor) -> None:
        self.positions.masked_fill_(slots, 0)


class ScriptedLMForTests(StreamingModule):
    """A fake LM whose text output is scripted per slot (see the module docstring)."""

    def __init__(
        self,
        text_scripts: Sequence[Sequence[int]],
        *,
        n_q: int = 2,
        dep_q: int = 0,
        card: int = 64,
        text_card: int = 400,
        delays: list[int] | None = None,
        pad_id: int = 3,
    ) -> None:
        super().__init__()
        if delays is None:
            delays = [0] * (1 + n_q)
        self.config = ScriptedConfig(n_q, dep_q, card, text_card, list(delays))
        self.scripts = [list(s) for s in text_scripts]
        self.pad_id = pad_id
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the streamer a device
        self.depformer = object() if dep_q > 0 else None
        self.inputs_seen: list[torch.Tensor] = []

    def init_state(self, batch_size: int) -> _ScriptState:
        return _ScriptState(batch_size)

    def forward_temporal(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state
        assert isinstance(state, _ScriptState)
        batch = codes.shape[0]
        self.inputs_seen.append(codes.clone())
        logits = torch.full((batch, 1, 1, self.config.text_card), -1e4)
        for slot in range(batch):
            script = self.scripts[slot % len(self.scripts)]
            position = int(state.positions[slot])
            token = script[position] if position < len(script) else self.pad_id
            logits[slot, 0, 0, token] = 0.0
        state.positions += state.active.long()
        hidden = torch.zeros(batch, 1, 4)
        return hidden, logits

    def depformer_reset(self) -> None:
        pass

    def depformer_step(self, k: int, hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        batch = hidden.shape[0]
        target = (prev[:, 0].clamp_min(0) + k + 1) % self.config.card
        logits = torch.full((batch, 1, self.config.card), -1e4)
        logits[torch.arange(batch), 0, target] = 0.0
        return logits
