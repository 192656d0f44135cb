"""MAML on models and losses the package was not written for, against per-task loops, in float64.

The paper's claim is that any module and any differentiable per-task loss will do. Each test
checks the meta-loss and the meta-gradient, second order and first order, against a loop
over tasks: ``mamlbook.reference``, or for a loss that is not ``loss_fn(model(x), y)``, a
loop written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

import mamlbook as mb

EXACT = {"atol": 1e-10, "rtol": 1e-10}
INNER_LR, STEPS = 0.1, 2
NUM_TASKS, NUM_SUPPORT, NUM_QUERY, LENGTH = 3, 4, 5, 6
VMAP_FALLBACK = "torch.func.vmap cannot batch this loss"


class GRURegressor(nn.Module):
    """A GRU over a sequence ``(K, L, d)`` and a linear head on its last hidden state: ``(K, 1)``."""

    def __init__(self, features: int = 2, hidden: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.gru(x)  # (K, L, hidden)
        return self.head(outputs[:, -1])


class SelfAttention(nn.Module):
    """One head of softmax(q k^T / sqrt(d)) v, written out."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(features, 3 * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (K, L, d) each
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1]), dim=-1)  # (K, L, L)
        return weights @ v


class TorchSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as self-attention."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(features, num_heads=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.attention(x, x, x, need_weights=False)
        return outputs


class AttentionRegressor(nn.Module):
    """A pre-norm attention block, ``x + attention(norm(x))``, mean-pooled over the sequence
    ``(K, L, d)`` into a linear head: ``(K, 1)``."""

    def __init__(self, attention: Callable[[int], nn.Module], features: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.attention = attention(features)
        self.head = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm(x))  # (K, L, d)
        return self.head(x.mean(dim=1))


class ResidualMLP(nn.Module):
    """``x + tanh(W2 tanh(W1 x))`` and a linear head: ``(K, d)`` -> ``(K, 1)``."""

    def __init__(self, features: int = 3, hidden: int = 5) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, features), nn.Tanh()
        )
        self.head = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.block(x))


def random_batch(input_shape: tuple[int, ...], seed: int = 0) -> mb.TaskBatch:
    """Random inputs ``(T, K, *input_shape)`` and targets ``(T, K, 1)``, float64."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return mb.TaskBatch(
        randn(NUM_TASKS, NUM_SUPPORT, *input_shape),
        randn(NUM_TASKS, NUM_SUPPORT, 1),
        randn(NUM_TASKS, NUM_QUERY, *input_shape),
        randn(NUM_TASKS, NUM_QUERY, 1),
    )


def value_and_grad(loss: torch.Tensor, params: mb.Params) -> tuple[torch.Tensor, mb.Params]:
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach(), dict(zip(params, grads, strict=True))


def assert_matches_oracle_in_both_orders(
    meta_loss: Callable[[bool], torch.Tensor], oracle: Callable[[bool], torch.Tensor], params: mb.Params
) -> None:
    """``meta_loss(first_order)`` equals ``oracle(first_order)`` in value and gradient with
    respect to ``params`` for both orders; every gradient is nonzero and the orders differ."""
    grads = {}
    for first_order in (False, True):
        value, grad = value_and_grad(meta_loss(first_order), params)
        expected_value, expected_grad = value_and_grad(oracle(first_order), params)
        torch.testing.assert_close(value, expected_value, **EXACT)
        for name in params:
            torch.testing.assert_close(
                grad[name], expected_grad[name], **EXACT, msg=lambda m, n=name: f"{n}: {m}"
            )
            assert grad[name].abs().max() > 0, f"{name} has no meta-gradient"
        grads[first_order] = grad
    difference = max(float((grads[False][name] - grads[True][name]).abs().max()) for name in params)
    assert difference > 1e-6


def supervised_oracle(
    model: nn.Module, params: mb.Params, batch: mb.TaskBatch
) -> Callable[[bool], torch.Tensor]:
    def oracle(first_order: bool) -> torch.Tensor:
        return mb.reference.maml_loss(
            model,
            params,
            batch,
            loss_fn=F.mse_loss,
            inner_lr=INNER_LR,
            inner_steps=STEPS,
            first_order=first_order,
        )

    return oracle


def test_recurrent_model_runs_its_tasks_one_at_a_time_with_a_warning(make_model, theta):
    model = make_model(GRURegressor)
    params, batch = theta(model), random_batch((LENGTH, 2))

    def meta_loss(first_order):
        with pytest.warns(RuntimeWarning, match=VMAP_FALLBACK) as caught:
            loss = mb.maml_loss(
                model,
                params,
                batch,
                loss_fn=F.mse_loss,
                inner_lr=INNER_LR,
                inner_steps=STEPS,
                first_order=first_order,
            )
        assert len(caught) == 1  # once per call: the query losses do not try vmap again
        return loss

    assert_matches_oracle_in_both_orders(meta_loss, supervised_oracle(model, params, batch), params)


def test_recurrent_model_on_the_loop_backend_equals_reference(make_model, theta):
    model = make_model(GRURegressor)
    params, batch = theta(model), random_batch((LENGTH, 2))

    def meta_loss(first_order):
        return mb.maml_loss(
            model,
            params,
            batch,
            loss_fn=F.mse_loss,
            inner_lr=INNER_LR,
            inner_steps=STEPS,
            first_order=first_order,
            backend="loop",
        )

    assert_matches_oracle_in_both_orders(meta_loss, supervised_oracle(model, params, batch), params)


@pytest.mark.parametrize("attention", [SelfAttention, TorchSelfAttention])
def test_attention_model_with_layer_norm_equals_reference(make_model, theta, attention):
    model = make_model(lambda: AttentionRegressor(attention))
    params, batch = theta(model), random_batch((LENGTH, 4))

    def meta_loss(first_order):
        return mb.maml_loss(
            model,
            params,
            batch,
            loss_fn=F.mse_loss,
            inner_lr=INNER_LR,
            inner_steps=STEPS,
            first_order=first_order,
        )

    # The CPU's flash attention kernel has no second derivative: nn.MultiheadAttention
    # needs the math kernel for second-order MAML, in the package and the reference alike.
    with sdpa_kernel(SDPBackend.MATH):
        assert_matches_oracle_in_both_orders(meta_loss, supervised_oracle(model, params, batch), params)


def test_residual_model_equals_reference(make_model, theta):
    model = make_model(ResidualMLP)
    params, batch = theta(model), random_batch((3,))

    def meta_loss(first_order):
        return mb.maml_loss(
            model,
            params,
            batch,
            loss_fn=F.mse_loss,
            inner_lr=INNER_LR,
            inner_steps=STEPS,
            first_order=first_order,
        )

    assert_matches_oracle_in_both_orders(meta_loss, supervised_oracle(model, params, batch), params)


SIGMA = 0.5


def policy_gradient_surrogate(
    policy: nn.Module,
    params: mb.Params,
    states: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
) -> torch.Tensor:
    """-mean(advantage * log N(action; policy(state), SIGMA^2 I)) of one task's ``(N, s)``
    states, ``(N, a)`` actions and ``(N,)`` advantages."""
    means = functional_call(policy, params, (states,))  # (N, a)
    log_probs = (-0.5 * ((actions - means) / SIGMA) ** 2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    return -(advantages * log_probs).mean()


def rollouts(seed: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``NUM_TASKS`` tasks' states ``(T, N, 2)``, actions ``(T, N, 2)`` and advantages ``(T, N)``."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return randn(NUM_TASKS, num_samples, 2), randn(NUM_TASKS, num_samples, 2), randn(NUM_TASKS, num_samples)


def surrogate_maml_by_hand(policy, params, support, query, *, first_order):
    """Per task: ``STEPS`` gradient steps on the support surrogate, then the query surrogate; the mean."""
    total = 0.0
    for t in range(NUM_TASKS):
        adapted = dict(params)
        for _ in range(STEPS):
            loss = policy_gradient_surrogate(policy, adapted, *(data[t] for data in support))
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = {name: p - INNER_LR * g for (name, p), g in zip(adapted.items(), grads, strict=True)}
        total = total + policy_gradient_surrogate(policy, adapted, *(data[t] for data in query))
    return total / NUM_TASKS


@pytest.mark.parametrize("task_losses", [mb.inner.vmapped, mb.inner.looped])
def test_policy_gradient_surrogate_equals_loop_by_hand(make_model, theta, task_losses):
    policy = make_model(lambda: nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)))
    params = theta(policy)
    support, query = rollouts(seed=0, num_samples=NUM_SUPPORT), rollouts(seed=1, num_samples=NUM_QUERY)

    def one_task(task_params, states, actions, advantages):
        return policy_gradient_surrogate(policy, task_params, states, actions, advantages)

    def meta_loss(first_order):
        loop = mb.InnerLoop.of(params, inner_lr=INNER_LR, inner_steps=STEPS, first_order=first_order)
        return mb.meta.meta_objective(
            params, task_losses(one_task, *support), task_losses(one_task, *query), loop, num_tasks=NUM_TASKS
        )

    def oracle(first_order):
        return surrogate_maml_by_hand(policy, params, support, query, first_order=first_order)

    assert_matches_oracle_in_both_orders(meta_loss, oracle, params)
