"""MAML for reinforcement learning: the same meta-objective, with policy-gradient losses.

For T goals, the support loss of a task is the policy-gradient surrogate of N episodes
sampled from the policy before the update, and its query loss the surrogate of N
episodes sampled from the adapted policy (``SampledLosses``): a task's support and
query sets are now its pre- and post-update episodes. The inner loop and the
meta-objective are the supervised chapters' own (``mamlbook.meta.meta_objective``).

``navigation_meta_loss`` computes it with either estimator of its gradient (the
paper's, or DiCE's, ``mamlbook.rl.estimators``); ``meta_train_navigation`` trains with
Adam or with the paper's TRPO (``mamlbook.rl.trpo``); ``evaluate_navigation`` measures
the average return after 0, 1, 2, ... policy-gradient steps on new goals.
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from .._checks import check_int, check_nonnegative_float, check_positive_float
from ..errors import NonFiniteLossError
from ..inner import InnerLoop, adaptation, per_task
from ..meta import meta_objective
from ..outer import OuterAdam
from ..types import Params
from .estimators import ESTIMATORS, score_function_term
from .navigation import HORIZON, check_goals, sample_goals
from .policy_gradient import DISCOUNT, SampledLosses

OUTER_STEPS = ("adam", "trpo")


@dataclasses.dataclass(frozen=True)
class NavigationConfig:
    """The settings of MAML on 2-D navigation; ``paper()`` gives the paper's.

    Attributes:
        iterations: meta-iterations.
        meta_batch_size: goals per meta-iteration.
        num_trajectories: episodes per goal, before and after each update.
        horizon: episode length.
        inner_lr: alpha of the policy-gradient step.
        inner_steps: policy-gradient steps per goal; 0 trains a policy on all goals
            (the pretrained baseline).
        first_order: detach the inner gradients.
        discount: gamma.
        outer: ``"adam"`` or ``"trpo"``.
        outer_lr: Adam's step size.
        max_kl: TRPO's bound on the mean KL between the old and new adapted policies.
        estimator: ``"paper"`` or ``"dice"``.
    """

    iterations: int = 100
    meta_batch_size: int = 20
    num_trajectories: int = 20
    horizon: int = HORIZON
    inner_lr: float = 0.1
    inner_steps: int = 1
    first_order: bool = False
    discount: float = DISCOUNT
    outer: str = "adam"
    outer_lr: float = 3e-3
    max_kl: float = 0.01
    estimator: str = "paper"

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, minimum=1)
        check_int("meta_batch_size", self.meta_batch_size, minimum=1)
        check_int("num_trajectories", self.num_trajectories, minimum=1)
        check_int("horizon", self.horizon, minimum=1)
        check_nonnegative_float("inner_lr", self.inner_lr)
        check_int("inner_steps", self.inner_steps, minimum=0)
        check_nonnegative_float("discount", self.discount)
        check_positive_float("outer_lr", self.outer_lr)
        check_positive_float("max_kl", self.max_kl)
        if self.outer not in OUTER_STEPS:
            raise ValueError(f"outer must be one of {OUTER_STEPS}, got {self.outer!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")

    @classmethod
    def paper(cls) -> NavigationConfig:
        """The paper's: TRPO with KL 0.01, 20 goals x 20 episodes, alpha 0.1, 100 iterations."""
        return cls(iterations=100, outer="trpo")


class MetaLoss(NamedTuple):
    """One evaluation of the meta-objective.

    Attributes:
        loss: the scalar meta-loss; its gradient is the estimator's meta-gradient.
        support: the pre-update episodes' losses, one ``Sample`` per inner step.
        query: the post-update episodes' loss (``query.samples[-1]``).
        inner_loop: the inner loop it adapted with.
    """

    loss: torch.Tensor
    support: SampledLosses
    query: SampledLosses
    inner_loop: InnerLoop


def navigation_meta_loss(
    policy: nn.Module,
    params: Params,
    goals: torch.Tensor,
    config: NavigationConfig,
    *,
    generator: torch.Generator | None = None,
) -> MetaLoss:
    """The meta-loss of T goals: minus the surrogate return of each goal's adapted policy.

    Args:
        policy: a ``GaussianMLPPolicy``.
        params: theta, ``dict(policy.named_parameters())``.
        goals: ``(T, 2)``.
        config: the inner loop, episodes and estimator.
        generator: the source of the episodes' noise.
    """
    if not isinstance(config, NavigationConfig):
        raise TypeError(f"config must be a NavigationConfig, got {type(config).__name__}")
    goals = check_goals(goals)
    episodes = dict(
        num_trajectories=config.num_trajectories,
        horizon=config.horizon,
        discount=config.discount,
        generator=generator,
    )
    support = SampledLosses(policy, goals, **episodes)
    query = SampledLosses(policy, goals, **episodes)
    loop = InnerLoop.of(
        params, inner_lr=config.inner_lr, inner_steps=config.inner_steps, first_order=config.first_order
    )
    loss = meta_objective(params, support, query, loop, num_tasks=goals.shape[0])
    if config.estimator == "dice" and support.samples:
        pre_update = torch.stack([sample.log_likelihood for sample in support.samples]).sum(dim=0)  # (T,)
        loss = loss + score_function_term(pre_update, query.samples[-1].loss.value())
    return MetaLoss(loss, support, query, loop)


class NavigationHistory(NamedTuple):
    """What ``meta_train_navigation`` measured at each meta-iteration.

    Attributes:
        pre_update_returns: ``(iterations,)`` the mean return of the episodes before the update.
        post_update_returns: ``(iterations,)`` after it (equal to the first with 0 inner steps).
        seconds: the wall time of the whole run.
    """

    pre_update_returns: torch.Tensor
    post_update_returns: torch.Tensor
    seconds: float


def meta_train_navigation(
    policy: nn.Module,
    config: NavigationConfig,
    *,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> NavigationHistory:
    """Meta-train ``policy``'s parameters in place on random goals, with Adam or TRPO.

    Each iteration samples ``config.meta_batch_size`` goals, evaluates the meta-loss
    and takes one outer step.

    Raises:
        NonFiniteLossError: the meta-loss or its gradient became NaN or infinite.
    """
    if not isinstance(config, NavigationConfig):
        raise TypeError(f"config must be a NavigationConfig, got {type(config).__name__}")
    params = dict(policy.named_parameters())
    optimizer = OuterAdam(params.values(), lr=config.outer_lr) if config.outer == "adam" else None
    pre, post = [], []
    start = time.perf_counter()
    for iteration in tqdm(range(config.iterations), desc="meta-training", disable=not progress):
        goals = sample_goals(config.meta_batch_size, generator=generator).to(params["log_std"])
        result = navigation_meta_loss(policy, params, goals, config, generator=generator)
        if optimizer is None:
            from .trpo import trpo_step  # the paper's outer step, only when asked for

            trpo_step(policy, params, result, max_kl=config.max_kl)
        else:
            optimizer.zero_grad()
            result.loss.backward()
            if not all(bool(torch.isfinite(tensor.grad).all()) for tensor in params.values()):
                raise NonFiniteLossError(f"the meta-gradient of iteration {iteration} is not finite")
            optimizer.step()
        first = result.support.samples[0] if result.support.samples else result.query.samples[-1]
        pre.append(first.loss.trajectories.average_returns().mean())
        post.append(result.query.samples[-1].loss.trajectories.average_returns().mean())
    return NavigationHistory(torch.stack(pre), torch.stack(post), time.perf_counter() - start)


def evaluate_navigation(
    policy: nn.Module,
    params: Params,
    goals: torch.Tensor,
    *,
    inner_lr: float = 0.1,
    inner_steps: int = 3,
    num_trajectories: int = 40,
    horizon: int = HORIZON,
    discount: float = DISCOUNT,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(G, inner_steps + 1)`` each goal's average return after 0, 1, ... policy-gradient steps.

    As in the paper's evaluation, the first step has rate ``inner_lr`` and later ones
    half of it; each step learns from ``num_trajectories`` new episodes, and the return
    after s steps is the average over the episodes sampled from the policy after them.
    """
    goals = check_goals(goals)
    inner_steps = check_int("inner_steps", inner_steps, minimum=0)
    inner_lr = check_nonnegative_float("inner_lr", inner_lr)
    theta = {name: tensor.detach() for name, tensor in params.items()}
    rates = [inner_lr] + [inner_lr / 2] * (inner_steps - 1) if inner_steps else []
    loop = InnerLoop.of(theta, inner_lr=rates, inner_steps=inner_steps)
    losses = SampledLosses(
        policy,
        goals,
        num_trajectories=num_trajectories,
        horizon=horizon,
        discount=discount,
        generator=generator,
    )
    adapted = per_task(theta, goals.shape[0])
    for step in adaptation(losses, adapted, loop):
        adapted = step.adapted
    with torch.no_grad():
        losses(adapted)
    return torch.stack([sample.loss.trajectories.average_returns() for sample in losses.samples], dim=1)
