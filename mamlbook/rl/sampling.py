"""Trajectories of T tasks x N episodes, sampled from each task's own policy at once.

The loop runs over the H time steps only: every step evaluates the T policies on their
N states in one call and moves all T x N points (``Navigation.step``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_int
from ..types import Params
from .navigation import HORIZON, MAX_SPEED, Navigation, check_goals
from .policy import action_means


class Trajectories(NamedTuple):
    """N episodes of each of T tasks, padded to the horizon H.

    Attributes:
        goals: ``(T, 2)``.
        states: ``(T, N, H, 2)`` the state before each action.
        actions: ``(T, N, H, 2)`` the policy's actions, in units of the velocity clip.
        rewards: ``(T, N, H)``, 0 after an episode has ended.
        mask: ``(T, N, H)`` 1.0 for the steps an episode took, 0.0 after it ended.
    """

    goals: torch.Tensor
    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    def returns(self) -> torch.Tensor:
        """``(T, N)`` each episode's undiscounted return, the sum of its rewards."""
        return self.rewards.sum(dim=-1)

    def average_returns(self) -> torch.Tensor:
        """``(T,)`` each task's average return over its N episodes (the paper's table)."""
        return self.returns().mean(dim=-1)


@torch.no_grad()
def sample_trajectories(
    policy: nn.Module,
    params_per_task: Params,
    goals: torch.Tensor,
    *,
    num_trajectories: int,
    horizon: int = HORIZON,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Run each task's policy N times on its goal, all T x N episodes at once.

    Each action is a ~ N(mu_t(s), std_t^2); the environment receives the velocity
    ``MAX_SPEED * a``, clipped (``Navigation.step``).

    Args:
        policy: a ``GaussianMLPPolicy``.
        params_per_task: its parameters for each task, ``(T, ...)`` each (``per_task(theta, T)``).
        goals: ``(T, 2)``.
        num_trajectories: N, >= 1.
        horizon: H, the episode length, >= 1.
        generator: the source of the actions' noise.

    Returns:
        The ``Trajectories``, detached from the parameters.
    """
    goals = check_goals(goals)
    num_trajectories = check_int("num_trajectories", num_trajectories, minimum=1)
    horizon = check_int("horizon", horizon, minimum=1)
    num_tasks = goals.shape[0]
    log_std = params_per_task["log_std"]
    if log_std.shape[0] != num_tasks:
        raise ValueError(
            f"params_per_task hold {log_std.shape[0]} tasks' parameters but goals has {num_tasks} goals"
        )
    if goals.dtype != log_std.dtype or goals.device != log_std.device:
        raise ValueError(
            f"goals ({goals.dtype}, {goals.device}) must have the dtype and device of the policy's "
            f"parameters ({log_std.dtype}, {log_std.device}): convert them with goals.to(log_std)"
        )
    env = Navigation(goals, num_trajectories)
    states, actions, rewards, mask = [], [], [], []
    for _ in range(horizon):
        means = action_means(policy, params_per_task, env.states)  # (T, N, 2)
        noise = torch.randn(means.shape, generator=generator, dtype=means.dtype).to(
            means.device
        )  # CPU generator
        action = means + noise * torch.exp(log_std)[:, None, :]
        states.append(env.states)
        reward, took_step = env.step(MAX_SPEED * action)
        actions.append(action)
        rewards.append(reward)
        mask.append(took_step.to(reward.dtype))
    return Trajectories(
        goals,
        torch.stack(states, dim=2),
        torch.stack(actions, dim=2),
        torch.stack(rewards, dim=2),
        torch.stack(mask, dim=2),
    )
