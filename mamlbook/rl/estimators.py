"""The term the paper's meta-gradient estimator leaves out, and the DiCE operator that adds it.

MAML-RL maximises J(theta) = E_{tau ~ pi_theta} [ R(phi(theta, tau)) ], where tau are
the episodes sampled before the update, phi = theta + alpha * g_hat(theta, tau) is the
policy after one policy-gradient step on them, and R(phi) the expected return of the
adapted policy. Its gradient has two parts:

    grad J = E[ (d phi / d theta)^T grad R(phi) ]  +  E[ R(phi) * grad_theta log pi_theta(tau) ].

The paper's estimator computes the first (the policy gradient at phi, carried back
through the inner step) and leaves out the second: how the episodes that the inner
step learns from depend on theta. DiCE (Foerster et al., 2018) recovers it with the
"magic box" ``magic_box(x) = exp(x - stop_gradient(x))``, which equals 1 in value and
has gradient ``grad x``: adding ``(magic_box(log pi_theta(tau)) - 1) * R_hat`` to the
objective adds ``R_hat * grad log pi_theta(tau)`` to its gradient and nothing to its
value. Any baseline that does not depend on the task's own episodes keeps it unbiased;
``leave_one_out_mean`` gives one from the other tasks of the batch.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("paper", "dice")
"""Names of the meta-gradient estimators, the paper's and DiCE's (with the pre-update sampling term)."""


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE's operator: 1 in value, with gradient ``magic_box(x) * grad x`` (of any order)."""
    return torch.exp(x - x.detach())


def leave_one_out_mean(values: torch.Tensor) -> torch.Tensor:
    """``(T,)`` for each task, the mean of the other tasks' ``(T,)`` values (0 when T = 1)."""
    count = values.shape[0]
    if count == 1:
        return torch.zeros_like(values)
    return (values.sum() - values) / (count - 1)


def score_function_term(log_likelihood: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The missing term as a loss: -mean_t (magic_box(S_t) - 1) * (v_t - baseline_t).

    Its value is 0; its gradient is -mean_t (v_t - b_t) grad S_t, the score-function part
    of the meta-gradient of a loss that is minus the return.

    Args:
        log_likelihood: ``(T,)`` S_t, the log-likelihood of task t's pre-update episodes,
            differentiable with respect to theta.
        values: ``(T,)`` v_t, an estimate of task t's post-update return (detached here),
            in the units of the loss it is added to.
    """
    values = values.detach()
    centred = values - leave_one_out_mean(values)
    return -((magic_box(log_likelihood) - 1) * centred).mean()
