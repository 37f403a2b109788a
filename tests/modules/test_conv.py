"""Causal streamable convolutions: causality, streaming equals offline, slot reset."""

from __future__ import annotations

import pytest
import torch
from helpers import stream_in_chunks

from dsm.modules.conv import StreamingConv1d, StreamingConvTranspose1d

CONV_CASES = [  # kernel, stride, dilation, pad_mode
    (1, 1, 1, "constant"), (3, 1, 1, "constant"), (7, 1, 1, "constant"), (3, 1, 2, "constant"),
    (4, 2, 1, "constant"), (10, 5, 1, "constant"), (16, 8, 1, "constant"),
    (4, 2, 1, "replicate"), (3, 1, 1, "replicate"), (5, 5, 1, "constant"),
]


@pytest.mark.parametrize("kernel,stride,dilation,pad_mode", CONV_CASES)
@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_conv_streaming_equals_offline(kernel, stride, dilation, pad_mode, chunk_frames):
    conv = StreamingConv1d(3, 5, kernel, stride, dilation=dilation, pad_mode=pad_mode)
    x = torch.randn(3, 3, stride * 12)
    offline = conv(x)
    assert offline.shape == (3, 5, 12)
    streamed = stream_in_chunks(conv, x, chunk_frames * stride)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel,stride,dilation,pad_mode", CONV_CASES)
def test_conv_reset_slot_restarts_only_that_slot(kernel, stride, dilation, pad_mode):
    conv = StreamingConv1d(2, 4, kernel, stride, dilation=dilation, pad_mode=pad_mode)
    x = torch.randn(3, 2, stride * 10)
    split = 4 * stride  # reset slot 1 when chunk 4 starts (chunks of one stride)
    streamed = stream_in_chunks(conv, x, stride, reset_at=4)
    offline = conv(x)
    fresh = conv(x[1:2, :, split:])  # slot 1 as if its stream began at the reset
    for slot in (0, 2):
        torch.testing.assert_close(streamed[slot], offline[slot], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1, :, 4:], fresh[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1, :, :4], offline[1, :, :4], atol=1e-5, rtol=1e-5)


def test_conv_is_causal():
    conv = StreamingConv1d(1, 2, 7, 2)
    x = torch.randn(1, 1, 40)
    y = conv(x)
    x2 = x.clone()
    x2[..., 20:] += 1.0  # change the future from sample 20 on
    y2 = conv(x2)
    torch.testing.assert_close(y[..., :10], y2[..., :10])  # outputs 0..9 end at sample 19
    assert not torch.allclose(y[..., 10:], y2[..., 10:])


def test_replicate_padding_uses_first_sample():
    conv = StreamingConv1d(1, 1, 4, 2, bias=False, pad_mode="replicate")
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
    x = torch.full((1, 1, 4), 3.0)
    # a constant signal with replicate padding stays constant: every window sums 4 * 3
    torch.testing.assert_close(conv(x), torch.full((1, 1, 2), 12.0))


@pytest.mark.parametrize("kernel,stride", [(1, 1), (2, 1), (4, 2), (8, 4), (12, 6), (10, 5),
                                           (5, 5), (3, 2)])
@pytest.mark.parametrize("chunk", [1, 2])
def test_conv_transpose_streaming_equals_offline(kernel, stride, chunk):
    convtr = StreamingConvTranspose1d(4, 3, kernel, stride)
    x = torch.randn(3, 4, 10)
    offline = convtr(x)
    assert offline.shape == (3, 3, 10 * stride)
    streamed = stream_in_chunks(convtr, x, chunk)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)


def test_conv_transpose_grouped_reset_slot():
    convtr = StreamingConvTranspose1d(4, 4, 4, 2, groups=4, bias=False)
    x = torch.randn(3, 4, 8)
    streamed = stream_in_chunks(convtr, x, 1, reset_at=3, reset_slot=2)
    offline = convtr(x)
    fresh = convtr(x[2:3, :, 3:])
    torch.testing.assert_close(streamed[:2], offline[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[2, :, 6:], fresh[0], atol=1e-5, rtol=1e-5)


def test_conv_transpose_is_causal():
    convtr = StreamingConvTranspose1d(2, 2, 8, 4)
    x = torch.randn(1, 2, 6)
    y = convtr(x)
    x2 = x.clone()
    x2[..., 3:] = 0.0
    torch.testing.assert_close(y[..., :12], convtr(x2)[..., :12])


def test_bad_conv_input_is_named():
    conv = StreamingConv1d(1, 1, 4, 2)
    with pytest.raises(ValueError, match="multiple of the convolution stride 2"):
        conv(torch.randn(1, 1, 5))
    with pytest.raises(ValueError, match="pad_mode"):
        StreamingConv1d(1, 1, 3, pad_mode="reflect")
    with pytest.raises(ValueError, match="stride"):
        StreamingConvTranspose1d(1, 1, 2, 3)


@pytest.mark.parametrize("kernel,stride", [(7, 1), (16, 8), (3, 1), (1, 1)])
def test_fast_paths_equal_torch_kernels(kernel, stride):
    """Few output frames run as unfold + linear, transposed convs as one matmul: both must
    equal torch's own kernels (long offline inputs still use those)."""
    conv = StreamingConv1d(6, 5, kernel, stride)
    x = torch.randn(2, 6, stride * 8 + kernel - stride)
    torch.testing.assert_close(conv._conv(x), conv.conv(x), atol=1e-5, rtol=1e-5)
    long = torch.randn(2, 6, stride * 100)  # > SMALL_OUTPUT_FRAMES: torch's conv offline
    streamed = stream_in_chunks(conv, long, stride * 2)  # linear path step by step
    torch.testing.assert_close(streamed, conv(long), atol=1e-5, rtol=1e-5)
    if stride > 1:
        convtr = StreamingConvTranspose1d(5, 6, 2 * stride, stride)
        y = torch.randn(2, 5, 9)
        torch.testing.assert_close(convtr._full(y), convtr.convtr(y), atol=1e-5, rtol=1e-5)
