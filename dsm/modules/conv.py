"""Causal, streamable 1-d convolutions.

Offline, `StreamingConv1d` pads its input on the left only (so output `t` sees inputs up to
`t`), and `StreamingConvTranspose1d` trims the `kernel - stride` samples that spill over the
right edge. Inside `streaming(batch_size)` each call takes the next chunk of every slot:
the convolution keeps the last `effective_kernel - stride` input samples as its state, the
transposed convolution keeps the `kernel - stride` output samples whose overlap-add is not
complete yet. Chunked output equals offline output.

Input and output tensors are `[B, C, T]`; in streaming, `T` must be a multiple of the
convolution's stride.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dsm.modules.streaming import StreamingModule, StreamingState

PAD_MODES = ("constant", "replicate")


class ConvState(StreamingState):
    """Last input samples of each slot `[B, C_in, left_context]`, plus, for replicate
    padding, whether the slot has not seen any input yet `[B]`."""

    def __init__(self, previous: torch.Tensor, first: torch.Tensor) -> None:
        self.previous = previous
        self.first = first

    def reset(self, slots: torch.Tensor) -> None:
        self.previous.masked_fill_(slots.view(-1, 1, 1), 0.0)
        self.first.logical_or_(slots)


class StreamingConv1d(StreamingModule):
    """Causal `nn.Conv1d` (held as `.conv`) whose streaming state carries the kernel overlap.

    `pad_mode="constant"` pads the past with zeros, `"replicate"` with the first sample.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        effective_kernel = (kernel_size - 1) * dilation + 1
        if stride > effective_kernel:
            raise ValueError(
                f"stride ({stride}) larger than the effective kernel size ({effective_kernel}) "
                "would skip input samples"
            )
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.pad_mode = pad_mode
        self.stride = stride
        # number of past input samples each output window needs beyond the current chunk
        self.left_context = effective_kernel - stride

    def init_state(self, batch_size: int) -> ConvState:
        weight = self.conv.weight
        previous = torch.zeros(
            batch_size, self.conv.in_channels, self.left_context,
            device=weight.device, dtype=weight.dtype,
        )
        first = torch.ones(batch_size, device=weight.device, dtype=torch.bool)
        return ConvState(previous, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[B, C_in, T]` -> `[B, C_out, T // stride]` (T a multiple of the stride)."""
        length = x.shape[-1]
        if length % self.stride != 0:
            raise ValueError(
                f"input length {length} is not a multiple of the convolution stride {self.stride}"
            )
        state = self.state
        left = self.left_context
        if state is None:
            if left > 0:
                if self.pad_mode == "replicate":
                    x = F.pad(x, (left, 0), mode="replicate")
                else:
                    x = F.pad(x, (left, 0))
            return self.conv(x)
        assert isinstance(state, ConvState)
        if left == 0:
            return self.conv(x)
        if self.pad_mode == "replicate":
            fill = x[..., :1].expand_as(state.previous)
            state.previous.copy_(torch.where(state.first.view(-1, 1, 1), fill, state.previous))
            state.first.zero_()
        x = torch.cat([state.previous, x], dim=-1)
        state.previous.copy_(x[..., x.shape[-1] - left:])
        return self.conv(x)


class ConvTransposeState(StreamingState):
    """Output samples of each slot still waiting for the next chunk's overlap `[B, C_out, K-S]`."""

    def __init__(self, partial: torch.Tensor) -> None:
        self.partial = partial

    def reset(self, slots: torch.Tensor) -> None:
        self.partial.masked_fill_(slots.view(-1, 1, 1), 0.0)


class StreamingConvTranspose1d(StreamingModule):
    """Causal `nn.ConvTranspose1d` (held as `.convtr`): `T` frames in, `T * stride` samples out;
    the state carries the `kernel - stride` overlapping output samples between chunks."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if stride > kernel_size:
            raise ValueError(
                f"stride ({stride}) larger than the kernel size ({kernel_size}) leaves gaps"
            )
        self.convtr = nn.ConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias
        )
        self.stride = stride
        self.overlap = kernel_size - stride

    def init_state(self, batch_size: int) -> ConvTransposeState:
        weight = self.convtr.weight
        partial = torch.zeros(
            batch_size, self.convtr.out_channels, self.overlap,
            device=weight.device, dtype=weight.dtype,
        )
        return ConvTransposeState(partial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[B, C_in, T]` -> `[B, C_out, T * stride]`."""
        y = self.convtr(x)
        overlap = self.overlap
        if overlap == 0:
            return y
        state = self.state
        kept = y.shape[-1] - overlap
        if state is None:
            return y[..., :kept]
        assert isinstance(state, ConvTransposeState)
        y[..., :overlap] += state.partial
        tail = y[..., kept:]
        bias = self.convtr.bias
        if bias is not None:
            # the next chunk adds its own bias to these samples
            tail = tail - bias[:, None]
        state.partial.copy_(tail)
        return y[..., :kept]
