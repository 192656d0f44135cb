"""Checkers for chapter 7: ANIL's head-only inner loop, a Meta-SGD step, MAML++'s multi-step loss.

Each checker runs the reader's function on small float64 problems drawn from ``seed``
(0, the default, is the chapter's; a grader may pass another), on copies of the inputs,
after computing the expected answer with ``mamlbook.reference`` on its own copies. It
compares the value and the meta-gradient, and when they differ it computes what the
classic mistakes would give on the same problem and names the one that matches:

- ``check_anil_adaptation``: the body adapted too, the body detached or copied (no
  meta-gradient reaches it), first order (no ``create_graph``), the sign, one step
  whatever ``inner_steps`` is, a fixed loss instead of ``loss_fn``;
- ``check_meta_sgd_step``: one number for all rates (the mean of a tensor's rates or of
  all of them), rates detached (no meta-gradient reaches them), rates matched to the
  parameters by position instead of by name, the sign, first order;
- ``check_multi_step_loss``: the last step alone, an unweighted mean or sum, the loss
  before each step instead of after it (step 0 counted), the weights in reverse order,
  the sum over tasks, a detached or first-order inner loop.

The classification problems are a ReLU MLP with a body and a head (``MLP(4, (4, 4), 3)``,
3 classes of 2 support and 3 query points), and the multi-step loss runs on sinusoid tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..models import MLP
from ..reference import adapt_one_task, maml_loss
from ..types import LossFn, Params, TaskBatch
from ._problems import leaves, sinusoid_problem
from ._student import call_student, check_arguments
from .result import CheckResult

_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
_CLASSIFIER_LR = 0.3
_SINE_LR = 0.03
_HEAD = ("head.weight", "head.bias")

_GRAPH = (
    "the graph from params to the result is cut: {why}. Build the new tensors from params' own "
    "tensors (no .detach(), no copy.deepcopy, no torch.no_grad(), no .data)"
)
_FIRST_ORDER = (
    "the values are right but the meta-gradient is first-order: take the inner gradient with "
    "create_graph=True so that the outer gradient flows through it"
)
_SIGN = "the inner step climbs the support loss: check the sign of the update"
_FIXED_LOSS = "the function ignores loss_fn and uses the cross-entropy: call loss_fn"
_ONE_STEP = "the function takes one inner step whatever inner_steps is: loop over the steps"


def _smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy with labels smoothed by 0.2: the checkers' second classification loss."""
    return F.cross_entropy(logits, labels, label_smoothing=0.2)


def _classifier_problem(seed: int) -> tuple[nn.Module, Params, tuple[torch.Tensor, ...]]:
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


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected.detach(), **_TOLERANCE))


def _same(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> bool:
    return all(_close(actual[name].detach(), tensor) for name, tensor in expected.items())


def _as_params(returned: object, params: Params, what: str) -> Params | CheckResult:
    """``returned`` when it is a dict of float64 tensors keyed and shaped like ``params``, else a hint."""
    if not isinstance(returned, Mapping):
        return CheckResult.hint(f"return {what} as a dict keyed like params, got {type(returned).__name__}")
    missing, extra = [n for n in params if n not in returned], [n for n in returned if n not in params]
    if missing or extra:
        return CheckResult.hint(
            f"return every parameter, keyed like params (the unchanged ones too): missing {missing}, "
            f"not in params {extra}"
        )
    for name, tensor in params.items():
        value = returned[name]
        if not isinstance(value, torch.Tensor):
            return CheckResult.hint(f"{what}[{name!r}] must be a tensor, got {type(value).__name__}")
        if value.shape != tensor.shape or value.dtype != tensor.dtype:
            return CheckResult.hint(
                f"{what}[{name!r}] must have the parameter's shape {tuple(tensor.shape)} and dtype "
                f"{tensor.dtype}, got {tuple(value.shape)} and {value.dtype}"
            )
    return dict(returned)


def _gradients(
    loss: torch.Tensor, inputs: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor | None] | CheckResult:
    """The gradient of ``loss`` for each input (None where it does not depend on it), or a hint."""
    if not loss.requires_grad:
        return CheckResult.hint(_GRAPH.format(why="the result does not depend on params"))
    try:
        grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    except RuntimeError as error:
        return CheckResult.hint(_GRAPH.format(why=f"autograd raised {str(error).split('. ')[0]!r}"))
    return dict(zip(inputs, grads, strict=True))


def _query_loss(
    model: nn.Module, phi: Params, data: tuple[torch.Tensor, ...], loss_fn: LossFn
) -> torch.Tensor:
    """The query loss of ``data = (support_x, support_y, query_x, query_y)`` at ``phi``."""
    return loss_fn(functional_call(model, phi, (data[2],)), data[3])


def _inputs(params: Mapping[str, torch.Tensor], rates: object) -> dict[str, torch.Tensor]:
    """``params`` and, when ``rates`` is a dict of tensors, the rates named ``inner_lr['name']``:
    what the meta-gradient is taken with respect to."""
    if not isinstance(rates, Mapping):
        return dict(params)
    return params | {f"inner_lr[{name!r}]": rate for name, rate in rates.items()}


def _expected(
    model: nn.Module,
    theta: Params,
    data: tuple[torch.Tensor, ...],
    loss_fn: LossFn,
    inner_lr: object,
    **options,
) -> tuple[Params, Params]:
    """The reference adapted params (detached) and the meta-gradient of the query loss after them,
    with respect to theta and to learned rates (``inner_lr`` a dict), computed on fresh leaves."""
    params = leaves(theta)
    rates = leaves(inner_lr) if isinstance(inner_lr, Mapping) else inner_lr
    phi = adapt_one_task(model, params, data[0], data[1], loss_fn=loss_fn, inner_lr=rates, **options)
    inputs = _inputs(params, rates)
    grads = torch.autograd.grad(_query_loss(model, phi, data, loss_fn), list(inputs.values()))
    return {name: tensor.detach() for name, tensor in phi.items()}, dict(zip(inputs, grads, strict=True))


def _named(params: Mapping[str, torch.Tensor], **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs of a call by the names a hint gives them: ``params['head.bias']``, ``support_x``, ..."""
    return {f"params[{name!r}]": tensor for name, tensor in params.items()} | tensors


def _call_hint(
    hint: CheckResult | None, copies: Mapping[str, torch.Tensor], originals: Mapping[str, torch.Tensor]
) -> CheckResult | None:
    """The call's own hint (it raised), else a hint when it changed the copies of its inputs it was given."""
    if hint is not None:
        return hint
    changed = [name for name, tensor in originals.items() if not torch.equal(copies[name].detach(), tensor)]
    if changed:
        return CheckResult.hint(
            f"the function changed its inputs in place ({', '.join(changed)}): compute with new "
            "tensors and leave the inputs as they were"
        )
    return None


def _gradient_hint(
    grads: Mapping[str, torch.Tensor | None],
    expected: Params,
    first_order: Params,
    unreached: Callable[[list[str]], str],
) -> CheckResult | None:
    """None when ``grads`` are ``expected``; else the hint for what they are (``unreached(names)``
    when no gradient reaches some of them)."""
    missing = [  # a gradient of zeros where the reference's is not: the input was cut off too
        name for name, grad in grads.items() if grad is None or not (grad.any() or not expected[name].any())
    ]
    if missing:
        return CheckResult.hint(unreached(missing))
    if all(_close(grads[name], tensor) for name, tensor in expected.items()):
        return None
    if all(_close(grads[name], tensor) for name, tensor in first_order.items()):
        return CheckResult.hint(_FIRST_ORDER)
    return CheckResult.hint(
        "the values are right but the meta-gradient is not: look for a .detach() or a tensor rebuilt "
        "from plain numbers"
    )


# ANIL's head-only inner loop

_ANIL_PROBLEMS = ((1, F.cross_entropy), (2, F.cross_entropy), (3, _smoothed_cross_entropy))  # (steps, loss)
_ANIL_CALL = (
    "anil_adapt(model, params, support_x, support_y, head=..., loss_fn=..., inner_lr=..., inner_steps=...)"
)
_ANIL_HINTS = {
    "body_adapted": "the body is adapted too: ANIL steps the head alone, the body passes through",
    "sign": _SIGN,
    "no_adaptation": "the head is not adapted: take inner_steps steps on the head's parameters",
    "one_step": _ONE_STEP,
    "fixed_loss": _FIXED_LOSS,
}


def _anil_value_hint(phi: Params, model, theta, data, loss_fn, steps) -> CheckResult:
    """The hint for adapted params that are not ANIL's: the mistake they match, else what differs."""
    options = {"inner_lr": _CLASSIFIER_LR, "inner_steps": steps, "adapt_only": _HEAD}
    mistakes = {
        "body_adapted": options | {"adapt_only": None},
        "sign": options | {"inner_lr": -_CLASSIFIER_LR},
        "no_adaptation": options | {"inner_steps": 0},
        "one_step": options | {"inner_steps": 1} if steps > 1 else None,
        "fixed_loss": options | {"loss_fn": F.cross_entropy} if loss_fn is not F.cross_entropy else None,
    }
    for name, changes in mistakes.items():
        if changes is not None and _same(
            phi, _expected(model, theta, data, **({"loss_fn": loss_fn} | changes))[0]
        ):
            return CheckResult.hint(_ANIL_HINTS[name])
    body = [name for name in theta if name not in _HEAD and not _close(phi[name].detach(), theta[name])]
    if body:
        return CheckResult.hint(f"the body's parameters {body} changed: ANIL passes them through as they are")
    return CheckResult.hint(
        f"the head's adapted parameters differ from inner_steps={steps} steps phi_head - inner_lr * "
        "grad_head of the support loss: compare your loop with the chapter's equation"
    )


def _anil_unreached(names: list[str]) -> str:
    if all(name not in _HEAD for name in names):
        return (
            f"no meta-gradient reaches the body ({', '.join(names)}): pass the body's tensors of params "
            "through as they are, not detached or copied"
        )
    return _GRAPH.format(why=f"no gradient reaches {', '.join(names)}")


def _check_anil_problem(fn: Callable, seed: int, steps: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` adapts like ANIL on this problem, in value and meta-gradient, else a hint."""
    model, theta, data = _classifier_problem(seed)
    options = {"loss_fn": loss_fn, "inner_lr": _CLASSIFIER_LR, "inner_steps": steps, "adapt_only": _HEAD}
    expected, expected_grads = _expected(model, theta, data, **options)
    _, first_order_grads = _expected(model, theta, data, first_order=True, **options)
    params, support_x, support_y = leaves(theta), data[0].clone(), data[1].clone()
    returned, hint = call_student(
        fn, _ANIL_CALL, model, params, support_x, support_y,
        head=list(_HEAD), loss_fn=loss_fn, inner_lr=_CLASSIFIER_LR, inner_steps=steps,
    )  # fmt: skip
    hint = _call_hint(
        hint,
        _named(params, support_x=support_x, support_y=support_y),
        _named(theta, support_x=data[0], support_y=data[1]),
    )
    if hint is not None:
        return hint
    phi = _as_params(returned, theta, "the adapted params")
    if isinstance(phi, CheckResult):
        return phi
    if not _same(phi, expected):
        return _anil_value_hint(phi, model, theta, data, loss_fn, steps)
    grads = _gradients(_query_loss(model, phi, data, loss_fn), params)
    if isinstance(grads, CheckResult):
        return grads
    return _gradient_hint(grads, expected_grads, first_order_grads, _anil_unreached)


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
    """
    seed = check_arguments(fn, "anil_adapt(model, params, support_x, support_y, *, head, ...)", seed)
    for offset, (steps, loss_fn) in enumerate(_ANIL_PROBLEMS):
        hint = _check_anil_problem(fn, seed + offset, steps, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the adapted params and the meta-gradient equal head-only adaptation's (1, 2 and 3 steps, "
        "two losses); the body passes through"
    )


# One Meta-SGD inner step

_META_SGD_LOSSES = (F.cross_entropy, _smoothed_cross_entropy)
_META_SGD_CALL = "meta_sgd_step(model, params, support_x, support_y, loss_fn=..., inner_lr=...)"
_META_SGD_ORDER = ("body.2.weight", "body.2.bias", "body.0.weight", "body.0.bias", "head.weight", "head.bias")
_META_SGD_HINTS = {
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
    "sign": _SIGN,
    "no_adaptation": "the params are returned unchanged: take one step theta - inner_lr[name] * grad",
    "fixed_loss": _FIXED_LOSS,
}


def _rates(theta: Params, seed: int) -> dict[str, torch.Tensor]:
    """Meta-SGD's rates, one per weight in 0.15..0.45, in another order than theta's (``_META_SGD_ORDER``)."""
    generator = torch.Generator().manual_seed(seed)
    drawn = {name: torch.rand(theta[name].shape, generator=generator, dtype=torch.float64) for name in theta}
    return {name: _CLASSIFIER_LR * (0.5 + drawn[name]) for name in _META_SGD_ORDER}


def _meta_sgd_value_hint(phi: Params, model, theta, data, loss_fn, rates) -> CheckResult:
    """The hint for a step that is not Meta-SGD's: the mistake it matches, else what differs."""
    all_rates = torch.cat([rate.flatten() for rate in rates.values()])
    mistakes = {
        "tensor_mean": {name: rate.mean() for name, rate in rates.items()},
        "one_mean": float(all_rates.mean()),
        "position": dict(zip(theta, rates.values(), strict=True)),
        "sign": {name: -rate for name, rate in rates.items()},
        "no_adaptation": 0.0,
    }
    for name, wrong in mistakes.items():
        if _same(phi, _expected(model, theta, data, loss_fn, wrong, inner_steps=1)[0]):
            return CheckResult.hint(_META_SGD_HINTS[name])
    if loss_fn is not F.cross_entropy and _same(
        phi, _expected(model, theta, data, F.cross_entropy, rates, inner_steps=1)[0]
    ):
        return CheckResult.hint(_META_SGD_HINTS["fixed_loss"])
    return CheckResult.hint(
        "the adapted params differ from theta - inner_lr[name] * grad of the support loss, elementwise"
    )


def _meta_sgd_unreached(names: list[str]) -> str:
    if all(name.startswith("inner_lr") for name in names):
        return (
            "no meta-gradient reaches the rates inner_lr: Meta-SGD learns them, so keep them in the graph "
            "(no .detach(), .item() or torch.tensor(...) of them)"
        )
    return _GRAPH.format(why=f"no gradient reaches {', '.join(names)}")


def _check_meta_sgd_problem(fn: Callable, seed: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` takes Meta-SGD's step on this problem, in value and meta-gradient, else a hint."""
    model, theta, data = _classifier_problem(seed)
    rates = _rates(theta, seed)
    expected, expected_grads = _expected(model, theta, data, loss_fn, rates, inner_steps=1)
    _, first_order_grads = _expected(model, theta, data, loss_fn, rates, inner_steps=1, first_order=True)
    params, inner_lr, support_x, support_y = leaves(theta), leaves(rates), data[0].clone(), data[1].clone()
    returned, hint = call_student(
        fn, _META_SGD_CALL, model, params, support_x, support_y, loss_fn=loss_fn, inner_lr=inner_lr
    )
    hint = _call_hint(
        hint,
        _inputs(_named(params, support_x=support_x, support_y=support_y), inner_lr),
        _inputs(_named(theta, support_x=data[0], support_y=data[1]), rates),
    )
    if hint is not None:
        return hint
    phi = _as_params(returned, theta, "the adapted params")
    if isinstance(phi, CheckResult):
        return phi
    if not _same(phi, expected):
        return _meta_sgd_value_hint(phi, model, theta, data, loss_fn, rates)
    grads = _gradients(_query_loss(model, phi, data, loss_fn), _inputs(params, inner_lr))
    if isinstance(grads, CheckResult):
        return grads
    return _gradient_hint(grads, expected_grads, first_order_grads, _meta_sgd_unreached)


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
    """
    seed = check_arguments(
        fn, "meta_sgd_step(model, params, support_x, support_y, *, loss_fn, inner_lr)", seed
    )
    for offset, loss_fn in enumerate(_META_SGD_LOSSES):
        hint = _check_meta_sgd_problem(fn, seed + offset, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the adapted params and the meta-gradients, to theta and to the rates, equal Meta-SGD's step "
        "(two losses, rates given in another order than params)"
    )


# MAML++'s multi-step loss

_MULTI_STEP_PROBLEMS = ((2, F.mse_loss), (3, F.huber_loss))  # (steps, loss_fn)
_MULTI_STEP_CALL = "multi_step_loss(model, params, batch, loss_fn=..., inner_lr=..., step_weights=...)"
_MULTI_STEP_HINTS = {
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
    "sign": _SIGN,
    "sum_tasks": "the loss is T times too large: average the query losses over the tasks instead of summing",
    "fixed_loss": "the function ignores loss_fn and uses a mean squared error: call loss_fn",
}


def _step_weights(seed: int, steps: int) -> list[float]:
    """``steps`` weights that grow with the step and sum to 1, as MAML++'s do during annealing."""
    raw = torch.arange(1, steps + 1, dtype=torch.float64) + 0.5 * torch.rand(
        steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return (raw / raw.sum()).tolist()


def _multi_step_mistakes(model, theta, batch, loss_fn, weights) -> dict[str, torch.Tensor]:
    """What each classic mistake gives as the loss on this problem."""
    steps, w = len(weights), torch.tensor(weights, dtype=torch.float64)

    def after(
        inner_lr=_SINE_LR, loss=loss_fn
    ) -> torch.Tensor:  # (steps + 1,) mean query losses after 0..n steps
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
        "sign": (w * after(inner_lr=-_SINE_LR)[1:]).sum(),
        "sum_tasks": batch.num_tasks * right,
    }
    if loss_fn is not F.mse_loss:
        found["fixed_loss"] = (w * after(loss=F.mse_loss)[1:]).sum()
    return found


def _multi_step_expected(model, theta, batch, loss_fn, weights, **options) -> tuple[torch.Tensor, Params]:
    """The reference multi-step loss and its gradient with respect to theta, on fresh leaves."""
    params = leaves(theta)
    loss = maml_loss(
        model, params, batch, loss_fn=loss_fn, inner_lr=_SINE_LR, inner_steps=len(weights),
        step_weights=weights, **options,
    )  # fmt: skip
    return loss.detach(), dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def _check_multi_step_problem(fn: Callable, seed: int, steps: int, loss_fn: LossFn) -> CheckResult | None:
    """None when ``fn`` gives the multi-step loss of this problem and its meta-gradient, else a hint."""
    model, batch = sinusoid_problem(seed)
    theta = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    weights = _step_weights(seed, steps)
    expected, expected_grads = _multi_step_expected(model, theta, batch, loss_fn, weights)
    _, first_order_grads = _multi_step_expected(model, theta, batch, loss_fn, weights, first_order=True)
    params, given, given_weights = leaves(theta), TaskBatch(*(t.clone() for t in batch)), list(weights)
    returned, hint = call_student(
        fn,
        _MULTI_STEP_CALL,
        model,
        params,
        given,
        loss_fn=loss_fn,
        inner_lr=_SINE_LR,
        step_weights=given_weights,
    )
    hint = _call_hint(hint, _named(params, **given._asdict()), _named(theta, **batch._asdict()))
    if hint is None and given_weights != weights:
        hint = CheckResult.hint("the function changed step_weights in place: leave the inputs as they were")
    if hint is not None:
        return hint
    if not isinstance(returned, torch.Tensor) or not returned.is_floating_point():
        return CheckResult.hint(f"return the loss as a scalar tensor, got {type(returned).__name__}")
    if returned.dim() != 0:
        return CheckResult.hint(
            "return one scalar tensor, the weighted sum over the steps of the mean query loss over "
            f"the tasks; got shape {tuple(returned.shape)}"
        )
    value = returned.detach().double()
    if not _close(value, expected):
        mistakes = _multi_step_mistakes(model, theta, batch, loss_fn, weights)
        name = next((name for name, wrong in mistakes.items() if _close(value, wrong)), None)
        if name is not None:
            return CheckResult.hint(_MULTI_STEP_HINTS[name])
        return CheckResult.hint(
            f"the loss is {value.item():.6g}, expected {expected.item():.6g} ({steps} steps, "
            f"{loss_fn.__name__}): compare with sum_s w_s mean_t L_query,t(phi_t after s steps)"
        )
    grads = _gradients(returned, params)
    if isinstance(grads, CheckResult):
        return grads
    return _gradient_hint(
        grads,
        expected_grads,
        first_order_grads,
        lambda names: _GRAPH.format(why=f"no gradient reaches {', '.join(names)}"),
    )


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
    """
    seed = check_arguments(
        fn, "multi_step_loss(model, params, batch, *, loss_fn, inner_lr, step_weights)", seed
    )
    for offset, (steps, loss_fn) in enumerate(_MULTI_STEP_PROBLEMS):
        hint = _check_multi_step_problem(fn, seed + offset, steps, loss_fn)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the multi-step loss and its meta-gradient equal mamlbook.maml_loss's with step_weights "
        "(2 and 3 steps, MSE and Huber losses)"
    )
