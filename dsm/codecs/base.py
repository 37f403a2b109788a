"""The `Codec` interface every audio tokenizer of dsm implements.

A codec turns mono audio `wav [B, 1, N]` (float, at `sample_rate`) into integer codes
`[B, K, T]` (K = `num_codebooks`, values in `[0, cardinality)`, T = frames at
`frame_rate`, one frame per `frame_size` samples) and back. Offline `encode` pads the audio
on the right to whole frames; `decode` returns `T * frame_size` samples.

Streaming: inside `with codec.streaming(batch_size):`, `encode_step(frame [B, 1, frame_size])`
returns the codes `[B, K, 1]` of that frame and `decode_step(codes [B, K, 1])` returns
`[B, 1, frame_size]` samples; both keep their own state, and `reset_slots(mask [B])` starts
the chosen slots afresh. Frame-by-frame results equal the offline ones.

`delay_samples`: decode(encode(x)) reconstructs x delayed by this many samples (an
algorithmic delay fixed by the codec's design; 0 for Mimi and EnCodec). Training losses
and evaluation compare the output with the input shifted by it.

Inputs are checked here, once, so that every codec reports bad input the same way.
"""

from __future__ import annotations

import torch

from dsm.modules.streaming import StreamingModule


class Codec(StreamingModule):
    """Base class: subclasses set the attributes below and implement the `_...` methods."""

    sample_rate: int
    frame_rate: float
    frame_size: int
    cardinality: int
    delay_samples: int = 0

    @property
    def num_codebooks(self) -> int:
        """Codebooks in use (rows of the codes)."""
        raise NotImplementedError

    @property
    def total_codebooks(self) -> int:
        """Codebooks the model has; `set_num_codebooks` picks how many of them are used."""
        raise NotImplementedError

    def set_num_codebooks(self, n: int) -> None:
        raise NotImplementedError

    def _audio_dtype(self) -> torch.dtype:
        for param in self.parameters():
            return param.dtype
        return torch.float32

    # --- to implement ----------------------------------------------------------------------
    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_step(self, frame: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_step(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- public ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """wav `[B, 1, N]` float -> codes `[B, K, ceil(N / frame_size)]` (int64).

        Pass `sample_rate` to have it checked against the codec's."""
        if self.is_streaming:
            raise RuntimeError("encode() is offline; inside streaming() use encode_step()")
        self.check_audio(wav, sample_rate)
        length = wav.shape[-1]
        padding = -length % self.frame_size
        if padding:
            wav = torch.nn.functional.pad(wav, (0, padding))
        return self._encode(wav.to(self._audio_dtype()))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes `[B, K, T]` -> wav `[B, 1, T * frame_size]`."""
        if self.is_streaming:
            raise RuntimeError("decode() is offline; inside streaming() use decode_step()")
        self.check_codes(codes, check_values=True)
        return self._decode(codes)

    @torch.no_grad()
    def encode_step(self, frame: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Next frame of each slot `[B, 1, frame_size]` -> its codes `[B, K, 1]`."""
        self._check_streaming("encode_step", frame.shape[0] if frame.dim() else 0)
        self.check_audio(frame, sample_rate, name="frame")
        if frame.shape[-1] != self.frame_size:
            raise ValueError(
                f"encode_step expects exactly one frame of {self.frame_size} samples per slot "
                f"(shape [B, 1, {self.frame_size}]), got {frame.shape[-1]} samples; buffer the "
                "audio into whole frames first"
            )
        return self._encode_step(frame.to(self._audio_dtype()))

    @torch.no_grad()
    def decode_step(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes of the next frame of each slot `[B, K, 1]` -> samples `[B, 1, frame_size]`."""
        self._check_streaming("decode_step", codes.shape[0] if codes.dim() else 0)
        self.check_codes(codes, check_values=False)
        if codes.shape[-1] != 1:
            raise ValueError(
                f"decode_step expects the codes of one frame, shape [B, K, 1], got "
                f"{tuple(codes.shape)}"
            )
        return self._decode_step(codes)

    # --- checks ----------------------------------------------------------------------------
    def check_audio(self, wav: torch.Tensor, sample_rate: int | None = None,
                    name: str = "wav") -> None:
        """Raise a clear error unless `wav` is float mono audio `[B, 1, N]` at our rate."""
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"{type(self).__name__} works at {self.sample_rate} Hz but the audio is at "
                f"{sample_rate} Hz; resample it first (e.g. with soxr)"
            )
        if not isinstance(wav, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
        if not wav.is_floating_point():
            raise TypeError(
                f"{name} must hold float samples in [-1, 1], got dtype {wav.dtype}; convert "
                "integer PCM first (e.g. int16 / 32768)"
            )
        if wav.dim() != 3:
            raise ValueError(
                f"{name} must have shape [B, 1, N] (batch, channel, samples), got "
                f"{tuple(wav.shape)}"
            )
        if wav.shape[1] != 1:
            raise ValueError(
                f"{name} must be mono (1 channel, shape [B, 1, N]), got {wav.shape[1]} "
                f"channels (shape {tuple(wav.shape)}); mix the channels down first"
            )

    def check_codes(self, codes: torch.Tensor, check_values: bool) -> None:
        """Raise a clear error unless `codes` are integer `[B, K, T]` with a usable K."""
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape [B, K, T], got {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise ValueError(
                f"codes have {codes.shape[1]} codebooks, this codec uses 1 to "
                f"{self.num_codebooks}"
            )
        if check_values and codes.numel():
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.cardinality:
                raise ValueError(
                    f"code values must be in [0, {self.cardinality}), got values from {low} "
                    f"to {high}"
                )

    def _check_streaming(self, what: str, batch: int) -> None:
        if not self.is_streaming:
            raise RuntimeError(f"{what}() needs `with codec.streaming(batch_size):` first")
        if batch != self.streaming_batch_size:
            raise ValueError(
                f"{what}() got a batch of {batch} but streaming() was entered with "
                f"batch_size={self.streaming_batch_size}"
            )
