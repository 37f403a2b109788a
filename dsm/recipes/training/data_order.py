"""Data order as a pure function of (seed, epoch): seeded per-epoch permutations cut into
per-rank batches, so a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from dsm.recipes.training.distributed import DistInfo


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's batches of one epoch, starting after `start_batch` batches.

    The epoch's order is `randperm(N)` from a generator seeded with (seed, epoch) (or
    0..N-1 without shuffle), truncated to a multiple of batch_size x world_size; rank r
    takes items r, r+W, r+2W, ... in batch_size chunks, so the union of the ranks' k-th
    batches is exactly the k-th batch of a single process with batch_size x W.
    """

    def __init__(self, size: int, batch_size: int, dist_info: DistInfo, seed: int, shuffle: bool) -> None:
        self.size = size
        self.batch_size = batch_size
        self.dist_info = dist_info
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.dist_info.world_size)

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        world = self.dist_info.world_size
        used = self.batches_per_epoch() * self.batch_size * world
        mine = order[self.dist_info.rank : used : world].tolist()
        for k in range(self.start_batch, self.batches_per_epoch()):
            yield mine[k * self.batch_size : (k + 1) * self.batch_size]
