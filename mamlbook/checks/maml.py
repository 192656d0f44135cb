"""Checker for the reader's own ``maml_loss`` (chapter 4).

``check_maml_loss(fn)`` runs ``fn(model, params, batch, *, loss_fn, inner_lr, inner_steps)``
on three small float64 problems drawn from ``seed`` (an MLP and sinusoid tasks: one
inner step, two steps, and one step with another loss; seed 0, the default, gives the
chapter's) and compares the value and the meta-gradient with ``mamlbook.maml_loss``,
computed first. The function gets copies of the model, params and batch, and any
exception or wrong type it gives becomes a hint. When the answers differ, it computes
what the classic mistakes would give on the same problem and names the one that matches:

- no ``create_graph`` (or an update hidden from autograd on a copy of theta): the
  value is right but the gradient is first-order MAML's;
- a graph cut by an in-place update: an in-place error, theta itself changed, or no
  gradient reaching ``params``;
- adapting on the query set; a ``+`` instead of a ``-`` in the inner step;
- the wrong averaging axis: summing the query losses over tasks instead of averaging
  them, or one adaptation shared by all tasks (the inner loss averaged over tasks).
  The mean of one loss over all tasks' query examples at once equals the mean over
  tasks here (every task has as many query points), so it is accepted;
- task t adapted from task t-1's adapted parameters instead of from theta;
- no adaptation at all, one inner step whatever ``inner_steps`` is, a fixed loss instead of
  ``loss_fn``;
- the batch or the model's own weights changed in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..reference import adapt_one_task, maml_loss
from ..types import LossFn, Params, TaskBatch
from ._problems import copied, describe, leaves, problem_seeds, same, sinusoid_problem
from ._student import call_student, check_arguments
from .result import CheckResult

_INNER_LR = 0.05
_PROBLEMS = ((1, F.mse_loss), (2, F.mse_loss), (1, F.huber_loss))  # (steps, loss_fn)
_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
_CALL = "maml_loss(model, params, batch, loss_fn=..., inner_lr=..., inner_steps=...)"

_HINTS = {
    "first_order": (
        "the value is right but the meta-gradient is first-order MAML's: no gradient flows "
        "through the inner gradient. Take the inner gradient with create_graph=True, and "
        "compute the update where autograd records it (not under torch.no_grad(), not on .data)"
    ),
    "graph": (
        "the graph from params to the loss is cut: {why}. Build the adapted parameters as "
        "new tensors, phi = theta - inner_lr * grad, never by updating a tensor in place"
    ),
    "query_adapt": "the inner steps adapt on the query set; adapt on the support set, score on the query set",
    "sign": "the inner step climbs the support loss: check the sign of the update",
    "sum_tasks": "the value is T times too large: average the query losses over the tasks instead of summing",
    "shared_adaptation": (
        "all tasks share one adaptation: the inner loss is averaged over tasks. Each task "
        "needs its own adapted parameters, from its own support set"
    ),
    "sequential": (
        "each task starts from the previous task's adapted parameters: start every task from theta"
    ),
    "no_adaptation": (
        "the value is the query loss of theta itself: score the query set with the adapted parameters"
    ),
    "one_step": "the function takes one inner step whatever inner_steps is: loop over the steps",
    "fixed_loss": "the function ignores loss_fn and uses a mean squared error: call loss_fn",
}


def _mistakes(
    model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, steps: int
) -> dict[str, torch.Tensor]:
    """What each classic mistake gives as the meta-loss on this problem."""
    theta = leaves(params)
    loss = functools.partial(maml_loss, model, theta, loss_fn=loss_fn, inner_lr=_INNER_LR, inner_steps=steps)
    pooled = TaskBatch(*(tensor.flatten(0, 1)[None] for tensor in batch))  # one task of all the points
    found = {
        "query_adapt": loss(TaskBatch(batch.query_x, batch.query_y, batch.query_x, batch.query_y)),
        "sign": loss(batch, inner_lr=-_INNER_LR),
        "sum_tasks": batch.num_tasks * loss(batch),
        "shared_adaptation": loss(pooled),
        "sequential": _sequential(model, theta, batch, loss_fn, steps),
        "no_adaptation": loss(batch, inner_steps=0),
    }
    if steps > 1:
        found["one_step"] = loss(batch, inner_steps=1)
    if loss_fn is not F.mse_loss:
        found["fixed_loss"] = loss(batch, loss_fn=F.mse_loss)
    return {name: loss.detach() for name, loss in found.items()}


def _sequential(
    model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, steps: int
) -> torch.Tensor:
    """The meta-loss when task t is adapted from task t-1's adapted parameters, the first from theta."""
    phi, losses = params, []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
        phi = adapt_one_task(
            model, phi, support_x, support_y, loss_fn=loss_fn, inner_lr=_INNER_LR, inner_steps=steps
        )
        losses.append(loss_fn(functional_call(model, phi, (query_x,)), query_y))
    return torch.stack(losses).mean()


def _first_sentence(error: Exception) -> str:
    return str(error).split(". ")[0].rstrip(".")


def _graph_error(error: Exception) -> bool:
    """Whether autograd's message is about an in-place update or a missing graph."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        key in text for key in ("inplace", "in-place", "leaf variable", "does not require grad")
    )


def _explain(error: Exception) -> CheckResult | None:
    """The hint for an autograd error about an in-place update or a missing graph, else None."""
    if _graph_error(error):
        return CheckResult.hint(_HINTS["graph"].format(why=f"autograd raised {_first_sentence(error)!r}"))
    return None


def _run(fn: Callable[..., torch.Tensor], model: nn.Module, params: Params, batch: TaskBatch, loss_fn, steps):
    """The student's value and meta-gradient, from copies of the inputs, or a hint when there is none."""
    model_copy, theta, batch_copy = copied((model, params, batch))
    value, hint = call_student(
        fn,
        _CALL,
        model_copy,
        theta,
        batch_copy,
        loss_fn=loss_fn,
        inner_lr=_INNER_LR,
        inner_steps=steps,
        explain=_explain,
    )
    if hint is not None:
        return hint
    if not same(theta, params):
        return CheckResult.hint(_HINTS["graph"].format(why="the function changed theta itself in place"))
    if not same(batch_copy, batch):
        return CheckResult.hint("the function changed the batch in place: leave its tensors alone")
    if not same(model_copy, model):
        return CheckResult.hint(
            "the function changed the model's own weights: adapt new tensors, not the model"
        )
    if not isinstance(value, torch.Tensor):
        return CheckResult.hint(f"the function must return a scalar tensor, got {describe(value)}")
    if value.shape == (batch.num_tasks,):
        return CheckResult.hint("the function returns one loss per task: return their mean, a scalar")
    if value.dim() != 0:
        return CheckResult.hint(f"the function must return a scalar tensor, got shape {tuple(value.shape)}")
    if value.dtype != torch.float64:
        return CheckResult.hint(
            f"the function returns a {value.dtype} tensor, expected float64 like params: "
            "compute the loss from params without converting it"
        )
    if not value.requires_grad:
        return CheckResult.hint(_HINTS["graph"].format(why="the loss does not require grad"))
    try:
        grads = torch.autograd.grad(value, list(theta.values()), allow_unused=True)
    except Exception as error:  # differentiating the reader's graph can fail in any way
        return CheckResult.hint(_HINTS["graph"].format(why=f"autograd raised {_first_sentence(error)!r}"))
    if any(grad is None or not bool(grad.any()) for grad in grads):
        return CheckResult.hint(_HINTS["graph"].format(why="no gradient reaches some tensors of params"))
    return value.detach(), grads


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool(torch.allclose(actual, expected.detach(), **_TOLERANCE))


def _gradient_is(grads: tuple[torch.Tensor, ...], loss: torch.Tensor, params: Params) -> bool:
    """Whether ``grads`` are the gradient of ``loss`` with respect to ``params``."""
    expected = torch.autograd.grad(loss, list(params.values()))
    return all(_close(grad, wanted) for grad, wanted in zip(grads, expected, strict=True))


def _diagnose(fn: Callable[..., torch.Tensor], seed: int, steps: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` agrees with ``maml_loss`` in value and gradient on one problem, else a hint."""
    model, batch = sinusoid_problem(seed)
    params = leaves(dict(model.named_parameters()))
    loss = functools.partial(
        maml_loss, model, params, batch, loss_fn=loss_fn, inner_lr=_INNER_LR, inner_steps=steps
    )
    expected = loss()  # the answer first, on the checker's own tensors
    ran = _run(fn, model, params, batch, loss_fn, steps)
    if isinstance(ran, CheckResult):
        return ran
    value, grads = ran
    if not _close(value, expected):
        mistakes = _mistakes(model, params, batch, loss_fn, steps)
        name = next((name for name, wrong in mistakes.items() if _close(value, wrong)), None)
        if name is not None:
            return CheckResult.hint(_HINTS[name])
        return CheckResult.hint(
            f"the meta-loss is {value.item():.6g}, expected {expected.item():.6g} (inner_steps={steps}, "
            f"{getattr(loss_fn, '__name__', 'loss_fn')}): compare your loop with the equations of chapter 4"
        )
    if _gradient_is(grads, expected, params):
        return None
    if _gradient_is(grads, loss(first_order=True), params):
        return CheckResult.hint(_HINTS["first_order"])
    return CheckResult.hint(
        "the value is right but the meta-gradient is not: look for a .detach() or a tensor "
        "rebuilt from plain numbers"
    )


def check_maml_loss(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``maml_loss(model, params, batch, *, loss_fn, inner_lr, inner_steps)``.

    The function must return the mean query loss over the T tasks of ``batch``, each
    task adapted from ``params`` by ``inner_steps`` SGD steps of size ``inner_lr`` on its
    support set, as a scalar tensor whose gradient with respect to ``params`` is the
    full (second-order) meta-gradient. It is run on three float64 problems (3 tasks,
    5 support and 6 query points; 1 and 2 inner steps with the MSE, 1 step with the
    Huber loss) and compared in value and gradient with ``mamlbook.maml_loss``.

    Args:
        fn: the function to check.
        seed: chooses the networks' weights and the tasks; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint naming the mistake that explains the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _CALL, seed)
    for problem_seed, (steps, loss_fn) in zip(problem_seeds(seed, len(_PROBLEMS)), _PROBLEMS, strict=True):
        hint = _diagnose(fn, problem_seed, steps, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the meta-loss and the meta-gradient equal mamlbook.maml_loss's "
        "(1 and 2 inner steps, MSE and Huber losses)"
    )
