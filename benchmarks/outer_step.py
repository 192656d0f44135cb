"""The cost of the outer Adam step alone: ``torch.optim.Adam`` against ``OuterAdam``.

For the parameters of each of the paper's networks (``--setting``: the sinusoid MLP,
six tensors; Conv4 with 64 filters, fourteen) this script gives both optimisers the
same gradients, times their ``step()`` calls interleaved in rounds
(``mamlbook.profiling.time_calls``), and prints the median microseconds of each. It then
checks that the two sets of parameters are equal to the last bit (``torch.equal``) and
exits with status 1 if they are not; no time is asserted.

Run from the repository root::

    .venv/bin/python benchmarks/outer_step.py --setting sinusoid
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

import mamlbook as mb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_iteration import (  # noqa: E402  (benchmarks/meta_iteration.py)
    OUTER_LR,
    PROBLEMS,
    int_at_least,
    seeded_model_and_batch,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(PROBLEMS), default="sinusoid")
    parser.add_argument("--repeats", type=int_at_least(1), default=2000, help="timed rounds (default 2000)")
    parser.add_argument("--warmup", type=int_at_least(0), default=100, help="untimed rounds (default 100)")
    args = parser.parse_args(argv)

    model, _ = seeded_model_and_batch(args.setting, 1, seed=0, device="cpu")
    tensors = {"torch.optim.Adam": list(model.parameters())}
    tensors["OuterAdam"] = list(copy.deepcopy(model).parameters())
    optimizers = {
        "torch.optim.Adam": torch.optim.Adam(tensors["torch.optim.Adam"], lr=OUTER_LR),
        "OuterAdam": mb.outer.OuterAdam(tensors["OuterAdam"], lr=OUTER_LR),
    }
    generator = torch.Generator().manual_seed(0)
    for theirs, ours in zip(tensors["torch.optim.Adam"], tensors["OuterAdam"], strict=True):
        theirs.grad = torch.randn(theirs.shape, generator=generator)
        ours.grad = theirs.grad.clone()
    timings = mb.profiling.time_calls(
        [optimizer.step for optimizer in optimizers.values()], repeats=args.repeats, warmup=args.warmup
    )
    num_values = sum(tensor.numel() for tensor in tensors["OuterAdam"])
    print(
        f"outer Adam step, {args.setting} ({len(tensors['OuterAdam'])} tensors, {num_values:,} values), "
        f"threads {torch.get_num_threads()}, {args.warmup} warm-up + {args.repeats} timed rounds, interleaved"
    )
    medians = {name: 1e6 * timing.median for name, timing in zip(optimizers, timings, strict=True)}
    for name, microseconds in medians.items():
        print(f"{name:<18}{microseconds:>10.1f} us median")
    print(f"torch.optim.Adam / OuterAdam: {medians['torch.optim.Adam'] / medians['OuterAdam']:.2f}x")
    equal = all(
        torch.equal(theirs, ours)
        for theirs, ours in zip(tensors["torch.optim.Adam"], tensors["OuterAdam"], strict=True)
    )
    print(f"parameters after {args.warmup + args.repeats} steps equal to the last bit: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
