"""Time one second-order MAML meta-iteration three ways, in one run.

The setting is the paper's sinusoid regression (Finn et al., 2017, section 5.1): the
MLP 1-40-40-1, T = 25 tasks, K = 10 support and 10 query points per task, one inner
SGD step with alpha = 0.01, second-order meta-gradient, MSE loss, and an outer Adam
step. A meta-iteration is forward, backward and the Adam step; sampling the tasks is
not timed (one fixed batch is reused). The three methods are

1. ``maml_loss``: ``mamlbook.maml_loss``, vectorised over tasks (batched tensor operations
   for known layers, ``torch.func.vmap`` otherwise);
2. ``loop``: a per-task Python loop with ``torch.autograd.grad(create_graph=True)`` and
   ``torch.func.functional_call``, the usual way MAML is written;
3. ``plain``: a plain (non-meta) Adam step on the same T x (K + Q) points, flattened,
   with the same network: the floor a meta-iteration is compared with.

Before timing, the meta-gradients of 1 and 2 are compared in float64 on a copy of the
model; the script exits with an error if they differ by more than 1e-10. The methods
are then interleaved in rounds (the order rotated each round) so that the noise of a
shared machine falls on all three alike. Nothing here asserts on a time.

Run from the repository root::

    .venv/bin/python benchmarks/meta_iteration.py --json benchmarks/results/meta_iteration_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import mamlbook as mb

INNER_LR = 0.01  # alpha, the paper's
OUTER_LR = 1e-3  # beta, the paper's (Adam)
NUM_SUPPORT = 10  # K
NUM_QUERY = 10
GRADIENT_TOLERANCE = 1e-10  # max abs difference allowed between the two meta-gradients (float64)
SPEEDUP_TARGET = 5.0  # the target for loop / maml_loss
METHODS = ("maml_loss", "loop", "plain")
DESCRIPTIONS = {
    "maml_loss": "mamlbook.maml_loss (batched over tasks)",
    "loop": "per-task loop (autograd.grad)",
    "plain": "plain Adam step (no meta)",
}

StepFn = Callable[[], None]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run of the benchmark measures.

    Attributes:
        meta_batch_size: T, tasks per meta-iteration.
        inner_steps: inner SGD steps per task.
        warmup: untimed rounds before timing.
        repeats: timed rounds; each round runs every method once.
        device: the device the methods run on, e.g. ``"cpu"`` or ``"cuda"``.
        seed: seeds the network's initialisation and the task sampler.
    """

    meta_batch_size: int
    inner_steps: int
    warmup: int
    repeats: int
    device: str
    seed: int


def loop_meta_loss(
    model: nn.Module, params: mb.Params, batch: mb.TaskBatch, *, inner_lr: float, steps: int
) -> torch.Tensor:
    """The MAML meta-loss computed task by task, as most implementations do.

    Written out here, independently of ``mamlbook``, so that it can serve as the
    reference the vectorised ``mamlbook.maml_loss`` is checked and timed against.

    Args:
        model: the network, run through ``functional_call``.
        params: theta, keyed like ``model.named_parameters()``.
        batch: T tasks; support ``(T, K, 1)``, query ``(T, Q, 1)``.
        inner_lr: alpha.
        steps: inner SGD steps per task.

    Returns:
        The mean over tasks of the query MSE of the adapted parameters phi_t.
    """
    query_losses = []
    for support_x, support_y, query_x, query_y in zip(*batch, strict=True):  # one task: (K, 1), (Q, 1)
        adapted = params
        for _ in range(steps):
            support_loss = F.mse_loss(functional_call(model, adapted, (support_x,)), support_y)
            grads = torch.autograd.grad(support_loss, list(adapted.values()), create_graph=True)
            adapted = {name: p - inner_lr * g for (name, p), g in zip(adapted.items(), grads, strict=True)}
        query_losses.append(F.mse_loss(functional_call(model, adapted, (query_x,)), query_y))
    return torch.stack(query_losses).mean()


def package_meta_loss(
    model: nn.Module, params: mb.Params, batch: mb.TaskBatch, *, steps: int
) -> torch.Tensor:
    """``mamlbook.maml_loss`` with the benchmark's settings (second order, MSE)."""
    return mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=INNER_LR, steps=steps)


def meta_gradient_difference(model: nn.Module, batch: mb.TaskBatch, *, steps: int) -> tuple[float, float]:
    """Compare the meta-gradients of ``maml_loss`` and of the per-task loop in float64.

    Works on a float64 copy of ``model``; ``model`` itself is left untouched.

    Returns:
        The max abs difference between the two meta-gradients, and the max abs entry
        of the ``maml_loss`` one (for scale).
    """
    model64 = copy.deepcopy(model).double()
    batch64 = mb.TaskBatch(*(tensor.double() for tensor in batch))
    params = dict(model64.named_parameters())
    vectorised = torch.autograd.grad(
        package_meta_loss(model64, params, batch64, steps=steps), list(params.values())
    )
    looped = torch.autograd.grad(
        loop_meta_loss(model64, params, batch64, inner_lr=INNER_LR, steps=steps), list(params.values())
    )
    difference = max((a - b).abs().max().item() for a, b in zip(vectorised, looped, strict=True))
    scale = max(grad.abs().max().item() for grad in vectorised)
    return difference, scale


def make_steps(model: nn.Module, batch: mb.TaskBatch, *, steps: int) -> dict[str, StepFn]:
    """One training-step function per method, each on its own copy of ``model``.

    The copies start from the same weights and each has its own Adam optimiser, so
    the methods do not share state; every call is one full iteration (forward,
    backward, Adam step) on ``batch``.
    """
    # The plain step sees the same T * (K + Q) points as one flat regression set.
    plain_x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1)  # (T * (K + Q), 1)
    plain_y = torch.cat([batch.support_y, batch.query_y], dim=1).flatten(0, 1)  # (T * (K + Q), 1)
    losses: dict[str, Callable[[nn.Module, mb.Params], torch.Tensor]] = {
        "maml_loss": lambda net, params: package_meta_loss(net, params, batch, steps=steps),
        "loop": lambda net, params: loop_meta_loss(net, params, batch, inner_lr=INNER_LR, steps=steps),
        "plain": lambda net, params: F.mse_loss(net(plain_x), plain_y),
    }
    return {method: _training_step(copy.deepcopy(model), losses[method]) for method in METHODS}


def _training_step(net: nn.Module, loss_of: Callable[[nn.Module, mb.Params], torch.Tensor]) -> StepFn:
    params = dict(net.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=OUTER_LR)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of(net, params).backward()
        optimizer.step()

    return step


def time_interleaved(
    step_fns: dict[str, StepFn], *, warmup: int, repeats: int, device: str
) -> dict[str, list[float]]:
    """Run every method once per round, rotating the order, and time each call.

    Args:
        step_fns: method name -> one training iteration.
        warmup: untimed rounds first.
        repeats: timed rounds.
        device: where the methods run; on CUDA each call is synchronised.

    Returns:
        Method name -> ``repeats`` times in milliseconds, round by round.
    """
    names = list(step_fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize()
            start = time.perf_counter()
            step_fns[name]()
            synchronize()
            elapsed_ms = 1e3 * (time.perf_counter() - start)
            if round_index >= warmup:
                times[name].append(elapsed_ms)
        if round_index + 1 == warmup:
            gc.collect()
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median, min and max milliseconds of each method."""
    return {
        name: {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}
        for name, ms in times.items()
    }


def ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """loop / maml_loss and maml_loss / plain, as ratios of medians and as per-round medians.

    The per-round ratio compares methods timed a few milliseconds apart, so a slow
    stretch of the machine cancels out of it.
    """
    medians = {name: statistics.median(ms) for name, ms in times.items()}

    def per_round(numerator: str, denominator: str) -> float:
        pairs = zip(times[numerator], times[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    return {
        "loop_over_maml_loss": medians["loop"] / medians["maml_loss"],
        "maml_loss_over_plain": medians["maml_loss"] / medians["plain"],
        "loop_over_maml_loss_per_round": per_round("loop", "maml_loss"),
        "maml_loss_over_plain_per_round": per_round("maml_loss", "plain"),
    }


def device_name(device: str) -> str:
    """The GPU's name on CUDA; on the CPU its model name where Linux gives it, else ``platform``'s."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def package_revision() -> dict[str, object]:
    """The git commit of the checkout, and whether ``mamlbook/`` has uncommitted changes.

    Both are None where git or the repository is not at hand.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        modified = bool(git("status", "--porcelain", "mamlbook"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": modified}


def environment(device: str) -> dict[str, object]:
    """Versions, device, thread count and machine, for the record."""
    return {
        "mamlbook_version": mb.__version__,
        "mamlbook_revision": package_revision(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
    }


def format_report(
    settings: Settings, env: dict[str, object], gradient: tuple[float, float], times: dict[str, list[float]]
) -> str:
    """The table printed at the end of a run."""
    stats, ratio = summarise(times), ratios(times)
    met = "met" if ratio["loop_over_maml_loss"] >= SPEEDUP_TARGET else "not met"
    lines = [
        *_header(settings, env, gradient),
        "",
        f"{'method':<40}{'median ms':>11}{'min ms':>10}{'max ms':>10}",
    ]
    for name in METHODS:
        s = stats[name]
        lines.append(
            f"{DESCRIPTIONS[name]:<40}{s['median_ms']:>11.2f}{s['min_ms']:>10.2f}{s['max_ms']:>10.2f}"
        )
    lines += [
        "",
        f"loop / maml_loss:  {ratio['loop_over_maml_loss']:5.2f}x medians, "
        f"{ratio['loop_over_maml_loss_per_round']:5.2f}x per-round median "
        f"(target >= {SPEEDUP_TARGET:g}x: {met})",
        f"maml_loss / plain: {ratio['maml_loss_over_plain']:5.2f}x medians, "
        f"{ratio['maml_loss_over_plain_per_round']:5.2f}x per-round median",
    ]
    return "\n".join(lines)


def _header(settings: Settings, env: dict[str, object], gradient: tuple[float, float]) -> list[str]:
    inner = f"{settings.inner_steps} inner step{'s' if settings.inner_steps != 1 else ''}"
    return [
        "One second-order MAML meta-iteration (forward, backward, outer Adam step)",
        f"sinusoid, MLP 1-40-40-1, T={settings.meta_batch_size} tasks, K={NUM_SUPPORT} support + "
        f"{NUM_QUERY} query, {inner}, alpha={INNER_LR}, MSE",
        f"mamlbook {env['mamlbook_version']} ({_describe(env['mamlbook_revision'])}), "
        f"torch {env['torch_version']}, Python {env['python_version']}",
        f"device {env['device']} ({env['device_name']}), threads {env['threads']}, "
        f"{env['machine']['platform']}",
        f"meta-gradient check, float64: max |maml_loss - loop| = {gradient[0]:.1e} "
        f"(largest entry {gradient[1]:.2g}, tolerance {GRADIENT_TOLERANCE:.0e})",
        f"{settings.warmup} warm-up + {settings.repeats} timed rounds, methods interleaved",
    ]


def _describe(revision: dict[str, object]) -> str:
    if revision["commit"] is None:
        return "revision unknown"
    changes = " + uncommitted changes" if revision["modified"] else ""
    return f"commit {str(revision['commit'])[:7]}{changes}"


def results_record(
    settings: Settings, env: dict[str, object], gradient: tuple[float, float], times: dict[str, list[float]]
) -> dict[str, object]:
    """Everything a run measured, for ``--json``: settings, environment, per-method stats, ratios."""
    stats = summarise(times)
    return {
        "benchmark": "meta_iteration",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            **dataclasses.asdict(settings),
            "model": "MLP 1-40-40-1",
            "num_support": NUM_SUPPORT,
            "num_query": NUM_QUERY,
            "inner_lr": INNER_LR,
            "outer_lr": OUTER_LR,
            "first_order": False,
            "loss": "mse",
        },
        **env,
        "meta_gradient_max_abs_diff": gradient[0],
        "methods": {
            name: {**stats[name], "times_ms": [round(ms, 4) for ms in times[name]]} for name in METHODS
        },
        "ratios": ratios(times),
    }


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=_int_at_least(1), default=500, help="timed rounds (default 500)")
    parser.add_argument("--warmup", type=_int_at_least(0), default=20, help="untimed rounds (default 20)")
    parser.add_argument(
        "--threads", type=_int_at_least(1), default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="default cpu")
    parser.add_argument("--inner-steps", type=_int_at_least(0), default=1, help="inner SGD steps (default 1)")
    parser.add_argument("--meta-batch-size", type=_int_at_least(1), default=25, help="tasks T (default 25)")
    parser.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="initialisation and tasks (default 0)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check the meta-gradients agree, time the three methods, print (and save) the results."""
    args = parse_args(argv)
    if args.json is not None:  # fail before the timing, not after it
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            sys.exit(f"error: --json {args.json}: cannot create its folder ({error})")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = str(mb.resolve_device(args.device))
    except ValueError as error:
        sys.exit(f"error: {error}")
    settings = Settings(args.meta_batch_size, args.inner_steps, args.warmup, args.repeats, device, args.seed)

    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global state
        torch.manual_seed(settings.seed)
        model = mb.models.MLP(1).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    batch = mb.tasks.Sinusoid().sample(settings.meta_batch_size, NUM_SUPPORT, NUM_QUERY, generator=generator)
    batch = batch.to(device)

    gradient = meta_gradient_difference(model, batch, steps=settings.inner_steps)
    print(f"meta-gradient check (float64): max abs difference {gradient[0]:.2e}", flush=True)
    if not gradient[0] <= GRADIENT_TOLERANCE:  # also catches NaN
        sys.exit(
            f"error: maml_loss and the per-task loop disagree by {gradient[0]:.3e} > {GRADIENT_TOLERANCE:g}"
        )

    times = time_interleaved(
        make_steps(model, batch, steps=settings.inner_steps),
        warmup=settings.warmup,
        repeats=settings.repeats,
        device=device,
    )
    env = environment(device)
    print(format_report(settings, env, gradient, times))
    if args.json is not None:
        text = json.dumps(results_record(settings, env, gradient, times), indent=2) + "\n"
        mb.checkpoint.write_atomically(args.json, lambda file: file.write(text.encode()))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
