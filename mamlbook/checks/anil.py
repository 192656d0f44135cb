"""Checker for chapter 7's ANIL: the reader's head-only inner loop.

``check_anil_adaptation(fn)`` runs ``fn(model, params, support_x, support_y, *, head, loss_fn,
inner_lr, inner_steps)`` on copies of small float64 classification problems drawn from
``seed`` (0, the default, is the chapter's), after computing the answer with
``mamlbook.reference`` on its own tensors, and compares the adapted params and the
meta-gradient of the query loss. When they differ it computes what the classic mistakes
would give on the same problem and names the one that matches: the body adapted too, the
body detached or copied (no meta-gradient reaches it), first order (no ``create_graph``),
the sign, one step whatever ``inner_steps`` is, a fixed loss instead of ``loss_fn``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..types import LossFn, Params
from ._classifier import (
    FIXED_LOSS,
    HEAD,
    LR,
    Problem,
    classifier_problem,
    is_adaptation,
    judge,
    smoothed_cross_entropy,
)
from ._meta_gradient import SIGN, TOLERANCE, cut_off
from ._problems import problem_seeds
from ._student import check_arguments
from .result import CheckResult

_PROBLEMS = ((1, F.cross_entropy), (2, F.cross_entropy), (3, smoothed_cross_entropy))  # (steps, loss)
_CALL = (
    "anil_adapt(model, params, support_x, support_y, head=..., loss_fn=..., inner_lr=..., inner_steps=...)"
)
_HINTS = {
    "body_adapted": "the body is adapted too: ANIL steps the head alone, the body passes through",
    "sign": SIGN,
    "no_adaptation": "the head is not adapted: take inner_steps steps on the head's parameters",
    "one_step": "the function takes one inner step whatever inner_steps is: loop over the steps",
    "fixed_loss": FIXED_LOSS,
}


def _value_hint(phi: Params, problem: Problem, loss_fn: LossFn, steps: int) -> CheckResult:
    """The hint for adapted params that are not ANIL's: the mistake they match, else what differs."""
    options = {"loss_fn": loss_fn, "inner_lr": LR, "inner_steps": steps, "adapt_only": HEAD}
    mistakes = {
        "body_adapted": options | {"adapt_only": None},
        "sign": options | {"inner_lr": -LR},
        "no_adaptation": options | {"inner_steps": 0},
        "one_step": options | {"inner_steps": 1} if steps > 1 else None,
        "fixed_loss": options | {"loss_fn": F.cross_entropy} if loss_fn is not F.cross_entropy else None,
    }
    for name, changes in mistakes.items():
        if changes is not None and is_adaptation(phi, problem, **changes):
            return CheckResult.hint(_HINTS[name])
    theta = problem[1]
    body = [
        name
        for name in theta
        if name not in HEAD and not torch.allclose(phi[name].detach(), theta[name], **TOLERANCE)
    ]
    if body:
        return CheckResult.hint(f"the body's parameters {body} changed: ANIL passes them through as they are")
    return CheckResult.hint(
        f"the head's adapted parameters differ from inner_steps={steps} steps phi_head - inner_lr * "
        "grad_head of the support loss: compare your loop with the chapter's equation"
    )


def _unreached(names: list[str]) -> str:
    if all(name not in HEAD for name in names):
        return (
            f"no meta-gradient reaches the body ({', '.join(names)}): pass the body's tensors of params "
            "through as they are, not detached or copied"
        )
    return cut_off(names)


def check_anil_adaptation(fn: Callable[..., Params], *, seed: int = 0) -> CheckResult:
    """Check ``anil_adapt(model, params, support_x, support_y, *, head, loss_fn, inner_lr, inner_steps)``.

    The function must return the adapted parameters, a dict keyed like ``params``: the
    parameters named in ``head`` after ``inner_steps`` steps phi_head - inner_lr * grad_head
    of ``loss_fn`` on the support set, the others (the body) passed through as they are,
    differentiable with respect to every tensor of ``params``, second order. It is run on
    three problems drawn from ``seed`` (a 3-class MLP classifier, 6 support and 9 query
    points; 1 and 2 steps with the cross-entropy, 3 with a label-smoothed one) and compared
    in value and in the meta-gradient of the query loss with ``mamlbook.adapt``'s
    ``adapt_only``.

    Args:
        fn: the function to check.
        seed: chooses the problems.

    Returns:
        The verdict, correct or a hint naming the mistake that explains the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, "anil_adapt(model, params, support_x, support_y, *, head, ...)", seed)
    for problem_seed, (steps, loss_fn) in zip(problem_seeds(seed, len(_PROBLEMS)), _PROBLEMS, strict=True):
        problem = classifier_problem(problem_seed)
        hint = judge(
            fn,
            _CALL,
            problem,
            loss_fn,
            LR,
            keywords={"head": list(HEAD), "inner_steps": steps},
            options={"inner_steps": steps, "adapt_only": HEAD},
            value_hint=functools.partial(_value_hint, problem=problem, loss_fn=loss_fn, steps=steps),
            unreached=_unreached,
        )
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the adapted params and the meta-gradient equal head-only adaptation's (1, 2 and 3 steps, "
        "two losses); the body passes through"
    )
