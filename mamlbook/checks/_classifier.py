"""What the ANIL and Meta-SGD checkers share: a small float64 classification problem, its
reference adaptation with ``mamlbook.reference``, and the judging of the reader's adapted
params in value and meta-gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..models import MLP
from ..reference import adapt_one_task
from ..types import LossFn, Params
from ._meta_gradient import TOLERANCE, gradient_hint, gradients, inputs_hint, named
from ._problems import all_close, copied, leaves, params_hint
from ._student import call_student
from .result import CheckResult

LR = 0.3
HEAD = ("head.weight", "head.bias")
FIXED_LOSS = "the function ignores loss_fn and uses the cross-entropy: call loss_fn"
Problem = tuple[nn.Module, Params, tuple[torch.Tensor, ...]]


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy with labels smoothed by 0.2: the checkers' second classification loss."""
    return F.cross_entropy(logits, labels, label_smoothing=0.2)


def classifier_problem(seed: int) -> Problem:
    """A float64 MLP classifier, theta (detached) and one 3-way task.

    The task is ``(support_x, support_y, query_x, query_y)``, shapes (6, 4), (6,), (9, 4), (9,).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # nn.Linear draws its initial weights from this generator
        model = MLP(4, (4, 4), 3).double()
    theta = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    means = 1.5 * torch.randn(3, 4, generator=generator, dtype=torch.float64)  # one per class
    support_y, query_y = torch.arange(3).repeat(2), torch.arange(3).repeat(3)
    support_x = means[support_y] + torch.randn(6, 4, generator=generator, dtype=torch.float64)
    query_x = means[query_y] + torch.randn(9, 4, generator=generator, dtype=torch.float64)
    return model, theta, (support_x, support_y, query_x, query_y)


def _query_loss(
    model: nn.Module, phi: Params, data: tuple[torch.Tensor, ...], loss_fn: LossFn
) -> torch.Tensor:
    """The query loss of ``data = (support_x, support_y, query_x, query_y)`` at ``phi``."""
    return loss_fn(functional_call(model, phi, (data[2],)), data[3])


def _with_rates(params: Mapping[str, torch.Tensor], rates: object) -> dict[str, torch.Tensor]:
    """``params`` and, when ``rates`` is a dict of tensors, the rates named ``inner_lr['name']``:
    what the meta-gradient is taken with respect to."""
    if not isinstance(rates, Mapping):
        return dict(params)
    return params | {f"inner_lr[{name!r}]": rate for name, rate in rates.items()}


def expected(problem: Problem, loss_fn: LossFn, inner_lr: object, **options) -> tuple[Params, Params]:
    """The reference adapted params (detached) and the meta-gradient of the query loss after them,
    with respect to theta and to learned rates (``inner_lr`` a dict), computed on fresh leaves."""
    model, theta, data = problem
    params = leaves(theta)
    rates = leaves(inner_lr) if isinstance(inner_lr, Mapping) else inner_lr
    phi = adapt_one_task(model, params, data[0], data[1], loss_fn=loss_fn, inner_lr=rates, **options)
    inputs = _with_rates(params, rates)
    grads = torch.autograd.grad(_query_loss(model, phi, data, loss_fn), list(inputs.values()))
    return {name: tensor.detach() for name, tensor in phi.items()}, dict(zip(inputs, grads, strict=True))


def is_adaptation(phi: Params, problem: Problem, loss_fn: LossFn, inner_lr: object, **options) -> bool:
    """Whether ``phi`` is what the reference adaptation gives with these settings."""
    return all_close(phi, expected(problem, loss_fn, inner_lr, **options)[0], **TOLERANCE)


def judge(
    fn: Callable,
    call: str,
    problem: Problem,
    loss_fn: LossFn,
    inner_lr: object,
    *,
    keywords: dict[str, object],
    options: dict[str, object],
    value_hint: Callable[[Params], CheckResult],
    unreached: Callable[[list[str]], str],
) -> CheckResult | None:
    """None when ``fn(model, params, support_x, support_y, loss_fn=..., inner_lr=..., **keywords)``
    adapts like ``adapt_one_task(..., **options)`` on ``problem``, in value and meta-gradient.

    Else a hint: the call's, the inputs it changed, the result's type, ``value_hint(phi)`` for
    wrong values, ``unreached(names)`` when no meta-gradient reaches some inputs, first order.
    """
    model, theta, data = problem
    right, right_grads = expected(problem, loss_fn, inner_lr, **options)
    _, first_order_grads = expected(problem, loss_fn, inner_lr, first_order=True, **options)
    rates = leaves(inner_lr) if isinstance(inner_lr, Mapping) else inner_lr
    kept = {
        "model": model,
        "params": leaves(theta),
        "support_x": data[0],
        "support_y": data[1],
        "inner_lr": rates,
    }
    given = copied(kept)
    phi, hint = call_student(
        fn, call, given["model"], given["params"], given["support_x"], given["support_y"],
        loss_fn=loss_fn, inner_lr=given["inner_lr"], **keywords,
    )  # fmt: skip
    if hint is None:  # a hint is falsy: test for None
        hint = inputs_hint(named(**given), named(**kept))
    if hint is not None:
        return hint
    hint = params_hint(phi, theta, "params")
    if hint is not None:
        return hint
    if not all_close(phi, right, **TOLERANCE):
        return value_hint(phi)
    grads = gradients(_query_loss(model, phi, data, loss_fn), _with_rates(given["params"], given["inner_lr"]))
    if isinstance(grads, CheckResult):
        return grads
    return gradient_hint(grads, right_grads, first_order_grads, unreached)
