"""Streaming inference: batched step engine, sampling, CUDA graphs, ASR / TTS / translation
sessions, the batch runner; serve/ holds the websocket server, its model seam and clients."""

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
