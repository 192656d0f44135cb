"""What adaptation changes inside a network: layer outputs and their similarity (chapter 7).

Raghu et al. (2020) asked whether MAML's inner loop learns new features for each task
or reuses the ones theta already computes. ``layer_outputs`` records what chosen layers
compute for a batch of inputs under given parameters, and ``linear_cka`` measures how
similar two such representations of the same examples are, from 0 (unrelated) to 1
(the same up to a rotation and a scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from ._checks import check_params
from .types import Params


def centered_gram(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of the examples after removing the mean example.

    Args:
        x: ``(..., n, d)`` representations, one row per example.

    Returns:
        ``(..., n, n)``, ``K = Xc Xc^T`` with ``Xc = X - mean over the n rows``.
    """
    centered = x - x.mean(dim=-2, keepdim=True)  # (..., n, d)
    return centered @ centered.transpose(-1, -2)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear centred kernel alignment between two representations of the same examples.

    With ``Xc``, ``Yc`` the representations minus their mean example (Kornblith et al., 2019)::

        CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

    It is computed from the ``(n, n)`` Gram matrices ``K = Xc Xc^T`` and ``L = Yc Yc^T`` as
    ``<K, L> / (||K|| ||L||)``, so that no ``(d, d)`` matrix is formed for wide layers. It lies
    in [0, 1]. It does not change when either representation is rotated or reflected,
    scaled by one number or shifted, so it is 1 when Y is X so transformed; for one
    feature each, it is the squared correlation. Other linear maps, such as stretching
    one feature, do change it.

    Args:
        x: ``(..., n, d1)`` one representation of n >= 2 examples, e.g. a layer's outputs
            flattened per example.
        y: ``(..., n, d2)`` another representation of the same n examples; the leading
            dimensions must match those of ``x`` (e.g. T tasks).

    Returns:
        ``(...)`` the CKA of each pair, in x's floating dtype; NaN where either
        representation is the same for every example (zero variance: CKA is undefined).
    """
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() < 2:
            raise ValueError(f"{name} must have shape (..., n, d), got {tuple(value.shape)}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            f"x and y must hold the same examples: shapes (..., n, d1) and (..., n, d2), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[-2] < 2:
        raise ValueError(f"x and y need n >= 2 examples to have a mean to remove, got n = {x.shape[-2]}")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    gram_x, gram_y = centered_gram(x.to(dtype)), centered_gram(y.to(dtype))  # (..., n, n) each
    alignment = (gram_x * gram_y).sum(dim=(-2, -1))
    norms = torch.linalg.matrix_norm(gram_x) * torch.linalg.matrix_norm(gram_y)
    return torch.where(norms > 0, alignment / norms, torch.full_like(norms, float("nan")))


def layer_outputs(
    model: nn.Module, params: Params, x: torch.Tensor, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The outputs of some of ``model``'s submodules when it runs on ``x`` with ``params``.

    The model runs once through ``torch.func.functional_call``, so this works with
    adapted parameters and inside ``torch.func.vmap``. Forward hooks record what the
    named submodules return, and are removed afterwards.

    Args:
        model: the network.
        params: its parameters, keyed like ``model.named_parameters()`` (theta or an
            adapted phi).
        x: the input batch the model takes, e.g. ``(B, 1, 28, 28)`` images.
        names: submodule names as in ``model.named_modules()``, e.g. ``"body.0"`` for
            ``Conv4``'s first block; ``""`` is the model itself (its output).

    Returns:
        Each name's output for the batch, in the order of ``names``. A submodule that
        runs more than once keeps its last output.
    """
    check_params(model, params)
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise TypeError(f"names must be a non-empty sequence of submodule names, got {names!r}")
    known = dict(model.named_modules())
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"names {unknown} are not submodules of the model; it has {sorted(known)}")
    recorded: dict[str, torch.Tensor] = {}

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            recorded[name] = output

        return hook

    handles = [known[name].register_forward_hook(recorder(name)) for name in dict.fromkeys(names)]
    try:
        functional_call(model, params, (x,))
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in recorded]
    if missing:
        raise ValueError(f"submodules {missing} did not run in the model's forward pass")
    return {name: recorded[name] for name in names}
