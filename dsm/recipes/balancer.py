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
"""

from __future__ import annotations

import torch


class Balancer:
    """Gradient-share loss balancer over losses of one output tensor.

    Args:
        weights: loss name -> weight; shares are the weights divided by their sum.
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
        self.total_norm, self.ema_decay = total_norm, ema_decay
        self.per_item, self.balance, self.epsilon = per_item, balance, epsilon
        # Bias-corrected EMA: ema = decayed sum of norms / decayed count.
        self._norm_sums: dict[str, torch.Tensor] = {}
        self._count = 0.0

    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        if self.per_item and grad.dim() > 1:
            return grad.flatten(1).norm(dim=1).mean()
        return grad.norm()

    def ema_norms(self) -> dict[str, torch.Tensor]:
        """Current moving averages of each loss's gradient norm."""
        return {name: total / self._count for name, total in self._norm_sums.items()}

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        output: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Back-propagate the balanced gradient of `losses` through `output` (plus `extra`).

        Returns, per loss, the norm of its gradient w.r.t. `output` (`grad_norm/NAME`) and
        of its contribution to the combined gradient (`share_norm/NAME`), detached.
        """
        unknown = sorted(set(losses) - set(self.weights))
        if unknown:
            raise ValueError(f"losses {unknown} have no weight; weighted: {sorted(self.weights)}")
        if not losses:
            raise ValueError("Balancer.backward needs at least one loss")
        grads: dict[str, torch.Tensor] = {}
        norms: dict[str, torch.Tensor] = {}
        for name, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            grads[name] = torch.zeros_like(output) if grad is None else grad
            norms[name] = self._norm(grads[name]).detach()

        self._count = self.ema_decay * self._count + 1.0
        for name, norm in norms.items():
            previous = self._norm_sums.get(name, torch.zeros_like(norm))
            self._norm_sums[name] = self.ema_decay * previous + norm
        ema = self.ema_norms()

        weight_sum = sum(self.weights[name] for name in losses)
        combined = torch.zeros_like(output)
        stats: dict[str, torch.Tensor] = {}
        for name, grad in grads.items():
            if self.balance:
                share = self.weights[name] / weight_sum
                scale = self.total_norm * share / (ema[name] + self.epsilon)
            else:
                scale = torch.as_tensor(self.weights[name], dtype=grad.dtype)
            contribution = grad * scale
            combined = combined + contribution
            stats[f"grad_norm/{name}"] = norms[name]
            stats[f"share_norm/{name}"] = self._norm(contribution).detach()

        if extra is not None:
            torch.autograd.backward([output, extra], [combined, torch.ones_like(extra)])
        else:
            output.backward(combined)
        return stats

    def state_dict(self) -> dict[str, object]:
        return {"norm_sums": {k: v.clone() for k, v in self._norm_sums.items()},
                "count": self._count}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._norm_sums = {k: v.clone() for k, v in state["norm_sums"].items()}  # type: ignore[union-attr]
        self._count = float(state["count"])  # type: ignore[arg-type]
