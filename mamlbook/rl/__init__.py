"""Reinforcement learning with MAML (chapter 8): the paper's 2-D navigation.

The same inner loop and meta-objective as the supervised chapters, with a
policy-gradient surrogate as each task's loss:

- ``navigation``: the task family, vectorised over tasks and episodes (``Navigation``,
  ``sample_goals``, ``oracle_returns``); ``gym_env``: the same as a Gymnasium
  environment, registered as ``mamlbook/Navigation2D-v0`` when this package is imported.
- ``policy``: the paper's Gaussian MLP policy; ``sampling``: episodes of T tasks at once.
- ``policy_gradient``: discounted returns, the linear feature baseline, advantages and
  the surrogate, as a ``TaskLosses``.
- ``estimators``: the term the paper's meta-gradient leaves out, and DiCE's operator.
- ``meta``: the meta-loss, meta-training (Adam or TRPO, ``trpo``) and evaluation.
- ``bandit``: a one-step Gaussian bandit whose meta-gradient is known exactly.
"""

from . import bandit, estimators, gym_env, navigation, policy, policy_gradient, sampling
from .estimators import ESTIMATORS
from .meta import (
    MetaLoss,
    NavigationConfig,
    NavigationHistory,
    evaluate_navigation,
    meta_train_navigation,
    navigation_meta_loss,
)
from .navigation import Navigation, oracle_returns, sample_goals
from .policy import GaussianMLPPolicy
from .policy_gradient import PolicyGradientLoss, SampledLosses, advantages, discounted_returns, surrogate
from .sampling import Trajectories, sample_trajectories

__all__ = [
    "ESTIMATORS",
    "GaussianMLPPolicy",
    "MetaLoss",
    "Navigation",
    "NavigationConfig",
    "NavigationHistory",
    "PolicyGradientLoss",
    "SampledLosses",
    "Trajectories",
    "advantages",
    "bandit",
    "discounted_returns",
    "estimators",
    "evaluate_navigation",
    "gym_env",
    "meta_train_navigation",
    "navigation",
    "navigation_meta_loss",
    "oracle_returns",
    "policy",
    "policy_gradient",
    "sample_goals",
    "sample_trajectories",
    "sampling",
    "surrogate",
]
