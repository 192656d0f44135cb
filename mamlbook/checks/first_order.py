"""Checkers for chapter 5: the reader's Reptile step and first-order MAML gradient.

``check_reptile_step(fn)`` runs ``fn(model, theta, batch, *, loss_fn, inner_lr, inner_steps,
epsilon)``, which must return the new theta, ``theta + epsilon * mean_t (phi_t - theta)``,
as a new dict, leaving ``theta`` unchanged. ``check_fomaml_gradient(fn)`` runs
``fn(model, theta, batch, *, loss_fn, inner_lr, inner_steps)``, which must return the
first-order MAML meta-gradient: the mean over tasks of the query-loss gradient at each
task's adapted parameters. Both compute the answer first, on small float64 problems
drawn from ``seed`` (an MLP and sinusoid tasks, with the mean squared error and then
the Huber loss as ``loss_fn``; seed 0, the default, gives the chapter's), then call the
reader's function on copies of the model, theta and the batch, so that an exception, a
wrong type or an in-place change becomes a hint. When the answer is wrong, they compute
what the classic mistakes would give on the same problem and name the one that
matches: a wrong sign, averaging the adapted parameters instead of the differences, a
sum instead of a mean, one task instead of all, tasks chained one after the other
instead of each starting from theta, epsilon applied twice or not at all, a mean
squared error instead of ``loss_fn``; for the gradient, the second-order terms kept,
the gradient taken at theta or on the support set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import adapt_one_task, maml_loss
from ..types import LossFn, Params, TaskBatch
from ._problems import all_close, copied, leaves, params_hint, problem_seeds, same, sinusoid_problem
from ._student import call_student, check_arguments
from .result import CheckResult

_INNER_LR = 0.05
_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
_REPTILE_PROBLEMS = (
    (2, 0.3, F.mse_loss),
    (3, 0.5, F.mse_loss),
    (2, 0.3, F.huber_loss),
)  # (steps, epsilon, loss)
_FOMAML_PROBLEMS = ((1, F.mse_loss), (2, F.mse_loss), (1, F.huber_loss))  # (steps, loss_fn)
_REPTILE_CALL = "reptile_step(model, theta, batch, loss_fn=..., inner_lr=..., inner_steps=..., epsilon=...)"
_FOMAML_CALL = "fomaml_gradient(model, theta, batch, loss_fn=..., inner_lr=..., inner_steps=...)"

_HINTS = {
    "sequential": (
        "each task starts from theta as moved by the previous tasks: adapt every task from "
        "the same theta, and update theta once, after the loop over tasks"
    ),
    "in_place": "the update is right but theta itself was changed: return new tensors, leave theta as it was",
    "sign": (
        "theta moves away from the adapted parameters: the step goes towards phi, "
        "theta + epsilon * (phi - theta)"
    ),
    "no_difference": (
        "the update averages the adapted parameters themselves: average the differences phi_t - theta, "
        "and add epsilon times that mean to theta"
    ),
    "sum": "the step is T times too large: average the differences over the tasks instead of summing them",
    "one_task": "only one task moves theta: average the differences phi_t - theta over all T tasks",
    "epsilon_twice": "the step is epsilon times too small: epsilon is applied twice",
    "no_epsilon": (
        "the step goes all the way to the mean adapted parameters: multiply the mean difference by epsilon"
    ),
    "second_order": (
        "this is the full MAML meta-gradient, second-order terms included: first-order MAML treats "
        "the adapted parameters as constants (detach phi, or adapt with first_order=True)"
    ),
    "at_theta": "the gradient is taken at theta: take the query-loss gradient at each task's adapted phi",
    "support": "the gradient is of the support loss: take the gradient of the query loss at phi",
    "grad_sum": "the gradient is T times too large: average the tasks' gradients instead of summing them",
    "grad_one_task": "only one task's gradient is returned: average the gradients of all T tasks",
    "grad_sign": "the gradient has the wrong sign: return the gradient itself, not the step -gradient",
    "one_step": "the function takes one inner step whatever inner_steps is: loop over the steps",
    "fixed_loss": "the function ignores loss_fn and uses a mean squared error: call loss_fn",
    "grad_in_place": "the gradient is right but theta itself was changed: leave theta as it was",
}


def _adapted(model: nn.Module, theta: Params, batch: TaskBatch, steps: int, loss_fn: LossFn) -> Params:
    """Each task's phi, adapted from ``theta`` on its support set, first order and detached: ``(T, ...)``."""
    phis = [
        adapt_one_task(
            model,
            leaves(theta),
            support_x,
            support_y,
            loss_fn=loss_fn,
            inner_lr=_INNER_LR,
            inner_steps=steps,
            first_order=True,
        )
        for support_x, support_y in zip(batch.support_x, batch.support_y, strict=True)
    ]
    return {name: torch.stack([phi[name] for phi in phis]).detach() for name in theta}


def _call(
    fn: Callable[..., Params], call: str, model: nn.Module, batch: TaskBatch, **settings
) -> tuple[Params, Params] | CheckResult:
    """Run ``fn`` on copies of the model, of its parameters and of the batch: (the theta it was
    given, its result detached) or a hint."""
    theta = leaves(dict(model.named_parameters()))
    given = copied((model, theta, batch))
    result, hint = call_student(fn, call, *given, inner_lr=_INNER_LR, **settings)
    if hint is not None:
        return hint
    if not same(given[2], batch):
        return CheckResult.hint("the function changed the batch in place: leave its tensors alone")
    if not same(given[0], model):
        return CheckResult.hint("the function changed the model's own weights: leave the model alone")
    if isinstance(result, Mapping) and set(result) == set(theta):
        for name, tensor in result.items():
            if isinstance(tensor, torch.Tensor) and tensor.shape == (batch.num_tasks, *theta[name].shape):
                return CheckResult.hint("the result holds one tensor per task: average over the tasks")
    hint = params_hint(result, theta, "theta")
    if hint is not None:
        return hint
    return given[1], {name: tensor.detach() for name, tensor in result.items()}


def _close(actual: Params, expected: Params) -> bool:
    return all_close(actual, expected, **_TOLERANCE)


def _hint(result: Params, mistakes: list[tuple[str, Params]], otherwise: str) -> CheckResult:
    """The hint of the first mistake that gives ``result``, else ``otherwise``."""
    return CheckResult.hint(
        next((_HINTS[key] for key, wrong in mistakes if _close(result, wrong)), otherwise)
    )


def _reptile_answers(model, batch, steps, epsilon, loss_fn) -> tuple[Params, list[tuple[str, Params]]]:
    """The correct new theta and what each classic mistake would give instead."""
    theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
    phi = _adapted(model, theta, batch, steps, loss_fn)  # (T, ...) each
    diff = {name: phi[name] - theta[name] for name in theta}  # (T, ...) each

    def step(scale: float, update: Callable[[str], torch.Tensor], start: float = 1.0) -> Params:
        return {name: start * theta[name] + scale * update(name) for name in theta}

    moved = dict(theta)
    for task in range(batch.num_tasks):  # each task adapted from theta as moved by the previous ones
        task_phi = _adapted(model, moved, batch.slice_tasks(task, task + 1), steps, loss_fn)
        moved = {name: moved[name] + epsilon * (task_phi[name][0] - moved[name]) for name in theta}
    mistakes = [
        ("sequential", moved),
        ("sign", step(-epsilon, lambda n: diff[n].mean(0))),
        ("no_difference", step(epsilon, lambda n: phi[n].mean(0))),
        ("no_difference", step(epsilon, lambda n: phi[n].mean(0), start=0.0)),
        ("sum", step(epsilon, lambda n: diff[n].sum(0))),
        ("one_task", step(epsilon, lambda n: diff[n][-1])),
        ("one_task", step(epsilon, lambda n: diff[n][0])),
        ("epsilon_twice", step(epsilon**2, lambda n: diff[n].mean(0))),
        ("no_epsilon", step(1.0, lambda n: diff[n].mean(0))),
    ]
    if loss_fn is not F.mse_loss:
        mse_phi = _adapted(model, theta, batch, steps, F.mse_loss)
        mistakes.append(("fixed_loss", step(epsilon, lambda n: (mse_phi[n] - theta[n]).mean(0))))
    return step(epsilon, lambda n: diff[n].mean(0)), mistakes


def check_reptile_step(fn: Callable[..., Params], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``reptile_step(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon)``.

    The function must adapt each task of ``batch`` from ``theta`` (``inner_steps`` SGD steps of
    size ``inner_lr`` on its support set, e.g. with ``mb.adapt``) and return the new theta,
    ``theta + epsilon * mean_t (phi_t - theta)``, as a new dict with ``theta`` unchanged.
    It is run on three float64 problems of 3 tasks: 2 steps with epsilon 0.3 and 3 steps
    with 0.5, both with the mean squared error, then 2 steps with 0.3 and the Huber loss.

    Args:
        fn: the function to check.
        seed: chooses the networks' weights and the tasks; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _REPTILE_CALL, seed)
    seeds = problem_seeds(seed, len(_REPTILE_PROBLEMS))
    for problem_seed, (steps, epsilon, loss_fn) in zip(seeds, _REPTILE_PROBLEMS, strict=True):
        model, batch = sinusoid_problem(problem_seed)
        expected, mistakes = _reptile_answers(model, batch, steps, epsilon, loss_fn)
        ran = _call(fn, _REPTILE_CALL, model, batch, loss_fn=loss_fn, inner_steps=steps, epsilon=epsilon)
        if isinstance(ran, CheckResult):
            return ran
        theta, result = ran
        if not _close(result, expected):
            return _hint(
                result,
                mistakes,
                f"the new theta differs from theta + epsilon * mean_t(phi_t - theta) (inner_steps={steps}, "
                f"epsilon={epsilon}): check that each task is adapted from theta on its support set",
            )
        if not same(theta, dict(model.named_parameters())):
            return CheckResult.hint(_HINTS["in_place"])
    return CheckResult.correct("the new theta equals theta + epsilon * mean_t(phi_t - theta) (2 and 3 steps)")


def _fomaml_answers(model, batch, steps, loss_fn) -> tuple[Params, list[tuple[str, Params]]]:
    """The first-order meta-gradient and what each classic mistake would give instead."""

    def gradient(
        tasks: TaskBatch, inner_steps: int = steps, first_order: bool = True, loss: LossFn = loss_fn
    ) -> Params:
        theta = leaves(dict(model.named_parameters()))
        meta_loss = maml_loss(
            model,
            theta,
            tasks,
            loss_fn=loss,
            inner_lr=_INNER_LR,
            inner_steps=inner_steps,
            first_order=first_order,
        )
        return dict(zip(theta, torch.autograd.grad(meta_loss, list(theta.values())), strict=True))

    expected, tasks = gradient(batch), batch.num_tasks
    on_support = TaskBatch(batch.support_x, batch.support_y, batch.support_x, batch.support_y)
    mistakes = [
        ("second_order", gradient(batch, first_order=False)),
        ("at_theta", gradient(batch, inner_steps=0)),
        ("support", gradient(on_support)),
        ("grad_sum", {name: tasks * grad for name, grad in expected.items()}),
        ("grad_one_task", gradient(batch.slice_tasks(tasks - 1, tasks))),
        ("grad_one_task", gradient(batch.slice_tasks(0, 1))),
        ("grad_sign", {name: -grad for name, grad in expected.items()}),
    ]
    if steps > 1:
        mistakes.append(("one_step", gradient(batch, inner_steps=1)))
    if loss_fn is not F.mse_loss:
        mistakes.append(("fixed_loss", gradient(batch, loss=F.mse_loss)))
    return expected, mistakes


def check_fomaml_gradient(fn: Callable[..., Params], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``fomaml_gradient(model, theta, batch, *, loss_fn, inner_lr, inner_steps)``.

    The function must return, keyed like ``theta``, the first-order MAML meta-gradient:
    the mean over the tasks of ``batch`` of the query-loss gradient at the task's adapted
    parameters phi_t (``inner_steps`` SGD steps from ``theta`` on its support set), the inner
    steps treated as constants, leaving ``theta`` unchanged. It is run on three float64
    problems of 3 tasks (1 and 2 steps with the mean squared error, 1 step with the Huber
    loss) and compared with the gradient of ``mamlbook.maml_loss(..., first_order=True)``.

    Args:
        fn: the function to check.
        seed: chooses the networks' weights and the tasks; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _FOMAML_CALL, seed)
    seeds = problem_seeds(seed, len(_FOMAML_PROBLEMS))
    for problem_seed, (steps, loss_fn) in zip(seeds, _FOMAML_PROBLEMS, strict=True):
        model, batch = sinusoid_problem(problem_seed)
        expected, mistakes = _fomaml_answers(model, batch, steps, loss_fn)
        ran = _call(fn, _FOMAML_CALL, model, batch, loss_fn=loss_fn, inner_steps=steps)
        if isinstance(ran, CheckResult):
            return ran
        theta, result = ran
        if not _close(result, expected):
            return _hint(
                result,
                mistakes,
                f"the gradient differs from the first-order meta-gradient (inner_steps={steps}): "
                "adapt each task from theta on its support set, then take the query-loss gradient at phi",
            )
        if not same(theta, dict(model.named_parameters())):
            return CheckResult.hint(_HINTS["grad_in_place"])
    return CheckResult.correct(
        "the gradient equals first-order MAML's, the query gradient at phi averaged over tasks "
        "(1 and 2 steps)"
    )
