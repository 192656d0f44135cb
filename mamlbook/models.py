"""Networks used in the book. Each is a plain ``nn.Module``: the algorithms only ever
call them through ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_bool, check_int


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


class Conv4(nn.Module):
    """The MAML paper's convolutional network for Omniglot and MiniImagenet (section 5.2).

    Four blocks of [3x3 convolution with ``hidden`` filters, batch norm, ReLU], each
    halving the image: by a stride-2 convolution (``stride_conv=True``, the paper's
    Omniglot network: 28 -> 14 -> 7 -> 4 -> 2) or by a 2x2 max-pool after the block
    (``stride_conv=False``, MiniImagenet-style: 28 -> 14 -> 7 -> 3 -> 1). The features
    are then averaged over the remaining positions, as in the paper's Omniglot code (its
    MiniImagenet network flattens them instead), and a linear head maps those ``hidden``
    features to ``n_way`` logits.

    Parameters are named ``body.<block>.<layer>.<weight|bias>`` (layer 0 the
    convolution, 1 the batch norm) and ``head.weight``/``head.bias``, as in ``MLP``, so
    ANIL can adapt the head alone. The convolutions have no bias: the batch norm's shift
    that follows would cancel it.

    Batch norm always normalises with the statistics of the current batch, in training
    and evaluation mode alike (``track_running_stats=False``: the model has no buffers).
    This is the paper's "transductive" batch norm: the examples of one call, a task's
    support or query set, are normalised together, so a prediction depends on the other
    examples of its set. Having no running statistics to update is also what lets
    ``torch.func.vmap`` run the model over tasks, each task with its own statistics.

    Args:
        in_channels: C, channels of the input images.
        n_way: number of classes, the output size.
        hidden: filters per convolution, 64 in the paper (32 for MiniImagenet).
        image_size: the height and width of the input images.
        stride_conv: downsample by strided convolutions (True) or max-pooling (False).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_way: int = 5,
        hidden: int = 64,
        image_size: int = 28,
        stride_conv: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        n_way = check_int("n_way", n_way, minimum=1)
        hidden = check_int("hidden", hidden, minimum=1)
        check_bool("stride_conv", stride_conv)
        # Four max-pools floor-halve the size four times: 16 is the smallest that leaves a 1x1 map.
        self.image_size = check_int("image_size", image_size, minimum=1 if stride_conv else 16)
        blocks = []
        for block in range(4):
            layers: list[nn.Module] = [
                nn.Conv2d(
                    in_channels if block == 0 else hidden,
                    hidden,
                    kernel_size=3,
                    stride=2 if stride_conv else 1,
                    padding=1,
                    bias=False,
                ),
                nn.BatchNorm2d(hidden, track_running_stats=False),
                nn.ReLU(),
            ]
            if not stride_conv:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images (H = W = ``image_size``) -> ``(B, n_way)`` logits."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        features = self.body(x).mean(dim=(-2, -1))  # (B, hidden), averaged over positions
        return self.head(features)
