"""Checkers for chapter 8: the reader's discounted returns and policy-gradient surrogate.

Each checker computes the answer first, with the package's reference in ``mamlbook.rl``,
on small float64 problems drawn from ``seed`` (0, the default, is the chapter's; a
grader may pass another), then runs the reader's function on copies of the inputs, so
that an exception, a wrong type or an in-place change becomes a hint. When the answers
differ, it computes what the classic mistakes would give on the same problem and names
the one that matches:

- ``check_discounted_returns``: no discount (the plain reward-to-go), the past
  discounted instead of the future, the episode's whole return at every step, the
  discount counted from the episode's start, one factor gamma too many, a wrong shape;
- ``check_policy_gradient_surrogate``: the sign, a sum instead of a mean, the padded
  steps counted in the mean, each episode averaged on its own, the mean over the tasks
  too, the log-probabilities detached.

The inner step's checker is ``mamlbook.checks.policy_gradient_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..rl.policy_gradient import discounted_returns, surrogate
from ._problems import as_float64, describe, problem_seeds, same
from ._student import call_student, check_arguments
from .result import CheckResult

_TOLERANCE = {"rtol": 1e-6, "atol": 1e-9}
_RETURNS_PROBLEMS = ((2, 3, 7, 0.9, False), (3, 4, 9, 0.8, True))  # (T, N, H, discount, padded)
_RETURNS_CALL = "discounted_returns(rewards, discount)"
_SURROGATE_CALL = "surrogate(log_probs, advantages, mask)"

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


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected, **_TOLERANCE))


def _first_match(result: torch.Tensor, mistakes: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first mistake whose answer is ``result``, else None."""
    return next((name for name, wrong in mistakes.items() if _close(result, wrong)), None)


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
    returned, hint = call_student(fn, _RETURNS_CALL, given, discount)
    if hint is not None:
        return hint
    if not same(given, rewards):
        return CheckResult.hint("the function changed rewards in place: compute the returns in a new tensor")
    returns = as_float64(returned)
    if returns is None:
        return CheckResult.hint(f"return a tensor of returns, got {describe(returned)}")
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
        seed: chooses the problems; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _RETURNS_CALL, seed)
    for problem_seed, problem in zip(
        problem_seeds(seed, len(_RETURNS_PROBLEMS)), _RETURNS_PROBLEMS, strict=True
    ):
        hint = _check_returns_problem(fn, problem_seed, problem)
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
    value, hint = call_student(fn, _SURROGATE_CALL, *given)
    if hint is not None:
        return hint
    if not same(given, (log_probs, advantages, mask)):
        return CheckResult.hint("the function changed its inputs in place: compute in new tensors")
    if not isinstance(value, torch.Tensor):
        return CheckResult.hint(f"return a tensor, one surrogate per task, got {describe(value)}")
    if not value.is_floating_point():
        return CheckResult.hint(
            f"return a tensor of real numbers, one surrogate per task, got dtype {value.dtype}"
        )
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
    except Exception as error:  # differentiating the reader's graph can fail in any way
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
        seed: chooses the problems; 0 gives the chapter's.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _SURROGATE_CALL, seed)
    for problem_seed in problem_seeds(seed, 2):
        hint = _check_surrogate_problem(fn, problem_seed)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "the surrogates and their gradient equal minus the mean of log pi * A over each task's steps taken"
    )


# One policy-gradient inner step
