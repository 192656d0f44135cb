"""The data types every algorithm in the book passes around.

``Params`` is a model's state as a dict of named tensors (chapter 4: theta and the
adapted phi), and ``TaskBatch`` holds T tasks with their support and query sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch

Params = dict[str, torch.Tensor]
"""Named tensors of a model, as given by ``dict(model.named_parameters())``."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(prediction, target) -> scalar``, e.g. ``torch.nn.functional.mse_loss``."""

TaskLosses = Callable[[Params], torch.Tensor]
"""``task_losses(params_per_task) -> (T,)``: each task's loss at its own parameters.

The parameters carry a leading task dimension, ``(T, ...)`` each; task t's loss may
depend only on task t's parameters. Any differentiable function of that form can be
adapted on: a supervised loss ``loss_fn(f(x_t; params_t), y_t)``, or a policy-gradient
surrogate of sampled trajectories."""

StepRate = float | Mapping[str, torch.Tensor]
"""The inner learning rate of one step, either one number for every parameter or a tensor per
adapted parameter (a scalar or the parameter's shape), as learned by Meta-SGD and MAML++."""

InnerLR = StepRate | Sequence[StepRate]
"""The ``inner_lr`` of the inner loop, one ``StepRate`` for every step or a sequence with one per step."""


class TaskBatch(NamedTuple):
    """T tasks, each with a support set (to adapt on) and a query set (to score on).

    Shapes: ``support_x`` is ``(T, K, ...)`` and ``support_y`` is ``(T, K, ...)``;
    ``query_x`` and ``query_y`` are ``(T, Q, ...)``. T tasks, K support and Q query
    examples per task; the trailing shapes are whatever the model takes and returns.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """T, the number of tasks in the batch."""
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        """The same batch with every tensor moved to ``device``."""
        return TaskBatch(*(tensor.to(device) for tensor in self))

    def slice_tasks(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start`` to ``stop - 1`` of the batch, as a new batch (views)."""
        return TaskBatch(*(tensor[start:stop] for tensor in self))


TaskSampler = Callable[..., TaskBatch]
"""``sample(num_tasks, *, generator) -> TaskBatch``, e.g. ``Sinusoid().sample``."""
