"""The inner loop: adapting parameters to tasks by gradient descent (chapter 4).

One implementation, ``inner_loop``, serves every algorithm. It adapts T tasks at once:
each tensor of the parameters carries a leading task dimension, the T support losses
are computed in one call with ``torch.func.vmap``, and one ``torch.autograd.grad`` of
their sum gives every task's own gradient (task t's loss depends only on task t's
parameters). ``adapt`` is its checked public form for one task.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from .types import LossFn, Params
from .validation import (
    check_inner_loop_args,
    check_support_set,
    params_device,
    raise_if_not_finite,
)


def per_task(params: Params, num_tasks: int) -> Params:
    """``params`` repeated for T tasks without copying: each tensor ``(T, ...)``, a view."""
    return {name: tensor.expand(num_tasks, *tensor.shape) for name, tensor in params.items()}


def task_losses(
    model: nn.Module, params_per_task: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> torch.Tensor:
    """The loss of each task with its own parameters, ``loss_fn(f(x_t; params_t), y_t)``.

    Args:
        params_per_task: tensors ``(T, ...)``, task t's parameters at index t.
        x: ``(T, K, ...)`` inputs; y: ``(T, K, ...)`` targets.

    Returns:
        ``(T,)`` losses.
    """

    def one_task(params, task_x, task_y):
        return loss_fn(functional_call(model, params, (task_x,)), task_y)

    return vmap(one_task, randomness="different")(params_per_task, x, y)


def inner_loop(
    model: nn.Module,
    params_per_task: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: int,
    first_order: bool,
) -> tuple[Params, torch.Tensor]:
    """``steps`` steps of phi_t <- phi_t - inner_lr * grad L_t(phi_t) for T tasks at once.

    Unchecked. The steps are differentiable (second order) unless ``first_order``; when
    no tensor of ``params_per_task`` requires grad, the result is detached.

    Args:
        params_per_task: the starting points, tensors ``(T, ...)`` (see ``per_task``).
        x, y: ``(T, K, ...)`` support inputs and targets.

    Returns:
        The adapted parameters ``(T, ...)``, and the ``(T, steps)`` support losses
        before each step.
    """
    tracks_params = any(tensor.requires_grad for tensor in params_per_task.values())
    losses = []
    with torch.enable_grad():
        # A fresh view under grad mode: the gradients are taken with respect to it, which
        # also works for views made under torch.no_grad() (they have no history of their own).
        adapted = {
            name: tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_()
            for name, tensor in params_per_task.items()
        }
        for _ in range(steps):
            support_losses = task_losses(model, adapted, x, y, loss_fn)  # (T,)
            grads = torch.autograd.grad(
                support_losses.sum(),
                list(adapted.values()),
                create_graph=not first_order,
                allow_unused=True,
                materialize_grads=True,
            )
            adapted = {
                name: tensor - inner_lr * grad
                for (name, tensor), grad in zip(adapted.items(), grads, strict=True)
            }
            losses.append(support_losses.detach())
    if not tracks_params:
        adapted = {name: tensor.detach() for name, tensor in adapted.items()}
    return adapted, torch.stack(losses, dim=1) if losses else x.new_zeros(x.shape[0], 0)


def adapt(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
) -> Params:
    """Adapt ``params`` to one task with ``steps`` plain SGD steps on its support set.

    phi_0 = params, phi_{s+1} = phi_s - inner_lr * grad_phi loss_fn(f_phi_s(x), y).
    The result stays differentiable with respect to ``params`` through every step,
    second-order terms included, unless ``first_order`` (the inner gradients are then
    treated as constants, as in first-order MAML).

    Args:
        model: any module that ``torch.func.functional_call`` can run.
        params: the starting point theta, keyed like ``model.named_parameters()``.
        x: ``(K, ...)`` support inputs of one task.
        y: ``(K, ...)`` support targets.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        inner_lr: alpha, a finite number >= 0.
        steps: number of gradient steps, an integer >= 0; 0 returns ``params``.
        first_order: detach the inner gradients.

    Returns:
        The adapted parameters phi, keyed like ``params``.

    Raises:
        NonFiniteLossError: the support loss became NaN or infinite; the message says
            at which step.
    """
    inner_lr, steps = check_inner_loop_args(model, params, loss_fn, inner_lr, steps)
    check_support_set(x, y, device=params_device(params))
    adapted, support_losses = inner_loop(
        model,
        per_task(params, 1),
        x[None],  # (1, K, ...)
        y[None],
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        steps=steps,
        first_order=first_order,
    )
    adapted = {name: tensor[0] for name, tensor in adapted.items()}
    params_are_finite = torch.stack([torch.isfinite(tensor).all() for tensor in adapted.values()]).all()
    raise_if_not_finite(
        support_losses, params_are_finite[None], inner_lr=inner_lr, final_what="adapted params"
    )
    return adapted
