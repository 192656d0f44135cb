"""Checkers for chapter 8: the reader's discounted returns, surrogate and policy-gradient step.

Each checker runs the reader's function on small float64 problems drawn from ``seed``
(0, the default, is the chapter's; a grader may pass another), on copies of the inputs,
and compares it with the package's reference in ``mamlbook.rl``. When they differ, it
computes what the classic mistakes would give on the same problem and names the one
that matches:

- ``check_discounted_returns``: no discount (the plain reward-to-go), the past
  discounted instead of the future, the episode's whole return at every step, the
  discount counted from the episode's start, one factor gamma too many, a wrong shape;
- ``check_policy_gradient_surrogate``: the sign, a sum instead of a mean, the padded
  steps counted in the mean, each episode averaged on its own, the mean over the tasks
  too, the log-probabilities detached;
- ``check_policy_gradient_step``: no baseline, advantages not standardised, returns
  not discounted (or the default discount instead of the one given), a sum instead of
  a mean, a step up the surrogate, the inner gradient detached (first order) or the
  step cut from ``params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .._checks import check_seed
from ..inner import InnerLoop, adaptation, per_task
from ..rl.policy import GaussianMLPPolicy
from ..rl.policy_gradient import (
    DISCOUNT,
    PolicyGradientLoss,
    _standardised,
    discounted_returns,
    fit_baseline,
    surrogate,
)
from ..rl.sampling import Trajectories, sample_trajectories
from ..types import Params
from ._problems import leaves
from .result import CheckResult

_TOLERANCE = {"rtol": 1e-6, "atol": 1e-9}
_RETURNS_PROBLEMS = ((2, 3, 7, 0.9, False), (3, 4, 9, 0.8, True))  # (T, N, H, discount, padded)
_INNER_LR = 0.1
_STEP_DISCOUNT = 0.9  # not the default DISCOUNT, so that ignoring the argument shows

_RETURNS_HINTS = {
    "not_discounted": "the returns are not discounted: weight the reward k steps ahead by gamma ** k",
    "reversed": (
        "each step sums the rewards before it: the return from step t sums the rewards from t on, "
        "r_t + gamma r_(t+1) + ..."
    ),
    "total": (
        "every step holds the episode's whole return: the return at step t counts only the rewards from t on"
    ),
    "total_undiscounted": (
        "every step holds the episode's undiscounted total: the return at step t counts only the "
        "rewards from t on, discounted"
    ),
    "from_start": (
        "the discount is counted from the episode's start (gamma ** k): count it from step t, "
        "gamma ** (k - t), so that r_t itself has weight 1"
    ),
    "extra_gamma": "the returns are gamma times too small: the reward r_t of step t itself has weight 1",
}

_SURROGATE_HINTS = {
    "sign": (
        "the sign is reversed: the surrogate is a loss to minimise, minus the mean of log pi * A, "
        "so that descending it climbs the return"
    ),
    "sum": "the surrogate is a sum over the steps: divide by the number of steps each task took",
    "sum_steps": (
        "each episode's steps are summed, then the episodes averaged: take the mean over all the "
        "task's steps taken"
    ),
    "padded": (
        "the mean counts the padded steps after an episode ended: divide by the steps taken, the "
        "sum of the mask"
    ),
    "episode_means": (
        "each episode is averaged on its own and the episodes' means averaged, so a short episode's "
        "steps weigh more: average over all the task's steps taken at once"
    ),
}

_STEP_HINTS = {
    "sign": (
        "the step climbs the surrogate: the surrogate is minus the mean of log pi * A and the inner "
        "step descends it, params - inner_lr * gradient"
    ),
    "no_baseline": (
        "the advantages have no baseline: subtract the linear baseline fitted to these episodes' "
        "returns before standardising"
    ),
    "not_standardised": (
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


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected, **_TOLERANCE))


def _first_match(result: torch.Tensor, mistakes: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first mistake whose answer is ``result``, else None."""
    return next((name for name, wrong in mistakes.items() if _close(result, wrong)), None)


def _as_tensor(value: object) -> torch.Tensor | None:
    """``value`` (a tensor, an array or a nested list of numbers) as float64, or None."""
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def _masked_rewards(
    shape: tuple[int, int, int], generator: torch.Generator, *, padded: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, N, H)`` rewards (minus distances) and the mask; ``padded``: episodes end early."""
    num_tasks, num_episodes, horizon = shape
    lengths = torch.full((num_tasks, num_episodes), horizon)
    if padded:  # the first episode of each task runs to the horizon, the others end earlier
        lengths[:, 1:] = torch.randint(2, horizon, (num_tasks, num_episodes - 1), generator=generator)
    mask = (torch.arange(horizon) < lengths[..., None]).double()  # (T, N, H)
    rewards = -0.7 * torch.rand(shape, generator=generator, dtype=torch.float64)
    return rewards * mask, mask


# Discounted returns


def _returns_mistakes(rewards: torch.Tensor, discount: float) -> dict[str, torch.Tensor]:
    """What each classic mistake gives for the returns of ``rewards`` ``(..., H)``."""
    horizon = rewards.shape[-1]
    right = discounted_returns(rewards, discount)
    powers = discount ** torch.arange(horizon, dtype=rewards.dtype)  # gamma ** k
    return {
        "not_discounted": discounted_returns(rewards, 1.0),
        "reversed": discounted_returns(rewards.flip(-1), discount).flip(-1),
        "total": right[..., :1].expand_as(rewards),
        "total_undiscounted": rewards.sum(dim=-1, keepdim=True).expand_as(rewards),
        "from_start": discounted_returns(rewards * powers, 1.0),
        "extra_gamma": discount * right,
    }


def _check_returns_problem(fn: Callable, seed: int, problem: tuple) -> CheckResult | None:
    """None when ``fn`` gives the discounted returns of this problem, else a hint."""
    num_tasks, num_episodes, horizon, discount, padded = problem
    generator = torch.Generator().manual_seed(seed)
    rewards, _ = _masked_rewards((num_tasks, num_episodes, horizon), generator, padded=padded)
    expected = discounted_returns(rewards, discount)  # before the call, on the original
    given = rewards.clone()
    try:
        returned = fn(given, discount)
    except Exception as error:  # any failure of the reader's code is the verdict
        return CheckResult.hint(f"fn(rewards, discount) raised {type(error).__name__}: {error}")
    if not torch.equal(given, rewards):
        return CheckResult.hint("the function changed rewards in place: compute the returns in a new tensor")
    returns = _as_tensor(returned)
    if returns is None:
        return CheckResult.hint(f"return a tensor of returns, got {type(returned).__name__}")
    if returns.shape != rewards.shape:
        if returns.shape == rewards.shape[:-1]:
            return CheckResult.hint(
                "the function returns one number per episode: return the return from every step t, "
                "a tensor shaped like rewards, (..., H)"
            )
        return CheckResult.hint(
            f"the returns must be shaped like rewards, {tuple(rewards.shape)}, got {tuple(returns.shape)}"
        )
    if _close(returns, expected):
        return None
    name = _first_match(returns, _returns_mistakes(rewards, discount))
    if name is not None:
        return CheckResult.hint(_RETURNS_HINTS[name])
    ended = " with episodes that end early (rewards 0 after)" if padded else ""
    return CheckResult.hint(
        f"the returns differ from R_t = sum over k >= t of gamma ** (k - t) r_k (discount={discount}"
        f"{ended}): check the recursion R_t = r_t + gamma R_(t+1)"
    )


def check_discounted_returns(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``discounted_returns(rewards, discount) -> returns``.

    For rewards ``(..., H)``, the function must return the discounted return from each
    step, ``R_t = sum over k >= t of discount ** (k - t) * r_k``, shaped like ``rewards``,
    leaving ``rewards`` unchanged. It is run on two problems of ``(T, N, H)`` rewards drawn
    from ``seed``, one with every episode as long as the horizon, one with episodes
    that end early (their rewards 0 after the end), and compared with
    ``mamlbook.rl.discounted_returns``.

    Args:
        fn: the function to check.
        seed: chooses the problems.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function discounted_returns(rewards, discount), got {fn!r}")
    seed = check_seed("seed", seed)
    for offset, problem in enumerate(_RETURNS_PROBLEMS):
        hint = _check_returns_problem(fn, seed + offset, problem)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the returns equal sum over k >= t of gamma ** (k - t) r_k, with and without episodes that end early"
    )


# The policy-gradient surrogate


def _surrogate_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(T, N, H)`` log-probabilities, advantages (0 after an episode ends) and mask."""
    generator = torch.Generator().manual_seed(seed)
    _, mask = _masked_rewards((3, 4, 6), generator, padded=True)
    log_probs = torch.randn(mask.shape, generator=generator, dtype=torch.float64) - 2.0
    advantages = torch.randn(mask.shape, generator=generator, dtype=torch.float64) * mask
    return log_probs, advantages, mask


def _surrogate_mistakes(log_probs, advantages, mask) -> dict[str, torch.Tensor]:
    """What each classic mistake gives as the ``(T,)`` surrogates."""
    terms = log_probs * advantages * mask  # (T, N, H)
    right = surrogate(log_probs, advantages, mask)
    lengths = mask.sum(dim=2)  # (T, N)
    return {
        "sign": -right,
        "sum": -terms.sum(dim=(1, 2)),
        "sum_steps": -terms.sum(dim=(1, 2)) / mask.shape[1],
        "padded": -terms.mean(dim=(1, 2)),
        "episode_means": -(terms.sum(dim=2) / lengths).mean(dim=1),
    }


def _surrogate_call(
    fn: Callable, log_probs, advantages, mask
) -> tuple[torch.Tensor, torch.Tensor] | CheckResult:
    """``(leaf log_probs, the function's value)`` on copies of the inputs, or a hint."""
    given = (log_probs.clone().requires_grad_(), advantages.clone(), mask.clone())
    try:
        value = fn(*given)
    except Exception as error:  # any failure of the reader's code is the verdict
        return CheckResult.hint(f"fn(log_probs, advantages, mask) raised {type(error).__name__}: {error}")
    if not all(
        torch.equal(copy.detach(), kept)
        for copy, kept in zip(given, (log_probs, advantages, mask), strict=True)
    ):
        return CheckResult.hint("the function changed its inputs in place: compute in new tensors")
    if not isinstance(value, torch.Tensor):
        return CheckResult.hint(f"return a tensor, one surrogate per task, got {type(value).__name__}")
    num_tasks = mask.shape[0]
    if value.dim() == 0:
        return CheckResult.hint(
            f"the function returns one number for all tasks: keep the tasks apart, one surrogate per task, "
            f"shape (T,) = ({num_tasks},)"
        )
    if value.shape != (num_tasks,):
        return CheckResult.hint(
            f"return one surrogate per task, shape (T,) = ({num_tasks},), got {tuple(value.shape)}"
        )
    return given[0], value


def _check_surrogate_problem(fn: Callable, seed: int) -> CheckResult | None:
    """None when ``fn`` gives the surrogate of this problem and its gradient, else a hint."""
    log_probs, advantages, mask = _surrogate_problem(seed)
    leaf = log_probs.clone().requires_grad_()
    expected = surrogate(leaf, advantages, mask)  # before the call
    (expected_grad,) = torch.autograd.grad(expected.sum(), leaf)
    ran = _surrogate_call(fn, log_probs, advantages, mask)
    if isinstance(ran, CheckResult):
        return ran
    given, value = ran
    if not _close(value.detach().double(), expected.detach()):
        name = _first_match(value.detach().double(), _surrogate_mistakes(log_probs, advantages, mask))
        if name is not None:
            return CheckResult.hint(_SURROGATE_HINTS[name])
        return CheckResult.hint(
            "the surrogates differ from minus the mean, over each task's steps taken, of log pi * A"
        )
    detached = (
        "the value is right but it does not depend on log_probs (detached, .item(), torch.tensor(...)): "
        "the surrogate's gradient is the policy gradient, keep log_probs in the graph"
    )
    if not value.requires_grad:
        return CheckResult.hint(detached)
    try:
        (grad,) = torch.autograd.grad(value.sum(), given, allow_unused=True)
    except RuntimeError as error:
        return CheckResult.hint(f"autograd cannot differentiate the surrogates: {error}")
    if grad is None or not bool(grad.any()):
        return CheckResult.hint(detached)
    if not _close(grad.double(), expected_grad):
        return CheckResult.hint("the value is right but its gradient with respect to log_probs is not")
    return None


def check_policy_gradient_surrogate(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``surrogate(log_probs, advantages, mask) -> (T,)``.

    For ``(T, N, H)`` log-probabilities of the actions, advantages and mask (1 for the
    steps an episode took, 0 after it ended), the function must return each task's
    surrogate, minus the mean over the task's steps taken of ``log_probs * advantages``:
    a ``(T,)`` tensor whose gradient with respect to ``log_probs`` is the policy
    gradient's weight on each step. The advantages are 0 after an episode ends, as
    ``mamlbook.rl.advantages`` gives them; the log-probabilities are not. It is run on
    two problems (3 tasks of 4 episodes of up to 6 steps) drawn from ``seed`` and
    compared in value and gradient with ``mamlbook.rl.surrogate``.

    Args:
        fn: the function to check.
        seed: chooses the problems.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function surrogate(log_probs, advantages, mask), got {fn!r}")
    seed = check_seed("seed", seed)
    for offset in range(2):
        hint = _check_surrogate_problem(fn, seed + offset)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the surrogates and their gradient equal minus the mean of log pi * A over each task's steps taken"
    )


# One policy-gradient inner step


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
        "no_baseline": (_standardised(returns, mask)[0], 1.0),
        "not_standardised": (returns - fit_baseline(episodes, returns), 1.0),
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


def _graph_error(error: Exception) -> bool:
    text = str(error).lower()
    return any(key in text for key in ("does not require grad", "not have been used in the graph"))


def _step_call(fn: Callable, policy, params, episodes) -> tuple[Params, Params] | CheckResult:
    """``(leaf params, the function's adapted params)`` on copies of the inputs, or a hint."""
    theta = leaves(params)
    given = Trajectories(*(tensor.clone() for tensor in episodes))
    try:
        result = fn(policy, theta, given, inner_lr=_INNER_LR, discount=_STEP_DISCOUNT)
    except Exception as error:  # any failure of the reader's code is the verdict
        if _graph_error(error):
            return CheckResult.hint(
                "the surrogate does not depend on params: compute the log-probabilities from params "
                "(functional_call(policy, params, ...)), without detaching them"
            )
        return CheckResult.hint(
            f"fn(policy, params, trajectories, ...) raised {type(error).__name__}: {error}"
        )
    changed = not all(torch.equal(theta[name].detach(), tensor) for name, tensor in params.items())
    if changed or not all(torch.equal(a, b) for a, b in zip(given, episodes, strict=True)):
        return CheckResult.hint("the function changed its inputs in place: return new tensors")
    if not isinstance(result, Mapping) or set(result) != set(params):
        return CheckResult.hint(f"return a dict keyed like params ({sorted(params)})")
    for name, tensor in result.items():
        if not isinstance(tensor, torch.Tensor):
            return CheckResult.hint(f"result[{name!r}] must be a tensor, got {type(tensor).__name__}")
        if tensor.shape != params[name].shape:
            return CheckResult.hint(
                f"result[{name!r}] has shape {tuple(tensor.shape)}, params' is {tuple(params[name].shape)}"
                " (one task, no task dimension)"
            )
    return theta, dict(result)


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
        seed: chooses the problem.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.
    """
    if not callable(fn):
        raise TypeError(
            f"fn must be a function policy_gradient_step(policy, params, trajectories, ...), got {fn!r}"
        )
    seed = check_seed("seed", seed)
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
    except RuntimeError as error:
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
