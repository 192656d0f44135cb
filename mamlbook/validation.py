"""Argument checks at the package's public boundary.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the
argument, the value received and what was expected, so a mistake surfaces where the
reader made it rather than deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .types import InnerLR, StepLR, TaskBatch


class NonFiniteLossError(ValueError):
    """A loss or adapted parameter became NaN or infinite during adaptation."""


def check_inner_lr(inner_lr: object, name: str = "inner_lr") -> float:
    """Return ``inner_lr`` as a float; it must be a finite number >= 0. ``name`` is the
    argument's name in the messages."""
    return check_nonnegative_float(name, inner_lr)


def check_nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float; it must be finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float; it must be finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int; it must be an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_range(name: str, bounds: object) -> tuple[float, float]:
    """Return ``bounds`` as ``(low, high)``: two finite numbers with low < high."""
    try:
        low, high = (float(bound) for bound in bounds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{name} must be finite with low < high, got ({low}, {high})")
    return low, high


def check_loss_fn(loss_fn: object) -> None:
    """``loss_fn`` must be callable as ``loss_fn(prediction, target) -> scalar``."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(prediction, target), got {loss_fn!r}")


def check_params(model: object, params: object) -> None:
    """``params`` must hold a tensor for each of ``model``'s parameters, of the same shape.

    Args:
        model: the ``nn.Module`` the params are evaluated with.
        params: a dict from parameter name to tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a dict of tensors such as dict(model.named_parameters()), "
            f"got {type(params).__name__}"
        )
    expected = dict(model.named_parameters())
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"params does not match the model: missing {missing}, unexpected {unexpected}; "
            f"build it with dict(model.named_parameters())"
        )
    for name, tensor in params.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"params[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(expected[name].shape)}"
            )


class InnerLoopArgs(NamedTuple):
    """The checked arguments of an inner-loop call (see ``check_inner_loop_args``)."""

    inner_lr: InnerLR
    steps: int
    adapt_only: tuple[str, ...] | None


def check_inner_loop_args(
    model: object,
    params: object,
    loss_fn: object,
    inner_lr: object,
    steps: object,
    *,
    min_steps: int = 0,
    adapt_only: object = None,
) -> InnerLoopArgs:
    """The checks shared by every function that runs the inner loop.

    ``params`` must match ``model``, ``loss_fn`` be callable, ``steps`` an integer >=
    ``min_steps``, ``adapt_only`` name parameters (see ``check_adapt_only``) and
    ``inner_lr`` be a rate for those parameters (see ``check_inner_lr_schedule``).

    Returns:
        ``inner_lr`` (a float where it was a number), ``steps`` as an int and the
        names of the adapted parameters (None: all of them).
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    steps = check_int("steps", steps, minimum=min_steps)
    adapt_only = check_adapt_only(params, adapt_only)
    adapted_names = tuple(params) if adapt_only is None else adapt_only
    return InnerLoopArgs(check_inner_lr_schedule(inner_lr, params, adapted_names, steps), steps, adapt_only)


def check_adapt_only(params: Mapping[str, torch.Tensor], adapt_only: object) -> tuple[str, ...] | None:
    """The names of the parameters that the inner loop adapts; None adapts them all.

    Each entry of ``adapt_only`` selects a parameter by its full name or a module by
    its prefix: ``"head"`` selects ``head.weight`` and ``head.bias`` (ANIL).

    Returns:
        The selected names in the order of ``params``.
    """
    if adapt_only is None:
        return None
    entries = (adapt_only,) if isinstance(adapt_only, str) else adapt_only
    if not isinstance(entries, Iterable) or not all(isinstance(entry, str) for entry in entries):
        raise TypeError(f"adapt_only must be None, a name or a sequence of names, got {adapt_only!r}")
    entries = tuple(entries)
    if not entries:
        raise ValueError("adapt_only is empty; pass None to adapt every parameter")
    for entry in entries:
        if not any(_selects(entry, name) for name in params):
            raise ValueError(
                f"adapt_only entry {entry!r} matches no parameter; the parameters are {sorted(params)}"
            )
    return tuple(name for name in params if any(_selects(entry, name) for entry in entries))


def _selects(entry: str, name: str) -> bool:
    """Whether ``entry`` is the parameter ``name`` or one of the modules above it."""
    return name == entry or name.startswith(entry + ".")


def check_inner_lr_schedule(
    inner_lr: object, params: Mapping[str, torch.Tensor], adapted_names: Sequence[str], steps: int
) -> InnerLR:
    """Check the three forms of ``inner_lr`` (``mamlbook.types.InnerLR``).

    - a number >= 0 for every parameter and step (MAML's alpha);
    - a mapping from each adapted parameter's name to a tensor, a scalar or of the
      parameter's shape (Meta-SGD's learned rates), used at every step;
    - a list or tuple of ``steps`` such rates, one per inner step (MAML++).

    Returns:
        ``inner_lr``, with numbers converted to floats.
    """
    if isinstance(inner_lr, (list, tuple)):
        if len(inner_lr) != steps:
            raise ValueError(
                f"inner_lr has one rate per step for {len(inner_lr)} steps, but steps={steps}; "
                "give one rate per inner step"
            )
        return [
            _check_step_lr(rate, params, adapted_names, f"inner_lr[{step}]")
            for step, rate in enumerate(inner_lr)
        ]
    return _check_step_lr(inner_lr, params, adapted_names, "inner_lr")


def _check_step_lr(
    rate: object, params: Mapping[str, torch.Tensor], adapted_names: Sequence[str], label: str
) -> StepLR:
    """One step's rate: a number (checked like ``check_inner_lr``) or tensors per adapted name."""
    if not isinstance(rate, Mapping):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(
                f"{label} must be a number, a mapping from parameter names to tensors, or a list "
                f"of those per step, got {type(rate).__name__}"
            )
        return check_inner_lr(rate, label)
    missing = [name for name in adapted_names if name not in rate]
    extra = [name for name in rate if name not in adapted_names]
    if missing or extra:
        raise ValueError(
            f"{label} must hold a rate for exactly the adapted parameters; "
            f"missing {missing}, not adapted {extra}"
        )
    for name in adapted_names:
        tensor, param = rate[name], params[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TypeError(f"{label}[{name!r}] must be a floating-point tensor, got {tensor!r}")
        if tensor.shape not in (torch.Size(), param.shape):
            raise ValueError(
                f"{label}[{name!r}] must be a scalar or of the parameter's shape {tuple(param.shape)}, "
                f"got shape {tuple(tensor.shape)}"
            )
        if tensor.device != param.device:
            raise ValueError(f"{label}[{name!r}] is on {tensor.device} but the params are on {param.device}")
    return rate


def check_step_weights(step_weights: object, steps: int) -> list[float]:
    """Weights of the query losses after each inner step (MAML++'s multi-step loss).

    They must be ``steps`` finite numbers >= 0, not all zero.
    """
    if isinstance(step_weights, torch.Tensor):
        step_weights = step_weights.tolist()
    if not isinstance(step_weights, Sequence) or isinstance(step_weights, str):
        raise TypeError(f"step_weights must be a sequence of {steps} numbers, got {step_weights!r}")
    if len(step_weights) != steps or steps == 0:
        raise ValueError(
            f"step_weights must hold one weight per inner step (steps={steps} >= 1), got {step_weights!r}"
        )
    weights = []
    for weight in step_weights:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, numbers.Real)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(f"step_weights must be finite numbers >= 0, got {step_weights!r}")
        weights.append(float(weight))
    if not any(weights):
        raise ValueError("step_weights are all zero; at least one step must count")
    return weights


def check_support_set(x: object, y: object, *, device: torch.device | None = None) -> None:
    """``x`` and ``y`` must be tensors ``(K, ...)`` with the same K >= 1, on ``device`` if given."""
    for name, tensor in (("x", x), ("y", y)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if device is not None and tensor.device != device:
            raise ValueError(
                f"{name} is on {tensor.device} but the params are on {device}; move it with {name}.to(device)"
            )
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x and y must hold the same number K >= 1 of examples, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def params_device(params: Mapping[str, torch.Tensor]) -> torch.device | None:
    """The device of the first tensor of ``params``; None when it is empty."""
    return next((tensor.device for tensor in params.values()), None)


def check_task_batch(batch: object, *, device: torch.device | None = None) -> TaskBatch:
    """Return ``batch`` as a TaskBatch after checking that its shapes agree.

    Support tensors must be ``(T, K, ...)`` and query tensors ``(T, Q, ...)`` with the
    same T >= 1, K >= 1 and Q >= 1, and inputs of the same trailing shape. With
    ``device``, every tensor must be on it.
    """
    if not isinstance(batch, tuple) or len(batch) != 4:
        raise TypeError(
            f"batch must be a TaskBatch(support_x, support_y, query_x, query_y), got {type(batch).__name__}"
        )
    batch = TaskBatch(*batch)
    for field, tensor in zip(TaskBatch._fields, batch, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"batch.{field} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() < 2:
            raise ValueError(
                f"batch.{field} must have leading shape (T, K, ...), got shape {tuple(tensor.shape)}"
            )
        if device is not None and tensor.device != device:
            raise ValueError(
                f"batch.{field} is on {tensor.device} but the params are on {device}; "
                f"move it with batch.to(device)"
            )
    support_x, support_y, query_x, query_y = batch
    num_tasks = support_x.shape[0]
    for field, tensor in zip(TaskBatch._fields[1:], batch[1:], strict=True):
        if tensor.shape[0] != num_tasks:
            raise ValueError(f"batch.{field} has {tensor.shape[0]} tasks but batch.support_x has {num_tasks}")
    if num_tasks == 0:
        raise ValueError("batch has T = 0 tasks; it needs at least one")
    for x_name, x, y_name, y in (
        ("support_x", support_x, "support_y", support_y),
        ("query_x", query_x, "query_y", query_y),
    ):
        if x.shape[1] != y.shape[1]:
            raise ValueError(
                f"batch.{x_name} has {x.shape[1]} examples per task but batch.{y_name} has {y.shape[1]}"
            )
        if x.shape[1] == 0:
            raise ValueError(f"batch.{x_name} has K = 0 examples per task; it needs at least one")
    if support_x.shape[2:] != query_x.shape[2:]:
        raise ValueError(
            f"support and query inputs differ in shape: batch.support_x {tuple(support_x.shape)}, "
            f"batch.query_x {tuple(query_x.shape)} (only the first two dimensions may differ)"
        )
    return batch


def raise_if_not_finite(
    support_losses: torch.Tensor,
    final_is_finite: torch.Tensor,
    *,
    inner_lr: InnerLR,
    final_what: str,
    query_sets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Raise ``NonFiniteLossError`` naming the first inner step whose loss was not finite.

    A non-finite final value is blamed on the query set when it holds NaN or inf, on
    the params when no inner step was taken, and on ``inner_lr`` otherwise.

    Args:
        support_losses: ``(T, steps)`` support loss of each task before each inner step.
        final_is_finite: ``(T,)`` bool, whether what the fully adapted parameters gave
            (their values, or their query loss) is finite.
        inner_lr: the inner learning rate used, quoted in the message when a number.
        final_what: what ``final_is_finite`` describes, for the message.
        query_sets: ``(query_x, query_y)``, ``(T, Q, ...)`` each, looked at only on
            failure; None when ``final_is_finite`` does not depend on them.
    """
    support_is_finite = torch.isfinite(support_losses)
    if bool(support_is_finite.all() & final_is_finite.all()):
        return
    num_steps = support_losses.shape[1]
    bad_steps = (~support_is_finite).any(dim=0).nonzero()
    if len(bad_steps) == 0:
        task = int((~final_is_finite).nonzero()[0])
        if query_sets is not None and not all(
            bool(torch.isfinite(tensor[task]).all()) for tensor in query_sets
        ):
            raise NonFiniteLossError(
                f"non-finite {final_what} for task {task}: its query set holds NaN or inf; "
                "check batch.query_x and batch.query_y"
            )
        if num_steps == 0:
            raise NonFiniteLossError(
                f"non-finite {final_what} for task {task} with no inner step taken: "
                "check the params for NaN or inf"
            )
        raise NonFiniteLossError(
            f"the {final_what} of task {task} became non-finite after all {num_steps} inner "
            f"step(s) with {describe_inner_lr(inner_lr)}; try a smaller inner_lr"
        )
    step = int(bad_steps[0])
    task = int((~support_is_finite[:, step]).nonzero()[0])
    if step == 0:
        raise NonFiniteLossError(
            f"the support loss of task {task} is non-finite before any inner step: "
            "check the inputs and the params for NaN or inf"
        )
    raise NonFiniteLossError(
        f"the support loss of task {task} became non-finite at inner step {step + 1} of "
        f"{num_steps} (after {step} update(s) with {describe_inner_lr(inner_lr)}); try a smaller inner_lr"
    )


def describe_inner_lr(inner_lr: InnerLR) -> str:
    """``inner_lr`` for an error message: its value when a number."""
    return f"inner_lr={inner_lr}" if isinstance(inner_lr, float) else "the given per-parameter inner_lr"
