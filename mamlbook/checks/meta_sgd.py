"""Checker for chapter 7's Meta-SGD: the reader's inner step with learned, per-weight rates.

``check_meta_sgd_step(fn)`` runs ``fn(model, params, support_x, support_y, *, loss_fn,
inner_lr)`` on copies of small float64 classification problems drawn from ``seed`` (0, the
default, is the chapter's), after computing the answer with ``mamlbook.reference`` on its
own tensors, and compares the adapted params and the meta-gradient of the query loss, to
theta and to the rates. When they differ it computes what the classic mistakes would give
on the same problem and names the one that matches: one number for all rates (the mean of
a tensor's rates or of all of them), rates detached (no meta-gradient reaches them), rates
matched to the parameters by position instead of by name, the sign, first order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..types import LossFn, Params
from ._classifier import (
    FIXED_LOSS,
    LR,
    Problem,
    classifier_problem,
    is_adaptation,
    judge,
    smoothed_cross_entropy,
)
from ._meta_gradient import SIGN, cut_off
from ._problems import problem_seeds
from ._student import check_arguments
from .result import CheckResult

_LOSSES = (F.cross_entropy, smoothed_cross_entropy)
_CALL = "meta_sgd_step(model, params, support_x, support_y, loss_fn=..., inner_lr=...)"
_ORDER = ("body.2.weight", "body.2.bias", "body.0.weight", "body.0.bias", "head.weight", "head.bias")
_HINTS = {
    "tensor_mean": (
        "each tensor is stepped with one number, the mean of its rates: multiply each gradient "
        "elementwise by its tensor of rates, inner_lr[name] * grad"
    ),
    "one_mean": (
        "every parameter is stepped with one number, the mean of all rates: multiply each gradient "
        "elementwise by its own tensor of rates, inner_lr[name] * grad"
    ),
    "position": (
        "the rates are matched to the parameters by position: inner_lr's order is not params'. "
        "Look each rate up by the parameter's name, inner_lr[name]"
    ),
    "sign": SIGN,
    "no_adaptation": "the params are returned unchanged: take one step theta - inner_lr[name] * grad",
    "fixed_loss": FIXED_LOSS,
}


def _rates(theta: Params, seed: int) -> dict[str, torch.Tensor]:
    """Meta-SGD's rates, one per weight in 0.15..0.45, in another order than theta's (``_ORDER``)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = {name: torch.rand(theta[name].shape, generator=generator, dtype=torch.float64) for name in theta}
    return {name: LR * (0.5 + drawn[name]) for name in _ORDER}


def _value_hint(phi: Params, problem: Problem, loss_fn: LossFn, rates: Params) -> CheckResult:
    """The hint for a step that is not Meta-SGD's: the mistake it matches, else what differs."""
    all_rates = torch.cat([rate.flatten() for rate in rates.values()])
    mistakes = {
        "tensor_mean": {name: rate.mean() for name, rate in rates.items()},
        "one_mean": float(all_rates.mean()),
        "position": dict(zip(problem[1], rates.values(), strict=True)),
        "sign": {name: -rate for name, rate in rates.items()},
        "no_adaptation": 0.0,
    }
    for name, wrong in mistakes.items():
        if is_adaptation(phi, problem, loss_fn, wrong, inner_steps=1):
            return CheckResult.hint(_HINTS[name])
    if loss_fn is not F.cross_entropy and is_adaptation(phi, problem, F.cross_entropy, rates, inner_steps=1):
        return CheckResult.hint(_HINTS["fixed_loss"])
    return CheckResult.hint(
        "the adapted params differ from theta - inner_lr[name] * grad of the support loss, elementwise"
    )


def _unreached(names: list[str]) -> str:
    if all(name.startswith("inner_lr") for name in names):
        return (
            "no meta-gradient reaches the rates inner_lr: Meta-SGD learns them, so keep them in the graph "
            "(no .detach(), .item() or torch.tensor(...) of them)"
        )
    return cut_off(names)


def check_meta_sgd_step(fn: Callable[..., Params], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``meta_sgd_step(model, params, support_x, support_y, *, loss_fn, inner_lr)``.

    ``inner_lr`` is a dict of learned rates, one tensor of each parameter's shape, keyed by
    the parameters' names (not necessarily in params' order). The function must return
    one inner step, ``phi[name] = params[name] - inner_lr[name] * grad[name]`` (elementwise)
    with ``grad`` the gradient of ``loss_fn`` on the support set, a dict keyed like
    ``params``, differentiable with respect to ``params`` (second order) and to the rates.
    It is run on two problems drawn from ``seed`` (a 3-class MLP classifier, 6 support and
    9 query points; the cross-entropy and a label-smoothed one) and compared in value and
    in the meta-gradient of the query loss with ``mamlbook.adapt`` given the same rates.

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
        fn, "meta_sgd_step(model, params, support_x, support_y, *, loss_fn, inner_lr)", seed
    )
    for problem_seed, loss_fn in zip(problem_seeds(seed, len(_LOSSES)), _LOSSES, strict=True):
        problem = classifier_problem(problem_seed)
        rates = _rates(problem[1], problem_seed)
        hint = judge(
            fn,
            _CALL,
            problem,
            loss_fn,
            rates,
            keywords={},
            options={"inner_steps": 1},
            value_hint=functools.partial(_value_hint, problem=problem, loss_fn=loss_fn, rates=rates),
            unreached=_unreached,
        )
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the adapted params and the meta-gradients, to theta and to the rates, equal Meta-SGD's step "
        "(two losses, rates given in another order than params)"
    )
