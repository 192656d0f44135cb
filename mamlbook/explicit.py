"""MAML for ReLU networks with the mean squared error, every derivative written out.

The appendix "Performance and reproduction" explains it and measures it.

For the sinusoid MLP, a meta-iteration is a few hundred operations on tiny tensors, and
most of its time goes to autograd itself: recording the inner gradient's graph, then
walking it twice. For networks of ``nn.Linear`` and ``nn.ReLU`` layers trained with
``F.mse_loss`` the whole second-order meta-gradient has a short closed form, computed
here with batched matrix products and no graph:

- the inner gradient of each task's support loss is backpropagation by hand;
- the inner step phi_{s+1} = phi_s - alpha grad L_s(phi_s) has the Jacobian
  I - alpha H_s (H_s: the Hessian of the support loss at phi_s), so the outer pass takes
  a vector v on phi_{s+1} to v - alpha H_s v on phi_s, from the query gradient back to
  theta;
- H_s v is Pearlmutter's R-operator: the directional derivative along v of the forward
  pass and then of the backpropagation. ReLU's second derivative is zero, so its mask
  stays constant, and the MSE's gradient is linear in the output.

``explicit_maml_loss`` is an ``autograd.Function``: ``backward()`` on its result puts the
meta-gradient on theta as autograd would. Differentiating it twice (``create_graph=True``)
recomputes the meta-loss through autograd and differentiates that, so higher derivatives
stay exact. ``mamlbook.maml_loss`` takes this path where it applies and the
general one (``mamlbook.inner.inner_step``) everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .batched import _Linear, _plan, _ReLU
from .types import LossFn, Params, TaskBatch


class _Dense(NamedTuple):
    """One ``nn.Linear``, and whether a ReLU follows it (two in a row act as one)."""

    weight: str
    bias: str | None
    relu: bool


class _Network(NamedTuple):
    """A ReLU network as the explicit path runs it: an optional ReLU on the inputs, then
    ``Linear`` layers, each maybe followed by a ReLU."""

    relu_inputs: bool
    layers: tuple[_Dense, ...]


def explicit_maml_loss(
    model: nn.Module,
    params: Params,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    step_rates: Sequence[object],
    first_order: bool,
    meta_loss_by_autograd: Callable[[Params], torch.Tensor],
) -> torch.Tensor | None:
    """``maml_loss`` for a ReLU network and the MSE, derivatives by hand; None where it does not apply.

    It applies when ``model`` is a sequence of ``nn.Linear`` and ``nn.ReLU`` layers (as
    ``mamlbook.batched`` walks it), ``loss_fn`` is ``F.mse_loss`` on outputs of the targets'
    shape and dtype, every step's rate is a number, the inputs are ``(T, K, features)`` and
    no tensor of ``batch`` requires grad, outside ``torch.func`` transforms. Arguments
    are checked by the caller.

    Args:
        params: theta, each tensor of its parameter's shape (not per task).
        batch: T tasks; support ``(T, K, in)`` and ``(T, K, out)``, query ``(T, Q, in)`` and
            ``(T, Q, out)``.
        step_rates: the rate of each inner step, one per step (at least one step).
        first_order: drop the second-order terms (first-order MAML).
        meta_loss_by_autograd: ``(params) -> meta-loss`` through autograd, used only when
            the result is differentiated twice.

    Returns:
        The meta-loss, a scalar, or None.
    """
    network = _relu_network(model, params, batch, loss_fn)
    if network is None or not step_rates or not all(isinstance(rate, float) for rate in step_rates):
        return None
    if network.relu_inputs:  # the inputs are constants: their ReLU is too
        batch = batch._replace(support_x=torch.relu(batch.support_x), query_x=torch.relu(batch.query_x))
    return _ExplicitMAML.apply(
        network.layers,
        tuple(params),
        tuple(step_rates),
        first_order,
        meta_loss_by_autograd,
        batch,
        *params.values(),
    )


def _relu_network(model: nn.Module, params: Params, batch: TaskBatch, loss_fn: LossFn) -> _Network | None:
    """``model`` as a ``_Network`` when the explicit path applies to it and to ``batch``, else None."""
    if loss_fn is not F.mse_loss or torch._C._are_functorch_transforms_active():
        return None
    if any(tensor.requires_grad for tensor in batch):
        return None
    plan = _plan(model)
    if plan is None or not all(isinstance(op, (_Linear, _ReLU)) for op in plan.ops):
        return None
    if params.keys() != plan.shapes.keys() or any(params[n].shape != s for n, s in plan.shapes.items()):
        return None
    relu_inputs, layers = False, []
    for op in plan.ops:
        if isinstance(op, _Linear):
            layers.append(_Dense(op.weight, op.bias, False))
        elif layers:
            layers[-1] = layers[-1]._replace(relu=True)
        else:
            relu_inputs = True
    if not layers:
        return None
    in_features = plan.shapes[layers[0].weight][1]
    out_features = plan.shapes[layers[-1].weight][0]
    dtype = params[layers[0].weight].dtype
    if any(tensor.dtype != dtype for tensor in params.values()):
        return None
    for x, y in ((batch.support_x, batch.support_y), (batch.query_x, batch.query_y)):
        if x.dim() != 3 or x.shape[-1] != in_features or y.shape != (*x.shape[:2], out_features):
            return None
        if x.dtype != dtype or y.dtype != dtype:
            return None
    return _Network(relu_inputs, tuple(layers))


def _linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(T, N, in)`` inputs through a weight ``(out, in)`` shared by the tasks or ``(T, out, in)``."""
    if weight.dim() == 2:
        return F.linear(inputs, weight, bias)
    if bias is None:
        return torch.bmm(inputs, weight.mT)
    return torch.baddbmm(bias.unsqueeze(1), inputs, weight.mT)


def _times(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(T, N, out) @ (out, in)`` or ``(T, N, out) @ (T, out, in)``: back through a weight."""
    return torch.bmm(rows, weight) if weight.dim() == 3 else rows @ weight


class _Pass(NamedTuple):
    """What one forward pass keeps for backpropagation: each layer's input ``(T, N, in)``,
    and the mask of the last layer's ReLU if it has one (see ``masks``)."""

    inputs: list[torch.Tensor]
    last_mask: torch.Tensor | None

    def masks(self, layers: tuple[_Dense, ...]) -> list[torch.Tensor | None]:
        """Each layer's ReLU mask ``(T, N, out)``, 1.0 where its output is positive and 0.0
        elsewhere (None: no ReLU). A ReLU's output is the next layer's input, so its sign
        is the mask: kept once, as autograd keeps it."""
        return [
            None
            if not layer.relu
            else self.last_mask
            if index == len(layers) - 1
            else torch.sign(self.inputs[index + 1])
            for index, layer in enumerate(layers)
        ]


def _forward(layers: tuple[_Dense, ...], params: Mapping[str, torch.Tensor], x: torch.Tensor):
    """The network's ``(T, N, out)`` outputs on the inputs ``(T, N, in)``, and its ``_Pass``."""
    inputs = []
    hidden = x
    for layer in layers:
        inputs.append(hidden)
        hidden = _linear(hidden, params[layer.weight], None if layer.bias is None else params[layer.bias])
        if layer.relu:
            hidden = torch.relu(hidden)
    return hidden, _Pass(inputs, torch.sign(hidden) if layers[-1].relu else None)


def _backprop(
    layers: tuple[_Dense, ...],
    weights: Mapping[str, torch.Tensor],
    inputs: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    grad: torch.Tensor,
):
    """Each task's gradient ``(T, ...)`` of each parameter, from the gradient ``(T, N, out)``
    of the outputs. ``weights`` holds those of every layer but the first, at least. Also
    returns the gradient at each layer's output after its ReLU's mask (None for the first
    layer: the Hessian-vector product does not need it)."""
    grads, output_grads = {}, [None] * len(layers)
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if masks[index] is not None:
            grad = grad * masks[index]
        grads[layer.weight] = torch.bmm(grad.mT, inputs[index])  # (T, out, N) @ (T, N, in)
        if layer.bias is not None:
            grads[layer.bias] = grad.sum(1)
        if index > 0:
            output_grads[index] = grad
            grad = _times(grad, weights[layer.weight])
    return grads, output_grads


def _hessian_vector(
    layers: tuple[_Dense, ...],
    weights: Mapping[str, torch.Tensor],
    inputs: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    output_grads: list[torch.Tensor | None],
    direction: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """H v for each task: H the Hessian of its half sum of squared errors at the point whose
    ``weights`` (every layer's but the first), inputs, masks and output gradients are
    given, and v the ``direction`` ``(T, ...)``.

    The R-operator: R(z) is the derivative of z along ``direction``. Forward, a Linear
    gives R(out) = R(in) W^T + in V_W^T + V_b and a ReLU multiplies by its mask; the
    output gradient, out - y, gives R(out); backward, a Linear with output gradient g gives
    R(g_W) = R(g)^T in + g^T R(in), R(g_b) = sum R(g) and R(g_in) = R(g) W + g V_W.
    """
    r_inputs: list[torch.Tensor | None] = [None]  # the network's inputs are constants
    for index, layer in enumerate(layers):
        bias = None if layer.bias is None else direction[layer.bias]
        r_out = _linear(inputs[index], direction[layer.weight], bias)
        if r_inputs[index] is not None:
            r_out = r_out + _times(r_inputs[index], weights[layer.weight].mT)
        r_inputs.append(r_out if masks[index] is None else r_out * masks[index])
    r_grad = r_inputs.pop()  # already masked: a mask times itself is the mask
    products = {}
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if masks[index] is not None and index < len(layers) - 1:
            r_grad = r_grad * masks[index]
        products[layer.weight] = torch.bmm(r_grad.mT, inputs[index])
        if r_inputs[index] is not None:
            products[layer.weight] = torch.baddbmm(
                products[layer.weight], output_grads[index].mT, r_inputs[index]
            )
        if layer.bias is not None:
            products[layer.bias] = r_grad.sum(1)
        if index > 0:
            r_grad = _times(r_grad, weights[layer.weight]) + torch.bmm(
                output_grads[index], direction[layer.weight]
            )
    return products


def _mse_scale(y: torch.Tensor) -> float:
    """The mean squared error of one task's ``(N, out)`` targets is this times the half sum of squares."""
    return 2.0 / (y.shape[1] * y.shape[2])


class _Record(NamedTuple):
    """A pass of the network that the backward pass goes back through: the weights it ran
    with (of every layer but the first: backpropagation stops there), its ``_Pass``, and its
    gradients at each layer's output (for the query pass, the residual alone)."""

    weights: dict[str, torch.Tensor]
    kept: _Pass
    grads: list[torch.Tensor | None]

    @classmethod
    def of(
        cls, layers: tuple[_Dense, ...], params: Mapping[str, torch.Tensor], kept: _Pass, grads: list
    ) -> _Record:
        return cls({layer.weight: params[layer.weight] for layer in layers[1:]}, kept, grads)

    def tensors(self) -> list[torch.Tensor | None]:
        """The record as a flat list, for ``ctx.save_for_backward``."""
        return [*self.weights.values(), *self.kept.inputs, self.kept.last_mask, *self.grads]

    @classmethod
    def take(cls, tensors: list, layers: tuple[_Dense, ...], num_grads: int) -> _Record:
        """The record at the front of ``tensors`` (as ``tensors()`` wrote it), removed from the list."""
        parts = []
        for size in (len(layers) - 1, len(layers), 1, num_grads):
            parts.append(tensors[:size])
            del tensors[:size]
        weights, inputs, (last_mask,), grads = parts
        names = [layer.weight for layer in layers[1:]]
        return cls(dict(zip(names, weights, strict=True)), _Pass(inputs, last_mask), grads)


_ARGS_BEFORE_THETA = 6
"""The arguments of ``_ExplicitMAML.forward`` before theta's tensors: layers, names,
step_rates, first_order, meta_loss_by_autograd and batch, none differentiated."""


class _ExplicitMAML(torch.autograd.Function):
    """The meta-loss forward, and its meta-gradient backward, without autograd's graph.

    The inner steps descend each task's half sum of squared errors with the rate times
    ``_mse_scale``: the same steps as on the MSE, one multiplication fewer. What the
    backward pass needs goes through ``ctx.save_for_backward``, so that autograd's hooks
    on saved tensors (``mamlbook.profiling.peak_saved_bytes``) see all of it.
    """

    @staticmethod
    def forward(ctx, layers, names, step_rates, first_order, meta_loss_by_autograd, batch, *theta):
        params = dict(zip(names, theta, strict=True))
        records = []  # one per inner step, for the second-order terms
        support_scale = _mse_scale(batch.support_y)
        for rate in step_rates:
            outputs, kept = _forward(layers, params, batch.support_x)
            grads, output_grads = _backprop(
                layers, params, kept.inputs, kept.masks(layers), outputs - batch.support_y
            )
            if not first_order:
                records.append(_Record.of(layers, params, kept, output_grads))
            params = {
                name: torch.add(params[name], grads[name], alpha=-rate * support_scale) for name in names
            }
        outputs, kept = _forward(layers, params, batch.query_x)
        residual = outputs - batch.query_y  # (T, Q, out)
        records.append(_Record.of(layers, params, kept, [residual]))
        ctx.layers, ctx.names, ctx.meta_loss_by_autograd = layers, names, meta_loss_by_autograd
        ctx.inner_rates = () if first_order else step_rates  # the steps recorded, in order
        # d meta-loss / d output of the query pass, per unit of the incoming gradient:
        # the mean over T tasks of each task's MSE.
        ctx.query_scale = _mse_scale(batch.query_y) / batch.query_y.shape[0]
        ctx.support_scale = support_scale
        ctx.save_for_backward(*theta, *(tensor for record in records for tensor in record.tensors()))
        return residual.square().mean()

    @staticmethod
    def backward(ctx, grad_meta_loss):
        saved = list(ctx.saved_tensors)
        names, layers = ctx.names, ctx.layers
        theta = saved[: len(names)]
        if torch.is_grad_enabled():  # differentiated twice: through autograd, exactly
            return _backward_by_autograd(ctx, theta, grad_meta_loss)
        del saved[: len(names)]
        inner = [_Record.take(saved, layers, len(layers)) for _ in ctx.inner_rates]
        query = _Record.take(saved, layers, 1)
        residual = query.grads[0]
        vector, _ = _backprop(
            layers,
            query.weights,
            query.kept.inputs,
            query.kept.masks(layers),
            residual * (grad_meta_loss * ctx.query_scale),
        )
        for rate, record in zip(reversed(ctx.inner_rates), reversed(inner), strict=True):
            products = _hessian_vector(
                layers,
                record.weights,
                record.kept.inputs,
                record.kept.masks(layers),
                record.grads,
                vector,
            )
            vector = {
                name: torch.add(vector[name], products[name], alpha=-rate * ctx.support_scale)
                for name in names
            }
        grads = tuple(
            vector[name].sum(0) if needed else None
            for name, needed in zip(names, ctx.needs_input_grad[_ARGS_BEFORE_THETA:], strict=True)
        )
        return (None,) * _ARGS_BEFORE_THETA + grads


def _backward_by_autograd(ctx, theta, grad_meta_loss):
    """The backward pass recorded by autograd (for ``create_graph=True``): the meta-loss
    recomputed through autograd from the same theta, and differentiated."""
    flags = ctx.needs_input_grad[_ARGS_BEFORE_THETA:]
    needed = [tensor for tensor, flag in zip(theta, flags, strict=True) if flag]
    with torch.enable_grad():
        meta_loss = ctx.meta_loss_by_autograd(dict(zip(ctx.names, theta, strict=True)))
        grads = iter(torch.autograd.grad(meta_loss, needed, grad_meta_loss, create_graph=True))
    return (None,) * _ARGS_BEFORE_THETA + tuple(next(grads) if flag else None for flag in flags)
