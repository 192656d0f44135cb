"""The ``batched`` backend: a forward pass over tasks without ``torch.func.vmap``.

The appendix "Performance and reproduction" explains it beside the plain computation.

The inner loop evaluates T copies of one network, task t with its own parameters, on
its own examples. ``torch.func.vmap`` does this for any model; for networks built of a
few known layers, the same outputs come from a handful of batched tensor operations,
which cost less to run and to differentiate:

- ``nn.Linear``: one batched matrix product, ``(T, K, in) @ (T, in, out) + (T, 1, out)``;
- ``nn.Conv2d``: one grouped convolution, the tasks stacked along the channels:
  ``(T, K, C, H, W)`` is laid out as ``(K, T*C, H, W)`` and convolved with ``groups=T``
  and the filters ``(T*out, C, kh, kw)``; where all tasks share the filters (theta,
  before the first inner step), one plain convolution of the K*T images, so that no
  T copies of the filters are kept for backward;
- ``nn.BatchNorm2d`` on batch statistics: in that layout each of the T*C channels is
  one task's channel, so one batch norm gives every task its own statistics over
  ``(K, H, W)``;
- ``nn.ReLU``, ``nn.MaxPool2d`` and ``nn.Flatten``; ``nn.Sequential``; and the book's
  ``MLP`` and ``Conv4``, whose forward passes are known.

``plan`` walks the module tree explicitly and says whether it knows the model (the
backend refuses the models it does not: ``mamlbook.backends``); ``forward`` runs the
plan and ``task_losses`` adds the loss of each task. The walk is repeated at every call
of ``maml_loss``: a plan kept from an earlier call would miss a hook or a layer added since.

Each op below has ``out_rank(rank)``, the number of dimensions of a task's output for
a task's input of ``rank`` dimensions (None: not batched here), and is called on the
activations of all tasks with the dict of parameters ``(T, ...)``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from .._checks import check_prediction_and_target, model_input_error, task_loss
from ..models import MLP, Conv4
from ..types import LossFn, TaskLosses


class _Hidden(NamedTuple):
    """The activations between two layers, in one of two layouts.

    ``tensor`` is ``(T, K, ...)`` when ``grouped`` is False, and ``(K, T*C, H, W)``
    (task t's channels at ``t*C:(t+1)*C``) when it is True.
    """

    tensor: torch.Tensor
    num_tasks: int
    grouped: bool


def _tasks_first(hidden: _Hidden) -> torch.Tensor:
    """The activations as ``(T, K, ...)``; grouped, ``(K, T*C, ...)`` as ``(T, K, C, ...)``."""
    if not hidden.grouped:
        return hidden.tensor
    k, channels, *positions = hidden.tensor.shape
    return hidden.tensor.view(k, hidden.num_tasks, channels // hidden.num_tasks, *positions).transpose(0, 1)


def _grouped(hidden: _Hidden) -> torch.Tensor:
    """The activations ``(T, K, C, H, W)`` as ``(K, T*C, H, W)``."""
    if hidden.grouped:
        return hidden.tensor
    t, k, channels, height, width = hidden.tensor.shape
    return hidden.tensor.transpose(0, 1).reshape(k, t * channels, height, width)


class _OnImages:
    """An op on each task's images ``(K, C, H, W)`` that gives images; other ranks are not batched."""

    def out_rank(self, rank: int) -> int | None:
        return 4 if rank == 4 else None


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """``nn.Linear``: ``(T, K, ..., in)`` -> ``(T, K, ..., out)``."""

    weight: str
    bias: str | None

    def out_rank(self, rank: int) -> int | None:
        return rank if rank >= 1 else None

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        x = _tasks_first(hidden)  # (T, K, ..., in)
        weight = params[self.weight].transpose(1, 2)  # (T, in, out)
        # Reshaping only when needed: each view is one more node for autograd to walk, twice.
        rows = x if x.dim() == 3 else x.reshape(hidden.num_tasks, -1, x.shape[-1])  # (T, N, in)
        if self.bias is None:
            out = torch.bmm(rows, weight)
        else:
            out = torch.baddbmm(params[self.bias].unsqueeze(1), rows, weight)  # (T, N, out)
        if x.dim() != 3:
            out = out.reshape(*x.shape[:-1], out.shape[-1])  # (T, K, ..., out)
        return _Hidden(out, hidden.num_tasks, False)


@dataclasses.dataclass(frozen=True)
class ReLUOp:
    """``nn.ReLU``, in either layout."""

    def out_rank(self, rank: int) -> int | None:
        return rank

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        return hidden._replace(tensor=torch.relu(hidden.tensor))


@dataclasses.dataclass(frozen=True)
class _Conv2d(_OnImages):
    """``nn.Conv2d`` with ``groups=1``, as one convolution with ``groups=T``."""

    weight: str
    bias: str | None
    geometry: tuple  # (stride, padding, dilation), as F.conv2d takes them

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        weight = params[self.weight]  # (T, out, C, kh, kw)
        bias = None if self.bias is None else params[self.bias]  # (T, out)
        # Theta before the first inner step: every task's filters are one tensor, expanded.
        shared = weight.stride(0) == 0 and (bias is None or bias.stride(0) == 0)
        if shared and not isinstance(self.geometry[1], str):  # conv2d_input takes no "same" or "valid"
            out = _SharedFilterConv2d.apply(_grouped(hidden), weight, bias, self.geometry)
        else:
            out = F.conv2d(
                _grouped(hidden),  # (K, T*C, H, W)
                weight.reshape(-1, *weight.shape[2:]),  # (T*out, C, kh, kw): a copy of each task's filters
                None if bias is None else bias.reshape(-1),  # (T*out,)
                *self.geometry,
                groups=hidden.num_tasks,
            )
        return _Hidden(out, hidden.num_tasks, True)  # (K, T*out, H', W')


class _SharedFilterConv2d(torch.autograd.Function):
    """The grouped convolution of ``_Conv2d`` when all T tasks have the same filters.

    The result is that of ``F.conv2d`` with the filters copied T times and ``groups=T``,
    to every order of derivative, but the copy, ``(T*out, C, kh, kw)``, is never kept for
    backward: the forward pass and the gradient of the inputs are one plain convolution of
    the K*T images, viewed ``(K*T, C, H, W)``, with the single filter; only the gradient
    of the filters, which differs by task, is grouped, and it does not read the filters.
    ``backward`` is made of differentiable operations, so autograd records it under
    ``create_graph=True`` (the inner gradient) and differentiates it again.
    """

    @staticmethod
    def forward(x, weight, bias, geometry):
        """``x`` ``(K, T*C, H, W)``; ``weight`` ``(T, out, C, kh, kw)`` and ``bias`` ``(T, out)``
        or None, each an expanded view; ``geometry`` ``(stride, padding, dilation)``; returns
        ``(K, T*out, H', W')``."""
        num_tasks = weight.shape[0]
        images = x.reshape(x.shape[0] * num_tasks, -1, *x.shape[2:])  # (K*T, C, H, W)
        out = F.conv2d(images, weight[0], None if bias is None else bias[0], *geometry)
        return out.reshape(x.shape[0], -1, *out.shape[2:])  # (K*T, out, H', W') -> (K, T*out, H', W')

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.geometry = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        num_tasks, geometry = weight.shape[0], ctx.geometry
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            images_shape = (x.shape[0] * num_tasks, x.shape[1] // num_tasks, *x.shape[2:])
            per_image = grad_out.reshape(images_shape[0], -1, *grad_out.shape[2:])  # (K*T, out, H', W')
            grad_x = torch.nn.grad.conv2d_input(images_shape, weight[0], per_image, *geometry)
            grad_x = grad_x.reshape(x.shape)
        if ctx.needs_input_grad[1]:
            filters_shape = (num_tasks * weight.shape[1], *weight.shape[2:])  # (T*out, C, kh, kw)
            grad_weight = torch.nn.grad.conv2d_weight(x, filters_shape, grad_out, *geometry, groups=num_tasks)
            grad_weight = grad_weight.reshape(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3)).reshape(num_tasks, -1)  # (T*out,) -> (T, out)
        return grad_x, grad_weight, grad_bias, None


# As for the closed form's Function: a signature computed once, for torch's Function.apply.
_SharedFilterConv2d.forward.__signature__ = inspect.signature(_SharedFilterConv2d.forward)


@dataclasses.dataclass(frozen=True)
class _BatchNorm2d(_OnImages):
    """``nn.BatchNorm2d`` without running statistics: each task's channels on its own batch."""

    weight: str | None
    bias: str | None
    eps: float

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        weight = None if self.weight is None else params[self.weight].reshape(-1)  # (T*C,)
        bias = None if self.bias is None else params[self.bias].reshape(-1)
        # Each of the T*C channels is one task's channel: its statistics are over (K, H, W).
        out = F.batch_norm(_grouped(hidden), None, None, weight, bias, training=True, eps=self.eps)
        return _Hidden(out, hidden.num_tasks, True)


@dataclasses.dataclass(frozen=True)
class _MaxPool2d(_OnImages):
    """``nn.MaxPool2d``, each of the T*C channels on its own."""

    geometry: tuple  # (kernel_size, stride, padding, dilation, ceil_mode), as F.max_pool2d takes them

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        return _Hidden(F.max_pool2d(_grouped(hidden), *self.geometry), hidden.num_tasks, True)


@dataclasses.dataclass(frozen=True)
class _Flatten:
    """``nn.Flatten``, its dimensions counted in a task's input."""

    start_dim: int
    end_dim: int

    def _dims(self, rank: int) -> tuple[int, int] | None:
        """The flattened dimensions of a task's ``rank``-dimensional input, from 0; None if invalid."""
        if rank == 0 or not (-rank <= self.start_dim < rank and -rank <= self.end_dim < rank):
            return None
        start, end = self.start_dim % rank, self.end_dim % rank
        return (start, end) if start <= end else None

    def out_rank(self, rank: int) -> int | None:
        dims = self._dims(rank)
        return None if dims is None else rank - (dims[1] - dims[0])

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        x = _tasks_first(hidden)
        start, end = self._dims(x.dim() - 1)  # type: ignore[misc]
        return _Hidden(x.flatten(start + 1, end + 1), hidden.num_tasks, False)


@dataclasses.dataclass(frozen=True)
class _ImageShape(_OnImages):
    """``Conv4``'s check of its input: ``(B, C, H, W)`` images of the expected size (other
    ranks are not batched: ``Conv4`` itself raises, through vmap)."""

    expected: tuple[int, int, int]

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        x = _tasks_first(hidden)  # (T, K, C, H, W)
        if tuple(x.shape[2:]) != self.expected:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.expected))}), got {tuple(x.shape[1:])}"
            )
        return hidden


@dataclasses.dataclass(frozen=True)
class _MeanPositions:
    """``Conv4``'s average of the features over the remaining positions."""

    def out_rank(self, rank: int) -> int | None:
        return 2 if rank == 4 else None

    def __call__(self, hidden: _Hidden, params: Mapping[str, torch.Tensor]) -> _Hidden:
        features = hidden._replace(tensor=hidden.tensor.mean(dim=(-2, -1)))  # (T, K, C) or (K, T*C)
        return _Hidden(_tasks_first(features), hidden.num_tasks, False)  # (T, K, C)


_Op = LinearOp | ReLUOp | _Conv2d | _BatchNorm2d | _MaxPool2d | _Flatten | _ImageShape | _MeanPositions


def _has_hooks(module: nn.Module) -> bool:
    """Whether hooks are registered on ``module``: ``functional_call`` would run them."""
    forward_hooks = module._forward_hooks or module._forward_pre_hooks
    return bool(forward_hooks or module._backward_hooks or module._backward_pre_hooks)


def _layer_op(module: nn.Module, prefix: str) -> _Op | None:
    """The batched form of one known layer; None when ``module`` is not one, or not as supported."""
    kind = type(module)
    if kind is nn.ReLU:
        return ReLUOp()
    if kind is nn.MaxPool2d and not module.return_indices:
        geometry = (module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
        return _MaxPool2d(geometry)
    if kind is nn.Flatten:
        return _Flatten(module.start_dim, module.end_dim)
    # The layers with parameters: a weight, and a bias unless it is None.
    bias = None if getattr(module, "bias", None) is None else prefix + "bias"
    if kind is nn.Linear:
        return LinearOp(prefix + "weight", bias)
    if kind is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros":
        return _Conv2d(prefix + "weight", bias, (module.stride, module.padding, module.dilation))
    if kind is nn.BatchNorm2d and module.running_mean is None and module.running_var is None:
        # Without running statistics it normalises by the batch's, in training and evaluation.
        return _BatchNorm2d(prefix + "weight" if module.affine else None, bias, module.eps)
    return None


def _param_names(op: _Op) -> set[str]:
    """The names of the parameters that ``op`` reads."""
    return {name for name in (getattr(op, "weight", None), getattr(op, "bias", None)) if name is not None}


class Plan(NamedTuple):
    """How to run a known model on T tasks: its ops in order, and its parameters' shapes."""

    ops: tuple[_Op, ...]
    shapes: dict[str, torch.Size]

    def runs(self, params: Mapping[str, torch.Tensor], input_rank: int) -> bool:
        """Whether the plan runs ``params`` (exactly the model's, each of its shape) on a
        task's inputs of ``input_rank`` dimensions (``(K, ...)``: at least 1)."""
        if {name: tensor.shape for name, tensor in params.items()} != self.shapes:
            return False
        rank: int | None = input_rank
        for op in self.ops:
            rank = None if rank is None else op.out_rank(rank)
        return rank is not None and input_rank >= 1


def plan(model: nn.Module) -> Plan | None:
    """The batched ops of ``model``, or None when it holds a module or a hook that this
    module does not know, or a parameter read twice (a layer used twice, or tied weights)."""
    ops: list[_Op] = []
    shapes: dict[str, torch.Size] = {}
    seen: set[int] = set()  # the ids of the parameters read so far

    def walk(module: nn.Module, prefix: str) -> bool:
        """Append the ops of ``module``'s forward pass to ``ops``, and the shapes of the
        parameters they read to ``shapes``; False if some part of ``module`` is not known.

        It reads the modules' own tables: ``_modules`` lists a child as often as it is used
        (``named_children`` would list it once), ``_parameters`` a module's own parameters.
        """
        if _has_hooks(module):
            return False
        own = {prefix + name: tensor for name, tensor in module._parameters.items() if tensor is not None}
        kind = type(module)
        if kind not in (nn.Sequential, MLP, Conv4):
            op = _layer_op(module, prefix)
            if (
                op is None
                or set(own) != _param_names(op)
                or any(id(tensor) in seen for tensor in own.values())
            ):
                return False  # not a known layer, or parameters it does not read, or shared with another
            seen.update(id(tensor) for tensor in own.values())
            shapes.update((name, tensor.shape) for name, tensor in own.items())
            ops.append(op)
            return True
        if own:
            return False  # a parameter of the container itself, which its forward pass does not read
        if kind is nn.Sequential:
            return all(walk(child, f"{prefix}{name}.") for name, child in module._modules.items())
        if kind is MLP:
            return walk(module.body, prefix + "body.") and walk(module.head, prefix + "head.")
        ops.append(_ImageShape((module.in_channels, module.image_size, module.image_size)))  # Conv4
        body_known = walk(module.body, prefix + "body.")
        ops.append(_MeanPositions())
        return body_known and walk(module.head, prefix + "head.")

    return Plan(tuple(ops), shapes) if walk(model, "") else None


def forward(model_plan: Plan, params_per_task: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Every task's model on its own inputs, by batched tensor operations.

    The result equals ``vmap(lambda p, x: functional_call(model, p, (x,)))(params_per_task, x)``
    and is differentiable to any order, on any device.

    Args:
        model_plan: ``plan(model)``, for which ``model_plan.runs(params, x.dim() - 1)``.
        params_per_task: tensors ``(T, ...)``, task t's parameters at index t, keyed like
            ``model.named_parameters()``.
        x: ``(T, K, ...)`` inputs, task t's at index t.

    Returns:
        ``(T, K, ...)`` outputs.

    Raises:
        ValueError: a ``Conv4`` gets images of another size, with ``Conv4``'s own message.
    """
    hidden = _Hidden(x, x.shape[0], False)
    for op in model_plan.ops:
        hidden = op(hidden, params_per_task)
    return _tasks_first(hidden)


CPU_CHUNK_ELEMENTS = 2**18
"""On the CPU, tasks run in chunks whose inputs hold at most about this many elements,
so that a chunk's activations stay in the processor's caches (``benchmarks/README.md``
measures it); the sinusoid MLP's inputs are one chunk. On a GPU all tasks run at once."""


def tasks_per_chunk(x: torch.Tensor, chunk_elements: int = CPU_CHUNK_ELEMENTS) -> int:
    """How many tasks of the ``(T, K, ...)`` inputs ``x`` run together: all on a GPU; on the
    CPU as many as fit in ``chunk_elements`` input elements, at least one."""
    num_tasks = x.shape[0]
    if x.device.type != "cpu" or num_tasks == 0:
        return num_tasks
    return max(1, min(num_tasks, chunk_elements // max(1, x[0].numel())))


def task_losses(
    model_plan: Plan,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_elements: int = CPU_CHUNK_ELEMENTS,
) -> TaskLosses:
    """``loss_fn`` of each task's outputs on ``(x, y)``, from ``forward``, in chunks of tasks.

    ``torch.nn.functional.mse_loss`` on outputs and targets of one shape and dtype is
    computed directly, as the mean squared error of each task; any other ``loss_fn`` is
    vmapped over the tasks' outputs.

    Args:
        model_plan: ``plan(model)``, which runs on these inputs.
        x: ``(T, K, ...)`` inputs; y: ``(T, K, ...)`` targets.
        chunk_elements: see ``tasks_per_chunk``.

    Returns:
        ``task_losses(params_per_task) -> (T,)``.
    """
    chunk = tasks_per_chunk(x, chunk_elements)

    def chunk_losses(params_per_task: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        """The ``(T,)`` losses of all the tasks given, at once."""
        try:
            outputs = forward(model_plan, params_per_task, x)  # (T, K, ...)
        except RuntimeError as error:
            raise model_input_error(x.shape[1:], error) from error
        check_prediction_and_target(outputs[0], y[0], loss_fn)
        if loss_fn is F.mse_loss and outputs.shape == y.shape and outputs.dtype == y.dtype:
            return (outputs - y).square().mean(dim=tuple(range(1, y.dim())))
        return vmap(functools.partial(task_loss, loss_fn), randomness="different")(outputs, y)

    def losses_of(params_per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if chunk == x.shape[0]:
            return chunk_losses(params_per_task, x, y)
        chunks = []
        for start in range(0, x.shape[0], chunk):
            part = slice(start, start + chunk)
            chunk_params = {name: tensor[part] for name, tensor in params_per_task.items()}
            chunks.append(chunk_losses(chunk_params, x[part], y[part]))
        return torch.cat(chunks)

    return losses_of
