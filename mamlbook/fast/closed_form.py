"""The ``closed_form`` backend: MAML for ReLU networks with the mean squared error,
every derivative written out.

The appendix "Performance and reproduction" explains it beside the plain computation.

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

``maml_loss`` is an ``autograd.Function``: ``backward()`` on its result puts the
meta-gradient on theta as autograd would. Differentiating it twice (``create_graph=True``)
differentiates the same formulas by autograd, so higher derivatives stay exact.
``mamlbook.backends`` says when ``mamlbook.maml_loss`` takes this backend.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..types import LossFn, Params, TaskBatch
from .batched import LinearOp, Plan, ReLUOp


class _Dense(NamedTuple):
    """One ``nn.Linear``, and whether a ReLU follows it (two in a row act as one)."""

    weight: str
    bias: str | None
    relu: bool


class Network(NamedTuple):
    """A ReLU network as the closed form runs it: an optional ReLU on the inputs, then
    ``Linear`` layers, each maybe followed by a ReLU."""

    relu_inputs: bool
    layers: tuple[_Dense, ...]


def relu_network(model_plan: Plan) -> Network | None:
    """The model of ``model_plan`` as a ``Network``; None when it holds other layers than
    ``nn.Linear`` and ``nn.ReLU``, or no ``nn.Linear``."""
    relu_inputs, layers = False, []
    for op in model_plan.ops:
        if isinstance(op, LinearOp):
            layers.append(_Dense(op.weight, op.bias, False))
        elif not isinstance(op, ReLUOp):
            return None
        elif layers:
            layers[-1] = layers[-1]._replace(relu=True)
        else:
            relu_inputs = True
    return Network(relu_inputs, tuple(layers)) if layers else None


def refusal(network: Network, params: Params, batch: TaskBatch, loss_fn: LossFn) -> str | None:
    """Why the closed form does not compute this meta-loss; None when it does.

    It computes ``F.mse_loss`` on ``(T, K, features)`` inputs and ``(T, K, outputs)``
    targets, of the parameters' one dtype, none of which requires grad.
    """
    if loss_fn is not F.mse_loss:
        return "its loss is F.mse_loss alone"
    if any(tensor.requires_grad for tensor in batch):
        return "it differentiates with respect to theta alone, not the batch"
    dtype = params[network.layers[0].weight].dtype
    if any(tensor.dtype != dtype for tensor in (*params.values(), *batch)):
        return "it takes the parameters and the batch in one dtype"
    in_features = params[network.layers[0].weight].shape[1]
    out_features = params[network.layers[-1].weight].shape[0]
    for x, y in ((batch.support_x, batch.support_y), (batch.query_x, batch.query_y)):
        if x.dim() != 3 or x.shape[-1] != in_features or y.shape != (*x.shape[:2], out_features):
            return "it takes inputs (T, K, features) and targets (T, K, outputs)"
    return None


def maml_loss(
    network: Network,
    params: Params,
    batch: TaskBatch,
    *,
    rates: Sequence[Mapping[str, float]],
    first_order: bool,
) -> torch.Tensor:
    """``mamlbook.maml_loss`` of a ReLU network and the MSE, its derivatives by hand.

    Args:
        network: ``relu_network(plan(model))``, for which ``refusal`` is None.
        params: theta, each tensor of its parameter's shape (not per task).
        batch: T tasks; support ``(T, K, in)`` and ``(T, K, out)``, query ``(T, Q, in)`` and
            ``(T, Q, out)``.
        rates: ``rates[s][name]``, the number that inner step s takes for each parameter.
        first_order: drop the second-order terms (first-order MAML).

    Returns:
        The meta-loss, a scalar; ``backward()`` puts the meta-gradient on ``params``.
    """
    if network.relu_inputs:  # the inputs are constants: their ReLU is too
        batch = batch._replace(support_x=torch.relu(batch.support_x), query_x=torch.relu(batch.query_x))
    records: list[_Record] = []  # what forward keeps for backward: one per inner step, and the query pass
    return _ClosedFormMAML.apply(
        network.layers, tuple(params), tuple(rates), first_order, batch, records, *params.values()
    )


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
            torch.sign(next_input) if layer.relu else None
            for layer, next_input in zip(layers[:-1], self.inputs[1:], strict=True)
        ] + [self.last_mask]


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
    def take(cls, tensors: Iterator, layers: tuple[_Dense, ...], num_grads: int) -> _Record:
        """The next record of ``tensors``, an iterator over what ``tensors()`` wrote, in order."""
        weights = {layer.weight: next(tensors) for layer in layers[1:]}
        kept = _Pass([next(tensors) for _ in layers], next(tensors))
        return cls(weights, kept, [next(tensors) for _ in range(num_grads)])


def _adapt_and_score(
    layers: tuple[_Dense, ...],
    params: Mapping[str, torch.Tensor],
    batch: TaskBatch,
    rates: Sequence[Mapping[str, float]],
    first_order: bool,
    records: list[_Record] | None = None,
) -> tuple[torch.Tensor, _Pass, dict[str, torch.Tensor]]:
    """The inner steps and the query pass, by the formulas above.

    The inner steps descend each task's half sum of squared errors with the rate times
    ``_mse_scale``: the same steps as on the MSE, one multiplication fewer. Made of
    differentiable operations (a ReLU's mask, the sign of its output, has derivative
    zero, as the ReLU's second derivative is), so autograd can differentiate it too.

    Returns:
        The query residual ``(T, Q, out)``, the query pass, and the adapted parameters;
        each inner step's record is appended to ``records`` when given.
    """
    support_scale = _mse_scale(batch.support_y)
    for step_rates in rates:
        outputs, kept = _forward(layers, params, batch.support_x)
        grads, output_grads = _backprop(
            layers, params, kept.inputs, kept.masks(layers), outputs - batch.support_y
        )
        if first_order:
            grads = {name: grad.detach() for name, grad in grads.items()}
        elif records is not None:
            records.append(_Record.of(layers, params, kept, output_grads))
        params = {
            name: torch.add(params[name], grads[name], alpha=-step_rates[name] * support_scale)
            for name in params
        }
    outputs, kept = _forward(layers, params, batch.query_x)
    return outputs - batch.query_y, kept, params


_ARGS_BEFORE_THETA = 6
"""The arguments of ``_ClosedFormMAML.forward`` before theta's tensors: layers, names,
rates, first_order, batch and the list that forward fills with its records, none differentiated."""


class _ClosedFormMAML(torch.autograd.Function):
    """The meta-loss forward, and its meta-gradient backward, without autograd's graph.

    What the backward pass needs goes through ``ctx.save_for_backward``, so that
    autograd's hooks on saved tensors (``mamlbook.profiling.peak_saved_bytes``) see all
    of it; ``forward`` hands it to ``setup_context`` in the list it is given. Differentiated
    twice (``create_graph=True``), the backward pass instead differentiates
    ``_adapt_and_score`` by autograd, so higher derivatives stay exact.
    """

    @staticmethod
    def forward(layers, names, rates, first_order, batch, records, *theta):
        residual, kept, params = _adapt_and_score(
            layers, dict(zip(names, theta, strict=True)), batch, rates, first_order, records
        )
        records.append(_Record.of(layers, params, kept, [residual]))
        return residual.square().mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.layers, ctx.names, ctx.rates, ctx.first_order, ctx.batch, records, *theta = inputs
        # d meta-loss / d output of the query pass, per unit of the incoming gradient:
        # the mean over T tasks of each task's MSE.
        ctx.query_scale = _mse_scale(ctx.batch.query_y) / ctx.batch.query_y.shape[0]
        ctx.support_scale = _mse_scale(ctx.batch.support_y)
        ctx.save_for_backward(*theta, *(tensor for record in records for tensor in record.tensors()))

    @staticmethod
    def backward(ctx, grad_meta_loss):
        saved = iter(ctx.saved_tensors)
        names, layers = ctx.names, ctx.layers
        theta = [next(saved) for _ in names]
        if torch.is_grad_enabled():  # differentiated twice: through autograd, exactly
            return _backward_by_autograd(ctx, theta, grad_meta_loss)
        inner_rates = () if ctx.first_order else ctx.rates  # the steps recorded, in order
        inner = [_Record.take(saved, layers, len(layers)) for _ in inner_rates]
        query = _Record.take(saved, layers, 1)
        query_grad = query.grads[0] * (grad_meta_loss * ctx.query_scale)  # d meta-loss / d query outputs
        vector, _ = _backprop(layers, query.weights, query.kept.inputs, query.kept.masks(layers), query_grad)
        for step_rates, record in zip(reversed(inner_rates), reversed(inner), strict=True):
            products = _hessian_vector(
                layers, record.weights, record.kept.inputs, record.kept.masks(layers), record.grads, vector
            )
            vector = {
                name: torch.add(vector[name], products[name], alpha=-step_rates[name] * ctx.support_scale)
                for name in names
            }
        grads = tuple(
            vector[name].sum(0) if needed else None
            for name, needed in zip(names, ctx.needs_input_grad[_ARGS_BEFORE_THETA:], strict=True)
        )
        return (None,) * _ARGS_BEFORE_THETA + grads


# torch's Function.apply binds its arguments by inspect.signature on every call of a Function
# with setup_context; inspect takes a signature computed once from __signature__.
_ClosedFormMAML.forward.__signature__ = inspect.signature(_ClosedFormMAML.forward)


def _backward_by_autograd(ctx, theta, grad_meta_loss):
    """The backward pass recorded by autograd (for ``create_graph=True``): the meta-loss
    recomputed by ``_adapt_and_score`` from the same theta, and differentiated."""
    flags = ctx.needs_input_grad[_ARGS_BEFORE_THETA:]
    needed = [tensor for tensor, flag in zip(theta, flags, strict=True) if flag]
    with torch.enable_grad():
        params = dict(zip(ctx.names, theta, strict=True))
        residual, _, _ = _adapt_and_score(ctx.layers, params, ctx.batch, ctx.rates, ctx.first_order)
        meta_loss = residual.square().mean()
        grads = iter(torch.autograd.grad(meta_loss, needed, grad_meta_loss, create_graph=True))
    return (None,) * _ARGS_BEFORE_THETA + tuple(next(grads) if flag else None for flag in flags)
