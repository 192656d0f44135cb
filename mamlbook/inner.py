"""The inner loop: adapting parameters to tasks by gradient descent (chapters 4, 5 and 7).

One loop serves every algorithm. ``adaptation`` takes T tasks' parameters, each tensor
with a leading task dimension, down the tasks' own losses one step at a time, and
yields the parameters after each step; ``adapt``, ``maml_loss``, ``evaluate`` and
Reptile consume it. Each step computes the T losses in one call and takes one
``torch.autograd.grad`` of their sum: task t's loss depends only on task t's
parameters, so the gradient of the sum holds every task's own gradient.

The losses are any differentiable function of the parameters (``TaskLosses``): a
supervised loss, or a policy-gradient surrogate. ``vmapped`` and ``looped`` build one
from a function of a single task.

The loop's options are one value, ``InnerLoop``: the rate of each step for each
adapted parameter (MAML's alpha; the rates Meta-SGD and MAML++ learn), which
parameters adapt (all, or ANIL's head), and whether the inner gradients are detached
(first-order MAML).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import torch
from torch.func import vmap

from ._checks import check_bool, check_int, check_nonnegative_float
from .types import Params, TaskLosses

Rate = float | torch.Tensor
"""The rate of one inner step for one parameter, a number or a tensor (a scalar or the
parameter's shape)."""


@dataclasses.dataclass(frozen=True)
class InnerLoop:
    """The inner loop's options, checked against the parameters once (``InnerLoop.of``).

    ``meta_train`` records the one it trained with (``TrainingHistory.inner_loop``); pass
    it as ``inner_loop=`` to ``adapt``, ``evaluate`` or ``maml_loss`` to adapt as in training.

    Attributes:
        rates: ``rates[s][name]``, the rate of inner step s for the adapted parameter
            ``name``; one entry per step.
        adapted: the names of the adapted parameters, in the order of the params; the
            others pass through unchanged and still get a meta-gradient.
        first_order: detach the inner gradients (first-order MAML).
    """

    rates: tuple[Mapping[str, Rate], ...]
    adapted: tuple[str, ...]
    first_order: bool = False

    @property
    def steps(self) -> int:
        """The number of inner steps."""
        return len(self.rates)

    @classmethod
    def of(
        cls,
        params: Mapping[str, torch.Tensor],
        *,
        inner_lr: object,
        inner_steps: object,
        first_order: object = False,
        adapt_only: object = None,
    ) -> InnerLoop:
        """The inner loop of these options for ``params``, each option checked.

        Args:
            params: theta, keyed like ``model.named_parameters()``.
            inner_lr: alpha in one of three forms (``mamlbook.types.InnerLR``): a number
                >= 0 for every parameter and step; a mapping from each adapted
                parameter's name to a tensor, a scalar or of the parameter's shape
                (Meta-SGD), used at every step; or a list of ``inner_steps`` such rates (MAML++).
            inner_steps: the number of inner steps, an integer >= 0.
            first_order: detach the inner gradients.
            adapt_only: adapt only these parameters, each by its name or a module prefix
                (``"head"`` selects ``head.weight`` and ``head.bias``: ANIL); None adapts all.
        """
        steps = check_int("inner_steps", inner_steps, minimum=0)
        adapted = _select(params, adapt_only)
        if isinstance(inner_lr, (list, tuple)):
            if len(inner_lr) != steps:
                raise ValueError(
                    f"inner_lr has one rate per step for {len(inner_lr)} steps, but inner_steps={steps}; "
                    "give one rate per inner step"
                )
            rates = tuple(
                _step_rates(rate, params, adapted, f"inner_lr[{step}]") for step, rate in enumerate(inner_lr)
            )
        else:
            rates = (_step_rates(inner_lr, params, adapted, "inner_lr"),) * steps
        return cls(rates, adapted, check_bool("first_order", first_order))

    @classmethod
    def resolve(
        cls,
        params: Mapping[str, torch.Tensor],
        inner_loop: object,
        *,
        inner_lr: object,
        inner_steps: object,
        first_order: object = False,
        adapt_only: object = None,
    ) -> InnerLoop:
        """The inner loop of a public call, given as ``inner_loop`` or as its options."""
        if inner_loop is None:
            if inner_lr is None or inner_steps is None:
                raise TypeError("give inner_lr and inner_steps, or an inner_loop (mamlbook.InnerLoop)")
            return cls.of(
                params,
                inner_lr=inner_lr,
                inner_steps=inner_steps,
                first_order=first_order,
                adapt_only=adapt_only,
            )
        if not isinstance(inner_loop, InnerLoop):
            raise TypeError(f"inner_loop must be a mamlbook.InnerLoop, got {type(inner_loop).__name__}")
        if (
            inner_lr is not None
            or inner_steps is not None
            or first_order is not False
            or adapt_only is not None
        ):
            raise TypeError("give inner_loop alone, or inner_lr, inner_steps and the other options, not both")
        missing = [name for name in inner_loop.adapted if name not in params]
        if missing:
            raise ValueError(f"inner_loop adapts {missing}, which params does not hold")
        for step, rates in enumerate(inner_loop.rates):
            _step_rates(dict(rates), params, inner_loop.adapted, f"inner_loop.rates[{step}]")
        return inner_loop

    def options(self) -> set[str]:
        """The options that differ from their defaults; a backend refuses any it does not compute."""
        return {
            field.name
            for field in dataclasses.fields(self)
            if field.default is not dataclasses.MISSING and getattr(self, field.name) != field.default
        }

    def describe_rates(self) -> str:
        """The rates as an error message quotes them: ``inner_lr=0.01`` when one number."""
        rates = [rate for step_rates in self.rates for rate in step_rates.values()]
        if rates and all(isinstance(rate, float) for rate in rates) and len(set(rates)) == 1:
            return f"inner_lr={rates[0]}"
        return "the given per-parameter inner_lr"


def _select(params: Mapping[str, torch.Tensor], adapt_only: object) -> tuple[str, ...]:
    """The names of the parameters that ``adapt_only`` selects (ANIL), in params' order."""
    if adapt_only is None:
        return tuple(params)
    entries = (adapt_only,) if isinstance(adapt_only, str) else adapt_only
    if not isinstance(entries, Iterable) or not all(isinstance(entry, str) for entry in entries):
        raise TypeError(f"adapt_only must be None, a name or a sequence of names, got {adapt_only!r}")
    entries = tuple(entries)
    if not entries:
        raise ValueError("adapt_only is empty; pass None to adapt every parameter")

    def selects(entry: str, name: str) -> bool:
        return name == entry or name.startswith(entry + ".")

    for entry in entries:
        if not any(selects(entry, name) for name in params):
            raise ValueError(
                f"adapt_only entry {entry!r} matches no parameter; the parameters are {sorted(params)}"
            )
    return tuple(name for name in params if any(selects(entry, name) for entry in entries))


def _step_rates(
    rate: object, params: Mapping[str, torch.Tensor], adapted: tuple[str, ...], label: str
) -> dict[str, Rate]:
    """One step's rate for each adapted parameter: one number for all, or a tensor each."""
    if not isinstance(rate, Mapping):
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(
                f"{label} must be a number, a mapping from parameter names to tensors, or a list "
                f"of those per step, got {type(rate).__name__}"
            )
        value = check_nonnegative_float(label, rate)
        return dict.fromkeys(adapted, value)
    missing = [name for name in adapted if name not in rate]
    extra = [name for name in rate if name not in adapted]
    if missing or extra:
        raise ValueError(
            f"{label} must hold a rate for exactly the adapted parameters; "
            f"missing {missing}, not adapted {extra}"
        )
    for name in adapted:
        tensor, param = rate[name], params[name]
        if isinstance(tensor, float):
            check_nonnegative_float(f"{label}[{name!r}]", tensor)
            continue
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TypeError(f"{label}[{name!r}] must be a floating-point tensor, got {tensor!r}")
        if tensor.shape not in (torch.Size(), param.shape):
            raise ValueError(
                f"{label}[{name!r}] must be a scalar or of the parameter's shape {tuple(param.shape)}, "
                f"got shape {tuple(tensor.shape)}"
            )
        if tensor.device != param.device:
            raise ValueError(f"{label}[{name!r}] is on {tensor.device} but the params are on {param.device}")
    return {name: rate[name] for name in adapted}


def check_task_losses(losses: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``losses`` when it holds one loss per task, ``(T,)``; else a ``ValueError``."""
    if losses.shape != (num_tasks,):
        why = (
            "a loss_fn with reduction='none' gives one per example; keep its default reduction"
            if losses.dim() > 1
            else "one loss per task of the batch, in the tasks' order"
        )
        shape = tuple(losses.shape)
        raise ValueError(
            f"the losses must hold one scalar per task, shape ({num_tasks},), got {shape}: {why}"
        )
    return losses


def per_task(params: Params, num_tasks: int) -> Params:
    """``params`` repeated for T tasks without copying: each tensor ``(T, ...)``, a view."""
    return {name: tensor.expand(num_tasks, *tensor.shape) for name, tensor in params.items()}


class Step(NamedTuple):
    """T tasks after one inner step.

    Attributes:
        number: the steps taken so far, from 1.
        adapted: the parameters after them, tensors ``(T, ...)``.
        support_losses: ``(T,)`` losses at the parameters this step started from, detached.
    """

    number: int
    adapted: Params
    support_losses: torch.Tensor


def adaptation(task_losses: TaskLosses, start: Params, loop: InnerLoop) -> Iterator[Step]:
    """The inner loop: phi_{s+1} = phi_s - rate_s * grad L_t(phi_s), for T tasks at once.

    The steps are differentiable with respect to ``start`` and learned rates, second
    order, unless ``loop.first_order``; when neither requires grad, they are detached.

    Args:
        task_losses: ``task_losses(params_per_task) -> (T,)``, each task's loss (the support loss).
        start: phi_0, tensors ``(T, ...)`` (``per_task(theta, T)``).
        loop: the rates, the adapted parameters and the order of the steps.

    Yields:
        A ``Step`` after each of ``loop.steps`` steps.
    """
    adapted = start
    for number, rates in enumerate(loop.rates, start=1):
        adapted, losses = _descend(task_losses, adapted, rates, loop)
        yield Step(number, adapted, losses)


def _descend(
    task_losses: TaskLosses, params_per_task: Params, rates: Mapping[str, Rate], loop: InnerLoop
) -> tuple[Params, torch.Tensor]:
    """One gradient step of every task, and the ``(T,)`` losses it started from."""
    learned = [rate for rate in rates.values() if isinstance(rate, torch.Tensor)]
    tracks = any(tensor.requires_grad for tensor in (*params_per_task.values(), *learned))
    with torch.enable_grad():
        # A fresh view under grad mode: the gradients are taken with respect to it, which
        # also works for views made under torch.no_grad() (they have no history of their own).
        current = dict(params_per_task)
        for name in loop.adapted:
            tensor = current[name]
            current[name] = (
                tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_()
            )
        losses = check_task_losses(task_losses(current), next(iter(current.values())).shape[0])  # (T,)
        grads = torch.autograd.grad(
            losses.sum(),
            [current[name] for name in loop.adapted],
            create_graph=not loop.first_order,
            allow_unused=True,
            materialize_grads=True,
        )
        for name, grad in zip(loop.adapted, grads, strict=True):
            current[name] = current[name] - rates[name] * grad
    if not tracks:
        current = {name: tensor.detach() for name, tensor in current.items()}
    return current, losses.detach()


def vmapped(
    one_task: Callable[..., torch.Tensor], *data: torch.Tensor, fallback: dict[str, bool] | None = None
) -> TaskLosses:
    """The losses ``one_task(params_t, *data_t)`` of T tasks, by ``torch.func.vmap``.

    Where vmap cannot batch an operator of ``one_task`` (recurrent layers, today), the
    tasks run one at a time instead (``looped``), with a warning: the same numbers, slower.

    Args:
        one_task: ``one_task(params, *task_data) -> scalar``, one task's loss at ``params``.
        data: tensors ``(T, ...)``, task t's data at index t.
        fallback: a dict shared by the evaluators of one call (its support and query
            losses), so that once vmap has failed the call warns once and tries it no more.

    Returns:
        ``task_losses(params_per_task) -> (T,)``.
    """
    batched = vmap(one_task, randomness="different")
    one_at_a_time = looped(one_task, *data)
    fallback = {} if fallback is None else fallback

    def losses_of(params_per_task: Params) -> torch.Tensor:
        if not fallback.get("looping"):
            try:
                return batched(params_per_task, *data)
            except RuntimeError as error:
                if "Batching rule not implemented" not in str(error):
                    raise
                fallback["looping"] = True
                warnings.warn(
                    f"torch.func.vmap cannot batch this loss ({str(error).splitlines()[0]}); its tasks "
                    "run one at a time instead, with the same results",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return one_at_a_time(params_per_task)

    return losses_of


def looped(one_task: Callable[..., torch.Tensor], *data: torch.Tensor) -> TaskLosses:
    """The losses ``one_task(params_t, *data_t)`` of T tasks, one task at a time (see ``vmapped``)."""

    def losses_of(params_per_task: Params) -> torch.Tensor:
        num_tasks = next(iter(params_per_task.values())).shape[0]
        return torch.stack(
            [
                one_task({name: tensor[t] for name, tensor in params_per_task.items()}, *(d[t] for d in data))
                for t in range(num_tasks)
            ]
        )

    return losses_of
