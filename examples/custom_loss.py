"""MAML on a loss that is not ``loss_fn(model(x), y)``: a policy that learns to reach a goal.

Each task hides a goal g in the plane. A policy maps a state s to the mean of a
Gaussian action, and a task's cost is the expected squared distance from where the
action leads to the goal, ||s + policy(s) + sigma * noise - g||^2, averaged over sampled
states and noise (the reparameterised cost of a one-step control problem). The policy
never sees g: it must find it from the cost of a few samples, by MAML's inner steps.

Any differentiable per-task loss works the same way: write the loss of one task as a
function of the parameters and the task's data, make it T tasks' losses with
``mamlbook.inner.vmapped``, and hand the support and query losses to
``mamlbook.meta.meta_objective``. The outer loop here is a plain ``torch.optim.Adam``.

Run it from the repository root::

    python examples/custom_loss.py                  # about ten seconds on a laptop CPU
    python examples/custom_loss.py --iterations 50
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.func import functional_call

import mamlbook as mb

SIGMA = 0.3
"""The standard deviation of the action noise; the least expected cost is 2 * SIGMA**2."""


def reach_cost(
    policy: nn.Module, params: mb.Params, states: torch.Tensor, noise: torch.Tensor, goal: torch.Tensor
) -> torch.Tensor:
    """One task's cost: mean ||s + policy(s) + SIGMA * noise - goal||^2 over ``(N, 2)`` states and noise."""
    actions = functional_call(policy, params, (states,)) + SIGMA * noise  # (N, 2)
    return ((states + actions - goal) ** 2).sum(dim=-1).mean()


def sample_tasks(num_tasks: int, num_samples: int, generator: torch.Generator):
    """Goals ``(T, 2)``; support and query states and noise, ``(T, N, 2)`` each."""

    def uniform(*shape):
        return 2 * torch.rand(*shape, generator=generator) - 1

    goals = uniform(num_tasks, 2)
    support = uniform(num_tasks, num_samples, 2), torch.randn(num_tasks, num_samples, 2, generator=generator)
    query = uniform(num_tasks, num_samples, 2), torch.randn(num_tasks, num_samples, 2, generator=generator)
    return goals, support, query


def meta_loss(policy, params, tasks, loop):
    """The mean query cost over the tasks, each after ``loop``'s inner steps on its support cost."""
    goals, (support_states, support_noise), (query_states, query_noise) = tasks

    def one_task(task_params, states, noise, goal):
        return reach_cost(policy, task_params, states, noise, goal)

    return mb.meta.meta_objective(
        params,
        mb.inner.vmapped(one_task, support_states, support_noise, goals),
        mb.inner.vmapped(one_task, query_states, query_noise, goals),
        loop,
        num_tasks=len(goals),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300, help="meta-training iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the tensors are tiny: more threads only contend
    torch.manual_seed(args.seed)  # the policy's initialisation
    generator = torch.Generator().manual_seed(args.seed)
    policy = mb.models.MLP(2, (32, 32), 2)
    params = dict(policy.named_parameters())
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=2)
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    report_every = max(1, args.iterations // 10)
    losses = []
    for iteration in range(1, args.iterations + 1):
        loss = meta_loss(policy, params, sample_tasks(16, 10, generator), loop)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if iteration == 1 or iteration % report_every == 0:
            recent = losses[-report_every:]
            print(f"iteration {iteration:5d}: meta-loss {sum(recent) / len(recent):.3f}")

    theta = {name: tensor.detach() for name, tensor in params.items()}
    new_tasks = sample_tasks(200, 10, torch.Generator().manual_seed(args.seed + 1))
    before = meta_loss(policy, theta, new_tasks, mb.InnerLoop.of(theta, inner_lr=0.1, inner_steps=0))
    after = meta_loss(policy, theta, new_tasks, loop)
    print(f"cost on 200 new goals before adapting: {before.item():.3f}")
    print(f"cost on 200 new goals after {loop.steps} steps:    {after.item():.3f}")
    print(f"the least possible cost:                {2 * SIGMA**2:.3f}")


if __name__ == "__main__":
    main()
