"""The two baselines that meta-learning must beat, and what they converge to (chapter 3).

- ``train_from_scratch``: each task is learnt alone, from a random initialisation,
  by gradient steps on its support set.
- ``pretrain``: one network is trained by plain regression on the points of many
  tasks, then fine-tuned on each new task (the paper's "pretrained" baseline).
- ``sinusoid_mean``: the function a pretrained network approaches on the sinusoid
  family, the mean of y at each x over the tasks.

Both baselines run the package's own loops: ``pretrain`` is ``meta_train`` with zero
inner steps, and ``train_from_scratch`` is ``evaluate`` started from random weights.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_int, check_loss_fn, check_positive_float, check_seed, check_task_batch
from .evaluation import EvaluationResult, evaluate
from .tasks import Sinusoid
from .training import MetaTrainConfig, TrainingHistory, meta_train
from .types import LossFn, Params, TaskBatch, TaskSampler


def pretrain(
    model: nn.Module,
    sample_tasks: TaskSampler,
    *,
    iterations: int,
    meta_batch_size: int = 25,
    outer_lr: float = 1e-3,
    loss_fn: LossFn,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
) -> TrainingHistory:
    """Train ``model`` in place by plain regression on the points of many tasks.

    This is ``meta_train`` with ``inner_steps=0``: no task is adapted to, so each
    iteration's loss is the mean over T tasks of the loss of the shared parameters on
    the task's *query* set, and Adam minimises the average error over the family. The
    support sets that ``sample_tasks`` draws are not used.

    Args:
        model: the network; its parameters are trained in place and moved to ``device``.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``.
        iterations: number of Adam steps, >= 1.
        meta_batch_size: T, tasks per step, >= 1.
        outer_lr: Adam's step size, > 0.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        device: ``"auto"`` (CUDA where available), ``"cpu"``, ``"cuda"``, ...
        seed: seeds the generator that samples the training tasks, >= 0.
        progress: show a tqdm progress bar.

    Returns:
        The training history, whose ``meta_losses`` are the regression loss of each
        iteration.
    """
    config = MetaTrainConfig(
        iterations=iterations,
        meta_batch_size=meta_batch_size,
        inner_steps=0,
        outer_lr=outer_lr,
        seed=seed,
    )
    return meta_train(model, sample_tasks, config, loss_fn=loss_fn, device=device, progress=progress)


class ScratchBaseline(NamedTuple):
    """What ``train_from_scratch`` returns.

    Attributes:
        model: the network the tasks were trained with.
        params: the random initial parameters that every task started from (detached).
        result: query loss of each task after 0, 1, ..., ``steps`` steps.
    """

    model: nn.Module
    params: Params
    result: EvaluationResult


def train_from_scratch(
    model_factory: Callable[[], nn.Module],
    batch: TaskBatch,
    *,
    steps: int,
    lr: float,
    loss_fn: LossFn,
    seed: int = 0,
) -> ScratchBaseline:
    """Train a network on each task's support set alone, from random weights, and score it.

    The network is built by ``model_factory()`` with the global generator seeded by
    ``seed`` (restored afterwards), so its weights know nothing about the tasks. Every
    task starts from this one random draw and takes ``steps`` plain gradient steps on
    its own support set; all tasks run at once through the package's inner loop
    (``evaluate`` with ``inner_lr=lr``), and the query loss is recorded after each step.

    Args:
        model_factory: builds a fresh network, e.g. ``lambda: MLP(1)``.
        batch: T tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``. The network is
            moved to the batch's device.
        steps: gradient steps per task, >= 0.
        lr: the step size, > 0.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        seed: seeds the random initialisation, >= 0.

    Returns:
        The network, its initial parameters and the ``(T, steps + 1)`` query losses.
    """
    if isinstance(model_factory, nn.Module) or not callable(model_factory):
        raise TypeError(
            f"model_factory must be callable as model_factory() -> nn.Module, a function that "
            f"builds a new network such as lambda: MLP(1), got {type(model_factory).__name__}"
        )
    batch = check_task_batch(batch)
    steps = check_int("steps", steps, minimum=0)
    lr = check_positive_float("lr", lr)
    check_loss_fn(loss_fn)
    seed = check_seed("seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_factory() must return a torch.nn.Module, got {type(model).__name__}")
    model.to(batch.support_x.device)
    params = {name: tensor.detach() for name, tensor in model.named_parameters()}
    result = evaluate(model, params, batch, loss_fn=loss_fn, inner_lr=lr, inner_steps=steps)
    return ScratchBaseline(model, params, result)


def sinusoid_mean(family: Sinusoid, x: torch.Tensor) -> torch.Tensor:
    """E[y | x] over the tasks of ``family``: the best prediction before seeing a task.

    With A ~ U[a_lo, a_hi] and the phase ~ U[p_lo, p_hi] independent,
    E[A sin(x + phase)] = E[A] (cos(x + p_lo) - cos(x + p_hi)) / (p_hi - p_lo).
    For the paper's family (phase in [0, pi]) this is (2 / pi) * 2.55 * cos(x), not 0:
    the phases do not cancel over half a period.

    Args:
        family: the task distribution.
        x: inputs of any shape.

    Returns:
        The mean of y at each x, shaped like ``x``.
    """
    if not isinstance(family, Sinusoid):
        raise TypeError(f"family must be a mamlbook.tasks.Sinusoid, got {type(family).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    mean_amplitude = sum(family.amplitude) / 2
    low, high = family.phase
    return mean_amplitude * (torch.cos(x + low) - torch.cos(x + high)) / (high - low)
