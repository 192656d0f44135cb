"""The paper's outer step for reinforcement learning: trust-region policy optimisation (chapter 8).

MAML-RL (Finn et al. 2017, section 5.3) meta-trains with TRPO (Schulman et al. 2015)
instead of Adam. For one meta-batch of T goals, with the pre-update episodes D_t and the
post-update episodes D'_t sampled once (``navigation_meta_loss``), TRPO solves

    maximise over theta   S(theta) = mean_t mean_{(s, a) in D'_t} r_t(theta) * A(s, a),
                          r_t(theta) = pi_phi_t(theta)(a | s) / pi_phi_t(theta_old)(a | s),
    subject to            KL(theta) = mean_{s in D'} KL(pi_phi_t(theta_old)(. | s) || pi_phi_t(theta)(. | s))
                          <= max_kl,

where phi_t(theta) is the policy after the inner loop's policy-gradient steps on the
fixed episodes D_t. Both functions depend on theta only through phi_t(theta), which is
recomputed by the book's inner loop (``mamlbook.inner.adaptation``) on the same
pre-update episodes: no episode is sampled inside the step. The surrogate is a mean over
each task's steps, then over tasks; the KL a mean over all the post-update steps taken,
as in the paper's code (cbfinn/maml_rl, ``maml_npo.py``).

One step, as in TRPO:

1. g = grad S(theta_old), the meta-gradient (minus the gradient of the meta-loss, which
   also carries DiCE's term when that estimator is chosen);
2. F, the Hessian of the KL at theta_old (a Fisher matrix pulled back through the inner
   step), is used only in products F v: the gradient of (grad KL . v), an
   ``autograd.grad`` of an ``autograd.grad`` (third order through a second-order inner
   step; the paper's code uses finite differences of gradients to avoid that);
3. conjugate gradient solves (F + damping I) s = g in ``cg_iterations`` products;
4. the full step beta s, beta = sqrt(2 max_kl / s^T F s), reaches the KL bound in the
   quadratic model of the KL; a backtracking line search takes the first of beta s,
   0.8 beta s, 0.8^2 beta s, ... that improves S and keeps the KL within the bound, and
   none if none does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_int, check_nonnegative_float, check_positive_float
from ..errors import NonFiniteLossError
from ..inner import adaptation, per_task
from ..types import Params
from .meta import MetaLoss
from .policy import action_means, gaussian_kl, log_prob
from .policy_gradient import PolicyGradientLoss


class TRPOStep(NamedTuple):
    """What one ``trpo_step`` did.

    Attributes:
        surrogate_before: S(theta_old), the post-update surrogate before the step.
        surrogate_after: S at the parameters after the step (equal to the first when rejected).
        kl: the mean KL between the old and new adapted policies (0 when rejected).
        backtracks: how many times the step was shrunk; ``max_backtracks`` when rejected.
        accepted: whether a step was taken.
    """

    surrogate_before: float
    surrogate_after: float
    kl: float
    backtracks: int
    accepted: bool


class _Replay:
    """The support losses of recorded inner steps as one ``TaskLosses``: step s's at the s-th call."""

    def __init__(self, losses: Sequence[PolicyGradientLoss]) -> None:
        self._losses: Iterator[PolicyGradientLoss] = iter(losses)

    def __call__(self, params_per_task: Params) -> torch.Tensor:
        return next(self._losses)(params_per_task)


class PostUpdateObjective:
    """S(theta) and KL(theta) of a ``MetaLoss``'s fixed episodes, as functions of theta.

    Args:
        policy: the ``GaussianMLPPolicy`` the episodes were sampled from.
        params: theta_old, the parameters ``result`` was computed at.
        result: the meta-loss of one meta-batch (``navigation_meta_loss``).
    """

    def __init__(self, policy: nn.Module, params: Params, result: MetaLoss) -> None:
        self.policy = policy
        self.loop = result.inner_loop
        self.support = [sample.loss for sample in result.support.samples]
        self.query = result.query.samples[-1].loss
        with torch.no_grad():
            old = self.adapted({name: tensor.detach() for name, tensor in params.items()})
            episodes = self.query.trajectories
            self.old_means = action_means(policy, old, episodes.states)  # (T, N, H, A)
            self.old_log_std = old["log_std"][:, None, None, :]  # (T, 1, 1, A)
            self.old_log_probs = log_prob(policy, old, episodes.states, episodes.actions)  # (T, N, H)

    def adapted(self, params: Params) -> Params:
        """phi_t(theta) for every task, ``(T, ...)`` each: the inner loop replayed on the same episodes."""
        adapted = per_task(params, self.query.trajectories.goals.shape[0])
        for step in adaptation(_Replay(self.support), adapted, self.loop):
            adapted = step.adapted
        return adapted

    def __call__(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, KL)`` at theta = ``params``, two scalars, differentiable when params require grad."""
        adapted = self.adapted(params)
        episodes, mask = self.query.trajectories, self.query.trajectories.mask
        new_log_probs = log_prob(self.policy, adapted, episodes.states, episodes.actions)  # (T, N, H)
        ratios = torch.exp(new_log_probs - self.old_log_probs)
        per_task_surrogate = (ratios * self.query.advantages * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))
        means = action_means(self.policy, adapted, episodes.states)  # (T, N, H, A)
        log_std = adapted["log_std"][:, None, None, :]
        kl = gaussian_kl(self.old_means, self.old_log_std, means, log_std)  # (T, N, H)
        return per_task_surrogate.mean(), (kl * mask).sum() / mask.sum()


def conjugate_gradient(
    matrix_vector: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int = 10
) -> torch.Tensor:
    """x with A x ~ b for a symmetric positive-definite A given only by products A v.

    The classical conjugate-gradient iteration from x = 0, stopped after ``iterations``
    products or when the squared residual falls below 1e-10.

    Args:
        matrix_vector: ``v -> A v``, ``(n,) -> (n,)``.
        b: ``(n,)``.
        iterations: the most products, >= 1.

    Returns:
        ``(n,)`` the approximate solution.
    """
    iterations = check_int("iterations", iterations, minimum=1)
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        if residual_norm < 1e-10:
            break
        product = matrix_vector(direction)
        step = residual_norm / (direction @ product)
        x = x + step * direction
        residual = residual - step * product
        new_norm = residual @ residual
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return x


def kl_hessian_vector_product(
    kl: torch.Tensor, inputs: Sequence[torch.Tensor], damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H + damping I) v``, H the Hessian of ``kl`` with respect to ``inputs``, flattened.

    Args:
        kl: a scalar computed from ``inputs`` with its graph.
        inputs: the tensors to differentiate with respect to; v is ``(n,)``, n their total size.
        damping: added to the diagonal, >= 0.
    """
    grads = torch.autograd.grad(kl, inputs, create_graph=True, allow_unused=True, materialize_grads=True)
    flat_grad = _flat(grads)  # (n,)

    def product(vector: torch.Tensor) -> torch.Tensor:
        rows = torch.autograd.grad(
            flat_grad @ vector, inputs, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        return _flat(rows) + damping * vector

    return product


def trpo_step(
    policy: nn.Module,
    params: Params,
    result: MetaLoss,
    *,
    max_kl: float,
    cg_iterations: int = 10,
    damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> TRPOStep:
    """One meta-TRPO step on theta = ``params``, in place: maximise S(theta) within KL <= max_kl.

    See the module's docstring for S, the KL and the step. ``result``'s graph is used
    for the meta-gradient and freed.

    Args:
        policy: the ``GaussianMLPPolicy`` whose parameters ``params`` are.
        params: theta, ``dict(policy.named_parameters())``, leaf tensors that require grad.
        result: ``navigation_meta_loss`` at these params, not yet differentiated.
        max_kl: the trust region's radius, > 0 (the paper: 0.01).
        cg_iterations: Fisher-vector products of conjugate gradient, >= 1.
        damping: added to the KL's Hessian, >= 0.
        backtrack_ratio: the line search's shrink factor, in (0, 1).
        max_backtracks: the line search's most trials, >= 1.

    Returns:
        A ``TRPOStep``.

    Raises:
        NonFiniteLossError: the meta-gradient, the surrogate or the step is NaN or infinite.
    """
    _check_arguments(params, result, backtrack_ratio)
    max_kl = check_positive_float("max_kl", max_kl)
    cg_iterations = check_int("cg_iterations", cg_iterations, minimum=1)
    damping = check_nonnegative_float("damping", damping)
    max_backtracks = check_int("max_backtracks", max_backtracks, minimum=1)
    tensors = list(params.values())
    objective = PostUpdateObjective(policy, params, result)
    gradient = -_flat(torch.autograd.grad(result.loss, tensors, allow_unused=True, materialize_grads=True))
    if not bool(torch.isfinite(gradient).all()):
        raise NonFiniteLossError("the meta-gradient of the TRPO step is not finite")
    _, kl = objective(params)
    fisher = kl_hessian_vector_product(kl, tensors, damping)
    direction = conjugate_gradient(fisher, gradient, cg_iterations)  # s ~ F^-1 g
    curvature = direction @ fisher(direction)  # s^T F s
    full_step = math.sqrt(2 * max_kl / (float(curvature) + 1e-8)) * direction
    if not bool(torch.isfinite(full_step).all()):
        raise NonFiniteLossError(f"the TRPO step is not finite (s^T F s = {float(curvature)})")
    with torch.no_grad():
        before = float(objective({name: tensor.detach() for name, tensor in params.items()})[0])
        if not math.isfinite(before):
            raise NonFiniteLossError("the post-update surrogate is not finite before the TRPO step")
        for backtracks in range(max_backtracks):
            candidate = _moved(params, backtrack_ratio**backtracks * full_step)
            surrogate, kl = (float(value) for value in objective(candidate))
            if surrogate > before and kl <= max_kl:  # False for NaN: a step too far
                for tensor, new in zip(tensors, candidate.values(), strict=True):
                    tensor.copy_(new)
                return TRPOStep(before, surrogate, kl, backtracks, True)
    return TRPOStep(before, before, 0.0, max_backtracks, False)


def _check_arguments(params: Params, result: MetaLoss, backtrack_ratio: float) -> None:
    """Raise a clear error for arguments ``trpo_step`` cannot use."""
    if not isinstance(result, MetaLoss):
        raise TypeError(f"result must be a mamlbook.rl.MetaLoss, got {type(result).__name__}")
    if not isinstance(params, dict) or not all(
        isinstance(tensor, torch.Tensor) and tensor.is_leaf and tensor.requires_grad
        for tensor in params.values()
    ):
        raise TypeError(
            "params must be a dict of leaf tensors that require grad (dict(policy.named_parameters()))"
        )
    if len(result.support.samples) != result.inner_loop.steps or not result.query.samples:
        raise ValueError(
            f"result must hold one support sample per inner step ({result.inner_loop.steps}) and a "
            f"query sample, got {len(result.support.samples)} and {len(result.query.samples)}"
        )
    ratio = check_positive_float("backtrack_ratio", backtrack_ratio)
    if ratio >= 1:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio!r}")


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors flattened and joined, ``(n,)``."""
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def _moved(params: Params, step: torch.Tensor) -> Params:
    """theta + step, detached, the ``(n,)`` step cut into the params' shapes."""
    moved, start = {}, 0
    for name, tensor in params.items():
        moved[name] = tensor.detach() + step[start : start + tensor.numel()].view_as(tensor)
        start += tensor.numel()
    return moved
