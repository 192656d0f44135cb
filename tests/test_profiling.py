"""Measuring cost (``mamlbook.profiling``): saved-tensor memory on known computations, its growth
with inner steps, the timers' bookkeeping and the argument checks. No assertion is made
on a measured time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.profiling import (
    ALGORITHMS,
    meta_iteration,
    peak_cuda_bytes,
    peak_saved_bytes,
    time_call,
    time_calls,
)


def test_peak_saved_bytes_counts_each_saved_storage_once():
    x = torch.zeros(1000, requires_grad=True)  # 4,000 bytes
    assert peak_saved_bytes(lambda: (x * x).sum()) == 4000  # x saved twice, one storage
    assert peak_saved_bytes(lambda: x.exp().exp().sum()) == 8000  # each exp saves its output


def test_peak_saved_bytes_releases_graphs_that_are_dropped():
    x = torch.zeros(1000, requires_grad=True)

    def chain():
        y = x
        for _ in range(5):
            y = y.exp().detach().requires_grad_()  # each graph is dropped when y moves on

    assert peak_saved_bytes(chain) == 4000


def test_peak_saved_bytes_is_zero_without_autograd():
    x = torch.zeros(1000, requires_grad=True)
    with torch.no_grad():
        assert peak_saved_bytes(lambda: x.exp().exp().sum()) == 0


def test_peak_saved_bytes_leaves_the_gradient_unchanged(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    params = dict(model.named_parameters())

    def meta_gradient():
        loss = mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=3)
        return torch.autograd.grad(loss, list(params.values()))

    expected, measured = meta_gradient(), []
    peak_saved_bytes(lambda: measured.extend(meta_gradient()))
    for got, want in zip(measured, expected, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def saved_bytes_by_steps(algorithm, model, batch, steps=(1, 2, 5, 10)):
    return [
        peak_saved_bytes(
            meta_iteration(algorithm, model, batch, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=count)
        )
        for count in steps
    ]


def test_second_order_memory_grows_linearly_with_inner_steps(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (16, 16))), sine_batch(num_tasks=5, k_shot=10)
    one, two, five, ten = saved_bytes_by_steps("MAML", model, batch)
    assert one < two < five < ten
    assert five - two == 3 * (two - one)  # the same bytes for every differentiable step
    assert ten - five == 5 * (two - one)


@pytest.mark.parametrize("algorithm", ["FOMAML", "Reptile"])
def test_first_order_memory_does_not_grow_after_the_second_step(make_model, sine_batch, algorithm):
    model, batch = make_model(lambda: MLP(1, (16, 16))), sine_batch(num_tasks=5, k_shot=10)
    one, two, five, ten = saved_bytes_by_steps(algorithm, model, batch)
    assert two == five == ten
    assert ten < saved_bytes_by_steps("MAML", model, batch, steps=(2,))[0]  # below second order at 2 steps


def test_meta_iteration_changes_its_own_copy_of_the_params_only(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    for algorithm in ALGORITHMS:
        meta_iteration(algorithm, model, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)()
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.named_parameters())


def test_meta_iteration_rejects_an_unknown_algorithm(make_model, sine_batch):
    with pytest.raises(ValueError, match="algorithm must be one of"):
        meta_iteration(
            "ANIL",
            make_model(lambda: MLP(1, (8,))),
            sine_batch(),
            loss_fn=F.mse_loss,
            inner_lr=0.1,
            inner_steps=1,
        )


def test_time_call_makes_warmup_plus_repeats_calls_and_orders_its_numbers():
    calls = []
    timing = time_call(lambda: calls.append(sum(range(1000))), repeats=4, warmup=2)
    assert len(calls) == 6
    assert 0 < timing.min <= timing.median <= timing.max


def test_time_calls_times_every_function_the_same_number_of_times():
    calls = {"a": 0, "b": 0, "c": 0}

    def counter(name):
        def call():
            calls[name] += 1

        return call

    timings = time_calls([counter(name) for name in calls], repeats=3, warmup=1)
    assert calls == {"a": 4, "b": 4, "c": 4}
    assert len(timings) == 3 and all(timing.min > 0 for timing in timings)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"repeats": 0}, ValueError, "repeats must be >= 1"),
        ({"warmup": -1}, ValueError, "warmup must be >= 0"),
        ({"repeats": 2.5}, TypeError, "repeats must be an integer"),
    ],
)
def test_time_call_rejects_bad_counts(kwargs, error, match):
    with pytest.raises(error, match=match):
        time_call(lambda: None, **kwargs)


@pytest.mark.parametrize("measure", [time_call, peak_saved_bytes])
def test_measures_reject_a_non_callable(measure):
    with pytest.raises(TypeError, match="fn must be callable"):
        measure(42)


def test_peak_cuda_bytes_rejects_a_cpu_device():
    with pytest.raises(ValueError, match="must be a CUDA device"):
        peak_cuda_bytes(lambda: None, "cpu")


def test_measure_costs_gives_one_row_per_algorithm_and_steps(make_model, sine_batch):
    model, batch = make_model(lambda: MLP(1, (8,))), sine_batch()
    costs = mb.profiling.measure_costs(
        model, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=(1, 3), repeats=1, warmup=0
    )
    assert [(cost.algorithm, cost.inner_steps) for cost in costs] == [
        (algorithm, steps) for algorithm in ALGORITHMS for steps in (1, 3)
    ]
    assert all(cost.cuda_bytes is None and cost.saved_bytes > 0 for cost in costs)
    table = mb.profiling.format_costs(costs).splitlines()
    assert len(table) == 1 + len(costs)
    assert table[1].split()[:2] == ["MAML", "1"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"algorithms": ("MAML", "iMAML")}, ValueError, "unknown \\['iMAML'\\]"),
        ({"inner_steps": (0, 1)}, ValueError, "inner_steps must be >= 1"),
    ],
)
def test_measure_costs_rejects_bad_arguments(make_model, sine_batch, kwargs, error, match):
    with pytest.raises(error, match=match):
        mb.profiling.measure_costs(
            make_model(lambda: MLP(1, (8,))), sine_batch(), loss_fn=F.mse_loss, inner_lr=0.05, **kwargs
        )
