"""The explicit streaming-state contract every stateful layer relies on."""

from __future__ import annotations

import pytest
import torch

from dsm.modules.streaming import StreamingModule, StreamingState


class _CountState(StreamingState):
    def __init__(self, batch_size: int) -> None:
        self.count = torch.zeros(batch_size, dtype=torch.long)

    def reset(self, slots: torch.Tensor) -> None:
        self.count[slots] = 0


class _Counter(StreamingModule):
    def init_state(self, batch_size: int) -> StreamingState:
        return _CountState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state
        assert isinstance(state, _CountState)
        state.count += x.shape[-1]
        return state.count.clone()


class _Parent(StreamingModule):
    def __init__(self) -> None:
        super().__init__()
        self.child = _Counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x)


def test_state_exists_only_inside_streaming_and_resets_per_slot() -> None:
    parent = _Parent()
    assert parent.child.state is None
    with parent.streaming(3):
        parent(torch.zeros(3, 1, 2))
        out = parent(torch.zeros(3, 1, 2))
        assert out.tolist() == [4, 4, 4]
        parent.reset_slots(torch.tensor([False, True, False]))
        out = parent(torch.zeros(3, 1, 1))
        assert out.tolist() == [5, 1, 5]
    assert parent.child.state is None and not parent.is_streaming


def test_nested_streaming_and_bad_slots_are_refused() -> None:
    parent = _Parent()
    with parent.streaming(2):
        with pytest.raises(RuntimeError, match="already streaming"):
            with parent.child.streaming(2):
                pass
        with pytest.raises(ValueError, match="shape"):
            parent.reset_slots(torch.tensor([True, False, True]))
    with pytest.raises(RuntimeError, match="streaming"):
        parent.reset_slots()
