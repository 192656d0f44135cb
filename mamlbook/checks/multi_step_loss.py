"""Checker for chapter 7's MAML++ multi-step loss: the reader's weighted sum over the inner steps.

``check_multi_step_loss(fn)`` runs ``fn(model, params, batch, *, loss_fn, inner_lr,
step_weights)`` on copies of small float64 sinusoid problems drawn from ``seed`` (0, the
default, is the chapter's), after computing the answer with ``mamlbook.reference`` on its
own tensors, and compares the loss and its meta-gradient. When they differ it computes
what the classic mistakes would give on the same problem and names the one that matches:
the last step alone, an unweighted mean or sum, the loss before each step instead of
after it (step 0 counted), the weights in reverse order, the sum over tasks, a detached or
first-order inner loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import maml_loss
from ..types import LossFn, Params, TaskBatch
from ._meta_gradient import SIGN, TOLERANCE, cut_off, gradient_hint, gradients, inputs_hint, named
from ._problems import copied, describe, leaves, problem_seeds, sinusoid_problem
from ._student import call_student, check_arguments
from .result import CheckResult

_LR = 0.03
_PROBLEMS = ((2, F.mse_loss), (3, F.huber_loss))  # (steps, loss_fn)
_CALL = "multi_step_loss(model, params, batch, loss_fn=..., inner_lr=..., step_weights=...)"
_HINTS = {
    "last_only": "the loss scores the last step alone: sum w_s times the mean query loss after every step s",
    "last_weighted": "the loss scores the last step alone, weighted: add every step's weighted query loss",
    "mean": "the steps' query losses are averaged without their weights: weigh step s by step_weights[s - 1]",
    "sum": "the steps' query losses are summed without their weights: weigh step s by step_weights[s - 1]",
    "before_steps": (
        "each weight scores the query loss before its step: the loss of theta itself (step 0) counts "
        "and the last step's does not. Score the query set after each step"
    ),
    "with_start": (
        "the query loss of theta itself (step 0, before adaptation) is added: score the steps 1 to n only"
    ),
    "reversed": "the weights are applied in reverse order: step_weights[0] weighs the loss after step 1",
    "sign": SIGN,
    "sum_tasks": "the loss is T times too large: average the query losses over the tasks instead of summing",
    "fixed_loss": "the function ignores loss_fn and uses a mean squared error: call loss_fn",
}


def _step_weights(seed: int, steps: int) -> list[float]:
    """``steps`` weights that grow with the step and sum to 1, as MAML++'s do during annealing."""
    raw = torch.arange(1, steps + 1, dtype=torch.float64) + 0.5 * torch.rand(
        steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return (raw / raw.sum()).tolist()


def _mistakes(model, theta, batch, loss_fn, weights) -> dict[str, torch.Tensor]:
    """What each classic mistake gives as the loss on this problem."""
    steps, w = len(weights), torch.tensor(weights, dtype=torch.float64)

    def after(inner_lr=_LR, loss=loss_fn) -> torch.Tensor:  # (steps + 1,) mean query losses after 0..n steps
        return torch.stack(
            [
                maml_loss(
                    model, leaves(theta), batch, loss_fn=loss, inner_lr=inner_lr, inner_steps=count
                ).detach()
                for count in range(steps + 1)
            ]
        )

    losses = after()
    right = (w * losses[1:]).sum()
    found = {
        "last_only": losses[-1],
        "last_weighted": w[-1] * losses[-1],
        "mean": losses[1:].mean(),
        "sum": losses[1:].sum(),
        "before_steps": (w * losses[:-1]).sum(),
        "with_start": right + losses[0],
        "reversed": (w.flip(0) * losses[1:]).sum(),
        "sign": (w * after(inner_lr=-_LR)[1:]).sum(),
        "sum_tasks": batch.num_tasks * right,
    }
    if loss_fn is not F.mse_loss:
        found["fixed_loss"] = (w * after(loss=F.mse_loss)[1:]).sum()
    return found


def _expected(model: nn.Module, theta: Params, batch: TaskBatch, loss_fn: LossFn, weights, **options):
    """The reference multi-step loss (detached) and its gradient with respect to theta, on fresh leaves."""
    params = leaves(theta)
    loss = maml_loss(
        model, params, batch, loss_fn=loss_fn, inner_lr=_LR, inner_steps=len(weights),
        step_weights=weights, **options,
    )  # fmt: skip
    return loss.detach(), dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def _check_problem(fn: Callable, seed: int, steps: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` gives the multi-step loss of this problem and its meta-gradient, else a hint."""
    model, batch = sinusoid_problem(seed)
    theta = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    weights = _step_weights(seed, steps)
    expected, expected_grads = _expected(model, theta, batch, loss_fn, weights)
    _, first_order_grads = _expected(model, theta, batch, loss_fn, weights, first_order=True)
    kept = {"model": model, "params": leaves(theta), "batch": batch}
    given = copied(kept) | {"step_weights": list(weights)}  # copied() leaves a list as it is
    returned, hint = call_student(
        fn, _CALL, given["model"], given["params"], given["batch"],
        loss_fn=loss_fn, inner_lr=_LR, step_weights=given["step_weights"],
    )  # fmt: skip
    if hint is None:  # a hint is falsy: test for None
        hint = inputs_hint(named(**given), named(**kept, step_weights=weights))
    if hint is not None:
        return hint
    if not isinstance(returned, torch.Tensor) or not returned.is_floating_point():
        return CheckResult.hint(f"return the loss as a scalar tensor, got {describe(returned)}")
    if returned.dim() != 0:
        return CheckResult.hint(
            "return one scalar tensor, the weighted sum over the steps of the mean query loss over "
            f"the tasks; got shape {tuple(returned.shape)}"
        )
    value = returned.detach().double()
    if not torch.allclose(value, expected, **TOLERANCE):
        mistakes = _mistakes(model, theta, batch, loss_fn, weights)
        name = next(
            (key for key, wrong in mistakes.items() if torch.allclose(value, wrong, **TOLERANCE)), None
        )
        if name is not None:
            return CheckResult.hint(_HINTS[name])
        return CheckResult.hint(
            f"the loss is {value.item():.6g}, expected {expected.item():.6g} ({steps} steps, "
            f"{loss_fn.__name__}): compare with sum_s w_s mean_t L_query,t(phi_t after s steps)"
        )
    grads = gradients(returned, given["params"])
    if isinstance(grads, CheckResult):
        return grads
    return gradient_hint(grads, expected_grads, first_order_grads, cut_off)


def check_multi_step_loss(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``multi_step_loss(model, params, batch, *, loss_fn, inner_lr, step_weights)``.

    With n = ``len(step_weights)`` inner steps, the function must return MAML++'s
    multi-step loss, ``sum over s = 1..n of step_weights[s - 1] * mean_t L_query,t(phi_t^(s))``,
    with phi_t^(s) task t's parameters after s SGD steps of size ``inner_lr`` from ``params``
    on its support set: a scalar tensor whose gradient with respect to ``params`` is the
    full, second-order meta-gradient. It is run on two problems drawn from ``seed`` (an MLP
    and 3 sinusoid tasks; 2 steps with the MSE, 3 with the Huber loss; weights that grow
    with the step) and compared in value and gradient with ``mamlbook.maml_loss``'s
    ``step_weights``.

    Args:
        fn: the function to check.
        seed: chooses the problems.

    Returns:
        The verdict, correct or a hint naming the mistake that explains the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(
        fn, "multi_step_loss(model, params, batch, *, loss_fn, inner_lr, step_weights)", seed
    )
    for problem_seed, (steps, loss_fn) in zip(problem_seeds(seed, len(_PROBLEMS)), _PROBLEMS, strict=True):
        hint = _check_problem(fn, problem_seed, steps, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the multi-step loss and its meta-gradient equal mamlbook.maml_loss's with step_weights "
        "(2 and 3 steps, MSE and Huber losses)"
    )
