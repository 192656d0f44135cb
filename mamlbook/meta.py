"""The MAML meta-objective, vectorised over tasks (chapter 4).

For T tasks with support sets (x_s, y_s) and query sets (x_q, y_q),

    maml_loss(theta) = 1/T sum_t L(f_{phi_t}(x_q,t), y_q,t),   phi_t = adapt(theta, x_s,t, y_s,t),

and its gradient with respect to theta is the meta-gradient, second-order terms
included unless ``first_order``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .explicit import explicit_maml_loss
from .inner import inner_step, per_task, rate_at_step, task_losses
from .types import InnerLR, LossFn, Params, TaskBatch
from .validation import (
    check_inner_loop_args,
    check_step_weights,
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
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    adapt_only: str | Sequence[str] | None = None,
    step_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean query loss over the T tasks of ``batch``, each adapted from ``params``.

    All tasks are adapted at once by the one inner step (``mamlbook.inner.inner_step``),
    vectorised over tasks; ``backward()`` on the result puts the
    meta-gradient on the tensors of ``params`` (and on learned rates in ``inner_lr``).
    For a network of ``nn.Linear`` and ``nn.ReLU`` layers with ``F.mse_loss`` and numeric
    rates, and neither ``adapt_only`` nor ``step_weights``, the same meta-loss and
    meta-gradient come from their closed form (``mamlbook.explicit``), without
    autograd's graph of the inner gradient.

    Args:
        model: any module that ``torch.func.functional_call`` can run.
        params: theta, keyed like ``model.named_parameters()``; with
            ``params = dict(model.named_parameters())`` the meta-gradient lands on the
            model's own parameters.
        batch: T tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha, a finite number >= 0, or learned rates (``mamlbook.types.InnerLR``).
        steps: inner gradient steps per task, an integer >= 0.
        first_order: detach the inner gradients (first-order MAML).
        adapt_only: adapt only these parameters, by name or module prefix (``"head"``
            for ANIL); None adapts all.
        step_weights: MAML++'s multi-step loss: ``steps`` weights w_s, and the meta-loss
            is sum_s w_s * (mean query loss after step s + 1). None scores the final
            step alone (w = 0, ..., 0, 1) without computing the others.

    Returns:
        A scalar tensor, the meta-loss.

    Raises:
        NonFiniteLossError: a task's loss became NaN or infinite; the message names the
            task and the inner step.
    """
    inner_lr, steps, adapt_only = check_inner_loop_args(
        model, params, loss_fn, inner_lr, steps, adapt_only=adapt_only
    )
    batch = check_task_batch(batch, device=params_device(params))
    # The weight of the query loss after each number of inner steps that counts.
    if step_weights is None:
        weight_after = {steps: 1.0}
    else:
        weight_after = {step + 1: w for step, w in enumerate(check_step_weights(step_weights, steps)) if w}

    def meta_loss_by_autograd(theta: Params) -> torch.Tensor:
        return _meta_loss(
            model,
            theta,
            batch,
            loss_fn=loss_fn,
            inner_lr=inner_lr,
            steps=steps,
            first_order=first_order,
            adapt_only=adapt_only,
            weight_after=weight_after,
        )

    if step_weights is None and adapt_only is None:
        meta_loss = explicit_maml_loss(
            model,
            params,
            batch,
            loss_fn=loss_fn,
            step_rates=[rate_at_step(inner_lr, step) for step in range(steps)],
            first_order=first_order,
            meta_loss_by_autograd=meta_loss_by_autograd,
        )
        # A non-finite meta-loss is diagnosed by the general path, which names the task and step.
        if meta_loss is not None and bool(torch.isfinite(meta_loss)):
            return meta_loss
    return meta_loss_by_autograd(params)


def _meta_loss(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int,
    first_order: bool,
    adapt_only: Sequence[str] | None,
    weight_after: dict[int, float],
) -> torch.Tensor:
    """``maml_loss`` of checked arguments through autograd, for any model: ``weight_after``
    maps each scored number of inner steps to the weight of its mean query loss."""
    adapted, support_losses = per_task(params, batch.num_tasks), []
    query_losses, weighted_means = [], []  # (T,) and a scalar for each scored step
    for step in range(steps + 1):
        if step > 0:
            adapted, losses = inner_step(  # (T, ...) each, (T,)
                model,
                adapted,
                batch.support_x,
                batch.support_y,
                loss_fn=loss_fn,
                step_lr=rate_at_step(inner_lr, step - 1),
                first_order=first_order,
                adapt_only=adapt_only,
            )
            support_losses.append(losses)
        if step in weight_after:
            query_losses.append(task_losses(model, adapted, batch.query_x, batch.query_y, loss_fn))
            weight, mean = weight_after[step], query_losses[-1].mean()
            weighted_means.append(mean if weight == 1.0 else weight * mean)
    meta_loss = weighted_means[0] if len(weighted_means) == 1 else torch.stack(weighted_means).sum()
    # A non-finite support loss makes every later value non-finite, so one check of the
    # meta-loss suffices on the common path; the diagnosis runs only when it fails.
    if not bool(torch.isfinite(meta_loss)):
        raise_if_not_finite(
            torch.stack(support_losses, dim=1)
            if support_losses
            else batch.query_x.new_zeros(batch.num_tasks, 0),
            torch.isfinite(torch.stack(query_losses)).all(dim=0),
            inner_lr=inner_lr,
            final_what="query loss",
            query_sets=(batch.query_x, batch.query_y),
        )
    return meta_loss
