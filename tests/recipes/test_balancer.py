"""Loss balancer: gradient shares follow the weights whatever the losses' scales."""

from __future__ import annotations

import pytest
import torch

from dsm.recipes.training.balancer import Balancer


def _setup() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    model = torch.nn.Linear(8, 8)
    inputs = torch.randn(4, 8)
    target = torch.randn(4, 8)
    return model, inputs, target


def _losses(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    # Wildly different scales: the balancer must make them irrelevant.
    return {
        "big": 1000.0 * (output - target).pow(2).sum(),
        "small": 0.001 * (output - target.flip(0)).abs().mean(),
    }


def test_gradient_shares_follow_weights() -> None:
    model, inputs, target = _setup()
    # A leaf stands for the model output so that `.grad` holds exactly what was pushed back
    # (autograd.grad does not accumulate into leaves).
    output = model(inputs).detach().requires_grad_(True)
    losses = _losses(output, target)
    g_big = torch.autograd.grad(losses["big"], output, retain_graph=True)[0]
    g_small = torch.autograd.grad(losses["small"], output, retain_graph=True)[0]

    def item_norm(g: torch.Tensor) -> torch.Tensor:
        return g.flatten(1).norm(dim=1).mean()

    balancer = Balancer({"big": 3.0, "small": 1.0}, total_norm=2.0)
    stats = balancer.backward(losses, output)
    # First step: the EMA equals the current norm, so shares are exact.
    expected = 2.0 * (0.75 * g_big / item_norm(g_big) + 0.25 * g_small / item_norm(g_small))
    torch.testing.assert_close(output.grad, expected)
    assert float(stats["share_norm/big"]) == pytest.approx(1.5, rel=1e-5)
    assert float(stats["share_norm/small"]) == pytest.approx(0.5, rel=1e-5)
    assert float(stats["share_norm/big"] / stats["share_norm/small"]) == pytest.approx(3.0)
    # Through a real model the gradient reaches the parameters.
    output = model(inputs)
    balancer.backward(_losses(output, target), output)
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_ema_smooths_norms_and_extra_loss_is_added() -> None:
    model, inputs, target = _setup()
    balancer = Balancer({"big": 1.0, "small": 1.0}, ema_decay=0.5)
    norms = []
    for scale in (1.0, 3.0):
        output = model(inputs)
        losses = {"big": scale * (output - target).pow(2).sum(), "small": output.mean()}
        stats = balancer.backward(losses, output)
        norms.append(float(stats["grad_norm/big"]))
    # Bias-corrected EMA with decay 0.5 over two steps: (0.5 * n0 + n1) / 1.5.
    ema = float(balancer.ema_norms()["big"])
    assert ema == pytest.approx((0.5 * norms[0] + norms[1]) / 1.5, rel=1e-5)

    # An extra loss (e.g. commitment) that does not go through the output is added as is.
    model.zero_grad()
    extra_param = torch.nn.Parameter(torch.tensor(2.0))
    output = model(inputs)
    balancer.backward({"big": output.pow(2).sum()}, output, extra=3.0 * extra_param)
    assert float(extra_param.grad) == pytest.approx(3.0)


def test_unbalanced_mode_is_plain_weighted_sum() -> None:
    model, inputs, target = _setup()
    output = model(inputs).detach().requires_grad_(True)
    losses = _losses(output, target)
    expected = torch.autograd.grad(
        2.0 * losses["big"] + 0.5 * losses["small"], output, retain_graph=True
    )[0]
    Balancer({"big": 2.0, "small": 0.5}, balance=False).backward(losses, output)
    torch.testing.assert_close(output.grad, expected)


def test_state_dict_round_trip_and_bad_input() -> None:
    model, inputs, target = _setup()
    balancer = Balancer({"big": 1.0, "small": 1.0})
    output = model(inputs)
    balancer.backward(_losses(output, target), output)
    restored = Balancer({"big": 1.0, "small": 1.0})
    restored.load_state_dict(balancer.state_dict())
    assert restored.ema_norms().keys() == balancer.ema_norms().keys()
    for name, value in balancer.ema_norms().items():
        torch.testing.assert_close(restored.ema_norms()[name], value)
    # A balancer is a parameter-free module: its state travels with the models' state.
    assert set(balancer.state_dict()) == {"norm_sums", "counts"}
    assert list(balancer.parameters()) == []
    with pytest.raises(ValueError, match="no weight"):
        output = model(inputs)
        balancer.backward({"unknown": output.sum()}, output)
    with pytest.raises(ValueError, match=">= 0"):
        Balancer({"a": -1.0})
    with pytest.raises(ValueError, match="ema_decay"):
        Balancer({"a": 1.0}, ema_decay=1.0)


def test_surrogate_loss_carries_the_balanced_gradient() -> None:
    model, inputs, target = _setup()
    leaf = model(inputs).detach().requires_grad_(True)
    reference = Balancer({"big": 1.0, "small": 2.0})
    reference.backward(_losses(leaf, target), leaf)
    expected = leaf.grad.clone()

    balancer = Balancer({"big": 1.0, "small": 2.0})
    output = model(inputs)
    surrogate, stats = balancer.surrogate_loss(_losses(output, target), output)
    (grad,) = torch.autograd.grad(surrogate, output)
    torch.testing.assert_close(grad, expected)
    assert float(stats["share_norm/small"]) == pytest.approx(2 / 3, rel=1e-5)


def test_loss_joining_late_gets_its_own_average() -> None:
    model, inputs, target = _setup()
    balancer = Balancer({"big": 1.0, "small": 1.0}, ema_decay=0.9)
    output = model(inputs)
    stats = balancer.backward({"big": _losses(output, target)["big"]}, output)
    # Alone, a loss takes the whole share whatever its weight.
    assert float(stats["share_norm/big"]) == pytest.approx(1.0, rel=1e-5)
    assert set(balancer.ema_norms()) == {"big"}
    output = model(inputs)
    stats = balancer.backward(_losses(output, target), output)
    # "small" has one measurement: its EMA equals it, so its share is exact.
    assert float(stats["share_norm/small"]) == pytest.approx(0.5, rel=1e-5)
