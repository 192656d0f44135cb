"""Checker for chapter 8's inner step: one policy-gradient step of one task, on its episodes.

``check_policy_gradient_step(fn)`` runs ``fn(policy, params, trajectories, *, inner_lr,
discount)`` on a small float64 problem drawn from ``seed`` (0, the default, is the
chapter's), on copies of the inputs (the policy deep-copied), and compares the adapted
parameters, and the gradient through them, with ``mamlbook.rl.PolicyGradientLoss`` and
one step of ``mamlbook.inner.adaptation``, computed first. An exception, a wrong type or
an in-place change becomes a hint. When they differ, it names the classic mistake that
gives the same answer: no baseline, advantages not standardised, returns not
discounted (or the default discount instead of the one given), a sum instead of a mean,
a step up the surrogate, the inner gradient detached (first order) or the step cut
from ``params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..inner import InnerLoop, adaptation, per_task
from ..rl.policy import GaussianMLPPolicy
from ..rl.policy_gradient import (
    DISCOUNT,
    PolicyGradientLoss,
    discounted_returns,
    fit_baseline,
    standardised,
    surrogate,
)
from ..rl.sampling import Trajectories, sample_trajectories
from ..types import Params
from ._problems import copied, leaves, params_hint, same
from ._student import call_student, check_arguments
from .reinforcement import _close, _masked_rewards
from .result import CheckResult

_INNER_LR = 0.1
_STEP_DISCOUNT = 0.9  # not the default DISCOUNT, so that ignoring the argument shows
_CALL = "policy_gradient_step(policy, params, trajectories, inner_lr=..., discount=...)"

_STEP_HINTS = {
    "sign": (
        "the step climbs the surrogate: the surrogate is minus the mean of log pi * A and the inner "
        "step descends it, params - inner_lr * gradient"
    ),
    "no_baseline": (
        "the advantages have no baseline: subtract the linear baseline fitted to these episodes' "
        "returns before standardising"
    ),
    "notstandardised": (
        "the advantages are not standardised: scale returns - baseline to mean 0 and standard "
        "deviation 1 over the task's steps taken"
    ),
    "raw_returns": (
        "the advantages are the raw returns: subtract the baseline, then standardise over the "
        "task's steps taken"
    ),
    "not_discounted": "the returns are not discounted: use the discount given",
    "default_discount": (
        "the returns use the default discount, not the one given: pass discount on to the returns "
        "or advantages"
    ),
    "sum": "the step is too large: the surrogate sums over the steps; take the mean over the steps taken",
    "sum_steps": (
        "the step is too large: the surrogate sums each episode's steps; take the mean over all "
        "the steps taken"
    ),
    "padded": (
        "the step is too small: the surrogate's mean counts the padded steps after an episode "
        "ended; divide by the steps taken (the sum of the mask)"
    ),
    "no_step": "the params did not move: take one step of size inner_lr down the surrogate",
    "unbiased_std": (
        "the advantages are divided by the unbiased standard deviation (torch.std's default): "
        "standardise with the plain one, unbiased=False, as mamlbook.rl.advantages does"
    ),
}


def _step_problem(seed: int) -> tuple[nn.Module, Params, Trajectories]:
    """A float64 policy with hidden layer (8,), params other than its own weights, and
    5 episodes of up to 12 steps of one goal, 4 of them cut short as if they ended."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # nn.Linear draws its initial weights from this generator
        policy = GaussianMLPPolicy(hidden=(8,)).double()
    params = {
        name: tensor.detach() + 0.2 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        for name, tensor in policy.named_parameters()
    }
    goals = (torch.rand(1, 2, generator=generator, dtype=torch.float64) - 0.5) * 0.8
    episodes = sample_trajectories(
        policy, per_task(params, 1), goals, num_trajectories=5, horizon=12, generator=generator
    )
    _, cut = _masked_rewards((1, 5, 12), generator, padded=True)
    mask = episodes.mask * cut
    return policy, params, episodes._replace(rewards=episodes.rewards * mask, mask=mask)


def _reference_step(
    loss: Callable[[Params], torch.Tensor], params: Params, *, first_order: bool = False
) -> Params:
    """The parameters after one inner step of ``mamlbook.inner.adaptation`` on ``loss``, task dim removed."""
    loop = InnerLoop.of(params, inner_lr=_INNER_LR, inner_steps=1, first_order=first_order)
    step = next(adaptation(loss, per_task(params, 1), loop))
    return {name: tensor[0] for name, tensor in step.adapted.items()}


def _step_mistakes(policy: nn.Module, params: Params, episodes: Trajectories) -> dict[str, Params]:
    """The change params -> adapted that each classic mistake gives."""
    loss = PolicyGradientLoss(policy, episodes, _STEP_DISCOUNT)
    mask = episodes.mask
    count = mask.sum().item()  # the steps taken
    returns = discounted_returns(episodes.rewards, _STEP_DISCOUNT) * mask
    options = {  # name: (the advantages, the factor of the step)
        "sign": (loss.advantages, -1.0),
        "no_baseline": (standardised(returns, mask)[0], 1.0),
        "notstandardised": (returns - fit_baseline(episodes, returns), 1.0),
        "raw_returns": (returns, 1.0),
        "not_discounted": (PolicyGradientLoss(policy, episodes, 1.0).advantages, 1.0),
        "default_discount": (PolicyGradientLoss(policy, episodes, DISCOUNT).advantages, 1.0),
        "sum": (loss.advantages, count),
        "sum_steps": (loss.advantages, count / mask.shape[1]),
        "padded": (loss.advantages, count / mask[0].numel()),
        "unbiased_std": (loss.advantages, ((count - 1) / count) ** 0.5),
        "no_step": (loss.advantages, 0.0),
    }
    theta = leaves(params)
    changes = {}
    for name, (advantages, factor) in options.items():
        value = surrogate(loss.log_probs(per_task(theta, 1)), advantages, mask)[0]
        grads = torch.autograd.grad(value, list(theta.values()))
        changes[name] = {key: -factor * _INNER_LR * grad for key, grad in zip(theta, grads, strict=True)}
    return changes


def _probe(adapted: Mapping[str, torch.Tensor], seed: int) -> torch.Tensor:
    """A fixed random linear function of the adapted parameters, to differentiate through the step."""
    generator = torch.Generator().manual_seed(seed)
    return sum(
        (tensor * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)).sum()
        for tensor in adapted.values()
    )


def _gradient(adapted: Mapping[str, torch.Tensor], theta: Params, seed: int) -> list[torch.Tensor] | None:
    """The gradient of ``_probe(adapted)`` with respect to ``theta``, None when it has none."""
    probe = _probe(adapted, seed)
    if not probe.requires_grad:
        return None
    grads = torch.autograd.grad(probe, list(theta.values()), allow_unused=True)
    return None if any(grad is None for grad in grads) else list(grads)


def _explain(error: Exception) -> CheckResult | None:
    """The hint for autograd's error when the surrogate does not depend on params, else None."""
    text = str(error).lower()
    if any(key in text for key in ("does not require grad", "not have been used in the graph")):
        return CheckResult.hint(
            "the surrogate does not depend on params: compute the log-probabilities from params "
            "(functional_call(policy, params, ...)), without detaching them"
        )
    return None


def _step_call(fn: Callable, policy, params, episodes) -> tuple[Params, Params] | CheckResult:
    """``(the leaf params given, the function's adapted params)`` on copies of the inputs, or a hint."""
    given = copied((policy, leaves(params), episodes))
    result, hint = call_student(
        fn, _CALL, *given, inner_lr=_INNER_LR, discount=_STEP_DISCOUNT, explain=_explain
    )
    if hint is not None:
        return hint
    if not same(given[1:], (params, episodes)):
        return CheckResult.hint("the function changed its inputs in place: return new tensors")
    if not same(given[0], policy):
        return CheckResult.hint("the function changed the policy's own weights: return new tensors")
    hint = params_hint(result, params, "params", shape_note=" (one task, no task dimension)")
    if hint is not None:
        return hint
    return given[1], dict(result)


def _check_step_values(
    result: Params, params: Params, expected: Params, mistakes: dict
) -> CheckResult | None:
    """None when the change params -> result is the reference's, else a hint naming a mistake."""

    def change(adapted: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(adapted[name].detach() - params[name]).flatten() for name in params])

    actual = change(result).double()
    if _close(actual, change(expected)):
        return None
    for name, wrong in mistakes.items():
        if _close(actual, torch.cat([wrong[key].flatten() for key in params])):
            return CheckResult.hint(_STEP_HINTS[name])
    return CheckResult.hint(
        "the adapted params differ from params - inner_lr * the gradient of the surrogate with the "
        "standardised advantages of these episodes"
    )


def check_policy_gradient_step(fn: Callable[..., Params], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``policy_gradient_step(policy, params, trajectories, *, inner_lr, discount)``.

    One inner step of MAML for reinforcement learning, for one task: ``params`` (keyed
    like ``policy.named_parameters()``, no task dimension) and ``trajectories``, a
    ``mamlbook.rl.Trajectories`` of one task (T = 1). The function must return the
    adapted parameters ``params - inner_lr * grad L(params)``, L the surrogate of
    these episodes (``mamlbook.rl.surrogate``) with their standardised advantages
    (discounted returns minus the linear baseline fitted to them,
    ``mamlbook.rl.advantages``), as new tensors that keep the graph to ``params``: the
    gradient of a function of the result must be second-order, as in MAML. It is run on
    a float64 policy with one hidden layer of 8 units and 5 episodes of one goal drawn
    from ``seed`` (4 of them end early), inner_lr 0.1 and discount 0.9, and compared in
    value and gradient with ``mamlbook.rl.PolicyGradientLoss`` and one step of
    ``mamlbook.inner.adaptation``.

    Args:
        fn: the function to check.
        seed: chooses the policy's weights, the params and the episodes; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _CALL, seed)
    policy, params, episodes = _step_problem(seed)
    theta = leaves(params)  # the reference, before the call
    loss = PolicyGradientLoss(policy, episodes, _STEP_DISCOUNT)
    expected = _reference_step(loss, theta)
    expected_grad = _gradient(expected, theta, seed)
    first_order_grad = _gradient(_reference_step(loss, theta, first_order=True), theta, seed)
    ran = _step_call(fn, policy, params, episodes)
    if isinstance(ran, CheckResult):
        return ran
    given, result = ran
    hint = _check_step_values(result, params, expected, _step_mistakes(policy, params, episodes))
    if hint is not None:
        return hint
    try:
        grads = _gradient(result, given, seed)
    except Exception as error:  # differentiating the reader's graph can fail in any way
        return CheckResult.hint(f"autograd cannot differentiate through the step: {error}")
    if grads is None:
        return CheckResult.hint(
            "the values are right but the result is cut from params (.detach(), torch.no_grad(), .data): "
            "MAML differentiates through this step, keep it a tensor expression of params"
        )
    if all(_close(g.double(), want) for g, want in zip(grads, expected_grad, strict=True)):
        return CheckResult.correct(
            "the adapted params equal one policy-gradient step, and the gradient through it is second order"
        )
    if all(_close(g.double(), want) for g, want in zip(grads, first_order_grad, strict=True)):
        return CheckResult.hint(
            "the values are right but the step is first order: take the gradient of the surrogate with "
            "create_graph=True so that MAML can differentiate through it"
        )
    return CheckResult.hint("the values are right but the gradient through the step is not MAML's")
