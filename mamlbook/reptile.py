"""Reptile: meta-learning by moving theta towards the adapted parameters (chapter 5).

Nichol, Achiam & Schulman (2018). Each task is adapted from theta with the book's one
inner loop (``mamlbook.inner.adaptation``, first order: no graph is kept), and theta
then takes a step of size epsilon towards the adapted parameters,

    theta <- theta + epsilon * mean_t (phi_t - theta),

under ``torch.no_grad()``. No query loss is differentiated and no outer optimiser is
needed: the difference phi_t - theta itself plays the part of a (negative) gradient.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn
from torch.distributed import ProcessGroup

from ._checks import (
    check_bool,
    check_int,
    check_loss_fn,
    check_model,
    check_nonnegative_float,
    check_params,
    check_positive_float,
    check_seed,
    check_task_batch,
    params_device,
    params_dtype,
)
from .backends import Backend, Problem, choose_backend
from .distributed import local_device, resolve_ranks
from .errors import NonFiniteLossError, raise_if_not_finite
from .inner import InnerLoop, adaptation, per_task
from .training import Checkpointing, MetaTrainConfig, TrainingHistory, outer_loop, resolve_device
from .types import LossFn, Params, TaskBatch, TaskSampler


@dataclasses.dataclass(frozen=True)
class ReptileConfig:
    """Hyperparameters of Reptile's outer loop.

    Attributes:
        iterations: number of meta-iterations (Reptile steps).
        meta_batch_size: T, tasks per meta-iteration.
        inner_lr: alpha, the inner SGD step size.
        inner_steps: k >= 1, inner SGD steps per task.
        outer_step_size: epsilon, the fraction of the way from theta to the mean
            adapted parameters that each meta-iteration moves.
        include_query: adapt on the support and query sets together (all of a task's
            points) rather than on the support set alone.
        seed: seeds the generator that samples the training tasks.
    """

    iterations: int = 1000
    meta_batch_size: int = 25
    inner_lr: float = 0.01
    inner_steps: int = 5
    outer_step_size: float = 1.0
    include_query: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, minimum=1)
        check_int("meta_batch_size", self.meta_batch_size, minimum=1)
        check_nonnegative_float("inner_lr", self.inner_lr)
        check_int("inner_steps", self.inner_steps, minimum=1)
        check_positive_float("outer_step_size", self.outer_step_size)
        check_seed("seed", self.seed)
        check_bool("include_query", self.include_query)

    @classmethod
    def matching(
        cls, config: MetaTrainConfig, *, inner_steps: int = 5, outer_step_size: float = 1.0
    ) -> ReptileConfig:
        """The budget of a MAML run: its iterations, T, alpha and seed, with Reptile's own
        number of inner steps and outer step size."""
        if not isinstance(config, MetaTrainConfig):
            raise TypeError(f"config must be a MetaTrainConfig, got {type(config).__name__}")
        return cls(
            iterations=config.iterations,
            meta_batch_size=config.meta_batch_size,
            inner_lr=config.inner_lr,
            inner_steps=inner_steps,
            outer_step_size=outer_step_size,
            seed=config.seed,
        )


def reptile_step(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    inner_steps: int,
    outer_step_size: float,
    include_query: bool = False,
    backend: str | Backend = "auto",
) -> torch.Tensor:
    """One Reptile meta-iteration: theta <- theta + epsilon * mean_t (phi_t - theta), in place.

    The T tasks are adapted at once, each from theta, by ``inner_steps`` first-order SGD steps
    of the inner loop; ``params`` is then updated under ``torch.no_grad()``.

    Args:
        model: any module that ``torch.func.functional_call`` can run.
        params: theta, keyed like ``model.named_parameters()``; its tensors are updated
            in place (with ``dict(model.named_parameters())``, the model's own).
        batch: T tasks; support ``(T, K, ...)``, query ``(T, Q, ...)``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha, a finite number >= 0.
        inner_steps: k, inner SGD steps per task, an integer >= 1.
        outer_step_size: epsilon, a finite number > 0.
        include_query: adapt on the support and query points together, ``(T, K + Q, ...)``.
        backend: how the losses are evaluated (``mamlbook.backends``).

    Returns:
        The mean query loss of the adapted parameters (detached), the number that MAML's
        meta-loss reports; with ``include_query`` the query points were adapted on.

    Raises:
        NonFiniteLossError: a task's loss became NaN or infinite.
    """
    check_params(model, params)
    check_loss_fn(loss_fn)
    loop = InnerLoop.of(
        params,
        inner_lr=inner_lr,
        inner_steps=check_int("inner_steps", inner_steps, minimum=1),
        first_order=True,
    )
    outer_step_size = check_positive_float("outer_step_size", outer_step_size)
    include_query = check_bool("include_query", include_query)
    batch = check_task_batch(batch, device=params_device(params), dtype=params_dtype(params))
    direction, query_loss = _reptile_direction(model, params, batch, loss_fn, loop, include_query, backend)
    with torch.no_grad():
        for name, tensor in params.items():
            tensor += outer_step_size * direction[name]
    return query_loss


def _reptile_direction(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    loss_fn: LossFn,
    loop: InnerLoop,
    include_query: bool,
    backend: str | Backend,
) -> tuple[Params, torch.Tensor]:
    """mean_t (phi_t - theta) over the batch's tasks, and the mean query loss of the phi_t."""
    x, y = batch.support_x, batch.support_y
    if include_query:
        x, y = torch.cat([x, batch.query_x], dim=1), torch.cat([y, batch.query_y], dim=1)  # (T, K + Q, ...)
    theta = {name: tensor.detach() for name, tensor in params.items()}
    problem = Problem("reptile_step", model, theta, loss_fn, loop, inputs=(x, batch.query_x))
    chosen = choose_backend(backend, problem)
    adapted, support_losses = per_task(theta, batch.num_tasks), []
    for step in adaptation(chosen.task_losses(problem, x, y, loss_fn), adapted, loop):
        adapted = step.adapted  # (T, ...) each, detached
        support_losses.append(step.support_losses)
    with torch.no_grad():
        query_losses = chosen.task_losses(problem, batch.query_x, batch.query_y, loss_fn)(adapted)  # (T,)
        raise_if_not_finite(
            torch.stack(support_losses, dim=1),
            torch.isfinite(query_losses),
            rates=loop.describe_rates(),
            final_what="query loss",
            query_sets=(batch.query_x, batch.query_y),
        )
        direction = {name: (adapted[name] - theta[name]).mean(dim=0) for name in theta}
    return direction, query_losses.mean()


def reptile_train(
    model: nn.Module,
    sample_tasks: TaskSampler,
    config: ReptileConfig,
    *,
    loss_fn: LossFn,
    device: str | torch.device = "auto",
    progress: bool = True,
    process_group: str | ProcessGroup | None = "auto",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> TrainingHistory:
    """Meta-train the parameters of ``model`` in place with Reptile.

    Each iteration samples ``config.meta_batch_size`` tasks and takes one
    ``reptile_step``. The model is moved to ``device``. With several processes, each
    adapts its share of the tasks and the mean of phi_t - theta is averaged over them
    before the step, as ``meta_train`` averages meta-gradients.

    Args:
        model: the network whose parameters are theta.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``.
        config: the hyperparameters.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        device: ``"auto"`` (CUDA where available), ``"cpu"``, ``"cuda"``, ...
        progress: show a tqdm progress bar (on rank 0 alone).
        process_group, checkpoint, checkpoint_every: as for ``meta_train``.

    Returns:
        The query loss after adaptation at each iteration, the wall time and the device.
    """
    if not isinstance(config, ReptileConfig):
        raise TypeError(f"config must be a ReptileConfig, got {type(config).__name__}")
    check_model(model)
    check_loss_fn(loss_fn)
    device = resolve_device(device)
    ranks = resolve_ranks(process_group, device=device)
    device = local_device(device, ranks)
    model.to(device)
    params = dict(model.named_parameters())
    theta = list(params.values())
    ranks.broadcast_(theta)
    loop = InnerLoop.of(params, inner_lr=config.inner_lr, inner_steps=config.inner_steps, first_order=True)

    def step(share: TaskBatch, iteration: int) -> torch.Tensor:
        direction, loss, failure = None, None, None
        try:
            share = check_task_batch(share, device=params_device(params), dtype=params_dtype(params))
            direction, loss = _reptile_direction(
                model, params, share, loss_fn, loop, config.include_query, backend="auto"
            )
        except NonFiniteLossError as error:
            failure = error
        mean_direction, loss = ranks.task_weighted_sum(
            list(direction.values()) if direction else [None] * len(theta),
            loss,
            like=theta,
            share_tasks=share.num_tasks,
            num_tasks=config.meta_batch_size,
            failure=failure,
        )
        with torch.no_grad():
            for tensor, change in zip(theta, mean_direction, strict=True):
                tensor += config.outer_step_size * change
        return loss

    def state() -> dict[str, object]:
        return {"params": params}

    @torch.no_grad()
    def restore(saved: dict[str, object]) -> None:
        check_params(model, saved["params"])
        for name, tensor in params.items():
            tensor.copy_(saved["params"][name])

    history = outer_loop(
        step,
        sample_tasks,
        config,
        device=device,
        progress=progress,
        description="Reptile",
        ranks=ranks,
        checkpoint=Checkpointing.of(checkpoint, checkpoint_every, state, restore),
    )
    return history._replace(inner_lr=config.inner_lr, inner_loop=loop)
