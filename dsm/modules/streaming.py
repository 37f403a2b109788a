"""Explicit streaming state shared by every stateful layer of codecs and models.

A `StreamingModule` owns no hidden buffers: inside `with module.streaming(batch_size):`
each streaming submodule holds one `StreamingState` object made by its `init_state`,
and outside it holds none. Offline and streaming calls go through the same `forward`;
a layer looks at `self.state` to know which it is doing.

State tensors have the batch as their first dimension and are updated in place, so that a
CUDA graph captured over a step keeps pointing at them. `reset_slots(mask)` returns the
chosen batch slots to their initial state without touching the others, which is how a new
stream joins slot 3 while slots 0-2 go on. `set_active(mask)` makes the following steps
skip the slots outside `mask`: their state stays exactly as it was (their outputs of those
steps are to be ignored), so a stream with no input yet waits without hearing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class StreamingState:
    """Base class for one module's streaming state. Subclasses hold `[B, ...]` tensors."""

    def reset(self, slots: torch.Tensor) -> None:
        """Return the slots where `slots` (bool `[B]`) is True to their initial state."""
        raise NotImplementedError



def active_slots(batch_size: int, device: torch.device | str) -> torch.Tensor:
    """A state's `active` mask `[B]`: the slots the next step advances (all, at first)."""
    return torch.ones(batch_size, dtype=torch.bool, device=device)


class StreamingModule(nn.Module):
    """A module that can run offline or frame by frame with explicit, resettable state."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: StreamingState | None = None
        self._streaming_batch_size: int | None = None

    # --- to override -------------------------------------------------------------------
    def init_state(self, batch_size: int) -> StreamingState | None:
        """Make this module's own state (children make theirs). None: stateless."""
        return None

    # --- public ------------------------------------------------------------------------
    @property
    def state(self) -> StreamingState | None:
        return self._streaming_state

    @property
    def is_streaming(self) -> bool:
        return self._streaming_batch_size is not None

    @property
    def streaming_batch_size(self) -> int | None:
        return self._streaming_batch_size

    def streaming_modules(self) -> Iterator[StreamingModule]:
        for module in self.modules():
            if isinstance(module, StreamingModule):
                yield module

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[StreamingModule]:
        """Enter streaming mode for `batch_size` independent slots; state ends with it."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        modules = list(self.streaming_modules())
        busy = [m for m in modules if m.is_streaming]
        if busy:
            raise RuntimeError(
                f"{type(busy[0]).__name__} is already streaming; leave its streaming() first"
            )
        try:
            for module in modules:
                module._streaming_batch_size = batch_size
                module._streaming_state = module.init_state(batch_size)
            yield self
        finally:
            for module in modules:
                module._streaming_state = None
                module._streaming_batch_size = None

    def reset_slots(self, slots: torch.Tensor | None = None) -> None:
        """Reset the state of the chosen batch slots (bool `[B]`; None: all of them)."""
        if not self.is_streaming:
            raise RuntimeError(f"{type(self).__name__}.reset_slots needs streaming() first")
        assert self._streaming_batch_size is not None
        if slots is None:
            slots = torch.ones(self._streaming_batch_size, dtype=torch.bool)
        slots = slots.to(torch.bool)
        if slots.shape != (self._streaming_batch_size,):
            raise ValueError(
                f"slots must be a bool tensor of shape [{self._streaming_batch_size}], "
                f"got {tuple(slots.shape)}"
            )
        for module in self.streaming_modules():
            state = module._streaming_state
            if state is not None:
                state.reset(slots.to(_state_device(state, slots.device)))


    def set_active(self, slots: torch.Tensor | None = None) -> None:
        """Which slots the next steps advance (bool `[B]`; None: all); the others keep their
        state. In place, so a CUDA graph captured over a step reads the current mask."""
        if not self.is_streaming:
            raise RuntimeError(f"{type(self).__name__}.set_active needs streaming() first")
        batch = self._streaming_batch_size
        assert batch is not None
        if slots is None:
            slots = torch.ones(batch, dtype=torch.bool)
        if slots.shape != (batch,):
            raise ValueError(f"slots must be a bool tensor of shape [{batch}], "
                             f"got {tuple(slots.shape)}")
        for module in self.streaming_modules():
            active = getattr(module._streaming_state, "active", None)
            if active is not None:
                active.copy_(slots.to(active.device, torch.bool))


def _state_device(state: StreamingState, default: torch.device) -> torch.device:
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            return value.device
    return default
