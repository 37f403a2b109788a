"""LMStreamer: token-for-token agreement with moshi's LMGen, slot independence, offline
agreement, CFG and VAD heads, bad input."""

from __future__ import annotations

import pytest
import torch
from moshi.models.lm import LMGen, LMModel
from safetensors.torch import save_file

from dsm.models import LMConfig, load_lm, preset
from dsm.streaming import UNGENERATED, LMStreamer


def stt_like() -> LMConfig:
    """dep_q 0, text out, VAD heads, max_period 1e5 (the stt-1b shape, tiny)."""
    return preset("tiny-stt", num_layers=2, dim=64, text_card=120, card=64,
                  extra_heads_num_heads=2, extra_heads_dim=3)


def moshi_like() -> LMConfig:
    """n_q 16 (8 generated, 8 input), depformer, delays [0, 0, 1, ...]."""
    return LMConfig(
        dim=64, num_heads=4, num_layers=2, hidden_scale=4.125, context=40, max_period=10_000.0,
        norm="rms_norm_f32", gating="silu", positional_embedding="rope", card=64, n_q=16,
        dep_q=8, text_card=100, delays=[0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
        depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2,
        depformer_dim_feedforward=64, depformer_multi_linear=True,
        depformer_weights_per_step=True, depformer_pos_emb="none",
    )


def moshi_and_ours(config: LMConfig, tmp_path) -> tuple[LMModel, torch.nn.Module]:
    """The same random weights in moshi's LMModel and in ours (through a safetensors file)."""
    torch.manual_seed(0)
    reference = LMModel(**config.moshi_kwargs()).eval()
    path = tmp_path / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return reference, load_lm(path, config).eval()


def _inputs(config: LMConfig, steps: int, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    n_in = config.n_q - config.dep_q
    return torch.randint(0, config.card, (steps, batch, n_in, 1), generator=generator)


@pytest.mark.parametrize("make_config", [stt_like, moshi_like], ids=["stt", "moshi"])
def test_greedy_generation_equals_moshi_lmgen(make_config, tmp_path) -> None:
    config = make_config()
    reference, ours = moshi_and_ours(config, tmp_path)
    steps, batch = 50, 2
    inputs = _inputs(config, steps, batch)
    expected, expected_vad = [], []
    generator = LMGen(reference, use_sampling=False)
    with generator.streaming(batch):
        for t in range(steps):
            out = generator.step_with_extra_heads(inputs[t])
            if out is None:
                expected.append(None)
                continue
            expected.append(out[0].clone())
            expected_vad.append(torch.stack([p[:, 0] for p in out[1]], dim=1) if out[1] else None)
    with LMStreamer(ours, batch, temp=0.0, temp_text=0.0) as streamer:
        got, got_vad = [], []
        for t in range(steps):
            out = streamer.step(inputs[t])
            got.append(out)
            if out is not None:
                got_vad.append(streamer.extra_probs.clone() if streamer.num_extra_heads else None)
    assert [g is None for g in got] == [e is None for e in expected]
    assert sum(e is None for e in expected) == max(config.delays)
    for t, (g, e) in enumerate(zip(got, expected)):
        if e is not None:
            assert torch.equal(g, e), f"step {t}: {g[:, :, 0].tolist()} != {e[:, :, 0].tolist()}"
    text = torch.stack([g[:, 0, 0] for g in got if g is not None])
    assert len(set(text.flatten().tolist())) > 3  # not a degenerate constant output
    if config.extra_heads_num_heads:
        for g, e in zip(got_vad, expected_vad):
            assert torch.allclose(g, e, atol=1e-5)


def test_cfg_equals_moshi_lmgen_without_text(tmp_path) -> None:
    config = moshi_like()
    reference, ours = moshi_and_ours(config, tmp_path)
    steps, batch = 20, 2
    inputs = _inputs(config, steps, batch)
    generator = LMGen(reference, use_sampling=False, cfg_coef=2.5, cfg_is_no_text=True)
    with generator.streaming(batch):
        expected = [generator.step(inputs[t]) for t in range(steps)]
    with LMStreamer(ours, batch, temp=0.0, temp_text=0.0, cfg_coef=2.5) as streamer:
        got = [streamer.step(inputs[t]) for t in range(steps)]
    for g, e in zip(got, expected):
        assert (g is None and e is None) or torch.equal(g, e)
    with LMStreamer(ours, batch, temp=0.0, temp_text=0.0) as plain:
        unguided = [plain.step(inputs[t]) for t in range(steps)]
    assert any(not torch.equal(g, u) for g, u in zip(got[1:], unguided[1:]))


def _run_schedule(lm, batch, schedule, steps, inputs_by_stream, seeds):
    """schedule: {step: {slot: stream name}} starts streams; returns name -> its frames.

    Each stream is fed its own inputs from its own first step, wherever it sits."""
    frames: dict[str, list[torch.Tensor]] = {}
    age: dict[str, int] = {}  # steps the stream has run
    where: dict[int, str] = {}
    with LMStreamer(lm, batch, temp=0.9, temp_text=0.8, top_k=20, top_k_text=10) as streamer:
        for t in range(steps):
            joining = schedule.get(t, {})
            if joining:
                mask = torch.zeros(batch, dtype=torch.bool)
                seed_row = torch.zeros(batch, dtype=torch.long)
                for slot, name in joining.items():
                    mask[slot] = True
                    seed_row[slot] = seeds[name]
                    where[slot] = name
                    frames[name], age[name] = [], 0
                streamer.reset_slots(mask, seed_row)
            step_inputs = torch.zeros(batch, lm.config.n_q - lm.config.dep_q, 1, dtype=torch.long)
            for slot, name in where.items():
                step_inputs[slot] = inputs_by_stream[name][age[name]]
                age[name] += 1
            out = streamer.step(step_inputs)
            for slot, name in where.items():
                if out is not None and int(out[slot, 0, 0]) != UNGENERATED:
                    frames[name].append(out[slot].clone())
    return {name: torch.stack(fs) for name, fs in frames.items()}


def test_slots_are_independent_with_sampling(tmp_path) -> None:
    config = moshi_like()
    _, lm = moshi_and_ours(config, tmp_path)
    n_in = config.n_q - config.dep_q
    generator = torch.Generator().manual_seed(5)
    names = ["a", "b", "c", "d"]
    inputs = {n: torch.randint(0, config.card, (40, n_in, 1), generator=generator) for n in names}
    seeds = {"a": 11, "b": 22, "c": 33, "d": 44}
    alone = _run_schedule(lm, 1, {0: {0: "a"}}, 25, inputs, seeds)["a"]
    # b from the start in slot 0; a joins slot 2 at step 4; c joins slot 1 at step 9;
    # d replaces b in slot 0 at step 15 (b leaves); a's tokens must not change.
    schedule = {0: {0: "b"}, 4: {2: "a"}, 9: {1: "c"}, 15: {0: "d"}}
    crowded = _run_schedule(lm, 4, schedule, 29, inputs, seeds)
    assert crowded["a"].shape == alone.shape
    assert torch.equal(crowded["a"], alone)
    assert not torch.equal(crowded["b"][:10], crowded["a"][:10])


def parallel_heads() -> LMConfig:
    """Parallel linear audio heads instead of a depformer, with per-stream delays."""
    return preset("tiny-parallel", num_layers=2, dim=64, card=64, text_card=100, n_q=6,
                  dep_q=3, delays=[0, 0, 1, 2, 0, 0, 0])


@pytest.mark.parametrize("make_config", [moshi_like, parallel_heads], ids=["depformer", "parallel"])
def test_streaming_agrees_with_offline_forward_after_a_slot_reset(make_config, tmp_path) -> None:
    """Greedy tokens are the argmax of the offline (teacher-forced) logits of the sequence
    they form, in every slot, including one restarted mid-stream."""
    config = make_config()
    if config.audio_heads == "depformer":
        _, lm = moshi_and_ours(config, tmp_path)
    else:
        from dsm.models import build_lm

        torch.manual_seed(0)
        lm = build_lm(config).eval()
    batch, steps, restart = 3, 24, 7
    inputs = _inputs(config, steps, batch, seed=3)
    outputs: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    pushed: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    with LMStreamer(lm, batch, temp=0.0, temp_text=0.0) as streamer:
        for t in range(steps):
            if t == restart:
                streamer.reset_slots(torch.tensor([False, True, False]))
                outputs[1], pushed[1] = [], []
            out = streamer.step(inputs[t])
            for b in range(batch):
                pushed[b].append(inputs[t][b])
                if out is not None and int(out[b, 0, 0]) != UNGENERATED:
                    outputs[b].append(out[b])
    max_delay = max(config.delays)
    for b in range(batch):
        generated = torch.stack(outputs[b], dim=-1)[..., 0, :]  # [1 + dep_q, T]
        T = generated.shape[-1]
        # input frame f was pushed at the stream's step f + 1
        given = torch.stack(pushed[b][1 : T + 1], dim=-1)[..., 0, :]  # [n_in, T]
        codes = torch.cat([generated, given], dim=0)[None]  # [1, K, T]
        with torch.no_grad():
            offline = lm(codes)
        text_pred = offline.text_logits[0, 0].argmax(-1)  # [T]
        assert torch.equal(text_pred, generated[0])
        audio_pred = offline.logits[0].argmax(-1)  # [dep_q, T]
        valid = offline.mask[0]
        assert valid[:, : T - max_delay].all()
        assert torch.equal(audio_pred[valid], generated[1:][valid])
    assert len(outputs[1]) < len(outputs[0])


def test_bad_input_is_refused(tmp_path) -> None:
    config = moshi_like()
    _, lm = moshi_and_ours(config, tmp_path)
    with LMStreamer(lm, 2, temp=0.0, temp_text=0.0) as streamer:
        with pytest.raises(ValueError, match=r"input_tokens must be \[2, 8, 1\]"):
            streamer.step(torch.zeros(3, 8, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="the model reads 8"):
            streamer.step(torch.zeros(2, 4, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="needs input tokens"):
            streamer.step(None)
        with pytest.raises(ValueError, match="slots must be a bool tensor of shape"):
            streamer.reset_slots(torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="batch_size"):
        LMStreamer(lm, 0)


@pytest.mark.parametrize("make_config,cfg_coef", [(stt_like, 1.0), (moshi_like, 1.0),
                                                   (moshi_like, 2.0)],
                         ids=["stt", "moshi", "moshi-cfg"])
def test_a_skipped_slot_waits_exactly_as_it_was(make_config, cfg_coef, tmp_path) -> None:
    """`step(active=mask)`: a slot left out of a step keeps its offset, caches and random
    stream, so its tokens (sampled, with delays) are those it gives stepping alone, whatever
    the pattern of skips and what its neighbour does meanwhile."""
    config = make_config()
    _, ours = moshi_and_ours(config, tmp_path)
    steps = 24
    inputs = _inputs(config, steps, 1, seed=4)[:, 0]  # [T, n_in, 1]
    sampling = dict(temp=0.8, temp_text=0.7, cfg_coef=cfg_coef, cuda_graph=False)

    def run(pattern: list[tuple[bool, bool]]) -> list[torch.Tensor]:
        got, t = [], 0
        with LMStreamer(ours, 2, seed=7, **sampling) as streamer:
            for active in pattern:
                x = torch.randint(0, config.card, (2, *inputs.shape[1:]))  # the neighbour's
                if active[0]:
                    x[0] = inputs[t]
                out = streamer.step(x, active=torch.tensor(active))
                if active[0]:
                    t += 1
                    got.append(None if out is None or out[0, 0, 0] == UNGENERATED
                               else out[0].clone())
                if t == steps:
                    return got
        raise AssertionError("the pattern ended before the stream did")

    alone = run([(True, True)] * steps)
    rng = torch.Generator().manual_seed(5)
    pattern = [(bool(a), bool(b)) for a, b in torch.rand(4 * steps, 2, generator=rng) > 0.4]
    skipped = run(pattern)
    assert sum(not a for a, _ in pattern[:2 * steps]) > 5  # the stream really was skipped
    for t, (a, b) in enumerate(zip(alone, skipped)):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), f"step {t}"
    with pytest.raises(ValueError, match="active"):
        with LMStreamer(ours, 2, **sampling) as streamer:
            streamer.step(inputs[:1].expand(2, -1, -1).clone() if config.n_q > config.dep_q
                          else None, active=torch.tensor([True]))
