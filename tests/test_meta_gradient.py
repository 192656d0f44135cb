"""Oracles for the meta-gradient, all in float64.

``maml_loss`` and ``adapt`` are checked on every backend (the ``backend`` fixture)
against the per-task loop of ``mamlbook.reference``, against central finite
differences, and against the closed form of MAML on a linear model with squared loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import mamlbook as mb
from mamlbook.gradcheck import finite_difference_grad, max_relative_error
from mamlbook.models import MLP

EXACT = {"atol": 1e-10, "rtol": 1e-10}


def reference_maml(model, params, batch, **kwargs):
    """The meta-loss of ``mamlbook.reference`` (a loop over tasks and steps) and its
    gradient with respect to ``params``."""
    meta_loss = mb.reference.maml_loss(model, params, batch, **kwargs)
    meta_grad = torch.autograd.grad(meta_loss, list(params.values()))
    return meta_loss.detach(), dict(zip(params, meta_grad, strict=True))


def vectorised_maml(model, params, batch, **kwargs):
    """``maml_loss`` and its gradient with respect to ``params``, by the package."""
    meta_loss = mb.maml_loss(model, params, batch, **kwargs)
    meta_grad = torch.autograd.grad(meta_loss, list(params.values()))
    return meta_loss.detach(), dict(zip(params, meta_grad, strict=True))


def assert_params_close(actual: mb.Params, expected: mb.Params, **tolerance) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(
            actual[name], expected[name], **tolerance, msg=lambda m, n=name: f"{n}: {m}"
        )


def conv_net() -> nn.Module:
    """A classifier of ``(2, 6)`` signals into 3 classes: inputs that are not vectors."""
    return nn.Sequential(nn.Conv1d(2, 3, kernel_size=3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 3))


def conv_batch(num_tasks=3, k_shot=4, n_query=5, seed=0) -> mb.TaskBatch:
    """Random signals ``(T, K, 2, 6)`` with integer class labels ``(T, K)``."""
    generator = torch.Generator().manual_seed(seed)

    def signals(num):
        return torch.randn(num_tasks, num, 2, 6, generator=generator, dtype=torch.float64)

    def labels(num):
        return torch.randint(0, 3, (num_tasks, num), generator=generator)

    return mb.TaskBatch(signals(k_shot), labels(k_shot), signals(n_query), labels(n_query))


@pytest.fixture(params=["mlp", "conv"])
def problem(request, make_model, sine_batch):
    """(model, batch, loss_fn, inner_lr): an MLP on sinusoids, or a conv net on labelled signals."""
    if request.param == "mlp":
        return make_model(lambda: MLP(1, (8, 8), 1)), sine_batch(4, 5, 6), F.mse_loss, 0.05
    return make_model(conv_net), conv_batch(), F.cross_entropy, 0.5


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_loss_meta_gradient_equals_per_task_loop(problem, theta, steps, backend):
    model, batch, loss_fn, inner_lr = problem
    params = theta(model)
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": steps}

    loss, grad = vectorised_maml(model, params, batch, **kwargs, backend=backend)
    expected_loss, expected_grad = reference_maml(model, params, batch, **kwargs)

    torch.testing.assert_close(loss, expected_loss, **EXACT)
    assert_params_close(grad, expected_grad, **EXACT)
    assert all(g.abs().max() > 0 for g in grad.values())


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_equals_loop_with_detached_inner_gradients(problem, theta, steps, backend):
    model, batch, loss_fn, inner_lr = problem
    params = theta(model)
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": steps}

    loss, grad = vectorised_maml(model, params, batch, first_order=True, **kwargs, backend=backend)
    expected_loss, expected_grad = reference_maml(model, params, batch, first_order=True, **kwargs)

    torch.testing.assert_close(loss, expected_loss, **EXACT)
    assert_params_close(grad, expected_grad, **EXACT)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_differs_from_second_order(problem, theta, steps, backend):
    model, batch, loss_fn, inner_lr = problem
    params = theta(model)
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": steps}

    first_loss, first_grad = vectorised_maml(
        model, params, batch, first_order=True, **kwargs, backend=backend
    )
    second_loss, second_grad = vectorised_maml(model, params, batch, **kwargs, backend=backend)

    torch.testing.assert_close(first_loss, second_loss, **EXACT)  # same forward pass
    difference = max(float((first_grad[name] - second_grad[name]).abs().max()) for name in params)
    assert difference > 1e-6


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_equals_finite_differences(make_model, sine_batch, theta, steps, backend):
    model = make_model(lambda: MLP(1, (4, 4), 1), seed=1)
    batch = sine_batch(3, 5, 5, seed=1)
    params = theta(model)

    def meta_loss(point):
        return mb.maml_loss(
            model, point, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=steps, backend=backend
        )

    _, grad = vectorised_maml(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=steps, backend=backend
    )
    numerical = finite_difference_grad(meta_loss, params)

    assert max_relative_error(grad, numerical) < 1e-6
    assert_params_close(grad, numerical, atol=1e-7, rtol=1e-6)


def test_finite_difference_grad_of_cubes_is_three_squares():
    generator = torch.Generator().manual_seed(0)
    params = {
        "a": torch.randn(3, 2, generator=generator, dtype=torch.float64),
        "b": torch.randn(4, generator=generator, dtype=torch.float64),
    }
    before = {name: tensor.clone() for name, tensor in params.items()}

    numerical = finite_difference_grad(lambda p: sum((t**3).sum() for t in p.values()), params)

    assert_params_close(numerical, {name: 3 * t**2 for name, t in params.items()}, atol=1e-9, rtol=1e-8)
    assert_params_close(params, before, atol=0, rtol=0)  # the point is left as it was


def test_max_relative_error_scales_by_the_largest_expected_entry():
    expected = {"w": torch.tensor([1.0, -4.0]), "b": torch.tensor([2.0])}
    actual = {"w": torch.tensor([1.2, -4.0]), "b": torch.tensor([2.0])}

    assert max_relative_error(actual, expected) == pytest.approx(0.2 / 4.0)
    assert max_relative_error(expected, expected) == 0.0


def augmented(x: torch.Tensor) -> torch.Tensor:
    """``(K, d)`` -> ``(K, d + 1)``: a column of ones for the bias."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)


def linear_problem(steps, seed=0):
    """A linear model ``MLP(3, (), 1)`` and four random regression tasks, float64."""
    generator = torch.Generator().manual_seed(seed)
    d, num_tasks, k_shot, n_query = 3, 4, 6, 7

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    batch = mb.TaskBatch(
        randn(num_tasks, k_shot, d),
        randn(num_tasks, k_shot, 1),
        randn(num_tasks, n_query, d),
        randn(num_tasks, n_query, 1),
    )
    model = MLP(d, (), 1).double()
    params = {"head.weight": randn(1, d).requires_grad_(), "head.bias": randn(1).requires_grad_()}
    return model, params, batch


def closed_form_linear_maml(params, batch, *, inner_lr, inner_steps):
    """Means over tasks of (I - alpha H_s)^n grad L_q(theta_n) and of grad L_q(theta_n), by linear algebra."""
    theta = torch.cat([params["head.weight"].detach().reshape(-1), params["head.bias"].detach()])  # (d + 1,)
    identity = torch.eye(len(theta), dtype=theta.dtype)
    second_order, first_order = torch.zeros_like(theta), torch.zeros_like(theta)
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        x_s, y_s = augmented(support_x), support_y[:, 0]  # (K, d + 1), (K,)
        x_q, y_q = augmented(query_x), query_y[:, 0]  # (Q, d + 1), (Q,)
        hessian = (2 / len(x_s)) * x_s.T @ x_s
        theta_n = theta
        for _ in range(inner_steps):
            theta_n = theta_n - inner_lr * (2 / len(x_s)) * x_s.T @ (x_s @ theta_n - y_s)
        query_grad = (2 / len(x_q)) * x_q.T @ (x_q @ theta_n - y_q)
        second_order += torch.linalg.matrix_power(identity - inner_lr * hessian, inner_steps) @ query_grad
        first_order += query_grad
    num_tasks = batch.num_tasks
    return second_order / num_tasks, first_order / num_tasks


def flat(grad: mb.Params) -> torch.Tensor:
    return torch.cat([grad["head.weight"].reshape(-1), grad["head.bias"]])


@pytest.mark.parametrize("steps", [1, 3])
def test_linear_model_meta_gradient_equals_closed_form(steps, backend):
    """MAML on f(x) = X theta with squared loss has a closed-form meta-gradient.

    Augment the inputs with a column of ones, so that theta = (w, b) and the prediction
    is X theta. With L_s(theta) = (1/K) ||X_s theta - y_s||^2,

        grad L_s(theta) = (2/K) X_s^T (X_s theta - y_s),   H_s = (2/K) X_s^T X_s (constant).

    The inner steps theta_{k+1} = theta_k - alpha grad L_s(theta_k) are affine in
    theta_k with Jacobian d theta_{k+1} / d theta_k = I - alpha H_s, so by the chain rule

        d L_q(theta_n) / d theta = (I - alpha H_s)^n grad L_q(theta_n),

    with grad L_q(theta_n) = (2/Q) X_q^T (X_q theta_n - y_q). The meta-gradient is its
    mean over tasks; first-order MAML drops the factor (I - alpha H_s)^n.
    """
    model, params, batch = linear_problem(steps)
    inner_lr = 0.1
    expected_second, expected_first = closed_form_linear_maml(
        params, batch, inner_lr=inner_lr, inner_steps=steps
    )

    _, second = vectorised_maml(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=steps, backend=backend
    )
    _, first = vectorised_maml(
        model,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=inner_lr,
        inner_steps=steps,
        first_order=True,
        backend=backend,
    )

    torch.testing.assert_close(flat(second), expected_second, **EXACT)
    torch.testing.assert_close(flat(first), expected_first, **EXACT)
    assert (expected_second - expected_first).abs().max() > 1e-3  # the Hessian term matters here


def test_zero_steps_leave_params_unchanged(make_model, sine_batch, theta, backend):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    support_x, support_y, _, _ = sine_batch()

    adapted = mb.adapt(
        model,
        params,
        support_x[0],
        support_y[0],
        loss_fn=F.mse_loss,
        inner_lr=0.1,
        inner_steps=0,
        backend=backend,
    )

    assert adapted.keys() == params.keys()
    assert all(torch.equal(adapted[name], params[name]) for name in params)


def test_zero_steps_meta_loss_is_the_plain_query_loss(make_model, sine_batch, theta, backend):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    batch = sine_batch()

    meta_loss = mb.maml_loss(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=0, backend=backend
    )
    query_loss = torch.stack(
        [
            F.mse_loss(functional_call(model, params, (x,)), y)
            for x, y in zip(batch.query_x, batch.query_y, strict=True)
        ]
    ).mean()

    torch.testing.assert_close(meta_loss, query_loss, **EXACT)
    meta_grad = torch.autograd.grad(meta_loss, list(params.values()))
    query_grad = torch.autograd.grad(query_loss, list(params.values()))
    for actual, expected in zip(meta_grad, query_grad, strict=True):
        torch.testing.assert_close(actual, expected, **EXACT)


def test_zero_inner_lr_is_the_same_as_zero_steps(make_model, sine_batch, theta, backend):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    batch = sine_batch()

    _, no_lr = vectorised_maml(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=0.0, inner_steps=3, backend=backend
    )
    _, no_steps = vectorised_maml(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=0.5, inner_steps=0, backend=backend
    )

    assert_params_close(no_lr, no_steps, **EXACT)


@pytest.mark.parametrize("steps", [1, 3])
def test_adapt_on_one_task_equals_per_task_loop(problem, theta, steps, backend):
    model, batch, loss_fn, inner_lr = problem
    params = theta(model)
    one_task = batch.slice_tasks(1, 2)
    support_x, support_y, query_x, query_y = (tensor[0] for tensor in one_task)

    adapted = mb.adapt(
        model,
        params,
        support_x,
        support_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        inner_steps=steps,
        backend=backend,
    )
    query_loss = loss_fn(functional_call(model, adapted, (query_x,)), query_y)
    grad = dict(zip(params, torch.autograd.grad(query_loss, list(params.values())), strict=True))

    expected_loss, expected_grad = reference_maml(
        model, params, one_task, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=steps
    )
    torch.testing.assert_close(query_loss.detach(), expected_loss, **EXACT)
    assert_params_close(grad, expected_grad, **EXACT)
    assert all(not torch.equal(adapted[name], params[name]) for name in params)  # it did move


def test_adapt_values_follow_plain_sgd(make_model, sine_batch, theta, backend):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    support_x, support_y, _, _ = (tensor[0] for tensor in sine_batch())
    inner_lr = 0.05

    adapted = mb.adapt(
        model,
        params,
        support_x,
        support_y,
        loss_fn=F.mse_loss,
        inner_lr=inner_lr,
        inner_steps=2,
        backend=backend,
    )

    phi = params
    for _ in range(2):
        loss = F.mse_loss(functional_call(model, phi, (support_x,)), support_y)
        grads = torch.autograd.grad(loss, list(phi.values()))
        phi = {name: p - inner_lr * g for (name, p), g in zip(phi.items(), grads, strict=True)}
    assert_params_close(
        {name: t.detach() for name, t in adapted.items()},
        {name: t.detach() for name, t in phi.items()},
        **EXACT,
    )


def test_backward_puts_meta_gradient_on_model_parameters(problem, theta, backend):
    model, batch, loss_fn, inner_lr = problem
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": 2}
    _, expected_grad = reference_maml(model, theta(model), batch, **kwargs)

    model.zero_grad(set_to_none=True)
    mb.maml_loss(model, dict(model.named_parameters()), batch, **kwargs, backend=backend).backward()

    assert_params_close({name: p.grad for name, p in model.named_parameters()}, expected_grad, **EXACT)


def test_meta_loss_is_the_mean_of_single_task_meta_losses(make_model, sine_batch, theta, backend):
    model = make_model(lambda: MLP(1, (8, 8), 1))
    params = theta(model)
    batch = sine_batch(4)
    kwargs = {"loss_fn": F.mse_loss, "inner_lr": 0.05, "inner_steps": 2}

    whole = mb.maml_loss(model, params, batch, **kwargs, backend=backend)
    single = [
        mb.maml_loss(model, params, batch.slice_tasks(t, t + 1), **kwargs, backend=backend) for t in range(4)
    ]

    torch.testing.assert_close(whole, torch.stack(single).mean(), **EXACT)


def test_inner_loop_adapts_per_task_params_made_under_no_grad(make_model, sine_batch):
    """Views of theta expanded under torch.no_grad() still get their inner-loop gradient."""
    model = make_model(lambda: mb.models.MLP(1, (8,), 1))
    params = dict(model.named_parameters())
    batch = sine_batch(num_tasks=3)
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=2, first_order=True)
    support_losses = mb.backends.Autograd().task_losses(
        mb.backends.Problem("test", model, params, F.mse_loss, loop, (batch.support_x,)),
        batch.support_x,
        batch.support_y,
        F.mse_loss,
    )
    with torch.no_grad():
        frozen_views = mb.inner.per_task(params, 3)
    *_, expected = mb.inner.adaptation(support_losses, mb.inner.per_task(params, 3), loop)
    *_, adapted = mb.inner.adaptation(support_losses, frozen_views, loop)
    for name in params:
        assert not torch.allclose(adapted.adapted[name], frozen_views[name])
        torch.testing.assert_close(adapted.adapted[name], expected.adapted[name].detach(), rtol=0, atol=1e-12)
