"""The RL core of chapter 8 against oracles: torch.distributions for the policy, plain loops
for the returns, least squares for the baseline, a per-task ``autograd.grad`` loop for the
inner step and the meta-gradient, and ``NavigationEnv`` for the oracle's return."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from mamlbook.inner import InnerLoop, adaptation, per_task
from mamlbook.rl import (
    GaussianMLPPolicy,
    Navigation,
    NavigationConfig,
    PolicyGradientLoss,
    SampledLosses,
    Trajectories,
    advantages,
    discounted_returns,
    evaluate_navigation,
    navigation_meta_loss,
    oracle_returns,
    sample_goals,
    sample_trajectories,
)
from mamlbook.rl.estimators import leave_one_out_mean
from mamlbook.rl.gym_env import NavigationEnv
from mamlbook.rl.navigation import HORIZON, MAX_SPEED
from mamlbook.rl.policy import gaussian_kl, log_prob
from mamlbook.rl.policy_gradient import BASELINE_RIDGE, fit_baseline

EXACT = {"atol": 1e-10, "rtol": 1e-10}


@pytest.fixture
def policy(make_model) -> GaussianMLPPolicy:
    """A small float64 policy, 2-6-2, with a standard deviation of 0.7."""
    return make_model(lambda: GaussianMLPPolicy(hidden=(6,), init_std=0.7))


def stacked_params(make_model, num_tasks: int) -> dict[str, torch.Tensor]:
    """``(T, ...)`` the parameters of T differently initialised small policies."""
    policies = [
        make_model(partial(GaussianMLPPolicy, hidden=(6,), init_std=0.5 + seed), seed=seed)
        for seed in range(num_tasks)
    ]
    names = dict(policies[0].named_parameters())
    return {
        name: torch.stack([dict(p.named_parameters())[name].detach() for p in policies]) for name in names
    }


def handmade_trajectories(num_tasks: int, num_trajectories: int, horizon: int, seed: int) -> Trajectories:
    """Random float64 episodes of random lengths 1..H, padded as the sampler pads them."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, horizon + 1, (num_tasks, num_trajectories), generator=generator)
    lengths[:, 0] = horizon  # every task has one full episode
    mask = (torch.arange(horizon) < lengths[..., None]).double()  # (T, N, H)
    shape = (num_tasks, num_trajectories, horizon)
    states = 0.3 * torch.randn(*shape, 2, generator=generator, dtype=torch.float64)
    actions = torch.randn(*shape, 2, generator=generator, dtype=torch.float64)
    rewards = -torch.rand(*shape, generator=generator, dtype=torch.float64) * mask
    goals = torch.rand(num_tasks, 2, generator=generator, dtype=torch.float64) - 0.5
    return Trajectories(goals, states, actions, rewards, mask)


def task_log_prob(policy: nn.Module, params, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a | s) of one task's policy, by torch.distributions."""
    means = functional_call(policy, params, (states,))
    return Normal(means, params["log_std"].exp()).log_prob(actions).sum(-1)


def task_surrogate(policy: nn.Module, params, loss: PolicyGradientLoss, task: int) -> torch.Tensor:
    """Task ``task``'s surrogate of ``loss``'s episodes at its own ``params``, written out."""
    episodes, mask = loss.trajectories, loss.trajectories.mask[task]
    log_probs = task_log_prob(policy, params, episodes.states[task], episodes.actions[task])
    return -(log_probs * loss.advantages[task] * mask).sum() / mask.sum()


def step_of(policy: nn.Module, params, loss: PolicyGradientLoss, task: int, rate: float):
    """One task's policy-gradient step, second order: params - rate * grad surrogate."""
    grads = torch.autograd.grad(
        task_surrogate(policy, params, loss, task), list(params.values()), create_graph=True
    )
    return {name: tensor - rate * grad for (name, tensor), grad in zip(params.items(), grads, strict=True)}


# The policy


def test_log_prob_of_each_task_is_the_normal_log_density_under_its_own_params(policy, make_model):
    params_per_task = stacked_params(make_model, 3)
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, 4, 5, 2, generator=generator, dtype=torch.float64)
    actions = torch.randn(3, 4, 5, 2, generator=generator, dtype=torch.float64)
    values = log_prob(policy, params_per_task, states, actions)  # (T, N, H)
    assert values.shape == (3, 4, 5)
    for task in range(3):
        own = {name: tensor[task] for name, tensor in params_per_task.items()}
        torch.testing.assert_close(
            values[task], task_log_prob(policy, own, states[task], actions[task]), **EXACT
        )
    assert not torch.allclose(values[0], values[1])  # the tasks' params differ
    # States with one leading dimension per task only, (T, N, 2), too.
    flat = log_prob(policy, params_per_task, states[:, :, 0], actions[:, :, 0])
    torch.testing.assert_close(flat, values[:, :, 0], **EXACT)


def test_gaussian_kl_is_torch_kl_divergence_summed_over_coordinates():
    generator = torch.Generator().manual_seed(1)
    means_old = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    means_new = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    log_std_old = torch.tensor([0.2, -0.4], dtype=torch.float64)
    log_std_new = torch.randn(4, 1, 2, generator=generator, dtype=torch.float64)  # broadcasts
    expected = kl_divergence(Normal(means_old, log_std_old.exp()), Normal(means_new, log_std_new.exp())).sum(
        -1
    )
    kl = gaussian_kl(means_old, log_std_old, means_new, log_std_new)
    assert kl.shape == (4, 3)
    torch.testing.assert_close(kl, expected, **EXACT)
    assert float(gaussian_kl(means_old, log_std_old, means_old, log_std_old).abs().max()) < 1e-12


# Returns, baseline, advantages


@pytest.mark.parametrize("discount", [0.0, 0.9, 0.99, 1.0])
def test_discounted_returns_equal_a_reversed_loop(discount):
    rewards = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.zeros_like(rewards)
    following = torch.zeros(2, 3, dtype=torch.float64)
    for step in reversed(range(7)):
        following = rewards[..., step] + discount * following
        expected[..., step] = following
    torch.testing.assert_close(discounted_returns(rewards, discount), expected, **EXACT)


@pytest.mark.parametrize("num_trajectories", [5, 3])  # N = T once: each task must use its own fit
def test_fit_baseline_is_ridge_least_squares_on_the_steps_taken(num_trajectories):
    episodes = handmade_trajectories(num_tasks=3, num_trajectories=num_trajectories, horizon=9, seed=3)
    returns = discounted_returns(episodes.rewards)
    fitted = fit_baseline(episodes, returns)  # (T, N, H)
    assert bool((fitted[episodes.mask == 0] == 0).all())
    for task in range(3):
        taken = episodes.mask[task].bool()  # (N, H)
        states = episodes.states[task][taken].numpy()  # (steps, 2)
        time = np.broadcast_to(np.arange(9) / 100, taken.shape)[taken.numpy()]
        features = np.column_stack([states, states**2, time, time**2, time**3, np.ones_like(time)])
        # Ridge as plain least squares: append sqrt(ridge) * I to the features, zeros to the targets.
        augmented = np.vstack([features, np.sqrt(BASELINE_RIDGE) * np.eye(8)])
        targets = np.concatenate([returns[task][taken].numpy(), np.zeros(8)])
        weights, *_ = np.linalg.lstsq(augmented, targets, rcond=None)
        np.testing.assert_allclose(fitted[task][taken].numpy(), features @ weights, rtol=1e-6, atol=1e-8)


def test_advantages_have_mean_zero_and_std_one_over_the_steps_taken_and_are_zero_after():
    episodes = handmade_trajectories(num_tasks=3, num_trajectories=5, horizon=9, seed=4)
    values = advantages(episodes)
    mask = episodes.mask
    assert bool((values[mask == 0] == 0).all())
    counts = mask.sum(dim=(1, 2))
    mean = (values * mask).sum(dim=(1, 2)) / counts
    std = ((values - mean[:, None, None]).pow(2) * mask).sum(dim=(1, 2)).div(counts).sqrt()
    torch.testing.assert_close(mean, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(std, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(PolicyGradientLoss(None, episodes).advantages, values, **EXACT)


# The inner step and the meta-gradient


def test_inner_steps_on_a_policy_gradient_loss_equal_a_per_task_loop_value_and_meta_gradient(policy):
    theta = dict(policy.named_parameters())
    support = PolicyGradientLoss(policy, handmade_trajectories(3, 4, 6, seed=5))
    query = PolicyGradientLoss(policy, handmade_trajectories(3, 4, 6, seed=6))
    loop = InnerLoop.of(theta, inner_lr=0.3, inner_steps=2)
    steps = list(adaptation(support, per_task(theta, 3), loop))
    meta_loss = query(steps[-1].adapted).mean()
    meta_gradient = torch.autograd.grad(meta_loss, list(theta.values()))

    query_losses = []
    for task in range(3):
        adapted = dict(theta)
        for step in steps:
            support_loss = task_surrogate(policy, adapted, support, task)
            torch.testing.assert_close(step.support_losses[task], support_loss.detach(), **EXACT)
            adapted = step_of(policy, adapted, support, task, 0.3)
        for name, tensor in adapted.items():
            torch.testing.assert_close(steps[-1].adapted[name][task], tensor, **EXACT)
        query_losses.append(task_surrogate(policy, adapted, query, task))
    by_hand = torch.stack(query_losses).mean()
    torch.testing.assert_close(meta_loss, by_hand, **EXACT)
    for vectorised, looped in zip(
        meta_gradient, torch.autograd.grad(by_hand, list(theta.values())), strict=True
    ):
        torch.testing.assert_close(vectorised, looped, **EXACT)


def tiny_config(**changes) -> NavigationConfig:
    return NavigationConfig(
        **{"meta_batch_size": 3, "num_trajectories": 3, "horizon": 5, "inner_lr": 0.2, **changes}
    )


def test_navigation_meta_loss_paper_gradient_is_the_gradient_through_the_inner_step(policy):
    theta = dict(policy.named_parameters())
    goals = sample_goals(3, generator=torch.Generator().manual_seed(7)).double()
    result = navigation_meta_loss(
        policy, theta, goals, tiny_config(), generator=torch.Generator().manual_seed(0)
    )
    gradient = torch.autograd.grad(result.loss, list(theta.values()))
    assert len(result.support.samples) == 1 and len(result.query.samples) == 1
    support, query = result.support.samples[0].loss, result.query.samples[0].loss

    adapted = [step_of(policy, theta, support, task, 0.2) for task in range(3)]
    by_hand = torch.stack([task_surrogate(policy, adapted[task], query, task) for task in range(3)]).mean()
    torch.testing.assert_close(result.loss, by_hand, **EXACT)
    for package, looped in zip(gradient, torch.autograd.grad(by_hand, list(theta.values())), strict=True):
        torch.testing.assert_close(package, looped, **EXACT)

    # The support episodes come from theta and the query episodes from each task's adapted policy.
    replay = torch.Generator().manual_seed(0)
    before = sample_trajectories(
        policy, per_task(theta, 3), goals, num_trajectories=3, horizon=5, generator=replay
    )
    phi = {name: torch.stack([params[name].detach() for params in adapted]) for name in theta}
    after = sample_trajectories(policy, phi, goals, num_trajectories=3, horizon=5, generator=replay)
    torch.testing.assert_close(support.trajectories.actions, before.actions, **EXACT)
    torch.testing.assert_close(query.trajectories.actions, after.actions, **EXACT)


def test_two_inner_steps_sample_new_episodes_at_each_step_and_differentiate_through_both(policy):
    theta = dict(policy.named_parameters())
    goals = sample_goals(3, generator=torch.Generator().manual_seed(9)).double()
    result = navigation_meta_loss(
        policy, theta, goals, tiny_config(inner_steps=2), generator=torch.Generator().manual_seed(1)
    )
    first, second = (sample.loss for sample in result.support.samples)
    query = result.query.samples[-1].loss
    by_hand = []
    for task in range(3):
        phi_1 = step_of(policy, theta, first, task, 0.2)
        phi_2 = step_of(policy, phi_1, second, task, 0.2)
        by_hand.append(task_surrogate(policy, phi_2, query, task))
    by_hand = torch.stack(by_hand).mean()
    torch.testing.assert_close(result.loss, by_hand, **EXACT)
    for package, looped in zip(
        torch.autograd.grad(result.loss, list(theta.values())),
        torch.autograd.grad(by_hand, list(theta.values())),
        strict=True,
    ):
        torch.testing.assert_close(package, looped, **EXACT)
    # The second step's episodes come from the policy after the first step.
    replay = torch.Generator().manual_seed(1)
    sample_trajectories(policy, per_task(theta, 3), goals, num_trajectories=3, horizon=5, generator=replay)
    phi_1 = {
        name: torch.stack([step_of(policy, theta, first, task, 0.2)[name].detach() for task in range(3)])
        for name in theta
    }
    again = sample_trajectories(policy, phi_1, goals, num_trajectories=3, horizon=5, generator=replay)
    torch.testing.assert_close(second.trajectories.actions, again.actions, **EXACT)


def test_dice_adds_the_score_function_term_to_the_gradient_and_nothing_to_the_value(policy):
    theta = dict(policy.named_parameters())
    goals = sample_goals(3, generator=torch.Generator().manual_seed(8)).double()
    results = {
        estimator: navigation_meta_loss(
            policy, theta, goals, tiny_config(estimator=estimator), generator=torch.Generator().manual_seed(1)
        )
        for estimator in ("paper", "dice")
    }
    paper, dice = results["paper"], results["dice"]
    assert torch.equal(dice.loss.detach(), paper.loss.detach())
    paper_gradient = torch.autograd.grad(paper.loss, list(theta.values()))
    dice_gradient = torch.autograd.grad(dice.loss, list(theta.values()))
    assert not all(torch.allclose(a, b) for a, b in zip(paper_gradient, dice_gradient, strict=True))

    # The difference: -mean_t (v_t - mean of the other tasks' v) grad S_t, S_t the log-likelihood
    # of task t's pre-update episodes at theta and v_t the post-update return, in the loss's units.
    values = dice.query.samples[-1].loss.value()
    centred = values - leave_one_out_mean(values)
    support = dice.support.samples[0].loss
    log_likelihood = torch.stack(
        [
            (
                task_log_prob(
                    policy, theta, support.trajectories.states[task], support.trajectories.actions[task]
                )
                * support.trajectories.mask[task]
            ).sum()
            for task in range(3)
        ]
    )
    term = torch.autograd.grad(-(centred * log_likelihood).mean(), list(theta.values()))
    for with_dice, without, added in zip(dice_gradient, paper_gradient, term, strict=True):
        torch.testing.assert_close(with_dice - without, added, atol=1e-9, rtol=1e-7)


# Evaluation and the oracle


def test_evaluate_navigation_returns_one_column_per_step_and_the_first_for_zero_steps(policy):
    theta = dict(policy.named_parameters())
    goals = sample_goals(2, generator=torch.Generator().manual_seed(9)).double()
    options = {"num_trajectories": 2, "horizon": 4}
    returns = evaluate_navigation(policy, theta, goals, inner_steps=2, generator=torch.Generator(), **options)
    assert returns.shape == (2, 3) and bool(torch.isfinite(returns).all())
    unadapted = evaluate_navigation(
        policy, theta, goals, inner_steps=0, generator=torch.Generator(), **options
    )
    assert unadapted.shape == (2, 1)
    assert all(tensor.grad is None for tensor in theta.values())


@pytest.mark.parametrize("horizon", [HORIZON, 3])
def test_oracle_returns_equal_the_env_stepped_with_the_straight_line_controller(horizon):
    seeds = list(range(6))
    returns, goals = [], []
    for seed in seeds:
        env = NavigationEnv(horizon=horizon)
        observation, info = env.reset(seed=seed)
        goals.append(torch.from_numpy(info["goal"]))
        total, ended = 0.0, False
        while not ended:
            velocity = np.clip(info["goal"] - observation, -MAX_SPEED, MAX_SPEED)
            observation, reward, terminated, truncated, _ = env.step(velocity)
            total += reward
            ended = terminated or truncated
        returns.append(total)
    oracle = oracle_returns(torch.stack(goals), horizon)
    torch.testing.assert_close(oracle, torch.tensor(returns, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_a_random_policy_returns_far_less_than_the_oracle():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_policy = GaussianMLPPolicy()  # the paper's 2-100-100-2, untrained
    goals = sample_goals(5, generator=torch.Generator().manual_seed(10))
    params = per_task({name: tensor.detach() for name, tensor in random_policy.named_parameters()}, 5)
    episodes = sample_trajectories(
        random_policy, params, goals, num_trajectories=10, generator=torch.Generator().manual_seed(0)
    )
    random_return = float(episodes.average_returns().mean())
    oracle_return = float(oracle_returns(goals).mean())
    assert oracle_return < 0
    assert random_return < 20 * oracle_return  # both negative: twenty times the oracle's distance


# Bad input


class ThreeOutputs(nn.Module):
    """A policy whose mean has 3 numbers for a 2-D action."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Linear(2, 3)
        self.log_std = nn.Parameter(torch.zeros(2))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.mean(states)


BAD_GOALS = [
    (torch.zeros(3), ValueError, r"goals must have shape \(T, 2\)"),
    (torch.zeros(2, 3), ValueError, r"goals must have shape \(T, 2\)"),
    (torch.zeros(0, 2), ValueError, r"goals must have shape \(T, 2\) with T >= 1"),
    (torch.tensor([[0.1, float("nan")]]), ValueError, "goals must be finite"),
    (torch.tensor([[float("inf"), 0.1]]), ValueError, "goals must be finite"),
    (torch.zeros(1, 2, dtype=torch.long), TypeError, "goals must be a floating-point tensor"),
    ([[0.1, 0.2]], TypeError, "goals must be a floating-point tensor"),
]


@pytest.mark.parametrize(("goals", "error", "match"), BAD_GOALS)
def test_bad_goals_are_refused_by_every_entry_point(goals, error, match):
    policy = GaussianMLPPolicy(hidden=(4,))
    theta = dict(policy.named_parameters())
    calls = [
        lambda: Navigation(goals, 2),
        lambda: oracle_returns(goals),
        lambda: sample_trajectories(policy, per_task(theta, 1), goals, num_trajectories=2),
        lambda: navigation_meta_loss(policy, theta, goals, tiny_config()),
        lambda: evaluate_navigation(policy, theta, goals),
    ]
    for call in calls:
        with pytest.raises(error, match=match):
            call()


def test_a_policy_with_the_wrong_output_shape_is_refused():
    policy = ThreeOutputs()
    params = per_task(dict(policy.named_parameters()), 2)
    with pytest.raises(ValueError, match=r"policy must return one mean per state, shape \(2, 3, 2\)"):
        sample_trajectories(policy, params, sample_goals(2), num_trajectories=3, horizon=2)


def test_a_policy_whose_mean_is_nan_is_refused_at_the_first_step():
    policy = GaussianMLPPolicy(hidden=(4,))
    with torch.no_grad():
        policy.mean[-1].bias.fill_(float("nan"))
    params = per_task(dict(policy.named_parameters()), 2)
    with pytest.raises(ValueError, match="velocities must be finite; an action holds NaN"):
        sample_trajectories(policy, params, sample_goals(2), num_trajectories=3, horizon=2)


@pytest.mark.parametrize("name", ["num_trajectories", "horizon"])
def test_zero_episodes_or_a_zero_horizon_is_refused(name):
    policy = GaussianMLPPolicy(hidden=(4,))
    theta = dict(policy.named_parameters())
    goals = sample_goals(2)
    sizes = {"num_trajectories": 2, "horizon": 3, name: 0}
    calls = [
        lambda: sample_trajectories(policy, per_task(theta, 2), goals, **sizes),
        lambda: SampledLosses(policy, goals, **sizes),
        lambda: evaluate_navigation(policy, theta, goals, **sizes),
        lambda: NavigationConfig(**sizes),
    ]
    if name == "horizon":
        calls.append(lambda: oracle_returns(goals, 0))
    else:
        calls.append(lambda: Navigation(goals, 0))
    for call in calls:
        with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
            call()


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"outer": "sgd"}, ValueError, "outer must be one of"),
        ({"estimator": "loaded-dice"}, ValueError, "estimator must be one of"),
        ({"inner_lr": -0.1}, ValueError, "inner_lr must be a finite number >= 0"),
        ({"outer_lr": -1e-3}, ValueError, "outer_lr must be a finite number > 0"),
        ({"outer_lr": 0.0}, ValueError, "outer_lr must be a finite number > 0"),
        ({"max_kl": float("nan")}, ValueError, "max_kl must be a finite number > 0"),
        ({"inner_steps": -1}, ValueError, "inner_steps must be >= 0"),
        ({"meta_batch_size": 2.0}, TypeError, "meta_batch_size must be an integer"),
    ],
)
def test_navigation_config_refuses_bad_settings(changes, error, match):
    with pytest.raises(error, match=match):
        NavigationConfig(**changes)
    assert NavigationConfig.paper().outer == "trpo"


def test_goals_of_another_dtype_than_the_policy_are_refused():
    policy = GaussianMLPPolicy(hidden=(4,)).double()
    params = per_task(dict(policy.named_parameters()), 2)
    with pytest.raises(ValueError, match=r"goals \(torch.float32, cpu\) must have the dtype and device"):
        sample_trajectories(policy, params, sample_goals(2), num_trajectories=2, horizon=2)


def test_the_meta_loss_refuses_a_config_of_another_type():
    policy = GaussianMLPPolicy(hidden=(4,))
    with pytest.raises(TypeError, match="config must be a NavigationConfig, got dict"):
        navigation_meta_loss(policy, dict(policy.named_parameters()), sample_goals(2), {"iterations": 1})
