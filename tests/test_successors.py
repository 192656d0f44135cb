"""Oracles for MAML's successors (chapter 7), in float64: ANIL (``adapt_only``), Meta-SGD
(per-parameter learned rates), MAML++ (per-step rates, multi-step loss) and the
options of ``MetaTrainConfig`` that train them.

The package, on every backend that computes them, is checked against the per-task
loop of ``mamlbook.reference``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.gradcheck import finite_difference_grad, max_relative_error
from mamlbook.models import MLP, Conv4
from mamlbook.training import multi_step_weights

EXACT = {"atol": 1e-10, "rtol": 1e-10}


def reference_meta_loss(model, params, batch, *, loss_fn=F.mse_loss, **kwargs):
    """``mamlbook.reference.maml_loss``: each method's update rule applied literally, task by task."""
    return mb.reference.maml_loss(model, params, batch, loss_fn=loss_fn, **kwargs)


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, list(tensors))


@pytest.fixture
def mlp(make_model):
    return make_model(lambda: MLP(1, (8, 8), 1))


def test_anil_adapts_only_the_head_and_matches_the_loop(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    kwargs = {"inner_lr": 0.05, "inner_steps": 2}
    expected = reference_meta_loss(mlp, params, batch, adapt_only=["head.weight", "head.bias"], **kwargs)
    actual = mb.maml_loss(
        mlp, params, batch, loss_fn=F.mse_loss, adapt_only="head", **kwargs, backend=backend
    )
    torch.testing.assert_close(actual, expected, **EXACT)
    for got, want in zip(grads_of(actual, params.values()), grads_of(expected, params.values()), strict=True):
        torch.testing.assert_close(got, want, **EXACT)

    phi = mb.adapt(
        mlp,
        params,
        batch.support_x[0],
        batch.support_y[0],
        loss_fn=F.mse_loss,
        adapt_only="head",
        **kwargs,
        backend=backend,
    )
    for name in params:
        changed = not torch.equal(phi[name], params[name])
        assert changed == name.startswith("head."), name


def test_anil_body_still_gets_a_meta_gradient(mlp, theta, sine_batch, backend):
    params = theta(mlp)
    loss = mb.maml_loss(
        mlp,
        params,
        sine_batch(),
        loss_fn=F.mse_loss,
        inner_lr=0.05,
        inner_steps=1,
        adapt_only="head",
        backend=backend,
    )
    body_grad = torch.autograd.grad(loss, params["body.0.weight"])[0]
    assert body_grad.abs().sum() > 0


def meta_sgd_rates(params, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {
        name: (
            0.02 + 0.05 * torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
        ).requires_grad_()
        for name, tensor in params.items()
    }


def test_meta_sgd_matches_the_loop_for_params_and_rates(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    rates = meta_sgd_rates(params)
    expected = reference_meta_loss(mlp, params, batch, inner_lr=rates, inner_steps=2)
    actual = mb.maml_loss(
        mlp, params, batch, loss_fn=F.mse_loss, inner_lr=rates, inner_steps=2, backend=backend
    )
    torch.testing.assert_close(actual, expected, **EXACT)
    leaves = [*params.values(), *rates.values()]
    for got, want in zip(grads_of(actual, leaves), grads_of(expected, leaves), strict=True):
        torch.testing.assert_close(got, want, **EXACT)


def test_meta_sgd_rate_gradient_matches_finite_differences(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch(num_tasks=2)
    rates = meta_sgd_rates(params)

    def meta_loss(rate_values):
        return mb.maml_loss(
            mlp, params, batch, loss_fn=F.mse_loss, inner_lr=rate_values, inner_steps=2, backend=backend
        )

    analytic = dict(zip(rates, grads_of(meta_loss(rates), rates.values()), strict=True))
    numeric = finite_difference_grad(meta_loss, {name: rate.detach() for name, rate in rates.items()})
    assert max_relative_error(analytic, numeric) < 1e-6


def test_per_step_rates_and_multi_step_loss_match_the_loop(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    per_step = {
        name: torch.tensor([0.03, 0.05, 0.02], dtype=torch.float64, requires_grad=True) for name in params
    }
    inner_lr = [{name: rate[step] for name, rate in per_step.items()} for step in range(3)]
    weights = [0.2, 0.3, 0.5]
    expected = reference_meta_loss(mlp, params, batch, inner_lr=inner_lr, inner_steps=3, step_weights=weights)
    actual = mb.maml_loss(
        mlp,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=inner_lr,
        inner_steps=3,
        step_weights=weights,
        backend=backend,
    )
    torch.testing.assert_close(actual, expected, **EXACT)
    leaves = [*params.values(), *per_step.values()]
    for got, want in zip(grads_of(actual, leaves), grads_of(expected, leaves), strict=True):
        torch.testing.assert_close(got, want, **EXACT)


def test_weights_on_the_last_step_alone_equal_plain_maml(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    plain = mb.maml_loss(
        mlp, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=3, backend=backend
    )
    weighted = mb.maml_loss(
        mlp,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=0.05,
        inner_steps=3,
        step_weights=torch.tensor([0.0, 0.0, 1.0]),
        backend=backend,
    )
    torch.testing.assert_close(weighted, plain, **EXACT)


def test_constant_learned_rates_equal_a_fixed_alpha(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    per_tensor = {name: torch.tensor(0.05, dtype=torch.float64) for name in params}
    fixed = mb.maml_loss(
        mlp, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2, backend=backend
    )
    learned = mb.maml_loss(
        mlp,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=[per_tensor, per_tensor],
        inner_steps=2,
        backend=backend,
    )
    torch.testing.assert_close(learned, fixed, **EXACT)


def test_evaluate_uses_the_rate_of_each_step(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    rates = [{name: torch.tensor(rate, dtype=torch.float64) for name in params} for rate in (0.05, 0.0)]
    result = mb.evaluate(
        mlp, params, batch, loss_fn=F.mse_loss, inner_lr=rates, inner_steps=2, backend=backend
    )
    single = mb.evaluate(
        mlp, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=1, backend=backend
    )
    torch.testing.assert_close(result.per_task[:, 1], single.per_task[:, 1], **EXACT)
    torch.testing.assert_close(result.per_task[:, 2], result.per_task[:, 1], **EXACT)  # rate 0: no change


def test_evaluate_records_a_metric_and_adapts_only_what_is_asked(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()

    def mean_abs_error(prediction, target):
        return (prediction - target).abs().mean()

    head_only = mb.evaluate(
        mlp,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=0.05,
        inner_steps=1,
        metric=mean_abs_error,
        adapt_only="head",
        backend=backend,
    )
    phi = mb.adapt(
        mlp,
        params,
        batch.support_x[0],
        batch.support_y[0],
        loss_fn=F.mse_loss,
        inner_lr=0.05,
        inner_steps=1,
        adapt_only="head",
        backend=backend,
    )
    expected = mean_abs_error(functional_call(mlp, phi, (batch.query_x[0],)), batch.query_y[0])
    torch.testing.assert_close(head_only.per_task[0, 1], expected.detach(), **EXACT)


@pytest.mark.parametrize("method", ["anil", "meta_sgd", "maml_pp"])
def test_successors_on_conv4_with_batch_statistics_match_the_loop(make_model, theta, method, backend):
    model = make_model(lambda: Conv4(n_way=3, hidden=4))
    images = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(3).repeat(4)
    batch = mb.TaskBatch(
        images[:6].view(2, 3, 1, 28, 28),
        labels[:6].view(2, 3),
        images[6:].view(2, 3, 1, 28, 28),
        labels[6:].view(2, 3),
    )
    params = theta(model)
    kwargs = {"inner_steps": 2}
    if method == "anil":
        kwargs |= {"inner_lr": 0.3, "adapt_only": ["head.weight", "head.bias"]}
    elif method == "meta_sgd":
        kwargs |= {"inner_lr": meta_sgd_rates(params)}
    else:
        kwargs |= {
            "inner_lr": [
                {name: torch.tensor(rate, dtype=torch.float64) for name in params} for rate in (0.3, 0.1)
            ],
            "step_weights": [0.4, 0.6],
        }
    expected = reference_meta_loss(model, params, batch, loss_fn=F.cross_entropy, **kwargs)
    actual = mb.maml_loss(model, params, batch, loss_fn=F.cross_entropy, **kwargs, backend=backend)
    torch.testing.assert_close(actual, expected, **EXACT)
    for got, want in zip(grads_of(actual, params.values()), grads_of(expected, params.values()), strict=True):
        torch.testing.assert_close(got, want, **EXACT)


def test_multi_step_weights_anneal_towards_the_last_step():
    start, middle, end = (multi_step_weights(5, it, 100) for it in (0, 50, 1000))
    assert start == pytest.approx([0.2] * 5)
    for weights in (start, middle, end):
        assert math.isclose(sum(weights), 1.0)
    assert middle[0] == pytest.approx(0.1) and middle[-1] == pytest.approx(0.6)
    assert end[0] == pytest.approx(0.03 / 5)
    assert multi_step_weights(1, 0, 10) == [1.0]


def small_config(**changes):
    base = mb.MetaTrainConfig(iterations=3, meta_batch_size=2, inner_lr=0.05, inner_steps=2, outer_lr=1e-2)
    return dataclasses.replace(base, **changes)


def train(make_model, config):
    model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
    history = mb.meta_train(
        model, mb.tasks.Sinusoid().sample, config, loss_fn=F.mse_loss, device="cpu", progress=False
    )
    return model, history


def test_first_order_annealing_over_every_iteration_is_first_order_maml(make_model):
    annealed, _ = train(make_model, small_config(first_order_iterations=3))
    first_order, _ = train(make_model, small_config(first_order=True))
    second_order, _ = train(make_model, small_config())
    for a, b in zip(annealed.parameters(), first_order.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert any(
        not torch.equal(a, c) for a, c in zip(annealed.parameters(), second_order.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("learned", "shape_of"),
    [("per_parameter", lambda param, steps: param.shape), ("per_layer_per_step", lambda param, steps: ())],
)
def test_meta_train_learns_rates_and_returns_them(make_model, learned, shape_of, backend):
    model, history = train(make_model, small_config(learned_inner_lr=learned, multi_step_loss_iterations=2))
    steps = history.inner_lr if isinstance(history.inner_lr, list) else [history.inner_lr]
    params = dict(model.named_parameters())
    for step_rates in steps:
        assert step_rates.keys() == params.keys()
        for name, rate in step_rates.items():
            assert rate.shape == shape_of(params[name], 2) and not rate.requires_grad
    assert any(not torch.allclose(rate, torch.full_like(rate, 0.05)) for rate in steps[0].values())
    batch = mb.tasks.Sinusoid().sample(3, generator=torch.Generator().manual_seed(0))
    result = mb.evaluate(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=history.inner_lr, inner_steps=2, backend=backend
    )
    assert torch.isfinite(result.mean).all()


def test_anil_training_leaves_the_inner_loop_of_the_body_alone(make_model):
    _, history = train(make_model, small_config(adapt_only=("head",), learned_inner_lr="per_parameter"))
    assert set(history.inner_lr) == {"head.weight", "head.bias"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"adapt_only": "tail"}, ValueError, "adapt_only entry 'tail' matches no parameter"),
        ({"adapt_only": []}, ValueError, "adapt_only is empty"),
        ({"adapt_only": [3]}, TypeError, "adapt_only must be"),
        ({"inner_lr": [0.1]}, ValueError, "one rate per step for 1 steps, but inner_steps=2"),
        ({"inner_lr": {"head.weight": torch.tensor(0.1)}}, ValueError, "missing"),
        ({"inner_lr": "0.1"}, TypeError, "inner_lr must be a number"),
        ({"inner_lr": [0.1, -0.1]}, ValueError, r"inner_lr\[1\] must be a finite number >= 0"),
        ({"step_weights": [1.0]}, ValueError, "one weight per inner step"),
        ({"step_weights": [1.0, -1.0]}, ValueError, "finite numbers >= 0"),
        ({"step_weights": [0.0, 0.0]}, ValueError, "all zero"),
    ],
)
def test_bad_successor_arguments_are_named(mlp, theta, sine_batch, kwargs, error, match, backend):
    arguments = {"loss_fn": F.mse_loss, "inner_lr": 0.05, "inner_steps": 2, **kwargs}
    with pytest.raises(error, match=match):
        mb.maml_loss(mlp, theta(mlp), sine_batch(), **arguments, backend=backend)


def test_learned_rate_of_the_wrong_shape_is_named(mlp, theta, sine_batch, backend):
    params = theta(mlp)
    rates = {name: torch.full((2,), 0.1, dtype=torch.float64) for name in params}
    with pytest.raises(
        ValueError, match=r"inner_lr\['body.0.weight'\] must be a scalar or of the parameter's shape"
    ):
        mb.maml_loss(
            mlp, params, sine_batch(), loss_fn=F.mse_loss, inner_lr=rates, inner_steps=1, backend=backend
        )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"learned_inner_lr": "per_task"}, ValueError),
        ({"adapt_only": "head"}, TypeError),
        ({"multi_step_loss_iterations": -1}, ValueError),
        ({"first_order_iterations": 1.5}, TypeError),
    ],
)
def test_bad_successor_config_is_named(changes, error):
    with pytest.raises(error, match=next(iter(changes))):
        small_config(**changes)
