"""Codebook patterns: how the K codebooks of T frames are laid out as a token sequence.

A pattern is plain data: for a given number of frames T it lists, for every code
`(k, t)` (codebook k of frame t), the cell `(row, step)` of the output sequence
`[B, R, S]` that holds it. R rows are produced together at one step (in row order), S
steps one after another. That list is turned once per (T, device) into two cached index
tensors, so `build` and `revert` are each a single gather:

- `build(codes[B,K,T]) -> (sequence[B,R,S], mask[R,S])`: `mask` is True where a code sits;
  the other cells hold `fill_value` (e.g. the LM's initial/special token, default -1).
- `revert(sequence[B,R,S'], num_frames=None) -> codes[B,K,T]`: the exact inverse of build.
  `S'` may be shorter than S (a sequence being generated): missing codes are `fill_value`.
- `revert_logits(logits[B,R,S',C], num_frames=None) -> (logits[B,K,T,C], mask[K,T])`: the
  same mapping for per-cell logits (training loss on the original code grid); `mask` is
  False for codes whose cell lies beyond S' (their logits are NaN).

Order: cell `(row, step)` comes before `(row', step')` when `step < step'`, or same step and
`row < row'` (a depth decoder goes through the rows of a step in order). Every pattern
keeps each codebook's frames in time order; `dependencies()` lists the pairs a pattern
promises to keep in order and the tests check them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Coordinate = tuple[int, int, int, int]  # (codebook k, frame t, row, step)


@dataclass
class Pattern:
    """Base class: subclasses say where each code goes (`cell`) and how long it gets."""

    num_codebooks: int
    _cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # --- layout (plain data) --------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        raise NotImplementedError

    def num_steps(self, num_frames: int) -> int:
        raise NotImplementedError

    def cell(self, k: int, t: int, num_frames: int) -> tuple[int, int]:
        """(row, step) holding code (k, t)."""
        raise NotImplementedError

    def coordinates(self, num_frames: int) -> list[Coordinate]:
        """Every code of a T-frame grid with its cell: the pattern as plain data."""
        return [
            (k, t, *self.cell(k, t, num_frames))
            for k in range(self.num_codebooks)
            for t in range(num_frames)
        ]

    def dependencies(self, num_frames: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Pairs ((k, t) before (k', t')) this pattern keeps in order.

        Base promise: each codebook in time order, (k, t-1) before (k, t); and inside a frame
        the lower codebook first, (k-1, t) before (k, t). Subclasses may narrow it.
        """
        pairs = []
        for k in range(self.num_codebooks):
            for t in range(num_frames):
                if t > 0:
                    pairs.append(((k, t - 1), (k, t)))
                if k > 0:
                    pairs.append(((k - 1, t), (k, t)))
        return pairs

    def frames_for_steps(self, num_steps: int) -> int:
        """The T whose full sequence has `num_steps` steps (error if none or ambiguous)."""
        upper = (num_steps * self.num_rows) // self.num_codebooks + 1  # K*T <= R*S
        matches = [t for t in range(upper + 1) if self.num_steps(t) == num_steps]
        if len(matches) != 1:
            raise ValueError(
                f"{type(self).__name__}: {num_steps} steps match frame counts {matches[:4]}; "
                "pass num_frames"
            )
        return matches[0]

    # --- cached indices ---------------------------------------------------------------------
    def _indices(self, num_frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(source [R*S] into codes+fill, destination [K*T] into the sequence, S)."""
        key = (num_frames, str(device))
        if key not in self._cache:
            steps = self.num_steps(num_frames)
            rows = self.num_rows
            fill_index = self.num_codebooks * num_frames  # points at the appended fill column
            source = torch.full((rows * steps,), fill_index, dtype=torch.long)
            destination = torch.empty(self.num_codebooks * num_frames, dtype=torch.long)
            for k, t, row, step in self.coordinates(num_frames):
                if not (0 <= row < rows and 0 <= step < steps):
                    raise AssertionError(f"{self}: code {(k, t)} placed outside the grid")
                flat = row * steps + step
                if source[flat] != fill_index:
                    raise AssertionError(f"{self}: two codes placed at cell {(row, step)}")
                source[flat] = k * num_frames + t
                destination[k * num_frames + t] = flat
            self._cache[key] = (source.to(device), destination.to(device), steps)
        return self._cache[key]

    # --- transforms -----------------------------------------------------------------------
    def build(
        self, codes: torch.Tensor, fill_value: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """codes [B, K, T] -> (sequence [B, R, S], mask [R, S] True where a code sits)."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"{type(self).__name__} expects codes [B, {self.num_codebooks}, T], "
                f"got {tuple(codes.shape)}"
            )
        batch, _, frames = codes.shape
        source, _, steps = self._indices(frames, codes.device)
        flat = codes.reshape(batch, -1)
        fill = torch.full((batch, 1), fill_value, dtype=codes.dtype, device=codes.device)
        padded = torch.cat([flat, fill], dim=1)  # [B, K*T + 1]
        sequence = padded[:, source].view(batch, self.num_rows, steps)
        mask = (source != self.num_codebooks * frames).view(self.num_rows, steps)
        return sequence, mask

    def revert(
        self, sequence: torch.Tensor, num_frames: int | None = None, fill_value: int = -1
    ) -> torch.Tensor:
        """sequence [B, R, S'] -> codes [B, K, T]; codes beyond S' are `fill_value`."""
        values, _ = self._revert_cells(sequence, num_frames, fill_value, trailing=0)
        return values

    def revert_logits(
        self, logits: torch.Tensor, num_frames: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, R, S', C] -> (logits [B, K, T, C], mask [K, T]); missing cells NaN."""
        if logits.dim() != 4:
            raise ValueError(f"expected logits [B, R, S, C], got {tuple(logits.shape)}")
        return self._revert_cells(logits, num_frames, float("nan"), trailing=1)

    def _revert_cells(
        self, values: torch.Tensor, num_frames: int | None, fill_value: float, trailing: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if values.dim() != 3 + trailing or values.shape[1] != self.num_rows:
            raise ValueError(
                f"{type(self).__name__} expects [B, {self.num_rows}, S"
                + (", C]" if trailing else "]")
                + f", got {tuple(values.shape)}"
            )
        batch, _, given_steps = values.shape[:3]
        extra = tuple(values.shape[3:])
        if num_frames is None:
            num_frames = self.frames_for_steps(given_steps)
        _, destination, steps = self._indices(num_frames, values.device)
        if given_steps > steps:
            raise ValueError(
                f"sequence has {given_steps} steps, more than the {steps} of {num_frames} frames"
            )
        if given_steps < steps:  # a partial sequence: pad the missing steps
            pad = torch.full(
                (batch, self.num_rows, steps - given_steps, *extra),
                fill_value,
                dtype=values.dtype,
                device=values.device,
            )
            values = torch.cat([values, pad], dim=2)
        flat = values.reshape(batch, self.num_rows * steps, *extra)
        codes = flat[:, destination].view(batch, self.num_codebooks, num_frames, *extra)
        step_of_code = destination % steps
        mask = (step_of_code < given_steps).view(self.num_codebooks, num_frames)
        return codes, mask


@dataclass
class ParallelPattern(Pattern):
    """All K codebooks of frame t at step t, codebook k on row k. S = T."""

    @property
    def num_rows(self) -> int:
        return self.num_codebooks

    def num_steps(self, num_frames: int) -> int:
        return num_frames

    def cell(self, k: int, t: int, num_frames: int) -> tuple[int, int]:
        return k, t

    def frames_for_steps(self, num_steps: int) -> int:
        return num_steps


@dataclass
class DelayPattern(Pattern):
    """Codebook k of frame t at step `t + delays[k]`, row k. S = T + max(delays).

    Any non-negative per-codebook delays (MusicGen: 0,1,2,...; Moshi: 0,1,1,...). The
    within-frame order (k-1 before k) is promised only where `delays[k-1] <= delays[k]`.
    """

    num_codebooks: int = field(init=False)
    delays: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("DelayPattern needs one delay per codebook")
        if any(d < 0 for d in self.delays):
            raise ValueError(f"delays must be >= 0, got {self.delays}")
        self.num_codebooks = len(self.delays)

    @property
    def num_rows(self) -> int:
        return self.num_codebooks

    def num_steps(self, num_frames: int) -> int:
        return num_frames + max(self.delays)

    def cell(self, k: int, t: int, num_frames: int) -> tuple[int, int]:
        return k, t + self.delays[k]

    def frames_for_steps(self, num_steps: int) -> int:
        frames = num_steps - max(self.delays)
        if frames < 0:
            raise ValueError(f"{num_steps} steps are fewer than the largest delay")
        return frames

    def dependencies(self, num_frames: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        return [
            (before, after)
            for before, after in super().dependencies(num_frames)
            if before[0] == after[0] or self.delays[before[0]] <= self.delays[after[0]]
        ]


@dataclass
class FlattenPattern(Pattern):
    """One row; code (k, t) at step `t*K + k`: every code is its own step. S = K*T."""

    @property
    def num_rows(self) -> int:
        return 1

    def num_steps(self, num_frames: int) -> int:
        return num_frames * self.num_codebooks

    def cell(self, k: int, t: int, num_frames: int) -> tuple[int, int]:
        return 0, t * self.num_codebooks + k

    def frames_for_steps(self, num_steps: int) -> int:
        if num_steps % self.num_codebooks:
            raise ValueError(f"{num_steps} steps is not a multiple of K={self.num_codebooks}")
        return num_steps // self.num_codebooks


@dataclass
class StackDelayPattern(Pattern):
    """Stack-and-delay (after Le Lan et al. 2023, arXiv 2309.08804), as implemented here.

    Each frame's K codes form a *stack*, decoded flat (one code per step, k = 0..K-1, as
    in the flatten pattern). `num_stacks` = D stacks are decoded in parallel on D rows,
    consecutive frames on consecutive rows (interleaved: frame t on row `t % D`), and each
    row is delayed by `stack_delay` = δ steps relative to the previous one, like the
    codebooks of the delay pattern:

        frame t = D*b + s  (block b, row s),  code (k, t)  ->  row s, step  b*K + k + s*δ

    so S = max over rows s of `n_s*K + s*δ` with `n_s = ceil((T - s) / D)` frames on row s
    (about K*T/D steps: D times fewer than flatten). Frame t's stack starts δ steps after
    frame t-1's, so it sees the first δ codes of frame t-1 and every code of frames <= t-D.
    Needs `(D-1)*δ < K` so frame D*b (row 0) still starts after frame D*b-1 (row D-1)
    started. D=1 is the flatten pattern. The paper's model additionally restricts which
    positions are kept in its streaming KV cache; that is a model matter, not a layout one.
    """

    num_stacks: int = 4
    stack_delay: int = 1

    def __post_init__(self) -> None:
        if self.num_codebooks < 1 or self.num_stacks < 1 or self.stack_delay < 0:
            raise ValueError(
                f"bad stack-delay parameters: K={self.num_codebooks}, D={self.num_stacks}, "
                f"delta={self.stack_delay}"
            )
        if (self.num_stacks - 1) * self.stack_delay >= self.num_codebooks:
            raise ValueError(
                f"stack-delay needs (D-1)*delta < K so frames stay in order: D={self.num_stacks},"
                f" delta={self.stack_delay}, K={self.num_codebooks}"
            )

    @property
    def num_rows(self) -> int:
        return self.num_stacks

    def frames_on_row(self, row: int, num_frames: int) -> int:
        return max(0, math.ceil((num_frames - row) / self.num_stacks))

    def num_steps(self, num_frames: int) -> int:
        if num_frames == 0:
            return 0
        return max(
            self.frames_on_row(s, num_frames) * self.num_codebooks + s * self.stack_delay
            for s in range(min(self.num_stacks, num_frames))
        )

    def cell(self, k: int, t: int, num_frames: int) -> tuple[int, int]:
        block, row = divmod(t, self.num_stacks)
        return row, block * self.num_codebooks + k + row * self.stack_delay


def make_pattern(name: str, num_codebooks: int, **options: object) -> Pattern:
    """Pattern by name: "parallel", "delay" (delays=[...]), "flatten", "stack_delay"."""
    if name == "parallel":
        return ParallelPattern(num_codebooks)
    if name == "flatten":
        return FlattenPattern(num_codebooks)
    if name == "delay":
        delays = options.get("delays")
        if delays is None:
            delays = list(range(num_codebooks))
        delays = [int(d) for d in delays]  # type: ignore[union-attr]
        if len(delays) != num_codebooks:
            raise ValueError(f"{len(delays)} delays given for {num_codebooks} codebooks")
        return DelayPattern(delays=delays)
    if name == "stack_delay":
        return StackDelayPattern(
            num_codebooks,
            num_stacks=int(options.get("num_stacks", 4)),  # type: ignore[arg-type]
            stack_delay=int(options.get("stack_delay", 1)),  # type: ignore[arg-type]
        )
    raise ValueError(f"unknown pattern {name!r}: parallel, delay, flatten or stack_delay")
