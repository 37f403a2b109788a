"""Grouped-query attention (`kv_repeat`) and non-interleaved RoPE ("rope_concat"), as
Kyutai's Hibiki-Zero uses them: the formulas, streaming equals offline, the KV cache holds
only the key/value heads, and moshi (module, LMModel, LMGen) as the numerical oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_same_tokens
from safetensors.torch import save_file

from dsm.models import LMConfig, LMConfigError, MultistreamLM, load_lm, save_lm
from dsm.modules.rope import apply_rope
from dsm.modules.transformer import (
    StreamingTransformer,
    TransformerConfig,
    kyutai_gated_hidden,
    normalize_attention_keys,
)
from dsm.streaming import LMStreamer

TOL = 1e-4  # the conformance tests print what they measured (pytest -s)


# --- rope_concat --------------------------------------------------------------------------------


def _reference_rope_concat(
    x: torch.Tensor, positions: torch.Tensor, max_period: float
) -> torch.Tensor:
    """Textbook non-interleaved RoPE in float64: channel i pairs with channel i + D/2."""
    D = x.shape[-1]
    i = torch.arange(D // 2, dtype=torch.float64)
    angles = positions.double()[:, None, :, None] * max_period ** (-2.0 * i / D)  # [B, 1, T, D/2]
    real, imag = x.double()[..., : D // 2], x.double()[..., D // 2 :]
    out = torch.cat([real * angles.cos() - imag * angles.sin(),
                     real * angles.sin() + imag * angles.cos()], dim=-1)
    return out.to(x.dtype)


@pytest.mark.parametrize("max_period", [10_000.0, 100_000.0])
def test_rope_concat_equals_reference_and_moshi_not_interleaved(max_period: float) -> None:
    from moshi.modules.rope import apply_rope as moshi_rope
    from moshi.utils.compile import no_compile

    x = torch.randn(2, 3, 6, 16)
    offsets = torch.tensor([0, 517])  # a per-slot streaming offset
    positions = offsets[:, None] + torch.arange(6)
    got = apply_rope(x, positions, max_period, interleave=False)
    # fp32 angles (as moshi's) are off by ~position * 2**-24 radians from the float64 ones
    torch.testing.assert_close(got, _reference_rope_concat(x, positions, max_period),
                               atol=1e-4, rtol=1e-4)
    with no_compile():
        expected, _ = moshi_rope(x, x, offsets, max_period, False, False)
    assert torch.equal(got, expected)  # same fp32 arithmetic, term for term
    interleaved = apply_rope(x, positions, max_period)
    assert (got - interleaved).abs().max().item() > 0.1
    # Same angles, other layout: interleaving the channels maps one onto the other.
    to_pairs = torch.stack([x[..., :8], x[..., 8:]], dim=-1).flatten(-2)
    rotated_pairs = apply_rope(to_pairs, positions, max_period)
    torch.testing.assert_close(torch.stack([got[..., :8], got[..., 8:]], dim=-1).flatten(-2),
                               rotated_pairs)
    # Position 0 is the identity.
    torch.testing.assert_close(got[0, :, 0], x[0, :, 0])


def test_rope_concat_preserves_norms_and_low_precision_is_computed_in_fp32() -> None:
    x = torch.randn(2, 4, 9, 32)
    positions = torch.arange(1000, 1009)[None].expand(2, 9)
    out = apply_rope(x, positions, 10_000.0, interleave=False)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    pair_norms = torch.hypot(x[..., :16], x[..., 16:])
    torch.testing.assert_close(torch.hypot(out[..., :16], out[..., 16:]), pair_norms)
    low = x.bfloat16()
    out_low = apply_rope(low, positions, 10_000.0, interleave=False)
    assert out_low.dtype == torch.bfloat16
    in_fp32 = apply_rope(low.float(), positions, 10_000.0, interleave=False)
    assert torch.equal(out_low, in_fp32.bfloat16())


def test_rope_concat_streaming_offsets_and_relative_positions() -> None:
    x = torch.randn(1, 2, 20, 8)
    whole = apply_rope(x, torch.arange(20)[None], 10_000.0, interleave=False)
    chunks = [
        apply_rope(x[:, :, t : t + 5], torch.arange(t, t + 5)[None], 10_000.0, interleave=False)
        for t in range(0, 20, 5)
    ]
    assert torch.equal(torch.cat(chunks, dim=2), whole)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: int, pk: int) -> torch.Tensor:
        rq = apply_rope(q, torch.tensor([[pq]]), 10_000.0, interleave=False)
        rk = apply_rope(k, torch.tensor([[pk]]), 10_000.0, interleave=False)
        return (rq * rk).sum()

    torch.testing.assert_close(score(7, 3), score(204, 200), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(7, 3), score(7, 5), atol=1e-4)


# --- grouped-query attention in the transformer ------------------------------------------------


def _settings(kv_repeat: int, positional_embedding: str, **extra: object) -> dict:
    settings = dict(
        d_model=64, num_heads=8, num_layers=2, dim_feedforward=kyutai_gated_hidden(64, 256),
        context=5, norm="rms_norm_f32", gating="silu", max_period=10_000.0,
        positional_embedding=positional_embedding, kv_repeat=kv_repeat,
    )
    settings.update(extra)
    return settings


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def _stream(
    model: StreamingTransformer, x: torch.Tensor, chunks: list[int], reset_at: int
) -> torch.Tensor:
    """Feed x [B, T, D] in chunks, resetting slot 1 before step `reset_at`; check the cache."""
    B, T, _ = x.shape
    cfg = model.config
    outs, t = [], 0
    with model.streaming(B):
        cache = model.layers[0].self_attn.state
        assert cache.keys.shape == (B, cfg.num_heads // cfg.kv_repeat, cfg.context, cfg.head_dim)
        assert cache.values.shape == cache.keys.shape
        for size in chunks:
            if t == reset_at:
                model.reset_slots(torch.tensor([False, True, False]))
            outs.append(model(x[:, t : t + size]))
            t += size
    assert t == T
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kv_repeat", [2, 4])
@pytest.mark.parametrize("positional_embedding", ["rope", "rope_concat"])
@pytest.mark.parametrize("chunking", ["steps", "mixed"])
def test_gqa_streaming_equals_offline(
    kv_repeat: int, positional_embedding: str, chunking: str
) -> None:
    config = TransformerConfig(**_settings(kv_repeat, positional_embedding))
    model = StreamingTransformer(config).eval()
    _randomize(model)
    assert model.layers[0].self_attn.in_proj_weight.shape == (64 + 2 * 64 // kv_repeat, 64)
    B, T, reset_at = 3, 17, 7  # longer than the context
    x = torch.randn(B, T, 64)
    chunks = [1] * T if chunking == "steps" else [3, 4, 1, 2, 7]  # 7 > context: ring wraps in-call
    with torch.no_grad():
        streamed = _stream(model, x, chunks, reset_at)
        offline = model(x)
        restarted = model(x[1:2, reset_at:])
        short = model(x[:, :4])  # within the context: the kernel's causal mask, no explicit one
    torch.testing.assert_close(streamed[[0, 2]], offline[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1, :reset_at], offline[1, :reset_at], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed[1:2, reset_at:], restarted, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short, offline[:, :4], atol=1e-5, rtol=1e-5)


def _moshi_transformer(settings: dict, **extra: object) -> torch.nn.Module:
    from moshi.modules.transformer import StreamingTransformer as MoshiTransformer

    return MoshiTransformer(
        d_model=settings["d_model"], num_heads=settings["num_heads"],
        num_layers=settings["num_layers"], dim_feedforward=4 * settings["d_model"], causal=True,
        context=settings.get("context"), positional_embedding=settings["positional_embedding"],
        max_period=settings["max_period"], norm=settings["norm"], gating=settings["gating"],
        kv_repeat=settings["kv_repeat"], **extra,
    ).eval()


@pytest.mark.parametrize(("kv_repeat", "positional_embedding"),
                         [(2, "rope_concat"), (4, "rope"), (1, "rope_concat"), (8, "rope_concat")])
def test_transformer_matches_moshi(kv_repeat: int, positional_embedding: str) -> None:
    from moshi.utils.compile import no_compile

    settings = _settings(kv_repeat, positional_embedding)
    reference = _moshi_transformer(settings)
    _randomize(reference)
    ours = StreamingTransformer(TransformerConfig(**settings)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # moshi's own key layout
    x = torch.randn(2, 15, 64)
    with torch.no_grad(), no_compile():
        expected = reference(x)
        with reference.streaming(2):
            expected_stream = torch.cat([reference(x[:, t : t + 1]) for t in range(15)], dim=1)
        got = ours(x)
        with ours.streaming(2):
            got_stream = torch.cat([ours(x[:, t : t + 1]) for t in range(15)], dim=1)
            assert ours.layers[1].self_attn.state.keys.shape[1] == 8 // kv_repeat
    assert (got - expected).abs().max().item() < 1e-5
    assert (got_stream - expected_stream).abs().max().item() < 1e-5
    back = _moshi_transformer(settings)  # and our (Kyutai) layout loads into moshi
    back.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad(), no_compile():
        assert (back(x) - expected).abs().max().item() == 0.0


def test_gqa_per_step_weights_streaming_equals_offline() -> None:
    """Kyutai's depformer shape (per-step weights, lockstep steps) with kv_repeat 2."""
    cfg = TransformerConfig(d_model=32, num_heads=4, num_layers=2, dim_feedforward=48,
                            gating="silu", norm="rms_norm_f32", positional_embedding="none",
                            weights_per_step=4, weights_per_step_schedule=[0, 1, 1, 2], kv_repeat=2)
    model = StreamingTransformer(cfg).eval()
    _randomize(model)
    assert model.layers[0].self_attn.in_proj_weight.shape == (3 * (32 + 2 * 16), 32)
    x = torch.randn(2, 4, 32)
    with torch.no_grad():
        offline = model(x)
        with model.streaming(2):
            assert model.layers[0].self_attn.state.keys.shape == (2, 2, 4, 8)
            streamed = torch.cat([model(x[:, t : t + 1]) for t in range(4)], dim=1)
            model.reset_slots(torch.tensor([True, False]))  # no longer in lockstep: masked path
            again = model(x[:1, :1].expand(2, 1, 32))
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again[0], offline[0, :1], atol=1e-5, rtol=1e-5)


def test_kv_repeat_one_keeps_the_layout_and_streaming_reads_no_values() -> None:
    plain = StreamingTransformer(TransformerConfig(**_settings(1, "rope")))
    assert plain.layers[0].self_attn.in_proj_weight.shape == (3 * 64, 64)
    with torch.device("meta"):
        model = StreamingTransformer(TransformerConfig(**_settings(4, "rope_concat")))
    with model.streaming(3):
        for size in (1, 3, 1, 7):
            out = model(torch.zeros(3, size, 64, device="meta"))
        model.reset_slots(torch.tensor([True, False, False], device="meta"))
        model.reset_all_slots()
    assert out.shape == (3, 7, 64) and out.device.type == "meta"
    with torch.device("meta"):  # the depformer's lockstep steps (no mask: expanded heads)
        depformer = StreamingTransformer(TransformerConfig(
            **_settings(2, "none", context=None, weights_per_step=3)))
    with depformer.streaming(3):
        for _ in range(3):
            out = depformer(torch.zeros(3, 1, 64, device="meta"))
    assert out.shape == (3, 1, 64)


def test_bad_kv_repeat_is_refused_by_name() -> None:
    for bad in (3, 0, 16, 2.0):
        with pytest.raises(ValueError, match="kv_repeat"):
            TransformerConfig(**_settings(bad, "rope"))  # type: ignore[arg-type]


# --- the LM against moshi ---------------------------------------------------------------------


def _base(**fields: object) -> dict:
    raw = dict(
        dim=64, num_heads=8, num_layers=2, hidden_scale=4.125, context=9, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope_concat", kv_repeat=2,
        card=32, text_card=40, existing_text_padding_id=3,
    )
    raw.update(fields)
    return raw


HIBIKI_ZERO_LIKE = _base(  # GQA + rope_concat, a per-step depformer (which inherits kv_repeat)
    n_q=8, dep_q=4, delays=[0, 0, 1, 1, 1, 0, 1, 1, 1], depformer_dim=32, depformer_num_heads=4,
    depformer_num_layers=2, depformer_multi_linear=True, depformer_weights_per_step=True,
    depformer_pos_emb="none",
)
GQA_ONLY = _base(  # interleaved RoPE, kv_repeat 4, a "sin" depformer without per-step weights
    positional_embedding="rope", kv_repeat=4, n_q=3, dep_q=2, delays=[0, 0, 1, 0],
    depformer_dim=32, depformer_num_heads=4, depformer_num_layers=1,
)
ROPE_CONCAT_ONLY = _base(  # kv_repeat 1, rope_concat in the depformer too
    kv_repeat=1, n_q=4, dep_q=2, delays=[0, 1, 1, 0, 0], depformer_dim=32,
    depformer_num_heads=2, depformer_num_layers=2, depformer_weights_per_step=True,
    depformer_pos_emb="rope_concat",
)
STT_LIKE = _base(  # dep_q 0, 8 input codebooks, max_period 1e5, kv_repeat 4
    kv_repeat=4, n_q=8, dep_q=0, delays=[0] * 9, max_period=100_000.0, depformer_dim=16,
    extra_heads_num_heads=1, extra_heads_dim=3,
)
DEPFORMER_CONFIGS = {"hibiki_zero_like": HIBIKI_ZERO_LIKE, "gqa_only": GQA_ONLY,
                     "rope_concat_only": ROPE_CONCAT_ONLY}


def _random_moshi(raw: dict, std: float | None = 0.2) -> torch.nn.Module:
    from moshi.models.lm import LMModel

    torch.manual_seed(0)
    model = LMModel(**LMConfig.from_dict(raw).moshi_kwargs()).eval()
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model


def _kyutai_file(model: torch.nn.Module, path: Path) -> Path:
    """moshi's weights in Kyutai's published layout (stacked `in_proj_weight`)."""
    state = normalize_attention_keys(model.state_dict())
    assert not any(".in_projs." in key for key in state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _codes(config: LMConfig, T: int = 14) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config.card, (2, config.num_codebooks, T), generator=g)
    codes[:, 0] = torch.randint(0, config.text_card, (2, T), generator=g)
    codes[0, 2, 4] = -1
    return codes


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.equal(a.isnan(), b.isnan())
    return (a - b).abs().nan_to_num().max().item()


def test_moshi_builds_what_the_config_says() -> None:
    """moshi gets kv_repeat and rope_concat from to_dict / moshi_kwargs, depformer included."""
    config = LMConfig.from_dict(HIBIKI_ZERO_LIKE)
    assert config.to_dict()["kv_repeat"] == 2
    assert config.to_dict()["positional_embedding"] == "rope_concat"
    assert LMConfig.from_dict(config.to_dict()) == config
    reference = _random_moshi(HIBIKI_ZERO_LIKE, std=None)
    assert reference.transformer.layers[0].self_attn.kv_repeat == 2
    assert reference.transformer.rope.interleave is False
    assert reference.depformer.layers[0].self_attn.kv_repeat == 2  # inherited, as in dsm
    ours = MultistreamLM(config)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    for key, value in normalize_attention_keys(reference.state_dict()).items():
        assert shapes.pop(key) == tuple(value.shape), key
    assert not shapes


@pytest.mark.parametrize("name", list(DEPFORMER_CONFIGS))
def test_depformer_models_match_moshi_forward(name: str, tmp_path: Path) -> None:
    from moshi.utils.compile import no_compile

    raw = DEPFORMER_CONFIGS[name]
    reference = _random_moshi(raw)
    lm = load_lm(_kyutai_file(reference, tmp_path / "lm.safetensors"), raw).eval()
    codes = _codes(lm.config)
    with torch.no_grad(), no_compile():
        expected = reference(codes)
        got = lm(codes)
    diff = max(_max_diff(got.logits, expected.logits),
               _max_diff(got.text_logits, expected.text_logits))
    print(f"{name}: max logit difference vs moshi {diff:.2e}")
    assert diff < TOL
    assert torch.equal(got.mask, expected.mask) and torch.equal(got.text_mask, expected.text_mask)


def test_stt_like_matches_moshi_forward_text(tmp_path: Path) -> None:
    from moshi.utils.compile import no_compile

    reference = _random_moshi(STT_LIKE)
    lm = load_lm(_kyutai_file(reference, tmp_path / "stt.safetensors"), STT_LIKE).eval()
    codes = _codes(lm.config)
    initial = lm.initial_tokens().view(1, -1, 1).expand(2, -1, 1)
    shifted = torch.cat([initial, codes[:, :, :-1]], dim=2)  # all delays are 0
    with torch.no_grad(), no_compile():
        _, expected = reference.forward_text(shifted)
        got = lm(codes).text_logits
    diff = _max_diff(got, expected)
    print(f"stt_like: max logit difference vs moshi {diff:.2e}")
    assert diff < TOL


def test_round_trip_dsm_to_moshi(tmp_path: Path) -> None:
    from moshi.models.loaders import get_moshi_lm
    from moshi.utils.compile import no_compile

    lm = MultistreamLM(LMConfig.from_dict(HIBIKI_ZERO_LIKE)).eval()
    weights, config_path = save_lm(lm, tmp_path / "ckpt")
    saved = LMConfig.from_json(config_path)
    assert saved.kv_repeat == 2 and saved.positional_embedding == "rope_concat"
    reference = get_moshi_lm(str(weights), lm_kwargs=saved.moshi_kwargs(), dtype=torch.float32)
    codes = _codes(lm.config)
    with torch.no_grad(), no_compile():
        got = lm(codes)
        expected = reference(codes)
    assert _max_diff(got.logits, expected.logits) < TOL
    assert _max_diff(got.text_logits, expected.text_logits) < TOL


@pytest.mark.parametrize("name", ["hibiki_zero_like", "stt_like"])
def test_greedy_generation_equals_moshi_lmgen(name: str, tmp_path: Path) -> None:
    from moshi.models.lm import LMGen

    raw = dict(HIBIKI_ZERO_LIKE if name == "hibiki_zero_like" else STT_LIKE, context=16)
    reference = _random_moshi(raw, std=None)  # moshi's own init: varied, non-degenerate tokens
    ours = load_lm(_kyutai_file(reference, tmp_path / "lm.safetensors"), raw).eval()
    config = ours.config
    steps, batch = 40, 2  # past the context: the ring KV cache wraps
    g = torch.Generator().manual_seed(3)
    n_in = config.n_q - config.dep_q
    inputs = torch.randint(0, config.card, (steps, batch, n_in, 1), generator=g)
    generator = LMGen(reference, use_sampling=False)
    with generator.streaming(batch):
        expected = [generator.step(inputs[t]) for t in range(steps)]
    with LMStreamer(ours, batch, temp=0.0, temp_text=0.0) as streamer:
        cache = ours.transformer.layers[0].self_attn.state
        assert cache.keys.shape[1] == config.num_heads // config.kv_repeat
        got = [streamer.step(inputs[t]) for t in range(steps)]
    assert_same_tokens(got, expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kv_repeat": 3}, "'kv_repeat'"),  # 8 heads
        ({"kv_repeat": 0}, "'kv_repeat'"),
        ({"kv_repeat": "2"}, "'kv_repeat'"),
        ({"kv_repeat": 8, "depformer_num_heads": 4}, "'kv_repeat'.*depformer_num_heads"),
        ({"positional_embedding": "rope_concatenated"}, "'positional_embedding'"),
    ],
)
def test_bad_config_is_refused_by_name(change: dict, message: str) -> None:
    with pytest.raises(LMConfigError, match=message):
        LMConfig.from_dict(dict(HIBIKI_ZERO_LIKE, **change))


def test_kv_repeat_memory_is_saved() -> None:
    """The temporal KV cache of a kv_repeat 4 LM is a quarter of the kv_repeat 1 one."""
    sizes = {}
    for kv_repeat in (1, 4):
        lm = MultistreamLM(LMConfig.from_dict(dict(STT_LIKE, kv_repeat=kv_repeat)))
        with lm.streaming(2):
            sizes[kv_repeat] = sum(
                layer.self_attn.state.keys.numel() + layer.self_attn.state.values.numel()
                for layer in lm.transformer.layers
            )
    assert sizes[1] == 4 * sizes[4] == 2 * 2 * 2 * 9 * 64  # [B, K|V, layers, context, H * Dh]


@pytest.mark.gpu
def test_cuda_graph_replay_equals_eager_with_gqa_and_rope_concat() -> None:
    """On a GPU: the captured temporal and depformer steps (kv_repeat 2, rope_concat) give
    the same tokens as eager steps, a slot reset included."""
    lm = MultistreamLM(LMConfig.from_dict(dict(HIBIKI_ZERO_LIKE, context=16))).cuda().eval()
    g = torch.Generator().manual_seed(3)
    inputs = torch.randint(0, 32, (30, 3, 4, 1), generator=g).cuda()
    runs = []
    for graphs in (False, True):
        with LMStreamer(lm, 3, temp=0.0, temp_text=0.0, cuda_graph=graphs) as streamer:
            out = []
            for t in range(30):
                if t == 12:
                    streamer.reset_slots(torch.tensor([False, True, False]))
                out.append(streamer.step(inputs[t]))
            assert streamer.graphs_captured == graphs
            runs.append([o for o in out if o is not None])
    assert len(runs[0]) == len(runs[1]) > 20
    assert all(torch.equal(a, b) for a, b in zip(*runs))
