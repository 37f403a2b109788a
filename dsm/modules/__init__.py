"""Building blocks shared by codecs and models."""

from dsm.modules.streaming import StreamingModule, StreamingState

__all__ = ["StreamingModule", "StreamingState"]
