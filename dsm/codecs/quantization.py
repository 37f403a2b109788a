"""Residual vector quantization with EMA codebooks.

A `Codebook` stores, as Kyutai does, `embedding_sum` `[bins, dim]` and `cluster_usage`
`[bins]`: exponential moving averages of the sum and the count of the vectors assigned to
each code; a centroid is their ratio. In training mode each forward call
  - initialises an untouched codebook with k-means on the batch (`initialized` flag),
  - updates both averages with decay `decay` (no gradient reaches the codebook),
  - every `check_unused_every` calls replaces dead codes (usage below
    `threshold_usage_ratio` of a uniform share) by vectors drawn from the batch.
`ResidualVectorQuantizer` chains codebooks on residuals, returns a commitment loss (MSE
between the input and its quantized value, per codebook) and, with `q_dropout`, uses a
random number of codebooks per training call. `SplitResidualVectorQuantizer` is Mimi's
split: `rvq_first` (semantic codebook(s)) and `rvq_rest` (acoustic ones), each with its own
projections, their outputs summed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, C, T], straight-through in training
    codes: torch.Tensor  # [B, K, T]
    commitment_loss: torch.Tensor  # scalar
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def _sample_rows(samples: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows of `samples` `[N, D]`, without repetition when there are enough."""
    num = samples.shape[0]
    if num >= count:
        index = torch.randperm(num, device=samples.device)[:count]
    else:
        index = torch.randint(0, num, (count,), device=samples.device)
    return samples[index]


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 50
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on `samples` `[N, D]` -> (centroids `[num_clusters, D]`, counts).

    Clusters that end an iteration empty restart from a random sample.
    """
    dim = samples.shape[-1]
    centroids = _sample_rows(samples, num_clusters)
    counts = torch.zeros(num_clusters, device=samples.device, dtype=samples.dtype)
    for _ in range(num_iters):
        assignment = torch.cdist(samples[None], centroids[None])[0].argmin(dim=-1)
        counts = torch.bincount(assignment, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, samples)
        means = sums / counts.clamp(min=1)[:, None]
        empty = (counts == 0)[:, None].expand(-1, dim)
        centroids = torch.where(empty, _sample_rows(samples, num_clusters), means)
    return centroids, counts


class Codebook(nn.Module):
    """One EMA codebook of `bins` vectors of size `dim` (see module docstring)."""

    def __init__(
        self,
        dim: int,
        bins: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_usage_ratio: float = 0.1,
        replaced_usage_ratio: float = 1.0,
        check_unused_every: int = 5,
        kmeans_iters: int = 50,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.bins = bins
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_usage_ratio = threshold_usage_ratio
        self.replaced_usage_ratio = replaced_usage_ratio
        self.check_unused_every = check_unused_every
        self.kmeans_iters = kmeans_iters
        self._steps_to_check = check_unused_every
        self.register_buffer("initialized", torch.zeros(1))
        self.register_buffer("cluster_usage", torch.ones(bins))
        self.register_buffer("embedding_sum", torch.zeros(bins, dim))
        self._cache_key: tuple[int, ...] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(centroids `[bins, dim]`, augmented centroids `[bins, dim + 2]`), recomputed only
        when a buffer changed (in-place update, load, or move to another device)."""
        key = (
            self.embedding_sum.data_ptr(), self.embedding_sum._version,
            self.cluster_usage.data_ptr(), self.cluster_usage._version,
        )
        if self._cache is None or key != self._cache_key:
            embedding = self.embedding_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]
            # [e, 1, |e|^2]: one matmul with [-2x, |x|^2, 1] gives all squared distances
            augmented = torch.cat([
                embedding, torch.ones_like(embedding[:, :1]),
                embedding.pow(2).sum(-1, keepdim=True),
            ], dim=-1)
            self._cache = (embedding, augmented)
            self._cache_key = key
        return self._cache

    @property
    def embedding(self) -> torch.Tensor:
        """Centroids `[bins, dim]` = embedding_sum / usage."""
        return self._cached()[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x `[N, dim]` -> index of the nearest centroid `[N]` (Euclidean).

        The same arithmetic as `torch.cdist` on large inputs (so the same codes as
        reference implementations that call it), minus rebuilding the centroid side."""
        augmented = self._cached()[1]
        x = x.to(augmented.dtype)
        x_augmented = torch.cat([
            x.mul(-2), x.pow(2).sum(-1, keepdim=True), torch.ones_like(x[:, :1]),
        ], dim=-1)
        distances = torch.matmul(x_augmented[None], augmented[None].mT)[0]
        return distances.clamp_min_(0).sqrt_().argmin(dim=-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes `[...]` -> centroids `[..., dim]`."""
        return F.embedding(codes, self.embedding)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """k-means initialisation from the vectors `x` `[N, dim]`."""
        centroids, counts = kmeans(x.float(), self.bins, self.kmeans_iters)
        self.embedding_sum.copy_(centroids * counts[:, None])
        self.cluster_usage.copy_(counts)
        self.initialized.fill_(1.0)

    @torch.no_grad()
    def replace_dead_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Give codes used less than the threshold a vector of `x` `[N, dim]`; returns the
        fraction of codes replaced."""
        uniform_share = self.cluster_usage.sum() / self.bins
        dead = self.cluster_usage < self.threshold_usage_ratio * uniform_share
        new_usage = self.replaced_usage_ratio * uniform_share
        new_vectors = _sample_rows(x, self.bins)
        self.embedding_sum.copy_(
            torch.where(dead[:, None], new_usage * new_vectors, self.embedding_sum))
        self.cluster_usage.copy_(torch.where(dead, new_usage, self.cluster_usage))
        return dead.float().mean()

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """Move usage and sums toward this batch's counts and sums (x `[N, dim]`, codes `[N]`)."""
        counts = torch.zeros_like(self.cluster_usage).index_add_(
            0, codes, torch.ones_like(codes, dtype=self.cluster_usage.dtype))
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, codes, x.to(self.embedding_sum))
        self.cluster_usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)

    def forward(self, x: torch.Tensor, allow_init: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """x `[N, dim]` -> (centroids `[N, dim]`, codes `[N]`, metrics); learns in training."""
        metrics: dict[str, torch.Tensor] = {}
        if self.training and allow_init and not bool(self.initialized.item()):
            self.initialize(x.detach())
        codes = self.encode(x.detach())
        quantized = self.decode(codes)
        if self.training:
            x_detached = x.detach()
            if bool(self.initialized.item()):
                self._steps_to_check -= 1
                if self._steps_to_check <= 0:
                    self._steps_to_check = self.check_unused_every
                    metrics["dead_codes"] = self.replace_dead_codes(x_detached)
            self.ema_update(x_detached, codes)
            usage = self.cluster_usage / self.cluster_usage.sum()
            entropy = -(usage * usage.clamp(min=1e-12).log()).sum()
            metrics["entropy"] = entropy / math.log(self.bins)
        return quantized, codes, metrics


class ResidualVectorQuantizer(nn.Module):
    """`n_q` codebooks applied to successive residuals, with optional 1x1 projections.

    Input `[B, input_dimension, T]`, codes `[B, K, T]`, output `[B, output_dimension, T]`.
    `set_num_codebooks(k)` chooses how many codebooks encode uses (<= n_q).
    """

    def __init__(
        self,
        dimension: int,
        n_q: int,
        bins: int,
        input_dimension: int | None = None,
        output_dimension: int | None = None,
        force_projection: bool = False,
        q_dropout: bool = False,
        decay: float = 0.99,
        threshold_usage_ratio: float = 0.1,
        replaced_usage_ratio: float = 1.0,
        check_unused_every: int = 5,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        self.dimension = dimension
        self.max_n_q = n_q
        self.n_q = n_q
        self.bins = bins
        self.q_dropout = q_dropout
        self.input_dimension = input_dimension or dimension
        self.output_dimension = output_dimension or dimension
        self.input_proj = (
            nn.Conv1d(self.input_dimension, dimension, 1, bias=False)
            if force_projection or self.input_dimension != dimension else None
        )
        self.output_proj = (
            nn.Conv1d(dimension, self.output_dimension, 1, bias=False)
            if force_projection or self.output_dimension != dimension else None
        )
        self.layers = nn.ModuleList([
            Codebook(dimension, bins, decay=decay, threshold_usage_ratio=threshold_usage_ratio,
                     replaced_usage_ratio=replaced_usage_ratio,
                     check_unused_every=check_unused_every)
            for _ in range(n_q)
        ])
        self._dropout_rng = random.Random(seed)

    @property
    def cardinality(self) -> int:
        return self.bins

    @property
    def num_codebooks(self) -> int:
        return self.n_q

    @property
    def total_codebooks(self) -> int:
        return self.max_n_q

    def set_num_codebooks(self, n: int) -> None:
        if not 0 <= n <= self.max_n_q:
            raise ValueError(f"number of codebooks must be in [0, {self.max_n_q}], got {n}")
        self.n_q = n

    def _project_in(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C_in, T] -> rows [B*T, D]
        if self.input_proj is not None:
            x = self.input_proj(x)
        return x.transpose(1, 2).reshape(-1, self.dimension)

    def _project_out(self, rows: torch.Tensor, batch: int) -> torch.Tensor:
        # rows [B*T, D] -> [B, C_out, T]
        x = rows.view(batch, -1, self.dimension).transpose(1, 2)
        if self.output_proj is not None:
            x = self.output_proj(x)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x `[B, C_in, T]` -> codes `[B, n_q, T]` (int64)."""
        batch, _, length = x.shape
        if self.n_q == 0 or length == 0:
            return torch.zeros(batch, self.n_q, length, dtype=torch.long, device=x.device)
        residual = self._project_in(x)
        codes = []
        for index in range(self.n_q):
            layer = self.layers[index]
            layer_codes = layer.encode(residual)
            residual = residual - layer.decode(layer_codes)
            codes.append(layer_codes)
        return torch.stack(codes, dim=0).view(self.n_q, batch, length).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes `[B, K, T]` (K <= n_q) -> `[B, C_out, T]`."""
        batch, num, length = codes.shape
        if num > self.max_n_q:
            raise ValueError(f"got {num} codebooks, this quantizer has {self.max_n_q}")
        rows = codes.transpose(0, 1).reshape(num, -1)
        quantized = torch.zeros(batch * length, self.dimension,
                                device=codes.device, dtype=self.layers[0].embedding_sum.dtype)
        for index in range(num):
            quantized = quantized + self.layers[index].decode(rows[index])
        return self._project_out(quantized, batch)

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize `[B, C_in, T]`; in training, learn the codebooks (see module docstring)."""
        batch, _, length = x.shape
        n_q = self.n_q
        if self.training and self.q_dropout and n_q > 1:
            n_q = self._dropout_rng.randint(1, n_q)
        rows = self._project_in(x)
        residual = rows
        quantized = torch.zeros_like(rows)
        codes, losses = [], []
        metrics: dict[str, torch.Tensor] = {}
        previous_ready = True
        for index in range(n_q):
            layer = self.layers[index]
            was_ready = bool(layer.initialized.item())
            # a codebook may only run k-means once the one before it was trained on earlier
            # batches, otherwise it would cluster the (near zero) residual of this batch
            layer_quantized, layer_codes, layer_metrics = layer(residual, allow_init=previous_ready)
            previous_ready = was_ready
            if self.training:
                losses.append(F.mse_loss(residual, layer_quantized.detach()))
            layer_quantized = layer_quantized.detach()
            residual = residual - layer_quantized
            quantized = quantized + layer_quantized
            codes.append(layer_codes)
            for name, value in layer_metrics.items():
                metrics[name] = metrics.get(name, 0.0) + value / n_q
        if self.training:
            # straight-through estimator around the whole residual stack
            quantized = rows + (quantized - rows).detach()
            commitment = torch.stack(losses).mean() if losses else rows.new_zeros(())
        else:
            commitment = rows.new_zeros(())
        code_tensor = (
            torch.stack(codes, dim=0).view(n_q, batch, length).transpose(0, 1) if codes
            else torch.zeros(batch, 0, length, dtype=torch.long, device=x.device)
        )
        return QuantizerOutput(self._project_out(quantized, batch), code_tensor, commitment,
                               metrics)


class SplitResidualVectorQuantizer(nn.Module):
    """Mimi's quantizer: `n_q_semantic` codebooks in `rvq_first`, the others in `rvq_rest`
    (quantizer dropout only there); both quantize the same input and their outputs add up."""

    def __init__(
        self,
        dimension: int,
        n_q: int,
        bins: int,
        input_dimension: int | None = None,
        output_dimension: int | None = None,
        n_q_semantic: int = 1,
        q_dropout: bool = False,
        **codebook_options: float,
    ) -> None:
        super().__init__()
        if n_q <= n_q_semantic:
            raise ValueError(
                f"n_q ({n_q}) must be larger than the number of semantic codebooks "
                f"({n_q_semantic})"
            )
        self.n_q_semantic = n_q_semantic
        self.rvq_first = ResidualVectorQuantizer(
            dimension, n_q_semantic, bins, input_dimension, output_dimension,
            force_projection=True, q_dropout=False, **codebook_options,  # type: ignore[arg-type]
        )
        self.rvq_rest = ResidualVectorQuantizer(
            dimension, n_q - n_q_semantic, bins, input_dimension, output_dimension,
            force_projection=True, q_dropout=q_dropout, **codebook_options,  # type: ignore[arg-type]
        )

    @property
    def cardinality(self) -> int:
        return self.rvq_first.bins

    @property
    def dimension(self) -> int:
        return self.rvq_first.dimension

    @property
    def num_codebooks(self) -> int:
        return self.rvq_first.n_q + self.rvq_rest.n_q

    @property
    def total_codebooks(self) -> int:
        return self.rvq_first.max_n_q + self.rvq_rest.max_n_q

    def set_num_codebooks(self, n: int) -> None:
        if not self.n_q_semantic <= n <= self.total_codebooks:
            raise ValueError(
                f"number of codebooks must be in [{self.n_q_semantic}, {self.total_codebooks}], "
                f"got {n}"
            )
        self.rvq_rest.set_num_codebooks(n - self.n_q_semantic)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.rvq_first.encode(x)
        if self.rvq_rest.n_q > 0:
            codes = torch.cat([codes, self.rvq_rest.encode(x)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        quantized = self.rvq_first.decode(codes[:, : self.n_q_semantic])
        if codes.shape[1] > self.n_q_semantic:
            quantized = quantized + self.rvq_rest.decode(codes[:, self.n_q_semantic:])
        return quantized

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        first = self.rvq_first(x)
        if self.rvq_rest.n_q == 0:
            return first
        rest = self.rvq_rest(x)
        n_first, n_rest = first.codes.shape[1], rest.codes.shape[1]
        total = n_first + n_rest
        commitment = (first.commitment_loss * n_first + rest.commitment_loss * n_rest) / total
        metrics = dict(first.metrics)
        for name, value in rest.metrics.items():
            metrics[name] = (metrics.get(name, 0.0) * n_first + value * n_rest) / total
        return QuantizerOutput(
            first.quantized + rest.quantized,
            torch.cat([first.codes, rest.codes], dim=1),
            commitment,
            metrics,
        )
