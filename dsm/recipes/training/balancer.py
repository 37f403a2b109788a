"""Loss balancer: weights say what share of the gradient each loss gets, whatever its scale.

With several losses on one model output `y` (the codec's decoded audio: mel, waveform,
adversarial and feature-matching losses), plain weighted sums make the weights depend on
each loss's arbitrary scale. The balancer instead takes each loss's gradient `g_i` with
respect to `y`, divides it by an exponential moving average of its norm, and sums

    grad_y = total_norm * sum_i (w_i / sum_j w_j) * g_i / ema(||g_i||)

so that loss i contributes a share `w_i / sum_j w_j` of a gradient of norm about
`total_norm`. That gradient is then back-propagated from `y` into the model once. Losses
that do not go through `y` (the RVQ commitment loss) are passed as `extra` and
back-propagated unchanged in the same call.

The balancer is an `nn.Module` without parameters whose buffers hold the moving averages,
so a trainer that checkpoints its models resumes it exactly. Under torch.distributed the
per-loss norms are averaged over ranks, so every rank keeps the same averages. Inside a
trainer that back-propagates a loss itself, `surrogate_loss` gives a scalar whose
gradient with respect to `output` is the balanced gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class Balancer(nn.Module):
    """Gradient-share loss balancer over losses of one output tensor.

    Args:
        weights: loss name -> weight; shares are the weights divided by the sum of the
            weights of the losses given at a call.
        total_norm: norm the combined gradient is scaled to (about).
        ema_decay: decay of the moving average of each loss's gradient norm.
        per_item: measure norms per batch item (averaged), so they do not grow with B.
        balance: False gives a plain weighted sum of gradients (for comparison).
    """

    def __init__(
        self,
        weights: dict[str, float],
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_item: bool = True,
        balance: bool = True,
        epsilon: float = 1e-12,
    ) -> None:
        super().__init__()
        if not weights:
            raise ValueError("Balancer needs at least one weighted loss")
        negative = {name: w for name, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")
        if sum(weights.values()) <= 0:
            raise ValueError(f"loss weights must not all be zero: {weights}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.weights = dict(weights)
        self.names = list(weights)
        self.total_norm, self.ema_decay = total_norm, ema_decay
        self.per_item, self.balance, self.epsilon = per_item, balance, epsilon
        # Bias-corrected EMA per loss: decayed sum of norms / decayed count of updates.
        self.register_buffer("norm_sums", torch.zeros(len(self.names), dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(len(self.names), dtype=torch.float64))

    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        if self.per_item and grad.dim() > 1:
            return grad.flatten(1).norm(dim=1).mean()
        return grad.norm()

    def ema_norms(self) -> dict[str, torch.Tensor]:
        """Current moving averages of the gradient norm of each loss seen so far."""
        return {
            name: self.norm_sums[i] / self.counts[i]
            for i, name in enumerate(self.names) if self.counts[i] > 0
        }

    def combined_gradient(
        self, losses: dict[str, torch.Tensor], output: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The balanced gradient w.r.t. `output` (detached) and per-loss statistics.

        Updates the moving averages. Statistics: `grad_norm/NAME` (norm of the loss's own
        gradient) and `share_norm/NAME` (norm of its part of the combined gradient).
        """
        unknown = sorted(set(losses) - set(self.weights))
        if unknown:
            raise ValueError(f"losses {unknown} have no weight; weighted: {sorted(self.weights)}")
        if not losses:
            raise ValueError("Balancer needs at least one loss")
        grads: dict[str, torch.Tensor] = {}
        for name, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            grads[name] = torch.zeros_like(output) if grad is None else grad.detach()
        index = torch.tensor([self.names.index(name) for name in grads],
                             device=self.norm_sums.device)
        norms = torch.stack([self._norm(g) for g in grads.values()]).to(self.norm_sums.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(norms)
            norms = norms / dist.get_world_size()
        with torch.no_grad():
            self.norm_sums.mul_(self.ema_decay).index_add_(0, index, norms)
            self.counts.mul_(self.ema_decay).index_add_(0, index, torch.ones_like(norms))
        ema = self.norm_sums[index] / self.counts[index]

        weight_sum = sum(self.weights[name] for name in grads)
        combined = torch.zeros_like(output)
        stats: dict[str, torch.Tensor] = {}
        for position, (name, grad) in enumerate(grads.items()):
            if self.balance:
                share = self.weights[name] / weight_sum
                scale = (self.total_norm * share / (ema[position] + self.epsilon)).to(grad.dtype)
            else:
                scale = torch.as_tensor(self.weights[name], dtype=grad.dtype)
            contribution = grad * scale
            combined = combined + contribution
            stats[f"grad_norm/{name}"] = norms[position].detach()
            stats[f"share_norm/{name}"] = self._norm(contribution).detach()
        return combined, stats

    def surrogate_loss(
        self,
        losses: dict[str, torch.Tensor],
        output: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A scalar whose gradient is the balanced gradient through `output` (plus `extra`'s).

        Its value means nothing; log the losses themselves.
        """
        combined, stats = self.combined_gradient(losses, output)
        surrogate = (output * combined).sum()
        if extra is not None:
            surrogate = surrogate + extra
        return surrogate, stats

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        output: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Back-propagate the balanced gradient of `losses` through `output` (plus `extra`)."""
        combined, stats = self.combined_gradient(losses, output)
        if extra is not None:
            torch.autograd.backward([output, extra], [combined, torch.ones_like(extra)])
        else:
            output.backward(combined)
        return stats
