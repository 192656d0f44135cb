"""The checkers of chapters 2 and 3 accept right answers and name each usual mistake."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.checks import CheckResult


def gradients(model, params, x, y, loss_fn, **options):
    loss = loss_fn(functional_call(model, params, (x,)), y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()), **options), strict=True))


def sgd_step(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn)
    return {name: tensor - lr * grads[name] for name, tensor in params.items()}


def sgd_step_second_order(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn, create_graph=True)
    return {name: tensor - lr * grads[name] for name, tensor in params.items()}


def step_uphill(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn)
    return {name: tensor + lr * grads[name] for name, tensor in params.items()}


def step_in_place(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn)
    for name, tensor in params.items():
        tensor -= lr * grads[name]
    return params


def step_through_data(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn)
    for name, tensor in params.items():
        tensor.data -= lr * grads[name]
    return dict(params)


def step_under_no_grad(model, params, x, y, loss_fn, lr):
    grads = gradients(model, params, x, y, loss_fn)
    with torch.no_grad():
        for name, tensor in params.items():
            tensor.sub_(lr * grads[name])
    return dict(params)


def grad_of_model_call(model, params, x, y, loss_fn, lr):
    grads = torch.autograd.grad(loss_fn(model(x), y), list(params.values()))
    return {name: tensor - lr * grad for (name, tensor), grad in zip(params.items(), grads, strict=True)}


def step_with_own_weights(model, params, x, y, loss_fn, lr):
    grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
    return {name: tensor - lr * grad for (name, tensor), grad in zip(params.items(), grads, strict=True)}


def backward_on_model_call(model, params, x, y, loss_fn, lr):
    loss_fn(model(x), y).backward()
    return {name: tensor - lr * tensor.grad for name, tensor in params.items()}


def backward_accumulating(model, params, x, y, loss_fn, lr):
    loss_fn(functional_call(model, params, (x,)), y).backward()
    return {name: tensor - lr * tensor.grad for name, tensor in params.items()}


def return_gradients(model, params, x, y, loss_fn, lr):
    return gradients(model, params, x, y, loss_fn)


def loss_as_float(model, params, x, y, loss_fn, lr):
    loss = loss_fn(functional_call(model, params, (x,)), y).item()
    grads = torch.autograd.grad(loss, list(params.values()))
    return {name: tensor - lr * grad for (name, tensor), grad in zip(params.items(), grads, strict=True)}


def detached_result(model, params, x, y, loss_fn, lr):
    return {name: tensor.detach() for name, tensor in sgd_step(model, params, x, y, loss_fn, lr).items()}


def optimizer_on_the_model(model, params, x, y, loss_fn, lr):
    with torch.no_grad():
        for own, tensor in zip(model.parameters(), params.values(), strict=True):
            own.copy_(tensor)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn(model(x), y).backward()
    optimizer.step()
    return {name: tensor.clone() for name, tensor in model.named_parameters()}


def return_a_list(model, params, x, y, loss_fn, lr):
    return list(sgd_step(model, params, x, y, loss_fn, lr).values())


def step_with_mse(model, params, x, y, loss_fn, lr):
    return sgd_step(model, params, x, y, F.mse_loss, lr)


@pytest.mark.parametrize("step", [sgd_step, sgd_step_second_order])
def test_check_sgd_step_accepts_a_functional_step(step, checker_seed):
    verdict = mb.checks.check_sgd_step(step, seed=checker_seed)

    assert isinstance(verdict, CheckResult)
    assert verdict, verdict.message
    assert str(verdict).startswith("correct")


@pytest.mark.parametrize(
    ("step", "keyword"),
    [
        (step_uphill, "sign"),
        (step_in_place, "in-place"),
        (step_through_data, "params changed"),
        (step_under_no_grad, "params changed"),
        (grad_of_model_call, "functional_call"),
        (step_with_own_weights, "model's own weights"),
        (backward_on_model_call, "None"),
        (backward_accumulating, "pile up in .grad"),
        (return_gradients, "returned the gradients"),
        (loss_as_float, ".item()"),
        (detached_result, "graph"),
        (optimizer_on_the_model, "model's own weights changed"),
        (return_a_list, "dict"),
        (step_with_mse, "ignores loss_fn"),
    ],
)
def test_check_sgd_step_names_the_mistake(step, keyword, checker_seed):
    verdict = mb.checks.check_sgd_step(step, seed=checker_seed)

    assert not verdict
    assert keyword in verdict.message
    assert str(verdict).startswith("not yet")


def test_check_sgd_step_rejects_a_non_function():
    with pytest.raises(TypeError, match="must be a function"):
        mb.checks.check_sgd_step("sgd_step")


def interval(losses):
    return losses.mean(dim=0), 1.96 * losses.std(dim=0) / math.sqrt(losses.shape[0])


def interval_numpy(losses):
    values = np.asarray(losses)
    return values.mean(axis=0), 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))


def interval_over_steps(losses):
    return losses.mean(dim=1), 1.96 * losses.std(dim=1) / math.sqrt(losses.shape[1])


def std_over_steps(losses):
    return losses.mean(dim=0), 1.96 * losses.std(dim=1) / math.sqrt(losses.shape[0])


def population_std(losses):
    values = np.asarray(losses)
    return values.mean(axis=0), 1.96 * values.std(axis=0) / np.sqrt(len(values))


def no_square_root(losses):
    return losses.mean(dim=0), 1.96 * losses.std(dim=0)


def divided_by_t(losses):
    return losses.mean(dim=0), 1.96 * losses.std(dim=0) / losses.shape[0]


def one_standard_error(losses):
    return losses.mean(dim=0), losses.std(dim=0) / math.sqrt(losses.shape[0])


def variance(losses):
    return losses.mean(dim=0), 1.96 * losses.var(dim=0) / math.sqrt(losses.shape[0])


def centres_in_place(losses):
    mean = losses.mean(dim=0)
    losses -= mean
    return mean, 1.96 * losses.std(dim=0) / math.sqrt(losses.shape[0])


def three_values(losses):
    return (*interval(losses), losses.shape[0])


@pytest.mark.parametrize("function", [interval, interval_numpy])
def test_check_mean_and_ci95_accepts_the_interval(function, checker_seed):
    verdict = mb.checks.check_mean_and_ci95(function, seed=checker_seed)

    assert verdict, verdict.message


@pytest.mark.parametrize(
    ("function", "keyword"),
    [
        (interval_over_steps, "dim 0"),
        (std_over_steps, "half-width has shape"),
        (population_std, "T - 1"),
        (no_square_root, "sqrt(T)"),
        (divided_by_t, "not by T"),
        (one_standard_error, "1.96"),
        (variance, "not the variance"),
        (centres_in_place, "in place"),
        (three_values, "pair"),
    ],
)
def test_check_mean_and_ci95_names_the_mistake(function, keyword, checker_seed):
    verdict = mb.checks.check_mean_and_ci95(function, seed=checker_seed)

    assert not verdict
    assert keyword in verdict.message


def query_loss(model, params, x, y, loss_fn):
    return loss_fn(functional_call(model, params, (x,)), y)


def scores_with_adapt(model, params, batch, loss_fn, lr, steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        adapted = mb.adapt(
            model, params, support_x, support_y, loss_fn=loss_fn, inner_lr=lr, inner_steps=steps
        )
        losses.append(query_loss(model, adapted, query_x, query_y, loss_fn))
    return torch.stack(losses)


def scores_with_evaluate(model, params, batch, loss_fn, lr, steps):
    return mb.evaluate(model, params, batch, loss_fn=loss_fn, inner_lr=lr, inner_steps=steps).per_task[:, -1]


def scores_as_a_list(model, params, batch, loss_fn, lr, steps):
    return list(scores_with_adapt(model, params, batch, loss_fn, lr, steps))


def scores_on(sets):
    """A scorer that adapts on ``sets[0]`` and scores on ``sets[1]``, "support" or "query"."""

    def score(model, params, batch, loss_fn, lr, steps):
        pick = {"support": (batch.support_x, batch.support_y), "query": (batch.query_x, batch.query_y)}
        adapt_on, score_on = pick[sets[0]], pick[sets[1]]
        losses = []
        for task in range(batch.num_tasks):
            adapted = mb.adapt(
                model,
                params,
                adapt_on[0][task],
                adapt_on[1][task],
                loss_fn=loss_fn,
                inner_lr=lr,
                inner_steps=steps,
            )
            losses.append(query_loss(model, adapted, score_on[0][task], score_on[1][task], loss_fn))
        return torch.stack(losses)

    return score


def scores_without_steps(model, params, batch, loss_fn, lr, steps):
    return scores_with_adapt(model, params, batch, loss_fn, lr, 0)


def scores_one_step_more(model, params, batch, loss_fn, lr, steps):
    return scores_with_adapt(model, params, batch, loss_fn, lr, steps + 1)


def scores_chained(model, params, batch, loss_fn, lr, steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        params = mb.adapt(
            model, params, support_x, support_y, loss_fn=loss_fn, inner_lr=lr, inner_steps=steps
        )
        losses.append(query_loss(model, params, query_x, query_y, loss_fn))
    return torch.stack(losses)


def mean_score(model, params, batch, loss_fn, lr, steps):
    return scores_with_adapt(model, params, batch, loss_fn, lr, steps).mean()


def scores_uphill(model, params, batch, loss_fn, lr, steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        adapted = dict(params)
        for _ in range(steps):
            grads = torch.autograd.grad(
                query_loss(model, adapted, support_x, support_y, loss_fn), list(adapted.values())
            )
            adapted = {
                name: tensor + lr * grad for (name, tensor), grad in zip(adapted.items(), grads, strict=True)
            }
        losses.append(query_loss(model, adapted, query_x, query_y, loss_fn))
    return torch.stack(losses)


def scores_with_mse(model, params, batch, loss_fn, lr, steps):
    return scores_with_adapt(model, params, batch, F.mse_loss, lr, steps)


def scores_updating_params(model, params, batch, loss_fn, lr, steps):
    losses = scores_with_adapt(model, params, batch, loss_fn, lr, steps)
    with torch.no_grad():
        for tensor in params.values():
            tensor.mul_(0.5)
    return losses


@pytest.mark.parametrize("function", [scores_with_adapt, scores_with_evaluate, scores_as_a_list])
def test_check_fine_tune_scores_accepts_support_then_query(function, checker_seed):
    verdict = mb.checks.check_fine_tune_scores(function, seed=checker_seed)

    assert verdict, verdict.message


@pytest.mark.parametrize(
    ("function", "keyword"),
    [
        (scores_on(("support", "support")), "scored on the support set"),
        (scores_on(("query", "query")), "fine-tuned on the query set"),
        (scores_on(("query", "support")), "swapped"),
        (scores_without_steps, "not fine-tuned"),
        (scores_one_step_more, "one step too many"),
        (scores_chained, "previous task"),
        (mean_score, "one loss per task"),
        (scores_uphill, "sign"),
        (scores_updating_params, "params changed"),
        (scores_with_mse, "ignores loss_fn"),
    ],
)
def test_check_fine_tune_scores_names_the_mistake(function, keyword, checker_seed):
    verdict = mb.checks.check_fine_tune_scores(function, seed=checker_seed)

    assert not verdict
    assert keyword in verdict.message


def test_a_checker_turns_an_exception_into_a_hint():
    def broken(model, params, batch, loss_fn, lr, steps):
        raise ValueError("not written yet")

    verdict = mb.checks.check_fine_tune_scores(broken)

    assert not verdict
    assert "ValueError: not written yet" in verdict.message
