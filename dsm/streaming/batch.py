"""Many whole streams through one `BatchedEngine`: the batch runner behind `dsm.transcribe`,
`dsm.speak`, `dsm.translate`, the commands and the recipes' evaluations.

Each stream's session is made with all of its input already pushed and ended; at most
`engine.num_slots` run side by side and a freed slot takes the next stream at once. A
stream whose session fails raises `StreamFailed` naming it (nothing is dropped silently),
and an engine with attached sessions none of which can step raises too (a stall).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dsm.streaming.engine import Session
from dsm.streaming.events import Event


class StreamFailed(RuntimeError):
    """One stream of a batch failed; `index` says which."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"stream {index} failed: {message}")
        self.index = index


@dataclass(frozen=True)
class TimedEvent:
    event: Event
    step: int  # the stream's own steps taken when the event came (1 for its first step)
    wall_s: float  # seconds since the stream took its slot


@dataclass
class StreamResult:
    events: list[TimedEvent] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        """The events of one type, in order."""
        return [t.event for t in self.events if isinstance(t.event, kind)]


def run_streams(engine: Any, count: int, start: Callable[[int], Session],
                on_event: Callable[[int, TimedEvent], None] | None = None
                ) -> list[StreamResult]:
    """Run streams 0..count-1 (`start(i)`: stream i's session, its input pushed and ended)
    through `engine`; each stream's events in order. `on_event(i, e)` sees them as they
    come (printing words live)."""
    results = [StreamResult() for _ in range(count)]
    pending = list(range(count))
    running: dict[Session, tuple[int, float]] = {}  # session -> (index, attach time)
    steps: dict[Session, int] = {}

    def refill() -> None:
        while pending and engine.free_slots > 0:
            index = pending.pop(0)
            session = start(index)
            engine.attach(session)
            running[session] = (index, time.perf_counter())
            steps[session] = 0

    refill()
    while running:
        if not engine.ready():
            index = min(i for i, _ in running.values())
            raise StreamFailed(index, "the engine stalled: the stream's session is attached "
                                      "but cannot step (was its input ended?)")
        for session, events in engine.step().items():
            if session not in running:
                continue
            index, attached = running[session]
            steps[session] += 1
            now = time.perf_counter() - attached
            for event in events:
                timed = TimedEvent(event, steps[session], now)
                results[index].events.append(timed)
                if on_event is not None:
                    on_event(index, timed)
            if session.finished:
                del running[session]
                if session.error:
                    raise StreamFailed(index, session.error)
        refill()
    return results
