"""Argument checks at the package's public boundary (private: the public functions call them).

Each check raises ``TypeError`` or ``ValueError`` with a message that names the
argument, the value received and what was expected, so a mistake surfaces where the
reader made it rather than deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .types import LossFn, TaskBatch


def check_nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float; it must be finite and >= 0."""
    return _check_float(name, value, positive=False)


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float; it must be finite and > 0."""
    return _check_float(name, value, positive=True)


def _check_float(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
    return value


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int; it must be an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


MAX_SEED = 2**63 - 2
"""The largest seed: torch's generators take 64-bit seeds, and seed + 1 seeds the test tasks."""


def check_seed(name: str, value: object) -> int:
    """Return ``value`` as an int; it must be an integer in 0..``MAX_SEED``."""
    value = check_int(name, value, minimum=0)
    if value > MAX_SEED:
        raise ValueError(f"{name} must be at most {MAX_SEED} (2**63 - 2), got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value``; it must be a ``bool`` (a string such as ``"False"`` would read as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__})")
    return value


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


def check_model(model: object) -> None:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def check_params(model: object, params: object) -> None:
    """``params`` must hold a tensor for each of ``model``'s parameters, of the same shape.

    Args:
        model: the ``nn.Module`` the params are evaluated with.
        params: a dict from parameter name to tensor.
    """
    check_model(model)
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
            f"step_weights must hold one weight per inner step (inner_steps={steps} >= 1), "
            f"got {step_weights!r}"
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


def check_support_set(
    x: object,
    y: object,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    per_task: bool = False,
) -> None:
    """``x`` and ``y`` must be tensors ``(K, ...)`` with the same K >= 1, on ``device`` if given,
    ``x`` of ``dtype`` if given and floating point; with ``per_task``, ``(T, K, ...)`` with the
    same T >= 1 and K >= 1."""
    for name, tensor in (("x", x), ("y", y)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if device is not None and tensor.device != device:
            raise ValueError(
                f"{name} is on {tensor.device} but the params are on {device}; move it with {name}.to(device)"
            )
    leading = 2 if per_task else 1
    if (
        x.dim() < leading
        or y.dim() < leading
        or x.shape[:leading] != y.shape[:leading]
        or 0 in x.shape[:leading]
    ):
        what = (
            "T >= 1 tasks of the same K >= 1 examples" if per_task else "the same number K >= 1 of examples"
        )
        raise ValueError(f"x and y must hold {what}, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    _check_input_dtype("x", x, dtype)


def params_device(params: Mapping[str, torch.Tensor]) -> torch.device | None:
    """The one device of ``params``' tensors; None when it is empty."""
    devices = {tensor.device for tensor in params.values()}
    if len(devices) > 1:
        raise ValueError(f"params are spread over the devices {sorted(map(str, devices))}; move them to one")
    return next(iter(devices), None)


def params_dtype(params: Mapping[str, torch.Tensor]) -> torch.dtype | None:
    """The one floating-point dtype of ``params``' tensors; None when they have none or several."""
    dtypes = {tensor.dtype for tensor in params.values() if tensor.is_floating_point()}
    return next(iter(dtypes)) if len(dtypes) == 1 else None


def _check_input_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype | None) -> None:
    """A floating-point input must have the params' dtype: the model's first layer mixes them."""
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        raise ValueError(
            f"{name} is {tensor.dtype} but the params are {dtype}; convert the inputs with .to({dtype}) "
            "(or the model and params to theirs)"
        )


def check_task_batch(
    batch: object, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> TaskBatch:
    """Return ``batch`` as a TaskBatch after checking that its shapes agree.

    Support tensors must be ``(T, K, ...)`` and query tensors ``(T, Q, ...)`` with the
    same T >= 1, K >= 1 and Q >= 1, and inputs of the same trailing shape. With
    ``device``, every tensor must be on it; with ``dtype``, floating-point inputs must
    have it.
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
    for field in ("support_x", "query_x"):
        _check_input_dtype(f"batch.{field}", getattr(batch, field), dtype)
    return batch


def allow_broadcasting(loss_fn: LossFn) -> LossFn:
    """``loss_fn``, marked to take predictions and targets of shapes that differ.

    By default the package refuses a task whose prediction and target shapes differ
    (``check_prediction_and_target``): an elementwise loss would broadcast them into a
    meaningless value. Wrap a loss that handles such shapes itself, for example
    ``allow_broadcasting(lambda prediction, y: F.mse_loss(prediction.squeeze(-1), y))``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(prediction, target), got {loss_fn!r}")

    def broadcasting_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(prediction, target)

    broadcasting_loss.allows_broadcasting = True  # type: ignore[attr-defined]
    return broadcasting_loss


def check_prediction_and_target(prediction: torch.Tensor, target: torch.Tensor, loss_fn: LossFn) -> None:
    """One task's prediction and target must have one shape, or the target must hold integer
    class indices for the prediction's last dimension (``(K, N)`` logits, ``(K,)`` labels),
    unless ``loss_fn`` comes from ``allow_broadcasting``. Works inside ``vmap``."""
    if prediction.shape == target.shape or getattr(loss_fn, "allows_broadcasting", False):
        return
    if not target.is_floating_point() and target.shape == prediction.shape[:-1]:
        return
    try:
        broadcast = f"would broadcast them to {tuple(torch.broadcast_shapes(prediction.shape, target.shape))}"
    except RuntimeError:
        broadcast = "do not match"
    raise ValueError(
        f"the model's prediction for a task has shape {tuple(prediction.shape)} and its target "
        f"{tuple(target.shape)} ({target.dtype}): they {broadcast}, a meaningless loss. Give targets of "
        "the prediction's shape (for example y[..., None]), or integer class labels of shape (K,) for "
        "(K, N) logits; wrap a loss_fn that handles other shapes itself in mamlbook.allow_broadcasting"
    )


def task_loss(loss_fn: LossFn, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``loss_fn(prediction, target)`` for one task, whose class labels outside the model's
    outputs name their range instead of failing deep inside torch."""
    try:
        return loss_fn(prediction, target)
    except (RuntimeError, IndexError) as error:
        if "out of bounds" not in str(error):
            raise
        classes = prediction.shape[-1]
        raise ValueError(
            f"a target label is outside 0..{classes - 1}, the classes of the model's {classes} outputs "
            f"({error}); labels must run over 0..n_way-1"
        ) from error


def run_model(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``functional_call(model, params, (x,))`` for one task's inputs, whose failure names their shape."""
    try:
        return functional_call(model, params, (x,))
    except RuntimeError as error:
        if "Batching rule not implemented" in str(error):  # for inner.vmapped's fallback
            raise
        raise model_input_error(x.shape, error) from error


def model_input_error(task_input_shape: torch.Size, error: Exception) -> ValueError:
    """The error of a model that failed on one task's inputs of ``task_input_shape``."""
    return ValueError(
        f"the model cannot run on a task's inputs of shape {tuple(task_input_shape)} ({error}); check "
        "the inputs' trailing shape against the model's first layer"
    )
