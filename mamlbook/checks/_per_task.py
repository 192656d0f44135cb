"""The checkers' expected answers, task by task with ``mamlbook.reference``."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..inner import looped
from ..reference import adapt_one_task
from ..types import LossFn, Params


def adapted_per_task(
    model: nn.Module,
    starts: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    inner_steps: int,
    first_order: bool = False,
) -> Params:
    """Task t adapted from ``starts[name][t]`` on ``(x[t], y[t])``: tensors ``(T, ...)``.

    Differentiable with respect to ``starts`` where they require grad; detached where not.
    """
    tracks = any(tensor.requires_grad for tensor in starts.values())
    tasks = []
    for task in range(x.shape[0]):
        start = {name: tensor[task] for name, tensor in starts.items()}
        if not tracks:
            start = {name: tensor.detach().requires_grad_() for name, tensor in start.items()}
        phi = adapt_one_task(
            model,
            start,
            x[task],
            y[task],
            loss_fn=loss_fn,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            first_order=first_order,
        )
        tasks.append(phi if tracks else {name: tensor.detach() for name, tensor in phi.items()})
    return {name: torch.stack([phi[name] for phi in tasks]) for name in starts}


def losses_per_task(
    model: nn.Module, params_per_task: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> torch.Tensor:
    """``(T,)``: the loss of task t at its own parameters ``params_per_task[name][t]``, task by task."""

    def one_task(params: Params, task_x: torch.Tensor, task_y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, params, (task_x,)), task_y)

    return looped(one_task, x, y)(params_per_task)
