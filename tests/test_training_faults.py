"""Training that diverges stops with an error naming the meta-iteration, theta kept good;
checkpoints refuse what a diverged run leaves behind."""

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP


def sample_sine_tasks():
    return functools.partial(mb.tasks.Sinusoid().sample, k_shot=5, n_query=6)


def counting_sampler(counter):
    """The sine-task sampler, counting in ``counter["iterations"]`` the batches it has drawn."""
    sample = sample_sine_tasks()

    def sample_tasks(num_tasks, *, generator):
        counter["iterations"] += 1
        return sample(num_tasks, generator=generator)

    return sample_tasks


def loss_with_infinite_gradient_after(counter, iterations):
    """The MSE; after ``iterations`` batches its gradient on the query sets (6 points, the
    support sets have 5) is infinite, its value unchanged: only the meta-gradient breaks."""

    def loss_fn(prediction, target):
        loss = F.mse_loss(prediction, target)
        if counter["iterations"] > iterations and prediction.shape[0] == 6:
            loss = loss + (prediction - prediction.detach()).abs().sqrt().sum()  # + 0, d sqrt(0) = inf
        return loss

    return loss_fn


def make_model():
    torch.manual_seed(0)
    return MLP(1, (8,))


def test_a_finite_loss_with_a_non_finite_gradient_stops_training_before_theta_changes():
    config = mb.MetaTrainConfig(iterations=10, meta_batch_size=2, inner_lr=0.01, inner_steps=1)
    three_good = make_model()
    mb.meta_train(
        three_good,
        sample_sine_tasks(),
        dataclasses.replace(config, iterations=3),
        loss_fn=F.mse_loss,
        device="cpu",
        progress=False,
    )
    model, counter = make_model(), {"iterations": 0}
    loss_fn = loss_with_infinite_gradient_after(counter, 3)
    with pytest.raises(
        mb.NonFiniteLossError, match=r"meta-iteration 3: the meta-loss is finite .* gradient"
    ) as raised:
        mb.meta_train(model, counting_sampler(counter), config, loss_fn=loss_fn, device="cpu", progress=False)
    for name, tensor in model.named_parameters():
        torch.testing.assert_close(tensor, dict(three_good.named_parameters())[name], rtol=0, atol=0)
    history = raised.value.history
    assert history.meta_losses.shape == (3,) and bool(torch.isfinite(history.meta_losses).all())
    assert history.device == "cpu"


def test_a_diverging_inner_loop_names_the_meta_iteration_task_and_step():
    model = make_model()
    config = mb.MetaTrainConfig(iterations=5, meta_batch_size=2, inner_lr=1e30, inner_steps=2)
    with pytest.raises(
        mb.NonFiniteLossError, match=r"meta-iteration 0: .*task \d.*step .*smaller inner_lr"
    ) as raised:
        mb.meta_train(model, sample_sine_tasks(), config, loss_fn=F.mse_loss, device="cpu", progress=False)
    assert raised.value.history.meta_losses.shape == (0,)
    assert all(bool(torch.isfinite(tensor).all()) for tensor in model.parameters())


def test_a_meta_loss_that_grew_before_it_diverged_points_at_the_outer_lr():
    error = mb.NonFiniteLossError("the query loss of task 0 became non-finite")
    meta_losses = torch.tensor([1.0, 0.5, 3.0, 40.0])
    stopped = mb.training._stopped_at(4, error, meta_losses, 1.0, torch.device("cpu"))
    assert "meta-iteration 4" in str(stopped) and "smaller outer_lr" in str(stopped)
    calm = mb.training._stopped_at(4, error, torch.tensor([1.0, 0.9, 0.8, 0.8]), 1.0, torch.device("cpu"))
    assert "outer_lr" not in str(calm)


def test_reptile_training_stops_at_the_meta_iteration_that_diverged():
    model = make_model()
    config = mb.reptile.ReptileConfig(iterations=4, meta_batch_size=2, inner_lr=1e30, inner_steps=2)
    with pytest.raises(mb.NonFiniteLossError, match=r"meta-iteration 0: ") as raised:
        mb.reptile.reptile_train(
            model, sample_sine_tasks(), config, loss_fn=F.mse_loss, device="cpu", progress=False
        )
    assert raised.value.history.meta_losses.shape == (0,)
    assert all(bool(torch.isfinite(tensor).all()) for tensor in model.parameters())


def test_save_params_refuses_non_finite_tensors_unless_asked(tmp_path):
    params = {"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(1)}
    path = tmp_path / "theta.pt"
    with pytest.raises(ValueError, match=r"params\['w'\] holds NaN or inf.*allow_non_finite=True"):
        mb.save_params(params, path)
    assert not path.exists()
    mb.save_params(params, path, allow_non_finite=True)
    assert torch.isnan(mb.load_params(path)["w"][1])
    with pytest.raises(TypeError, match="allow_non_finite must be a bool"):
        mb.save_params(params, path, allow_non_finite="yes")


def test_save_params_saves_a_view_as_its_own_data(tmp_path):
    large = torch.randn(1000, 100)
    path = tmp_path / "row.pt"
    mb.save_params({"row": large[3]}, path)
    loaded = mb.load_params(path)["row"]
    torch.testing.assert_close(loaded, large[3], rtol=0, atol=0)
    assert loaded.untyped_storage().nbytes() == 100 * 4
    assert path.stat().st_size < 10 * 100 * 4  # not the 400 kB of the whole tensor


def test_meta_training_names_a_model_or_sampler_of_the_wrong_kind():
    config = mb.MetaTrainConfig(iterations=1, meta_batch_size=2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        mb.meta_train("mlp", sample_sine_tasks(), config, loss_fn=F.mse_loss, device="cpu", progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        mb.reptile.reptile_train(
            "mlp",
            sample_sine_tasks(),
            mb.reptile.ReptileConfig(iterations=1),
            loss_fn=F.mse_loss,
            progress=False,
        )
    with pytest.raises(TypeError, match="sample_tasks must return a mamlbook.TaskBatch, got list"):
        mb.meta_train(
            make_model(), lambda n, generator: [n], config, loss_fn=F.mse_loss, device="cpu", progress=False
        )


def test_meta_objective_names_losses_that_are_not_one_per_task():
    params = dict(make_model().named_parameters())
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=1)

    def two_losses(params_per_task):
        return torch.zeros(2)

    with pytest.raises(ValueError, match=r"shape \(3,\), got \(2,\): one loss per task of the batch"):
        mb.meta.meta_objective(params, two_losses, two_losses, loop, num_tasks=3)
