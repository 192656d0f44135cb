"""Second-order MAML written with the peer libraries higher, torchopt and learn2learn.

Each peer's meta-loss is written the way that library's own documentation and examples
write MAML: a Python loop over the tasks, with the library's own inner loop.

- ``higher``: ``higher.innerloop_ctx(model, SGD, copy_initial_weights=False)`` per task,
  with ``diffopt.step(support_loss)``;
- ``torchopt``: one ``torchopt.MetaSGD`` on the model, stepped in place per task, the
  model's parameters and the optimiser's state put back with ``extract_state_dict`` /
  ``recover_state_dict`` after each task (torchopt's MAML example);
- ``learn2learn``: one ``l2l.algorithms.MAML(model, lr, first_order=False)``, and per task
  ``clone()`` then ``adapt(support_loss)``.

The libraries are optional and are not installed beside the book: ``benchmarks/setup_peers.sh``
makes an environment, ``benchmarks/.venv-peers``, that has them (see ``benchmarks/peers/README.md``).
``benchmarks/meta_iteration.py --peers`` imports this module to time them against
``mamlbook.maml_loss``, and ``tests/test_peers.py`` checks their meta-gradients against it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn

import mamlbook as mb

PEERS = ("higher", "torchopt", "learn2learn")

PeerMetaLoss = Callable[[mb.TaskBatch], torch.Tensor]


def _check_name(name: object) -> str:
    if name not in PEERS:
        raise ValueError(f"name must be one of {', '.join(PEERS)}; got {name!r}")
    return name  # type: ignore[return-value]


@functools.cache
def _import_peer(name: str) -> tuple[ModuleType | None, str | None]:
    """The peer's module and None, or None and why it cannot be imported (tried once per process)."""
    try:
        return importlib.import_module(name), None
    except Exception as error:  # a broken install fails in many ways (ImportError, OSError, RuntimeError)
        reason = f"import {name} failed: {type(error).__name__}: {error}"
        return None, f"{reason} (install the peers with benchmarks/setup_peers.sh)"


def peer_unavailable_reason(name: str) -> str | None:
    """Why peer ``name`` cannot be imported here, or None where it can.

    Raises:
        ValueError: ``name`` is not one of ``PEERS``.
    """
    return _import_peer(_check_name(name))[1]


def peer_versions() -> dict[str, str | None]:
    """Each peer's installed version, or None where it cannot be imported (``peer_unavailable_reason``)."""
    importable = {name: _import_peer(name)[0] is not None for name in PEERS}
    return {name: importlib.metadata.version(name) if importable[name] else None for name in PEERS}


def make_peer_meta_loss(
    name: str, model: nn.Module, *, loss_fn: mb.LossFn, inner_lr: float, inner_steps: int
) -> PeerMetaLoss:
    """The second-order MAML meta-loss of ``model``, computed by the peer library ``name``.

    The returned function maps a batch of T tasks to the mean over tasks of the query
    loss after ``inner_steps`` inner SGD steps of rate ``inner_lr`` on the task's support set,
    the same quantity as ``mamlbook.maml_loss(model, dict(model.named_parameters()),
    batch, ...)``. Calling ``.backward()`` on it puts the meta-gradient into the
    ``.grad`` of ``model.parameters()``. The function is tied to ``model``: it reads the
    model's current parameters on every call, so an optimiser may update them in place
    between calls.

    Args:
        name: one of ``PEERS``.
        model: the network, e.g. ``mamlbook.models.MLP(1)`` or ``mamlbook.models.Conv4()``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` for one task.
        inner_lr: alpha, a finite number >= 0.
        inner_steps: inner SGD steps per task, an integer >= 0.

    Returns:
        ``batch -> meta-loss``, for a ``mamlbook.TaskBatch`` with support ``(T, K, ...)``
        and query ``(T, Q, ...)``.

    Raises:
        ValueError: ``name`` is not one of ``PEERS``.
        ImportError: the peer cannot be imported here; the message says why.
    """
    module, reason = _import_peer(_check_name(name))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(prediction, target), got {loss_fn!r}")
    if not isinstance(inner_lr, (int, float)):
        raise TypeError(f"inner_lr must be a number: the peers take one rate, got {type(inner_lr).__name__}")
    mb.InnerLoop.of(dict(model.named_parameters()), inner_lr=inner_lr, inner_steps=inner_steps)  # checks both
    inner_lr = float(inner_lr)
    if module is None:
        raise ImportError(f"peer {name!r} is not available: {reason}")
    build = {"higher": _higher_meta_loss, "torchopt": _torchopt_meta_loss, "learn2learn": _l2l_meta_loss}
    return build[name](module, model, loss_fn, inner_lr, inner_steps)


def _tasks(batch: mb.TaskBatch):
    """The batch's tasks, one ``(support_x, support_y, query_x, query_y)`` at a time."""
    return zip(*batch, strict=True)


def _higher_meta_loss(
    higher: ModuleType, model: nn.Module, loss_fn: mb.LossFn, inner_lr: float, steps: int
) -> PeerMetaLoss:
    inner_optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr)

    def meta_loss(batch: mb.TaskBatch) -> torch.Tensor:
        query_losses = []
        for support_x, support_y, query_x, query_y in _tasks(batch):
            # copy_initial_weights=False: the functional model starts from the model's own
            # parameters, so the meta-gradient reaches them.
            with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False) as (
                fmodel,
                diffopt,
            ):
                for _ in range(steps):
                    diffopt.step(loss_fn(fmodel(support_x), support_y))
                query_losses.append(loss_fn(fmodel(query_x), query_y))
        return torch.stack(query_losses).mean()

    return meta_loss


def _torchopt_meta_loss(
    torchopt: ModuleType, model: nn.Module, loss_fn: mb.LossFn, inner_lr: float, steps: int
) -> PeerMetaLoss:
    inner_optimizer = torchopt.MetaSGD(model, lr=inner_lr)

    def meta_loss(batch: mb.TaskBatch) -> torch.Tensor:
        # By reference: theta itself, which the outer optimiser may have changed in place.
        model_state = torchopt.extract_state_dict(model)
        optimizer_state = torchopt.extract_state_dict(inner_optimizer)
        query_losses = []
        for support_x, support_y, query_x, query_y in _tasks(batch):
            try:
                for _ in range(steps):  # replaces the model's parameters by differentiable phi
                    inner_optimizer.step(loss_fn(model(support_x), support_y))
                query_losses.append(loss_fn(model(query_x), query_y))
            finally:  # theta back in the model for the next task, even when this one fails
                torchopt.recover_state_dict(model, model_state)
                torchopt.recover_state_dict(inner_optimizer, optimizer_state)
        return torch.stack(query_losses).mean()

    return meta_loss


def _l2l_meta_loss(
    l2l: ModuleType, model: nn.Module, loss_fn: mb.LossFn, inner_lr: float, steps: int
) -> PeerMetaLoss:
    maml = l2l.algorithms.MAML(model, lr=inner_lr, first_order=False)  # shares the model's parameters

    def meta_loss(batch: mb.TaskBatch) -> torch.Tensor:
        query_losses = []
        for support_x, support_y, query_x, query_y in _tasks(batch):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(loss_fn(learner(support_x), support_y))
            query_losses.append(loss_fn(learner(query_x), query_y))
        return torch.stack(query_losses).mean()

    return meta_loss
