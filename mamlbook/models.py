"""Networks used in the book. Each is a plain ``nn.Module``: the algorithms only ever
call them through ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .validation import check_int


class MLP(nn.Module):
    """A ReLU multilayer perceptron, the paper's sinusoid network by default (1-40-40-1).

    Parameters are named ``body.<i>.weight``/``body.<i>.bias`` for the hidden layers
    and ``head.weight``/``head.bias`` for the output layer.

    Args:
        in_features: size of each input, d.
        hidden: sizes of the hidden layers; empty for a linear model.
        out_features: size of each output.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (40, 40), out_features: int = 1) -> None:
        super().__init__()
        in_features = check_int("in_features", in_features, minimum=1)
        out_features = check_int("out_features", out_features, minimum=1)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of layer sizes, got {hidden!r}")
        sizes = [in_features] + [check_int("hidden layer size", size, minimum=1) for size in hidden]
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        return self.head(self.body(x))
