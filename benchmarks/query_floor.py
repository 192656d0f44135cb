"""How close the Omniglot Conv4 meta-iteration is to the cost of its query pass alone.

Most of a second-order MAML meta-iteration on the Omniglot setting of
``meta_iteration.py`` (``Conv4``, 32 tasks of 5-way 1-shot with 15 queries per class) is
the query pass: 2,400 images forward and backward through the adapted networks, the same
arithmetic however the tasks are arranged. This script times, interleaved in rounds,

1. ``maml_loss``: ``mamlbook.maml_loss`` and its backward pass, on that batch;
2. ``query/B``: a plain (non-meta) forward and backward pass of one shared ``Conv4`` over
   the batch's 2,400 query images, in batches of B images (``--batch-sizes``),

and prints the median milliseconds of each (``mamlbook.profiling.time_calls``). No
optimiser step is taken. The smallest ``query/B`` is a floor for any implementation that
runs the query images through these convolution kernels: a meta-iteration ``s`` times
faster than a peer's needs to fit in the peer's time over ``s``.

Run from the repository root::

    .venv/bin/python benchmarks/query_floor.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import mamlbook as mb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_iteration import (  # noqa: E402  (benchmarks/meta_iteration.py)
    PROBLEMS,
    int_at_least,
    seeded_model_and_batch,
)


def timed_calls(
    problem_name: str, meta_batch_size: int, batch_sizes: list[int]
) -> tuple[dict[str, Callable[[], None]], int]:
    """One call per measured pass (``maml_loss`` with its backward, and each plain query
    pass), and the number of query images."""
    problem = PROBLEMS[problem_name]
    model, batch = seeded_model_and_batch(problem_name, meta_batch_size, seed=0, device="cpu")
    params = dict(model.named_parameters())
    images = batch.query_x.flatten(0, 1)  # (T * Q, C, H, W)
    labels = batch.query_y.flatten(0, 1)

    def meta_iteration() -> None:
        loss = mb.maml_loss(
            model, params, batch, loss_fn=problem.loss_fn, inner_lr=problem.inner_lr, inner_steps=1
        )
        torch.autograd.grad(loss, list(params.values()))

    def query_pass(size: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, len(images), size):
                loss = F.cross_entropy(model(images[start : start + size]), labels[start : start + size])
                torch.autograd.grad(loss, list(params.values()))

        return run

    calls = {"maml_loss": meta_iteration, **{f"query/{size}": query_pass(size) for size in batch_sizes}}
    return calls, len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int_at_least(1), default=6, help="timed rounds (default 6)")
    parser.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed rounds (default 1)")
    parser.add_argument(
        "--meta-batch-size", type=int_at_least(1), default=32, help="tasks T (default 32, the paper's)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int_at_least(1),
        nargs="+",
        default=[75, 300, 2400],
        help="images per plain query pass (default 75 300 2400: one task, four, all 32)",
    )
    args = parser.parse_args(argv)
    calls, num_images = timed_calls("omniglot", args.meta_batch_size, args.batch_sizes)
    timings = mb.profiling.time_calls(list(calls.values()), repeats=args.repeats, warmup=args.warmup)
    print(
        f"Omniglot Conv4, T={args.meta_batch_size}: maml_loss against a plain forward and backward pass "
        f"over its {num_images} query images; threads {torch.get_num_threads()}, "
        f"{args.warmup} warm-up + {args.repeats} timed rounds, interleaved"
    )
    for name, seconds in zip(calls, timings, strict=True):
        median, fastest, slowest = (1e3 * value for value in seconds)
        print(f"{name:<12}{median:>10.1f} ms median{fastest:>10.1f} min{slowest:>10.1f} max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
