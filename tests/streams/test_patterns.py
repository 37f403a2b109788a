"""Codebook patterns: exact inverse, order promises, logits revert, partial sequences."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm.streams.patterns import (
    DelayPattern,
    FlattenPattern,
    ParallelPattern,
    Pattern,
    StackDelayPattern,
    make_pattern,
)


@st.composite
def patterns(draw: st.DrawFn) -> Pattern:
    kind = draw(st.sampled_from(["parallel", "delay", "flatten", "stack_delay"]))
    k = draw(st.integers(1, 6))
    if kind == "parallel":
        return ParallelPattern(k)
    if kind == "flatten":
        return FlattenPattern(k)
    if kind == "delay":
        return DelayPattern(delays=draw(st.lists(st.integers(0, 5), min_size=k, max_size=k)))
    stacks = draw(st.integers(1, 4))
    max_delay = (k - 1) // (stacks - 1) if stacks > 1 else 3
    delta = draw(st.integers(0, min(max_delay, 3)))
    return StackDelayPattern(k, num_stacks=stacks, stack_delay=delta)


def random_codes(pattern: Pattern, batch: int, frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (batch, pattern.num_codebooks, frames), generator=generator)


@settings(max_examples=150, deadline=None)
@given(patterns(), st.integers(0, 13), st.integers(1, 3), st.integers(0, 2**16))
def test_revert_build_is_identity(pattern: Pattern, frames: int, batch: int, seed: int) -> None:
    codes = random_codes(pattern, batch, frames, seed)
    sequence, mask = pattern.build(codes, fill_value=-7)
    assert sequence.shape == (batch, pattern.num_rows, pattern.num_steps(frames))
    assert mask.shape == sequence.shape[1:]
    # every code appears exactly once; the other cells hold the fill value
    assert int(mask.sum()) == pattern.num_codebooks * frames
    assert bool((sequence[:, ~mask] == -7).all())
    assert torch.equal(pattern.revert(sequence, num_frames=frames), codes)
    if not isinstance(pattern, StackDelayPattern):  # its length can be ambiguous
        assert torch.equal(pattern.revert(sequence), codes)


def cell_order(pattern: Pattern, frames: int) -> dict[tuple[int, int], tuple[int, int]]:
    """(k, t) -> (step, row): the order in which cells are produced."""
    return {(k, t): (step, row) for k, t, row, step in pattern.coordinates(frames)}


@settings(max_examples=150, deadline=None)
@given(patterns(), st.integers(1, 13))
def test_no_token_before_one_it_must_follow(pattern: Pattern, frames: int) -> None:
    order = cell_order(pattern, frames)
    pairs = pattern.dependencies(frames)
    # the promise always includes time order within each codebook
    for k in range(pattern.num_codebooks):
        for t in range(1, frames):
            assert ((k, t - 1), (k, t)) in pairs
    for before, after in pairs:
        assert order[before] < order[after], (pattern, before, after)


def test_dependencies_include_hierarchy_where_promised() -> None:
    for pattern in [ParallelPattern(4), FlattenPattern(4), StackDelayPattern(8, 4, 2),
                    DelayPattern(delays=[0, 1, 1, 3])]:
        pairs = set(pattern.dependencies(5))
        assert ((0, 2), (1, 2)) in pairs and ((2, 2), (3, 2)) in pairs
    # decreasing delays break the within-frame order, so it is not promised there
    pairs = set(DelayPattern(delays=[0, 2, 1]).dependencies(5))
    assert ((1, 2), (2, 2)) not in pairs and ((0, 2), (1, 2)) in pairs


def test_stack_delay_layout_and_speed() -> None:
    pattern = StackDelayPattern(4, num_stacks=2, stack_delay=1)
    codes = torch.arange(4 * 4).view(1, 4, 4)  # code (k, t) = 4k + t
    sequence, mask = pattern.build(codes, fill_value=-1)
    # row 0: frames 0, 2; row 1: frames 1, 3 one step later
    assert sequence[0, 0].tolist() == [0, 4, 8, 12, 2, 6, 10, 14, -1]
    assert sequence[0, 1].tolist() == [-1, 1, 5, 9, 13, 3, 7, 11, 15]
    assert mask.sum() == 16
    # about D times fewer steps than flatten
    assert StackDelayPattern(8, 4, 1).num_steps(100) == 8 * 25 + 3
    assert FlattenPattern(8).num_steps(100) == 800
    with pytest.raises(ValueError, match="D-1"):
        StackDelayPattern(4, num_stacks=3, stack_delay=2)


def test_delay_layout_matches_moshi_delays() -> None:
    pattern = DelayPattern(delays=[0, 1, 2])
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    sequence, _ = pattern.build(codes, fill_value=0)
    assert sequence[0].tolist() == [[1, 2, 3, 0, 0], [0, 4, 5, 6, 0], [0, 0, 7, 8, 9]]


@settings(max_examples=60, deadline=None)
@given(patterns(), st.integers(1, 9), st.integers(0, 2**16), st.data())
def test_revert_logits_and_partial_sequences(
    pattern: Pattern, frames: int, seed: int, data: st.DataObject
) -> None:
    codes = random_codes(pattern, 2, frames, seed)
    sequence, _ = pattern.build(codes)
    cards = 5
    one_hot = torch.nn.functional.one_hot(sequence.clamp(min=0) % cards, cards).float()
    logits, mask = pattern.revert_logits(one_hot, num_frames=frames)
    assert logits.shape == (2, pattern.num_codebooks, frames, cards)
    assert bool(mask.all())
    assert torch.equal(logits.argmax(-1), codes % cards)
    # a truncated sequence: codes beyond it are missing, masked and NaN
    steps = data.draw(st.integers(0, sequence.shape[-1]))
    part_logits, part_mask = pattern.revert_logits(one_hot[:, :, :steps], num_frames=frames)
    reverted = pattern.revert(sequence[:, :, :steps], num_frames=frames, fill_value=-3)
    for k, t, _row, step in pattern.coordinates(frames):
        present = step < steps
        assert bool(part_mask[k, t]) == present
        if present:
            assert torch.equal(reverted[:, k, t], codes[:, k, t])
        else:
            assert bool((reverted[:, k, t] == -3).all())
            assert bool(part_logits[:, k, t].isnan().all())


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, T\]"):
        ParallelPattern(3).build(torch.zeros(1, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="delays"):
        make_pattern("delay", 3, delays=[0, 1])
    with pytest.raises(ValueError, match="unknown pattern"):
        make_pattern("spiral", 3)
    with pytest.raises(ValueError, match="more than"):
        ParallelPattern(2).revert(torch.zeros(1, 2, 6, dtype=torch.long), num_frames=5)
    with pytest.raises(ValueError, match="num_frames"):
        StackDelayPattern(4, 2, 0).revert(torch.zeros(1, 2, 8, dtype=torch.long))


def test_indices_are_cached_and_follow_device() -> None:
    pattern = make_pattern("stack_delay", 4, num_stacks=2)
    first = pattern._indices(7, torch.device("cpu"))
    assert pattern._indices(7, torch.device("cpu")) is first
