"""The outer loop: meta-training theta with an outer optimiser (chapter 4)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from .meta import maml_loss
from .types import LossFn, TaskBatch
from .validation import check_inner_lr, check_int, check_loss_fn, check_positive_float

TaskSampler = Callable[..., TaskBatch]
"""``sample(num_tasks, *, generator) -> TaskBatch``, e.g. ``Sinusoid().sample``."""


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Hyperparameters of MAML's outer loop; the presets are named constructors.

    Attributes:
        iterations: number of meta-iterations (outer optimiser steps).
        meta_batch_size: T, tasks per meta-iteration.
        inner_lr: alpha, the inner SGD step size.
        inner_steps: inner SGD steps per task.
        outer_lr: beta, the outer Adam step size.
        first_order: first-order MAML (detached inner gradients).
        seed: seeds the generator that samples the training tasks.
    """

    iterations: int = 1000
    meta_batch_size: int = 25
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 1e-3
    first_order: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, minimum=1)
        check_int("meta_batch_size", self.meta_batch_size, minimum=1)
        check_inner_lr(self.inner_lr)
        check_int("inner_steps", self.inner_steps, minimum=0)
        check_positive_float("outer_lr", self.outer_lr)
        check_int("seed", self.seed, minimum=0)
        if not isinstance(self.first_order, bool):
            raise TypeError(f"first_order must be a bool, got {self.first_order!r}")

    @classmethod
    def sinusoid_paper(cls) -> MetaTrainConfig:
        """Finn et al. (2017), sinusoid regression: 70,000 iterations, T = 25, one
        second-order inner step with alpha = 0.01, Adam with beta = 1e-3."""
        return cls(iterations=70_000, meta_batch_size=25, inner_lr=0.01, inner_steps=1, outer_lr=1e-3)


class TrainingHistory(NamedTuple):
    """What ``meta_train`` returns.

    Attributes:
        meta_losses: ``(iterations,)`` meta-loss of each meta-iteration, on the CPU.
        seconds: wall time of the training loop.
        device: the device trained on.
    """

    meta_losses: torch.Tensor
    seconds: float
    device: str


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA where available, else the CPU; anything else is passed to torch."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    return resolved


def meta_train(
    model: nn.Module,
    sample_tasks: TaskSampler,
    config: MetaTrainConfig,
    *,
    loss_fn: LossFn,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> TrainingHistory:
    """Meta-train the parameters of ``model`` in place with MAML and an Adam outer loop.

    Each iteration samples ``config.meta_batch_size`` tasks, computes ``maml_loss`` and
    takes one Adam step on the model's parameters. The model is moved to ``device``.

    Args:
        model: the network whose parameters are theta.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``; for other
            shot counts than a sampler's defaults, use ``functools.partial``.
        config: the hyperparameters.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        device: ``"auto"`` (CUDA where available), ``"cpu"``, ``"cuda"``, ...
        progress: show a tqdm progress bar.

    Returns:
        The history of meta-losses, the wall time and the device.
    """
    if not isinstance(config, MetaTrainConfig):
        raise TypeError(f"config must be a MetaTrainConfig, got {type(config).__name__}")
    check_loss_fn(loss_fn)
    device = resolve_device(device)
    model.to(device)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=config.outer_lr)

    def adam_step(batch: TaskBatch) -> torch.Tensor:
        loss = maml_loss(
            model,
            params,
            batch,
            loss_fn=loss_fn,
            inner_lr=config.inner_lr,
            steps=config.inner_steps,
            first_order=config.first_order,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return outer_loop(
        adam_step,
        sample_tasks,
        iterations=config.iterations,
        meta_batch_size=config.meta_batch_size,
        seed=config.seed,
        device=device,
        progress=progress,
        description="meta-training",
    )


def outer_loop(
    meta_step: Callable[[TaskBatch], torch.Tensor],
    sample_tasks: TaskSampler,
    *,
    iterations: int,
    meta_batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool,
    description: str,
) -> TrainingHistory:
    """The loop shared by the meta-learners: sample T tasks, take one meta-step, record.

    Args:
        meta_step: updates theta from one batch and returns its (detached) meta-loss.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``, drawn from
            a generator seeded with ``seed`` and moved to ``device``.
        iterations, meta_batch_size: how many meta-steps, of how many tasks.
        progress, description: the tqdm progress bar and its label.

    Returns:
        The meta-loss of each iteration, the wall time and the device.
    """
    if not callable(sample_tasks):
        raise TypeError(
            f"sample_tasks must be callable as sample_tasks(num_tasks, *, generator), got {sample_tasks!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    meta_losses = torch.empty(iterations, device=device)
    report_every = max(1, iterations // 100)
    start = time.perf_counter()
    with tqdm(range(iterations), desc=description, disable=not progress) as bar:
        for iteration in bar:
            meta_losses[iteration] = meta_step(sample_tasks(meta_batch_size, generator=generator).to(device))
            if progress and iteration % report_every == 0:
                bar.set_postfix(meta_loss=f"{meta_losses[iteration].item():.3f}")
    return TrainingHistory(meta_losses.cpu(), time.perf_counter() - start, str(device))
