"""Numerical gradients, to check analytic meta-gradients (chapter 4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .types import Params


def finite_difference_grad(
    function: Callable[[Params], torch.Tensor], params: Params, *, eps: float = 1e-6
) -> Params:
    """Central differences (f(p + eps e_i) - f(p - eps e_i)) / (2 eps) for every entry i.

    Costs two evaluations of ``function`` per parameter entry: use it on small models,
    in float64 (its error is O(eps^2) plus rounding of order 1e-16 / eps).

    Args:
        function: maps params to a scalar tensor.
        params: the point, a dict of tensors.
        eps: the step.

    Returns:
        The numerical gradient, keyed and shaped like ``params``.
    """
    point = {name: tensor.detach().clone() for name, tensor in params.items()}
    gradient = {name: torch.zeros_like(tensor) for name, tensor in point.items()}
    with torch.no_grad():
        for name, tensor in point.items():
            flat, flat_grad = tensor.view(-1), gradient[name].view(-1)
            for index in range(flat.numel()):
                original = flat[index].item()
                flat[index] = original + eps
                upper = function(point)
                flat[index] = original - eps
                lower = function(point)
                flat[index] = original
                flat_grad[index] = (upper - lower) / (2 * eps)
    return gradient


def max_relative_error(actual: Params, expected: Params) -> float:
    """The largest, over tensors, of max|actual - expected| / max|expected|."""
    return max(
        float((actual[name] - expected[name]).abs().max() / expected[name].abs().max().clamp_min(1e-12))
        for name in expected
    )
