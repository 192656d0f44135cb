"""Measuring what a meta-iteration costs: its time and its memory (chapter 5).

Two measures of memory are offered. ``peak_saved_bytes`` counts, while a function
runs, the bytes of the tensors that autograd holds for a backward pass (through
``torch.autograd.graph.saved_tensors_hooks``) and reports their peak. It works on any
device and gives the same number on every run, and it is the memory that grows with
the number of inner steps when MAML differentiates through them: each differentiable
step keeps its activations until the outer backward. ``peak_cuda_bytes`` reports what
the CUDA allocator itself saw at its peak, for runs on a GPU.
"""

from __future__ import annotations

import collections
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_int
from .meta import maml_loss
from .outer import OuterAdam
from .reptile import reptile_step
from .types import LossFn, TaskBatch

ALGORITHMS = ("MAML", "FOMAML", "Reptile")
"""The meta-iterations that ``meta_iteration`` can build."""


class Timing(NamedTuple):
    """Wall time of repeated calls, in seconds: median, fastest and slowest."""

    median: float
    min: float
    max: float


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable with no arguments, got {fn!r}")


def _synchronize() -> None:
    """Wait for queued CUDA work, so that a timer sees it finished."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_calls(fns: Sequence[Callable[[], object]], *, repeats: int = 5, warmup: int = 1) -> list[Timing]:
    """Time each of ``fns``: ``warmup`` untimed calls each, then ``repeats`` timed rounds.

    Each round calls every function once, in an order rotated from round to round, so
    that a busy machine slows them all alike. On CUDA, queued work is waited for before
    and after each call.

    Args:
        fns: functions called with no arguments.
        repeats: timed calls of each, an integer >= 1.
        warmup: untimed calls of each first (allocations, lazy initialisation), >= 0.

    Returns:
        For each function, the median, fastest and slowest of its timed calls, in seconds.
    """
    fns = list(fns)
    for fn in fns:
        _check_callable(fn)
    repeats = check_int("repeats", repeats, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    for fn in fns * warmup:
        fn()
    seconds: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats):
        for offset in range(len(fns)):
            index = (round_ + offset) % len(fns)
            _synchronize()
            start = time.perf_counter()
            fns[index]()
            _synchronize()
            seconds[index].append(time.perf_counter() - start)
    return [Timing(statistics.median(times), min(times), max(times)) for times in seconds]


def time_call(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (see ``time_calls``).

    Returns:
        The median, fastest and slowest of the timed calls, in seconds.
    """
    return time_calls([fn], repeats=repeats, warmup=warmup)[0]


class _SavedTensorMeter:
    """Live bytes of the tensors autograd has saved, each storage counted once, and their peak."""

    def __init__(self) -> None:
        self.references: collections.Counter[int] = collections.Counter()  # storage address -> saved tensors
        self.total = 0
        self.peak = 0

    def pack(self, tensor: torch.Tensor) -> _Saved:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if self.references[key] == 0:
            self.total += size
            self.peak = max(self.peak, self.total)
        self.references[key] += 1
        saved = _Saved(tensor.detach())  # detached: holding the output itself would be a reference cycle
        weakref.finalize(saved, self._release, key, size)  # runs when autograd frees the saved tensor
        return saved

    @staticmethod
    def unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    def _release(self, key: int, size: int) -> None:
        self.references[key] -= 1
        if self.references[key] == 0:
            self.total -= size


class _Saved:
    """A tensor saved for backward, in a box whose end tells the meter it was freed."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def peak_saved_bytes(fn: Callable[[], object]) -> int:
    """The peak bytes of tensors held by autograd for backward while ``fn()`` runs.

    Every tensor that autograd saves (activations, inputs of products, the parameters
    themselves) is counted from when it is saved until its graph is freed; tensors
    sharing a storage are counted once. The count depends only on the computation, not
    on the device or the timing.

    Args:
        fn: the function to measure, called once with no arguments.

    Returns:
        The largest number of bytes held at any moment of the call.
    """
    _check_callable(fn)
    meter = _SavedTensorMeter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        fn()
    return meter.peak


def peak_cuda_bytes(fn: Callable[[], object], device: torch.device | str) -> int:
    """The peak bytes that the CUDA allocator held during ``fn()``, above what it held before.

    Args:
        fn: the function to measure, called once with no arguments.
        device: a CUDA device.

    Returns:
        ``torch.cuda.max_memory_allocated`` during the call minus the bytes allocated
        when it started.
    """
    _check_callable(fn)
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device for peak_cuda_bytes, got {device}")
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def meta_iteration(
    algorithm: str,
    model: nn.Module,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    inner_steps: int,
    outer_lr: float = 1e-3,
    outer_step_size: float = 1.0,
) -> Callable[[], None]:
    """One meta-iteration of ``algorithm`` on ``batch``, as a function of no arguments.

    It updates its own copy of the model's parameters, so it can be called again and
    again. MAML and FOMAML: ``maml_loss`` (second or first order), backward and an Adam
    step of size ``outer_lr`` (``mamlbook.outer.OuterAdam``, as in ``meta_train``).
    Reptile: ``reptile_step`` with ``outer_step_size``.

    Args:
        algorithm: one of ``ALGORITHMS``.
        model, batch: the network and T tasks, on the same device.
        loss_fn, inner_lr, inner_steps: the inner loop's loss, step size and number of steps.
        outer_lr: beta, Adam's step size (MAML and FOMAML).
        outer_step_size: epsilon (Reptile).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    params = {name: tensor.detach().clone().requires_grad_() for name, tensor in model.named_parameters()}
    settings = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": inner_steps}
    if algorithm == "Reptile":
        return lambda: reptile_step(model, params, batch, outer_step_size=outer_step_size, **settings)
    optimizer = OuterAdam(params.values(), lr=outer_lr)

    def maml_iteration() -> None:
        loss = maml_loss(model, params, batch, first_order=algorithm == "FOMAML", **settings)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return maml_iteration


class Cost(NamedTuple):
    """What one meta-iteration of an algorithm costs at a number of inner steps.

    Attributes:
        algorithm: one of ``ALGORITHMS``.
        inner_steps: inner steps per task.
        seconds: its wall time.
        saved_bytes: ``peak_saved_bytes`` of one call.
        cuda_bytes: ``peak_cuda_bytes`` of one call on a GPU; None on the CPU.
    """

    algorithm: str
    inner_steps: int
    seconds: Timing
    saved_bytes: int
    cuda_bytes: int | None


def measure_costs(
    model: nn.Module,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    inner_steps: Sequence[int] = (1, 2, 5, 10),
    algorithms: Sequence[str] = ALGORITHMS,
    repeats: int = 5,
    warmup: int = 1,
) -> list[Cost]:
    """Time and memory of one meta-iteration of each algorithm at each number of inner steps.

    Args:
        model, batch: the network and T tasks, on the same device.
        loss_fn, inner_lr: the inner loop's loss and step size.
        inner_steps: numbers of inner steps, integers >= 1.
        algorithms: names from ``ALGORITHMS``.
        repeats, warmup: passed to ``time_call``.

    Returns:
        One ``Cost`` per algorithm and number of steps, algorithm by algorithm.
    """
    inner_steps = [check_int("inner_steps", count, minimum=1) for count in inner_steps]
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        raise ValueError(f"algorithms must be among {ALGORITHMS}, got unknown {unknown}")
    device = next(model.parameters()).device
    configurations = [(algorithm, count) for algorithm in algorithms for count in inner_steps]

    def build(algorithm: str, count: int) -> Callable[[], None]:
        return meta_iteration(algorithm, model, batch, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=count)

    timings = time_calls([build(*config) for config in configurations], repeats=repeats, warmup=warmup)
    costs = []
    for (algorithm, count), timing in zip(configurations, timings, strict=True):
        saved = peak_saved_bytes(build(algorithm, count))
        cuda = peak_cuda_bytes(build(algorithm, count), device) if device.type == "cuda" else None
        costs.append(Cost(algorithm, count, timing, saved, cuda))
    return costs


def format_costs(costs: Sequence[Cost]) -> str:
    """A text table of ``costs``: median (min-max) time in ms and memory in kB per row."""
    lines = [
        f"{'algorithm':<9} {'steps':>5} {'time ms, median (min-max)':>26} {'saved kB':>9} {'CUDA kB':>8}"
    ]
    for cost in costs:
        median, fastest, slowest = (1e3 * seconds for seconds in cost.seconds)
        time_ms = f"{median:.1f} ({fastest:.1f}-{slowest:.1f})"
        cuda = "-" if cost.cuda_bytes is None else f"{cost.cuda_bytes / 1e3:.0f}"
        saved = cost.saved_bytes / 1e3
        lines.append(f"{cost.algorithm:<9} {cost.inner_steps:>5} {time_ms:>26} {saved:>9.0f} {cuda:>8}")
    return "\n".join(lines)
