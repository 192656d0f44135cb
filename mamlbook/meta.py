"""MAML (chapter 4): ``adapt`` fits theta to one task, ``maml_loss`` is the meta-objective.

For T tasks with support sets (x_s, y_s) and query sets (x_q, y_q),

    maml_loss(theta) = 1/T sum_t L(f_{phi_t}(x_q,t), y_q,t),   phi_t = adapt(theta, x_s,t, y_s,t),

and its gradient with respect to theta is the meta-gradient, second-order terms
included unless ``first_order``. Both run the one inner loop
(``mamlbook.inner.adaptation``) on losses that a backend evaluates
(``mamlbook.backends``); ``meta_objective`` is the same objective for any per-task losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import (
    check_int,
    check_loss_fn,
    check_params,
    check_step_weights,
    check_support_set,
    check_task_batch,
    params_device,
    params_dtype,
)
from .backends import BACKENDS, Backend, Problem, choose_backend
from .errors import raise_if_not_finite
from .inner import InnerLoop, adaptation, check_task_losses, per_task
from .types import InnerLR, LossFn, Params, TaskBatch, TaskLosses


def adapt(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR | None = None,
    inner_steps: int | None = None,
    first_order: bool = False,
    adapt_only: str | Sequence[str] | None = None,
    inner_loop: InnerLoop | None = None,
    backend: str | Backend = "auto",
) -> Params:
    """Adapt ``params`` to one task with ``inner_steps`` plain SGD steps on its support set.

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
            parameter (Meta-SGD), or a list of ``inner_steps`` rates, one per step (MAML++);
            see ``mamlbook.types.InnerLR``.
        inner_steps: number of gradient steps, an integer >= 0; 0 returns ``params``.
        first_order: detach the inner gradients.
        adapt_only: adapt only these parameters, by name or module prefix (``"head"``
            for ANIL); the others keep their values. None adapts all.
        inner_loop: all of the four options above as one ``InnerLoop`` (for example
            ``TrainingHistory.inner_loop``), instead of them.
        backend: how the support losses are evaluated (``mamlbook.backends``).

    Returns:
        The adapted parameters phi, keyed like ``params``.

    Raises:
        NonFiniteLossError: the support loss became NaN or infinite; the message says
            at which step.
    """
    check_support_set(x, y)  # (K, ...); adapt_tasks checks the params and the device
    adapted = adapt_tasks(
        model,
        params,
        x[None],  # (1, K, ...): one task
        y[None],
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        adapt_only=adapt_only,
        inner_loop=inner_loop,
        backend=backend,
    )
    return {name: tensor[0] for name, tensor in adapted.items()}


def adapt_tasks(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR | None = None,
    inner_steps: int | None = None,
    first_order: bool = False,
    adapt_only: str | Sequence[str] | None = None,
    inner_loop: InnerLoop | None = None,
    backend: str | Backend = "auto",
) -> Params:
    """``adapt`` for T tasks at once: each task's phi from ``params``, on its own support set.

    The other arguments are those of ``adapt``.

    Args:
        x: ``(T, K, ...)`` support inputs, task t's at index t.
        y: ``(T, K, ...)`` support targets.

    Returns:
        The adapted parameters, tensors ``(T, ...)``: task t's phi at index t.

    Raises:
        NonFiniteLossError: a task's support loss became NaN or infinite; the message
            names the task and the step.
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    loop = InnerLoop.resolve(
        params,
        inner_loop,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        adapt_only=adapt_only,
    )
    check_support_set(x, y, device=params_device(params), dtype=params_dtype(params), per_task=True)
    problem = Problem("adapt", model, params, loss_fn, loop, inputs=(x,))
    support_losses = choose_backend(backend, problem).task_losses(problem, x, y, loss_fn)
    adapted, history = per_task(params, x.shape[0]), []
    for step in adaptation(support_losses, adapted, loop):
        adapted = step.adapted
        history.append(step.support_losses)
    params_are_finite = torch.stack(
        [torch.isfinite(tensor).flatten(1).all(dim=1) for tensor in adapted.values()]
    ).all(dim=0)  # (T,)
    raise_if_not_finite(
        _by_step(history, x.shape[0], x.device),
        params_are_finite,
        rates=loop.describe_rates(),
        final_what="adapted params",
    )
    return adapted


def maml_loss(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: InnerLR | None = None,
    inner_steps: int | None = None,
    first_order: bool = False,
    adapt_only: str | Sequence[str] | None = None,
    step_weights: Sequence[float] | torch.Tensor | None = None,
    inner_loop: InnerLoop | None = None,
    backend: str | Backend = "auto",
) -> torch.Tensor:
    """Mean query loss over the T tasks of ``batch``, each adapted from ``params``.

    All tasks are adapted at once by the one inner loop; ``backward()`` on the result
    puts the meta-gradient on the tensors of ``params`` (and on learned rates in
    ``inner_lr``).

    Args:
        model: any module that ``torch.func.functional_call`` can run.
        params: theta, keyed like ``model.named_parameters()``; with
            ``params = dict(model.named_parameters())`` the meta-gradient lands on the
            model's own parameters.
        batch: T tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha, a finite number >= 0, or learned rates (``mamlbook.types.InnerLR``).
        inner_steps: inner gradient steps per task, an integer >= 0.
        first_order: detach the inner gradients (first-order MAML).
        adapt_only: adapt only these parameters, by name or module prefix (``"head"``
            for ANIL); None adapts all.
        step_weights: MAML++'s multi-step loss: ``inner_steps`` weights w_s, and the meta-loss
            is sum_s w_s * (mean query loss after step s + 1). None scores the final
            step alone (w = 0, ..., 0, 1) without computing the others.
        inner_loop: the inner loop's options as one ``InnerLoop``, instead of
            ``inner_lr``, ``inner_steps``, ``first_order`` and ``adapt_only``.
        backend: ``"auto"`` or the backend that computes it (``mamlbook.backends``).

    Returns:
        A scalar tensor, the meta-loss.

    Raises:
        NonFiniteLossError: a task's loss became NaN or infinite; the message names the
            task and the inner step.
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    loop = InnerLoop.resolve(
        params,
        inner_loop,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        adapt_only=adapt_only,
    )
    batch = check_task_batch(batch, device=params_device(params), dtype=params_dtype(params))
    weights = None if step_weights is None else check_step_weights(step_weights, loop.steps)
    inputs = (batch.support_x, batch.query_x)
    problem = Problem("maml_loss", model, params, loss_fn, loop, inputs, batch, weights)
    chosen = choose_backend(backend, problem)
    if chosen.computes_meta_loss:
        meta_loss = chosen.maml_loss(problem)
        if bool(torch.isfinite(meta_loss)):
            return meta_loss
        chosen = BACKENDS["autograd"]  # whose inner loop names the task and step that diverged
    return meta_objective(
        params,
        chosen.task_losses(problem, batch.support_x, batch.support_y, loss_fn),
        chosen.task_losses(problem, batch.query_x, batch.query_y, loss_fn),
        loop,
        num_tasks=batch.num_tasks,
        step_weights=weights,
        query_sets=(batch.query_x, batch.query_y),
    )


def meta_objective(
    params: Params,
    support_losses: TaskLosses,
    query_losses: TaskLosses,
    loop: InnerLoop,
    *,
    num_tasks: int,
    step_weights: Sequence[float] | None = None,
    query_sets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """MAML's meta-loss for any differentiable per-task losses: sum_s w_s mean_t Lq_t(phi_t,s).

    Each task's phi_t,s comes from ``params`` by s steps of ``loop`` on its support loss.

    Args:
        params: theta.
        support_losses, query_losses: ``losses(params_per_task) -> (T,)``, each task's
            loss at its own parameters ``(T, ...)`` (``mamlbook.types.TaskLosses``).
        loop: the inner loop.
        num_tasks: T, an integer >= 1; each loss must return ``(T,)`` values.
        step_weights: w_s for s = 1..steps, finite numbers >= 0 not all zero; None
            scores the last step alone (w = 1).
        query_sets: the tasks' ``(query_x, query_y)``, for the message when a loss diverges.

    Returns:
        The meta-loss, a scalar.

    Raises:
        NonFiniteLossError: a task's loss became NaN or infinite.
    """
    if not isinstance(loop, InnerLoop):
        raise TypeError(f"loop must be a mamlbook.InnerLoop, got {type(loop).__name__}")
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    if step_weights is None:
        weights = {loop.steps: 1.0}
    else:
        step_weights = check_step_weights(step_weights, loop.steps)
        weights = {number: weight for number, weight in enumerate(step_weights, start=1) if weight}
    start = per_task(params, num_tasks)

    def query_losses_at(params_per_task: Params) -> torch.Tensor:
        return check_task_losses(query_losses(params_per_task), num_tasks)

    scored = {0: query_losses_at(start)} if 0 in weights else {}  # steps taken -> (T,) query losses
    support_history = []  # (T,) before each step
    for step in adaptation(support_losses, start, loop):
        support_history.append(step.support_losses)
        if step.number in weights:
            scored[step.number] = query_losses_at(step.adapted)
    meta_loss = torch.stack([weights[number] * losses.mean() for number, losses in scored.items()]).sum()
    if not bool(torch.isfinite(meta_loss)):
        raise_if_not_finite(
            _by_step(support_history, num_tasks, params_device(params)),
            torch.isfinite(torch.stack(list(scored.values()))).all(dim=0),
            rates=loop.describe_rates(),
            final_what="query loss",
            query_sets=query_sets,
        )
    return meta_loss


def _by_step(losses: list[torch.Tensor], num_tasks: int, device: torch.device | None) -> torch.Tensor:
    """The ``(T,)`` losses before each inner step as one ``(T, steps)`` tensor."""
    return torch.stack(losses, dim=1) if losses else torch.zeros(num_tasks, 0, device=device)
