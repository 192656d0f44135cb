"""Time one second-order MAML meta-iteration several ways, in one run, and measure its memory.

Two settings of the paper (Finn et al., 2017): ``sinusoid`` (section 5.1: the MLP
1-40-40-1, K = 10 support and 10 query points per task, alpha = 0.01, MSE, 25 tasks) and
``omniglot`` (section 5.2: ``Conv4`` with 64 filters, 5-way 1-shot with 15 queries per
class, alpha = 0.4, cross-entropy, 32 tasks). A meta-iteration is forward, backward and
an outer Adam step (beta = 1e-3: ``mamlbook.outer.OuterAdam`` for ``maml_loss``, as
``mamlbook.meta_train`` takes it, ``torch.optim.Adam`` for the others); sampling the tasks
is not timed (one fixed batch is reused). The methods are

1. ``maml_loss``: ``mamlbook.maml_loss`` with its default ``backend="auto"`` (the
   closed-form meta-gradient for the sinusoid MLP with MSE, the batched forward pass for
   ``Conv4``; ``mamlbook.backends`` says which it picks and why);
2. ``loop``: ``mamlbook.reference.maml_loss``, the package's reference: a per-task Python
   loop with ``torch.autograd.grad(create_graph=True)`` and ``torch.func.functional_call``,
   the usual way MAML is written;
3. ``plain``: a plain (non-meta) Adam step on all the batch's examples, flattened, with
   the same network: the floor a meta-iteration is compared with;
4. with ``--peers``, each of higher, torchopt and learn2learn that imports (they live in a
   separate environment made by ``benchmarks/setup_peers.sh``; see ``benchmarks/peers.py``).

Before timing, every method's meta-gradient is compared with the loop's in float64 on a
copy of the model (for ``omniglot``, on the first 4 tasks); the script exits with an
error if one differs by more than 1e-10. The methods are then interleaved in rounds (the
order rotated each round) so that the noise of a shared machine falls on all alike.
With ``--processes N``, each method is timed instead in N processes of its own, one per
method per round (order rotated): one method then never runs on the allocator state
another left behind, which on the Omniglot setting changed a method's time by up to 30 %
(``benchmarks/README.md``); the figures are over the processes' medians. With
``--memory``, the bytes autograd holds for the backward pass at the peak of one
meta-iteration are counted for each method (``mamlbook.profiling.peak_saved_bytes``; on
CUDA also the allocator's peak). Nothing here asserts on a time. The record's versions and
machine are ``mamlbook.reproduce.environment``'s, with the git revision, the CPU's model
and the core count added.

Run from the repository root::

    .venv/bin/python benchmarks/meta_iteration.py --setting omniglot --memory
    benchmarks/.venv-peers/bin/python benchmarks/meta_iteration.py --peers --json results/peers.json
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

import mamlbook as mb

OUTER_LR = 1e-3  # beta, the paper's (Adam)
GRADIENT_TOLERANCE = 1e-10  # max abs difference allowed between two meta-gradients (float64)
BASE_METHODS = ("maml_loss", "loop", "plain")
DESCRIPTIONS = {
    "maml_loss": "mamlbook.maml_loss (auto), OuterAdam",
    "loop": "mamlbook.reference.maml_loss (per task)",
    "plain": "plain Adam step (no meta)",
    "higher": "higher, innerloop_ctx per task",
    "torchopt": "torchopt, per task",
    "learn2learn": "learn2learn, MAML clone/adapt per task",
}

StepFn = Callable[[], None]
MetaLoss = Callable[[nn.Module, mb.Params, mb.TaskBatch], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One of the paper's settings, as the benchmark runs it.

    Attributes:
        name: ``"sinusoid"`` or ``"omniglot"``.
        description: the model, the task sizes, alpha and the loss, in words.
        make_model: builds the network (seeded by the caller).
        sample: ``(num_tasks, generator) -> TaskBatch``.
        loss_fn: the per-task loss.
        inner_lr: alpha.
        default_meta_batch_size: the paper's tasks per meta-iteration.
        check_tasks: how many of the batch's tasks the float64 gradient check uses (None: all).
        speedup_target: the target for (fastest peer) / maml_loss in this setting, with its
            default tasks and one inner step.
        default_repeats: timed rounds unless ``--repeats`` is given.
        default_warmup: untimed rounds unless ``--warmup`` is given.
    """

    name: str
    description: str
    make_model: Callable[[], nn.Module]
    sample: Callable[[int, torch.Generator], mb.TaskBatch]
    loss_fn: mb.LossFn
    inner_lr: float
    default_meta_batch_size: int
    check_tasks: int | None
    speedup_target: float
    default_repeats: int
    default_warmup: int


OMNIGLOT_WAYS, OMNIGLOT_SHOTS, OMNIGLOT_QUERIES = 5, 1, 15


def _sample_sinusoid(num_tasks: int, generator: torch.Generator) -> mb.TaskBatch:
    return mb.tasks.Sinusoid().sample(num_tasks, 10, 10, generator=generator)


def _sample_omniglot_shaped(num_tasks: int, generator: torch.Generator) -> mb.TaskBatch:
    """Episodes of random binary 28x28 images (100 classes of 20): the cost does not depend on the pixels."""
    images = (torch.rand(100 * 20, 28, 28, generator=generator) < 0.2).to(torch.uint8) * 255
    labels = torch.arange(100).repeat_interleave(20)
    sampler = mb.tasks.FewShotClassification(images, labels, OMNIGLOT_WAYS, OMNIGLOT_SHOTS, OMNIGLOT_QUERIES)
    return sampler.sample(num_tasks, generator=generator)


PROBLEMS = {
    "sinusoid": Problem(
        name="sinusoid",
        description="sinusoid, MLP 1-40-40-1, K=10 support + 10 query, alpha=0.01, MSE",
        make_model=lambda: mb.models.MLP(1),
        sample=_sample_sinusoid,
        loss_fn=F.mse_loss,
        inner_lr=0.01,
        default_meta_batch_size=25,
        check_tasks=None,
        speedup_target=10.0,
        default_repeats=500,
        default_warmup=20,
    ),
    "omniglot": Problem(
        name="omniglot",
        description=(
            f"Omniglot-shaped, Conv4 (64 filters, 28x28), {OMNIGLOT_WAYS}-way {OMNIGLOT_SHOTS}-shot, "
            f"{OMNIGLOT_QUERIES} queries per class, alpha=0.4, cross-entropy"
        ),
        make_model=lambda: mb.models.Conv4(1, OMNIGLOT_WAYS),
        sample=_sample_omniglot_shaped,
        loss_fn=F.cross_entropy,
        inner_lr=0.4,
        default_meta_batch_size=32,
        check_tasks=4,
        speedup_target=1.5,
        default_repeats=10,
        default_warmup=2,
    ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run of the benchmark measures.

    Attributes:
        problem: a key of ``PROBLEMS``.
        meta_batch_size: T, tasks per meta-iteration.
        inner_steps: inner SGD steps per task.
        warmup: untimed rounds before timing.
        repeats: timed rounds; each round runs every method once.
        device: the device the methods run on, e.g. ``"cpu"`` or ``"cuda"``.
        seed: seeds the network's initialisation and the task sampler.
        methods: the methods run, in order.
        processes: 0 to interleave the methods in this process; N to time each in N
            processes of its own, each running ``warmup`` + ``repeats`` iterations.
    """

    problem: str
    meta_batch_size: int
    inner_steps: int
    warmup: int
    repeats: int
    device: str
    seed: int
    methods: tuple[str, ...]
    processes: int = 0


loop_meta_loss = mb.reference.maml_loss
"""The ``loop`` method's meta-loss: the package's per-task reference, which every other
method's meta-gradient is checked against (a name of this module, so that a test can
swap in a wrong one)."""


def meta_losses(problem: Problem, methods: tuple[str, ...], *, inner_steps: int) -> dict[str, MetaLoss]:
    """The meta-loss of each method except ``plain``: ``(model, theta, batch) -> loss``.

    A peer's loss is built for the model it is first called with (the libraries wrap a
    module) and must be called with that model only.
    """
    common = {"loss_fn": problem.loss_fn, "inner_lr": problem.inner_lr, "inner_steps": inner_steps}
    losses: dict[str, MetaLoss] = {
        "maml_loss": lambda model, params, batch: mb.maml_loss(model, params, batch, **common),
        "loop": lambda model, params, batch: loop_meta_loss(model, params, batch, **common),
    }
    for name in methods:
        if name not in BASE_METHODS:
            losses[name] = _peer_loss(name, common)
    return {name: losses[name] for name in methods if name != "plain"}


def _peer_loss(name: str, common: dict[str, object]) -> MetaLoss:
    import peers

    built: dict[int, Callable[[mb.TaskBatch], torch.Tensor]] = {}

    def loss(model: nn.Module, params: mb.Params, batch: mb.TaskBatch) -> torch.Tensor:
        if id(model) not in built:
            built[id(model)] = peers.make_peer_meta_loss(name, model, **common)
        return built[id(model)](batch)

    return loss


def meta_gradient_differences(
    problem: Problem, model: nn.Module, batch: mb.TaskBatch, losses: dict[str, MetaLoss]
) -> tuple[dict[str, float], float]:
    """Each method's meta-gradient against the loop's, in float64, on copies of ``model``.

    Returns:
        Method -> max abs difference from the loop's meta-gradient (the loop's own is 0),
        and the loop's max abs entry, for scale.
    """
    tasks = slice(None, problem.check_tasks)
    batch64 = mb.TaskBatch(*(tensor[tasks] for tensor in batch))
    batch64 = mb.TaskBatch(*(t.double() if t.is_floating_point() else t for t in batch64))
    gradients = {}
    for name, loss in losses.items():
        model64 = copy.deepcopy(model).double()
        params = dict(model64.named_parameters())
        gradients[name] = torch.autograd.grad(loss(model64, params, batch64), list(params.values()))
    reference = gradients["loop"]
    differences = {
        name: max((a - b).abs().max().item() for a, b in zip(grads, reference, strict=True))
        for name, grads in gradients.items()
    }
    return differences, max(grad.abs().max().item() for grad in reference)


def plain_loss(problem: Problem, batch: mb.TaskBatch) -> Callable[[nn.Module], torch.Tensor]:
    """The loss of a plain step: the batch's support and query examples as one flat set."""
    x = torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1)  # (T * (K + Q), ...)
    y = torch.cat([batch.support_y, batch.query_y], dim=1).flatten(0, 1)
    return lambda net: problem.loss_fn(net(x), y)


def make_steps(
    problem: Problem,
    model: nn.Module,
    batch: mb.TaskBatch,
    losses: dict[str, MetaLoss],
    methods: tuple[str, ...],
) -> dict[str, StepFn]:
    """One training-step function per method, each on its own copy of ``model``.

    The copies start from the same weights and each has its own Adam optimiser, so
    the methods do not share state; every call is one full iteration (forward,
    backward, Adam step) on ``batch``. ``maml_loss`` steps with ``OuterAdam`` as
    ``mamlbook.meta_train`` does, every other method with ``torch.optim.Adam``: the
    same update (``tests/test_outer.py``), at a different cost.
    """
    flat = plain_loss(problem, batch)
    loss_of = {
        name: (lambda net, params, loss=loss: loss(net, params, batch)) for name, loss in losses.items()
    }
    loss_of["plain"] = lambda net, params: flat(net)
    return {
        method: _training_step(
            copy.deepcopy(model),
            loss_of[method],
            mb.outer.OuterAdam if method == "maml_loss" else torch.optim.Adam,
        )
        for method in methods
    }


def _training_step(
    net: nn.Module,
    loss_of: Callable[[nn.Module, mb.Params], torch.Tensor],
    optimizer_class: type[torch.optim.Adam] | type[mb.outer.OuterAdam],
) -> StepFn:
    params = dict(net.named_parameters())
    optimizer = optimizer_class(params.values(), lr=OUTER_LR)

    def step() -> None:
        for tensor in params.values():
            tensor.grad = None
        loss_of(net, params).backward()
        optimizer.step()

    return step


def peak_memory(step_fns: dict[str, StepFn], device: str) -> dict[str, dict[str, int]]:
    """Each method's peak bytes held for backward in one iteration (and on CUDA the allocator's peak)."""
    memory = {}
    for name, step in step_fns.items():
        gc.collect()
        memory[name] = {"saved_bytes": mb.profiling.peak_saved_bytes(step)}
        if device.startswith("cuda"):
            memory[name]["cuda_bytes"] = mb.profiling.peak_cuda_bytes(step, device)
    return memory


def time_interleaved(
    step_fns: dict[str, StepFn], *, warmup: int, repeats: int, device: str
) -> dict[str, list[float]]:
    """Run every method once per round, rotating the order, and time each call.

    The rounds of ``mamlbook.profiling.time_calls``, keeping every call's time, which the
    record (``times_ms``), the per-round ratios and ``--time-one`` need and ``time_calls``
    (median, min and max only) does not return.

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


def time_in_processes(settings: Settings, argv: list[str]) -> dict[str, list[float]]:
    """Time each method in ``settings.processes`` processes of its own, rotating the order.

    Each process runs this script with ``--time-one METHOD`` and the same ``argv``, and
    reports its ``settings.repeats`` times; its median is the method's time for that round.

    Returns:
        Method name -> ``settings.processes`` medians in milliseconds, round by round.
    """
    names = list(settings.methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(settings.processes):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            command = [sys.executable, str(Path(__file__).resolve()), *argv, "--time-one", name]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"error: timing {name} in its own process failed:\n{done.stderr.strip()}")
            median_ms = statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))
            times[name].append(median_ms)
            print(f"process {round_index + 1}/{settings.processes} of {name}: {median_ms:.2f} ms", flush=True)
    return times


def seeded_model_and_batch(
    problem_name: str, meta_batch_size: int, seed: int, device: str
) -> tuple[nn.Module, mb.TaskBatch]:
    """The network of ``PROBLEMS[problem_name]`` and a batch of ``meta_batch_size`` of its
    tasks, both from ``seed``, on ``device``, without touching the global random state."""
    problem = PROBLEMS[problem_name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = problem.make_model().to(device)
    batch = problem.sample(meta_batch_size, torch.Generator().manual_seed(seed))
    return model, batch.to(device)


def time_one(settings: Settings, method: str) -> None:
    """``--time-one``: run one method's iterations in this process and print their times (ms) as JSON."""
    problem = PROBLEMS[settings.problem]
    model, batch = seeded_model_and_batch(
        settings.problem, settings.meta_batch_size, settings.seed, settings.device
    )
    losses = meta_losses(problem, (method,), inner_steps=settings.inner_steps)
    step = make_steps(problem, model, batch, losses, (method,))[method]
    times = time_interleaved(
        {method: step}, warmup=settings.warmup, repeats=settings.repeats, device=settings.device
    )
    print(json.dumps([round(ms, 4) for ms in times[method]]))


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median, min and max milliseconds of each method."""
    return {
        name: {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}
        for name, ms in times.items()
    }


def ratios(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Every other method's time over ``maml_loss``'s, as a ratio of medians and a per-round median.

    The per-round ratio compares methods timed moments apart, so a slow stretch of the
    machine cancels out of it. ``plain`` is reported the other way round, as
    ``maml_loss`` / ``plain``: how far a meta-iteration is from a plain step.
    """
    medians = {name: statistics.median(ms) for name, ms in times.items()}

    def per_round(numerator: str, denominator: str) -> float:
        pairs = zip(times[numerator], times[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    result = {}
    for name in times:
        if name == "maml_loss":
            continue
        numerator, denominator = ("maml_loss", name) if name == "plain" else (name, "maml_loss")
        result[f"{numerator}_over_{denominator}"] = {
            "medians": medians[numerator] / medians[denominator],
            "per_round": per_round(numerator, denominator),
        }
    return result


def cpu_name() -> str:
    """The CPU's model name where Linux gives it, else ``platform``'s processor or machine."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


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
    """``mamlbook.reproduce.environment(device)`` under this record's keys, with what it lacks:
    the git revision, the CPU's model name, the machine's architecture and its core count."""
    package = mb.reproduce.environment(torch.device(device))
    return {
        "mamlbook_version": package["mamlbook"],
        "mamlbook_revision": package_revision(),
        "torch_version": package["torch"],
        "python_version": package["python"],
        "device": device,
        "device_name": package["gpu"] or cpu_name(),
        "threads": package["cpu_threads"],
        "machine": {
            "platform": package["platform"],
            "machine": platform.machine(),
            "processor": package["processor"],
            "cpu_count": os.cpu_count(),
        },
    }


def format_report(
    settings: Settings,
    env: dict[str, object],
    gradient: tuple[dict[str, float], float],
    times: dict[str, list[float]],
    memory: dict[str, dict[str, int]] | None,
) -> str:
    """The tables printed at the end of a run."""
    problem = PROBLEMS[settings.problem]
    stats, ratio = summarise(times), ratios(times)
    memory_header = f"{'saved MiB':>11}" if memory else ""
    lines = [
        *_header(settings, env, gradient),
        "",
        f"{'method':<42}{'median ms':>11}{'min ms':>10}{'max ms':>10}{'/ maml_loss':>13}{memory_header}",
    ]
    for name in settings.methods:
        s = stats[name]
        relative = 1.0 if name == "maml_loss" else stats[name]["median_ms"] / stats["maml_loss"]["median_ms"]
        row = (
            f"{DESCRIPTIONS[name]:<42}{s['median_ms']:>11.2f}{s['min_ms']:>10.2f}{s['max_ms']:>10.2f}"
            f"{relative:>12.2f}x"
        )
        if memory:
            row += f"{memory[name]['saved_bytes'] / 2**20:>11.2f}"
        lines.append(row)
    lines.append("")
    for key, value in ratio.items():
        numerator, denominator = key.split("_over_")
        lines.append(
            f"{numerator} / {denominator}: {value['medians']:6.2f}x medians, "
            f"{value['per_round']:6.2f}x per-round median"
        )
    peers = [name for name in settings.methods if name not in BASE_METHODS]
    if peers:
        fastest = min(peers, key=lambda name: stats[name]["median_ms"])
        speedup = stats[fastest]["median_ms"] / stats["maml_loss"]["median_ms"]
        line = f"fastest peer ({fastest}) / maml_loss: {speedup:.2f}x"
        if settings.meta_batch_size == problem.default_meta_batch_size and settings.inner_steps == 1:
            met = "met" if speedup >= problem.speedup_target else "not met"
            line += f" (issue 5's target in the paper's setting: >= {problem.speedup_target:g}x, {met})"
        lines.append(line)
    if memory and any("cuda_bytes" in entry for entry in memory.values()):
        lines.append(
            "CUDA allocator peak MiB: "
            + ", ".join(f"{name} {entry['cuda_bytes'] / 2**20:.1f}" for name, entry in memory.items())
        )
    return "\n".join(lines)


def _header(
    settings: Settings, env: dict[str, object], gradient: tuple[dict[str, float], float]
) -> list[str]:
    problem = PROBLEMS[settings.problem]
    inner = f"{settings.inner_steps} inner step{'s' if settings.inner_steps != 1 else ''}"
    checked = "all tasks" if problem.check_tasks is None else f"first {problem.check_tasks} tasks"
    differences, scale = gradient
    worst = max(differences.values())
    return [
        "One second-order MAML meta-iteration (forward, backward, outer Adam step)",
        f"{problem.description}, T={settings.meta_batch_size} tasks, {inner}",
        f"mamlbook {env['mamlbook_version']} ({_describe(env['mamlbook_revision'])}), "
        f"torch {env['torch_version']}, Python {env['python_version']}"
        + "".join(f", {name} {version}" for name, version in env.get("peer_versions", {}).items()),
        f"device {env['device']} ({env['device_name']}), threads {env['threads']}, "
        f"{env['machine']['platform']}",
        f"meta-gradient check, float64, {checked}: max |method - loop| = {worst:.1e} "
        f"(largest entry {scale:.2g}, tolerance {GRADIENT_TOLERANCE:.0e})",
        f"{settings.warmup} warm-up + {settings.repeats} timed rounds, methods interleaved"
        if not settings.processes
        else f"{settings.processes} processes per method, each {settings.warmup} warm-up + "
        f"{settings.repeats} timed iterations; figures over the processes' medians",
    ]


def _describe(revision: dict[str, object]) -> str:
    if revision["commit"] is None:
        return "revision unknown"
    changes = " + uncommitted changes" if revision["modified"] else ""
    return f"commit {str(revision['commit'])[:7]}{changes}"


def results_record(
    settings: Settings,
    env: dict[str, object],
    gradient: tuple[dict[str, float], float],
    times: dict[str, list[float]],
    memory: dict[str, dict[str, int]] | None,
) -> dict[str, object]:
    """Everything a run measured, for ``--json``: settings, environment, per-method stats, ratios, memory."""
    problem = PROBLEMS[settings.problem]
    stats = summarise(times)
    return {
        "benchmark": "meta_iteration",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            **dataclasses.asdict(settings),
            "description": problem.description,
            "inner_lr": problem.inner_lr,
            "outer_lr": OUTER_LR,
            "first_order": False,
        },
        **env,
        "meta_gradient_max_abs_diff": gradient[0],
        "methods": {
            name: {
                **stats[name],
                **({"memory": memory[name]} if memory else {}),
                "times_ms": [round(ms, 4) for ms in times[name]],
            }
            for name in settings.methods
        },
        "ratios": ratios(times),
    }


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, else an error saying what was expected."""

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
    parser.add_argument("--setting", choices=sorted(PROBLEMS), default="sinusoid", help="default sinusoid")
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=None,
        help="timed rounds (default 500 sinusoid, 10 omniglot)",
    )
    parser.add_argument(
        "--warmup",
        type=int_at_least(0),
        default=None,
        help="untimed rounds (default 20 sinusoid, 2 omniglot)",
    )
    parser.add_argument(
        "--threads", type=int_at_least(1), default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="default cpu")
    parser.add_argument("--inner-steps", type=int_at_least(1), default=1, help="inner SGD steps (default 1)")
    parser.add_argument(
        "--meta-batch-size",
        type=int_at_least(1),
        default=None,
        help="tasks T (default 25 sinusoid, 32 omniglot)",
    )
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="initialisation and tasks (default 0)"
    )
    parser.add_argument("--no-plain", action="store_true", help="leave out the plain Adam step (the floor)")
    parser.add_argument(
        "--peers", action="store_true", help="also run higher, torchopt and learn2learn where they import"
    )
    parser.add_argument(
        "--processes",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="time each method in N processes of its own, not interleaved in this one",
    )
    parser.add_argument("--time-one", choices=sorted(DESCRIPTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help="also measure each method's peak memory")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results here")
    return parser.parse_args(argv)


def _without_options(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without each of ``options`` and its value (``--opt value`` or ``--opt=value``),
    and without ``--memory``: what a timing process needs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif arg != "--memory" and not arg.startswith(tuple(f"{option}=" for option in options)):
            kept.append(arg)
    return kept


def available_peers() -> tuple[tuple[str, ...], dict[str, str]]:
    """The peers that import here, and their versions; the reason for each that does not is printed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peers

    versions = peers.peer_versions()
    for name, version in versions.items():
        if version is None:
            print(f"{name}: not run ({peers.peer_unavailable_reason(name)})", flush=True)
    installed = {name: version for name, version in versions.items() if version is not None}
    return tuple(installed), installed


def main(argv: list[str] | None = None) -> int:
    """Check the meta-gradients agree, time the methods, print (and save) the results."""
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
    problem = PROBLEMS[args.setting]
    methods = BASE_METHODS if not args.no_plain else ("maml_loss", "loop")
    peer_versions: dict[str, str] = {}
    if args.peers:
        peer_names, peer_versions = available_peers()
        methods = (*methods, *peer_names)
    settings = Settings(
        problem=problem.name,
        meta_batch_size=args.meta_batch_size or problem.default_meta_batch_size,
        inner_steps=args.inner_steps,
        warmup=problem.default_warmup if args.warmup is None else args.warmup,
        repeats=args.repeats or problem.default_repeats,
        device=device,
        seed=args.seed,
        methods=methods,
        processes=args.processes or 0,
    )
    if args.time_one is not None:
        time_one(settings, args.time_one)
        return 0

    model, batch = seeded_model_and_batch(
        settings.problem, settings.meta_batch_size, settings.seed, settings.device
    )
    losses = meta_losses(problem, methods, inner_steps=settings.inner_steps)

    gradient = meta_gradient_differences(problem, model, batch, losses)
    worst = max(gradient[0], key=lambda name: gradient[0][name])
    print(f"meta-gradient check (float64): max abs difference {gradient[0][worst]:.2e} ({worst})", flush=True)
    failed = {name: diff for name, diff in gradient[0].items() if not diff <= GRADIENT_TOLERANCE}  # NaN too
    if failed:
        sys.exit(
            f"error: meta-gradients differ from the per-task loop's by more than "
            f"{GRADIENT_TOLERANCE:g}: {failed}"
        )

    step_fns = make_steps(problem, model, batch, losses, methods)
    memory = peak_memory(step_fns, device) if args.memory else None
    if settings.processes:
        child_argv = _without_options(sys.argv[1:] if argv is None else argv, ("--json", "--processes"))
        times = time_in_processes(settings, child_argv)
    else:
        times = time_interleaved(step_fns, warmup=settings.warmup, repeats=settings.repeats, device=device)
    env = {**environment(device), "peer_versions": peer_versions}
    print(format_report(settings, env, gradient, times, memory))
    if args.json is not None:
        text = json.dumps(results_record(settings, env, gradient, times, memory), indent=2) + "\n"
        mb.checkpoint.write_atomically(args.json, lambda file: file.write(text.encode()))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
