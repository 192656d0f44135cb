"""The chapter 8 checkers: they accept correct discounted returns, surrogates and policy-gradient
steps, and name each classic mistake. Every wrong implementation is written out here, one
function per mistake."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import mamlbook as mb
from mamlbook.checks import (
    check_discounted_returns,
    check_policy_gradient_step,
    check_policy_gradient_surrogate,
)

# Discounted returns: discounted_returns(rewards, discount) -> (..., H)


def returns_recursion(rewards, discount):
    """R_t = r_t + gamma R_(t+1), from the last step back."""
    returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for step in reversed(range(rewards.shape[-1])):
        running = rewards[..., step] + discount * running
        returns[..., step] = running
    return returns


def returns_double_loop(rewards, discount):
    """Correct too: the definition, a sum over k >= t for each t, as a list of tensors."""
    horizon = rewards.shape[-1]
    columns = [sum(discount ** (k - t) * rewards[..., k] for k in range(t, horizon)) for t in range(horizon)]
    return torch.stack(columns, dim=-1)


def returns_reward_to_go(rewards, discount):
    return rewards.flip(-1).cumsum(-1).flip(-1)


def returns_of_the_past(rewards, discount):
    returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for step in range(rewards.shape[-1]):
        running = rewards[..., step] + discount * running
        returns[..., step] = running
    return returns


def returns_whole_episode(rewards, discount):
    return returns_recursion(rewards, discount)[..., :1].expand_as(rewards).clone()


def returns_undiscounted_total(rewards, discount):
    return rewards.sum(-1, keepdim=True).expand_as(rewards)


def returns_discounted_from_start(rewards, discount):
    powers = discount ** torch.arange(rewards.shape[-1], dtype=rewards.dtype)
    return (rewards * powers).flip(-1).cumsum(-1).flip(-1)


def returns_one_gamma_too_many(rewards, discount):
    returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for step in reversed(range(rewards.shape[-1])):
        running = discount * (rewards[..., step] + running)
        returns[..., step] = running
    return returns


def returns_per_episode(rewards, discount):
    return returns_recursion(rewards, discount)[..., 0]


def returns_in_place(rewards, discount):
    """Right values, computed in the caller's tensor: the checker's answer stays right."""
    for step in reversed(range(rewards.shape[-1] - 1)):
        rewards[..., step] += discount * rewards[..., step + 1]
    return rewards


@pytest.mark.parametrize("fn", [returns_recursion, returns_double_loop, mb.rl.discounted_returns])
def test_check_discounted_returns_accepts_correct_returns(fn, checker_seed):
    verdict = check_discounted_returns(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (returns_reward_to_go, "not discounted"),
        (returns_of_the_past, "sums the rewards before it"),
        (returns_whole_episode, "the episode's whole return"),
        (returns_undiscounted_total, "undiscounted total"),
        (returns_discounted_from_start, "from the episode's start"),
        (returns_one_gamma_too_many, "gamma times too small"),
        (returns_per_episode, "one number per episode"),
        (returns_in_place, "changed rewards in place"),
        (lambda rewards, discount: "returns", "return a tensor"),
        (lambda rewards, discount: rewards[..., :-1], "shaped like rewards"),
    ],
)
def test_check_discounted_returns_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_discounted_returns(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_discounted_returns_reports_an_exception():
    def broken(rewards, discount):
        return rewards[:, :, :, 0]

    verdict = check_discounted_returns(broken)
    assert not verdict.passed
    assert "raised IndexError" in verdict.message


def test_check_discounted_returns_rejects_bad_arguments():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_discounted_returns("returns")
    with pytest.raises(ValueError, match="seed"):
        check_discounted_returns(returns_recursion, seed=-1)


# Surrogates: surrogate(log_probs, advantages, mask) -> (T,)


def surrogate_correct(log_probs, advantages, mask):
    return -(log_probs * advantages * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


def surrogate_per_task_loop(log_probs, advantages, mask):
    """Correct too: one task at a time, the steps taken picked out by the mask."""
    return torch.stack(
        [-(lp * a)[m.bool()].mean() for lp, a, m in zip(log_probs, advantages, mask, strict=True)]
    )


def surrogate_wrong_sign(log_probs, advantages, mask):
    return -surrogate_correct(log_probs, advantages, mask)


def surrogate_sum(log_probs, advantages, mask):
    return -(log_probs * advantages * mask).sum(dim=(1, 2))


def surrogate_sum_over_steps(log_probs, advantages, mask):
    return -(log_probs * advantages * mask).sum(dim=2).mean(dim=1)


def surrogate_counts_padding(log_probs, advantages, mask):
    return -(log_probs * advantages * mask).mean(dim=(1, 2))


def surrogate_mean_of_episode_means(log_probs, advantages, mask):
    return -((log_probs * advantages * mask).sum(dim=2) / mask.sum(dim=2)).mean(dim=1)


def surrogate_mean_over_tasks(log_probs, advantages, mask):
    return surrogate_correct(log_probs, advantages, mask).mean()


def surrogate_detached(log_probs, advantages, mask):
    return surrogate_correct(log_probs.detach(), advantages, mask)


def surrogate_rebuilt(log_probs, advantages, mask):
    return torch.tensor(surrogate_correct(log_probs, advantages, mask).tolist(), requires_grad=True)


def surrogate_in_place(log_probs, advantages, mask):
    advantages.mul_(2.0)
    return surrogate_correct(log_probs, advantages / 2.0, mask)


@pytest.mark.parametrize("fn", [surrogate_correct, surrogate_per_task_loop, mb.rl.surrogate])
def test_check_policy_gradient_surrogate_accepts_a_correct_surrogate(fn, checker_seed):
    verdict = check_policy_gradient_surrogate(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (surrogate_wrong_sign, "sign is reversed"),
        (surrogate_sum, "a sum over the steps"),
        (surrogate_sum_over_steps, "steps are summed, then the episodes averaged"),
        (surrogate_counts_padding, "counts the padded steps"),
        (surrogate_mean_of_episode_means, "each episode is averaged on its own"),
        (surrogate_mean_over_tasks, "one surrogate per task"),
        (surrogate_detached, "does not depend on log_probs"),
        (surrogate_rebuilt, "does not depend on log_probs"),
        (surrogate_in_place, "changed its inputs in place"),
        (lambda log_probs, advantages, mask: [0.0, 0.0, 0.0], "return a tensor"),
        (lambda log_probs, advantages, mask: -(log_probs * advantages).mean(dim=2), "shape (T,)"),
    ],
)
def test_check_policy_gradient_surrogate_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_policy_gradient_surrogate(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_policy_gradient_surrogate_reports_an_exception():
    def broken(log_probs, advantages, mask):
        raise NotImplementedError("surrogate")

    verdict = check_policy_gradient_surrogate(broken)
    assert not verdict.passed
    assert "raised NotImplementedError" in verdict.message


def test_check_policy_gradient_surrogate_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_policy_gradient_surrogate(None)


# Policy-gradient steps: policy_gradient_step(policy, params, trajectories, *, inner_lr, discount) -> adapted


def gaussian_log_probs(policy, params, trajectories):
    """``(N, H)`` log pi(a | s) of the one task's actions at ``params``."""
    means = functional_call(policy, params, (trajectories.states[0],))  # (N, H, 2)
    log_std = params["log_std"]
    z = (trajectories.actions[0] - means) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)


def descend(params, loss, inner_lr, create_graph=True, sign=-1.0):
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {name: p + sign * inner_lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def standardise(values, mask, unbiased=False):
    taken = values[mask.bool()]
    return (values - taken.mean()) / (taken.std(unbiased=unbiased) + 1e-8) * mask


def step_with(advantages_of, *, scale=lambda mask: mask.sum(), sign=-1.0, create_graph=True):
    """A policy-gradient step whose advantages and normalisation are given as functions."""

    def step(policy, params, trajectories, *, inner_lr, discount):
        mask = trajectories.mask[0]
        advantages = advantages_of(trajectories, discount)
        log_probs = gaussian_log_probs(policy, params, trajectories)
        loss = -(log_probs * advantages * mask).sum() / scale(mask)
        return descend(params, loss, inner_lr, create_graph=create_graph, sign=sign)

    return step


def package_advantages(trajectories, discount):
    return mb.rl.advantages(trajectories, discount)[0]


def baseline_residuals(trajectories, discount):
    returns = mb.rl.discounted_returns(trajectories.rewards, discount)
    return ((returns - mb.rl.policy_gradient.fit_baseline(trajectories, returns)) * trajectories.mask)[0]


def step_correct(policy, params, trajectories, *, inner_lr, discount):
    return step_with(package_advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_through_the_package(policy, params, trajectories, *, inner_lr, discount):
    """Correct too: the package's loss and one step of its inner loop."""
    loss = mb.rl.PolicyGradientLoss(policy, trajectories, discount)
    loop = mb.InnerLoop.of(params, inner_lr=inner_lr, inner_steps=1)
    (step,) = mb.inner.adaptation(loss, mb.inner.per_task(params, 1), loop)
    return {name: tensor[0] for name, tensor in step.adapted.items()}


def step_own_advantages(policy, params, trajectories, *, inner_lr, discount):
    """Correct too: the advantages standardised by hand."""
    advantages = lambda episodes, gamma: standardise(baseline_residuals(episodes, gamma), episodes.mask[0])  # noqa: E731
    return step_with(advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_no_baseline(policy, params, trajectories, *, inner_lr, discount):
    def advantages(episodes, gamma):
        returns = mb.rl.discounted_returns(episodes.rewards, gamma)[0]
        return standardise(returns, episodes.mask[0])

    return step_with(advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_not_standardised(policy, params, trajectories, *, inner_lr, discount):
    return step_with(baseline_residuals)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_raw_returns(policy, params, trajectories, *, inner_lr, discount):
    advantages = lambda episodes, gamma: mb.rl.discounted_returns(episodes.rewards, gamma)[0]  # noqa: E731
    return step_with(advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_unbiased_std(policy, params, trajectories, *, inner_lr, discount):
    advantages = lambda episodes, gamma: standardise(  # noqa: E731
        baseline_residuals(episodes, gamma), episodes.mask[0], unbiased=True
    )
    return step_with(advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_not_discounted(policy, params, trajectories, *, inner_lr, discount):
    return step_correct(policy, params, trajectories, inner_lr=inner_lr, discount=1.0)


def step_default_discount(policy, params, trajectories, *, inner_lr, discount):
    advantages = lambda episodes, gamma: mb.rl.advantages(episodes)[0]  # noqa: E731
    return step_with(advantages)(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_ascent(policy, params, trajectories, *, inner_lr, discount):
    step = step_with(package_advantages, sign=1.0)
    return step(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_sum(policy, params, trajectories, *, inner_lr, discount):
    step = step_with(package_advantages, scale=lambda mask: 1.0)
    return step(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_sum_over_steps(policy, params, trajectories, *, inner_lr, discount):
    step = step_with(package_advantages, scale=lambda mask: mask.shape[0])
    return step(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_counts_padding(policy, params, trajectories, *, inner_lr, discount):
    step = step_with(package_advantages, scale=lambda mask: mask.numel())
    return step(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_first_order(policy, params, trajectories, *, inner_lr, discount):
    step = step_with(package_advantages, create_graph=False)
    return step(policy, params, trajectories, inner_lr=inner_lr, discount=discount)


def step_detached_result(policy, params, trajectories, *, inner_lr, discount):
    adapted = step_correct(policy, params, trajectories, inner_lr=inner_lr, discount=discount)
    return {name: tensor.detach() for name, tensor in adapted.items()}


def step_detached_log_probs(policy, params, trajectories, *, inner_lr, discount):
    mask = trajectories.mask[0]
    log_probs = gaussian_log_probs(policy, params, trajectories).detach()
    loss = -(log_probs * package_advantages(trajectories, discount) * mask).sum() / mask.sum()
    return descend(params, loss, inner_lr)


def step_module_weights(policy, params, trajectories, *, inner_lr, discount):
    """The log-probabilities of the module's own weights, not of params."""
    own = dict(policy.named_parameters())
    mask = trajectories.mask[0]
    log_probs = gaussian_log_probs(policy, own, trajectories)
    loss = -(log_probs * package_advantages(trajectories, discount) * mask).sum() / mask.sum()
    return descend(params, loss, inner_lr)


def step_in_place(policy, params, trajectories, *, inner_lr, discount):
    adapted = step_correct(policy, params, trajectories, inner_lr=inner_lr, discount=discount)
    trajectories.rewards.zero_()
    return adapted


def step_keeps_task_dim(policy, params, trajectories, *, inner_lr, discount):
    adapted = step_correct(policy, params, trajectories, inner_lr=inner_lr, discount=discount)
    return {name: tensor[None] for name, tensor in adapted.items()}


@pytest.mark.parametrize("fn", [step_correct, step_through_the_package, step_own_advantages])
def test_check_policy_gradient_step_accepts_a_correct_step(fn, checker_seed):
    verdict = check_policy_gradient_step(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (step_no_baseline, "no baseline"),
        (step_not_standardised, "not standardised"),
        (step_raw_returns, "the raw returns"),
        (step_unbiased_std, "unbiased standard deviation"),
        (step_not_discounted, "not discounted"),
        (step_default_discount, "the default discount"),
        (step_ascent, "climbs the surrogate"),
        (step_sum, "sums over the steps"),
        (step_sum_over_steps, "sums each episode's steps"),
        (step_counts_padding, "counts the padded steps"),
        (step_first_order, "first order"),
        (step_detached_result, "cut from params"),
        (step_detached_log_probs, "does not depend on params"),
        (step_module_weights, "does not depend on params"),
        (step_in_place, "changed its inputs in place"),
        (step_keeps_task_dim, "no task dimension"),
        (lambda policy, params, trajectories, **_: list(params.values()), "dict keyed like params"),
    ],
)
def test_check_policy_gradient_step_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_policy_gradient_step(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_policy_gradient_step_reports_an_exception():
    def broken(policy, params, trajectories, *, inner_lr, discount):
        return trajectories.baseline

    verdict = check_policy_gradient_step(broken)
    assert not verdict.passed
    assert "raised AttributeError" in verdict.message


def test_check_policy_gradient_step_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_policy_gradient_step(0)


def test_check_policy_gradient_step_names_a_step_not_taken():
    def no_step(policy, params, trajectories, *, inner_lr, discount):
        return {name: tensor * 1.0 for name, tensor in params.items()}

    verdict = check_policy_gradient_step(no_step)
    assert not verdict.passed
    assert "did not move" in verdict.message, verdict.message


def test_check_policy_gradient_step_reports_a_graph_that_cannot_be_differentiated():
    def modified_after_use(policy, params, trajectories, *, inner_lr, discount):
        adapted = step_correct(policy, params, trajectories, inner_lr=inner_lr, discount=discount)
        hidden = torch.tanh(adapted["mean.0.weight"])
        hidden.mul_(0.0).add_(torch.tanh(adapted["mean.0.weight"]))  # tanh's saved output overwritten
        return {**adapted, "mean.0.weight": torch.atanh(hidden)}

    verdict = check_policy_gradient_step(modified_after_use)
    assert not verdict.passed
    assert "cannot differentiate through the step" in verdict.message, verdict.message
