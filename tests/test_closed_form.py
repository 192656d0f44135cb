"""The ``closed_form`` backend: MAML's meta-gradient of ReLU networks with the MSE, in float64.

Each check compares ``maml_loss`` on the closed form with ``maml_loss`` on the
``autograd`` backend, which the oracles of ``test_meta_gradient`` check against the
per-task loop, finite differences and a closed form of their own; those oracles run
on this backend too.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mamlbook as mb
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


def regression_batch(num_tasks=3, k_shot=5, n_query=4, seed=0) -> mb.TaskBatch:
    """Random regression tasks: inputs ``(T, K, 2)``, targets ``(T, K, 3)``."""
    generator = torch.Generator().manual_seed(seed)
    x_support, x_query = (torch.randn(num_tasks, k, 2, generator=generator) for k in (k_shot, n_query))
    y_support, y_query = (torch.randn(num_tasks, k, 3, generator=generator) for k in (k_shot, n_query))
    return mb.TaskBatch(*(t.double() for t in (x_support, y_support, x_query, y_query)))


def both_backends(model, params, batch, **kwargs):
    """``maml_loss`` on the closed form and on autograd: (loss, grads) of each."""
    return [
        (loss.detach(), torch.autograd.grad(loss, list(params.values())))
        for loss in (
            mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, backend=backend, **kwargs)
            for backend in ("closed_form", "autograd")
        )
    ]


@pytest.mark.parametrize("name", list(networks()))
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_autograd(make_model, theta, name, steps, first_order):
    model = make_model(lambda: networks()[name])
    params = theta(model)
    (loss, grads), (expected_loss, expected_grads) = both_backends(
        model, params, regression_batch(), inner_lr=0.1, inner_steps=steps, first_order=first_order
    )
    torch.testing.assert_close(loss, expected_loss, **EXACT)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **EXACT)
    assert any(grad.abs().max() > 1e-3 for grad in grads)  # not trivially zero


def test_rates_per_step_follow_each_step(make_model, theta, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    (loss, grads), (expected_loss, expected_grads) = both_backends(
        model, params, sine_batch(4, 5, 6), inner_lr=[0.2, 0.0, 0.05], inner_steps=3
    )
    torch.testing.assert_close(loss, expected_loss, **EXACT)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, **EXACT)


def test_second_derivative_equals_autograd(make_model, theta, sine_batch):
    """Differentiated twice, the closed form's formulas go through autograd: H v of the meta-loss."""
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params, batch = theta(model), sine_batch(4, 5, 6)
    direction = [
        torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params.values())
    ]

    def hessian_vector(backend):
        loss = mb.maml_loss(
            model, params, batch, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=2, backend=backend
        )
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        return torch.autograd.grad(
            sum((g * v).sum() for g, v in zip(grads, direction, strict=True)), list(params.values())
        )

    for actual, expected in zip(hessian_vector("closed_form"), hessian_vector("autograd"), strict=True):
        torch.testing.assert_close(actual, expected, **EXACT)


def test_gradcheck_in_float64(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (4, 4), 1))
    names, batch = [name for name, _ in model.named_parameters()], sine_batch(2, 3, 3)

    def meta_loss(*tensors):
        params = dict(zip(names, tensors, strict=True))
        return mb.maml_loss(
            model, params, batch, loss_fn=F.mse_loss, inner_lr=0.3, inner_steps=2, backend="closed_form"
        )

    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(meta_loss, inputs)


def test_only_the_params_that_require_grad_get_one(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = {
        name: p.detach().clone().requires_grad_(name.startswith("head"))
        for name, p in model.named_parameters()
    }
    loss = mb.maml_loss(model, params, sine_batch(), loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=1)
    loss.backward()
    assert all((p.grad is not None) == name.startswith("head") for name, p in params.items())


def test_without_grad_the_loss_is_the_same(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    batch = sine_batch()
    with torch.no_grad():
        frozen = mb.maml_loss(
            model, dict(model.named_parameters()), batch, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=2
        )
    tracked = mb.maml_loss(
        model, dict(model.named_parameters()), batch, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=2
    )
    assert not frozen.requires_grad and tracked.requires_grad
    torch.testing.assert_close(frozen, tracked.detach(), **EXACT)


def test_a_diverging_inner_loop_is_diagnosed_by_task_and_step(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    with pytest.raises(mb.NonFiniteLossError, match="step"):
        mb.maml_loss(
            model,
            dict(model.named_parameters()),
            sine_batch(),
            loss_fn=F.mse_loss,
            inner_lr=1e6,
            inner_steps=5,
        )


def test_torch_func_grad_differentiates_the_closed_form(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params, batch = {n: p.detach() for n, p in model.named_parameters()}, sine_batch()

    def meta_loss(params):
        return mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=1)

    grads = torch.func.grad(meta_loss)(params)
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    expected = torch.autograd.grad(meta_loss(leaves), list(leaves.values()))
    for name, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(grads[name], grad, **EXACT)


def problem(model, batch, loss_fn=F.mse_loss, inner_lr=0.1) -> mb.backends.Problem:
    params = dict(model.named_parameters())
    loop = mb.InnerLoop.of(params, inner_lr=inner_lr, inner_steps=1)
    return mb.backends.Problem(
        "maml_loss", model, params, loss_fn, loop, (batch.support_x, batch.query_x), batch
    )


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
def test_other_problems_are_refused_with_a_reason(make_model, sine_batch, case):
    """Anything but a ReLU network, the MSE and numeric rates: refused, and auto takes another backend."""
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
        changes = {"inner_lr": {name: torch.tensor(0.1) for name, _ in model.named_parameters()}}
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
    call = problem(model, batch, **changes)
    assert isinstance(mb.backends.ClosedForm().refusal(call), str)
    assert mb.backends.choose_backend("auto", call).name != "closed_form"


def test_an_inner_loop_option_it_does_not_know_is_refused(make_model, sine_batch):
    """A new option of ``InnerLoop`` is refused until the closed form says it computes it."""

    @dataclasses.dataclass(frozen=True)
    class SignedSteps(mb.InnerLoop):
        signed: bool = False

    call = problem(make_model(lambda: MLP(1)), sine_batch())
    call.loop = SignedSteps(call.loop.rates, call.loop.adapted, signed=True)
    assert "signed" in mb.backends.ClosedForm().refusal(call)
    with pytest.raises(ValueError, match=r"backend 'closed_form' cannot compute this maml_loss: .*signed"):
        mb.backends.choose_backend("closed_form", call)


def test_the_sinusoid_mlp_takes_the_closed_form(make_model, sine_batch, caplog):
    model = make_model(lambda: MLP(1))
    with caplog.at_level(logging.DEBUG, logger="mamlbook.backends"):
        loss = mb.maml_loss(
            model,
            dict(model.named_parameters()),
            sine_batch(),
            loss_fn=F.mse_loss,
            inner_lr=0.1,
            inner_steps=1,
        )
    assert type(loss.grad_fn).__name__ == "_ClosedFormMAMLBackward"
    assert "maml_loss: backend closed_form" in caplog.text
