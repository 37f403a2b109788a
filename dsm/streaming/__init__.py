"""Streaming inference: batched step engine, sampling, CUDA graphs, ASR / TTS / translation
sessions (the websocket server and clients live here too)."""

from dsm.streaming.engine import BatchedEngine, EngineFullError, Session, SessionClosedError
from dsm.streaming.sampling import SamplingParams, SlotRandom, sample_tokens
from dsm.streaming.streamer import UNGENERATED, LMStreamer

__all__ = [
    "UNGENERATED",
    "BatchedEngine",
    "EngineFullError",
    "LMStreamer",
    "SamplingParams",
    "Session",
    "SessionClosedError",
    "SlotRandom",
    "sample_tokens",
]
