"""Sampling: greedy, temperature, top-k, top-p, and per-slot independent randomness."""

from __future__ import annotations

import pytest
import torch

from dsm.streaming.sampling import (
    SamplingParams,
    SlotRandom,
    SlotSampling,
    hash32,
    sample_tokens,
)


def test_hash32_matches_python_reference() -> None:
    def ref(x: int) -> int:
        m = 0xFFFFFFFF
        x &= m
        x ^= x >> 16
        x = (x * 0x7FEB352D) & m
        x ^= x >> 15
        x = (x * 0x5BD1E995) & m
        x ^= x >> 16
        return x

    values = [0, 1, 2, 12345, 0xFFFFFFFF, 0x80000000, 987654321]
    got = hash32(torch.tensor(values, dtype=torch.long)).tolist()
    assert got == [ref(v) for v in values]


def test_greedy_is_argmax() -> None:
    logits = torch.randn(5, 100)
    tokens = sample_tokens(logits, SamplingParams(temperature=0.0))
    assert torch.equal(tokens, logits.argmax(-1))


def _draw_many(logits: torch.Tensor, params: SamplingParams, n: int) -> torch.Tensor:
    """n slots with the same logits and different seeds, several steps: a bag of samples."""
    rng = SlotRandom(n, seed=3)
    out = []
    for _ in range(4):
        out.append(sample_tokens(logits.expand(n, -1), params, rng, stream=1))
        rng.advance()
    return torch.cat(out)


def test_temperature_sampling_follows_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    samples = _draw_many(logits, SamplingParams(temperature=0.8), 5000)
    freq = torch.bincount(samples, minlength=5).float() / samples.numel()
    expected = (logits[0] / 0.8).softmax(-1)
    assert (freq - expected).abs().max() < 0.02


def test_top_k_only_draws_the_k_best_and_renormalises() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.5, -1.0, 2.9, 0.0]])
    samples = _draw_many(logits, SamplingParams(temperature=1.0, top_k=3), 4000)
    assert set(samples.tolist()) <= {1, 2, 4}
    freq = torch.bincount(samples, minlength=6).float() / samples.numel()
    kept = torch.tensor([3.0, 2.5, 2.9]).softmax(-1)
    assert (freq[[1, 2, 4]] - kept).abs().max() < 0.03


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    samples = _draw_many(probs.log(), SamplingParams(temperature=1.0, top_p=0.7), 4000)
    # 0.5 < 0.7 so token 1 joins; 0.8 >= 0.7 so tokens 2 and 3 are cut.
    assert set(samples.tolist()) == {0, 1}
    freq = torch.bincount(samples, minlength=4).float() / samples.numel()
    assert abs(freq[0].item() - 0.5 / 0.8) < 0.03


def test_top_k_and_top_p_combined() -> None:
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    samples = _draw_many(probs.log(), SamplingParams(temperature=1.0, top_k=3, top_p=0.95), 2000)
    assert set(samples.tolist()) == {0, 1, 2}


def test_slots_are_independent_of_each_other() -> None:
    params = SamplingParams(temperature=1.0, top_k=50)
    logits = torch.randn(4, 300)
    rng_a = SlotRandom(4, seed=7)
    together = [sample_tokens(logits, params, rng_a, stream=2)]
    rng_a.advance()
    together.append(sample_tokens(logits, params, rng_a, stream=2))

    # Slot 2 alone in a batch of one, with the seed it had: same draws.
    rng_b = SlotRandom(1)
    rng_b.reseed(torch.tensor([True]), rng_a.seeds[2:3])
    alone = [sample_tokens(logits[2:3], params, rng_b, stream=2)]
    rng_b.advance()
    alone.append(sample_tokens(logits[2:3], params, rng_b, stream=2))
    assert [t[2].item() for t in together] == [t[0].item() for t in alone]

    # Changing another slot's logits does not change slot 2's token.
    other = logits.clone()
    other[0] = torch.randn(300)
    rng_c = SlotRandom(4, seed=7)
    assert sample_tokens(other, params, rng_c, stream=2)[2] == together[0][2]


def test_streams_and_steps_give_different_noise() -> None:
    rng = SlotRandom(2, seed=1)
    a = rng.uniform(0, 64)
    b = rng.uniform(1, 64)
    rng.advance()
    c = rng.uniform(0, 64)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])
    assert (a > 0).all() and (a < 1).all()


def test_reseed_restarts_only_the_chosen_slots() -> None:
    rng = SlotRandom(3, seed=0)
    first = rng.uniform(0, 16).clone()
    rng.advance()
    rng.reseed(torch.tensor([False, True, False]), rng.seeds.clone())
    now = rng.uniform(0, 16)
    assert torch.equal(now[1], first[1])
    assert not torch.equal(now[0], first[0])


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="SlotRandom"):
        sample_tokens(torch.randn(2, 5), SamplingParams(temperature=1.0))
    with pytest.raises(ValueError, match=r"\[B, V\]"):
        sample_tokens(torch.randn(5), SamplingParams())


def test_noise_block_equals_per_stream_draws() -> None:
    rng = SlotRandom(3, seed=9)
    rng.advance()
    block = rng.gumbel_block(4, 50)
    for stream in range(4):
        assert torch.equal(block[:, stream], rng.gumbel(stream, 50))
    assert torch.equal(rng.gumbel_block(4, 20), block[:, :, :20])
    params = SamplingParams(temperature=0.9, top_k=10)
    logits = torch.randn(3, 80)
    assert torch.equal(
        sample_tokens(logits, params, noise=block[:, 2]), sample_tokens(logits, params, rng, 2)
    )


@pytest.mark.parametrize(
    ("default", "max_top_k"),
    [(SamplingParams(0.8, 25), 25), (SamplingParams(0.8, 25), 60), (SamplingParams(0.7, 0), 10),
     (SamplingParams(0.9, 0, 0.9), 10), (SamplingParams(0.0), 30), (SamplingParams(0.8, 10, 0.8), 40)],
    ids=["topk-same-width", "topk-wider", "full-vocab", "top-p", "greedy-default", "topk-top-p"],
)
def test_slot_sampling_at_its_defaults_draws_what_sample_tokens_draws(
        default: SamplingParams, max_top_k: int) -> None:
    """A served stream that chooses nothing samples exactly as before (same noise, same
    tokens), whatever room the server leaves for streams that do choose."""
    vocab, batch = 100, 64
    slots = SlotSampling(default, vocab, max_top_k, batch, "cpu")
    rng = SlotRandom(batch, seed=3)
    for _ in range(5):
        logits = torch.randn(batch, vocab) * 3
        noise = rng.gumbel_block(1, max(slots.width, 1))[:, 0]
        expected = sample_tokens(logits, default, noise=noise)
        assert torch.equal(slots.sample(logits, noise), expected)
        rng.advance()


def test_slot_sampling_per_slot_choices() -> None:
    vocab, batch = 50, 4
    slots = SlotSampling(SamplingParams(0.0), vocab, 10, batch, "cpu")
    slots.set(1, 1.0, 3)  # samples among its 3 best
    slots.set(2, 0.0, None)  # greedy, like the default slots 0 and 3
    rng = SlotRandom(batch, seed=1)
    logits = torch.randn(batch, vocab)
    drawn: set[int] = set()
    for _ in range(200):
        tokens = slots.sample(logits, rng.gumbel_block(1, slots.width)[:, 0])
        assert tokens[[0, 2, 3]].tolist() == logits[[0, 2, 3]].argmax(-1).tolist()
        drawn.add(int(tokens[1]))
        rng.advance()
    assert drawn == set(logits[1].topk(3).indices.tolist())
    slots.set(1, None, None)  # back to the default: greedy
    assert int(slots.sample(logits, rng.gumbel_block(1, slots.width)[:, 0])[1]) == int(
        logits[1].argmax())
    with pytest.raises(ValueError, match="above this server's limit 10"):
        slots.set(0, 1.0, 11)
    with pytest.raises(ValueError, match="decodes greedily"):
        SlotSampling(SamplingParams(0.0), vocab, 0, batch, "cpu").set(0, 0.5, None)
