"""The outer optimiser: Adam on theta, in a few multi-tensor operations (chapter 4).

``torch.optim.Adam`` serves many options (weight decay, AMSGrad, complex and sparse
tensors, hooks, capturable and differentiable steps), none of which the outer loop
uses, and pays for them in bookkeeping on every step, a noticeable part of a small
model's meta-iteration (measured by ``benchmarks/outer_step.py``, recorded in
``benchmarks/README.md``). ``OuterAdam`` computes the same update as
``torch.optim.Adam`` with its default options (Kingma & Ba, 2015, as torch writes it)
in eight operations over all tensors at once; on the CPU the result is identical to the
last bit (``tests/test_outer.py``).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch

from ._checks import check_nonnegative_float, check_positive_float


class OuterAdam:
    """Adam for the outer loop: ``torch.optim.Adam(params, lr, betas, eps)``'s update.

    For each tensor p with gradient g, after its n-th step (m and v start at zero):

        m <- beta1 m + (1 - beta1) g,    v <- beta2 v + (1 - beta2) g^2,
        p <- p - lr / (1 - beta1^n) * m / (sqrt(v) / sqrt(1 - beta2^n) + eps).

    As in ``torch.optim.Adam``, a tensor whose ``grad`` is None is left as it is and
    its n does not advance.

    Args:
        params: the leaf tensors to train (theta, and learned inner rates), real and
            floating point, each requiring grad.
        lr: beta of the book, Adam's step size, > 0.
        betas: the decay rates of m and v, each in [0, 1).
        eps: added to the denominator, >= 0.

    Attributes:
        params: the tensors, in the order given.
        steps: n of each tensor.
        exp_avg: m of each tensor, of its shape.
        exp_avg_sq: v of each tensor, of its shape.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        for index, tensor in enumerate(self.params):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"params[{index}] must be a torch.Tensor, got {type(tensor).__name__}")
            if not (tensor.is_leaf and tensor.requires_grad and tensor.is_floating_point()):
                raise ValueError(
                    f"params[{index}] must be a real floating-point leaf tensor that requires grad, got "
                    f"dtype {tensor.dtype}, requires_grad={tensor.requires_grad}, is_leaf={tensor.is_leaf}"
                )
        if len({id(tensor) for tensor in self.params}) != len(self.params):
            raise ValueError("params lists a tensor more than once")
        self.lr = check_positive_float("lr", lr)
        if not (isinstance(betas, tuple) and len(betas) == 2):
            raise TypeError(f"betas must be a pair of numbers (beta1, beta2), got {betas!r}")
        for name, beta in zip(("betas[0]", "betas[1]"), betas, strict=True):
            if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(beta).__name__}")
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be a number in [0, 1), got {beta!r}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = check_nonnegative_float("eps", eps)
        self.steps = [0] * len(self.params)  # n of each tensor
        self.exp_avg = [
            torch.zeros_like(tensor, memory_format=torch.preserve_format) for tensor in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(tensor, memory_format=torch.preserve_format) for tensor in self.params
        ]

    def zero_grad(self) -> None:
        """Set every tensor's ``grad`` to None (``torch.optim``'s ``set_to_none=True``)."""
        for tensor in self.params:
            tensor.grad = None

    def state_dict(self) -> dict[str, list]:
        """n, m and v of each tensor, for a checkpoint."""
        return {"steps": list(self.steps), "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, list]) -> None:
        """Take n, m and v from ``state_dict()``'s output, copied onto each tensor's device."""
        if len(state["steps"]) != len(self.params):
            raise ValueError(
                f"state holds moments of {len(state['steps'])} tensors, the optimiser has {len(self.params)}"
            )
        self.steps = list(state["steps"])
        saved = [*state["exp_avg"], *state["exp_avg_sq"]]
        for mine, theirs in zip([*self.exp_avg, *self.exp_avg_sq], saved, strict=True):
            mine.copy_(theirs)

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every tensor that has a gradient."""
        stepped = [index for index, tensor in enumerate(self.params) if tensor.grad is not None]
        if not stepped:
            return
        for index in stepped:
            self.steps[index] += 1
        params = [self.params[index] for index in stepped]
        grads = [self.params[index].grad for index in stepped]
        exp_avg = [self.exp_avg[index] for index in stepped]
        exp_avg_sq = [self.exp_avg_sq[index] for index in stepped]
        torch._foreach_lerp_(exp_avg, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - self.beta2)
        denominators = torch._foreach_sqrt(exp_avg_sq)
        step_sizes, root_corrections = [], []
        for index in stepped:
            step_sizes.append(-self.lr / (1 - self.beta1 ** self.steps[index]))
            root_corrections.append((1 - self.beta2 ** self.steps[index]) ** 0.5)
        torch._foreach_div_(denominators, root_corrections)
        torch._foreach_add_(denominators, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denominators, step_sizes)
