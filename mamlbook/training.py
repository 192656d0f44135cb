"""The outer loop: meta-training theta with an outer optimiser (chapter 4; successors, chapter 7)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch.distributed import ProcessGroup
from tqdm import tqdm

from ._checks import (
    check_bool,
    check_int,
    check_loss_fn,
    check_model,
    check_nonnegative_float,
    check_params,
    check_positive_float,
    check_seed,
)
from ._files import check_replaceable
from .checkpoint import load_training_state, save_training_state
from .distributed import DistributedError, Ranks, local_device, resolve_ranks
from .errors import NonFiniteLossError
from .inner import InnerLoop
from .meta import maml_loss
from .outer import OuterAdam
from .types import InnerLR, LossFn, TaskBatch, TaskSampler

if TYPE_CHECKING:
    from .reptile import ReptileConfig

LEARNED_INNER_LR = ("per_parameter", "per_layer_per_step")
"""The kinds of learned inner rates, Meta-SGD's and MAML++'s."""


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Hyperparameters of MAML's outer loop and of its successors (chapter 7).

    The presets are named constructors. The defaults give MAML; ANIL, Meta-SGD and
    MAML++ are MAML with some of the last four fields set.

    Attributes:
        iterations: number of meta-iterations (outer optimiser steps).
        meta_batch_size: T, tasks per meta-iteration.
        inner_lr: alpha, the inner SGD step size (the starting value of learned rates).
        inner_steps: inner SGD steps per task.
        outer_lr: beta, the outer Adam step size.
        first_order: first-order MAML (detached inner gradients).
        seed: seeds the generator that samples the training tasks.
        adapt_only: ANIL: adapt only these parameters, by name or module prefix, e.g.
            ``("head",)``; None adapts all.
        learned_inner_lr: None for a fixed alpha; ``"per_parameter"`` (Meta-SGD) learns
            one rate per scalar weight; ``"per_layer_per_step"`` (MAML++) one rate per
            parameter tensor and inner step. Learned rates start at ``inner_lr`` and are
            trained by the same Adam step as theta.
        multi_step_loss_iterations: MAML++'s multi-step loss: for these first
            iterations the meta-loss weighs the query loss after every inner step, the
            weights moving from uniform towards the last step (see
            ``multi_step_weights``); 0 scores the last step alone.
        first_order_iterations: MAML++'s derivative-order annealing: the first
            iterations are first order, the rest second order.
    """

    iterations: int = 1000
    meta_batch_size: int = 25
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 1e-3
    first_order: bool = False
    seed: int = 0
    adapt_only: tuple[str, ...] | None = None
    learned_inner_lr: str | None = None
    multi_step_loss_iterations: int = 0
    first_order_iterations: int = 0

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, minimum=1)
        check_int("meta_batch_size", self.meta_batch_size, minimum=1)
        check_nonnegative_float("inner_lr", self.inner_lr)
        check_int("inner_steps", self.inner_steps, minimum=0)
        check_positive_float("outer_lr", self.outer_lr)
        check_seed("seed", self.seed)
        check_bool("first_order", self.first_order)
        if self.adapt_only is not None and (
            not isinstance(self.adapt_only, tuple)
            or not self.adapt_only
            or not all(isinstance(name, str) for name in self.adapt_only)
        ):
            raise TypeError(f"adapt_only must be None or a non-empty tuple of names, got {self.adapt_only!r}")
        if self.learned_inner_lr is not None and self.learned_inner_lr not in LEARNED_INNER_LR:
            raise ValueError(
                f"learned_inner_lr must be None or one of {LEARNED_INNER_LR}, got {self.learned_inner_lr!r}"
            )
        check_int("multi_step_loss_iterations", self.multi_step_loss_iterations, minimum=0)
        check_int("first_order_iterations", self.first_order_iterations, minimum=0)

    @classmethod
    def sinusoid_paper(cls) -> MetaTrainConfig:
        """Finn et al. (2017), sinusoid regression: 70,000 iterations, T = 25, one
        second-order inner step with alpha = 0.01, Adam with beta = 1e-3."""
        return cls(iterations=70_000, meta_batch_size=25, inner_lr=0.01, inner_steps=1, outer_lr=1e-3)

    @classmethod
    def omniglot_paper(cls, n_way: int = 5) -> MetaTrainConfig:
        """Finn et al. (2017), Omniglot: 60,000 iterations with Adam at beta = 1e-3;
        5-way: T = 32, one inner step with alpha = 0.4; 20-way: T = 16, five steps with
        alpha = 0.1. (At test time the paper takes 3 steps for 5-way, 5 for 20-way.)"""
        if n_way == 5:
            return cls(iterations=60_000, meta_batch_size=32, inner_lr=0.4, inner_steps=1, outer_lr=1e-3)
        if n_way == 20:
            return cls(iterations=60_000, meta_batch_size=16, inner_lr=0.1, inner_steps=5, outer_lr=1e-3)
        raise ValueError(f"the paper trains Omniglot with n_way 5 or 20, got {n_way!r}")


class TrainingHistory(NamedTuple):
    """What ``meta_train`` returns.

    Attributes:
        meta_losses: ``(iterations,)`` meta-loss of each meta-iteration, on the CPU.
        seconds: wall time of the training loop.
        device: the device trained on.
        inner_lr: the inner rate to adapt with after training: ``config.inner_lr``, or
            the learned rates (detached), to pass on as ``inner_lr`` to ``adapt`` or
            ``evaluate``.
        inner_loop: the whole inner loop trained with (rates, steps, adapted
            parameters, order), to pass on as ``inner_loop`` to ``adapt``,
            ``evaluate`` or ``maml_loss``.
    """

    meta_losses: torch.Tensor
    seconds: float
    device: str
    inner_lr: InnerLR
    inner_loop: InnerLoop | None


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


def multi_step_weights(steps: int, iteration: int, anneal_iterations: int) -> list[float]:
    """MAML++'s weights of the query loss after each of ``steps`` inner steps.

    They start uniform (1 / steps each); over ``anneal_iterations`` the weight of every
    step but the last falls linearly to a floor of 0.03 / steps, and the last step takes
    the rest, so the weights always sum to 1.
    """
    if steps == 1:
        return [1.0]
    progress = min(iteration / anneal_iterations, 1.0)
    earlier = max((1 - progress) / steps, 0.03 / steps)
    return [earlier] * (steps - 1) + [1.0 - earlier * (steps - 1)]


def learned_inner_rates(
    params: Mapping[str, torch.Tensor], config: MetaTrainConfig
) -> tuple[dict[str, torch.Tensor], Callable[[Mapping[str, torch.Tensor]], InnerLR]]:
    """The trainable inner rates that ``config.learned_inner_lr`` asks for.

    Returns:
        The leaf tensors to optimise (empty for a fixed alpha), each starting at
        ``config.inner_lr``: ``(*param.shape)`` per adapted parameter for Meta-SGD,
        ``(inner_steps,)`` for MAML++; and ``as_inner_lr(rates)``, which puts such
        tensors (these, or detached copies) in the ``inner_lr`` form that ``maml_loss``
        takes.
    """
    adapted_names = InnerLoop.of(
        params, inner_lr=config.inner_lr, inner_steps=0, adapt_only=config.adapt_only
    ).adapted
    if config.learned_inner_lr is None:
        return {}, lambda rates: config.inner_lr
    if config.learned_inner_lr == "per_parameter":
        rates = {
            name: torch.full_like(params[name], config.inner_lr, requires_grad=True) for name in adapted_names
        }
        return rates, dict
    like = next(iter(params.values()))
    rates = {
        name: torch.full(
            (config.inner_steps,), config.inner_lr, dtype=like.dtype, device=like.device, requires_grad=True
        )
        for name in adapted_names
    }
    return rates, lambda rates: [
        {name: rate[step] for name, rate in rates.items()} for step in range(config.inner_steps)
    ]


def meta_train(
    model: nn.Module,
    sample_tasks: TaskSampler,
    config: MetaTrainConfig,
    *,
    loss_fn: LossFn,
    device: str | torch.device = "auto",
    progress: bool = True,
    process_group: str | ProcessGroup | None = "auto",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> TrainingHistory:
    """Meta-train the parameters of ``model`` in place with MAML (or a successor) and Adam.

    Each iteration samples ``config.meta_batch_size`` tasks, computes ``maml_loss`` and
    takes one Adam step (``mamlbook.outer.OuterAdam``) on the model's parameters and
    on any learned inner rates. The model is moved to ``device``. Afterwards each
    parameter's ``grad`` holds the last meta-iteration's meta-gradient.

    Under ``torchrun`` (or with a process group), each process computes the
    meta-gradient of its share of every meta-batch and the shares are averaged before
    the one Adam step, so that every process holds the same theta: the same numbers,
    to rounding, as one process (``mamlbook.distributed``; the appendix "Scaling out").

    Args:
        model: the network whose parameters are theta.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``; for other
            shot counts than a sampler's defaults, use ``functools.partial``.
        config: the hyperparameters.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        device: ``"auto"`` (CUDA where available), ``"cpu"``, ``"cuda"``, ...; with
            several processes on one machine, ``cuda`` is each one's ``cuda:LOCAL_RANK``.
        progress: show a tqdm progress bar (on rank 0 alone).
        process_group: ``"auto"``: share the meta-batches with the processes of the
            default group, which is started here when ``torchrun`` launched several;
            a ``torch.distributed.ProcessGroup``: with its processes; None: compute
            every task in this process.
        checkpoint: a file that rank 0 writes every ``checkpoint_every`` iterations and
            at the end (atomically: theta, learned rates, Adam's moments, the task
            generator, the history); when it exists, training resumes from it, with any
            number of processes. None: no checkpoint.
        checkpoint_every: meta-iterations between checkpoints, >= 1.

    Returns:
        The history of meta-losses, the wall time, the device and the inner rate to
        adapt with (learned, if ``config.learned_inner_lr``).

    Raises:
        NonFiniteLossError: a loss or the meta-gradient became NaN or infinite, in any
            process: every process raises it, theta kept as before that iteration.
        DistributedError: another process died or stopped answering.
    """
    if not isinstance(config, MetaTrainConfig):
        raise TypeError(f"config must be a MetaTrainConfig, got {type(config).__name__}")
    check_model(model)
    check_loss_fn(loss_fn)
    device = resolve_device(device)
    ranks = resolve_ranks(process_group, device=device)
    device = local_device(device, ranks)
    model.to(device)
    params = dict(model.named_parameters())
    rates, as_inner_lr = learned_inner_rates(params, config)
    trainable = [*params.values(), *rates.values()]
    optimizer = OuterAdam(trainable, lr=config.outer_lr)
    ranks.broadcast_(trainable)

    def adam_step(share: TaskBatch, iteration: int) -> torch.Tensor:
        step_weights = None
        if iteration < config.multi_step_loss_iterations:
            step_weights = multi_step_weights(
                config.inner_steps, iteration, config.multi_step_loss_iterations
            )
        optimizer.zero_grad()
        loss, failure = None, None
        try:
            loss = maml_loss(
                model,
                params,
                share,
                loss_fn=loss_fn,
                inner_lr=as_inner_lr(rates),
                inner_steps=config.inner_steps,
                first_order=config.first_order or iteration < config.first_order_iterations,
                adapt_only=config.adapt_only,
                step_weights=step_weights,
            )
            loss.backward()
        except NonFiniteLossError as error:
            failure = error
        grads, loss = ranks.task_weighted_sum(
            [tensor.grad for tensor in trainable],
            loss,
            like=trainable,
            share_tasks=share.num_tasks,
            num_tasks=config.meta_batch_size,
            failure=failure,
        )
        for tensor, grad in zip(trainable, grads, strict=True):
            tensor.grad = grad
        present = [grad for grad in grads if grad is not None]
        if present and not bool(torch.stack([torch.isfinite(grad).all() for grad in present]).all()):
            raise NonFiniteLossError(
                f"the meta-loss is finite ({loss.item():.4g}) but its gradient is not, so theta was not "
                "updated: look in loss_fn and the model for a function with an infinite derivative "
                "(sqrt or log at 0), or try a smaller inner_lr or first_order=True"
            )
        optimizer.step()
        return loss.detach()

    def state() -> dict[str, object]:
        return {"params": params, "rates": rates, "optimizer": optimizer.state_dict()}

    @torch.no_grad()
    def restore(saved: dict[str, object]) -> None:
        check_params(model, saved["params"])
        for tensors, saved_tensors in ((params, saved["params"]), (rates, saved["rates"])):
            for name, tensor in tensors.items():
                tensor.copy_(saved_tensors[name])
        optimizer.load_state_dict(saved["optimizer"])

    history = outer_loop(
        adam_step,
        sample_tasks,
        config,
        device=device,
        progress=progress,
        description="meta-training",
        ranks=ranks,
        checkpoint=Checkpointing.of(checkpoint, checkpoint_every, state, restore),
    )
    learned = as_inner_lr({name: rate.detach().clone() for name, rate in rates.items()})
    inner_loop = InnerLoop.of(
        params,
        inner_lr=learned,
        inner_steps=config.inner_steps,
        first_order=config.first_order,
        adapt_only=config.adapt_only,
    )
    return history._replace(inner_lr=learned, inner_loop=inner_loop)


class Checkpointing(NamedTuple):
    """How ``outer_loop`` saves and resumes a training run.

    Attributes:
        path: the checkpoint file.
        every: meta-iterations between two checkpoints, >= 1.
        state: ``state()`` gives the learner's tensors to save (theta, rates, moments).
        restore: ``restore(saved)`` puts what ``state()`` gave back in place.
    """

    path: Path
    every: int
    state: Callable[[], dict[str, object]]
    restore: Callable[[dict[str, object]], None]

    @classmethod
    def of(
        cls,
        checkpoint: str | os.PathLike | None,
        checkpoint_every: int,
        state: Callable[[], dict[str, object]],
        restore: Callable[[dict[str, object]], None],
    ) -> Checkpointing | None:
        """The checkpointing that ``meta_train``'s arguments ask for; None without a path."""
        if checkpoint is None:
            return None
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be None or a file path, got {type(checkpoint).__name__}")
        return cls(
            Path(checkpoint), check_int("checkpoint_every", checkpoint_every, minimum=1), state, restore
        )


def outer_loop(
    meta_step: Callable[[TaskBatch, int], torch.Tensor],
    sample_tasks: TaskSampler,
    config: MetaTrainConfig | ReptileConfig,
    *,
    device: torch.device,
    progress: bool,
    description: str,
    ranks: Ranks,
    checkpoint: Checkpointing | None = None,
) -> TrainingHistory:
    """The loop shared by the meta-learners: sample T tasks, take one meta-step, record.

    Args:
        meta_step: ``meta_step(share, iteration)`` updates theta from this process's
            share of the batch (all of it when alone) and returns the (detached)
            meta-loss of the whole batch.
        sample_tasks: ``sample_tasks(num_tasks, *, generator) -> TaskBatch``, drawn from
            a generator seeded with ``config.seed``; every process draws the whole batch
            and moves its share to ``device``.
        config: how many meta-steps (``iterations``), of how many tasks (``meta_batch_size``).
        progress, description: the tqdm progress bar and its label.
        ranks: the processes that share each batch.
        checkpoint: where and how often to save, and how to resume; None: never.

    Returns:
        The meta-loss of each iteration, the wall time and the device; ``inner_lr`` and
        ``inner_loop`` are left None for the caller to fill in.
    """
    check_bool("progress", progress)
    if not callable(sample_tasks):
        raise TypeError(
            f"sample_tasks must be callable as sample_tasks(num_tasks, *, generator), got {sample_tasks!r}"
        )
    if ranks.world_size > config.meta_batch_size:
        raise ValueError(
            f"meta_batch_size ({config.meta_batch_size}) must be at least the number of processes "
            f"({ranks.world_size}), so that each computes at least one task"
        )
    generator = torch.Generator().manual_seed(config.seed)
    meta_losses = torch.empty(config.iterations, device=device)
    first, seconds_before = 0, 0.0
    if checkpoint is not None:
        saved = ranks.from_writer(lambda: _read_checkpoint(checkpoint.path, description, config))
        if saved is not None:
            checkpoint.restore(saved["learner_state"])
            generator.set_state(saved["generator"])
            first, seconds_before = saved["iteration"], saved["seconds"]
            meta_losses[:first] = saved["meta_losses"].to(device)
    share = ranks.share(config.meta_batch_size)
    report_every = max(1, config.iterations // 100)
    start = time.perf_counter() - seconds_before
    show = progress and ranks.writes
    with tqdm(range(first, config.iterations), desc=description, disable=not show, initial=first) as bar:
        for iteration in bar:
            batch = sample_tasks(config.meta_batch_size, generator=generator)
            if not isinstance(batch, TaskBatch):
                raise TypeError(f"sample_tasks must return a mamlbook.TaskBatch, got {type(batch).__name__}")
            batch = batch.slice_tasks(share.start, share.stop).to(device)
            try:
                meta_losses[iteration] = meta_step(batch, iteration)
            except NonFiniteLossError as error:
                history = meta_losses[:iteration].cpu()
                raise _stopped_at(iteration, error, history, time.perf_counter() - start, device) from error
            except DistributedError as error:
                raise DistributedError(f"meta-iteration {iteration}: {error}") from error
            if show and iteration % report_every == 0:
                bar.set_postfix(meta_loss=f"{meta_losses[iteration].item():.3f}")
            done = iteration + 1
            due = checkpoint is not None and (done % checkpoint.every == 0 or done == config.iterations)
            if due and ranks.writes:
                save_training_state(
                    checkpoint.path,
                    {
                        "learner": description,
                        "config": dataclasses.asdict(config),
                        "iteration": done,
                        "seconds": time.perf_counter() - start,
                        "generator": generator.get_state(),
                        "meta_losses": meta_losses[:done].cpu(),
                        "learner_state": checkpoint.state(),
                    },
                )
    return TrainingHistory(meta_losses.cpu(), time.perf_counter() - start, str(device), None, None)


def _read_checkpoint(
    path: Path, description: str, config: MetaTrainConfig | ReptileConfig
) -> dict[str, object] | None:
    """The checkpoint at ``path`` of this run, or None when there is none yet."""
    if not path.parent.is_dir():
        raise ValueError(f"checkpoint: the folder {str(path.parent)!r} does not exist")
    check_replaceable(path)
    if not path.exists():
        return None
    return load_training_state(path, learner=description, config=dataclasses.asdict(config))


def _stopped_at(
    iteration: int, error: NonFiniteLossError, meta_losses: torch.Tensor, seconds: float, device: torch.device
) -> NonFiniteLossError:
    """The error of a training run stopped at ``iteration``, with the history before it.

    A meta-loss that had grown tenfold from its lowest value before it diverged points
    at the outer step; the inner loop's own message points at the inner one.
    """
    advice = ""
    if iteration >= 2 and float(meta_losses[-1]) > 10 * float(meta_losses.min()):
        advice = (
            f"; the meta-loss had grown from {float(meta_losses.min()):.4g} to "
            f"{float(meta_losses[-1]):.4g} before it: try a smaller outer_lr"
        )
    stopped = NonFiniteLossError(
        f"meta-iteration {iteration}: {error}{advice}. Theta is kept as the {iteration} meta-iteration(s) "
        "before it left it, and the error's history holds their meta-losses"
    )
    stopped.history = TrainingHistory(meta_losses, seconds, str(device), None, None)
    return stopped
