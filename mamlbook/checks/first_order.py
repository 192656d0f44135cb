"""Checkers for chapter 5: the reader's Reptile step and first-order MAML gradient.

``check_reptile_step(fn)`` runs ``fn(model, theta, batch, *, loss_fn, inner_lr, inner_steps,
epsilon)``, which must return the new theta, ``theta + epsilon * mean_t (phi_t - theta)``,
as a new dict, leaving ``theta`` unchanged. ``check_fomaml_gradient(fn)`` runs
``fn(model, theta, batch, *, loss_fn, inner_lr, inner_steps)``, which must return the
first-order MAML meta-gradient: the mean over tasks of the query-loss gradient at each
task's adapted parameters. Both run on small float64 problems (an MLP and seeded
sinusoid tasks) and, when the answer is wrong, compute what the classic mistakes would
give on the same problem and name the one that matches: a wrong sign, averaging the
adapted parameters instead of the differences, a sum instead of a mean, one task
instead of all, tasks chained one after the other instead of each starting from theta,
epsilon applied twice or not at all; for the gradient, the second-order terms kept, the
gradient taken at theta or on the support set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import adapt_one_task, maml_loss
from ..types import Params, TaskBatch
from ._problems import all_close, leaves, sinusoid_problem
from .result import CheckResult

_INNER_LR = 0.05
_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
_REPTILE_PROBLEMS = ((2, 0.3), (3, 0.5))  # (steps, epsilon)
_FOMAML_PROBLEMS = (1, 2)  # steps

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
}


def _adapted(model: nn.Module, theta: Params, batch: TaskBatch, steps: int) -> Params:
    """Each task's phi, adapted from ``theta`` on its support set, first order and detached: ``(T, ...)``."""
    phis = [
        adapt_one_task(
            model,
            leaves(theta),
            support_x,
            support_y,
            loss_fn=F.mse_loss,
            inner_lr=_INNER_LR,
            inner_steps=steps,
            first_order=True,
        )
        for support_x, support_y in zip(batch.support_x, batch.support_y, strict=True)
    ]
    return {name: torch.stack([phi[name] for phi in phis]).detach() for name in theta}


def _call(fn: Callable[..., Params], model: nn.Module, batch: TaskBatch, **settings) -> tuple | CheckResult:
    """Run ``fn`` on leaf copies of the model's parameters: (theta, result) or a hint."""
    theta = leaves(dict(model.named_parameters()))
    try:
        result = fn(model, theta, batch, loss_fn=F.mse_loss, inner_lr=_INNER_LR, **settings)
    except Exception as error:  # any failure of the reader's code is the verdict
        return CheckResult.hint(f"the function raised {type(error).__name__}: {error}")
    if not isinstance(result, dict) or result.keys() != theta.keys():
        return CheckResult.hint(f"the function must return a dict keyed like theta ({sorted(theta)})")
    for name, tensor in result.items():
        if not isinstance(tensor, torch.Tensor):
            return CheckResult.hint(f"result[{name!r}] must be a tensor, got {type(tensor).__name__}")
        if tensor.shape == (batch.num_tasks, *theta[name].shape):
            return CheckResult.hint("the result holds one tensor per task: average over the tasks")
        if tensor.shape != theta[name].shape:
            return CheckResult.hint(
                f"result[{name!r}] has shape {tuple(tensor.shape)}, theta's is {tuple(theta[name].shape)}"
            )
    return theta, {name: tensor.detach() for name, tensor in result.items()}


def _close(actual: Params, expected: Params) -> bool:
    return all_close(actual, expected, **_TOLERANCE)


def _hint(result: Params, mistakes: list[tuple[str, Params]], otherwise: str) -> CheckResult:
    """The hint of the first mistake that gives ``result``, else ``otherwise``."""
    return CheckResult.hint(
        next((_HINTS[key] for key, wrong in mistakes if _close(result, wrong)), otherwise)
    )


def _reptile_answers(model, batch, steps, epsilon) -> tuple[Params, list[tuple[str, Params]]]:
    """The correct new theta and what each classic mistake would give instead."""
    theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
    phi = _adapted(model, theta, batch, steps)  # (T, ...) each
    diff = {name: phi[name] - theta[name] for name in theta}  # (T, ...) each

    def step(scale: float, update: Callable[[str], torch.Tensor], start: float = 1.0) -> Params:
        return {name: start * theta[name] + scale * update(name) for name in theta}

    moved = dict(theta)
    for task in range(batch.num_tasks):  # each task adapted from theta as moved by the previous ones
        task_phi = _adapted(model, moved, batch.slice_tasks(task, task + 1), steps)
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
    return step(epsilon, lambda n: diff[n].mean(0)), mistakes


def check_reptile_step(fn: Callable[..., Params]) -> CheckResult:
    """Check a reader's ``reptile_step(model, theta, batch, *, loss_fn, inner_lr, inner_steps, epsilon)``.

    The function must adapt each task of ``batch`` from ``theta`` (``inner_steps`` SGD steps of
    size ``inner_lr`` on its support set, e.g. with ``mb.adapt``) and return the new theta,
    ``theta + epsilon * mean_t (phi_t - theta)``, as a new dict with ``theta`` unchanged.
    It is run on two float64 problems (3 tasks; 2 steps with epsilon 0.3, 3 steps with 0.5).

    Args:
        fn: the function to check.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function reptile_step(model, theta, batch, ...), got {fn!r}")
    for seed, (steps, epsilon) in enumerate(_REPTILE_PROBLEMS):
        model, batch = sinusoid_problem(seed)
        ran = _call(fn, model, batch, inner_steps=steps, epsilon=epsilon)
        if isinstance(ran, CheckResult):
            return ran
        theta, result = ran
        expected, mistakes = _reptile_answers(model, batch, steps, epsilon)
        if not _close(result, expected):
            return _hint(
                result,
                mistakes,
                f"the new theta differs from theta + epsilon * mean_t(phi_t - theta) (inner_steps={steps}, "
                f"epsilon={epsilon}): check that each task is adapted from theta on its support set",
            )
        if not _close(theta, dict(model.named_parameters())):
            return CheckResult.hint(_HINTS["in_place"])
    return CheckResult.correct("the new theta equals theta + epsilon * mean_t(phi_t - theta) (2 and 3 steps)")


def _fomaml_answers(model, batch, steps) -> tuple[Params, list[tuple[str, Params]]]:
    """The first-order meta-gradient and what each classic mistake would give instead."""

    def gradient(tasks: TaskBatch, inner_steps: int = steps, first_order: bool = True) -> Params:
        theta = leaves(dict(model.named_parameters()))
        loss = maml_loss(
            model,
            theta,
            tasks,
            loss_fn=F.mse_loss,
            inner_lr=_INNER_LR,
            inner_steps=inner_steps,
            first_order=first_order,
        )
        return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))

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
    return expected, mistakes


def check_fomaml_gradient(fn: Callable[..., Params]) -> CheckResult:
    """Check a reader's ``fomaml_gradient(model, theta, batch, *, loss_fn, inner_lr, inner_steps)``.

    The function must return, keyed like ``theta``, the first-order MAML meta-gradient:
    the mean over the tasks of ``batch`` of the query-loss gradient at the task's adapted
    parameters phi_t (``inner_steps`` SGD steps from ``theta`` on its support set), the inner
    steps treated as constants. It is run on two float64 problems (3 tasks; 1 and 2 steps)
    and compared with the gradient of ``mamlbook.maml_loss(..., first_order=True)``.

    Args:
        fn: the function to check.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function fomaml_gradient(model, theta, batch, ...), got {fn!r}")
    for seed, steps in enumerate(_FOMAML_PROBLEMS):
        model, batch = sinusoid_problem(seed)
        ran = _call(fn, model, batch, inner_steps=steps)
        if isinstance(ran, CheckResult):
            return ran
        _, result = ran
        expected, mistakes = _fomaml_answers(model, batch, steps)
        if not _close(result, expected):
            return _hint(
                result,
                mistakes,
                f"the gradient differs from the first-order meta-gradient (inner_steps={steps}): "
                "adapt each task from theta on its support set, then take the query-loss gradient at phi",
            )
    return CheckResult.correct(
        "the gradient equals first-order MAML's, the query gradient at phi averaged over tasks "
        "(1 and 2 steps)"
    )
