"""Checkers for chapter 3: scoring a learner on many tasks, and the 95 % interval of the mean."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..reference import adapt_one_task
from ..types import Params, TaskBatch
from ._problems import leaves, sinusoid_problem
from .result import CheckResult

_Z95 = 1.96  # the 97.5 % quantile of the standard normal distribution
_STEPS = 3  # fine-tuning steps asked of score_tasks


def _as_tensor(value: object) -> torch.Tensor | None:
    """``value`` (a tensor, an array, a number or a list of scalar tensors) as a float64
    tensor; None when it is none of these."""
    try:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = torch.stack([item.detach() for item in value])  # a list of per-task tensors
        return torch.as_tensor(value, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):  # e.g. a string, or tensors of several elements
        return None


def _column_hint(value: torch.Tensor | None, name: str, length: int) -> CheckResult | None:
    """A hint when ``value`` is not one number per column of the ``(T, length)`` input."""
    if value is None:
        return CheckResult.hint(f"the {name} must be a tensor or an array")
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


def check_mean_and_ci95(mean_and_ci95: Callable[[torch.Tensor], tuple[object, object]]) -> CheckResult:
    """Check ``mean_and_ci95(per_task_losses) -> (mean, half_width)`` (chapter 3).

    ``per_task_losses`` is ``(T, S)``: the loss of T tasks after each of S numbers of
    steps. The function must return two ``(S,)`` tensors or arrays: the mean over tasks
    and the half-width of its 95 % confidence interval, 1.96 s / sqrt(T) with s the
    sample standard deviation over tasks. It must not change its input.

    Args:
        mean_and_ci95: the function to check.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.
    """
    if not callable(mean_and_ci95):
        raise TypeError(f"mean_and_ci95 must be a function, got {type(mean_and_ci95).__name__}")
    generator = torch.Generator().manual_seed(0)
    for num_tasks, num_steps in ((8, 3), (30, 2)):
        losses = torch.rand(num_tasks, num_steps, generator=generator, dtype=torch.float64) * 4
        given = losses.clone()
        try:
            result = mean_and_ci95(given)
        except Exception as error:  # any failure of the reader's code becomes a hint
            return CheckResult.hint(f"your function raised {type(error).__name__}: {error}")
        if not torch.equal(given, losses):
            return CheckResult.hint("your function changed its input in place; compute new tensors")
        if not isinstance(result, tuple) or len(result) != 2:
            return CheckResult.hint("return a pair (mean, half_width)")
        mean, half_width = _as_tensor(result[0]), _as_tensor(result[1])
        for value, name in ((mean, "mean"), (half_width, "half-width")):
            hint = _column_hint(value, name, num_steps)
            if hint is not None:
                return hint
        if not torch.allclose(mean, losses.mean(dim=0), rtol=1e-6):
            return CheckResult.hint("the mean should be the average over tasks, dim 0 of the (T, S) input")
        if not torch.allclose(half_width, _Z95 * losses.std(dim=0) / math.sqrt(num_tasks), rtol=1e-6):
            return CheckResult.hint(_interval_hint(half_width, losses))
    return CheckResult.correct("the mean over tasks and the 95 % half-width 1.96 s / sqrt(T) are right")


def _scores(
    model: nn.Module,
    params: Params,
    *,
    adapt_on: tuple,
    score_on: tuple,
    lr: float,
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
            loss_fn=F.mse_loss,
            inner_lr=lr,
            inner_steps=steps,
            first_order=True,
        )
        scores.append(F.mse_loss(functional_call(model, phi, (score_x,)), score_y).detach())
    return torch.stack(scores)


def _scoring_hint(scores: torch.Tensor, model: nn.Module, params: Params, batch: TaskBatch, lr: float) -> str:
    """Name the mistake in wrong per-task scores by comparing them with usual wrong answers."""
    support, query = batch[:2], batch[2:]
    mistakes = {  # hint: what the mistake changes in the right computation
        "you scored on the support set; score on the query set": {"score_on": support},
        "you fine-tuned on the query set; fine-tune on the support set": {"adapt_on": query},
        "support and query are swapped": {"adapt_on": query, "score_on": support},
        "the params were not fine-tuned: take `steps` steps first": {"steps": 0},
        "wrong sign: step against the gradient": {"lr": -lr},
        "one step too few: take exactly `steps` steps": {"steps": _STEPS - 1},
        "one step too many: take exactly `steps` steps": {"steps": _STEPS + 1},
        "start every task from params, not from the previous task's result": {"chained": True},
    }
    scores_with = functools.partial(_scores, model, params, adapt_on=support, score_on=query, lr=lr)
    return next(
        (
            hint
            for hint, change in mistakes.items()
            if torch.allclose(scores, scores_with(**change), rtol=1e-6)
        ),
        "the scores differ from the query loss after `steps` SGD steps on each task's support set",
    )


def check_fine_tune_scores(score_tasks: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``score_tasks(model, params, batch, loss_fn, lr, steps) -> (T,) losses`` (chapter 3).

    For each task of ``batch``, starting from ``params``, the function must take
    ``steps`` plain gradient steps of size ``lr`` on the task's support set, then return
    the loss on its query set: one value per task, params left unchanged.

    Args:
        score_tasks: the function to check; it is called with keyword arguments
            ``loss_fn``, ``lr`` and ``steps``.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.
    """
    if not callable(score_tasks):
        raise TypeError(f"score_tasks must be a function, got {type(score_tasks).__name__}")
    model, batch = sinusoid_problem(0, hidden=(8,), num_tasks=4, n_query=7)
    params = leaves(dict(model.named_parameters()))
    before = {name: tensor.detach().clone() for name, tensor in params.items()}
    lr = 0.05
    try:
        scores = score_tasks(model, params, batch, loss_fn=F.mse_loss, lr=lr, steps=_STEPS)
    except Exception as error:  # any failure of the reader's code becomes a hint
        return CheckResult.hint(f"your function raised {type(error).__name__}: {error}")
    if not all(torch.equal(params[name].detach(), tensor) for name, tensor in before.items()):
        return CheckResult.hint("params changed during the call: adapt copies, not the caller's tensors")
    result = _as_tensor(scores)
    if result is None or result.shape != (batch.num_tasks,):
        shape = "not a tensor" if result is None else f"shape {tuple(result.shape)}"
        return CheckResult.hint(
            f"return one loss per task, a tensor of shape (T,) = ({batch.num_tasks},), not their mean "
            f"over tasks or a loss per point; got {shape}"
        )
    expected = _scores(model, params, adapt_on=batch[:2], score_on=batch[2:], lr=lr)
    if not torch.allclose(result, expected, rtol=1e-6):
        return CheckResult.hint(_scoring_hint(result, model, params, batch, lr))
    return CheckResult.correct(
        "each task is fine-tuned on its support set from params and scored on its query set"
    )
