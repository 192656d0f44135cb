"""Reptile (``mamlbook.reptile``): oracles for one step, the training loop and the argument checks.

One Reptile step with one inner SGD step is a plain gradient step: with
phi_t = theta - alpha * grad L_t(theta),

    theta + epsilon * mean_t (phi_t - theta) = theta - epsilon * alpha * grad (mean_t L_t)(theta),

a step of size epsilon * alpha on the mean support loss (joint training).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.reptile import ReptileConfig, reptile_step, reptile_train

EXACT = {"atol": 1e-12, "rtol": 1e-10}


def copy_params(model) -> mb.Params:
    return {name: tensor.detach().clone() for name, tensor in model.named_parameters()}


def test_one_inner_step_reptile_is_a_gradient_step_on_the_mean_support_loss(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8, 8))), sine_batch(num_tasks=4)
    inner_lr, epsilon = 0.05, 0.3
    theta = {name: tensor.clone().requires_grad_() for name, tensor in copy_params(model).items()}
    support_losses = [
        F.mse_loss(functional_call(model, theta, (x,)), y)
        for x, y in zip(batch.support_x, batch.support_y, strict=True)
    ]
    grads = torch.autograd.grad(torch.stack(support_losses).mean(), list(theta.values()))
    expected = {
        name: theta[name].detach() - epsilon * inner_lr * grad
        for name, grad in zip(theta, grads, strict=True)
    }

    params = copy_params(model)
    reptile_step(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=1, outer_step_size=epsilon
    )
    for name in expected:
        torch.testing.assert_close(params[name], expected[name], **EXACT)


def loop_reptile(model, theta, batch, *, inner_lr, inner_steps, epsilon):
    """Reptile by a loop over tasks with ``mb.adapt``, each task adapted from the same theta."""
    adapted = [
        mb.adapt(
            model,
            theta,
            x,
            y,
            loss_fn=F.mse_loss,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            first_order=True,
        )
        for x, y in zip(batch.support_x, batch.support_y, strict=True)
    ]
    return {
        name: theta[name] + epsilon * torch.stack([phi[name] - theta[name] for phi in adapted]).mean(0)
        for name in theta
    }


@pytest.mark.parametrize("steps", [1, 3])
def test_vectorised_reptile_step_equals_a_loop_over_tasks(make_model, sine_batch, steps):
    model, batch = make_model(lambda: MLP(1, (8, 8))), sine_batch(num_tasks=5)
    expected = loop_reptile(model, copy_params(model), batch, inner_lr=0.05, inner_steps=steps, epsilon=0.4)
    params = copy_params(model)
    reptile_step(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=steps, outer_step_size=0.4
    )
    for name in expected:
        torch.testing.assert_close(params[name], expected[name], **EXACT)


def test_reptile_step_returns_the_mean_query_loss_of_the_adapted_params(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch(num_tasks=3)
    theta = copy_params(model)
    expected = torch.stack(
        [
            F.mse_loss(functional_call(model, phi, (x,)), y)
            for phi, x, y in zip(
                [
                    mb.adapt(model, theta, sx, sy, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)
                    for sx, sy in zip(batch.support_x, batch.support_y, strict=True)
                ],
                batch.query_x,
                batch.query_y,
                strict=True,
            )
        ]
    ).mean()
    loss = reptile_step(
        model, theta, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2, outer_step_size=1.0
    )
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected, **EXACT)


def test_include_query_adapts_on_support_and_query_together(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch(num_tasks=3)
    together = mb.TaskBatch(
        torch.cat([batch.support_x, batch.query_x], dim=1),
        torch.cat([batch.support_y, batch.query_y], dim=1),
        batch.query_x,
        batch.query_y,
    )
    expected = loop_reptile(model, copy_params(model), together, inner_lr=0.05, inner_steps=2, epsilon=0.5)
    params = copy_params(model)
    settings = {"loss_fn": F.mse_loss, "inner_lr": 0.05, "inner_steps": 2, "outer_step_size": 0.5}
    reptile_step(model, params, batch, include_query=True, **settings)
    for name in expected:
        torch.testing.assert_close(params[name], expected[name], **EXACT)


def test_reptile_step_updates_the_model_parameters_in_place(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    params = dict(model.named_parameters())
    before = copy_params(model)
    reptile_step(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2, outer_step_size=1.0)
    assert all(params[name] is tensor for name, tensor in model.named_parameters())
    assert all(tensor.requires_grad and tensor.grad is None for tensor in params.values())
    assert any(not torch.equal(params[name], before[name]) for name in before)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"inner_steps": 0}, ValueError, "inner_steps must be >= 1"),
        ({"inner_steps": 1.5}, TypeError, "inner_steps must be an integer"),
        ({"outer_step_size": 0.0}, ValueError, "outer_step_size must be a finite number > 0"),
        ({"outer_step_size": float("nan")}, ValueError, "outer_step_size must be a finite number > 0"),
        ({"inner_lr": -0.1}, ValueError, "inner_lr must be a finite number >= 0"),
        ({"loss_fn": "mse"}, TypeError, "loss_fn must be callable"),
    ],
)
def test_reptile_step_rejects_bad_arguments(make_model, sine_batch, changes, error, match):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    settings = {"loss_fn": F.mse_loss, "inner_lr": 0.05, "inner_steps": 2, "outer_step_size": 1.0} | changes
    with pytest.raises(error, match=match):
        reptile_step(model, copy_params(model), batch, **settings)


def test_reptile_step_rejects_params_that_do_not_match_the_model(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    params = copy_params(model)
    del params["head.bias"]
    with pytest.raises(ValueError, match="missing \\['head.bias'\\]"):
        reptile_step(
            model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=1, outer_step_size=1.0
        )


def test_reptile_step_names_a_diverging_inner_step(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    params = copy_params(model)
    with pytest.raises(mb.NonFiniteLossError, match="try a smaller inner_lr"):
        reptile_step(
            model, params, batch, loss_fn=F.mse_loss, inner_lr=1e6, inner_steps=5, outer_step_size=1.0
        )


def sinusoid_sampler():
    return functools.partial(mb.tasks.Sinusoid().sample, k_shot=5, n_query=5)


def test_reptile_train_is_reproducible_and_returns_a_history(make_model):
    config = ReptileConfig(iterations=6, meta_batch_size=4, inner_steps=2, outer_step_size=0.5, seed=3)
    runs = []
    for _ in range(2):
        model = make_model(lambda: MLP(1, (8,)), dtype=torch.float32)
        history = reptile_train(
            model, sinusoid_sampler(), config, loss_fn=F.mse_loss, device="cpu", progress=False
        )
        runs.append((copy_params(model), history))
    (first, history), (second, _) = runs
    assert history.meta_losses.shape == (6,)
    assert bool(torch.isfinite(history.meta_losses).all())
    assert history.device == "cpu" and history.seconds > 0
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_reptile_train_takes_the_steps_of_reptile_step(make_model):
    config = ReptileConfig(iterations=3, meta_batch_size=2, inner_lr=0.02, inner_steps=2, outer_step_size=0.7)
    trained = make_model(lambda: MLP(1, (8,)), dtype=torch.float32)
    reptile_train(trained, sinusoid_sampler(), config, loss_fn=F.mse_loss, device="cpu", progress=False)
    stepped = make_model(lambda: MLP(1, (8,)), dtype=torch.float32)
    params, generator = dict(stepped.named_parameters()), torch.Generator().manual_seed(config.seed)
    for _ in range(config.iterations):
        batch = sinusoid_sampler()(config.meta_batch_size, generator=generator)
        reptile_step(
            stepped, params, batch, loss_fn=F.mse_loss, inner_lr=0.02, inner_steps=2, outer_step_size=0.7
        )
    for name, tensor in trained.named_parameters():
        torch.testing.assert_close(tensor, params[name], atol=0, rtol=0)


def test_reptile_train_rejects_bad_arguments(make_model):
    model = make_model(lambda: MLP(1, (8,)))
    with pytest.raises(TypeError, match="config must be a ReptileConfig"):
        reptile_train(model, sinusoid_sampler(), mb.MetaTrainConfig(), loss_fn=F.mse_loss, progress=False)
    with pytest.raises(TypeError, match="sample_tasks must be callable"):
        reptile_train(model, "sinusoid", ReptileConfig(), loss_fn=F.mse_loss, progress=False)


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("iterations", 0, ValueError, "iterations must be >= 1"),
        ("meta_batch_size", 2.0, TypeError, "meta_batch_size must be an integer"),
        ("inner_steps", 0, ValueError, "inner_steps must be >= 1"),
        ("outer_step_size", -1.0, ValueError, "outer_step_size must be a finite number > 0"),
        ("include_query", 1, TypeError, "include_query must be a bool"),
        ("seed", -1, ValueError, "seed must be >= 0"),
    ],
)
def test_reptile_config_rejects_bad_values(field, value, error, match):
    with pytest.raises(error, match=match):
        ReptileConfig(**{field: value})


def test_reptile_config_matching_takes_the_budget_of_a_maml_run():
    maml = mb.MetaTrainConfig(iterations=123, meta_batch_size=7, inner_lr=0.02, seed=5, first_order=True)
    config = ReptileConfig.matching(maml, inner_steps=4, outer_step_size=0.5)
    assert config == ReptileConfig(
        iterations=123, meta_batch_size=7, inner_lr=0.02, inner_steps=4, outer_step_size=0.5, seed=5
    )
    with pytest.raises(TypeError, match="config must be a MetaTrainConfig"):
        ReptileConfig.matching(config)
