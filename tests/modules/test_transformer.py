"""The transformer: streaming equals offline, and moshi's transformer gives the same numbers."""

from __future__ import annotations

import pytest
import torch

from dsm.modules.transformer import (
    StreamingTransformer,
    TransformerConfig,
    kyutai_gated_hidden,
)

MIMI_LIKE = dict(
    d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, context=5,
    norm="layer_norm", gating="none", layer_scale=0.01, max_period=10_000.0,
)
LM_LIKE = dict(
    d_model=32, num_heads=2, num_layers=2, dim_feedforward=kyutai_gated_hidden(32, 4 * 32),
    context=6, norm="rms_norm_f32", gating="silu", max_period=100_000.0,
)


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def _stream(model: StreamingTransformer, x: torch.Tensor, chunks: list[int], reset_at: int,
            reset_slot: int) -> torch.Tensor:
    """Feed x [B, T, D] in chunks; reset `reset_slot` before step `reset_at`."""
    B, T, _ = x.shape
    outs, t = [], 0
    with model.streaming(B):
        for size in chunks:
            if t == reset_at:
                slots = torch.zeros(B, dtype=torch.bool)
                slots[reset_slot] = True
                model.reset_slots(slots)
            outs.append(model(x[:, t : t + size]))
            t += size
    assert t == T
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("settings", [MIMI_LIKE, LM_LIKE], ids=["mimi_like", "lm_like"])
@pytest.mark.parametrize("chunking", ["steps", "mixed"])
def test_streaming_equals_offline_with_slot_reset(settings: dict, chunking: str) -> None:
    model = StreamingTransformer(TransformerConfig(**settings)).eval()
    _randomize(model)
    B, T, reset_at = 3, 17, 7  # longer than the context; slot 1 restarts at step 7
    x = torch.randn(B, T, settings["d_model"])
    chunks = [1] * T if chunking == "steps" else [3, 4, 1, 2, 7]  # 7 > context: ring wraps in-call
    with torch.no_grad():
        streamed = _stream(model, x, chunks, reset_at, reset_slot=1)
        offline = model(x)
        restarted = model(x[1:2, reset_at:])
    others = [0, 2]
    torch.testing.assert_close(streamed[others], offline[others], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1, :reset_at], offline[1, :reset_at], atol=1e-5, rtol=1e-5)
    # After the reset, slot 1 behaves like a fresh sequence starting at position 0.
    torch.testing.assert_close(streamed[1:2, reset_at:], restarted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(streamed[1, reset_at:], offline[1, reset_at:], atol=1e-3)


def test_sliding_context_limits_what_is_seen() -> None:
    model = StreamingTransformer(TransformerConfig(**MIMI_LIKE)).eval()
    _randomize(model)
    x = torch.randn(1, 12, 32)
    y = x.clone()
    y[:, 0] += 5.0 * torch.randn(32)  # position 0 is out of the context (5) of positions >= 5 in a 2-layer stack
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[:, 1], b[:, 1])
    # 2 layers of window 5 reach back 8 positions: position 9 cannot see position 0.
    torch.testing.assert_close(a[:, 9:], b[:, 9:])


def test_streaming_needs_capacity_and_matching_batch() -> None:
    model = StreamingTransformer(TransformerConfig(d_model=16, num_heads=2, num_layers=1,
                                                   dim_feedforward=32))
    with pytest.raises(RuntimeError, match="context or max_seq_len"):
        with model.streaming(2):
            pass
    model = StreamingTransformer(TransformerConfig(d_model=16, num_heads=2, num_layers=1,
                                                   dim_feedforward=32, max_seq_len=8))
    with model.streaming(2):
        with pytest.raises(ValueError, match="batch size"):
            model(torch.zeros(3, 1, 16))


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig(d_model=30, num_heads=4, num_layers=1, dim_feedforward=8)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(d_model=32, num_heads=4, num_layers=1, dim_feedforward=8, norm="batch")
    with pytest.raises(ValueError, match="weights_per_step_schedule"):
        TransformerConfig(d_model=32, num_heads=4, num_layers=1, dim_feedforward=8, gating="silu",
                          weights_per_step=3, weights_per_step_schedule=[0, 1])


def test_per_step_weights_streaming_equals_offline() -> None:
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=2, dim_feedforward=24,
                            gating="silu", norm="rms_norm_f32", positional_embedding="none",
                            weights_per_step=4, weights_per_step_schedule=[0, 1, 1, 2])
    model = StreamingTransformer(cfg).eval()
    _randomize(model)
    assert model.layers[0].self_attn.in_proj_weight.shape == (3 * 3 * 16, 16)
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        offline = model(x)
        with model.streaming(2):
            streamed = torch.cat([model(x[:, t : t + 1]) for t in range(4)], dim=1)
            with pytest.raises(ValueError, match="per-step weights"):
                model(x[:, :1])
            model.reset_slots()
            again = model(x[:, :1])
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, offline[:, :1], atol=1e-5, rtol=1e-5)


# --- conformance with moshi ------------------------------------------------------------------


def _moshi_transformer(settings: dict, **extra: object) -> torch.nn.Module:
    from moshi.modules.transformer import StreamingTransformer as MoshiTransformer

    dff = settings["dim_feedforward"]
    if settings["gating"] != "none":
        dff = 4 * settings["d_model"]  # moshi computes the gated hidden size itself
    return MoshiTransformer(
        d_model=settings["d_model"], num_heads=settings["num_heads"],
        num_layers=settings["num_layers"], dim_feedforward=dff, causal=True,
        context=settings["context"], positional_embedding="rope",
        max_period=settings["max_period"], norm=settings["norm"], gating=settings["gating"],
        layer_scale=settings["layer_scale"] if "layer_scale" in settings else None, **extra,
    ).eval()


@pytest.mark.parametrize("settings", [MIMI_LIKE, LM_LIKE], ids=["mimi_like", "lm_like"])
def test_conformance_with_moshi_transformer(settings: dict) -> None:
    reference = _moshi_transformer(settings)
    _randomize(reference)
    ours = StreamingTransformer(TransformerConfig(**settings)).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 15, settings["d_model"])
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
        with reference.streaming(2):
            expected_stream = torch.cat([reference(x[:, t : t + 1]) for t in range(15)], dim=1)
        with ours.streaming(2):
            got_stream = torch.cat([ours(x[:, t : t + 1]) for t in range(15)], dim=1)
    assert (got - expected).abs().max().item() < 1e-5
    assert (got_stream - expected_stream).abs().max().item() < 1e-5
    with torch.no_grad():  # shorter than the context: the plain causal fast path
        short = x[:, :4]
        assert (ours(short) - reference(short)).abs().max().item() < 1e-5
    # And the other way: our state dict (Kyutai's published key layout) loads into moshi.
    back = _moshi_transformer(settings)
    back.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        assert (back(x) - expected).abs().max().item() == 0.0


def test_streaming_reads_no_tensor_values() -> None:
    """Steps of 1 and chunks of several positions run on the meta device (no host syncs)."""
    with torch.device("meta"):
        model = StreamingTransformer(TransformerConfig(**MIMI_LIKE))
    with model.streaming(2):
        for size in (1, 3, 1, 7):
            out = model(torch.zeros(2, size, 32, device="meta"))
        model.reset_slots(torch.tensor([True, False], device="meta"))
        model.reset_all_slots()
    assert out.shape == (2, 7, 32) and out.device.type == "meta"
