"""Every checker survives whatever the reader's function does: it raises, returns the wrong
type, dtype or shape, or changes its inputs in place. The checker answers with a hint (never
an exception, never printed output), and an input changed in place cannot alter the answer
it compares with, since the checker computes that first, on its own tensors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch

import mamlbook as mb
from mamlbook.checks import CheckResult
from mamlbook.checks._problems import problem_seeds

# ---- one correct function per checker, and one that changes an input in place first


def descent(grad_fn, w0, lr, steps):
    iterates = [np.asarray(w0, dtype=float)]
    for _ in range(steps):
        iterates.append(iterates[-1] - lr * grad_fn(iterates[-1]))
    return np.stack(iterates)


def descent_doubling_w0(grad_fn, w0, lr, steps):
    w0 *= 2.0
    return descent(grad_fn, w0, lr, steps)


def line_gradient(params, x, y):
    residuals = params[0] * x + params[1] - y
    return np.array([np.mean(2 * residuals * x), np.mean(2 * residuals)])


def line_gradient_shifting_y(params, x, y):
    y += 1.0
    return line_gradient(params, x, y)


def sgd_step(model, params, x, y, loss_fn, lr):
    loss = loss_fn(torch.func.functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def sgd_step_scaling_x(model, params, x, y, loss_fn, lr):
    x.mul_(2.0)
    return sgd_step(model, params, x, y, loss_fn, lr)


def interval(losses):
    return losses.mean(dim=0), 1.96 * losses.std(dim=0) / math.sqrt(losses.shape[0])


def interval_doubling_losses(losses):
    losses.mul_(2.0)
    return interval(losses)


def scores(model, params, batch, loss_fn, lr, steps):
    return mb.evaluate(model, params, batch, loss_fn=loss_fn, inner_lr=lr, inner_steps=steps).per_task[:, -1]


def scores_zeroing_query_y(model, params, batch, loss_fn, lr, steps):
    batch.query_y.zero_()
    return scores(model, params, batch, loss_fn, lr, steps)


def maml_loss_doubling_query_y(model, params, batch, **settings):
    batch.query_y.mul_(2.0)
    return mb.maml_loss(model, params, batch, **settings)


def reptile_step(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon):
    adapted = [
        mb.adapt(model, theta, x, y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=inner_steps)
        for x, y in zip(batch.support_x, batch.support_y, strict=True)
    ]
    return {
        name: (
            theta[name] + epsilon * torch.stack([phi[name] - theta[name] for phi in adapted]).mean(0)
        ).detach()
        for name in theta
    }


def reptile_step_shifting_support_y(model, theta, batch, **settings):
    batch.support_y.add_(1.0)
    return reptile_step(model, theta, batch, **settings)


def fomaml_gradient(model, theta, batch, **settings):
    loss = mb.maml_loss(model, theta, batch, first_order=True, **settings)
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


def fomaml_gradient_scaling_query_x(model, theta, batch, **settings):
    batch.query_x.mul_(2.0)
    return fomaml_gradient(model, theta, batch, **settings)


def returns_doubling_rewards(rewards, discount):
    rewards.mul_(2.0)
    return mb.rl.discounted_returns(rewards, discount)


def surrogate_doubling_advantages(log_probs, advantages, mask):
    advantages.mul_(2.0)
    return mb.rl.surrogate(log_probs, advantages, mask)


def policy_gradient_step(policy, params, trajectories, *, inner_lr, discount):
    loss = mb.rl.PolicyGradientLoss(policy, trajectories, discount)
    per_task = {name: tensor[None] for name, tensor in params.items()}
    grads = torch.autograd.grad(loss(per_task).sum(), list(params.values()), create_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def policy_gradient_step_doubling_rewards(policy, params, trajectories, **settings):
    trajectories.rewards.mul_(2.0)
    return policy_gradient_step(policy, params, trajectories, **settings)


def sample_episode(labels, n_way, k_shot, n_query, generator):
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=generator)[:n_way]]
    images = [(labels == c).nonzero().squeeze(1) for c in chosen]
    drawn = torch.stack([i[torch.randperm(len(i), generator=generator)[: k_shot + n_query]] for i in images])
    y = torch.arange(n_way)  # drawn is (N, K + q): row y holds the images of label y
    return (
        drawn[:, :k_shot].flatten(),
        y.repeat_interleave(k_shot),
        drawn[:, k_shot:].flatten(),
        y.repeat_interleave(n_query),
    )


def sample_episode_flipping_labels(labels, n_way, k_shot, n_query, generator):
    labels.copy_(labels.flip(0))
    return sample_episode(labels, n_way, k_shot, n_query, generator)


def accuracy(logits, labels):
    return (logits.argmax(-1) == labels).double().mean(-1)


def accuracy_centring_logits(logits, labels):
    logits.sub_(logits.mean(-1, keepdim=True))
    return accuracy(logits, labels)


def anil_adapt(model, params, support_x, support_y, *, head, **options):
    return mb.adapt(model, params, support_x, support_y, adapt_only=head, **options)


def anil_adapt_scaling_support_x(model, params, support_x, support_y, **options):
    support_x.mul_(2)
    return anil_adapt(model, params, support_x, support_y, **options)


def meta_sgd_step(model, params, support_x, support_y, **options):
    return mb.adapt(model, params, support_x, support_y, inner_steps=1, **options)


def meta_sgd_step_scaling_support_x(model, params, support_x, support_y, **options):
    support_x.mul_(2)
    return meta_sgd_step(model, params, support_x, support_y, **options)


def multi_step_loss(model, params, batch, *, step_weights, **options):
    return mb.maml_loss(
        model, params, batch, inner_steps=len(step_weights), step_weights=step_weights, **options
    )


def multi_step_loss_doubling_query_y(model, params, batch, **settings):
    batch.query_y.mul_(2)
    return multi_step_loss(model, params, batch, **settings)


def changing_the_model(correct: Callable) -> Callable:
    """``correct`` after shifting the model's (or the policy's) own first weight, its first argument."""

    def fn(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).add_(0.25)
        return correct(model, *args, **kwargs)

    return fn


class Checker(NamedTuple):
    check: Callable[..., CheckResult]
    correct: Callable
    returns: str  # "array", "tensor", "pair" (a tuple of tensors) or "params" (a dict of tensors)
    mutating: tuple[Callable, ...]  # right answers computed from inputs changed in place


CHECKERS = {
    "gradient_descent": Checker(mb.checks.check_gradient_descent, descent, "array", (descent_doubling_w0,)),
    "linear_regression_gradient": Checker(
        mb.checks.check_linear_regression_gradient, line_gradient, "array", (line_gradient_shifting_y,)
    ),
    "sgd_step": Checker(
        mb.checks.check_sgd_step, sgd_step, "params", (sgd_step_scaling_x, changing_the_model(sgd_step))
    ),
    "mean_and_ci95": Checker(mb.checks.check_mean_and_ci95, interval, "pair", (interval_doubling_losses,)),
    "fine_tune_scores": Checker(
        mb.checks.check_fine_tune_scores,
        scores,
        "tensor",
        (scores_zeroing_query_y, changing_the_model(scores)),
    ),
    "maml_loss": Checker(
        mb.checks.check_maml_loss,
        mb.maml_loss,
        "tensor",
        (maml_loss_doubling_query_y, changing_the_model(mb.maml_loss)),
    ),
    "reptile_step": Checker(
        mb.checks.check_reptile_step,
        reptile_step,
        "params",
        (reptile_step_shifting_support_y, changing_the_model(reptile_step)),
    ),
    "fomaml_gradient": Checker(
        mb.checks.check_fomaml_gradient,
        fomaml_gradient,
        "params",
        (fomaml_gradient_scaling_query_x, changing_the_model(fomaml_gradient)),
    ),
    "discounted_returns": Checker(
        mb.checks.check_discounted_returns, mb.rl.discounted_returns, "tensor", (returns_doubling_rewards,)
    ),
    "policy_gradient_surrogate": Checker(
        mb.checks.check_policy_gradient_surrogate, mb.rl.surrogate, "tensor", (surrogate_doubling_advantages,)
    ),
    "sample_episode": Checker(
        mb.checks.check_sample_episode, sample_episode, "pair", (sample_episode_flipping_labels,)
    ),
    "accuracy": Checker(mb.checks.check_accuracy, accuracy, "tensor", (accuracy_centring_logits,)),
    "anil_adaptation": Checker(
        mb.checks.check_anil_adaptation,
        anil_adapt,
        "params",
        (anil_adapt_scaling_support_x, changing_the_model(anil_adapt)),
    ),
    "meta_sgd_step": Checker(
        mb.checks.check_meta_sgd_step,
        meta_sgd_step,
        "params",
        (meta_sgd_step_scaling_support_x, changing_the_model(meta_sgd_step)),
    ),
    "multi_step_loss": Checker(
        mb.checks.check_multi_step_loss,
        multi_step_loss,
        "tensor",
        (multi_step_loss_doubling_query_y, changing_the_model(multi_step_loss)),
    ),
    "policy_gradient_step": Checker(
        mb.checks.check_policy_gradient_step,
        policy_gradient_step,
        "params",
        (policy_gradient_step_doubling_rewards, changing_the_model(policy_gradient_step)),
    ),
}


def test_every_public_checker_is_covered():
    public = {name.removeprefix("check_") for name in mb.checks.__all__ if name.startswith("check_")}
    assert public == set(CHECKERS)
    assert {mb.checks.__dict__[f"check_{name}"] for name in CHECKERS} == {c.check for c in CHECKERS.values()}


# ---- what the reader's function may do wrong, whatever it computes


def raising(error: Exception) -> Callable:
    def fn(*args, **kwargs):
        raise error

    return fn


def returning(value: object) -> Callable:
    def fn(*args, **kwargs):
        return value

    return fn


def transformed(correct: Callable, transform: Callable) -> Callable:
    def fn(*args, **kwargs):
        return transform(correct(*args, **kwargs))

    return fn


def each(transform: Callable, kind: str) -> Callable:
    """``transform`` applied to every array of a result of ``kind``."""
    if kind == "params":
        return lambda result: {name: transform(value) for name, value in result.items()}
    if kind == "pair":
        return lambda result: tuple(transform(value) for value in result)
    return transform


def complex_of(value):
    return value.astype(complex) if isinstance(value, np.ndarray) else value.to(torch.complex128)


WRONG_VALUES = {  # name: transform of a right result of each kind
    "an extra axis": lambda kind: each(lambda value: value[..., None], kind),
    "a Python float": lambda kind: each(lambda value: float(value.sum()), kind),
    "complex numbers": lambda kind: each(complex_of, kind),
    "NaN": lambda kind: each(lambda value: value * float("nan"), kind),
}


def wrong_functions(name: str) -> list[tuple[str, Callable]]:
    checker = CHECKERS[name]
    functions = [
        ("raises NotImplementedError", raising(NotImplementedError)),
        ("raises ValueError", raising(ValueError("not written"))),
        ("returns None", returning(None)),
        ("returns a string", returning("42")),
        ("returns a CheckResult", returning(CheckResult.correct("trust me"))),
    ]
    functions += [
        (f"returns {what}", transformed(checker.correct, make(checker.returns)))
        for what, make in WRONG_VALUES.items()
    ]
    if checker.returns == "params":
        functions += [
            ("returns float32", transformed(checker.correct, each(lambda value: value.float(), "params"))),
            ("returns a list", transformed(checker.correct, lambda result: list(result.values()))),
            ("drops a key", transformed(checker.correct, lambda result: dict(list(result.items())[1:]))),
            ("adds a key", transformed(checker.correct, lambda result: {**result, "extra": torch.zeros(1)})),
        ]
    return functions


CASES = [(name, what, fn) for name in CHECKERS for what, fn in wrong_functions(name)]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(("name", "what", "fn"), CASES, ids=[f"{name}-{what}" for name, what, _ in CASES])
def test_a_checker_turns_any_wrong_function_into_a_hint(name, what, fn, capsys):
    verdict = CHECKERS[name].check(fn)

    assert isinstance(verdict, CheckResult)
    assert not verdict.passed, verdict.message
    assert verdict.message
    assert "def " not in verdict.message  # a hint, not the solution's code
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_a_checker_tells_a_stub_to_write_its_body(name):
    verdict = CHECKERS[name].check(raising(NotImplementedError))
    assert "raised NotImplementedError: write the function's body" in verdict.message


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_a_checker_reports_the_readers_exception(name):
    verdict = CHECKERS[name].check(raising(ValueError("not written")))
    assert "raised ValueError: not written" in verdict.message


@pytest.mark.parametrize("name", [name for name, c in CHECKERS.items() if c.returns == "params"])
def test_a_checker_names_a_dtype_other_than_params(name):
    checker = CHECKERS[name]
    verdict = checker.check(transformed(checker.correct, each(lambda value: value.float(), "params")))
    assert "dtype torch.float32" in verdict.message, verdict.message


CHANGES = [(name, fn) for name, checker in CHECKERS.items() for fn in checker.mutating]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(("name", "fn"), CHANGES, ids=[f"{name}-{fn.__name__}" for name, fn in CHANGES])
def test_an_input_changed_in_place_cannot_change_the_expected_answer(name, fn, checker_seed, capsys):
    """The function returns the right answer of the inputs it changed: a checker that compared
    with an answer computed from those inputs after the call would accept it."""
    checker = CHECKERS[name]

    verdict = checker.check(fn, seed=checker_seed)

    assert not verdict.passed
    assert "changed" in verdict.message, verdict.message
    assert capsys.readouterr() == ("", "")
    assert checker.check(checker.correct, seed=checker_seed).passed


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_a_checker_validates_its_own_arguments(name):
    checker = CHECKERS[name]
    with pytest.raises(TypeError, match="must be a function"):
        checker.check("not a function")
    with pytest.raises(TypeError, match="seed"):
        checker.check(checker.correct, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        checker.check(checker.correct, seed=-1)


# ---- seeds: the same seed gives the same problems, another seed other ones


def recorded_problem(check: Callable[..., CheckResult], seed: int) -> list[np.ndarray]:
    """Every array of the first problem that ``check`` hands to the reader's function with ``seed``:
    its tensors and arrays, its dicts' and batches' tensors, its modules' weights."""
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        raise NotImplementedError

    check(record, seed=seed)
    arrays = []

    def collect(value):
        if isinstance(value, torch.nn.Module):
            collect(value.state_dict())
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            arrays.append(value.detach().numpy().copy() if isinstance(value, torch.Tensor) else value.copy())
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, tuple):
            for item in value:
                collect(item)

    collect(calls[0])
    return arrays


def same_arrays(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, second, strict=True)
    )


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_a_seed_chooses_the_problems(name):
    check = CHECKERS[name].check
    chapter, again = recorded_problem(check, 0), recorded_problem(check, 0)
    others = [recorded_problem(check, seed) for seed in (1, 2024)]

    assert same_arrays(chapter, again)
    assert not same_arrays(chapter, others[0])
    assert not same_arrays(chapter, others[1])
    assert not same_arrays(others[0], others[1])


def test_problem_seeds_keep_the_chapters_and_do_not_overlap():
    assert problem_seeds(0, 3) == [0, 1, 2]
    assert set(problem_seeds(1, 3)).isdisjoint(problem_seeds(0, 3))
    assert set(problem_seeds(1, 3)).isdisjoint(problem_seeds(2, 3))
