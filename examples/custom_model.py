"""Meta-train a model the package has never seen: a residual MLP on the MAML paper's sinusoids.

MAML needs nothing from a model but that ``torch.func.functional_call`` can run it, so
any ``nn.Module`` works, here one whose forward adds skip connections. The script
meta-trains it with ``mamlbook.meta_train``, then adapts it to new sinusoids with
``mamlbook.evaluate`` and compares it with the same network freshly initialised.

Run it from the repository root::

    python examples/custom_model.py                 # about half a minute on a laptop CPU
    python examples/custom_model.py --iterations 50
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import mamlbook as mb


class ResidualMLP(nn.Module):
    """``(..., 1)`` -> ``(..., 1)``: a linear stem, residual blocks ``h + W2 relu(W1 h)``, a linear head."""

    def __init__(self, hidden: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(1, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(blocks)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)  # the skip connection
        return self.head(torch.relu(h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="meta-training iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the tensors are tiny: more threads only contend
    torch.manual_seed(args.seed)  # the model's initialisation
    model, untrained = ResidualMLP(), ResidualMLP()
    tasks = mb.tasks.Sinusoid()
    config = mb.MetaTrainConfig(
        iterations=args.iterations,
        meta_batch_size=10,
        inner_lr=0.01,
        inner_steps=1,
        outer_lr=3e-3,
        seed=args.seed,
    )
    history = mb.meta_train(
        model,
        tasks.sample,  # 10 support and 10 query points per task
        config,
        loss_fn=F.mse_loss,
        device="cpu",
        progress=False,
    )
    window = max(1, args.iterations // 10)
    print(f"meta-loss, mean of the first {window} iterations: {history.meta_losses[:window].mean():.3f}")
    print(f"meta-loss, mean of the last {window} iterations:  {history.meta_losses[-window:].mean():.3f}")
    print(f"trained in {history.seconds:.1f} s")

    new_tasks = tasks.sample(200, 10, 50, generator=torch.Generator().manual_seed(args.seed + 1))
    for name, network in (("meta-trained", model), ("untrained", untrained)):
        result = mb.evaluate(
            network,
            dict(network.named_parameters()),
            new_tasks,
            loss_fn=F.mse_loss,
            inner_lr=0.01,
            inner_steps=10,
        )
        print(f"query MSE on 200 new sinusoids, {name} model, adapted on 10 points:")
        print(result.summary(steps=(0, 1, 10)))


if __name__ == "__main__":
    main()
