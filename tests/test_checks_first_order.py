"""The chapter 5 checkers: they accept a correct Reptile step and first-order MAML gradient,
and name each classic mistake. Every wrong implementation is written out here, one
function per mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.checks import check_fomaml_gradient, check_reptile_step


def adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps):
    """Each task's adapted parameters, every task adapted from ``theta``."""
    return [
        mb.adapt(
            model, theta, x, y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True
        )
        for x, y in zip(batch.support_x, batch.support_y, strict=True)
    ]


# Reptile steps: reptile_step(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon) -> new theta


def reptile_correct(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: theta[name] + epsilon * torch.stack([phi[name] - theta[name] for phi in adapted]).mean(0)
            for name in theta
        }


def reptile_interpolation(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    """Correct too: (1 - epsilon) theta + epsilon mean(phi) is the same point."""
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: (1 - epsilon) * theta[name] + epsilon * torch.stack([phi[name] for phi in adapted]).mean(0)
            for name in theta
        }


def reptile_wrong_sign(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: theta[name] - epsilon * torch.stack([phi[name] - theta[name] for phi in adapted]).mean(0)
            for name in theta
        }


def reptile_averages_adapted(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: theta[name] + epsilon * torch.stack([phi[name] for phi in adapted]).mean(0)
            for name in theta
        }


def reptile_sums_differences(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: theta[name] + epsilon * sum(phi[name] - theta[name] for phi in adapted) for name in theta
        }


def reptile_last_task_only(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    for x, y in zip(batch.support_x, batch.support_y, strict=True):
        phi = mb.adapt(model, theta, x, y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
    with torch.no_grad():
        return {name: theta[name] + epsilon * (phi[name] - theta[name]) for name in theta}


def reptile_moves_theta_in_the_loop(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    for x, y in zip(batch.support_x, batch.support_y, strict=True):
        phi = mb.adapt(model, theta, x, y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
        with torch.no_grad():
            for name in theta:
                theta[name] += epsilon * (phi[name] - theta[name])
    return {name: tensor.detach().clone() for name, tensor in theta.items()}


def reptile_chains_tasks(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    """The same mistake without touching the input: theta rebound in the loop."""
    for x, y in zip(batch.support_x, batch.support_y, strict=True):
        phi = mb.adapt(model, theta, x, y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
        theta = {name: (theta[name] + epsilon * (phi[name] - theta[name])).detach() for name in theta}
    return theta


def reptile_epsilon_twice(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        mean_step = {
            name: epsilon * torch.stack([phi[name] - theta[name] for phi in adapted]).mean(0)
            for name in theta
        }
        return {name: theta[name] + epsilon * mean_step[name] for name in theta}


def reptile_no_epsilon(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {name: torch.stack([phi[name] for phi in adapted]).mean(0) for name in theta}


def reptile_updates_input(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    """Right values, but theta itself is changed after the loop."""
    new = reptile_correct(
        model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps, epsilon=epsilon
    )
    with torch.no_grad():
        for name in theta:
            theta[name].copy_(new[name])
    return theta


def reptile_ignores_steps(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    return reptile_correct(
        model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=1, epsilon=epsilon
    )


def reptile_per_task_result(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    with torch.no_grad():
        return {
            name: theta[name] + epsilon * torch.stack([phi[name] - theta[name] for phi in adapted])
            for name in theta
        }


def reptile_with_mse(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    return reptile_correct(
        model, theta, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=inner_steps, epsilon=epsilon
    )


@pytest.mark.parametrize("fn", [reptile_correct, reptile_interpolation])
def test_check_reptile_step_accepts_a_correct_step(fn, checker_seed):
    verdict = check_reptile_step(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (reptile_wrong_sign, "away from the adapted"),
        (reptile_averages_adapted, "averages the adapted parameters"),
        (reptile_sums_differences, "instead of summing"),
        (reptile_last_task_only, "only one task"),
        (reptile_moves_theta_in_the_loop, "adapt every task from the same theta"),
        (reptile_chains_tasks, "adapt every task from the same theta"),
        (reptile_epsilon_twice, "epsilon is applied twice"),
        (reptile_no_epsilon, "multiply the mean difference by epsilon"),
        (reptile_updates_input, "leave theta as it was"),
        (reptile_ignores_steps, "differs from theta + epsilon"),
        (reptile_per_task_result, "one tensor per task"),
        (reptile_with_mse, "ignores loss_fn"),
    ],
)
def test_check_reptile_step_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_reptile_step(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_reptile_step_reports_an_exception():
    def broken(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
        raise KeyError("body.0.weight")

    verdict = check_reptile_step(broken)
    assert not verdict.passed
    assert "raised KeyError" in verdict.message


def test_check_reptile_step_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_reptile_step("reptile")


# First-order MAML gradients: fomaml_gradient(model, theta, batch, *, loss_fn, inner_lr, inner_steps) -> grads


def query_gradient(model, phi, x, y, loss_fn):
    """The query-loss gradient at ``phi``, with ``phi`` treated as a constant starting point."""
    phi = {name: tensor.detach().requires_grad_() for name, tensor in phi.items()}
    loss = loss_fn(functional_call(model, phi, (x,)), y)
    return dict(zip(phi, torch.autograd.grad(loss, list(phi.values())), strict=True))


def per_task_query_gradients(model, theta, batch, loss_fn, inner_lr, inner_steps):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    return [
        query_gradient(model, phi, x, y, loss_fn)
        for phi, x, y in zip(adapted, batch.query_x, batch.query_y, strict=True)
    ]


def fomaml_correct(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    grads = per_task_query_gradients(model, theta, batch, loss_fn, inner_lr, inner_steps)
    return {name: torch.stack([grad[name] for grad in grads]).mean(0) for name in theta}


def fomaml_through_maml_loss(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    """Correct too: the package's first-order meta-loss, differentiated."""
    loss = mb.maml_loss(
        model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True
    )
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


def fomaml_second_order(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    loss = mb.maml_loss(model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


def fomaml_at_theta(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    grads = [
        query_gradient(model, theta, x, y, loss_fn) for x, y in zip(batch.query_x, batch.query_y, strict=True)
    ]
    return {name: torch.stack([grad[name] for grad in grads]).mean(0) for name in theta}


def fomaml_on_support(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    adapted = adapt_all(model, theta, batch, loss_fn, inner_lr, inner_steps)
    grads = [
        query_gradient(model, phi, x, y, loss_fn)
        for phi, x, y in zip(adapted, batch.support_x, batch.support_y, strict=True)
    ]
    return {name: torch.stack([grad[name] for grad in grads]).mean(0) for name in theta}


def fomaml_sums_tasks(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    grads = per_task_query_gradients(model, theta, batch, loss_fn, inner_lr, inner_steps)
    return {name: torch.stack([grad[name] for grad in grads]).sum(0) for name in theta}


def fomaml_last_task(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    return per_task_query_gradients(model, theta, batch, loss_fn, inner_lr, inner_steps)[-1]


def fomaml_negated(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    return {
        name: -grad
        for name, grad in fomaml_correct(
            model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps
        ).items()
    }


def fomaml_one_step(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    return fomaml_correct(model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=1)


def fomaml_with_mse(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    return fomaml_correct(model, theta, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=inner_steps)


def fomaml_changing_theta(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
    grads = fomaml_correct(model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
    with torch.no_grad():
        for name, tensor in theta.items():
            tensor -= inner_lr * grads[name]
    return grads


@pytest.mark.parametrize("fn", [fomaml_correct, fomaml_through_maml_loss])
def test_check_fomaml_gradient_accepts_a_correct_gradient(fn, checker_seed):
    verdict = check_fomaml_gradient(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (fomaml_second_order, "second-order terms included"),
        (fomaml_at_theta, "taken at theta"),
        (fomaml_on_support, "of the support loss"),
        (fomaml_sums_tasks, "instead of summing"),
        (fomaml_last_task, "only one task"),
        (fomaml_negated, "wrong sign"),
        (fomaml_one_step, "one inner step whatever inner_steps is"),
        (fomaml_with_mse, "ignores loss_fn"),
        (fomaml_changing_theta, "theta itself was changed"),
    ],
)
def test_check_fomaml_gradient_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_fomaml_gradient(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_fomaml_gradient_wants_a_dict_keyed_like_theta():
    def as_list(model, theta, batch, *, loss_fn, inner_lr, inner_steps):
        return list(
            fomaml_correct(
                model, theta, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps
            ).values()
        )

    verdict = check_fomaml_gradient(as_list)
    assert not verdict.passed
    assert "dict keyed like theta" in verdict.message


def test_check_fomaml_gradient_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_fomaml_gradient(None)
