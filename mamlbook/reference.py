"""MAML as a plain loop over tasks and steps: the reference every backend is tested against.

This is the code chapter 4 writes and shows: one task at a time, one step at a time,
each gradient by ``torch.autograd.grad``. It is slow and checks nothing, on purpose;
the tests, the benchmarks and the checkers compare the package with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .types import InnerLR, LossFn, Params, TaskBatch


def adapt_one_task(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    inner_steps: int,
    first_order: bool = False,
    adapt_only: Sequence[str] | None = None,
) -> Params:
    """phi after ``inner_steps`` SGD steps on one task's ``(x, y)``, ``(K, ...)`` each.

    ``inner_lr`` is a number, or learned rates (``rate_of``); ``adapt_only`` lists the
    full names of the parameters to adapt (None: all). The result is differentiable
    with respect to ``params``, through the inner gradients unless ``first_order``.
    """
    adapted = dict(params)
    names = list(params) if adapt_only is None else list(adapt_only)
    for step in range(inner_steps):
        loss = loss_fn(functional_call(model, adapted, (x,)), y)
        grads = torch.autograd.grad(loss, [adapted[name] for name in names], create_graph=not first_order)
        for name, grad in zip(names, grads, strict=True):
            adapted[name] = adapted[name] - rate_of(inner_lr, step, name) * grad
    return adapted


def maml_loss(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    inner_steps: int,
    first_order: bool = False,
    adapt_only: Sequence[str] | None = None,
    step_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """The mean over tasks of the query loss after adaptation: a scalar.

    With ``step_weights`` (MAML++), the sum over s of w_s times the query loss after
    s + 1 steps; each scored number of steps is adapted for anew.
    """
    weight_after = {inner_steps: 1.0} if step_weights is None else dict(enumerate(step_weights, start=1))
    total = 0.0
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        for count, weight in weight_after.items():
            adapted = adapt_one_task(
                model,
                params,
                support_x,
                support_y,
                loss_fn=loss_fn,
                inner_lr=inner_lr,
                inner_steps=count,
                first_order=first_order,
                adapt_only=adapt_only,
            )
            total = total + weight * loss_fn(functional_call(model, adapted, (query_x,)), query_y)
    return total / batch.num_tasks


def rate_of(inner_lr: InnerLR, step: int, name: str) -> float | torch.Tensor:
    """The rate of parameter ``name`` at inner step ``step`` (from 0), in any form of ``InnerLR``:
    one number, a tensor per name (Meta-SGD), or a list of either per step (MAML++)."""
    rate = inner_lr[step] if isinstance(inner_lr, (list, tuple)) else inner_lr
    return rate[name] if isinstance(rate, Mapping) else rate
