"""One machine's cores as one process or as several: the time of a meta-iteration, and its meta-gradient.

The Omniglot setting of the paper (section 5.2): ``Conv4`` with 64 filters, 5-way 1-shot
episodes with 15 query images per class, T = 32 tasks, one second-order inner step with
alpha = 0.4, Adam with beta = 1e-3, on the real Omniglot training classes. Each
configuration runs ``mamlbook.meta_train`` as a user would:

- ``1 process x N threads``: one process, ``torch.set_num_threads(N)``;
- ``N processes x 1 thread``: ``torchrun --standalone --nproc_per_node N``, one thread
  each, each process computing T / N of the tasks (``mamlbook.distributed``).

A meta-iteration's time is the time between two calls of the task sampler in rank 0:
sampling the whole meta-batch, the share's meta-gradient, the all-reduce and the Adam step.
After training, rank 0 also times two parts alone: drawing a meta-batch, and (with several
processes) one all-reduce of a buffer the size of theta.
The configurations are launched in turn, ``--rounds`` times, each a fresh process (or
group) that trains ``--warmup`` untimed and ``--iterations`` timed meta-iterations;
the figures are medians over all timed iterations of all rounds.

Each configuration also takes one meta-iteration from the same theta on the same tasks,
in float32 and in float64, and the largest difference between its meta-gradient and the
one-process one is reported, absolute and relative to the largest entry. Nothing here
asserts on a time. Run from the repository root::

    .venv/bin/python benchmarks/distributed.py --omniglot-root ../shared/data/omniglot \\
        --json benchmarks/results/distributed_cpu.json --markdown benchmarks/results/distributed_cpu.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import Conv4
from mamlbook.reproduce import environment

CONFIG = mb.MetaTrainConfig(iterations=1, meta_batch_size=32, inner_lr=0.4, inner_steps=1, outer_lr=1e-3)
"""The paper's Omniglot 5-way 1-shot meta-iteration; ``iterations`` is set per run."""

EPISODES = {"n_way": 5, "k_shot": 1, "n_query": 15}


def training_tasks(omniglot_root: Path, dtype: torch.dtype):
    """The training classes' 5-way 1-shot episodes, sampled in ``dtype``."""
    from mamlbook.data import load_omniglot, split_omniglot

    tasks = mb.tasks.FewShotClassification(*split_omniglot(load_omniglot(omniglot_root)).train, **EPISODES)

    def sample(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
        batch = tasks.sample(num_tasks, generator=generator)
        return batch._replace(support_x=batch.support_x.to(dtype), query_x=batch.query_x.to(dtype))

    return sample


def seeded_model(dtype: torch.dtype) -> Conv4:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Conv4(n_way=EPISODES["n_way"]).to(dtype)


def worker(mode: str, out: Path, omniglot_root: Path, iterations: int, threads: int) -> None:
    """Inside one configuration: ``time`` trains ``iterations`` and writes rank 0's sampler
    times; ``gradient`` takes one meta-iteration in float32 and float64 and writes rank 0's
    meta-gradients."""
    torch.set_num_threads(threads)
    if mode == "time":
        stamps = []
        sample = training_tasks(omniglot_root, torch.float32)

        def timed_sample(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
            stamps.append(time.perf_counter())
            return sample(num_tasks, generator=generator)

        config = dataclasses.replace(CONFIG, iterations=iterations)
        model = seeded_model(torch.float32)
        mb.meta_train(
            model,
            timed_sample,
            config,
            loss_fn=F.cross_entropy,
            device="cpu",
            progress=False,
        )
        stamps.append(time.perf_counter())
        result = {
            "seconds": [after - before for before, after in zip(stamps, stamps[1:], strict=False)],
            "parts": parts_of_an_iteration(
                sample, torch.cat([p.detach().flatten() for p in model.parameters()])
            ),
        }
    else:
        result = {}
        for dtype in (torch.float32, torch.float64):
            model = seeded_model(dtype)
            mb.meta_train(
                model,
                training_tasks(omniglot_root, dtype),
                CONFIG,
                loss_fn=F.cross_entropy,
                device="cpu",
                progress=False,
            )
            result[str(dtype)] = {name: tensor.grad for name, tensor in model.named_parameters()}
    if mb.distributed.launch_rank() == 0:
        result["environment"] = environment(torch.device("cpu"))
        torch.save(result, out)


def parts_of_an_iteration(sample, theta: torch.Tensor, repeats: int = 10) -> dict[str, float]:
    """Median seconds of two parts of a meta-iteration: drawing the whole meta-batch, and (with
    several processes) one all-reduce of a buffer the size of theta."""
    generator = torch.Generator().manual_seed(1)
    sampling = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(CONFIG.meta_batch_size, generator=generator)
        sampling.append(time.perf_counter() - start)
    parts = {"sample_meta_batch": statistics.median(sampling)}
    if torch.distributed.is_initialized():
        buffer, reducing = torch.zeros(theta.numel() + 2), []
        for _ in range(repeats):
            torch.distributed.barrier()
            start = time.perf_counter()
            torch.distributed.all_reduce(buffer)
            reducing.append(time.perf_counter() - start)
        parts["all_reduce"] = statistics.median(reducing)
    return parts


def launch(
    mode: str, processes: int, threads: int, omniglot_root: Path, iterations: int
) -> dict[str, object]:
    """Run ``worker`` in one configuration and return what rank 0 wrote."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder, "result.pt")
        arguments = [__file__, "--worker", mode, str(out), "--omniglot-root", str(omniglot_root)]
        arguments += ["--iterations", str(iterations), "--threads", str(threads)]
        if processes == 1:
            command = [sys.executable, *arguments]
        else:
            torchrun = Path(sys.executable).with_name("torchrun")
            command = [str(torchrun), "--standalone", "--nproc_per_node", str(processes), *arguments]
        environment_ = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, env=environment_, check=True, capture_output=True, text=True)
        return torch.load(out, weights_only=False)


def largest_difference(
    grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, float]:
    absolute = max(float((grads[name] - reference[name]).abs().max()) for name in reference)
    largest = max(float(tensor.abs().max()) for tensor in reference.values())
    return {"max_abs": absolute, "max_relative": absolute / largest}


def measure(args: argparse.Namespace) -> dict[str, object]:
    from mamlbook.data import load_omniglot

    load_omniglot(args.omniglot_root)  # the processes then read the cache rather than all write it
    cores = args.processes
    configurations = {f"1 process x {cores} threads": (1, cores), f"{cores} processes x 1 thread": (cores, 1)}
    seconds = {name: [] for name in configurations}
    parts = {name: [] for name in configurations}
    for round_ in range(args.rounds):
        for name, (processes, threads) in configurations.items():
            result = launch("time", processes, threads, args.omniglot_root, args.warmup + args.iterations)
            timed = result["seconds"][args.warmup :]
            seconds[name] += timed
            parts[name].append(result["parts"])
            print(f"round {round_ + 1}: {name}: median {statistics.median(timed):.3f} s")
    gradients = {
        name: launch("gradient", *shape, args.omniglot_root, 1) for name, shape in configurations.items()
    }
    single, shared = gradients.values()
    differences = {
        dtype: largest_difference(shared[dtype], single[dtype])
        for dtype in ("torch.float32", "torch.float64")
    }
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    one, several = medians.values()
    return {
        "setting": {
            **EPISODES,
            "meta_batch_size": CONFIG.meta_batch_size,
            "inner_lr": CONFIG.inner_lr,
            "model": "Conv4, 64 filters",
        },
        "rounds": args.rounds,
        "iterations_per_round": args.iterations,
        "seconds": seconds,
        "median_seconds": medians,
        "parts_median_seconds": {
            name: {part: statistics.median(run[part] for run in runs) for part in runs[0]}
            for name, runs in parts.items()
        },
        "speedup": one / several,
        "meta_gradient_difference": differences,
        "environment": {**shared["environment"], "cores": os.cpu_count()},
    }


def markdown(record: dict[str, object]) -> str:
    """The record as the appendix's table."""
    lines = [
        "| configuration | s per meta-iteration | drawing the meta-batch, s | all-reduce, s | iterations |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, median in record["median_seconds"].items():
        parts = record["parts_median_seconds"][name]
        reduce = f"{parts['all_reduce']:.4f}" if "all_reduce" in parts else "none"
        iterations = len(record["seconds"][name])
        lines.append(
            f"| {name} | {median:.3f} | {parts['sample_meta_batch']:.4f} | {reduce} | {iterations} |"
        )
    difference = record["meta_gradient_difference"]
    lines += [
        "",
        f"Speed-up of the processes over the threads: {record['speedup']:.2f}x. Largest difference of the "
        f"meta-gradient from one process's: {difference['torch.float32']['max_abs']:.1e} in float32 "
        f"({difference['torch.float32']['max_relative']:.1e} of its largest entry), "
        f"{difference['torch.float64']['max_abs']:.1e} in float64.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--omniglot-root", type=Path, default=Path("../shared/data/omniglot"))
    parser.add_argument("--processes", type=int, default=2, help="N, the cores to use (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="launches of each configuration (default 3)")
    parser.add_argument(
        "--iterations", type=int, default=10, help="timed meta-iterations per launch (default 10)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed meta-iterations first (default 2)")
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--markdown", type=Path, help="write the appendix's table here")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), args.omniglot_root, args.iterations, args.threads)
        return 0
    record = measure(args)
    print(markdown(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
