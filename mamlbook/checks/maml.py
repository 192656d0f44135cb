"""Checker for the reader's own ``maml_loss`` (chapter 4).

``check_maml_loss(fn)`` runs ``fn(model, params, batch, *, loss_fn, inner_lr, inner_steps)``
on three small float64 problems (an MLP and seeded sinusoid tasks: one inner step, two
steps, and one step with another loss) and compares the value and the meta-gradient
with ``mamlbook.maml_loss``. When they differ, it computes what the classic mistakes
would give on the same problem and names the one that matches:

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
  ``loss_fn``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..inner import per_task
from ..models import MLP
from ..tasks import Sinusoid
from ..types import LossFn, Params, TaskBatch
from ._per_task import adapted_per_task, losses_per_task
from .result import CheckResult

_INNER_LR = 0.05
_PROBLEMS = ((1, F.mse_loss), (2, F.mse_loss), (1, F.huber_loss))  # (steps, loss_fn)
_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}

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


def _problem(seed: int) -> tuple[nn.Module, TaskBatch]:
    """A 1-8-8-1 MLP and 3 sinusoid tasks (5 support, 6 query points), float64, seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MLP(1, (8, 8)).double()
    generator = torch.Generator().manual_seed(seed)
    batch = Sinusoid().sample(3, 5, 6, generator=generator)
    return model, TaskBatch(*(tensor.double() for tensor in batch))


def _mean_query_loss(
    model: nn.Module,
    starts: Params,
    batch: TaskBatch,
    loss_fn: LossFn,
    *,
    inner_lr: float,
    inner_steps: int,
    first_order: bool = False,
) -> torch.Tensor:
    """Mean query loss of T tasks adapted from ``starts`` (tensors ``(T, ...)``)."""
    adapted = adapted_per_task(
        model,
        starts,
        batch.support_x,
        batch.support_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
    )
    return losses_per_task(model, adapted, batch.query_x, batch.query_y, loss_fn).mean()


def _shared_adaptation(model, params, batch, loss_fn, *, inner_lr, inner_steps):
    """One phi for all tasks, adapted on the T * K support points at once."""
    tasks = batch.num_tasks
    support_x = batch.support_x.reshape(1, -1, *batch.support_x.shape[2:])  # (1, T * K, ...)
    support_y = batch.support_y.reshape(1, -1, *batch.support_y.shape[2:])
    shared = adapted_per_task(
        model,
        per_task(params, 1),
        support_x,
        support_y,
        loss_fn=loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
    )
    starts = {name: tensor.expand(tasks, *tensor.shape[1:]) for name, tensor in shared.items()}
    return losses_per_task(model, starts, batch.query_x, batch.query_y, loss_fn).mean()


def _sequential(model, params, batch, loss_fn, *, inner_lr, inner_steps):
    """Task t adapted from task t-1's adapted parameters, the first from theta."""
    start, losses = per_task(params, 1), []
    for task in range(batch.num_tasks):
        one = batch.slice_tasks(task, task + 1)
        start = adapted_per_task(
            model,
            start,
            one.support_x,
            one.support_y,
            loss_fn=loss_fn,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
        )
        losses.append(losses_per_task(model, start, one.query_x, one.query_y, loss_fn))
    return torch.cat(losses).mean()


def _mistakes(
    model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, steps: int
) -> dict[str, torch.Tensor]:
    """What each classic mistake gives as the meta-loss on this problem."""
    tasks, lr = batch.num_tasks, _INNER_LR
    loss = functools.partial(_mean_query_loss, model, per_task(params, tasks))
    on_query = TaskBatch(batch.query_x, batch.query_y, batch.query_x, batch.query_y)
    found = {
        "query_adapt": loss(on_query, loss_fn, inner_lr=lr, inner_steps=steps),
        "sign": loss(batch, loss_fn, inner_lr=-lr, inner_steps=steps),
        "sum_tasks": tasks * loss(batch, loss_fn, inner_lr=lr, inner_steps=steps),
        "shared_adaptation": _shared_adaptation(
            model, params, batch, loss_fn, inner_lr=lr, inner_steps=steps
        ),
        "sequential": _sequential(model, params, batch, loss_fn, inner_lr=lr, inner_steps=steps),
        "no_adaptation": loss(batch, loss_fn, inner_lr=lr, inner_steps=0),
    }
    if steps > 1:
        found["one_step"] = loss(batch, loss_fn, inner_lr=lr, inner_steps=1)
    if loss_fn is not F.mse_loss:
        found["fixed_loss"] = loss(batch, F.mse_loss, inner_lr=lr, inner_steps=steps)
    return found


def _first_sentence(error: Exception) -> str:
    return str(error).split(". ")[0].rstrip(".")


def _graph_error(error: RuntimeError) -> bool:
    """Whether autograd's message is about an in-place update or a missing graph."""
    text = str(error).lower()
    return any(key in text for key in ("inplace", "in-place", "leaf variable", "does not require grad"))


def _run(fn: Callable[..., torch.Tensor], model, batch, loss_fn, steps):
    """The student's value and meta-gradient, or a CheckResult hint when there is none."""
    params = {name: tensor.detach().clone().requires_grad_() for name, tensor in model.named_parameters()}
    leaves, before = list(params.values()), [tensor.detach().clone() for tensor in params.values()]
    call = "fn(model, params, batch, loss_fn=..., inner_lr=..., inner_steps=...)"
    try:
        value = fn(model, params, batch, loss_fn=loss_fn, inner_lr=_INNER_LR, inner_steps=steps)
    except RuntimeError as error:
        if _graph_error(error):
            return CheckResult.hint(_HINTS["graph"].format(why=f"autograd raised {_first_sentence(error)!r}"))
        return CheckResult.hint(f"{call} raised RuntimeError: {error}")
    except Exception as error:  # any failure of the reader's code is the verdict
        return CheckResult.hint(f"{call} raised {type(error).__name__}: {error}")
    if any(not torch.equal(leaf.detach(), old) for leaf, old in zip(leaves, before, strict=True)):
        return CheckResult.hint(_HINTS["graph"].format(why="the function changed theta itself in place"))
    if not isinstance(value, torch.Tensor):
        return CheckResult.hint(f"the function must return a scalar tensor, got {type(value).__name__}")
    if value.shape == (batch.num_tasks,):
        return CheckResult.hint("the function returns one loss per task: return their mean, a scalar")
    if value.dim() != 0:
        return CheckResult.hint(f"the function must return a scalar tensor, got shape {tuple(value.shape)}")
    if not value.requires_grad:
        return CheckResult.hint(_HINTS["graph"].format(why="the loss does not require grad"))
    try:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    except RuntimeError as error:
        return CheckResult.hint(_HINTS["graph"].format(why=f"autograd raised {_first_sentence(error)!r}"))
    if any(grad is None or not bool(grad.any()) for grad in grads):
        return CheckResult.hint(_HINTS["graph"].format(why="no gradient reaches some tensors of params"))
    return value.detach(), grads


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool(torch.allclose(actual, expected, **_TOLERANCE))


def _grads_close(actual, expected) -> bool:
    return all(_close(a, e) for a, e in zip(actual, expected, strict=True))


def _reference(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn, steps: int, **kwargs):
    """The package's meta-loss on the problem, from ``params`` (``first_order`` in kwargs)."""
    starts = per_task(params, batch.num_tasks)
    return _mean_query_loss(model, starts, batch, loss_fn, inner_lr=_INNER_LR, inner_steps=steps, **kwargs)


def _gradient_hint(grads, model, params, batch, loss_fn, steps) -> CheckResult | None:
    """For a right value: None when the gradient is right too, else what it looks like."""
    leaves = list(params.values())
    if _grads_close(grads, torch.autograd.grad(_reference(model, params, batch, loss_fn, steps), leaves)):
        return None
    first_order = _reference(model, params, batch, loss_fn, steps, first_order=True)
    if _grads_close(grads, torch.autograd.grad(first_order, leaves)):
        return CheckResult.hint(_HINTS["first_order"])
    return CheckResult.hint(
        "the value is right but the meta-gradient is not: look for a .detach() or a tensor "
        "rebuilt from plain numbers"
    )


def _value_hint(value, expected, model, params, batch, loss_fn, steps) -> CheckResult:
    """For a wrong value: the mistake that gives the same value, or a generic hint."""
    constant_theta = {name: tensor.detach() for name, tensor in params.items()}
    for name, wrong in _mistakes(model, constant_theta, batch, loss_fn, steps).items():
        if _close(value, wrong.detach()):
            return CheckResult.hint(_HINTS[name])
    return CheckResult.hint(
        f"the meta-loss is {value.item():.6g}, expected {expected.item():.6g} (inner_steps={steps}, "
        f"{getattr(loss_fn, '__name__', 'loss_fn')}): compare your loop with the equations of chapter 4"
    )


def _diagnose(fn: Callable[..., torch.Tensor], seed: int, steps: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` agrees with ``maml_loss`` on one problem, else a hint."""
    model, batch = _problem(seed)
    ran = _run(fn, model, batch, loss_fn, steps)
    if isinstance(ran, CheckResult):
        return ran
    value, grads = ran
    params = {name: tensor.detach().requires_grad_() for name, tensor in model.named_parameters()}
    expected = _reference(model, params, batch, loss_fn, steps).detach()
    if _close(value, expected):
        return _gradient_hint(grads, model, params, batch, loss_fn, steps)
    return _value_hint(value, expected, model, params, batch, loss_fn, steps)


def check_maml_loss(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check a reader's ``maml_loss(model, params, batch, *, loss_fn, inner_lr, inner_steps)``.

    The function must return the mean query loss over the T tasks of ``batch``, each
    task adapted from ``params`` by ``inner_steps`` SGD steps of size ``inner_lr`` on its
    support set, as a scalar tensor whose gradient with respect to ``params`` is the
    full (second-order) meta-gradient. It is run on three float64 problems (3 tasks,
    5 support and 6 query points; 1 and 2 inner steps with the MSE, 1 step with the
    Huber loss) and compared in value and gradient with ``mamlbook.maml_loss``.

    Args:
        fn: the function to check.

    Returns:
        The verdict, correct or a hint naming the mistake that explains the numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function maml_loss(model, params, batch, ...), got {fn!r}")
    for seed, (steps, loss_fn) in enumerate(_PROBLEMS):
        hint = _diagnose(fn, seed, steps, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the meta-loss and the meta-gradient equal mamlbook.maml_loss's "
        "(1 and 2 inner steps, MSE and Huber losses)"
    )
