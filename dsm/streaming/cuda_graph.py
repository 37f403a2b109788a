"""Capture a step function once as a CUDA graph and replay it.

The function takes no arguments: it reads and writes preallocated buffers that its owner
fills before each call (`copy_` into them) and reads after. On the first calls it runs
eagerly (warm-up, lazy allocations); then it is captured once and every later call is a
replay. On CPU, or with `enabled=False`, it always runs eagerly: the same code path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphedStep:
    """Eager `warmup` calls, then one capture, then replays of `fn` (a no-argument step)."""

    def __init__(self, fn: Callable[[], None], enabled: bool, warmup: int = 2) -> None:
        self.fn = fn
        self.enabled = enabled and torch.cuda.is_available()
        self.warmup = warmup
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self) -> None:
        if not self.enabled:
            self.fn()
            return
        if self._graph is not None:
            self._graph.replay()
            return
        self._calls += 1
        if self._calls <= self.warmup:
            # Warm-up on a side stream, as graph capture wants (allocator, lazy init).
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.fn()
            torch.cuda.current_stream().wait_stream(stream)
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.fn()
        self._graph = graph
        # Capture records without running: run once so this call has its effect.
        graph.replay()
