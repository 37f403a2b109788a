"""Conformance with moshi's LMModel: same random weights, same logits (fp32, 1e-4).

Weights are written by moshi (its own `state_dict()`), loaded with `load_lm`, and the other
way round (dsm -> `save_lm` -> moshi's `get_moshi_lm`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dsm.models import LMConfig, MultistreamLM, load_lm, save_lm

TOL = 1e-4


def _base(**fields: object) -> dict:
    raw = dict(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=7, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", card=32, text_card=40,
        existing_text_padding_id=3,
    )
    raw.update(fields)
    return raw


STT_LIKE = _base(  # (a) dep_q 0, 32 input codebooks, VAD heads, max_period 1e5
    n_q=32, dep_q=0, delays=[0] * 33, max_period=100_000.0, extra_heads_num_heads=2,
    extra_heads_dim=6, depformer_dim=16, model_type="stt",
    stt_config={"audio_delay_seconds": 0.5},
)
MOSHI_LIKE = _base(  # (b) n_q 16, dep_q 8, delays [0, 0, 1, ...]
    n_q=16, dep_q=8, delays=[0, 0] + [1] * 7 + [0] + [1] * 7, depformer_dim=32,
    depformer_num_heads=2, depformer_num_layers=2, depformer_multi_linear=True,
    depformer_weights_per_step=True, depformer_pos_emb="none", depformer_context=8,
)
SCHEDULE_LOW_RANK = _base(  # (c) weights_per_step_schedule + low-rank embeddings
    n_q=6, dep_q=4, delays=[0, 1, 2, 2, 2, 0, 0], depformer_dim=32, depformer_num_heads=2,
    depformer_num_layers=2, depformer_multi_linear=True, depformer_weights_per_step=True,
    depformer_weights_per_step_schedule=[0, 1, 1, 2], depformer_low_rank_embeddings=8,
    depformer_pos_emb="none", depformer_norm="layer_norm", layer_scale=0.1,
)
DEMUX_SIN = _base(  # second text stream muxed in the text ids; Kyutai's default "sin" depformer
    n_q=3, dep_q=2, delays=[0, 0, 1, 0], depformer_dim=32, depformer_num_heads=4,
    depformer_num_layers=1, demux_second_stream=True, norm="layer_norm", gating="none",
    hidden_scale=2,
)


def _random_moshi(raw: dict) -> torch.nn.Module:
    from moshi.models.lm import LMModel

    model = LMModel(**LMConfig.from_dict(raw).moshi_kwargs()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _codes(config: LMConfig, T: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config.card, (2, config.num_codebooks, T), generator=g)
    text_top = config.text_card
    if config.demux_second_stream:
        text_top = (config.text_card + 1) * (config.text_card + 1)
    codes[:, 0] = torch.randint(0, text_top, (2, T), generator=g)
    codes[0, 2, 4] = -1  # "no token" in an audio row
    codes[1, 0, 7] = -1  # and in the text row
    return codes


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.equal(a.isnan(), b.isnan())
    return (a - b).abs().nan_to_num().max().item()


def _moshi_to_file(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_stt_like_matches_moshi_forward_text(tmp_path: Path) -> None:
    from moshi.utils.compile import no_compile

    reference = _random_moshi(STT_LIKE)
    lm = load_lm(_moshi_to_file(reference, tmp_path / "stt.safetensors"), STT_LIKE)
    assert lm.config.extras["stt_config"] == {"audio_delay_seconds": 0.5}
    assert "depformer_in.0.weight" in lm.state_dict()  # Kyutai keeps it even at dep_q 0
    codes = _codes(lm.config)
    initial = lm.initial_tokens().view(1, -1, 1).expand(2, -1, 1)
    shifted = torch.cat([initial, codes[:, :, :-1]], dim=2)  # all delays are 0
    with torch.no_grad(), no_compile():
        hidden_ref, text_ref = reference.forward_text(shifted)
        vad_ref = [torch.softmax(h(hidden_ref), dim=-1) for h in reference.extra_heads]
        out = lm(codes)
        hidden, text_temporal = lm.forward_temporal(shifted)
        vad = lm.extra_heads_probs(hidden)
    assert out.logits.shape == (2, 0, 12, 32)
    assert _max_diff(out.text_logits, text_ref) < TOL
    assert _max_diff(text_temporal, text_ref) < TOL
    assert len(vad) == 2 and all(_max_diff(a, b) < TOL for a, b in zip(vad, vad_ref))
    assert out.text_mask[1, 0, 7].item() is False and out.text_mask.sum().item() == 2 * 12 - 1


@pytest.mark.parametrize("raw", [MOSHI_LIKE, SCHEDULE_LOW_RANK, DEMUX_SIN],
                         ids=["moshi_like", "schedule_low_rank", "demux_sin"])
def test_depformer_models_match_moshi_forward(raw: dict, tmp_path: Path) -> None:
    from moshi.utils.compile import no_compile

    reference = _random_moshi(raw)
    lm = load_lm(_moshi_to_file(reference, tmp_path / "lm.safetensors"), raw)
    codes = _codes(lm.config)
    with torch.no_grad(), no_compile():
        expected = reference(codes)
        got = lm(codes)
    assert got.logits.shape == (2, lm.config.dep_q, 12, 32)
    assert _max_diff(got.logits, expected.logits) < TOL
    assert _max_diff(got.text_logits, expected.text_logits) < TOL
    assert torch.equal(got.mask, expected.mask) and torch.equal(got.text_mask, expected.text_mask)
    assert not got.mask.all()  # delays and the -1 leave invalid positions


@pytest.mark.parametrize("raw", [STT_LIKE, MOSHI_LIKE, SCHEDULE_LOW_RANK],
                         ids=["stt_like", "moshi_like", "schedule_low_rank"])
def test_round_trip_dsm_to_moshi(raw: dict, tmp_path: Path) -> None:
    from moshi.models.loaders import get_moshi_lm
    from moshi.utils.compile import no_compile

    lm = MultistreamLM(LMConfig.from_dict(raw)).eval()
    weights, config_path = save_lm(lm, tmp_path / "ckpt")
    saved_config = LMConfig.from_json(config_path)
    assert saved_config.extras["moshi_name"] == "model.safetensors"
    reference = get_moshi_lm(str(weights), lm_kwargs=saved_config.moshi_kwargs(),
                             dtype=torch.float32)
    again = load_lm(tmp_path / "ckpt")  # and back into dsm from the directory
    codes = _codes(lm.config)
    with torch.no_grad(), no_compile():
        got = lm(codes)
        back = again(codes)
        if lm.config.dep_q:
            expected = reference(codes)
            assert _max_diff(got.logits, expected.logits) < TOL
            expected_text = expected.text_logits
        else:
            initial = lm.initial_tokens().view(1, -1, 1).expand(2, -1, 1)
            _, expected_text = reference.forward_text(torch.cat([initial, codes[:, :, :-1]], dim=2))
    assert _max_diff(got.text_logits, expected_text) < TOL
    assert _max_diff(back.text_logits, got.text_logits) == 0.0
