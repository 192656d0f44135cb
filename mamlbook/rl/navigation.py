"""The 2-D navigation task family of the MAML paper (section 5.3), vectorised in torch.

A point starts at (0, 0) and must reach a goal drawn uniformly from [-0.5, 0.5]^2.
Each step it moves by a velocity clipped to [-0.1, 0.1] in each coordinate and is
rewarded minus its Euclidean distance to the goal; the episode ends when both
coordinates are within 0.01 of the goal, or after ``horizon`` steps. These are the
details of the paper's code (cbfinn/maml_rl, ``point_env_randgoal.py``); the paper's
text says "negative squared distance", its code and every public re-implementation use
the distance, and its published numbers come from the code.

``Navigation`` steps the points of T tasks x N trajectories at once, ``(T, N, 2)``;
``NavigationEnv`` (``mamlbook.rl.gym_env``) is the same dynamics as one Gymnasium
environment.
"""

from __future__ import annotations

import torch

from .._checks import check_int

MAX_SPEED = 0.1
"""The clip of each velocity coordinate."""
GOAL_RANGE = 0.5
"""Goals are uniform in [-GOAL_RANGE, GOAL_RANGE]^2."""
GOAL_TOLERANCE = 0.01
"""An episode ends when both coordinates are closer than this to the goal."""
HORIZON = 100
"""The paper's episode length."""


def sample_goals(num_tasks: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(T, 2)`` goals, uniform in [-0.5, 0.5]^2, float32."""
    num_tasks = check_int("num_tasks", num_tasks, minimum=1)
    return (torch.rand(num_tasks, 2, generator=generator) * 2 - 1) * GOAL_RANGE


def check_goals(goals: object) -> torch.Tensor:
    """``goals`` when it is a finite floating-point ``(T, 2)`` tensor with T >= 1; else an error."""
    if not isinstance(goals, torch.Tensor) or not goals.is_floating_point():
        raise TypeError(f"goals must be a floating-point tensor of shape (T, 2), got {goals!r}")
    if goals.dim() != 2 or goals.shape[1] != 2 or goals.shape[0] == 0:
        raise ValueError(f"goals must have shape (T, 2) with T >= 1, got {tuple(goals.shape)}")
    if not bool(torch.isfinite(goals).all()):
        raise ValueError("goals must be finite; they hold NaN or inf")
    return goals


class Navigation:
    """N points per task moving towards the task's goal, for T tasks at once.

    Args:
        goals: ``(T, 2)`` one goal per task.
        num_trajectories: N, the points (episodes) per task, >= 1.

    Attributes:
        states: ``(T, N, 2)`` positions.
        alive: ``(T, N)`` bool, True while the episode has not ended at its goal.
    """

    def __init__(self, goals: torch.Tensor, num_trajectories: int) -> None:
        self.goals = check_goals(goals)
        num_trajectories = check_int("num_trajectories", num_trajectories, minimum=1)
        shape = (goals.shape[0], num_trajectories)
        self.states = torch.zeros(*shape, 2, dtype=goals.dtype, device=goals.device)
        self.alive = torch.ones(shape, dtype=torch.bool, device=goals.device)

    def step(self, velocities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every live point by its clipped velocity.

        Points whose episode has ended stay where they are and get reward 0.

        Args:
            velocities: ``(T, N, 2)`` finite velocities; each coordinate is clipped to
                [-0.1, 0.1].

        Returns:
            ``(rewards, alive)``: the ``(T, N)`` rewards, minus the distance to the goal
            after the move, and the ``(T, N)`` mask of the points that took this step.
        """
        if velocities.shape != self.states.shape:
            raise ValueError(
                f"velocities must have shape {tuple(self.states.shape)} (T, N, 2), "
                f"got {tuple(velocities.shape)}"
            )
        if not bool(torch.isfinite(velocities).all()):
            raise ValueError("velocities must be finite; an action holds NaN or inf")
        took_step = self.alive
        moved = self.states + velocities.clamp(-MAX_SPEED, MAX_SPEED)
        self.states = torch.where(took_step[..., None], moved, self.states)
        offset = self.states - self.goals[:, None, :]  # (T, N, 2)
        rewards = torch.where(took_step, -offset.norm(dim=-1), torch.zeros_like(offset[..., 0]))
        reached = (offset.abs() < GOAL_TOLERANCE).all(dim=-1)
        self.alive = took_step & ~reached
        return rewards, took_step


def oracle_returns(goals: torch.Tensor, horizon: int = HORIZON) -> torch.Tensor:
    """``(T,)`` returns of the controller that moves straight to each goal at full speed.

    Each step's velocity is the offset to the goal, clipped to [-0.1, 0.1] per
    coordinate: the best return a policy can get on these tasks.
    """
    horizon = check_int("horizon", horizon, minimum=1)
    env = Navigation(goals, num_trajectories=1)
    total = torch.zeros(goals.shape[0], dtype=goals.dtype, device=goals.device)
    for _ in range(horizon):
        rewards, _ = env.step(goals[:, None, :] - env.states)
        total += rewards[:, 0]
    return total
