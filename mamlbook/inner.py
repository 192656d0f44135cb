"""The inner loop: adapting parameters to one task by gradient descent (chapter 4).

One implementation, ``inner_loop``, serves every algorithm. It is written with
``torch.func`` so that it runs on one task as it is and on T tasks at once under
``torch.func.vmap``; ``adapt`` is its checked public form for one task.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from .types import LossFn, Params
from .validation import (
    check_inner_lr,
    check_int,
    check_loss_fn,
    check_params,
    check_support_set,
    params_device,
    raise_if_not_finite,
)


def task_loss(
    model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> torch.Tensor:
    """``loss_fn(f_params(x), y)``: the loss of ``model`` run with ``params`` on one set."""
    return loss_fn(functional_call(model, params, (x,)), y)


def inner_loop(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: int,
    first_order: bool,
) -> tuple[Params, torch.Tensor]:
    """``steps`` steps of phi <- phi - inner_lr * grad L(phi), from phi = params.

    Unchecked and free of data-dependent control flow, so it can run under ``vmap``.

    Returns:
        The adapted params, and the ``(steps,)`` support losses before each step.
    """
    adapted = params
    losses = []
    for _ in range(steps):
        grads, loss = grad_and_value(lambda p: task_loss(model, p, x, y, loss_fn))(adapted)
        if first_order:
            grads = {name: grad.detach() for name, grad in grads.items()}
        adapted = {name: adapted[name] - inner_lr * grads[name] for name in adapted}
        losses.append(loss)
    support_losses = torch.stack(losses) if losses else x.new_zeros(0)
    return adapted, support_losses


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
    check_params(model, params)
    check_loss_fn(loss_fn)
    inner_lr = check_inner_lr(inner_lr)
    steps = check_int("steps", steps, minimum=0)
    check_support_set(x, y, device=params_device(params))
    adapted, support_losses = inner_loop(
        model, params, x, y, loss_fn=loss_fn, inner_lr=inner_lr, steps=steps, first_order=first_order
    )
    params_are_finite = torch.stack([torch.isfinite(tensor).all() for tensor in adapted.values()]).all()
    raise_if_not_finite(
        support_losses[None], params_are_finite[None], inner_lr=inner_lr, final_what="adapted params"
    )
    return adapted
