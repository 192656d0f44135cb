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

from ..inner import per_task
from ..models import MLP
from ..tasks import Sinusoid
from ..types import Params, TaskBatch
from ._per_task import adapted_per_task, losses_per_task
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


def _problem(seed: int) -> tuple[nn.Module, TaskBatch]:
    """A 1-8-8-1 MLP and 3 sinusoid tasks (5 support, 6 query points), float64, seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MLP(1, (8, 8)).double()
    batch = Sinusoid().sample(3, 5, 6, generator=torch.Generator().manual_seed(seed))
    return model, TaskBatch(*(tensor.double() for tensor in batch))


def _adapted(model: nn.Module, starts: Params, batch: TaskBatch, steps: int) -> Params:
    """Each task adapted from ``starts`` (tensors ``(T, ...)``), first order, detached."""
    starts = {name: tensor.detach() for name, tensor in starts.items()}
    return adapted_per_task(
        model,
        starts,
        batch.support_x,
        batch.support_y,
        loss_fn=F.mse_loss,
        inner_lr=_INNER_LR,
        inner_steps=steps,
        first_order=True,
    )


def _call(fn: Callable[..., Params], model: nn.Module, batch: TaskBatch, **settings) -> tuple | CheckResult:
    """Run ``fn`` on leaf copies of the model's parameters: (theta, result) or a hint."""
    theta = {name: tensor.detach().clone().requires_grad_() for name, tensor in model.named_parameters()}
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
    return all(bool(torch.allclose(actual[name], expected[name], **_TOLERANCE)) for name in expected)


def _match(result: Params, candidates: list[tuple[str, Params]]) -> CheckResult | None:
    """The hint of the first candidate that ``result`` equals, or None."""
    return next((CheckResult.hint(_HINTS[key]) for key, wrong in candidates if _close(result, wrong)), None)


def _reptile_answers(model, batch, steps, epsilon) -> tuple[Params, list[tuple[str, Params]]]:
    """The correct new theta and what each classic mistake would give instead."""
    theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
    phi = _adapted(model, per_task(theta, batch.num_tasks), batch, steps)  # (T, ...) each
    diff = {name: phi[name] - theta[name] for name in theta}  # (T, ...) each

    def step(scale: float, update: Callable[[str], torch.Tensor], start: float = 1.0) -> Params:
        return {name: start * theta[name] + scale * update(name) for name in theta}

    moved = dict(theta)
    for task in range(batch.num_tasks):  # each task adapted from theta as moved by the previous ones
        task_phi = _adapted(model, per_task(moved, 1), batch.slice_tasks(task, task + 1), steps)
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
        model, batch = _problem(seed)
        ran = _call(fn, model, batch, inner_steps=steps, epsilon=epsilon)
        if isinstance(ran, CheckResult):
            return ran
        theta, result = ran
        expected, mistakes = _reptile_answers(model, batch, steps, epsilon)
        changed = not _close(
            {name: tensor.detach() for name, tensor in theta.items()}, dict(model.named_parameters())
        )
        if _close(result, expected):
            if changed:
                return CheckResult.hint(_HINTS["in_place"])
            continue
        hint = _match(result, mistakes)
        if hint is not None:
            return hint
        return CheckResult.hint(
            f"the new theta differs from theta + epsilon * mean_t(phi_t - theta) (inner_steps={steps}, "
            f"epsilon={epsilon}): check that each task is adapted from theta on its support set"
        )
    return CheckResult.correct("the new theta equals theta + epsilon * mean_t(phi_t - theta) (2 and 3 steps)")


def _query_grads(model: nn.Module, points: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """Each task's loss gradient at its own parameters ``points`` (tensors ``(T, ...)``)."""
    leaves = {name: tensor.detach().requires_grad_() for name, tensor in points.items()}
    grads = torch.autograd.grad(losses_per_task(model, leaves, x, y, F.mse_loss).sum(), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def _fomaml_answers(model, batch, steps) -> tuple[Params, list[tuple[str, Params]]]:
    """The first-order meta-gradient and what each classic mistake would give instead."""
    theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
    starts = per_task(theta, batch.num_tasks)
    phi = _adapted(model, starts, batch, steps)
    per_task_grads = _query_grads(model, phi, batch.query_x, batch.query_y)  # (T, ...) each
    expected = {name: grad.mean(0) for name, grad in per_task_grads.items()}
    leaves = {name: tensor.clone().requires_grad_() for name, tensor in theta.items()}
    exact_phi = adapted_per_task(
        model,
        per_task(leaves, batch.num_tasks),
        batch.support_x,
        batch.support_y,
        loss_fn=F.mse_loss,
        inner_lr=_INNER_LR,
        inner_steps=steps,
    )
    exact = losses_per_task(model, exact_phi, batch.query_x, batch.query_y, F.mse_loss).mean()
    mistakes = [
        ("second_order", dict(zip(leaves, torch.autograd.grad(exact, list(leaves.values())), strict=True))),
        (
            "at_theta",
            {n: g.mean(0) for n, g in _query_grads(model, starts, batch.query_x, batch.query_y).items()},
        ),
        (
            "support",
            {n: g.mean(0) for n, g in _query_grads(model, phi, batch.support_x, batch.support_y).items()},
        ),
        ("grad_sum", {name: grad.sum(0) for name, grad in per_task_grads.items()}),
        ("grad_one_task", {name: grad[-1] for name, grad in per_task_grads.items()}),
        ("grad_one_task", {name: grad[0] for name, grad in per_task_grads.items()}),
        ("grad_sign", {name: -grad for name, grad in expected.items()}),
    ]
    if steps > 1:
        one_step = _query_grads(model, _adapted(model, starts, batch, 1), batch.query_x, batch.query_y)
        mistakes.append(("one_step", {name: grad.mean(0) for name, grad in one_step.items()}))
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
        model, batch = _problem(seed)
        ran = _call(fn, model, batch, inner_steps=steps)
        if isinstance(ran, CheckResult):
            return ran
        _, result = ran
        expected, mistakes = _fomaml_answers(model, batch, steps)
        if _close(result, expected):
            continue
        hint = _match(result, mistakes)
        if hint is not None:
            return hint
        return CheckResult.hint(
            f"the gradient differs from the first-order meta-gradient (inner_steps={steps}): adapt each task "
            "from theta on its support set, then take the query-loss gradient at phi"
        )
    return CheckResult.correct(
        "the gradient equals first-order MAML's, the query gradient at phi averaged over tasks "
        "(1 and 2 steps)"
    )
