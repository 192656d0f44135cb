"""What the checkers share: seeded float64 problems, copies of inputs for the reader's function,
and the comparisons that judge what it returned."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..models import MLP
from ..tasks import Sinusoid
from ..types import Params, TaskBatch
from .result import CheckResult


def problem_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a checker's ``count`` problems: ``0 .. count - 1`` for seed 0, the chapters'
    problems, and ``count`` other ones for every other seed (seed s gets ``s * count + i``)."""
    return [(seed * count + index) % 2**63 for index in range(count)]


def float64_mlp(hidden: tuple[int, ...], seed: int) -> nn.Module:
    """A float64 MLP from 1 input to 1 output, initialised from ``seed``, the global generator left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # nn.Linear draws its initial weights from this generator
        return MLP(1, hidden).double()


def sinusoid_problem(
    seed: int, hidden: tuple[int, ...] = (8, 8), num_tasks: int = 3, n_query: int = 6
) -> tuple[nn.Module, TaskBatch]:
    """A float64 MLP and ``num_tasks`` sinusoid tasks of 5 support and ``n_query`` query points, seeded."""
    batch = Sinusoid().sample(num_tasks, 5, n_query, generator=torch.Generator().manual_seed(seed))
    return float64_mlp(hidden, seed), TaskBatch(*(tensor.double() for tensor in batch))


def leaves(params: Mapping[str, torch.Tensor]) -> Params:
    """Fresh copies of ``params`` that require grad, so autograd can differentiate with respect to them."""
    return {name: tensor.detach().clone().requires_grad_() for name, tensor in params.items()}


def copied(value: object) -> object:
    """A copy of ``value`` to hand to the reader's function: tensors cloned (without their graph, a
    tensor that requires grad stays a leaf that does), arrays copied, modules deep-copied, and
    dicts and tuples (named ones too, such as ``TaskBatch``) copied item by item."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, nn.Module):
        return copy.deepcopy(value)
    if isinstance(value, Mapping):
        return {key: copied(item) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [copied(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def same(given: object, kept: object) -> bool:
    """Whether ``given`` (a copy the reader's function had) still equals ``kept`` (the checker's own):
    the same structure, and tensors and arrays of the same shape, dtype and values; a module is
    compared by its ``state_dict``, weights and buffers."""
    if isinstance(kept, nn.Module):
        return isinstance(given, nn.Module) and same(given.state_dict(), kept.state_dict())
    if isinstance(kept, torch.Tensor):
        return (
            isinstance(given, torch.Tensor)
            and given.dtype == kept.dtype
            and torch.equal(given.detach(), kept.detach())
        )
    if isinstance(kept, np.ndarray):
        return isinstance(given, np.ndarray) and given.dtype == kept.dtype and np.array_equal(given, kept)
    if isinstance(kept, Mapping):
        return (
            isinstance(given, Mapping)
            and list(given) == list(kept)
            and all(same(given[key], item) for key, item in kept.items())
        )
    if isinstance(kept, tuple):
        return (
            isinstance(given, tuple)
            and len(given) == len(kept)
            and all(same(a, b) for a, b in zip(given, kept, strict=True))
        )
    return given == kept


def params_hint(result: object, like: Params, name: str, *, shape_note: str = "") -> CheckResult | None:
    """None when ``result`` is a dict of tensors keyed like ``like``, of its shapes and dtypes, else a
    hint that names what differs; ``name`` is what the chapter calls ``like`` (theta, params) and
    ``shape_note`` is added to a hint about a shape."""
    if not isinstance(result, Mapping) or set(result) != set(like):
        return CheckResult.hint(
            f"return a dict keyed like {name} ({sorted(like)}), got {describe(result, keys=True)}"
        )
    for key, tensor in like.items():
        value = result[key]
        if not isinstance(value, torch.Tensor):
            return CheckResult.hint(f"result[{key!r}] must be a tensor, got {describe(value)}")
        if value.shape != tensor.shape:
            expected = tuple(tensor.shape)
            return CheckResult.hint(
                f"result[{key!r}] has shape {tuple(value.shape)}, {name}'s is {expected}{shape_note}"
            )
        if value.dtype != tensor.dtype:
            return CheckResult.hint(
                f"result[{key!r}] has dtype {value.dtype}, {name}'s is {tensor.dtype}: compute it from "
                f"{name}'s tensors, without converting them"
            )
    return None


def describe(value: object, *, keys: bool = False) -> str:
    """A short description of a returned value for a hint: its type, with a tensor's or an array's
    shape and dtype, and with ``keys`` a dict's keys."""
    if value is None:
        return "None"
    if isinstance(value, (torch.Tensor, np.ndarray)):
        kind = "a tensor" if isinstance(value, torch.Tensor) else "an array"
        return f"{kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if keys and isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def as_float64(value: object) -> torch.Tensor | None:
    """``value`` (a tensor, an array, a number or a list of them, of real numbers) as a detached
    float64 tensor; None when it cannot be one without losing something (a string, a complex
    number, a ragged list), so that a checker can say so instead of failing."""
    if value is None or isinstance(value, (str, bytes, Mapping)):
        return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, torch.Tensor) for item in value):
        if len({item.shape for item in value}) != 1:
            return None
        value = torch.stack([item.detach() for item in value])  # e.g. a list of per-task scalar tensors
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_complex():
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a complex array cast to real warns: refuse it instead
            return torch.as_tensor(value, dtype=torch.float64).detach()
    except Exception:  # converting the reader's object runs its code: any failure means "not numbers"
        return None


def all_close(actual: Mapping[str, torch.Tensor], expected: Params, *, rtol: float, atol: float) -> bool:
    """Whether every tensor of ``expected`` is close to the tensor of ``actual`` of the same name
    (the same shape and dtype, as ``params_hint`` checks first)."""
    return all(
        torch.allclose(actual[name].detach(), tensor.detach(), rtol=rtol, atol=atol)
        for name, tensor in expected.items()
    )
