"""The chapter 4 checker: it accepts correct ``maml_loss`` functions and names each classic
mistake. Every wrong implementation is written out here, one function per mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.checks import check_maml_loss
from mamlbook.checks._problems import problem_seeds, sinusoid_problem
from mamlbook.checks.maml import _PROBLEMS, _mistakes


def inner_step(model, phi, x, y, loss_fn, inner_lr, create_graph=True, sign=-1.0):
    """One SGD step on (x, y) from ``phi``, built out of place."""
    loss = loss_fn(functional_call(model, phi, (x,)), y)
    grads = torch.autograd.grad(loss, list(phi.values()), create_graph=create_graph)
    return {name: p + sign * inner_lr * g for (name, p), g in zip(phi.items(), grads, strict=True)}


def query_loss(model, phi, x, y, loss_fn):
    return loss_fn(functional_call(model, phi, (x,)), y)


def correct_loop(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr)
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def one_loss_over_all_queries(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    """Correct too: with as many query points per task, the mean over all of them is the mean over tasks."""
    predictions = []
    for support_x, support_y, query_x, _ in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr)
        predictions.append(functional_call(model, phi, (query_x,)))
    return loss_fn(torch.cat(predictions), batch.query_y.reshape(-1, *batch.query_y.shape[2:]))


def no_create_graph(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr, create_graph=False)
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def adapts_on_query(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for _, _, query_x, query_y in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, query_x, query_y, loss_fn, inner_lr)
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def updates_theta_under_no_grad(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        for _ in range(inner_steps):
            loss = query_loss(model, params, support_x, support_y, loss_fn)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p -= inner_lr * g
        losses.append(query_loss(model, params, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def updates_theta_data(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        for _ in range(inner_steps):
            loss = query_loss(model, params, support_x, support_y, loss_fn)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            for p, g in zip(params.values(), grads, strict=True):
                p.data -= inner_lr * g
        losses.append(query_loss(model, params, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def updates_leaf_in_place(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        for _ in range(inner_steps):
            loss = query_loss(model, params, support_x, support_y, loss_fn)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            for p, g in zip(params.values(), grads, strict=True):
                p -= inner_lr * g  # autograd refuses: a leaf that requires grad
        losses.append(query_loss(model, params, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def updates_copy_in_place(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = {name: p.clone() for name, p in params.items()}
        for _ in range(inner_steps):
            loss = query_loss(model, phi, support_x, support_y, loss_fn)
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
            for p, g in zip(phi.values(), grads, strict=True):
                p -= inner_lr * g  # overwrites a tensor the graph saved: fails at backward
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def updates_copy_under_no_grad(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = {name: p.clone() for name, p in params.items()}
        for _ in range(inner_steps):
            loss = query_loss(model, phi, support_x, support_y, loss_fn)
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
            with torch.no_grad():
                for p, g in zip(phi.values(), grads, strict=True):
                    p -= inner_lr * g
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def detaches_the_loss(model, params, batch, **kwargs):
    return correct_loop(model, params, batch, **kwargs).detach()


def wrong_sign(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr, sign=+1.0)
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def sums_over_tasks(model, params, batch, **kwargs):
    return correct_loop(model, params, batch, **kwargs) * batch.num_tasks


def one_adaptation_for_all_tasks(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    support_x = batch.support_x.reshape(-1, *batch.support_x.shape[2:])  # (T * K, 1)
    support_y = batch.support_y.reshape(-1, *batch.support_y.shape[2:])
    phi = params
    for _ in range(inner_steps):
        phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr)
    losses = [
        query_loss(model, phi, x, y, loss_fn) for x, y in zip(batch.query_x, batch.query_y, strict=True)
    ]
    return torch.stack(losses).mean()


def continues_from_previous_task(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses, phi = [], params
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr)
        losses.append(query_loss(model, phi, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def scores_theta(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = params
        for _ in range(inner_steps):
            phi = inner_step(model, phi, support_x, support_y, loss_fn, inner_lr)
        losses.append(query_loss(model, params, query_x, query_y, loss_fn))
    return torch.stack(losses).mean()


def always_one_step(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    return correct_loop(model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=1)


def always_mse(model, params, batch, *, loss_fn, inner_lr, inner_steps):
    return correct_loop(model, params, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=inner_steps)


def per_task_losses(model, params, batch, **kwargs):
    return correct_loop(model, params, batch, **kwargs) * torch.ones(batch.num_tasks, dtype=torch.float64)


def returns_a_float(model, params, batch, **kwargs):
    return correct_loop(model, params, batch, **kwargs).item()


def raises(model, params, batch, **kwargs):
    raise KeyError("support")


def squared_error_is_off(model, params, batch, **kwargs):
    return correct_loop(model, params, batch, **kwargs) + 0.1


@pytest.mark.parametrize("fn", [correct_loop, one_loss_over_all_queries, mb.maml_loss])
def test_check_maml_loss_accepts_a_correct_function(fn, checker_seed):
    result = check_maml_loss(fn, seed=checker_seed)
    assert result.passed, result.message
    assert str(result).startswith("correct")


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (no_create_graph, "create_graph"),
        (updates_copy_under_no_grad, "no_grad"),
        (updates_theta_under_no_grad, "changed theta itself in place"),
        (updates_theta_data, "changed theta itself in place"),
        (updates_leaf_in_place, "in place"),
        (updates_copy_in_place, "inplace operation"),
        (detaches_the_loss, "does not require grad"),
        (adapts_on_query, "adapt on the support set"),
        (wrong_sign, "sign"),
        (sums_over_tasks, "instead of summing"),
        (one_adaptation_for_all_tasks, "share one adaptation"),
        (continues_from_previous_task, "previous task"),
        (scores_theta, "query loss of theta itself"),
        (always_one_step, "whatever inner_steps"),
        (always_mse, "ignores loss_fn"),
        (per_task_losses, "one loss per task"),
        (returns_a_float, "got a float"),
        (raises, "raised KeyError"),
        (squared_error_is_off, "compare your loop"),
    ],
)
def test_check_maml_loss_rejects_a_mistake_with_its_hint(fn, keyword, checker_seed):
    result = check_maml_loss(fn, seed=checker_seed)
    assert not result.passed
    assert keyword in result.message
    assert str(result).startswith("not yet")


def test_check_maml_loss_names_graph_cuts_as_cuts():
    for fn in (updates_theta_data, updates_leaf_in_place, updates_copy_in_place, detaches_the_loss):
        assert "graph from params to the loss is cut" in check_maml_loss(fn).message


def test_the_mistakes_give_distinct_values_on_every_problem(checker_seed):
    for seed, (steps, loss_fn) in zip(problem_seeds(checker_seed, len(_PROBLEMS)), _PROBLEMS, strict=True):
        model, batch = sinusoid_problem(seed)
        params = {name: tensor.detach() for name, tensor in model.named_parameters()}
        values = dict(_mistakes(model, params, batch, loss_fn, steps))
        values["correct"] = mb.maml_loss(
            model, params, batch, loss_fn=loss_fn, inner_lr=0.05, inner_steps=steps
        )
        numbers = sorted(float(value) for value in values.values())
        gaps = [(b - a) / abs(b) for a, b in zip(numbers[:-1], numbers[1:], strict=True)]
        assert min(gaps) > 1e-4, values


def test_check_maml_loss_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    check_maml_loss(mb.maml_loss)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_check_maml_loss_rejects_a_non_callable():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_maml_loss("maml_loss")
