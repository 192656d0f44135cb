"""A problem small enough for the exact meta-gradient: a one-step Gaussian bandit.

The policy draws one action a ~ N(mu, sigma^2) and is rewarded r(a) = -(a - g)^2; theta
is the mean mu (sigma is fixed). The inner step is one vanilla policy-gradient step on N
sampled actions,

    phi = mu + alpha * g_hat,   g_hat = 1/N sum_i r(a_i) (a_i - mu) / sigma^2,

and the meta-objective is the expected return of the adapted policy, averaged over the
N actions it learned from: J(mu) = E_a[ -(phi - g)^2 - sigma^2 ]. With d = mu - g, the
moments of the Gaussian give E[g_hat] = -2d and Var[g_hat] = (d^4/sigma^2 + 14 d^2 +
15 sigma^2) / N, so

    J(mu) = -d^2 (1 - 2 alpha)^2 - alpha^2 (d^4/sigma^2 + 14 d^2 + 15 sigma^2) / N - sigma^2,

and its derivative is exact. ``meta_gradient_estimates`` computes the two estimators of
it from samples, through the same inner loop (``mamlbook.inner.adaptation``) and the
same correction (``estimators.score_function_term``) as the navigation chapter.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .._checks import check_int, check_nonnegative_float, check_positive_float
from ..inner import InnerLoop, adaptation, per_task
from ..types import Params
from .estimators import ESTIMATORS, score_function_term


@dataclasses.dataclass(frozen=True)
class GaussianBandit:
    """The bandit and the inner step's settings.

    Attributes:
        goal: g, the best action.
        std: sigma, the policy's fixed standard deviation, > 0.
        inner_lr: alpha of the policy-gradient step.
        num_samples: N, actions sampled before the update.
        num_post_samples: M, actions sampled after it to estimate its policy gradient.
    """

    goal: float = 0.0
    std: float = 1.0
    inner_lr: float = 0.1
    num_samples: int = 2
    num_post_samples: int = 2

    def __post_init__(self) -> None:
        if not math.isfinite(self.goal):
            raise ValueError(f"goal must be finite, got {self.goal}")
        check_positive_float("std", self.std)
        check_nonnegative_float("inner_lr", self.inner_lr)
        check_int("num_samples", self.num_samples, minimum=1)
        check_int("num_post_samples", self.num_post_samples, minimum=1)

    def reward(self, actions: torch.Tensor) -> torch.Tensor:
        """r(a) = -(a - g)^2, elementwise."""
        return -((actions - self.goal) ** 2)

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log N(a; mean, sigma^2), with ``mean`` broadcast against ``actions``."""
        z = (actions - mean) / self.std
        return -0.5 * z**2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)

    def expected_return_after_step(self, mean: torch.Tensor) -> torch.Tensor:
        """J(mu): the expected return after one policy-gradient step from ``mean``, exactly."""
        d, sigma, alpha, n = mean - self.goal, self.std, self.inner_lr, self.num_samples
        variance = (d**4 / sigma**2 + 14 * d**2 + 15 * sigma**2) / n
        return -(d**2) * (1 - 2 * alpha) ** 2 - alpha**2 * variance - sigma**2

    def exact_meta_gradient(self, mean: float) -> float:
        """dJ/dmu at ``mean``, by autograd of the closed form, in float64."""
        point = torch.tensor(float(mean), dtype=torch.float64, requires_grad=True)
        (gradient,) = torch.autograd.grad(self.expected_return_after_step(point), point)
        return gradient.item()


def meta_gradient_estimates(
    bandit: GaussianBandit,
    mean: float,
    *,
    estimator: str,
    replicates: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(R,)`` independent estimates of dJ/dmu, each from N + M sampled actions, float64.

    Each replicate is one "task" of the inner loop: N actions from N(mu, sigma^2), one
    policy-gradient step to phi, M actions from N(phi, sigma^2), and the gradient of the
    loss -1/M sum_j log pi_phi(a'_j) r(a'_j) through the step (the paper's estimator);
    ``"dice"`` adds ``score_function_term`` for the N pre-update actions, its baseline
    the mean of the other replicates' post-update rewards.

    Args:
        bandit: the problem.
        mean: mu, where the gradient is estimated.
        estimator: ``"paper"`` or ``"dice"``.
        replicates: R, >= 2.
        generator: the source of the actions.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    replicates = check_int("replicates", replicates, minimum=2)
    theta = {"mean": torch.tensor(float(mean), dtype=torch.float64)}
    start = {"mean": per_task(theta, replicates)["mean"].clone().requires_grad_()}  # (R,)
    shape = (replicates, bandit.num_samples)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    actions = start["mean"].detach()[:, None] + bandit.std * noise  # (R, N)
    rewards = bandit.reward(actions)
    pre_update_log_likelihood = []

    def support_losses(params: Params) -> torch.Tensor:
        log_probs = bandit.log_prob(params["mean"][:, None], actions)  # (R, N)
        pre_update_log_likelihood.append(log_probs.sum(dim=1))
        return -(log_probs * rewards).mean(dim=1)

    loop = InnerLoop.of(theta, inner_lr=bandit.inner_lr, inner_steps=1)
    (step,) = adaptation(support_losses, start, loop)
    adapted = step.adapted["mean"]  # (R,)
    post_noise = torch.randn((replicates, bandit.num_post_samples), generator=generator, dtype=torch.float64)
    post_actions = adapted.detach()[:, None] + bandit.std * post_noise  # (R, M)
    post_rewards = bandit.reward(post_actions)
    losses = -(bandit.log_prob(adapted[:, None], post_actions) * post_rewards).mean(dim=1)  # (R,)
    loss = losses.mean()
    if estimator == "dice":
        loss = loss + score_function_term(pre_update_log_likelihood[0], post_rewards.mean(dim=1))
    (gradient,) = torch.autograd.grad(loss, start["mean"])
    return -replicates * gradient  # each replicate's own estimate of dJ/dmu (J is minus the loss)
