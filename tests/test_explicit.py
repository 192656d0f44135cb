"""The explicit meta-gradient of ReLU networks with the MSE (``mamlbook.explicit``), in float64.

Each check compares ``maml_loss`` on the explicit path with ``maml_loss`` on the autograd
path (the explicit path turned off), which the oracles of ``test_meta_gradient`` check
against a per-task loop, finite differences and a closed form.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mamlbook as mb
from mamlbook.explicit import explicit_maml_loss
from mamlbook.models import MLP, Conv4

EXACT = {"atol": 1e-12, "rtol": 1e-10}


def networks() -> dict[str, nn.Module]:
    """ReLU networks of every shape the explicit path accepts, from 2 inputs to 3 outputs."""
    return {
        "mlp": MLP(2, (8, 8), 3),
        "one_layer": nn.Linear(2, 3),
        "no_bias": nn.Sequential(nn.Linear(2, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False)),
        "relu_first_and_last": nn.Sequential(
            nn.ReLU(), nn.Linear(2, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 3), nn.ReLU()
        ),
        "linear_after_linear": nn.Sequential(nn.Linear(2, 5), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)),
    }


def regression_batch(num_tasks=3, num_support=5, num_query=4, seed=0) -> mb.TaskBatch:
    """Random regression tasks: inputs ``(T, K, 2)``, targets ``(T, K, 3)``."""
    generator = torch.Generator().manual_seed(seed)
    x_support, x_query = (torch.randn(num_tasks, k, 2, generator=generator) for k in (num_support, num_query))
    y_support, y_query = (torch.randn(num_tasks, k, 3, generator=generator) for k in (num_support, num_query))
    return mb.TaskBatch(*(t.double() for t in (x_support, y_support, x_query, y_query)))


def both_paths(monkeypatch, model, params, batch, **kwargs):
    """``maml_loss`` on the explicit path and on the autograd path: (loss, grads) of each."""
    explicit = mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, **kwargs)
    assert type(explicit.grad_fn).__name__ == "_ExplicitMAMLBackward"
    with monkeypatch.context() as patch:
        patch.setattr(mb.meta, "explicit_maml_loss", lambda *args, **kw: None)
        by_autograd = mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, **kwargs)
    assert type(by_autograd.grad_fn).__name__ != "_ExplicitMAMLBackward"
    return [
        (loss.detach(), torch.autograd.grad(loss, list(params.values()))) for loss in (explicit, by_autograd)
    ]


@pytest.mark.parametrize("name", list(networks()))
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_autograd(monkeypatch, make_model, theta, name, steps, first_order):
    model = make_model(lambda: networks()[name])
    params = theta(model)
    (loss, grads), (expected_loss, expected_grads) = both_paths(
        monkeypatch, model, params, regression_batch(), inner_lr=0.1, steps=steps, first_order=first_order
    )
    torch.testing.assert_close(loss, expected_loss, **EXACT)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **EXACT)
    assert any(grad.abs().max() > 1e-3 for grad in grads)  # not trivially zero


def test_rates_per_step_follow_each_step(monkeypatch, make_model, theta, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    (loss, grads), (expected_loss, expected_grads) = both_paths(
        monkeypatch, model, params, sine_batch(4, 5, 6), inner_lr=[0.2, 0.0, 0.05], steps=3
    )
    torch.testing.assert_close(loss, expected_loss, **EXACT)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **EXACT)


def test_second_derivative_equals_autograd(monkeypatch, make_model, theta, sine_batch):
    """Differentiated twice, the explicit path recomputes through autograd: H v of the meta-loss."""
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params, batch = theta(model), sine_batch(4, 5, 6)
    direction = [
        torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params.values())
    ]

    def hessian_vector():
        loss = mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.1, steps=2)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        return torch.autograd.grad(
            sum((g * v).sum() for g, v in zip(grads, direction, strict=True)), list(params.values())
        )

    explicit = hessian_vector()
    monkeypatch.setattr(mb.meta, "explicit_maml_loss", lambda *args, **kw: None)
    for actual, expected in zip(explicit, hessian_vector(), strict=True):
        torch.testing.assert_close(actual, expected, **EXACT)


def test_gradcheck_in_float64(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (4, 4), 1))
    names, batch = [name for name, _ in model.named_parameters()], sine_batch(2, 3, 3)

    def meta_loss(*tensors):
        params = dict(zip(names, tensors, strict=True))
        return mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.3, steps=2)

    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(meta_loss, inputs)


def test_only_the_params_that_require_grad_get_one(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = {
        name: p.detach().clone().requires_grad_(name.startswith("head"))
        for name, p in model.named_parameters()
    }
    loss = mb.maml_loss(model, params, sine_batch(), loss_fn=F.mse_loss, inner_lr=0.1, steps=1)
    loss.backward()
    assert all((p.grad is not None) == name.startswith("head") for name, p in params.items())


def test_without_grad_the_loss_is_the_same(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    batch = sine_batch()
    with torch.no_grad():
        frozen = mb.maml_loss(
            model, dict(model.named_parameters()), batch, loss_fn=F.mse_loss, inner_lr=0.1, steps=2
        )
    tracked = mb.maml_loss(
        model, dict(model.named_parameters()), batch, loss_fn=F.mse_loss, inner_lr=0.1, steps=2
    )
    assert not frozen.requires_grad and tracked.requires_grad
    torch.testing.assert_close(frozen, tracked.detach(), **EXACT)


def test_a_diverging_inner_loop_is_diagnosed_by_task_and_step(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    with pytest.raises(mb.NonFiniteLossError, match="step"):
        mb.maml_loss(
            model, dict(model.named_parameters()), sine_batch(), loss_fn=F.mse_loss, inner_lr=1e6, steps=5
        )


def test_inside_torch_func_the_autograd_path_runs(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params, batch = {n: p.detach() for n, p in model.named_parameters()}, sine_batch()

    def meta_loss(params):
        return mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.1, steps=1)

    grads = torch.func.grad(meta_loss)(params)
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    expected = torch.autograd.grad(meta_loss(leaves), list(leaves.values()))
    for name, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(grads[name], grad, **EXACT)


def make_args(model, batch, **changes):
    params = dict(model.named_parameters())
    args = {"loss_fn": F.mse_loss, "step_rates": [0.1], "first_order": False, "meta_loss_by_autograd": None}
    return (model, params, batch), {**args, **changes}


@pytest.mark.parametrize(
    "case",
    [
        "conv4",
        "cross_entropy",
        "learned_rates",
        "batch_requires_grad",
        "images",
        "other_targets",
        "float32_targets",
        "tied",
        "mixed_dtypes",
    ],
)
def test_other_problems_are_declined(make_model, sine_batch, case):
    """None (the autograd path runs) for anything but a ReLU network, the MSE and numeric rates."""
    model, batch, changes = make_model(lambda: MLP(1, (8, 8), 1)), sine_batch(), {}
    if case == "conv4":
        model = make_model(lambda: Conv4(5, hidden=4, image_size=8))
        batch = mb.TaskBatch(
            torch.randn(2, 5, 1, 8, 8).double(),
            torch.randn(2, 5, 5).double(),
            torch.randn(2, 5, 1, 8, 8).double(),
            torch.randn(2, 5, 5).double(),
        )
    elif case == "cross_entropy":
        changes = {"loss_fn": F.cross_entropy}
    elif case == "learned_rates":
        changes = {"step_rates": [{name: torch.tensor(0.1) for name, _ in model.named_parameters()}]}
    elif case == "batch_requires_grad":
        batch = batch._replace(support_x=batch.support_x.clone().requires_grad_())
    elif case == "images":
        batch = batch._replace(support_x=batch.support_x[..., None], query_x=batch.query_x[..., None])
    elif case == "other_targets":
        batch = batch._replace(support_y=batch.support_y[..., 0])
    elif case == "float32_targets":
        batch = batch._replace(query_y=batch.query_y.float())
    elif case == "mixed_dtypes":
        model.head.bias.data = model.head.bias.data.float()
    else:
        linear = nn.Linear(4, 4)
        model = nn.Sequential(nn.Linear(1, 4), linear, nn.ReLU(), linear, nn.Linear(4, 1)).double()
    args, kwargs = make_args(model, batch, **changes)
    assert explicit_maml_loss(*args, **kwargs) is None


def test_the_sinusoid_mlp_takes_the_explicit_path(make_model, sine_batch):
    args, kwargs = make_args(make_model(lambda: MLP(1)), sine_batch())
    assert explicit_maml_loss(*args, **kwargs) is not None
