"""Checkers for chapter 3: scoring a learner on many tasks, and the 95 % interval of the mean.

Each checker computes the expected answers first, on problems drawn from ``seed`` (0, the
default, gives the chapter's; a grader may pass another), then calls the reader's
function on copies of the inputs, so that neither an exception, a wrong type nor an
in-place change can crash it or alter what it compares with. When the answers differ,
it computes what the classic mistakes would give and names the one that matches:

- ``check_mean_and_ci95``: the mean or the spread over the wrong axis, the population
  standard deviation, no square root, a division by T, one standard error instead of
  1.96, the variance, the input changed in place;
- ``check_fine_tune_scores``: scoring on the support set, fine-tuning on the query set
  (or both swapped), no fine-tuning, a wrong sign, one step too few or too many, tasks
  chained from the previous task's result, a mean squared error instead of ``loss_fn``
  (it is run with the MSE and with the Huber loss), params changed in place.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..reference import adapt_one_task
from ..types import LossFn, Params, TaskBatch
from ._problems import as_float64, copied, describe, leaves, problem_seeds, same, sinusoid_problem
from ._student import call_student, check_arguments
from .result import CheckResult

_Z95 = 1.96  # the 97.5 % quantile of the standard normal distribution
_STEPS = 3  # fine-tuning steps asked of score_tasks
_LR = 0.05  # the learning rate of score_tasks' steps
_SCORE_LOSSES = (F.mse_loss, F.huber_loss)  # one problem with each loss_fn
_INTERVAL_CALL = "mean_and_ci95(per_task_losses)"
_SCORE_CALL = "score_tasks(model, params, batch, loss_fn=..., lr=..., steps=...)"


def _column_hint(value: torch.Tensor | None, name: str, length: int) -> CheckResult | None:
    """A hint when ``value`` is not one number per column of the ``(T, length)`` input."""
    if value is None:
        return CheckResult.hint(f"the {name} must be a tensor or an array of numbers")
    if value.shape != (length,):
        return CheckResult.hint(
            f"the {name} has shape {tuple(value.shape)}, expected ({length},): the input is (T, S) "
            "with tasks along dim 0; reduce over dim 0, the tasks, to get one value per column"
        )
    return None


def _interval_hint(half_width: torch.Tensor, losses: torch.Tensor) -> str:
    """Name the mistake in a wrong half-width by comparing it with usual wrong answers."""
    num_tasks, std = losses.shape[0], losses.std(dim=0)
    mistakes = [
        (_Z95 * std, "divide the standard deviation by sqrt(T): the interval is about the mean of T tasks"),
        (_Z95 * std / num_tasks, "divide by sqrt(T), not by T"),
        (
            _Z95 * losses.std(dim=0, correction=0) / math.sqrt(num_tasks),
            "use the sample standard deviation (divide by T - 1, not T)",
        ),
        (std / math.sqrt(num_tasks), "a 95 % interval spans 1.96 standard errors on each side"),
        (_Z95 * std**2 / math.sqrt(num_tasks), "use the standard deviation, not the variance"),
    ]
    return next(
        (hint for wrong, hint in mistakes if torch.allclose(half_width, wrong, rtol=1e-6)),
        "the half-width should be 1.96 * (sample standard deviation over tasks) / sqrt(T)",
    )


def check_mean_and_ci95(
    mean_and_ci95: Callable[[torch.Tensor], tuple[object, object]], *, seed: int = 0
) -> CheckResult:
    """Check ``mean_and_ci95(per_task_losses) -> (mean, half_width)`` (chapter 3).

    ``per_task_losses`` is ``(T, S)``: the loss of T tasks after each of S numbers of
    steps. The function must return two ``(S,)`` tensors or arrays: the mean over tasks
    and the half-width of its 95 % confidence interval, 1.96 s / sqrt(T) with s the
    sample standard deviation over tasks. It must not change its input. It is run on two
    tables of losses drawn uniformly from [0, 4), of shapes (8, 3) and (30, 2).

    Args:
        mean_and_ci95: the function to check.
        seed: chooses the losses; 0 gives the chapter's.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.

    Raises:
        TypeError: ``mean_and_ci95`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(mean_and_ci95, _INTERVAL_CALL, seed)
    generator = torch.Generator().manual_seed(seed)
    for num_tasks, num_steps in ((8, 3), (30, 2)):
        losses = torch.rand(num_tasks, num_steps, generator=generator, dtype=torch.float64) * 4
        expected_mean = losses.mean(dim=0)  # the answers first, on the checker's own tensor
        expected_half_width = _Z95 * losses.std(dim=0) / math.sqrt(num_tasks)
        given = losses.clone()
        result, hint = call_student(mean_and_ci95, _INTERVAL_CALL, given)
        if hint is not None:
            return hint
        if not same(given, losses):
            return CheckResult.hint("your function changed its input in place; compute new tensors")
        if not isinstance(result, tuple) or len(result) != 2:
            return CheckResult.hint(f"return a pair (mean, half_width), got {describe(result)}")
        mean, half_width = as_float64(result[0]), as_float64(result[1])
        for value, name in ((mean, "mean"), (half_width, "half-width")):
            hint = _column_hint(value, name, num_steps)
            if hint is not None:
                return hint
        if not torch.allclose(mean, expected_mean, rtol=1e-6):
            return CheckResult.hint("the mean should be the average over tasks, dim 0 of the (T, S) input")
        if not torch.allclose(half_width, expected_half_width, rtol=1e-6):
            return CheckResult.hint(_interval_hint(half_width, losses))
    return CheckResult.correct("the mean over tasks and the 95 % half-width 1.96 s / sqrt(T) are right")


def _scores(
    model: nn.Module,
    params: Params,
    *,
    adapt_on: tuple,
    score_on: tuple,
    loss_fn: LossFn,
    lr: float = _LR,
    steps: int = _STEPS,
    chained: bool = False,
) -> torch.Tensor:
    """``(T,)`` loss on ``score_on`` of each task after ``steps`` SGD steps on ``adapt_on``, from
    ``params``, or with ``chained`` (a mistake) from the previous task's adapted parameters."""
    phi, scores = params, []
    for adapt_x, adapt_y, score_x, score_y in zip(*adapt_on, *score_on, strict=True):
        start = leaves(phi if chained else params)
        phi = adapt_one_task(
            model,
            start,
            adapt_x,
            adapt_y,
            loss_fn=loss_fn,
            inner_lr=lr,
            inner_steps=steps,
            first_order=True,
        )
        scores.append(loss_fn(functional_call(model, phi, (score_x,)), score_y).detach())
    return torch.stack(scores)


def _scoring_hint(
    scores: torch.Tensor, model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn
) -> str:
    """Name the mistake in wrong per-task scores by comparing them with usual wrong answers."""
    support, query = batch[:2], batch[2:]
    mistakes = {  # hint: what the mistake changes in the right computation
        "you scored on the support set; score on the query set": {"score_on": support},
        "you fine-tuned on the query set; fine-tune on the support set": {"adapt_on": query},
        "support and query are swapped": {"adapt_on": query, "score_on": support},
        "the params were not fine-tuned: take `steps` steps first": {"steps": 0},
        "wrong sign: step against the gradient": {"lr": -_LR},
        "one step too few: take exactly `steps` steps": {"steps": _STEPS - 1},
        "one step too many: take exactly `steps` steps": {"steps": _STEPS + 1},
        "start every task from params, not from the previous task's result": {"chained": True},
    }
    if loss_fn is not F.mse_loss:
        mistakes["the function ignores loss_fn and uses a mean squared error: call loss_fn"] = {
            "loss_fn": F.mse_loss
        }
    scores_with = functools.partial(_scores, model, params, adapt_on=support, score_on=query, loss_fn=loss_fn)
    return next(
        (
            hint
            for hint, change in mistakes.items()
            if torch.allclose(scores, scores_with(**change), rtol=1e-6)
        ),
        "the scores differ from the query loss after `steps` SGD steps on each task's support set",
    )


def _check_scores_problem(
    score_tasks: Callable[..., torch.Tensor], seed: int, loss_fn: LossFn
) -> CheckResult | None:
    """None when ``score_tasks`` gives this problem's scores, else the hint for its mistake."""
    model, batch = sinusoid_problem(seed, hidden=(8,), num_tasks=4, n_query=7)
    params = leaves(dict(model.named_parameters()))
    expected = _scores(model, params, adapt_on=batch[:2], score_on=batch[2:], loss_fn=loss_fn)
    given = copied((model, params, batch))
    scores, hint = call_student(score_tasks, _SCORE_CALL, *given, loss_fn=loss_fn, lr=_LR, steps=_STEPS)
    if hint is not None:
        return hint
    if not same(given[1], params):
        return CheckResult.hint("params changed during the call: adapt copies, not the caller's tensors")
    if not same(given[0], model):
        return CheckResult.hint(
            "the model's own weights changed: adapt copies of params, leave the model alone"
        )
    if not same(given[2], batch):
        return CheckResult.hint("the batch changed during the call: leave its tensors alone")
    result = as_float64(scores)
    if result is None or result.shape != (batch.num_tasks,):
        shape = describe(scores) if result is None else f"shape {tuple(result.shape)}"
        return CheckResult.hint(
            f"return one loss per task, a tensor of shape (T,) = ({batch.num_tasks},), not their mean "
            f"over tasks or a loss per point; got {shape}"
        )
    if not torch.allclose(result, expected, rtol=1e-6):
        return CheckResult.hint(_scoring_hint(result, model, params, batch, loss_fn))
    return None


def check_fine_tune_scores(score_tasks: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check ``score_tasks(model, params, batch, loss_fn, lr, steps) -> (T,) losses`` (chapter 3).

    For each task of ``batch``, starting from ``params``, the function must take
    ``steps`` plain gradient steps of size ``lr`` on the task's support set, then return
    the loss on its query set: one value per task, params left unchanged. It is run on
    two float64 problems (a network with one hidden layer of 8 units, 4 sinusoid tasks
    of 5 support and 7 query points, 3 steps of size 0.05), one with the mean squared
    error as ``loss_fn`` and one with the Huber loss.

    Args:
        score_tasks: the function to check; it is called with keyword arguments
            ``loss_fn``, ``lr`` and ``steps``.
        seed: chooses the networks' weights and the tasks; 0 gives the chapter's.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.

    Raises:
        TypeError: ``score_tasks`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(score_tasks, _SCORE_CALL, seed)
    for problem_seed, loss_fn in zip(problem_seeds(seed, len(_SCORE_LOSSES)), _SCORE_LOSSES, strict=True):
        hint = _check_scores_problem(score_tasks, problem_seed, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "each task is fine-tuned on its support set from params and scored on its query set"
    )
