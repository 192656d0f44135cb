"""Evaluating meta-learned parameters on new tasks (chapter 4)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_int, check_loss_fn, check_params, check_task_batch, params_device, params_dtype
from .backends import Backend, Problem, choose_backend
from .inner import InnerLoop, adaptation, check_task_losses, per_task
from .types import InnerLR, LossFn, Params, TaskBatch


class EvaluationResult(NamedTuple):
    """Query loss (or another metric) after 0, 1, ..., n inner steps over T tasks.

    Attributes:
        per_task: ``(T, n + 1)`` query score of each task after each number of steps.
        mean: ``(n + 1,)`` mean over tasks.
        ci95: ``(n + 1,)`` half-width of the 95 % confidence interval of the mean,
            1.96 * standard deviation / sqrt(T).
    """

    per_task: torch.Tensor
    mean: torch.Tensor
    ci95: torch.Tensor

    @classmethod
    def of(cls, per_task: torch.Tensor) -> EvaluationResult:
        """The result of the ``(T, n + 1)`` scores ``per_task``: their mean and 95 % interval
        over tasks (an interval of 0 for one task)."""
        num_tasks = per_task.shape[0]
        mean = per_task.mean(dim=0)
        std = per_task.std(dim=0) if num_tasks > 1 else torch.zeros_like(mean)
        return cls(per_task, mean, 1.96 * std / math.sqrt(num_tasks))

    def summary(self, steps: tuple[int, ...] | None = None, digits: int = 2) -> str:
        """Lines ``after s steps: mean ± ci95``, rounded; all steps when ``steps`` is None."""
        steps = range(len(self.mean)) if steps is None else steps
        return "\n".join(
            f"after {s:2d} steps: {self.mean[s]:.{digits}f} ± {self.ci95[s]:.{digits}f}" for s in steps
        )


def _query_curves(
    chosen: Backend, problem: Problem, tasks: TaskBatch, metric: LossFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, steps + 1)`` query metric of each task after 0..steps first-order inner steps,
    and ``(T,)`` whether each task's support losses stayed finite."""
    support_losses = chosen.task_losses(problem, tasks.support_x, tasks.support_y, problem.loss_fn)
    query_scores = chosen.task_losses(problem, tasks.query_x, tasks.query_y, metric)
    start = per_task(problem.params, tasks.num_tasks)
    with torch.no_grad():
        curve = [check_task_losses(query_scores(start), tasks.num_tasks)]
    support_is_finite = torch.ones(tasks.num_tasks, dtype=torch.bool, device=tasks.support_x.device)
    for step in adaptation(support_losses, start, problem.loop):
        with torch.no_grad():
            curve.append(query_scores(step.adapted))
        support_is_finite &= torch.isfinite(step.support_losses)
    return torch.stack(curve, dim=1), support_is_finite


def evaluate(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR | None = None,
    inner_steps: int | None = None,
    metric: LossFn | None = None,
    adapt_only: str | Sequence[str] | None = None,
    inner_loop: InnerLoop | None = None,
    chunk_size: int = 1000,
    backend: str | Backend = "auto",
) -> EvaluationResult:
    """Adapt ``params`` to each task of ``batch`` and record a query score after each step.

    The same inner loop as in training, run without building a graph for theta.
    Tasks whose loss diverges are kept (their loss is NaN or inf) and reported with a
    warning, since divergence at evaluation is itself a result.

    Args:
        model: the network.
        params: theta.
        batch: T new tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task, the loss the
            inner steps descend.
        inner_lr: alpha used for fine-tuning, or learned rates (``mamlbook.types.InnerLR``;
            a per-step list needs ``inner_steps`` entries).
        inner_steps: n, the largest number of inner steps to evaluate.
        metric: ``metric(prediction, target) -> scalar`` recorded on the query set, e.g.
            ``mamlbook.tasks.classification_accuracy``; None records ``loss_fn``.
        adapt_only: adapt only these parameters (ANIL); None adapts all.
        inner_loop: ``inner_lr``, ``inner_steps`` and ``adapt_only`` as one ``InnerLoop`` (for
            example ``TrainingHistory.inner_loop``), instead of them.
        chunk_size: tasks adapted at once, to bound memory.
        backend: how the losses are evaluated (``mamlbook.backends``).

    Returns:
        The per-task query scores and their mean and 95 % interval after 0..n steps.
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    loop = InnerLoop.resolve(
        params, inner_loop, inner_lr=inner_lr, inner_steps=inner_steps, adapt_only=adapt_only
    )
    if metric is not None and not callable(metric):
        raise TypeError(f"metric must be None or callable as metric(prediction, target), got {metric!r}")
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    batch = check_task_batch(batch, device=params_device(params), dtype=params_dtype(params))
    theta = {name: tensor.detach() for name, tensor in params.items()}
    # The steps are first order: theta is detached, so no graph is wanted through them.
    loop = dataclasses.replace(loop, first_order=True)
    problem = Problem("evaluate", model, theta, loss_fn, loop, inputs=(batch.support_x, batch.query_x))
    chosen = choose_backend(backend, problem)
    curves, finite_support = zip(
        *(
            _query_curves(
                chosen,
                problem,
                batch.slice_tasks(start, start + chunk_size),
                loss_fn if metric is None else metric,
            )
            for start in range(0, batch.num_tasks, chunk_size)
        ),
        strict=True,
    )
    per_task_scores = torch.cat(curves).cpu()  # (T, steps + 1)
    diverged = int(((~torch.isfinite(per_task_scores)).any(dim=1) | ~torch.cat(finite_support).cpu()).sum())
    if diverged:
        if metric is None:
            what, kept = "query loss", "their losses are kept as NaN/inf"
        else:
            what, kept = "loss", "their scores are kept as they came"
        warnings.warn(
            f"{diverged} of {batch.num_tasks} tasks reached a non-finite {what} within "
            f"{loop.steps} inner steps at {loop.describe_rates()}; {kept}",
            RuntimeWarning,
            stacklevel=2,
        )
    return EvaluationResult.of(per_task_scores)
