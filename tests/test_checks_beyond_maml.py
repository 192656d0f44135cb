"""Chapter 7's checkers: each accepts correct implementations, written two ways and the
package's, and names each classic mistake, on the chapters' problems and on others
(``checker_seed``). Every wrong implementation is written out here, one function each."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.checks import check_anil_adaptation, check_meta_sgd_step, check_multi_step_loss
from mamlbook.checks._problems import problem_seeds, sinusoid_problem
from mamlbook.checks.multi_step_loss import _PROBLEMS, _mistakes, _step_weights


def support_grads(model, phi, x, y, loss_fn, names, create_graph=True):
    """The support loss's gradient with respect to ``phi[name]`` for each of ``names``, as a dict."""
    loss = loss_fn(functional_call(model, phi, (x,)), y)
    grads = torch.autograd.grad(loss, [phi[name] for name in names], create_graph=create_graph)
    return dict(zip(names, grads, strict=True))


# ANIL: anil_adapt(model, params, support_x, support_y, *, head, loss_fn, inner_lr, inner_steps)


def anil_loop(model, params, support_x, support_y, *, head, loss_fn, inner_lr, inner_steps):
    phi = dict(params)
    for _ in range(inner_steps):
        grads = support_grads(model, phi, support_x, support_y, loss_fn, head)
        phi = phi | {name: phi[name] - inner_lr * grads[name] for name in head}
    return phi


def anil_split(model, params, support_x, support_y, *, head, loss_fn, inner_lr, inner_steps):
    """Correct too: the body and the head kept apart, the head's step by torch.func.grad."""
    body = {name: tensor for name, tensor in params.items() if name not in head}
    fast = {name: params[name] for name in head}

    def support_loss(fast):
        return loss_fn(functional_call(model, body | fast, (support_x,)), support_y)

    for _ in range(inner_steps):
        grads = torch.func.grad(support_loss)(fast)
        fast = {name: fast[name] - inner_lr * grads[name] for name in fast}
    return body | fast


def anil_package(model, params, support_x, support_y, *, head, **options):
    return mb.adapt(model, params, support_x, support_y, adapt_only=head, **options)


def anil_adapts_the_body(model, params, support_x, support_y, *, head, **options):
    return anil_loop(model, params, support_x, support_y, head=list(params), **options)


def anil_detaches_the_body(model, params, support_x, support_y, *, head, **options):
    body_cut = {name: tensor if name in head else tensor.detach() for name, tensor in params.items()}
    return anil_loop(model, body_cut, support_x, support_y, head=head, **options)


def anil_copies_the_body(model, params, support_x, support_y, *, head, **options):
    body_cut = {name: tensor if name in head else copy.deepcopy(tensor) for name, tensor in params.items()}
    return anil_loop(model, body_cut, support_x, support_y, head=head, **options)


def anil_copies_everything(model, params, support_x, support_y, **options):
    return anil_loop(model, copy.deepcopy(params), support_x, support_y, **options)


def anil_first_order(model, params, support_x, support_y, *, head, loss_fn, inner_lr, inner_steps):
    phi = dict(params)
    for _ in range(inner_steps):
        grads = support_grads(model, phi, support_x, support_y, loss_fn, head, create_graph=False)
        phi = phi | {name: phi[name] - inner_lr * grads[name] for name in head}
    return phi


def anil_wrong_sign(model, params, support_x, support_y, *, inner_lr, **options):
    return anil_loop(model, params, support_x, support_y, inner_lr=-inner_lr, **options)


def anil_one_step(model, params, support_x, support_y, *, inner_steps, **options):
    return anil_loop(model, params, support_x, support_y, inner_steps=1, **options)


def anil_cross_entropy(model, params, support_x, support_y, *, loss_fn, **options):
    return anil_loop(model, params, support_x, support_y, loss_fn=F.cross_entropy, **options)


def anil_no_steps(model, params, support_x, support_y, **options):
    return dict(params)


def anil_head_only(model, params, support_x, support_y, *, head, **options):
    phi = anil_loop(model, params, support_x, support_y, head=head, **options)
    return {name: phi[name] for name in head}


def anil_float32(model, params, support_x, support_y, **options):
    return {
        name: tensor.float()
        for name, tensor in anil_loop(model, params, support_x, support_y, **options).items()
    }


def anil_changes_params(model, params, support_x, support_y, **options):
    with torch.no_grad():
        params["head.bias"] += 1.0
    return anil_loop(model, params, support_x, support_y, **options)


def anil_slightly_off(model, params, support_x, support_y, **options):
    phi = anil_loop(model, params, support_x, support_y, **options)
    return phi | {"head.bias": phi["head.bias"] + 1e-3}


def raises_key_error(*args, **kwargs):
    raise KeyError("head")


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


def returns_none(*args, **kwargs):
    return None


@pytest.mark.parametrize("fn", [anil_loop, anil_split, anil_package])
def test_check_anil_adaptation_accepts_a_correct_function(fn, checker_seed):
    result = check_anil_adaptation(fn, seed=checker_seed)
    assert result.passed, result.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (anil_adapts_the_body, "the body is adapted too"),
        (anil_detaches_the_body, "no meta-gradient reaches the body"),
        (anil_copies_the_body, "no meta-gradient reaches the body"),
        (anil_copies_everything, "graph from params to the result is cut"),
        (anil_first_order, "create_graph=True"),
        (anil_wrong_sign, "sign"),
        (anil_one_step, "whatever inner_steps"),
        (anil_cross_entropy, "ignores loss_fn"),
        (anil_no_steps, "head is not adapted"),
        (anil_head_only, "return a dict keyed like params"),
        (anil_float32, "has dtype torch.float32"),
        (anil_changes_params, "changed its inputs in place (params['head.bias'])"),
        (anil_slightly_off, "compare your loop"),
        (raises_key_error, "raised KeyError"),
        (not_implemented, "write the function's body"),
        (returns_none, "got None"),
    ],
)
def test_check_anil_adaptation_names_a_mistake(fn, keyword, checker_seed):
    result = check_anil_adaptation(fn, seed=checker_seed)
    assert not result.passed
    assert keyword in result.message


# Meta-SGD: meta_sgd_step(model, params, support_x, support_y, *, loss_fn, inner_lr)


def meta_sgd_loop(model, params, support_x, support_y, *, loss_fn, inner_lr):
    grads = support_grads(model, params, support_x, support_y, loss_fn, list(params))
    return {name: params[name] - inner_lr[name] * grads[name] for name in params}


def meta_sgd_func(model, params, support_x, support_y, *, loss_fn, inner_lr):
    """Correct too: the gradient by torch.func.grad, the step by torch.addcmul."""

    def support_loss(params):
        return loss_fn(functional_call(model, params, (support_x,)), support_y)

    grads = torch.func.grad(support_loss)(params)
    return {
        name: torch.addcmul(tensor, inner_lr[name], grads[name], value=-1) for name, tensor in params.items()
    }


def meta_sgd_package(model, params, support_x, support_y, **options):
    return mb.adapt(model, params, support_x, support_y, inner_steps=1, **options)


def meta_sgd_tensor_mean(model, params, support_x, support_y, *, inner_lr, **options):
    means = {name: rate.mean() for name, rate in inner_lr.items()}
    return meta_sgd_loop(model, params, support_x, support_y, inner_lr=means, **options)


def meta_sgd_one_mean(model, params, support_x, support_y, *, inner_lr, **options):
    alpha = torch.cat([rate.flatten() for rate in inner_lr.values()]).mean()
    return meta_sgd_loop(
        model, params, support_x, support_y, inner_lr=dict.fromkeys(params, alpha), **options
    )


def meta_sgd_detached_rates(model, params, support_x, support_y, *, inner_lr, **options):
    detached = {name: rate.detach() for name, rate in inner_lr.items()}
    return meta_sgd_loop(model, params, support_x, support_y, inner_lr=detached, **options)


def meta_sgd_by_position(model, params, support_x, support_y, *, loss_fn, inner_lr):
    grads = support_grads(model, params, support_x, support_y, loss_fn, list(params))
    return {
        name: tensor - rate * grads[name]
        for (name, tensor), rate in zip(params.items(), inner_lr.values(), strict=True)
    }


def meta_sgd_wrong_sign(model, params, support_x, support_y, *, inner_lr, **options):
    negated = {name: -rate for name, rate in inner_lr.items()}
    return meta_sgd_loop(model, params, support_x, support_y, inner_lr=negated, **options)


def meta_sgd_first_order(model, params, support_x, support_y, *, loss_fn, inner_lr):
    grads = support_grads(model, params, support_x, support_y, loss_fn, list(params), create_graph=False)
    return {name: params[name] - inner_lr[name] * grads[name] for name in params}


def meta_sgd_cross_entropy(model, params, support_x, support_y, *, loss_fn, inner_lr):
    return meta_sgd_loop(model, params, support_x, support_y, loss_fn=F.cross_entropy, inner_lr=inner_lr)


def meta_sgd_no_step(model, params, support_x, support_y, **options):
    return dict(params)


def meta_sgd_changes_rates(model, params, support_x, support_y, *, inner_lr, **options):
    with torch.no_grad():
        inner_lr["head.weight"].clamp_(min=0.2)
    return meta_sgd_loop(model, params, support_x, support_y, inner_lr=inner_lr, **options)


def meta_sgd_returns_a_list(model, params, support_x, support_y, **options):
    return list(meta_sgd_loop(model, params, support_x, support_y, **options).values())


@pytest.mark.parametrize("fn", [meta_sgd_loop, meta_sgd_func, meta_sgd_package])
def test_check_meta_sgd_step_accepts_a_correct_function(fn, checker_seed):
    result = check_meta_sgd_step(fn, seed=checker_seed)
    assert result.passed, result.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (meta_sgd_tensor_mean, "the mean of its rates"),
        (meta_sgd_one_mean, "the mean of all rates"),
        (meta_sgd_detached_rates, "no meta-gradient reaches the rates"),
        (meta_sgd_by_position, "by position"),
        (meta_sgd_wrong_sign, "sign"),
        (meta_sgd_first_order, "create_graph=True"),
        (meta_sgd_cross_entropy, "ignores loss_fn"),
        (meta_sgd_no_step, "returned unchanged"),
        (meta_sgd_changes_rates, "changed its inputs in place (inner_lr['head.weight'])"),
        (meta_sgd_returns_a_list, "got a list"),
        (raises_key_error, "raised KeyError"),
        (not_implemented, "write the function's body"),
    ],
)
def test_check_meta_sgd_step_names_a_mistake(fn, keyword, checker_seed):
    result = check_meta_sgd_step(fn, seed=checker_seed)
    assert not result.passed
    assert keyword in result.message


# MAML++: multi_step_loss(model, params, batch, *, loss_fn, inner_lr, step_weights)


def step_losses(model, params, batch, *, loss_fn, inner_lr, inner_steps, create_graph=True, detach=False):
    """The mean query loss over the tasks after 0, 1, ..., inner_steps steps: a list of scalars."""
    per_task = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi, losses = params, []
        for step in range(inner_steps + 1):
            losses.append(loss_fn(functional_call(model, phi, (query_x,)), query_y))
            if step < inner_steps:
                grads = support_grads(model, phi, support_x, support_y, loss_fn, list(phi), create_graph)
                phi = {name: phi[name] - inner_lr * grads[name] for name in phi}
                phi = (
                    {name: tensor.detach().requires_grad_() for name, tensor in phi.items()}
                    if detach
                    else phi
                )
        per_task.append(torch.stack(losses))
    return list(torch.stack(per_task).mean(dim=0))


def multi_step_loop(model, params, batch, *, loss_fn, inner_lr, step_weights, **options):
    losses = step_losses(
        model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=len(step_weights), **options
    )
    return sum(weight * loss for weight, loss in zip(step_weights, losses[1:], strict=True))


def multi_step_vectorised(model, params, batch, *, loss_fn, inner_lr, step_weights):
    """Correct too: all tasks adapted at once with vmap, the weights as a tensor."""

    def support_loss(phi, x, y):
        return loss_fn(functional_call(model, phi, (x,)), y)

    def query_losses(phi):
        return torch.vmap(support_loss)(phi, batch.query_x, batch.query_y)  # (T,)

    phi = {name: tensor.expand(batch.num_tasks, *tensor.shape) for name, tensor in params.items()}
    scored = []
    for _ in step_weights:
        grads = torch.vmap(torch.func.grad(support_loss))(phi, batch.support_x, batch.support_y)
        phi = {name: phi[name] - inner_lr * grads[name] for name in phi}
        scored.append(query_losses(phi).mean())
    return torch.stack(scored) @ torch.tensor(step_weights, dtype=torch.float64)


def multi_step_package(model, params, batch, *, step_weights, **options):
    return mb.maml_loss(
        model, params, batch, inner_steps=len(step_weights), step_weights=step_weights, **options
    )


def multi_step_last_only(model, params, batch, *, step_weights, **options):
    return multi_step_loop(
        model, params, batch, step_weights=[0.0] * (len(step_weights) - 1) + [1.0], **options
    )


def multi_step_last_weighted(model, params, batch, *, step_weights, **options):
    weights = [0.0] * (len(step_weights) - 1) + [step_weights[-1]]
    return multi_step_loop(model, params, batch, step_weights=weights, **options)


def multi_step_unweighted_mean(model, params, batch, *, step_weights, **options):
    n = len(step_weights)
    return multi_step_loop(model, params, batch, step_weights=[1 / n] * n, **options)


def multi_step_before_each_step(model, params, batch, *, loss_fn, inner_lr, step_weights):
    losses = step_losses(
        model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=len(step_weights)
    )
    return sum(weight * loss for weight, loss in zip(step_weights, losses[:-1], strict=True))


def multi_step_with_start(model, params, batch, *, loss_fn, inner_lr, step_weights):
    losses = step_losses(
        model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=len(step_weights)
    )
    return losses[0] + sum(weight * loss for weight, loss in zip(step_weights, losses[1:], strict=True))


def multi_step_reversed(model, params, batch, *, step_weights, **options):
    return multi_step_loop(model, params, batch, step_weights=step_weights[::-1], **options)


def multi_step_first_order(model, params, batch, **options):
    return multi_step_loop(model, params, batch, create_graph=False, **options)


def multi_step_detached(model, params, batch, **options):
    return multi_step_loop(model, params, batch, detach=True, **options)


def multi_step_sums_tasks(model, params, batch, **options):
    return batch.num_tasks * multi_step_loop(model, params, batch, **options)


def multi_step_mse(model, params, batch, *, loss_fn, **options):
    return multi_step_loop(model, params, batch, loss_fn=F.mse_loss, **options)


def multi_step_wrong_sign(model, params, batch, *, inner_lr, **options):
    return multi_step_loop(model, params, batch, inner_lr=-inner_lr, **options)


def multi_step_per_step(model, params, batch, *, loss_fn, inner_lr, step_weights):
    losses = step_losses(
        model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=len(step_weights)
    )
    return torch.stack(losses[1:]) * torch.tensor(step_weights, dtype=torch.float64)


def multi_step_float(model, params, batch, **options):
    return multi_step_loop(model, params, batch, **options).item()


def multi_step_sorts_weights(model, params, batch, *, step_weights, **options):
    step_weights.sort(reverse=True)
    return multi_step_loop(model, params, batch, step_weights=step_weights[::-1], **options)


def multi_step_changes_batch(model, params, batch, **options):
    batch.query_y.mul_(2.0)
    return multi_step_loop(model, params, batch, **options) / 4


@pytest.mark.parametrize("fn", [multi_step_loop, multi_step_vectorised, multi_step_package])
def test_check_multi_step_loss_accepts_a_correct_function(fn, checker_seed):
    result = check_multi_step_loss(fn, seed=checker_seed)
    assert result.passed, result.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (multi_step_last_only, "last step alone:"),
        (multi_step_last_weighted, "last step alone, weighted"),
        (multi_step_unweighted_mean, "averaged without their weights"),
        (multi_step_before_each_step, "step 0"),
        (multi_step_with_start, "is added"),
        (multi_step_reversed, "reverse order"),
        (multi_step_first_order, "create_graph=True"),
        (multi_step_detached, "no gradient reaches"),
        (multi_step_sums_tasks, "instead of summing"),
        (multi_step_mse, "ignores loss_fn"),
        (multi_step_wrong_sign, "sign"),
        (multi_step_per_step, "one scalar tensor"),
        (multi_step_float, "got a float"),
        (multi_step_sorts_weights, "changed its inputs in place (step_weights)"),
        (multi_step_changes_batch, "changed its inputs in place (query_y)"),
        (raises_key_error, "raised KeyError"),
        (not_implemented, "write the function's body"),
    ],
)
def test_check_multi_step_loss_names_a_mistake(fn, keyword, checker_seed):
    result = check_multi_step_loss(fn, seed=checker_seed)
    assert not result.passed
    assert keyword in result.message


def test_the_multi_step_mistakes_give_distinct_values(checker_seed):
    for seed, (steps, loss_fn) in zip(problem_seeds(checker_seed, len(_PROBLEMS)), _PROBLEMS, strict=True):
        model, batch = sinusoid_problem(seed)
        theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
        weights = _step_weights(seed, steps)
        values = _mistakes(model, theta, batch, loss_fn, weights)
        values["correct"] = mb.maml_loss(
            model, theta, batch, loss_fn=loss_fn, inner_lr=0.03, inner_steps=steps, step_weights=weights
        )
        numbers = sorted(float(value) for value in values.values())
        gaps = [(b - a) / abs(b) for a, b in zip(numbers[:-1], numbers[1:], strict=True)]
        assert min(gaps) > 1e-4, values


# All three

CHECKERS = (check_anil_adaptation, check_meta_sgd_step, check_multi_step_loss)


@pytest.mark.parametrize("checker", CHECKERS)
def test_a_checker_refuses_bad_arguments(checker):
    with pytest.raises(TypeError, match="fn must be a function"):
        checker("not a function")
    with pytest.raises(TypeError, match="seed"):
        checker(returns_none, seed="1")
    with pytest.raises(ValueError, match="seed"):
        checker(returns_none, seed=-1)


@pytest.mark.parametrize(
    ("checker", "fn"),
    [
        (check_anil_adaptation, anil_loop),
        (check_meta_sgd_step, meta_sgd_loop),
        (check_multi_step_loss, multi_step_loop),
    ],
)
def test_a_checker_leaves_the_global_generator_alone(checker, fn):
    state = torch.random.get_rng_state()
    checker(fn)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("checker", "fn"),
    [
        (check_anil_adaptation, anil_loop),
        (check_meta_sgd_step, meta_sgd_loop),
        (check_multi_step_loss, multi_step_loop),
    ],
)
def test_a_checker_names_a_model_changed_in_place(checker, fn):
    def shifts_the_model(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).add_(0.25)
        return fn(model, *args, **kwargs)

    result = checker(shifts_the_model)
    assert not result.passed
    assert "changed its inputs in place (model)" in result.message
