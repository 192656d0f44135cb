"""Sinusoid tasks, the MLP, the TaskBatch helpers, and an import free of side effects."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.tasks import SineWaves, Sinusoid


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sinusoid_sample_shapes_and_dtype():
    batch = Sinusoid().sample(7, 3, 11, generator=generator())

    assert isinstance(batch, mb.TaskBatch)
    assert batch.num_tasks == 7
    assert batch.support_x.shape == batch.support_y.shape == (7, 3, 1)
    assert batch.query_x.shape == batch.query_y.shape == (7, 11, 1)
    assert all(tensor.dtype == torch.float32 for tensor in batch)


def test_sinusoid_values_lie_within_the_ranges():
    family = Sinusoid(amplitude=(1.0, 2.0), phase=(0.5, 1.0), x_range=(-2.0, 3.0))
    waves = family.sample_waves(500, generator=generator())
    batch = family.make_batch(waves, 20, 20, generator=generator(1))

    assert ((waves.amplitude >= 1.0) & (waves.amplitude <= 2.0)).all()
    assert ((waves.phase >= 0.5) & (waves.phase <= 1.0)).all()
    for x in (batch.support_x, batch.query_x):
        assert ((x >= -2.0) & (x <= 3.0)).all()
    for y in (batch.support_y, batch.query_y):
        assert (y.abs() <= 2.0).all()
    # The ranges are covered, not just respected.
    assert waves.amplitude.min() < 1.05 and waves.amplitude.max() > 1.95
    assert batch.query_x.min() < -1.9 and batch.query_x.max() > 2.9


def test_sinusoid_targets_are_amplitude_times_sine_of_x_plus_phase():
    family = Sinusoid()
    waves = family.sample_waves(5, generator=generator())
    batch = family.make_batch(waves, 4, 6, generator=generator(1))

    for x, y in ((batch.support_x, batch.support_y), (batch.query_x, batch.query_y)):
        expected = waves.amplitude[:, None, None] * torch.sin(x + waves.phase[:, None, None])
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(waves.curve(x), expected)


def test_sine_waves_curve_broadcasts_shared_points_over_tasks():
    waves = SineWaves(amplitude=torch.tensor([1.0, 2.0]), phase=torch.tensor([0.0, math.pi / 2]))
    x = torch.tensor([0.0, math.pi / 2])
    expected = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])  # sin(x), 2 cos(x)

    torch.testing.assert_close(waves.curve(x), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(waves.curve(x[:, None]), expected, atol=1e-6, rtol=0)


def test_sinusoid_sample_is_determined_by_the_generator():
    family = Sinusoid()
    first = family.sample(4, 5, 6, generator=generator(3))
    again = family.sample(4, 5, 6, generator=generator(3))
    other = family.sample(4, 5, 6, generator=generator(4))

    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first.support_x, other.support_x)


def test_sinusoid_sample_is_sample_waves_then_make_batch():
    family = Sinusoid()
    batch = family.sample(4, 5, 6, generator=generator(3))
    shared = generator(3)
    expected = family.make_batch(family.sample_waves(4, generator=shared), 5, 6, generator=shared)

    assert all(torch.equal(a, b) for a, b in zip(batch, expected, strict=True))


def test_sinusoid_sample_with_a_generator_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    Sinusoid().sample(4, generator=generator())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_sinusoid_repr_shows_its_ranges():
    assert repr(Sinusoid(amplitude=(1, 2))) == (
        f"Sinusoid(amplitude=(1.0, 2.0), phase=(0.0, {math.pi}), x_range=(-5.0, 5.0))"
    )


def test_mlp_parameter_names_and_shapes():
    model = MLP(2, (8, 5), 3)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.named_parameters()}

    assert shapes == {
        "body.0.weight": (8, 2),
        "body.0.bias": (8,),
        "body.2.weight": (5, 8),
        "body.2.bias": (5,),
        "head.weight": (3, 5),
        "head.bias": (3,),
    }


def test_mlp_default_is_the_papers_sinusoid_network():
    shapes = [tuple(tensor.shape) for tensor in MLP(1).parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def test_mlp_without_hidden_layers_is_one_linear_layer():
    model = MLP(3, (), 1)
    x = torch.randn(5, 3, generator=generator())

    assert [name for name, _ in model.named_parameters()] == ["head.weight", "head.bias"]
    torch.testing.assert_close(model(x), x @ model.head.weight.T + model.head.bias)


def test_mlp_output_shape_keeps_leading_dimensions():
    model = MLP(2, [4], 3)
    assert model(torch.zeros(6, 2)).shape == (6, 3)
    assert model(torch.zeros(5, 6, 2)).shape == (5, 6, 3)


def test_mlp_applies_relu_between_layers():
    model = MLP(1, (1,), 1)
    with torch.no_grad():
        model.body[0].weight.fill_(1.0)
        model.body[0].bias.zero_()
        model.head.weight.fill_(2.0)
        model.head.bias.fill_(0.5)
    out = model(torch.tensor([[-3.0], [3.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.5], [6.5]]))


def test_task_batch_helpers():
    batch = Sinusoid().sample(5, 3, 4, generator=generator())
    part = batch.slice_tasks(1, 3)
    moved = batch.to("cpu")

    assert part.num_tasks == 2
    assert all(torch.equal(p, b[1:3]) for p, b in zip(part, batch, strict=True))
    assert isinstance(moved, mb.TaskBatch)
    assert all(torch.equal(m, b) for m, b in zip(moved, batch, strict=True))


IMPORT_CHECK = """
import warnings
import matplotlib
import torch

seed, rng = torch.initial_seed(), torch.random.get_rng_state()
rc = dict(matplotlib.rcParams)
filters = list(warnings.filters)
dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
deterministic = torch.are_deterministic_algorithms_enabled()

import mamlbook

assert torch.initial_seed() == seed, "the torch seed changed"
assert torch.equal(torch.random.get_rng_state(), rng), "the torch RNG state changed"
changed = sorted(key for key in rc if matplotlib.rcParams[key] != rc[key])
assert not changed, f"rcParams changed: {changed}"
assert list(warnings.filters) == filters, "the warning filters changed"
assert torch.get_default_dtype() == dtype, "the default dtype changed"
assert torch.get_num_threads() == threads, "the number of threads changed"
assert torch.are_deterministic_algorithms_enabled() == deterministic
print("unchanged")
"""


def test_import_mamlbook_changes_no_global_state():
    environment = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unchanged"


@pytest.mark.parametrize("name", mb.__all__)
def test_public_names_exist(name):
    assert getattr(mb, name) is not None
