"""The per-task loss of reinforcement learning: a policy-gradient surrogate (chapter 8).

For a task's N sampled episodes, the vanilla policy gradient (REINFORCE, Williams
1992) of the expected discounted return is estimated by the gradient of the surrogate

    L(phi) = - mean over the episodes' steps of  log pi_phi(a_t | s_t) * A_t,

where A_t is the advantage: the discounted return from step t on, minus a baseline
fitted to the same episodes (a linear function of hand-made features of the state and
time, as in the paper's code), standardised over the task's steps. The advantages are
data: only the log-probabilities depend on phi. This loss, a function of the
parameters, is what MAML's inner loop descends (``mamlbook.inner.adaptation``), exactly
as it descends a supervised loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_int, check_nonnegative_float
from ..types import Params
from .navigation import HORIZON
from .policy import log_prob
from .sampling import Trajectories, sample_trajectories

DISCOUNT = 0.99
"""gamma, the discount of the paper's code (rllab's default)."""
BASELINE_RIDGE = 1e-5
"""The ridge term of the baseline's least squares, as in the paper's code."""


def discounted_returns(rewards: torch.Tensor, discount: float = DISCOUNT) -> torch.Tensor:
    """``(..., H)`` the discounted return from each step: R_t = sum_{k >= t} gamma^(k - t) r_k."""
    discount = check_nonnegative_float("discount", discount)
    steps = rewards.shape[-1]
    index = torch.arange(steps, device=rewards.device)
    powers = (index[:, None] - index[None, :]).to(rewards.dtype)  # (H, H): k - t
    weights = torch.where(powers >= 0, discount ** powers.clamp(min=0), torch.zeros_like(powers))
    return rewards @ weights  # (..., H)[t] = sum_k r_k weights[k, t]


def baseline_features(trajectories: Trajectories) -> torch.Tensor:
    """``(T, N, H, 8)`` the paper's baseline features: s, s^2, t/100, (t/100)^2, (t/100)^3, 1."""
    states = trajectories.states.clamp(-10, 10)
    steps = trajectories.states.shape[2]
    time = (torch.arange(steps, dtype=states.dtype, device=states.device) / 100).expand(*states.shape[:-1])
    time = time[..., None]
    return torch.cat([states, states**2, time, time**2, time**3, torch.ones_like(time)], dim=-1)


def fit_baseline(trajectories: Trajectories, returns: torch.Tensor) -> torch.Tensor:
    """``(T, N, H)`` each task's linear baseline, fitted to its own episodes' returns.

    Per task, ``w = argmin sum_t (R_t - w . f_t)^2 + ridge * ||w||^2`` over the steps taken, in
    float64 (the features' powers of t are badly conditioned in float32).

    Args:
        trajectories: the episodes, ``(T, N, H, ...)``.
        returns: ``(T, N, H)`` their discounted returns.
    """
    features = (baseline_features(trajectories) * trajectories.mask[..., None]).double()
    num_tasks = features.shape[0]
    flat = features.reshape(num_tasks, -1, features.shape[-1])  # (T, N*H, 8)
    targets = (returns * trajectories.mask).double().reshape(num_tasks, -1, 1)
    gram = flat.transpose(1, 2) @ flat + BASELINE_RIDGE * torch.eye(
        flat.shape[-1], dtype=torch.float64, device=flat.device
    )
    weights = torch.linalg.solve(gram, flat.transpose(1, 2) @ targets)  # (T, 8, 1)
    return (features @ weights[:, None]).squeeze(-1).to(returns.dtype) * trajectories.mask  # (T, N, H)


def advantages(trajectories: Trajectories, discount: float = DISCOUNT) -> torch.Tensor:
    """``(T, N, H)`` standardised advantages: returns minus the baseline, mean 0 and std 1 per task.

    Zero after an episode has ended; the statistics are over the steps taken.
    """
    returns = discounted_returns(trajectories.rewards, discount)
    return standardised(returns - fit_baseline(trajectories, returns), trajectories.mask)[0]


def standardised(raw: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``raw`` ``(T, N, H)`` centred and scaled per task over the masked steps, and the ``(T,)`` scales."""
    counts = mask.sum(dim=(1, 2))  # (T,)
    mean = (raw * mask).sum(dim=(1, 2)) / counts
    centred = (raw - mean[:, None, None]) * mask
    std = (centred.pow(2).sum(dim=(1, 2)) / counts).sqrt()
    return centred / (std[:, None, None] + 1e-8), std


def surrogate(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(T,)`` each task's policy-gradient surrogate, -mean over its steps of log pi * A."""
    return -(log_probs * advantages * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


class PolicyGradientLoss:
    """The surrogate of fixed episodes as a function of the parameters (a ``TaskLosses``).

    Args:
        policy: the ``GaussianMLPPolicy``.
        trajectories: the episodes, ``(T, N, H, ...)``.
        discount: gamma.

    Attributes:
        trajectories: the episodes.
        advantages: ``(T, N, H)`` their standardised advantages, the baseline fitted on
            these episodes alone.
    """

    def __init__(self, policy: nn.Module, trajectories: Trajectories, discount: float = DISCOUNT) -> None:
        self.policy = policy
        self.trajectories = trajectories
        returns = discounted_returns(trajectories.rewards, discount)
        self.advantages, self._advantage_scale = standardised(
            returns - fit_baseline(trajectories, returns), trajectories.mask
        )
        self._start_returns = returns[:, :, 0].mean(dim=1)  # (T,)

    def value(self) -> torch.Tensor:
        """``(T,)`` the episodes' mean discounted return, in the units of minus the surrogate.

        The surrogate's gradient is the policy gradient of the return divided by the
        advantages' scale and by the steps per episode; the return is divided alike, so
        that a score-function term weighted by it (``estimators.score_function_term``)
        adds to the surrogate's gradient in the same units.
        """
        mask = self.trajectories.mask
        steps_per_episode = mask.sum(dim=(1, 2)) / mask.shape[1]
        return self._start_returns / (steps_per_episode * (self._advantage_scale + 1e-8))

    def log_probs(self, params_per_task: Params) -> torch.Tensor:
        """``(T, N, H)`` log pi(a_t | s_t) of the episodes' actions at ``params_per_task``, 0 after an end."""
        episodes = self.trajectories
        return log_prob(self.policy, params_per_task, episodes.states, episodes.actions) * episodes.mask

    def __call__(self, params_per_task: Params) -> torch.Tensor:
        """``(T,)`` the surrogate at ``params_per_task``, ``(T, ...)`` each."""
        return surrogate(self.log_probs(params_per_task), self.advantages, self.trajectories.mask)


class Sample(NamedTuple):
    """One call of ``SampledLosses``: the loss of the episodes it sampled and their log-likelihood.

    Attributes:
        loss: the surrogate of the episodes.
        log_likelihood: ``(T,)`` sum over each task's episodes and steps of log pi(a | s),
            at the parameters of the call, differentiable with respect to them.
    """

    loss: PolicyGradientLoss
    log_likelihood: torch.Tensor


class SampledLosses:
    """A ``TaskLosses`` that samples fresh episodes from the parameters it is called with.

    Each call samples N episodes per task from the policy at those parameters (detached)
    and returns the surrogate of those episodes at the same parameters, so the gradient
    is the vanilla policy gradient there. As the inner loop's loss it takes one
    policy-gradient step per inner step, each on new episodes, as the paper does; as the
    query loss it scores the adapted policy on episodes it sampled itself.

    Args:
        policy: the ``GaussianMLPPolicy``.
        goals: ``(T, 2)``.
        num_trajectories: N per task and call, >= 1.
        horizon: H, >= 1.
        discount: gamma.
        generator: the source of the episodes' noise.

    Attributes:
        samples: one ``Sample`` per call, in order.
    """

    def __init__(
        self,
        policy: nn.Module,
        goals: torch.Tensor,
        *,
        num_trajectories: int,
        horizon: int = HORIZON,
        discount: float = DISCOUNT,
        generator: torch.Generator | None = None,
    ) -> None:
        self.policy = policy
        self.goals = goals
        self.num_trajectories = check_int("num_trajectories", num_trajectories, minimum=1)
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.discount = check_nonnegative_float("discount", discount)
        self.generator = generator
        self.samples: list[Sample] = []

    def __call__(self, params_per_task: Params) -> torch.Tensor:
        """``(T,)`` the surrogate of episodes newly sampled at ``params_per_task``."""
        trajectories = sample_trajectories(
            self.policy,
            {name: tensor.detach() for name, tensor in params_per_task.items()},
            self.goals,
            num_trajectories=self.num_trajectories,
            horizon=self.horizon,
            generator=self.generator,
        )
        loss = PolicyGradientLoss(self.policy, trajectories, self.discount)
        log_probs = loss.log_probs(params_per_task)
        self.samples.append(Sample(loss, log_probs.sum(dim=(1, 2))))
        return surrogate(log_probs, loss.advantages, trajectories.mask)
