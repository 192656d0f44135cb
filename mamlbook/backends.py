"""The seam between MAML and the ways to compute it: backends, and the rule that picks one.

The algorithm is written once (``mamlbook.meta``, ``mamlbook.inner``); a backend only
evaluates the T tasks' losses that it needs, or, for the closed form, the whole meta-loss:

- ``autograd``: ``loss_fn(functional_call(model, params_t, x_t), y_t)`` vmapped over the
  tasks (``inner.vmapped``; one task at a time where vmap cannot batch the model). Any
  module, every option: the computation the chapters teach.
- ``loop``: the same, one task at a time (``inner.looped``; ``Autograd(vectorised=False)``).
- ``batched``: ``fast.batched``'s forward pass, for networks of known layers.
- ``closed_form``: ``fast.closed_form``'s meta-gradient for ReLU networks and the
  squared error; ``maml_loss`` alone.

``backend="auto"`` takes the first of ``closed_form``, ``batched`` and ``autograd`` that
does not refuse the call. A backend refuses, with its reason, every call it cannot
compute exactly, any inner-loop option it does not know included; one asked for by
name that refuses raises ``ValueError`` with that reason. The backend chosen is logged
at DEBUG level on this module's logger (``logging.getLogger("mamlbook.backends")``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_prediction_and_target, run_model, task_loss
from .fast import batched, closed_form
from .inner import InnerLoop, looped, vmapped
from .types import LossFn, Params, TaskBatch, TaskLosses

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Problem:
    """A call as the backends see it when they decide whether they can compute it.

    Attributes:
        purpose: what is computed, for the log: ``"maml_loss"``, ``"adapt"``, ...
        model, params, loss_fn, loop: the call's network, theta, loss and inner loop.
        inputs: every ``(T, K, ...)`` input tensor the losses will be evaluated on.
        batch: the tasks, when the whole meta-loss is asked for (``maml_loss``); else None.
        step_weights: MAML++'s weights of the query losses after each step, or None.
        vmap_fallback: shared by the call's vmapped losses (``inner.vmapped``).
    """

    purpose: str
    model: nn.Module
    params: Params
    loss_fn: LossFn
    loop: InnerLoop
    inputs: Sequence[torch.Tensor]
    batch: TaskBatch | None = None
    step_weights: Sequence[float] | None = None
    vmap_fallback: dict[str, bool] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def model_plan(self) -> batched.Plan | None:
        """``fast.batched.plan(model)``, walked once per call."""
        return batched.plan(self.model)

    @functools.cached_property
    def relu_network(self) -> closed_form.Network | None:
        """The model as ``fast.closed_form`` runs it; None when it is not a ReLU network of these params."""
        if self.model_plan is None or not self.model_plan.runs(self.params, 2):
            return None
        return closed_form.relu_network(self.model_plan)


class Backend:
    """A way to evaluate the T tasks' losses (``task_losses``) for the core's algorithm."""

    name: str
    computes_meta_loss = False
    """True for a backend that computes ``maml_loss`` whole (``maml_loss(problem)``)."""

    def refusal(self, problem: Problem) -> str | None:
        """Why this backend cannot compute ``problem``; None when it can."""
        return None

    def task_losses(self, problem: Problem, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> TaskLosses:
        """``task_losses(params_per_task) -> (T,)``: ``loss_fn`` of each task's model on ``(x, y)``."""
        raise NotImplementedError(f"backend {self.name!r} computes the meta-loss whole")

    def __repr__(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True, repr=False)
class Autograd(Backend):
    """The core's own computation, any module: ``loss_fn(f(x; params_t), y)`` for each task,
    vmapped over the tasks, or one task at a time (``Autograd(vectorised=False)``, "loop")."""

    vectorised: bool = True

    @property
    def name(self) -> str:
        return "autograd" if self.vectorised else "loop"

    def task_losses(self, problem, x, y, loss_fn):
        def one_task(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            prediction = run_model(problem.model, params, x)
            check_prediction_and_target(prediction, y, loss_fn)
            return task_loss(loss_fn, prediction, y)

        if self.vectorised:
            return vmapped(one_task, x, y, fallback=problem.vmap_fallback)
        return looped(one_task, x, y)


@dataclasses.dataclass(frozen=True, repr=False)
class Batched(Backend):
    """``fast.batched``: known layers as batched tensor operations, in chunks of at most
    ``chunk_elements`` input elements on the CPU (``Batched(chunk_elements=1)``: one task a chunk)."""

    chunk_elements: int = batched.CPU_CHUNK_ELEMENTS
    name = "batched"

    def refusal(self, problem):
        model_plan = problem.model_plan
        if model_plan is None:
            return "the model holds a layer, a hook or a shared parameter that fast.batched does not know"
        if not all(model_plan.runs(problem.params, x.dim() - 1) for x in problem.inputs):
            return "its layers are not batched for inputs of these shapes"
        return None

    def task_losses(self, problem, x, y, loss_fn):
        return batched.task_losses(problem.model_plan, loss_fn, x, y, chunk_elements=self.chunk_elements)


class ClosedForm(Backend):
    """``fast.closed_form``: the meta-gradient of ReLU networks and the MSE, written out."""

    name = "closed_form"
    computes_meta_loss = True
    options = frozenset({"first_order"})
    """The inner-loop options it computes (``InnerLoop.options``)."""

    def refusal(self, problem):
        loop = problem.loop
        if problem.batch is None:
            return "it computes maml_loss alone"
        if problem.step_weights is not None:
            return "it does not compute MAML++'s multi-step loss (step_weights)"
        unknown = loop.options() - self.options
        if unknown:
            return f"it does not compute the inner-loop option(s) {sorted(unknown)}"
        if loop.steps == 0:
            return "it needs at least one inner step"
        if loop.adapted != tuple(problem.params):
            return "it adapts every parameter (no adapt_only)"
        if not all(isinstance(rate, float) for rates in loop.rates for rate in rates.values()):
            return "its inner rates are numbers, not tensors"
        if problem.relu_network is None:
            return "the model is not a network of nn.Linear and nn.ReLU layers"
        return closed_form.refusal(problem.relu_network, problem.params, problem.batch, problem.loss_fn)

    def maml_loss(self, problem: Problem) -> torch.Tensor:
        """The meta-loss of a ``problem`` this backend does not refuse."""
        return closed_form.maml_loss(
            problem.relu_network,
            problem.params,
            problem.batch,
            rates=problem.loop.rates,
            first_order=problem.loop.first_order,
        )


BACKENDS: dict[str, Backend] = {
    backend.name: backend for backend in (Autograd(), Autograd(vectorised=False), Batched(), ClosedForm())
}
"""The backends by name, as ``backend=`` takes them."""

AUTO_ORDER = ("closed_form", "batched", "autograd")
"""``backend="auto"``: the first of these that does not refuse the call."""


def choose_backend(requested: str | Backend, problem: Problem) -> Backend:
    """The backend that computes ``problem``: ``requested``, or by ``AUTO_ORDER`` for ``"auto"``.

    Args:
        requested: ``"auto"``, a name of ``BACKENDS``, or a ``Backend`` such as
            ``Batched(chunk_elements=1)``.
        problem: the call.

    Raises:
        ValueError: ``requested`` is no backend, or refuses ``problem`` (the message says why).
    """
    if requested == "auto":
        backend = next(BACKENDS[name] for name in AUTO_ORDER if BACKENDS[name].refusal(problem) is None)
    else:
        backend = requested if isinstance(requested, Backend) else BACKENDS.get(requested)  # type: ignore[arg-type]
        if backend is None:
            raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {requested!r}")
        reason = backend.refusal(problem)
        if reason is not None:
            raise ValueError(
                f"backend {backend.name!r} cannot compute this {problem.purpose}: {reason}; "
                "use backend='auto' to let the package choose"
            )
    _log.debug("%s: backend %s", problem.purpose, backend.name)
    return backend
