"""2-D navigation as one Gymnasium environment, registered as ``mamlbook/Navigation2D-v0``.

``NavigationEnv`` runs one episode of the task family of ``mamlbook.rl.navigation``:
the point starts at (0, 0), the action is its velocity (each coordinate clipped to
[-0.1, 0.1]), the reward is minus the distance to the goal after the move, and the
episode terminates when both coordinates are within 0.01 of the goal, or is truncated
after ``horizon`` steps. Each step is computed by ``Navigation.step`` on one point, in
float32, so this environment and the vectorised sampler cannot drift apart.

    import gymnasium
    import mamlbook.rl  # registers the environment

    env = gymnasium.make("mamlbook/Navigation2D-v0")
    observation, info = env.reset(seed=0)  # info["goal"]: the goal of this episode
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from .._checks import check_int
from .navigation import GOAL_RANGE, HORIZON, MAX_SPEED, Navigation

ENV_ID = "mamlbook/Navigation2D-v0"
"""The id ``gymnasium.make`` knows the environment by, once ``mamlbook.rl`` is imported."""


def _as_point(name: str, value: object) -> np.ndarray:
    """``value`` as a finite float32 array of shape ``(2,)``; else an error naming ``name``."""
    try:
        point = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be two numbers, an array of shape (2,), got {value!r}") from None
    if point.shape != (2,):
        raise ValueError(f"{name} must have shape (2,), got {point.shape}")
    if not np.isfinite(point).all():
        raise ValueError(f"{name} must be finite, got {point.tolist()}")
    return point


class NavigationEnv(gymnasium.Env):
    """One episode of 2-D navigation towards a goal.

    Observations are the position ``(2,)`` and actions the velocity ``(2,)``, both
    float32; an action outside [-0.1, 0.1]^2 is clipped, as in ``Navigation.step``.

    Args:
        goal: ``(2,)`` the goal of every episode, or None to draw one uniformly from
            [-0.5, 0.5]^2 at each ``reset`` (``options={"goal": ...}`` overrides both).
        horizon: the steps after which an episode is truncated, >= 1.
    """

    metadata = {"render_modes": []}

    def __init__(self, goal: object = None, horizon: int = HORIZON) -> None:
        self.goal = None if goal is None else _as_point("goal", goal)
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(2,), dtype=np.float32)
        self._navigation: Navigation | None = None
        self._steps = 0
        self._ended = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at (0, 0); ``info["goal"]`` is its goal, ``(2,)``."""
        super().reset(seed=seed)
        if options is not None and options.get("goal") is not None:
            goal = _as_point('options["goal"]', options["goal"])
        elif self.goal is not None:
            goal = self.goal
        else:
            goal = self.np_random.uniform(-GOAL_RANGE, GOAL_RANGE, size=2).astype(np.float32)
        self._navigation = Navigation(torch.from_numpy(goal.copy())[None], num_trajectories=1)
        self._steps = 0
        self._ended = False
        return self._observation(), {"goal": goal.copy()}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by the clipped velocity ``action`` ``(2,)``.

        Returns:
            ``(observation, reward, terminated, truncated, info)``: the new position,
            minus its distance to the goal, whether both coordinates are within 0.01 of
            the goal, whether this was step ``horizon``, and ``{"goal": goal}``.

        Raises:
            ValueError: the action is not finite or of shape ``(2,)``, or the episode has
                not been reset or has ended.
        """
        if self._navigation is None:
            raise ValueError("step() was called before reset(); reset the environment first")
        if self._ended:
            raise ValueError("step() was called after the episode ended; reset the environment first")
        velocity = torch.from_numpy(_as_point("action", action))
        rewards, _ = self._navigation.step(velocity[None, None])  # (1, 1, 2) -> rewards (1, 1)
        self._steps += 1
        terminated = not bool(self._navigation.alive[0, 0])
        truncated = self._steps >= self.horizon
        self._ended = terminated or truncated
        goal = self._navigation.goals[0].numpy().copy()
        return self._observation(), float(rewards[0, 0]), terminated, truncated, {"goal": goal}

    def _observation(self) -> np.ndarray:
        """The position ``(2,)``, float32."""
        return self._navigation.states[0, 0].numpy().copy()


if ENV_ID not in gymnasium.registry:  # importing again, or reloading, must not register twice
    gymnasium.register(id=ENV_ID, entry_point="mamlbook.rl.gym_env:NavigationEnv")
