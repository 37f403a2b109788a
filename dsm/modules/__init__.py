"""Building blocks shared by codecs and models."""

from dsm.modules.layer_scale import LayerScale
from dsm.modules.norm import LayerNormF32, RMSNorm, make_norm
from dsm.modules.rope import RotaryEmbedding, apply_rope
from dsm.modules.streaming import StreamingModule, StreamingState
from dsm.modules.transformer import (
    StreamingTransformer,
    StreamingTransformerLayer,
    TransformerConfig,
    kyutai_gated_hidden,
)

__all__ = [
    "LayerNormF32",
    "LayerScale",
    "RMSNorm",
    "RotaryEmbedding",
    "StreamingModule",
    "StreamingState",
    "StreamingTransformer",
    "StreamingTransformerLayer",
    "TransformerConfig",
    "apply_rope",
    "kyutai_gated_hidden",
    "make_norm",
]
