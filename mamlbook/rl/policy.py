"""The paper's policy for 2-D navigation: a Gaussian whose mean is an MLP of the state.

pi_theta(a | s) = N(a; mu_theta(s), diag(exp(log_std))^2), with mu an MLP 2-100-100-2
with ReLU and a state-independent, learned ``log_std``. The actions are in units of the
velocity clip (the paper's code normalises the action space the same way): the
environment receives ``MAX_SPEED * a``, clipped, so a unit standard deviation explores
the whole range of velocities instead of saturating at the clip.

``log_prob`` evaluates the policy of T tasks, each at its own parameters, in one call
(``torch.func.vmap``), so it can serve as part of a ``TaskLosses``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..types import Params


class GaussianMLPPolicy(nn.Module):
    """The mean network and the log standard deviation of a Gaussian policy.

    Args:
        state_dim: the state's size (2 for navigation).
        action_dim: the action's size (2).
        hidden: the hidden layers' widths; the paper's (100, 100).
        init_std: the initial standard deviation of every action coordinate.
    """

    def __init__(
        self,
        state_dim: int = 2,
        action_dim: int = 2,
        hidden: Sequence[int] = (100, 100),
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        widths = [state_dim, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], action_dim))
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.action_dim = action_dim

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``(..., action_dim)`` means of the actions at ``(..., state_dim)`` states."""
        return self.mean(states)


def action_means(policy: nn.Module, params_per_task: Params, states: torch.Tensor) -> torch.Tensor:
    """``(T, ..., A)`` the mean action of task t's policy at its states ``(T, ..., S)``."""

    def one_task(params: Params, task_states: torch.Tensor) -> torch.Tensor:
        return functional_call(policy, params, (task_states,))

    means = vmap(one_task)(params_per_task, states)
    action_dim = params_per_task["log_std"].shape[-1]
    if means.shape != (*states.shape[:-1], action_dim):
        raise ValueError(
            f"policy must return one mean per state, shape {(*states.shape[:-1], action_dim)}, "
            f"got {tuple(means.shape)}"
        )
    return means


def log_prob(
    policy: nn.Module, params_per_task: Params, states: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """``(T, ...)`` log pi(a | s) of each task's actions under its own parameters.

    Args:
        policy: a ``GaussianMLPPolicy`` (any module whose parameters include ``log_std``, ``(A,)``).
        params_per_task: its parameters with a leading task dimension, ``(T, ...)`` each.
        states: ``(T, ..., S)``.
        actions: ``(T, ..., A)``.
    """
    means = action_means(policy, params_per_task, states)
    broadcast = (means.shape[0], *([1] * (means.dim() - 2)), -1)
    log_std = params_per_task["log_std"].reshape(broadcast)  # (T, 1, ..., A)
    z = (actions - means) * torch.exp(-log_std)
    per_coordinate = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
    return per_coordinate.sum(dim=-1)


def gaussian_kl(
    means_old: torch.Tensor, log_std_old: torch.Tensor, means_new: torch.Tensor, log_std_new: torch.Tensor
) -> torch.Tensor:
    """KL(old || new) of diagonal Gaussians, summed over the last dimension; shapes broadcast."""
    variance_ratio = torch.exp(2 * (log_std_old - log_std_new))
    mean_term = (means_old - means_new) ** 2 * torch.exp(-2 * log_std_new)
    return 0.5 * (variance_ratio + mean_term - 1).sum(dim=-1) + (log_std_new - log_std_old).sum(dim=-1)
