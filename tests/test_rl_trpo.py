"""The paper's TRPO outer step: conjugate gradient, Fisher-vector products, the step's guarantees."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mamlbook.errors import NonFiniteLossError
from mamlbook.rl import GaussianMLPPolicy, NavigationConfig, meta_train_navigation, navigation_meta_loss
from mamlbook.rl.navigation import sample_goals
from mamlbook.rl.trpo import (
    PostUpdateObjective,
    TRPOStep,
    conjugate_gradient,
    kl_hessian_vector_product,
    trpo_step,
)

TINY = NavigationConfig(iterations=2, meta_batch_size=2, num_trajectories=2, horizon=5, outer="trpo")


def meta_batch(config=TINY, *, hidden=(8,), dtype=torch.float32, seed=0):
    """A policy, its params and the meta-loss of one meta-batch, all from ``seed``."""
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(hidden=hidden).to(dtype)
    params = dict(policy.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    goals = sample_goals(config.meta_batch_size, generator=generator).to(dtype)
    return policy, params, navigation_meta_loss(policy, params, goals, config, generator=generator)


def unflatten(flat, like):
    """The ``(n,)`` vector cut into tensors shaped as ``like``'s, keyed alike."""
    params, start = {}, 0
    for name, tensor in like.items():
        params[name] = flat[start : start + tensor.numel()].view_as(tensor)
        start += tensor.numel()
    return params


def test_conjugate_gradient_solves_a_symmetric_positive_definite_system():
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def test_the_surrogates_gradient_is_minus_the_meta_losss():
    policy, params, result = meta_batch(dtype=torch.float64)
    surrogate, kl = PostUpdateObjective(policy, params, result)(params)
    assert float(surrogate.detach()) == pytest.approx(0.0, abs=1e-12)  # standardised advantages, ratio 1
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-12)
    ours = torch.autograd.grad(surrogate, list(params.values()))
    theirs = torch.autograd.grad(result.loss, list(params.values()))
    for mine, loss_gradient in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, -loss_gradient)


@pytest.mark.parametrize("first_order", [False, True])
def test_the_fisher_vector_product_is_the_kl_hessian_through_the_inner_step(first_order):
    config = dataclasses.replace(TINY, horizon=4, first_order=first_order)
    policy, params, result = meta_batch(config, hidden=(4,), dtype=torch.float64)
    objective = PostUpdateObjective(policy, params, result)
    flat = torch.cat([tensor.detach().reshape(-1) for tensor in params.values()])
    hessian = torch.autograd.functional.hessian(lambda x: objective(unflatten(x, params))[1], flat)
    vector = torch.randn(flat.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    product = kl_hessian_vector_product(objective(params)[1], list(params.values()), damping=0.5)
    torch.testing.assert_close(product(vector), hessian @ vector + 0.5 * vector)
    assert float(hessian.abs().max()) > 0


def test_a_step_keeps_the_kl_within_the_bound_and_does_not_lower_the_surrogate():
    config = dataclasses.replace(TINY, meta_batch_size=3, num_trajectories=4, horizon=10)
    policy, params, result = meta_batch(config)
    objective = PostUpdateObjective(policy, params, result)
    before = {name: tensor.detach().clone() for name, tensor in params.items()}
    step = trpo_step(policy, params, result, max_kl=0.01)
    assert isinstance(step, TRPOStep) and step.accepted and 0 <= step.backtracks < 15
    with torch.no_grad():
        surrogate, kl = objective(params)
    assert 0 < float(kl) <= 0.01 and float(kl) == pytest.approx(step.kl, rel=1e-5)
    assert float(surrogate) > step.surrogate_before and float(surrogate) == pytest.approx(
        step.surrogate_after
    )
    assert any(not torch.equal(before[name], params[name]) for name in params)


def test_a_step_that_lowers_the_surrogate_is_rejected_and_leaves_theta_alone():
    policy, params, result = meta_batch()
    before = {name: tensor.detach().clone() for name, tensor in params.items()}
    # Minus the meta-loss points downhill on the surrogate: no shrunken step can improve it.
    step = trpo_step(policy, params, result._replace(loss=-result.loss), max_kl=0.01, max_backtracks=4)
    assert step == TRPOStep(step.surrogate_before, step.surrogate_before, 0.0, 4, False)
    for name in params:
        assert torch.equal(before[name], params[name])


def test_the_step_is_deterministic_given_the_same_meta_loss():
    runs = []
    for _ in range(2):
        policy, params, result = meta_batch()
        runs.append((trpo_step(policy, params, result, max_kl=0.01), params))
    (first_step, first), (second_step, second) = runs
    assert first_step == second_step
    for name in first:
        assert torch.equal(first[name], second[name])


def test_trpo_meta_training_runs_on_a_tiny_setting():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(hidden=(8,))
    start = {name: tensor.detach().clone() for name, tensor in policy.named_parameters()}
    history = meta_train_navigation(policy, TINY, generator=torch.Generator().manual_seed(0), progress=False)
    assert history.pre_update_returns.shape == history.post_update_returns.shape == (2,)
    assert bool(torch.isfinite(history.post_update_returns).all())
    assert any(not torch.equal(start[name], tensor) for name, tensor in policy.named_parameters())


def test_bad_arguments_are_named():
    policy, params, result = meta_batch()
    with pytest.raises(TypeError, match="result must be a mamlbook.rl.MetaLoss"):
        trpo_step(policy, params, result.loss, max_kl=0.01)
    with pytest.raises(ValueError, match="max_kl"):
        trpo_step(policy, params, result, max_kl=0.0)
    with pytest.raises(ValueError, match="backtrack_ratio must be in"):
        trpo_step(policy, params, result, max_kl=0.01, backtrack_ratio=1.0)
    with pytest.raises(ValueError, match="cg_iterations"):
        trpo_step(policy, params, result, max_kl=0.01, cg_iterations=0)
    with pytest.raises(TypeError, match="params must be a dict of leaf tensors"):
        trpo_step(policy, {name: tensor.detach() for name, tensor in params.items()}, result, max_kl=0.01)
    with pytest.raises(ValueError, match="one support sample per inner step"):
        trpo_step(
            policy,
            params,
            result._replace(inner_loop=dataclasses.replace(result.inner_loop, rates=())),
            max_kl=0.01,
        )


def test_a_non_finite_meta_gradient_is_refused():
    policy, params, result = meta_batch()
    with pytest.raises(NonFiniteLossError, match="meta-gradient of the TRPO step is not finite"):
        trpo_step(policy, params, result._replace(loss=result.loss * float("nan")), max_kl=0.01)
