"""``evaluate`` against the inner loop it runs, and ``meta_train`` on sinusoids."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.tasks import Sinusoid


@pytest.fixture
def model(make_model):
    return make_model(lambda: MLP(1, (16, 16), 1))


def query_loss_after(model, params, batch, task, steps, inner_lr):
    """Query loss of one task after ``steps`` steps of ``adapt``, computed task by task."""
    support_x, support_y, query_x, query_y = (tensor[task] for tensor in batch)
    adapted = mb.adapt(
        model, params, support_x, support_y, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=steps
    )
    return F.mse_loss(functional_call(model, adapted, (query_x,)), query_y).detach()


def test_evaluate_per_task_curve_equals_adapt_step_by_step(model, sine_batch, theta):
    params = theta(model)
    batch = sine_batch(5, 6, 7)
    steps, inner_lr = 3, 0.05

    result = mb.evaluate(model, params, batch, loss_fn=F.mse_loss, inner_lr=inner_lr, inner_steps=steps)

    assert result.per_task.shape == (5, steps + 1)
    expected = torch.tensor(
        [
            [query_loss_after(model, params, batch, t, s, inner_lr) for s in range(steps + 1)]
            for t in range(5)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(result.per_task, expected, atol=1e-12, rtol=1e-12)
    assert (result.mean[1:] < result.mean[0]).all()  # adapting helps on average
    assert not result.per_task.requires_grad


def test_evaluate_step_zero_is_the_plain_query_loss(model, sine_batch, theta):
    params = theta(model)
    batch = sine_batch(4)

    result = mb.evaluate(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)

    plain = torch.stack(
        [F.mse_loss(model(x), y) for x, y in zip(batch.query_x, batch.query_y, strict=True)]
    ).detach()
    torch.testing.assert_close(result.per_task[:, 0], plain, atol=1e-12, rtol=1e-12)


def test_evaluate_mean_and_ci95_follow_from_per_task(model, sine_batch, theta):
    result = mb.evaluate(model, theta(model), sine_batch(6), loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)

    per_task = result.per_task
    mean = per_task.sum(dim=0) / 6
    std = ((per_task - mean) ** 2).sum(dim=0).div(6 - 1).sqrt()
    torch.testing.assert_close(result.mean, mean)
    torch.testing.assert_close(result.ci95, 1.96 * std / math.sqrt(6))
    assert (result.ci95 > 0).all()


def test_evaluate_on_one_task_has_a_zero_interval(model, sine_batch, theta):
    result = mb.evaluate(model, theta(model), sine_batch(1), loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)

    assert result.per_task.shape == (1, 3)
    torch.testing.assert_close(result.mean, result.per_task[0])
    assert torch.equal(result.ci95, torch.zeros(3, dtype=result.per_task.dtype))


def test_evaluate_in_chunks_gives_the_same_losses(model, sine_batch, theta):
    params, batch = theta(model), sine_batch(7)
    kwargs = {"loss_fn": F.mse_loss, "inner_lr": 0.05, "inner_steps": 2}

    whole = mb.evaluate(model, params, batch, **kwargs)
    chunked = mb.evaluate(model, params, batch, chunk_size=3, **kwargs)

    torch.testing.assert_close(chunked.per_task, whole.per_task, atol=1e-12, rtol=0)


def test_evaluate_with_zero_steps_has_only_the_initial_loss(model, sine_batch, theta):
    result = mb.evaluate(model, theta(model), sine_batch(3), loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=0)
    assert result.per_task.shape == (3, 1)
    assert result.mean.shape == result.ci95.shape == (1,)


def test_evaluate_warns_and_keeps_the_losses_of_a_diverging_task():
    model = MLP(1, (), 1)
    params = {"head.weight": torch.ones(1, 1), "head.bias": torch.zeros(1)}
    # Task 0: all-zero data, zero gradients, never moves; task 1: inputs 3, targets 0, explodes.
    support_x = torch.stack([torch.zeros(4, 1), torch.full((4, 1), 3.0)])
    query_x = torch.stack([torch.zeros(5, 1), torch.full((5, 1), 3.0)])
    batch = mb.TaskBatch(support_x, torch.zeros(2, 4, 1), query_x, torch.zeros(2, 5, 1))

    with pytest.warns(RuntimeWarning, match=r"1 of 2 tasks reached a non-finite query loss"):
        result = mb.evaluate(model, params, batch, loss_fn=F.mse_loss, inner_lr=1e30, inner_steps=3)

    assert result.per_task.shape == (2, 4)
    assert torch.equal(result.per_task[0], torch.zeros(4))
    assert result.per_task[1, 0] == 9.0  # before adapting: (3 * 1 + 0 - 0)^2
    assert not torch.isfinite(result.per_task[1, -1])
    assert not torch.isfinite(result.mean[-1])  # kept, not dropped from the mean


def test_evaluate_does_not_warn_when_every_task_is_finite(model, sine_batch, theta):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mb.evaluate(model, theta(model), sine_batch(3), loss_fn=F.mse_loss, inner_lr=0.05, inner_steps=2)


def test_evaluation_summary_lists_each_requested_step():
    result = mb.EvaluationResult(
        torch.zeros(2, 3), torch.tensor([1.234, 0.5, 0.25]), torch.tensor([0.1, 0.02, 0.003])
    )
    assert result.summary() == (
        "after  0 steps: 1.23 ± 0.10\nafter  1 steps: 0.50 ± 0.02\nafter  2 steps: 0.25 ± 0.00"
    )
    assert result.summary(steps=(2,), digits=3) == "after  2 steps: 0.250 ± 0.003"


NARROW_SINES = Sinusoid(amplitude=(1.0, 2.0), phase=(0.0, 0.5))


def short_config(**changes):
    config = mb.MetaTrainConfig(
        iterations=40, meta_batch_size=10, inner_lr=0.01, inner_steps=1, outer_lr=1e-2, seed=3
    )
    return dataclasses.replace(config, **changes)


def test_meta_train_lowers_the_meta_loss(make_model):
    model = make_model(lambda: MLP(1, (40, 40), 1), dtype=torch.float32)
    before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    held_out = NARROW_SINES.sample(50, generator=torch.Generator().manual_seed(99))
    kwargs = {"loss_fn": F.mse_loss, "inner_lr": 0.01, "inner_steps": 1}
    initial = mb.evaluate(model, before, held_out, **kwargs).mean[1]

    history = mb.meta_train(
        model, NARROW_SINES.sample, short_config(), loss_fn=F.mse_loss, device="cpu", progress=False
    )

    losses = history.meta_losses
    assert losses.shape == (40,)
    assert torch.isfinite(losses).all()
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()
    trained = mb.evaluate(model, dict(model.named_parameters()), held_out, **kwargs).mean[1]
    assert trained < 0.5 * initial  # on tasks it never saw
    assert history.device == "cpu"
    assert history.seconds > 0
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_meta_train_is_reproducible_from_its_arguments(make_model):
    config = short_config(iterations=5)
    runs = []
    for _ in range(2):
        model = make_model(lambda: MLP(1, (8, 8), 1), dtype=torch.float32)
        history = mb.meta_train(
            model, NARROW_SINES.sample, config, loss_fn=F.mse_loss, device="cpu", progress=False
        )
        runs.append((history.meta_losses, dict(model.named_parameters())))

    (losses_a, params_a), (losses_b, params_b) = runs
    assert torch.equal(losses_a, losses_b)
    assert all(torch.equal(params_a[name], params_b[name]) for name in params_a)
    model = make_model(lambda: MLP(1, (8, 8), 1), dtype=torch.float32)
    other = mb.meta_train(
        model,
        NARROW_SINES.sample,
        short_config(iterations=5, seed=4),
        loss_fn=F.mse_loss,
        device="cpu",
        progress=False,
    )
    assert not torch.equal(other.meta_losses, losses_a)


def test_meta_train_leaves_the_global_rng_alone(make_model):
    model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
    state = torch.random.get_rng_state()
    mb.meta_train(
        model,
        NARROW_SINES.sample,
        short_config(iterations=2),
        loss_fn=F.mse_loss,
        device="cpu",
        progress=False,
    )
    assert torch.equal(torch.random.get_rng_state(), state)


def test_meta_train_first_order_and_zero_steps_run(make_model):
    for changes in ({"first_order": True, "inner_steps": 2}, {"inner_steps": 0}):
        model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
        history = mb.meta_train(
            model,
            NARROW_SINES.sample,
            short_config(iterations=3, **changes),
            loss_fn=F.mse_loss,
            device="cpu",
            progress=False,
        )
        assert history.meta_losses.shape == (3,)
        assert torch.isfinite(history.meta_losses).all()


def test_meta_train_first_iteration_loss_is_the_maml_loss_of_the_first_batch(make_model):
    model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
    config = short_config(iterations=1, first_order=True, inner_steps=2)
    first_batch = NARROW_SINES.sample(
        config.meta_batch_size, generator=torch.Generator().manual_seed(config.seed)
    )
    expected = mb.maml_loss(
        model,
        dict(model.named_parameters()),
        first_batch,
        loss_fn=F.mse_loss,
        inner_lr=0.01,
        inner_steps=2,
        first_order=True,
    )

    history = mb.meta_train(
        model, NARROW_SINES.sample, config, loss_fn=F.mse_loss, device="cpu", progress=False
    )

    torch.testing.assert_close(history.meta_losses[0], expected.detach())


def test_config_is_frozen_and_has_the_paper_preset():
    config = mb.MetaTrainConfig.sinusoid_paper()
    assert (
        config.iterations,
        config.meta_batch_size,
        config.inner_lr,
        config.inner_steps,
        config.outer_lr,
    ) == (
        70_000,
        25,
        0.01,
        1,
        1e-3,
    )
    assert config.first_order is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.iterations = 1  # type: ignore[misc]


def test_resolve_device_auto_is_cuda_when_available_else_cpu():
    if torch.cuda.is_available():
        assert mb.resolve_device("auto") == torch.device("cuda")
    else:
        assert mb.resolve_device("auto") == torch.device("cpu")
    assert mb.resolve_device("cpu") == torch.device("cpu")
    assert mb.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_resolve_device_cuda_raises_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        mb.resolve_device("cuda")


@pytest.mark.parametrize("device", ["gpu", "", 3.5])
def test_resolve_device_rejects_unknown_devices(device):
    with pytest.raises(ValueError, match="device"):
        mb.resolve_device(device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_meta_train_on_cuda_matches_the_cpu(make_model):
    config = short_config(iterations=3)
    histories = []
    for device in ("cpu", "cuda"):
        model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
        histories.append(
            mb.meta_train(
                model, NARROW_SINES.sample, config, loss_fn=F.mse_loss, device=device, progress=False
            )
        )
        assert next(model.parameters()).device.type == device
    assert histories[1].device.startswith("cuda")
    torch.testing.assert_close(histories[1].meta_losses, histories[0].meta_losses, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_on_the_cpu_with_params_on_cuda_raises(make_model, sine_batch):
    model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32).cuda()
    with pytest.raises(ValueError, match=r"batch\.support_x is on cpu"):
        mb.maml_loss(
            model,
            dict(model.named_parameters()),
            sine_batch(dtype=torch.float32),
            loss_fn=F.mse_loss,
            inner_lr=0.1,
            inner_steps=1,
        )
