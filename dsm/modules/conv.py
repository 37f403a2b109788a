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

from dsm.modules.streaming import StreamingModule, StreamingState, active_slots

PAD_MODES = ("constant", "replicate")
# up to this many output frames a convolution runs as unfold + linear (see `_conv`)
SMALL_OUTPUT_FRAMES = 64


class ConvState(StreamingState):
    """Last input samples of each slot `[B, C_in, left_context]`, plus, for replicate
    padding, whether the slot has not seen any input yet `[B]`, and which slots the next
    step advances (`active` `[B]`)."""

    def __init__(self, previous: torch.Tensor, first: torch.Tensor) -> None:
        self.previous = previous
        self.first = first
        self.active = active_slots(previous.shape[0], previous.device)

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
            return self._conv(x)
        assert isinstance(state, ConvState)
        if left == 0:
            return self._conv(x)
        active = state.active.view(-1, 1, 1)
        previous = state.previous
        if self.pad_mode == "replicate":
            fill = x[..., :1].expand_as(previous)
            previous = torch.where(state.first.view(-1, 1, 1), fill, previous)
            state.first.logical_and_(~state.active)
        x = torch.cat([previous, x], dim=-1)
        state.previous.copy_(torch.where(active, x[..., x.shape[-1] - left:], state.previous))
        return self._conv(x)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """`self.conv(x)`; for a few output frames (streaming steps) as one `linear` over
        the unfolded windows, which reads the weight once and is several times faster on
        CPU than the convolution kernels at these sizes."""
        conv = self.conv
        kernel = conv.kernel_size[0]
        frames = (x.shape[-1] - kernel) // self.stride + 1
        if frames > SMALL_OUTPUT_FRAMES or conv.groups != 1 or conv.dilation[0] != 1:
            return conv(x)
        batch, channels_in, _ = x.shape
        windows = x.unfold(-1, kernel, self.stride)  # [B, C_in, frames, K]
        windows = windows.transpose(1, 2).reshape(batch, frames, channels_in * kernel)
        weight = conv.weight.view(conv.out_channels, channels_in * kernel)
        return F.linear(windows, weight, conv.bias).transpose(1, 2)


class ConvTransposeState(StreamingState):
    """Output samples of each slot still waiting for the next chunk's overlap `[B, C_out, K-S]`."""

    def __init__(self, partial: torch.Tensor) -> None:
        self.partial = partial
        self.active = active_slots(partial.shape[0], partial.device)  # slots the step advances

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

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        """The untrimmed transposed convolution `[B, C_out, T * stride + kernel - stride]`.

        When the kernel is a multiple of the stride (SEANet's and Mimi's 2 x stride), it is one
        matmul against the weight as stored, `[C_in, C_out * K]`, then the sum of K / stride
        shifted copies: much faster than torch's CPU kernel on streaming-sized inputs."""
        convtr = self.convtr
        kernel, stride = convtr.kernel_size[0], self.stride
        if convtr.groups != 1 or kernel % stride != 0:
            return convtr(x)
        batch, channels_in, length = x.shape
        channels_out = convtr.out_channels
        shifts = kernel // stride
        weight = convtr.weight.reshape(channels_in, channels_out * kernel)
        columns = torch.matmul(x.transpose(1, 2), weight)  # [B, T, C_out * K]
        # [B, T, C_out, shifts, S] -> per shift j: [B, C_out, T, S] placed at frames j..j+T-1
        columns = columns.view(batch, length, channels_out, shifts, stride).permute(3, 0, 2, 1, 4)
        y = F.pad(columns[0], (0, 0, 0, shifts - 1))
        for shift in range(1, shifts):
            y = y + F.pad(columns[shift], (0, 0, shift, shifts - 1 - shift))
        y = y.reshape(batch, channels_out, (length + shifts - 1) * stride)
        if convtr.bias is not None:
            y = y + convtr.bias[:, None]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[B, C_in, T]` -> `[B, C_out, T * stride]`."""
        y = self._full(x)
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
        state.partial.copy_(torch.where(state.active.view(-1, 1, 1), tail, state.partial))
        return y[..., :kept]
