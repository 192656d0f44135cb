"""What the torch checkers share: small float64 problems, leaf copies of params, closeness of dicts."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import MLP
from ..tasks import Sinusoid
from ..types import Params, TaskBatch


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


def all_close(actual: Mapping[str, torch.Tensor], expected: Params, *, rtol: float, atol: float) -> bool:
    """Whether every tensor of ``expected`` is close to the tensor of ``actual`` of the same name."""
    return all(
        torch.allclose(actual[name].detach(), tensor.detach(), rtol=rtol, atol=atol)
        for name, tensor in expected.items()
    )
