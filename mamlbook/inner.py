"""The inner loop: adapting parameters to tasks by gradient descent (chapter 4).

One implementation, ``inner_step`` (looped by ``inner_loop``), serves every algorithm.
It adapts T tasks at once: each tensor of the parameters carries a leading task
dimension, the T support losses are computed in one call with ``torch.func.vmap``, and
one ``torch.autograd.grad`` of their sum gives every task's own gradient (task t's loss
depends only on task t's parameters). ``adapt`` is its checked public form for one
task. MAML's successors are options of the same step (chapter 7): ANIL adapts only
some parameters (``adapt_only``), Meta-SGD and MAML++ use learned rates (``inner_lr``
as tensors per parameter, and per step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .batched import batched_task_losses
from .types import InnerLR, LossFn, Params, StepLR
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

    Models built of known layers (``mamlbook.batched``) run as batched tensor operations;
    any other model is vmapped over the tasks with ``torch.func.functional_call``.

    Args:
        params_per_task: tensors ``(T, ...)``, task t's parameters at index t.
        x: ``(T, K, ...)`` inputs; y: ``(T, K, ...)`` targets.

    Returns:
        ``(T,)`` losses.
    """
    losses = batched_task_losses(model, params_per_task, x, y, loss_fn)  # None: not a known model
    if losses is not None:
        return losses

    def one_task(params, task_x, task_y):
        return loss_fn(functional_call(model, params, (task_x,)), task_y)

    return vmap(one_task, randomness="different")(params_per_task, x, y)


def rate_at_step(inner_lr: InnerLR, step: int) -> StepLR:
    """The rate of inner step ``step`` (from 0): its entry of a per-step list, else ``inner_lr``."""
    return inner_lr[step] if isinstance(inner_lr, (list, tuple)) else inner_lr


def inner_step(
    model: nn.Module,
    params_per_task: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    step_lr: StepLR,
    first_order: bool,
    adapt_only: Sequence[str] | None = None,
) -> tuple[Params, torch.Tensor]:
    """One step phi_t <- phi_t - step_lr * grad L_t(phi_t) for T tasks at once. Unchecked.

    The step is differentiable (second order) unless ``first_order``; when neither the
    params nor the rates require grad, the result is detached.

    Args:
        params_per_task: tensors ``(T, ...)``, task t's parameters at index t (see ``per_task``).
        x, y: ``(T, K, ...)`` support inputs and targets.
        step_lr: a number, or a tensor per adapted name (a scalar or the parameter's shape).
        adapt_only: the names of the parameters to update (None: all); the others pass
            through unchanged, and the meta-gradient still reaches them.

    Returns:
        The updated parameters ``(T, ...)``, and the ``(T,)`` support losses before the step.
    """
    learned_rates = step_lr.values() if isinstance(step_lr, Mapping) else ()
    tracks = any(tensor.requires_grad for tensor in (*params_per_task.values(), *learned_rates))
    names = list(params_per_task) if adapt_only is None else adapt_only
    with torch.enable_grad():
        # A fresh view under grad mode: the gradients are taken with respect to it, which
        # also works for views made under torch.no_grad() (they have no history of their own).
        current = dict(params_per_task)
        for name in names:
            tensor = current[name]
            current[name] = (
                tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_()
            )
        support_losses = task_losses(model, current, x, y, loss_fn)  # (T,)
        grads = torch.autograd.grad(
            support_losses.sum(),
            [current[name] for name in names],
            create_graph=not first_order,
            allow_unused=True,
            materialize_grads=True,
        )
        for name, grad in zip(names, grads, strict=True):
            rate = step_lr[name] if isinstance(step_lr, Mapping) else step_lr
            current[name] = current[name] - rate * grad
    if not tracks:
        current = {name: tensor.detach() for name, tensor in current.items()}
    return current, support_losses.detach()


def inner_loop(
    model: nn.Module,
    params_per_task: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int,
    first_order: bool,
    adapt_only: Sequence[str] | None = None,
) -> tuple[Params, torch.Tensor]:
    """``steps`` calls of ``inner_step``: T tasks adapted at once. Unchecked.

    Args:
        params_per_task: the starting points, tensors ``(T, ...)`` (see ``per_task``).
        x, y: ``(T, K, ...)`` support inputs and targets.
        inner_lr: one rate for every step, or a list of one per step (``InnerLR``).
        adapt_only: the names of the parameters to update (None: all).

    Returns:
        The adapted parameters ``(T, ...)``, and the ``(T, steps)`` support losses
        before each step.
    """
    adapted, losses = params_per_task, []
    for step in range(steps):
        adapted, support_losses = inner_step(
            model,
            adapted,
            x,
            y,
            loss_fn=loss_fn,
            step_lr=rate_at_step(inner_lr, step),
            first_order=first_order,
            adapt_only=adapt_only,
        )
        losses.append(support_losses)
    if not losses:
        return dict(params_per_task), x.new_zeros(x.shape[0], 0)
    return adapted, torch.stack(losses, dim=1)


def adapt(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR,
    steps: int,
    first_order: bool = False,
    adapt_only: str | Sequence[str] | None = None,
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
        inner_lr: alpha, a finite number >= 0; or learned rates, a tensor per adapted
            parameter (Meta-SGD), or a list of ``steps`` rates, one per step (MAML++);
            see ``mamlbook.types.InnerLR``.
        steps: number of gradient steps, an integer >= 0; 0 returns ``params``.
        first_order: detach the inner gradients.
        adapt_only: adapt only these parameters, by name or module prefix (``"head"``
            for ANIL); the others keep their values. None adapts all.

    Returns:
        The adapted parameters phi, keyed like ``params``.

    Raises:
        NonFiniteLossError: the support loss became NaN or infinite; the message says
            at which step.
    """
    inner_lr, steps, adapt_only = check_inner_loop_args(
        model, params, loss_fn, inner_lr, steps, adapt_only=adapt_only
    )
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
        adapt_only=adapt_only,
    )
    adapted = {name: tensor[0] for name, tensor in adapted.items()}
    params_are_finite = torch.stack([torch.isfinite(tensor).all() for tensor in adapted.values()]).all()
    raise_if_not_finite(
        support_losses, params_are_finite[None], inner_lr=inner_lr, final_what="adapted params"
    )
    return adapted
