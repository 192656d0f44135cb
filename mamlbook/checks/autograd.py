"""Checker for chapter 2: one gradient step written as a function of a params dict.

``check_sgd_step(fn)`` computes the expected step first, on its own float64 problem drawn
from ``seed`` (0, the default, is the chapter's), then calls the reader's function on
copies of the model, the params and the data, three times: twice with the mean squared
error, to catch gradients that pile up in ``.grad``, and once with the Huber loss, to
catch a loss written into the step instead of ``loss_fn``. An exception or a wrong type
becomes a hint, as do an in-place update, a step taken at the model's own weights, a
wrong sign, the gradient or the change returned instead of the new parameters, and a
result cut from autograd's graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..types import LossFn, Params
from ._problems import all_close, copied, float64_mlp, leaves, params_hint, same
from ._student import call_student, check_arguments
from .result import CheckResult

SgdStep = Callable[..., Params]
"""``sgd_step(model, params, x, y, loss_fn, lr) -> new params``."""

_LR = 0.1
_CALL = "sgd_step(model, params, x, y, loss_fn, lr)"
_CALLS = (("first", F.mse_loss), ("second", F.mse_loss), ("huber", F.huber_loss))  # (which, loss_fn)


def _problem(seed: int) -> tuple[nn.Module, Params, torch.Tensor, torch.Tensor]:
    """A small float64 network whose own weights differ from the params passed to the step, and
    6 points of a sine: on a grid from -2 to 2 for seed 0, drawn from that range for the others."""
    model = float64_mlp((8,), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    params = {
        name: tensor.detach() + 0.3 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        for name, tensor in model.named_parameters()
    }
    if seed == 0:
        x = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64)[:, None]
    else:
        x = 4.0 * torch.rand(6, 1, generator=generator, dtype=torch.float64) - 2.0
    return model, leaves(params), x, torch.sin(x)


def _gradient(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> Params:
    """The gradient of ``loss_fn`` of ``functional_call(model, params)`` with respect to ``params``."""
    theta = leaves(params)
    loss = loss_fn(functional_call(model, theta, (x,)), y)
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


def _step(params: Params, gradient: Params, lr: float = _LR) -> Params:
    return {name: params[name].detach() - lr * grad for name, grad in gradient.items()}


def _close(result: Mapping[str, torch.Tensor], expected: Params) -> bool:
    return all_close(result, expected, rtol=1e-9, atol=1e-12)


def _error_hint(error: Exception) -> CheckResult | None:
    """The hint for an exception raised by the student's step that reveals a classic mistake, else None."""
    if not isinstance(error, (RuntimeError, TypeError, AttributeError)):
        return None
    text = str(error)
    if "in-place" in text or "leaf Variable" in text:
        return CheckResult.hint(
            "an in-place update (p -= ..., p.add_(...)) hit a tensor that autograd tracks; "
            "build new tensors instead: {name: p - lr * g for ...}"
        )
    if "not have been used in the graph" in text or "does not require grad" in text:
        return CheckResult.hint(
            "the loss does not depend on the params you were given: compute the prediction with "
            "functional_call(model, params, (x,)), not model(x), and keep the loss a tensor (no .item())"
        )
    if "NoneType" in text:
        return CheckResult.hint(
            "a gradient is None: the loss was not computed from params, or .grad was read without "
            "backward(); use torch.autograd.grad(loss, list(params.values()))"
        )
    if "float" in text:
        return CheckResult.hint(
            f"a Python float where a tensor was expected ({text}); .item() leaves autograd's graph, "
            "keep the loss as a tensor"
        )
    return None


def _value_hint(
    result: Mapping[str, torch.Tensor],
    model: nn.Module,
    params: Params,
    data: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn,
) -> str:
    """Name the mistake that a wrong result matches, by comparing it with usual wrong answers."""
    gradient = _gradient(model, params, *data, loss_fn)
    own = _gradient(model, dict(model.named_parameters()), *data, loss_fn)
    candidates = [
        (_step(params, gradient, -_LR), "wrong sign: step against the gradient"),
        (gradient, "you returned the gradients; return the new parameters params - lr * gradient"),
        ({n: -_LR * g for n, g in gradient.items()}, "you returned the change; add it to params"),
        (
            _step(params, own),
            "the gradient was taken at the model's own weights (model(x)), not at params: "
            "evaluate with functional_call(model, params, (x,))",
        ),
    ]
    if loss_fn is not F.mse_loss:
        candidates.append(
            (
                _step(params, _gradient(model, params, *data, F.mse_loss)),
                "the step ignores loss_fn and uses a mean squared error: compute the loss with loss_fn",
            )
        )
    return next(
        (hint for wrong, hint in candidates if _close(result, wrong)),
        "the new parameters differ from params - lr * gradient of the loss at params",
    )


def check_sgd_step(sgd_step: SgdStep, *, seed: int = 0) -> CheckResult:
    """Check ``sgd_step(model, params, x, y, loss_fn, lr) -> new params`` (chapter 2).

    The step must return ``{name: params[name] - lr * gradient}``, the gradient of
    ``loss_fn(functional_call(model, params, (x,)), y)`` at ``params``, as new tensors
    that still depend on ``params``, leaving ``params``, the model and the data
    unchanged. It is run on a float64 network with one hidden layer of 8 units and 6
    points of a sine, three times on the same copies of the inputs: twice with the mean
    squared error, so gradients that pile up in ``.grad`` between calls are caught, then
    with the Huber loss, so a loss other than ``loss_fn`` is caught.

    Args:
        sgd_step: the function to check.
        seed: chooses the network's weights, the params and the points; 0 gives the chapter's.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.

    Raises:
        TypeError: ``sgd_step`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(sgd_step, _CALL, seed)
    model, params, x, y = _problem(seed)
    given = copied((model, params, x, y))  # the same copies for every call, as a notebook would pass them
    for which, loss_fn in _CALLS:
        expected = _step(params, _gradient(model, params, x, y, loss_fn))
        result, hint = call_student(sgd_step, _CALL, *given, loss_fn, _LR, explain=_error_hint)
        if hint is not None:
            return hint
        if not same(given[1], params):
            return CheckResult.hint(
                "params changed during the call (p -= ..., p.data, copy_, an optimizer step): "
                "leave the caller's tensors alone and return new ones"
            )
        if not same(given[0], model):
            return CheckResult.hint(
                "the model's own weights changed: a functional step leaves the model alone"
            )
        if not same(given[2:], (x, y)):
            return CheckResult.hint("x or y changed during the call: leave the data alone")
        hint = params_hint(result, params, "params")
        if hint is not None:
            return hint
        if not _close(result, expected):
            if which == "second":
                return CheckResult.hint(
                    "right on the first call, wrong on the second: gradients pile up in .grad; "
                    "use torch.autograd.grad, which does not touch .grad"
                )
            return CheckResult.hint(_value_hint(result, model, params, (x, y), loss_fn))
    if not all(tensor.requires_grad for tensor in result.values()):
        return CheckResult.hint(
            "the values are right but cut from autograd's graph (.item(), .detach(), .data or "
            "torch.tensor(...)): keep them as tensor expressions of params, p - lr * g"
        )
    return CheckResult.correct(
        "the step equals params - lr * gradient and leaves params and the model unchanged"
    )
