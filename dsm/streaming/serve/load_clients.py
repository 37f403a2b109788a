"""Real-time streaming ASR clients for load tests (`dsm bench serve`): each streams audio
at real time with a Marker after every frame and measures the latency the server adds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import websockets

from dsm.streaming.events import MarkerEvent, StepEvent, WordEvent
from dsm.streaming.serve.clients import ASR_PATH, endpoint
from dsm.streaming.serve.protocol import (
    FRAME_SIZE,
    SAMPLE_RATE,
    ErrorOut,
    decode_server_message,
    encode_audio_in,
    encode_marker_in,
)
from dsm.streams.silence import silence_pcm

END_MARKER = 1  # the marker after the last frame; frame k's own marker is k + FIRST_FRAME_MARKER


FIRST_FRAME_MARKER = 2


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per Step
    words: list[str] = field(default_factory=list)
    error: str | None = None
    sent_at: dict[int, float] = field(default_factory=dict)  # frame -> when it was sent
    # frame k's marker -> (when its echo came, how many frames had been sent by then)
    echoes: dict[int, tuple[float, int]] = field(default_factory=dict)


def marker_latencies(results: list[ClientResult], delay: int | None) -> tuple[list[float], int]:
    """Added latency per frame from the markers sent after every frame, for models without
    VAD heads (no `Step`): the marker after frame k comes back once the model has stepped
    frame k + d (d: its text delay in frames), so the latency of frame k + d is its echo
    time minus when that frame was sent. d is `delay`, or else the fewest frames any echo
    needed (exact as soon as one frame is answered within a frame period, 80 ms)."""
    if delay is None:
        spans = [sent - k - 1 for r in results for k, (_, sent) in r.echoes.items()]
        delay = max(0, min(spans)) if spans else 0
    latencies = [echo - r.sent_at[k + delay] for r in results
                 for k, (echo, _) in r.echoes.items() if k + delay in r.sent_at]
    return latencies, delay


async def run_client(url: str, pcm: np.ndarray, seconds: float, api_key: str | None,
                     start_at: float) -> ClientResult:
    """Stream `pcm` (looped) at real time for `seconds`, then flush with a marker."""
    result = ClientResult()
    sent_at = result.sent_at  # the audio's frames, then the silence's
    frames = int(seconds * SAMPLE_RATE / FRAME_SIZE)  # of the audio
    done = asyncio.Event()
    try:
        headers = {"kyutai-api-key": api_key} if api_key else {}
        async with websockets.connect(endpoint(url, ASR_PATH), additional_headers=headers,
                                      compression=None, max_size=1 << 22) as ws:

            async def send() -> None:
                for k in range(frames):
                    due = start_at + k * FRAME_SIZE / SAMPLE_RATE
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    offset = (k * FRAME_SIZE) % max(1, len(pcm) - FRAME_SIZE)
                    sent_at[k] = time.monotonic()
                    await ws.send(encode_audio_in(pcm[offset:offset + FRAME_SIZE]))
                    await ws.send(encode_marker_in(k + FIRST_FRAME_MARKER))
                await ws.send(encode_marker_in(END_MARKER))
                silence = silence_pcm(FRAME_SIZE)
                while not done.is_set():  # silence until the marker is back, at real time
                    sent_at[len(sent_at)] = time.monotonic()  # frames, for the marker timing
                    await ws.send(encode_audio_in(silence))
                    await asyncio.sleep(FRAME_SIZE / SAMPLE_RATE)

            sender = asyncio.create_task(send())
            try:
                async for data in ws:
                    message = decode_server_message(data)
                    if isinstance(message, StepEvent) and message.step_idx - 1 < frames:
                        result.latencies.append(
                            time.monotonic() - sent_at[message.step_idx - 1])
                    elif isinstance(message, WordEvent):
                        result.words.append(message.text)
                    elif isinstance(message, MarkerEvent) and message.id >= FIRST_FRAME_MARKER:
                        result.echoes[message.id - FIRST_FRAME_MARKER] = (time.monotonic(),
                                                                          len(sent_at))
                    elif isinstance(message, MarkerEvent):
                        break
                    elif isinstance(message, ErrorOut):
                        result.error = message.message
                        break
                else:
                    result.error = f"closed early: {ws.close_code} {ws.close_reason}"
            finally:
                done.set()
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    except Exception as error:  # a failed client is reported, the others go on
        result.error = f"{type(error).__name__}: {error}"
    return result


async def run_clients(url: str, pcm: np.ndarray, clients: int, seconds: float,
                      api_key: str | None, deadline_s: float) -> list[ClientResult]:
    start_at = time.monotonic() + 0.5
    tasks = [asyncio.create_task(run_client(url, pcm, seconds, api_key, start_at))
             for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    results = []
    for task in tasks:
        if task in done:
            results.append(task.result())
        else:
            results.append(ClientResult(error="did not finish in time"))
    await asyncio.gather(*pending, return_exceptions=True)
    return results
