"""Checker for chapter 2: one gradient step written as a function of a params dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..types import Params
from ._problems import all_close, float64_mlp, leaves
from .result import CheckResult

SgdStep = Callable[..., Params]
"""``sgd_step(model, params, x, y, loss_fn, lr) -> new params``."""

_LR = 0.1


def _problem() -> tuple[nn.Module, Params, torch.Tensor, torch.Tensor]:
    """A small float64 network whose own weights differ from the params passed to the step."""
    model = float64_mlp((8,), seed=0)
    generator = torch.Generator().manual_seed(0)
    params = {
        name: tensor.detach() + 0.3 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        for name, tensor in model.named_parameters()
    }
    x = torch.linspace(-2.0, 2.0, 6, dtype=torch.float64)[:, None]
    return model, leaves(params), x, torch.sin(x)


def _gradient(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """The gradient of the MSE of ``functional_call(model, params)`` with respect to ``params``."""
    theta = leaves(params)
    loss = F.mse_loss(functional_call(model, theta, (x,)), y)
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values())), strict=True))


def _close(result: Mapping[str, torch.Tensor], expected: Params) -> bool:
    return all_close(result, expected, rtol=1e-9, atol=1e-12)


def _error_hint(error: Exception) -> CheckResult:
    """A hint for an exception raised by the student's step."""
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
    return CheckResult.hint(f"your function raised {type(error).__name__}: {text}")


def _value_hint(result: Mapping[str, torch.Tensor], params: Params, gradient: Params, own: Params) -> str:
    """Name the mistake that a wrong result matches, by comparing it with usual wrong answers."""
    theta = {name: tensor.detach() for name, tensor in params.items()}
    candidates = [
        ({n: theta[n] + _LR * g for n, g in gradient.items()}, "wrong sign: step against the gradient"),
        (gradient, "you returned the gradients; return the new parameters params - lr * gradient"),
        ({n: -_LR * g for n, g in gradient.items()}, "you returned the change; add it to params"),
        (
            {n: theta[n] - _LR * g for n, g in own.items()},
            "the gradient was taken at the model's own weights (model(x)), not at params: "
            "evaluate with functional_call(model, params, (x,))",
        ),
    ]
    return next(
        (hint for wrong, hint in candidates if _close(result, wrong)),
        "the new parameters differ from params - lr * gradient of the loss at params",
    )


def check_sgd_step(sgd_step: SgdStep) -> CheckResult:
    """Check ``sgd_step(model, params, x, y, loss_fn, lr) -> new params`` (chapter 2).

    The step must return ``{name: params[name] - lr * gradient}``, the gradient of
    ``loss_fn(functional_call(model, params, (x,)), y)`` at ``params``, as new tensors
    that still depend on ``params``, leaving ``params`` and the model unchanged. It is
    called twice, so gradients that pile up in ``.grad`` between calls are caught.

    Args:
        sgd_step: the function to check.

    Returns:
        The verdict, with a hint naming the likely mistake when it is wrong.
    """
    if not callable(sgd_step):
        raise TypeError(f"sgd_step must be a function, got {type(sgd_step).__name__}")
    model, params, x, y = _problem()
    before = {name: tensor.detach().clone() for name, tensor in params.items()}
    own_before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    gradient = _gradient(model, params, x, y)
    expected = {name: before[name] - _LR * g for name, g in gradient.items()}
    for call in ("first", "second"):
        try:
            result = sgd_step(model, params, x, y, F.mse_loss, _LR)
        except (RuntimeError, TypeError, AttributeError) as error:
            return _error_hint(error)
        if not _close(params, before):
            return CheckResult.hint(
                "params changed during the call (p -= ..., p.data, copy_, an optimizer step): "
                "leave the caller's tensors alone and return new ones"
            )
        if not _close(dict(model.named_parameters()), own_before):
            return CheckResult.hint(
                "the model's own weights changed: a functional step leaves the model alone"
            )
        if not isinstance(result, Mapping) or set(result) != set(params):
            return CheckResult.hint(f"return a dict with the keys of params {sorted(params)}")
        if not all(isinstance(tensor, torch.Tensor) for tensor in result.values()):
            return CheckResult.hint("every value of the returned dict must be a tensor")
        if not _close(result, expected):
            if call == "second":
                return CheckResult.hint(
                    "right on the first call, wrong on the second: gradients pile up in .grad; "
                    "use torch.autograd.grad, which does not touch .grad"
                )
            own_gradient = _gradient(model, dict(model.named_parameters()), x, y)
            return CheckResult.hint(_value_hint(result, params, gradient, own_gradient))
    if not all(tensor.requires_grad for tensor in result.values()):
        return CheckResult.hint(
            "the values are right but cut from autograd's graph (.item(), .detach(), .data or "
            "torch.tensor(...)): keep them as tensor expressions of params, p - lr * g"
        )
    return CheckResult.correct(
        "the step equals params - lr * gradient and leaves params and the model unchanged"
    )
