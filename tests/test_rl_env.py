"""``NavigationEnv``, the Gymnasium environment of 2-D navigation, against the vectorised
``Navigation`` and ``sample_trajectories`` it must agree with, step for step."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from mamlbook.rl import GaussianMLPPolicy, Navigation, gym_env, sample_trajectories
from mamlbook.rl.gym_env import ENV_ID, NavigationEnv
from mamlbook.rl.navigation import GOAL_TOLERANCE, HORIZON, MAX_SPEED

FLOAT32 = {"atol": 1e-6, "rtol": 1e-6}


def goals_of_seeded_envs(seeds: list[int]) -> torch.Tensor:
    """``(T, 2)`` float32: the goals that ``NavigationEnv.reset(seed=s)`` draws."""
    return torch.stack([torch.from_numpy(NavigationEnv().reset(seed=seed)[1]["goal"]) for seed in seeds])


def run_env(goal: torch.Tensor, velocities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step one ``NavigationEnv`` with ``velocities`` ``(H, 2)`` until its episode ends.

    Returns:
        The ``(steps, 2)`` positions after each step and the ``(steps,)`` rewards.
    """
    env = NavigationEnv(goal=goal.numpy(), horizon=velocities.shape[0])
    env.reset()
    positions, rewards = [], []
    for velocity in velocities:
        observation, reward, terminated, truncated, _ = env.step(velocity.numpy())
        positions.append(torch.from_numpy(observation))
        rewards.append(reward)
        if terminated or truncated:
            break
    return torch.stack(positions), torch.tensor(rewards, dtype=torch.float32)


def checked_warnings(env: gymnasium.Env) -> list[str]:
    """The messages of the warnings ``check_env(env)`` gives (it raises when a check fails)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    return [str(warning.message) for warning in caught]


def test_gymnasium_env_checker_passes_on_the_registered_and_the_direct_environment():
    for env in (
        gymnasium.make(ENV_ID).unwrapped,
        NavigationEnv(),
        NavigationEnv(goal=(0.3, -0.2), horizon=5),
    ):
        # The only warnings: the unbounded observation space the task asks for, and
        # (for the environments built directly) that no spec lists render modes.
        unexpected = [
            message
            for message in checked_warnings(env)
            if "infinity" not in message and "spec" not in message
        ]
        assert unexpected == []
    env = gymnasium.make(ENV_ID)
    assert env.spec.id == ENV_ID and isinstance(env.unwrapped, NavigationEnv)
    assert env.observation_space == gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    assert env.action_space == gymnasium.spaces.Box(-MAX_SPEED, MAX_SPEED, (2,), np.float32)


def test_registration_is_idempotent_on_a_second_import_and_a_reload():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module("mamlbook.rl")
        importlib.reload(gym_env)
    assert ENV_ID in gymnasium.registry


def test_importing_mamlbook_does_not_import_gymnasium_but_mamlbook_rl_registers_the_env():
    script = (
        "import sys, mamlbook\n"
        "assert 'gymnasium' not in sys.modules, 'import mamlbook imported gymnasium'\n"
        "import mamlbook.rl, gymnasium\n"
        f"assert {ENV_ID!r} in gymnasium.registry\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_reset_takes_the_goal_from_options_then_the_constructor_then_the_seeded_generator():
    observation, info = NavigationEnv(goal=(0.25, -0.5)).reset(options={"goal": [0.1, 0.2]})
    assert observation.dtype == np.float32 and observation.tolist() == [0.0, 0.0]
    assert info["goal"].dtype == np.float32
    np.testing.assert_array_equal(info["goal"], np.float32([0.1, 0.2]))
    np.testing.assert_array_equal(
        NavigationEnv(goal=(0.25, -0.5)).reset()[1]["goal"], np.float32([0.25, -0.5])
    )

    first, second, other = (NavigationEnv().reset(seed=seed)[1]["goal"] for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    goals = goals_of_seeded_envs(list(range(50))).abs()
    assert float(goals.max()) <= 0.5 and float(goals.max()) > 0.4


def test_an_episode_terminates_at_the_goal_and_rewards_minus_the_distance_after_the_move():
    env = NavigationEnv(goal=(0.15, -0.05))
    env.reset()
    observation, reward, terminated, truncated, info = env.step(np.float32([0.5, -0.02]))  # x is clipped
    np.testing.assert_allclose(observation, [0.1, -0.02], **FLOAT32)
    assert reward == pytest.approx(-math.hypot(0.05, 0.03), abs=1e-6)
    assert not terminated and not truncated
    np.testing.assert_array_equal(info["goal"], np.float32([0.15, -0.05]))
    observation, reward, terminated, truncated, _ = env.step(np.float32([0.05 + 0.5 * GOAL_TOLERANCE, -0.03]))
    assert terminated and not truncated
    assert reward == pytest.approx(-0.5 * GOAL_TOLERANCE, abs=1e-6)
    with pytest.raises(ValueError, match="after the episode ended"):
        env.step(np.zeros(2, np.float32))


def test_an_episode_is_truncated_after_the_horizon():
    env = NavigationEnv(goal=(0.4, 0.4), horizon=3)
    env.reset()
    ends = [env.step(np.float32([-0.1, 0.0]))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]
    with pytest.raises(ValueError, match="after the episode ended"):
        env.step(np.zeros(2, np.float32))
    env.reset()  # a new episode starts
    assert env.step(np.zeros(2, np.float32))[3] is False


def test_navigation_steps_like_one_env_per_point_with_clipped_and_goal_reaching_actions():
    goals = goals_of_seeded_envs([0, 1, 2])  # (T, 2), float32
    horizon, num_trajectories = 12, 2
    generator = torch.Generator().manual_seed(0)
    velocities = 0.3 * torch.randn(3, num_trajectories, horizon, 2, generator=generator)  # often clipped
    # Episode (0, 0) heads straight to its goal at full speed; (1, 1) gets there in 6 equal steps.
    position = torch.zeros(2)
    for step in range(horizon):
        velocities[0, 0, step] = (goals[0] - position).clamp(-MAX_SPEED, MAX_SPEED)
        position = position + velocities[0, 0, step]
    velocities[1, 1, :6] = goals[1] / 6
    assert bool((velocities.abs() > MAX_SPEED).any())

    env = Navigation(goals, num_trajectories)
    positions, rewards, alive = [], [], []
    for step in range(horizon):
        reward, took_step = env.step(velocities[:, :, step])
        positions.append(env.states)
        rewards.append(reward)
        alive.append(took_step)
    positions, rewards, alive = (torch.stack(values, dim=2) for values in (positions, rewards, alive))

    ended_early = 0
    for task in range(3):
        for episode in range(num_trajectories):
            env_positions, env_rewards = run_env(goals[task], velocities[task, episode])
            steps = env_positions.shape[0]
            ended_early += steps < horizon
            assert alive[task, episode].tolist() == [True] * steps + [False] * (horizon - steps)
            torch.testing.assert_close(positions[task, episode, :steps], env_positions, **FLOAT32)
            torch.testing.assert_close(rewards[task, episode, :steps], env_rewards, **FLOAT32)
            assert bool((rewards[task, episode, steps:] == 0).all())
    assert ended_early == 2


def test_sample_trajectories_match_the_env_replaying_their_actions():
    goals = goals_of_seeded_envs([10, 11, 12, 13])  # (T, 2)
    policy = GaussianMLPPolicy(hidden=())  # mean = W s + b
    theta = dict(policy.named_parameters())
    # Tasks 0 and 1 steer to their goal, mean 10 (goal - s) (the velocity goal - s, clipped),
    # nearly without noise, and end early; tasks 2 and 3 act at random and are often clipped.
    weight = torch.stack(
        [-10 * torch.eye(2)] * 2 + [torch.randn(2, 2, generator=torch.Generator().manual_seed(1))] * 2
    )
    bias = torch.cat([10 * goals[:2], torch.zeros(2, 2)])
    log_std = torch.tensor([[-12.0, -12.0]] * 2 + [[0.5, 0.5]] * 2)
    params_per_task = {"mean.0.weight": weight, "mean.0.bias": bias, "log_std": log_std}
    assert set(params_per_task) == set(theta)
    horizon = 15
    episodes = sample_trajectories(
        policy,
        params_per_task,
        goals,
        num_trajectories=3,
        horizon=horizon,
        generator=torch.Generator().manual_seed(0),
    )
    lengths = episodes.mask.sum(dim=-1)  # (T, N)
    assert bool((lengths[:2] < horizon).all()) and bool((lengths[2:] == horizon).all())
    assert bool((episodes.actions[2:].abs() > 1).any())  # velocities beyond the clip

    for task in range(4):
        for episode in range(3):
            positions, rewards = run_env(goals[task], MAX_SPEED * episodes.actions[task, episode])
            steps = positions.shape[0]
            assert episodes.mask[task, episode].tolist() == [1.0] * steps + [0.0] * (horizon - steps)
            # states hold the position before each action: the start, then the env's observations.
            torch.testing.assert_close(episodes.states[task, episode, 0], torch.zeros(2))
            torch.testing.assert_close(episodes.states[task, episode, 1:steps], positions[:-1], **FLOAT32)
            torch.testing.assert_close(episodes.rewards[task, episode, :steps], rewards, **FLOAT32)
            assert bool((episodes.rewards[task, episode, steps:] == 0).all())


@pytest.mark.parametrize(
    ("goal", "error", "match"),
    [
        ((0.1, 0.2, 0.3), ValueError, r"must have shape \(2,\)"),
        ((0.1, float("nan")), ValueError, "must be finite"),
        ((0.1, float("inf")), ValueError, "must be finite"),
        ("north", TypeError, "must be two numbers"),
    ],
)
def test_a_bad_goal_is_refused_in_the_constructor_and_in_reset_options(goal, error, match):
    with pytest.raises(error, match="^goal " + match):
        NavigationEnv(goal=goal)
    with pytest.raises(error, match=r'^options\["goal"\] ' + match):
        NavigationEnv().reset(options={"goal": goal})


def test_a_bad_horizon_is_refused():
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        NavigationEnv(horizon=0)
    with pytest.raises(TypeError, match="horizon must be an integer"):
        NavigationEnv(horizon=2.5)
    assert NavigationEnv().horizon == HORIZON


def test_a_bad_action_or_a_step_before_reset_is_refused():
    env = NavigationEnv(goal=(0.2, 0.2))
    with pytest.raises(ValueError, match="before reset"):
        env.step(np.zeros(2, np.float32))
    env.reset()
    with pytest.raises(ValueError, match="action must be finite"):
        env.step(np.float32([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="action must be two numbers"):
        env.step("left")
    # A refused action does not count as a step: the episode goes on from (0, 0).
    observation, *_ = env.step([0.05, 0.0])
    np.testing.assert_allclose(observation, [0.05, 0.0], **FLOAT32)
