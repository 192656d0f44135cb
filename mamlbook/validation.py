"""Argument checks at the package's public boundary.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the
argument, the value received and what was expected, so a mistake surfaces where the
reader made it rather than deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
from torch import nn

from .types import TaskBatch


class NonFiniteLossError(ValueError):
    """A loss or adapted parameter became NaN or infinite during adaptation."""


def check_inner_lr(inner_lr: object) -> float:
    """Return ``inner_lr`` as a float; it must be a finite number >= 0."""
    if isinstance(inner_lr, bool) or not isinstance(inner_lr, numbers.Real):
        raise TypeError(f"inner_lr must be a real number, got {type(inner_lr).__name__}")
    inner_lr = float(inner_lr)
    if not math.isfinite(inner_lr) or inner_lr < 0:
        raise ValueError(f"inner_lr must be a finite number >= 0, got {inner_lr}")
    return inner_lr


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


def check_inner_loop_args(
    model: object, params: object, loss_fn: object, inner_lr: object, steps: object, *, min_steps: int = 0
) -> tuple[float, int]:
    """The checks shared by every function that runs the inner loop.

    Returns:
        ``inner_lr`` as a float and ``steps`` as an int, once ``params`` matches
        ``model``, ``loss_fn`` is callable, ``inner_lr`` is finite and >= 0 and
        ``steps`` is an integer >= ``min_steps``.
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    return check_inner_lr(inner_lr), check_int("steps", steps, minimum=min_steps)


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
    inner_lr: float,
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
        inner_lr: the inner learning rate used, quoted in the message.
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
            f"step(s) with inner_lr={inner_lr}; try a smaller inner_lr"
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
        f"{num_steps} (after {step} update(s) with inner_lr={inner_lr}); try a smaller inner_lr"
    )
