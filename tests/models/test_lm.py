"""MultistreamLM: streaming equals offline, depformer steps, heads, loss, bad tokens."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dsm.models import LMConfig, MultistreamLM, preset


def _config(**overrides: object) -> LMConfig:
    fields = dict(
        dim=32, num_heads=2, num_layers=2, hidden_scale=4.125, context=5, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", card=16, n_q=4, dep_q=3,
        text_card=20, delays=[0, 0, 1, 1, 0], depformer_dim=16, depformer_num_heads=2,
        depformer_num_layers=2, depformer_multi_linear=True, depformer_weights_per_step=True,
        depformer_weights_per_step_schedule=[0, 1, 1], depformer_pos_emb="none",
        extra_heads_num_heads=2, extra_heads_dim=3,
    )
    fields.update(overrides)
    return LMConfig(**fields)  # type: ignore[arg-type]


def _tokens(config: LMConfig, B: int, T: int) -> torch.Tensor:
    codes = torch.randint(0, config.card, (B, config.num_codebooks, T))
    codes[:, 0] = torch.randint(0, config.text_card, (B, T))
    return codes


def _random_lm(config: LMConfig) -> MultistreamLM:
    lm = MultistreamLM(config).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0.0, 0.3)
    return lm


def test_forward_temporal_streaming_equals_offline_with_slot_reset() -> None:
    lm = _random_lm(_config())
    B, T, reset_at = 3, 13, 6  # longer than the context (5); slot 2 restarts at step 6
    tokens = _tokens(lm.config, B, T)
    tokens[1, 3, 4] = -1
    with torch.no_grad():
        hidden_off, text_off = lm.forward_temporal(tokens)
        restart_hidden, restart_text = lm.forward_temporal(tokens[2:3, :, reset_at:])
        hidden, text = [], []
        with lm.streaming(B):
            for t in range(T):
                if t == reset_at:
                    lm.reset_slots(torch.tensor([False, False, True]))
                h, x = lm.forward_temporal(tokens[:, :, t : t + 1])
                hidden.append(h)
                text.append(x)
    hidden_s, text_s = torch.cat(hidden, dim=1), torch.cat(text, dim=2)
    torch.testing.assert_close(hidden_s[:2], hidden_off[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_s[:2], text_off[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_s[2:, :, :reset_at], text_off[2:, :, :reset_at], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden_s[2:, reset_at:], restart_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_s[2:, :, reset_at:], restart_text, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("schedule", "pos_emb"), [([0, 1, 1], "none"), (None, "sin"), (None, "rope")])
def test_depformer_steps_equal_teacher_forced_depformer(schedule: list[int] | None, pos_emb: str) -> None:
    lm = _random_lm(_config(depformer_weights_per_step_schedule=schedule, depformer_pos_emb=pos_emb))
    B, T, dep_q = 2, 4, lm.config.dep_q
    tokens = _tokens(lm.config, B, T)
    with torch.no_grad():
        hidden, _ = lm.forward_temporal(tokens)
        targets = tokens[:, : 1 + dep_q]
        offline = lm.depformer_logits(hidden, targets)  # [B, dep_q, T, card]
        with lm.streaming(B):
            for t in range(T):
                lm.depformer_reset()
                for k in range(dep_q):
                    logits = lm.depformer_step(k, hidden[:, t : t + 1], targets[:, k, t : t + 1])
                    assert logits.shape == (B, 1, lm.config.card)
                    torch.testing.assert_close(logits[:, 0], offline[:, k, t], atol=1e-5, rtol=1e-5)


def test_depformer_step_refuses_out_of_order_use() -> None:
    lm = _random_lm(_config())
    hidden = torch.zeros(2, 1, 32)
    prev = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(RuntimeError, match="streaming"):
        lm.depformer_step(0, hidden, prev)
    with lm.streaming(2):
        lm.depformer_reset()
        with pytest.raises(RuntimeError, match="depformer_reset"):
            lm.depformer_step(1, hidden, prev)
        with pytest.raises(ValueError, match="outside"):
            lm.depformer_step(3, hidden, prev)


def test_parallel_and_extra_heads() -> None:
    lm = _random_lm(_config(audio_heads="parallel", depformer_weights_per_step_schedule=None))
    assert lm.depformer is None and len(lm.depformer_in) == 0
    hidden = torch.randn(2, 5, 32)
    logits = lm.parallel_audio_logits(hidden)
    assert logits.shape == (2, 3, 5, 16)
    torch.testing.assert_close(logits[:, 1], lm.linears[1](hidden))
    probs = lm.extra_heads_probs(hidden)
    assert [p.shape for p in probs] == [(2, 5, 3)] * 2
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(2, 5))
    out = lm(_tokens(lm.config, 2, 6))
    assert out.logits.shape == (2, 3, 6, 16)
    assert out.mask[:, 1:, -1].logical_not().all()  # delay 1 rows: the last step has no prediction


def test_zero_token_embeds_to_zero_and_changes_nothing_else() -> None:
    lm = _random_lm(_config())
    tokens = _tokens(lm.config, 1, 3)
    silenced = tokens.clone()
    silenced[:, 1:] = -1
    silenced[:, 0] = -1
    assert torch.equal(lm.embed(silenced), torch.zeros(1, 3, 32))


def test_loss_ignores_masked_positions_and_weights_streams() -> None:
    lm = _random_lm(_config())
    codes = _tokens(lm.config, 2, 8)
    codes[0, 2, 3] = -1
    out = lm(codes)
    loss = lm.compute_loss(codes, out)
    # Reference: plain cross-entropy over the valid positions of each stream.
    valid = out.text_mask[:, 0]
    text_ref = F.cross_entropy(out.text_logits[:, 0][valid], codes[:, 0][valid])
    torch.testing.assert_close(loss.text, text_ref)
    for k in range(lm.config.dep_q):
        valid = out.mask[:, k]
        ref = F.cross_entropy(out.logits[:, k][valid], codes[:, 1 + k][valid])
        torch.testing.assert_close(loss.audio[k], ref)
    assert not out.mask[0, 1, 3]  # the -1 target is masked out
    assert torch.isfinite(loss.total)
    only_text = lm.compute_loss(codes, out, first_codebook_weight=0.0, audio_weight=0.0)
    torch.testing.assert_close(only_text.total, loss.text)
    first_only = lm.compute_loss(codes, out, text_weight=0.0, audio_weight=0.0)
    torch.testing.assert_close(first_only.total, loss.audio[0])
    equal = (loss.text + loss.audio.sum()) / 4
    torch.testing.assert_close(loss.total, equal)
    loss.total.backward()
    assert lm.depformer_emb[0].weight.grad is not None  # type: ignore[index]


def test_temporal_codes_change_only_what_the_temporal_transformer_reads() -> None:
    lm = _random_lm(_config()).eval()
    codes = _tokens(lm.config, 2, 8)
    same = lm(codes, codes.clone())
    plain = lm(codes)
    torch.testing.assert_close(same.logits[same.mask], plain.logits[plain.mask])
    noisy = codes.clone()
    noisy[:, 1:, 3:] = (noisy[:, 1:, 3:] + 1) % lm.config.card
    out = lm(codes, noisy)
    # Steps up to the changed input are untouched (causal); later ones read the noise.
    early = plain.mask[:, :, :3]
    torch.testing.assert_close(out.logits[:, :, :3][early], plain.logits[:, :, :3][early])
    assert not torch.allclose(out.text_logits[:, 0, 5:], plain.text_logits[:, 0, 5:])
    # Same targets and masks: the loss is still against `codes`.
    assert torch.equal(out.mask, plain.mask) and torch.equal(out.text_mask, plain.text_mask)
    with pytest.raises(ValueError, match="temporal_codes"):
        lm(codes, noisy[:, :, :4])


def test_token_ids_out_of_range_are_named() -> None:
    lm = _random_lm(_config())
    codes = _tokens(lm.config, 1, 4)
    bad = codes.clone()
    bad[0, 2, 1] = lm.config.card + 1
    with pytest.raises(ValueError, match="audio row 2"):
        lm(bad)
    bad = codes.clone()
    bad[0, 0, 0] = 21
    with pytest.raises(ValueError, match="text row 0"):
        lm.forward_temporal(bad)
    bad = codes.clone()
    bad[0, 1, 0] = -2
    with pytest.raises(ValueError, match="audio row 1"):
        lm(bad)
    with pytest.raises(ValueError, match=r"\[B, 5, T\]"):
        lm(codes[:, :3])
    with pytest.raises(ValueError, match="integers"):
        lm(codes.float())


def test_tiny_presets_build_and_run() -> None:
    for name in ("tiny-stt", "tiny-tts", "tiny-parallel"):
        lm = MultistreamLM(preset(name, num_layers=1, depformer_num_layers=1)).eval()
        codes = _tokens(lm.config, 1, 3)
        with torch.no_grad():
            out = lm(codes)
        assert out.text_logits.shape == (1, 1, 3, lm.config.text_card)
        assert out.logits.shape == (1, lm.config.dep_q, 3, lm.config.card)


def test_streaming_step_reads_no_tensor_values() -> None:
    """The engine's step (temporal step, depformer reset and steps, slot reset) runs on the
    meta device, where any host read (.item(), bool(), .tolist(), boolean indexing) raises:
    so it has no host syncs and can be captured in a CUDA graph."""
    with torch.device("meta"):
        lm = MultistreamLM(_config())
    tokens = torch.zeros(3, 5, 1, dtype=torch.long, device="meta")
    prev = torch.zeros(3, 1, dtype=torch.long, device="meta")
    with lm.streaming(3):
        for _ in range(7):  # past the context: the ring wraps
            hidden, text_logits = lm.forward_temporal(tokens)
            lm.depformer_reset()
            for k in range(lm.config.dep_q):
                logits = lm.depformer_step(k, hidden, prev)
            probs = lm.extra_heads_probs(hidden)
        lm.reset_slots(torch.tensor([True, False, True], device="meta"))
        hidden, _ = lm.forward_temporal(tokens)
    assert hidden.device.type == "meta" and logits.shape == (3, 1, 16)
    assert text_logits.shape == (3, 1, 1, 20) and probs[0].shape == (3, 1, 3)
    with pytest.raises(RuntimeError, match="meta"):
        hidden.sum().item()  # the probe works: a host read on meta fails


@pytest.mark.gpu
def test_streaming_step_replays_in_a_cuda_graph() -> None:
    """On a GPU: the temporal step runs with sync debugging set to error, and a CUDA graph
    captured once replays the whole stream, equal to the offline pass."""
    device = torch.device("cuda")
    lm = _random_lm(_config()).to(device)
    B, T = 2, 9
    tokens = _tokens(lm.config, B, T).to(device)
    with torch.no_grad():
        expected, _ = lm.forward_temporal(tokens)
        static_in = tokens[:, :, :1].clone()
        with lm.streaming(B):
            torch.cuda.set_sync_debug_mode("error")
            try:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up off the default stream, as CUDA asks
                    lm.forward_temporal(static_in)
                torch.cuda.current_stream().wait_stream(side)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            lm.reset_slots()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_hidden, _ = lm.forward_temporal(static_in)
            lm.reset_slots()
            outs = []
            for t in range(T):
                static_in.copy_(tokens[:, :, t : t + 1])
                graph.replay()
                outs.append(static_hidden.clone())
    torch.testing.assert_close(torch.cat(outs, dim=1), expected, atol=1e-4, rtol=1e-4)
