"""The MAML meta-objective, vectorised over tasks (chapter 4).

For T tasks with support sets (x_s, y_s) and query sets (x_q, y_q),

    maml_loss(theta) = 1/T sum_t L(f_{phi_t}(x_q,t), y_q,t),   phi_t = adapt(theta, x_s,t, y_s,t),

and its gradient with respect to theta is the meta-gradient, second-order terms
included unless ``first_order``.
"""

from __future__ import annotations

import torch
from torch import nn

from .inner import inner_loop, per_task, task_losses
from .types import LossFn, Params, TaskBatch
from .validation import (
    check_inner_loop_args,
    check_task_batch,
    params_device,
    raise_if_not_finite,
)


def maml_loss(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
) -> torch.Tensor:
    """Mean query loss over the T tasks of ``batch``, each adapted from ``params``.

    All tasks are adapted at once by the one inner loop (``mamlbook.inner.inner_loop``),
    vectorised over tasks; ``backward()`` on the result puts the
    meta-gradient on the tensors of ``params``.

    Args:
        model: any module that ``torch.func.functional_call`` can run.
        params: theta, keyed like ``model.named_parameters()``; with
            ``params = dict(model.named_parameters())`` the meta-gradient lands on the
            model's own parameters.
        batch: T tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha, a finite number >= 0.
        steps: inner gradient steps per task, an integer >= 0.
        first_order: detach the inner gradients (first-order MAML).

    Returns:
        A scalar tensor, the meta-loss.

    Raises:
        NonFiniteLossError: a task's loss became NaN or infinite; the message names the
            task and the inner step.
    """
    inner_lr, steps = check_inner_loop_args(model, params, loss_fn, inner_lr, steps)
    batch = check_task_batch(batch, device=params_device(params))

    adapted, support_losses = inner_loop(  # (T, ...) each, (T, steps)
        model,
        per_task(params, batch.num_tasks),
        batch.support_x,
        batch.support_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        steps=steps,
        first_order=first_order,
    )
    query_losses = task_losses(model, adapted, batch.query_x, batch.query_y, loss_fn)  # (T,)
    raise_if_not_finite(
        support_losses,
        torch.isfinite(query_losses),
        inner_lr=inner_lr,
        final_what="query loss",
        query_sets=(batch.query_x, batch.query_y),
    )
    return query_losses.mean()
