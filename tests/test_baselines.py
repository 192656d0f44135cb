"""The baselines of chapter 3: pretraining, training from scratch, and the family's mean."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.tasks import Sinusoid


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def query_loss(model: torch.nn.Module, batch: mb.TaskBatch) -> float:
    """Mean query loss over tasks of the model's own parameters, without adapting."""
    with torch.no_grad():
        return float(F.mse_loss(model(batch.query_x), batch.query_y))


def test_pretrain_is_meta_train_with_zero_inner_steps(make_model):
    sample = functools.partial(Sinusoid().sample, k_shot=5, n_query=8)
    pretrained = make_model(lambda: MLP(1, (8,)), dtype=torch.float32)
    reference = make_model(lambda: MLP(1, (8,)), dtype=torch.float32)
    config = mb.MetaTrainConfig(iterations=20, meta_batch_size=4, inner_steps=0, outer_lr=1e-2, seed=3)

    history = mb.baselines.pretrain(
        pretrained,
        sample,
        iterations=20,
        meta_batch_size=4,
        outer_lr=1e-2,
        loss_fn=F.mse_loss,
        device="cpu",
        seed=3,
    )
    expected = mb.meta_train(reference, sample, config, loss_fn=F.mse_loss, device="cpu", progress=False)

    torch.testing.assert_close(history.meta_losses, expected.meta_losses, rtol=0, atol=0)
    for name, tensor in reference.named_parameters():
        torch.testing.assert_close(dict(pretrained.named_parameters())[name], tensor, rtol=0, atol=0)


def test_pretrain_reduces_the_loss_over_all_tasks(make_model):
    model = make_model(lambda: MLP(1, (16, 16)), dtype=torch.float32)
    held_out = Sinusoid().sample(200, 5, 20, generator=generator(1))
    before = query_loss(model, held_out)

    history = mb.baselines.pretrain(
        model,
        Sinusoid().sample,
        iterations=300,
        meta_batch_size=10,
        outer_lr=1e-2,
        loss_fn=F.mse_loss,
        device="cpu",
    )

    assert history.meta_losses.shape == (300,)
    assert history.meta_losses[-50:].mean() < history.meta_losses[:50].mean()
    assert query_loss(model, held_out) < 0.8 * before


@pytest.mark.slow
def test_pretrained_prediction_approaches_the_family_mean_not_zero(make_model):
    family = Sinusoid()
    model = make_model(lambda: MLP(1), dtype=torch.float32)

    mb.baselines.pretrain(
        model,
        family.sample,
        iterations=1500,
        meta_batch_size=25,
        outer_lr=3e-3,
        loss_fn=F.mse_loss,
        device="cpu",
    )

    grid = torch.linspace(-4.5, 4.5, 91)[:, None]
    with torch.no_grad():
        prediction = model(grid)
    target = mb.baselines.sinusoid_mean(family, grid)
    distance_to_mean = (prediction - target).pow(2).mean().sqrt()
    assert distance_to_mean < 0.35, distance_to_mean
    assert distance_to_mean < 0.3 * target.pow(2).mean().sqrt()  # far closer to the mean than to 0
    assert prediction.std() > 0.7  # not flat: the family mean is 1.62 cos(x)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"iterations": 0}, ValueError, "iterations must be >= 1"),
        ({"meta_batch_size": 0}, ValueError, "meta_batch_size must be >= 1"),
        ({"outer_lr": -1.0}, ValueError, "outer_lr must be a finite number > 0"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"sample_tasks": None}, TypeError, "sample_tasks must be callable"),
        ({"loss_fn": "mse"}, TypeError, "loss_fn must be callable"),
    ],
)
def test_pretrain_rejects_bad_arguments(make_model, arguments, error, match):
    model = make_model(lambda: MLP(1, (4,)), dtype=torch.float32)
    call = {"sample_tasks": Sinusoid().sample, "iterations": 2, "loss_fn": F.mse_loss, "device": "cpu"}
    call.update(arguments)

    with pytest.raises(error, match=match):
        mb.baselines.pretrain(model, call.pop("sample_tasks"), **call)


@pytest.mark.parametrize(
    ("amplitude", "phase"),
    [((0.1, 5.0), (0.0, math.pi)), ((1.0, 2.0), (0.5, 2.0)), ((0.1, 5.0), (0.0, 2 * math.pi))],
)
def test_sinusoid_mean_equals_the_average_of_many_tasks(amplitude, phase):
    family = Sinusoid(amplitude=amplitude, phase=phase)
    waves = family.sample_waves(200_000, generator=generator())
    x = torch.linspace(-5.0, 5.0, 21, dtype=torch.float64)

    average = mb.tasks.SineWaves(waves.amplitude.double(), waves.phase.double()).curve(x).mean(dim=0)[:, 0]

    torch.testing.assert_close(mb.baselines.sinusoid_mean(family, x), average, atol=0.02, rtol=0)


def test_sinusoid_mean_of_the_paper_family_is_a_cosine():
    x = torch.linspace(-5.0, 5.0, 11, dtype=torch.float64)

    mean = mb.baselines.sinusoid_mean(Sinusoid(), x)

    torch.testing.assert_close(mean, (2 / math.pi) * 2.55 * torch.cos(x))


def test_sinusoid_mean_rejects_other_arguments():
    with pytest.raises(TypeError, match="family must be a mamlbook.tasks.Sinusoid"):
        mb.baselines.sinusoid_mean("sinusoid", torch.zeros(3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mb.baselines.sinusoid_mean(Sinusoid(), [0.0, 1.0])


def test_train_from_scratch_with_many_steps_fits_the_support_points():
    batch = Sinusoid().sample(10, 5, 5, generator=generator())
    on_support = mb.TaskBatch(batch.support_x, batch.support_y, batch.support_x, batch.support_y)

    run = mb.baselines.train_from_scratch(lambda: MLP(1), on_support, steps=500, lr=0.01, loss_fn=F.mse_loss)

    losses = run.result.mean
    assert losses.shape == (501,)
    assert losses[-1] < 0.05 * losses[0]


def test_train_from_scratch_is_evaluate_from_a_seeded_initialisation(sine_batch):
    batch = sine_batch(6, 5, 7, dtype=torch.float32)

    run = mb.baselines.train_from_scratch(
        lambda: MLP(1, (8,)), batch, steps=4, lr=0.02, loss_fn=F.mse_loss, seed=5
    )

    with torch.random.fork_rng():
        torch.manual_seed(5)
        expected_init = dict(MLP(1, (8,)).named_parameters())
    for name, tensor in expected_init.items():
        torch.testing.assert_close(run.params[name], tensor.detach(), rtol=0, atol=0)
    expected = mb.evaluate(run.model, run.params, batch, loss_fn=F.mse_loss, inner_lr=0.02, inner_steps=4)
    torch.testing.assert_close(run.result.per_task, expected.per_task, rtol=0, atol=0)
    assert not any(tensor.requires_grad for tensor in run.params.values())


def test_train_from_scratch_leaves_the_global_generator_alone(sine_batch):
    batch = sine_batch(2, 3, 3, dtype=torch.float32)
    state = torch.random.get_rng_state()

    first = mb.baselines.train_from_scratch(lambda: MLP(1, (4,)), batch, steps=1, lr=0.01, loss_fn=F.mse_loss)
    other = mb.baselines.train_from_scratch(
        lambda: MLP(1, (4,)), batch, steps=1, lr=0.01, loss_fn=F.mse_loss, seed=1
    )

    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(first.params["head.weight"], other.params["head.weight"])


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"model_factory": MLP(1)}, TypeError, "model_factory must be callable"),
        ({"model_factory": lambda: "network"}, TypeError, r"model_factory\(\) must return a torch.nn.Module"),
        ({"batch": (torch.zeros(2, 3, 1),)}, TypeError, "batch must be a TaskBatch"),
        ({"steps": -1}, ValueError, "steps must be >= 0"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number"),
        ({"loss_fn": None}, TypeError, "loss_fn must be callable"),
        ({"seed": -2}, ValueError, "seed must be >= 0"),
    ],
)
def test_train_from_scratch_rejects_bad_arguments(sine_batch, arguments, error, match):
    call = {
        "model_factory": lambda: MLP(1, (4,)),
        "batch": sine_batch(2, 3, 3, dtype=torch.float32),
        "steps": 1,
        "lr": 0.01,
        "loss_fn": F.mse_loss,
    }
    call.update(arguments)

    with pytest.raises(error, match=match):
        mb.baselines.train_from_scratch(call.pop("model_factory"), call.pop("batch"), **call)
