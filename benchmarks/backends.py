"""Time ``mamlbook.maml_loss`` on each of its backends, side by side in one run.

The same forward and backward pass of one second-order meta-iteration (no outer step),
for every backend of ``mamlbook.backends`` that computes the setting, interleaved in
rounds by ``mamlbook.profiling.time_calls``: ``sinusoid`` (the MLP 1-40-40-1, 25 tasks of
10 support and 10 query points, alpha = 0.01, MSE) and ``omniglot`` (``Conv4`` with 64
filters, 32 tasks of 5-way 1-shot with 15 queries per class, alpha = 0.4,
cross-entropy, random Omniglot-shaped images). Before timing, every backend's
meta-gradient is compared in float64 with the ``loop`` backend's; the script exits with
status 1 if one differs by more than 1e-10. It prints the medians and each backend's
time over the fastest; it asserts nothing about time. This is what decides
``backend="auto"``'s order (``benchmarks/README.md``).

Run from the repository root::

    .venv/bin/python benchmarks/backends.py --setting sinusoid --repeats 200
    .venv/bin/python benchmarks/backends.py --setting omniglot --repeats 5
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import mamlbook as mb

GRADIENT_TOLERANCE = 1e-10


def setting(name: str, dtype: torch.dtype, num_tasks: int | None = None):
    """(model, batch, loss_fn, inner_lr) of the paper's ``name`` setting, seeded."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if name == "sinusoid":
            model = mb.models.MLP(1).to(dtype)
            batch = mb.tasks.Sinusoid().sample(num_tasks or 25, 10, 10, generator=generator)
            return model, mb.TaskBatch(*(t.to(dtype) for t in batch)), F.mse_loss, 0.01
        model = mb.models.Conv4(n_way=5).to(dtype)
    tasks, labels = num_tasks or 32, torch.arange(5)

    def images(per_class: int) -> torch.Tensor:
        return torch.rand(tasks, 5 * per_class, 1, 28, 28, generator=generator, dtype=dtype)

    batch = mb.TaskBatch(
        images(1), labels.repeat(tasks, 1), images(15), labels.repeat_interleave(15).repeat(tasks, 1)
    )
    return model, batch, F.cross_entropy, 0.4


def accepting(model, params, batch, loss_fn, inner_lr) -> list[str]:
    """The backends that compute this setting, in the order of ``mamlbook.backends.BACKENDS``."""
    loop = mb.InnerLoop.of(params, inner_lr=inner_lr, inner_steps=1)
    problem = mb.backends.Problem(
        "maml_loss", model, params, loss_fn, loop, (batch.support_x, batch.query_x), batch
    )
    return [name for name, backend in mb.backends.BACKENDS.items() if backend.refusal(problem) is None]


def gradient_differences(name: str, backends: list[str]) -> dict[str, float]:
    """Each backend's largest meta-gradient difference from the loop backend's, in float64 (4 tasks)."""
    model, batch, loss_fn, inner_lr = setting(name, torch.float64, num_tasks=4)
    params = {key: tensor.detach().clone().requires_grad_() for key, tensor in model.named_parameters()}

    def meta_gradient(backend: str) -> list[torch.Tensor]:
        loss = mb.maml_loss(
            model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=1, backend=backend
        )
        return list(torch.autograd.grad(loss, list(params.values())))

    expected = meta_gradient("loop")
    return {
        backend: max(
            float((got - want).abs().max())
            for got, want in zip(meta_gradient(backend), expected, strict=True)
        )
        for backend in backends
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["sinusoid", "omniglot"], default="sinusoid")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls of each backend (default 100)")
    args = parser.parse_args(argv)
    model, batch, loss_fn, inner_lr = setting(args.setting, torch.float32)
    params = dict(model.named_parameters())
    backends = accepting(model, params, batch, loss_fn, inner_lr)
    differences = gradient_differences(args.setting, backends)
    for backend, difference in differences.items():
        print(f"{backend:>12}: meta-gradient differs from the loop's by {difference:.1e} (float64)")
    if max(differences.values()) > GRADIENT_TOLERANCE:
        print("a backend's meta-gradient differs from the loop's: nothing timed", file=sys.stderr)
        return 1

    def step(backend: str):
        def run() -> None:
            model.zero_grad(set_to_none=True)
            mb.maml_loss(
                model, params, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=1, backend=backend
            ).backward()

        return run

    timings = mb.profiling.time_calls([step(backend) for backend in backends], repeats=args.repeats, warmup=3)
    fastest = min(timing.median for timing in timings)
    print(
        f"{args.setting}, {torch.get_num_threads()} thread(s), {args.repeats} rounds, forward and backward:"
    )
    print(f"{'backend':>12} {'median ms':>10} {'min-max ms':>16} {'x fastest':>10}")
    for backend, timing in zip(backends, timings, strict=True):
        spread = f"{1e3 * timing.min:.2f}-{1e3 * timing.max:.2f}"
        print(f"{backend:>12} {1e3 * timing.median:10.2f} {spread:>16} {timing.median / fastest:10.2f}")
    chosen = mb.backends.choose_backend(
        "auto",
        mb.backends.Problem(
            "maml_loss",
            model,
            params,
            loss_fn,
            mb.InnerLoop.of(params, inner_lr=inner_lr, inner_steps=1),
            (batch.support_x, batch.query_x),
            batch,
        ),
    )
    print(f'backend="auto" takes {chosen.name}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
