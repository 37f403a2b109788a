"""Neural audio codecs: the `Codec` interface, SEANet, residual vector quantization, Mimi
(Kyutai checkpoint compatible) and an adapter over the `encodec` package."""

from dsm.codecs.base import Codec
from dsm.codecs.loading import load_codec, save_codec
from dsm.codecs.mimi import Mimi, MimiConfig, load_mimi

__all__ = ["Codec", "Mimi", "MimiConfig", "load_codec", "load_mimi", "save_codec"]
