"""Evaluating meta-learned parameters on new tasks (chapter 4)."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import nn

from .inner import inner_loop, per_task, task_losses
from .types import LossFn, Params, TaskBatch
from .validation import (
    check_inner_loop_args,
    check_int,
    check_task_batch,
    params_device,
)


class EvaluationResult(NamedTuple):
    """Query loss after 0, 1, ..., n inner steps over T tasks.

    Attributes:
        per_task: ``(T, n + 1)`` query loss of each task after each number of steps.
        mean: ``(n + 1,)`` mean over tasks.
        ci95: ``(n + 1,)`` half-width of the 95 % confidence interval of the mean,
            1.96 * standard deviation / sqrt(T).
    """

    per_task: torch.Tensor
    mean: torch.Tensor
    ci95: torch.Tensor

    def summary(self, steps: tuple[int, ...] | None = None, digits: int = 2) -> str:
        """Lines ``after s steps: mean ± ci95``, rounded; all steps when ``steps`` is None."""
        steps = range(len(self.mean)) if steps is None else steps
        return "\n".join(
            f"after {s:2d} steps: {self.mean[s]:.{digits}f} ± {self.ci95[s]:.{digits}f}" for s in steps
        )


def _query_loss_curves(
    model: nn.Module, theta: Params, tasks: TaskBatch, loss_fn: LossFn, inner_lr: float, steps: int
) -> torch.Tensor:
    """``(T, steps + 1)`` query loss of each task after 0..steps first-order inner steps."""
    adapted, curve = per_task(theta, tasks.num_tasks), []
    for step in range(steps + 1):
        with torch.no_grad():
            curve.append(task_losses(model, adapted, tasks.query_x, tasks.query_y, loss_fn))
        if step < steps:
            adapted, _ = inner_loop(
                model,
                adapted,
                tasks.support_x,
                tasks.support_y,
                loss_fn=loss_fn,
                inner_lr=inner_lr,
                steps=1,
                first_order=True,
            )
    return torch.stack(curve, dim=1)


def evaluate(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: int,
    chunk_size: int = 1000,
) -> EvaluationResult:
    """Adapt ``params`` to each task of ``batch`` and record the query loss after each step.

    The same inner loop as in training, run without building a graph for theta.
    Tasks whose loss diverges are kept (their loss is NaN or inf) and reported with a
    warning, since divergence at evaluation is itself a result.

    Args:
        model: the network.
        params: theta.
        batch: T new tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha used for fine-tuning.
        steps: n, the largest number of inner steps to evaluate.
        chunk_size: tasks adapted at once, to bound memory.

    Returns:
        The per-task losses and their mean and 95 % interval after 0..n steps.
    """
    inner_lr, steps = check_inner_loop_args(model, params, loss_fn, inner_lr, steps)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    batch = check_task_batch(batch, device=params_device(params))
    theta = {name: tensor.detach() for name, tensor in params.items()}
    per_task_losses = torch.cat(
        [
            _query_loss_curves(
                model, theta, batch.slice_tasks(start, start + chunk_size), loss_fn, inner_lr, steps
            )
            for start in range(0, batch.num_tasks, chunk_size)
        ]
    ).cpu()  # (T, steps + 1)
    diverged = int((~torch.isfinite(per_task_losses)).any(dim=1).sum())
    if diverged:
        warnings.warn(
            f"{diverged} of {batch.num_tasks} tasks reached a non-finite query loss within "
            f"{steps} inner steps at inner_lr={inner_lr}; their losses are kept as NaN/inf",
            RuntimeWarning,
            stacklevel=2,
        )
    mean = per_task_losses.mean(dim=0)
    std = per_task_losses.std(dim=0) if batch.num_tasks > 1 else torch.zeros_like(mean)
    return EvaluationResult(per_task_losses, mean, 1.96 * std / math.sqrt(batch.num_tasks))
