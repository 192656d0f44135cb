"""Inputs that would give a silently wrong loss, or fail deep inside torch, are refused at
the boundary with a message that names what was passed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mamlbook as mb
from mamlbook.models import MLP


def sine_batch(num_tasks=3, dtype=torch.float64):
    batch = mb.tasks.Sinusoid().sample(num_tasks, 5, 6, generator=torch.Generator().manual_seed(0))
    return mb.TaskBatch(*(tensor.to(dtype) for tensor in batch))


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return MLP(1, (8,)).to(dtype)


def squeezed_targets(batch):
    """The regression targets ``(T, K)`` instead of ``(T, K, 1)``: the classic broadcasting slip."""
    return mb.TaskBatch(batch.support_x, batch.support_y[..., 0], batch.query_x, batch.query_y[..., 0])


def test_targets_that_would_broadcast_against_the_predictions_are_refused(theta, backend):
    if backend == "closed_form":
        pytest.skip("the closed form refuses these shapes itself; backend='auto' falls back")
    model = mlp()
    with pytest.raises(
        ValueError, match=r"prediction for a task has shape \(5, 1\) and its target \(5,\).*\(5, 5\)"
    ):
        mb.maml_loss(
            model,
            theta(model),
            squeezed_targets(sine_batch()),
            loss_fn=F.mse_loss,
            inner_lr=0.01,
            inner_steps=1,
            backend=backend,
        )


def test_meta_train_refuses_broadcasting_targets_before_any_step():
    model = mlp(torch.float32)
    before = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}

    def sample_tasks(num_tasks, *, generator):
        return squeezed_targets(mb.tasks.Sinusoid().sample(num_tasks, 5, 6, generator=generator))

    config = mb.MetaTrainConfig(iterations=3, meta_batch_size=2)
    with pytest.raises(ValueError, match="would broadcast them to"):
        mb.meta_train(model, sample_tasks, config, loss_fn=F.mse_loss, device="cpu", progress=False)
    for name, tensor in model.named_parameters():
        assert torch.equal(tensor, before[name])


def test_a_loss_marked_with_allow_broadcasting_takes_other_shapes(theta, backend):
    model, batch = mlp(), sine_batch()
    squeezing = mb.allow_broadcasting(lambda prediction, target: F.mse_loss(prediction.squeeze(-1), target))
    options = {"inner_lr": 0.01, "inner_steps": 2, "backend": backend}
    params = theta(model)
    marked = mb.maml_loss(model, params, squeezed_targets(batch), loss_fn=squeezing, **options)
    plain = mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, **options)
    torch.testing.assert_close(marked, plain, rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        mb.allow_broadcasting("mse")


def test_float_class_labels_are_refused_and_integer_ones_accepted(theta):
    model = nn.Linear(4, 3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6))
    good = mb.TaskBatch(x, labels, x, labels)
    mb.maml_loss(model, theta(model), good, loss_fn=F.cross_entropy, inner_lr=0.1, inner_steps=1)
    floats = mb.TaskBatch(x, labels.double(), x, labels.double())
    with pytest.raises(ValueError, match=r"target \(6,\) \(torch.float64\).*integer class labels"):
        mb.maml_loss(model, theta(model), floats, loss_fn=F.cross_entropy, inner_lr=0.1, inner_steps=1)


@pytest.mark.parametrize("function", ["adapt", "maml_loss", "evaluate"])
def test_a_loss_with_reduction_none_is_refused(function, theta):
    model, batch = mlp(), sine_batch()
    per_example = torch.nn.MSELoss(reduction="none")
    with pytest.raises(
        ValueError, match=r"one scalar per task, shape \(\d,\), got \(\d, \d, 1\).*reduction='none'"
    ):
        if function == "adapt":
            mb.adapt(
                model,
                theta(model),
                batch.support_x[0],
                batch.support_y[0],
                loss_fn=per_example,
                inner_lr=0.01,
                inner_steps=1,
            )
        elif function == "maml_loss":
            mb.maml_loss(model, theta(model), batch, loss_fn=per_example, inner_lr=0.01, inner_steps=1)
        else:
            mb.evaluate(
                model,
                theta(model),
                batch,
                loss_fn=F.mse_loss,
                metric=per_example,
                inner_lr=0.01,
                inner_steps=1,
            )


def test_an_input_width_the_model_does_not_take_is_named(theta, backend):
    if backend == "closed_form":
        pytest.skip("the closed form refuses these shapes itself; backend='auto' falls back")
    model, batch = mlp(), sine_batch()
    wide = mb.TaskBatch(
        batch.support_x.repeat(1, 1, 2), batch.support_y, batch.query_x.repeat(1, 1, 2), batch.query_y
    )
    with pytest.raises(ValueError, match=r"the model cannot run on a task's inputs of shape \(5, 2\)"):
        mb.maml_loss(
            model, theta(model), wide, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1, backend=backend
        )


def test_a_batch_of_another_dtype_than_the_params_is_named(theta):
    model = mlp(torch.float64)
    with pytest.raises(
        ValueError, match=r"batch.support_x is torch.float32 but the params are torch.float64"
    ):
        mb.maml_loss(
            model,
            theta(model),
            sine_batch(dtype=torch.float32),
            loss_fn=F.mse_loss,
            inner_lr=0.01,
            inner_steps=1,
        )
    batch = sine_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^x is torch.float32 but the params are torch.float64"):
        mb.adapt(
            model,
            theta(model),
            batch.support_x[0],
            batch.support_y[0],
            loss_fn=F.mse_loss,
            inner_lr=0.01,
            inner_steps=1,
        )


def test_params_spread_over_devices_are_named(theta):
    model = mlp()
    params = theta(model)
    params["body.0.bias"] = torch.empty_like(params["body.0.bias"], device="meta")
    with pytest.raises(ValueError, match=r"params are spread over the devices \['cpu', 'meta'\]"):
        mb.maml_loss(model, params, sine_batch(), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1)


def test_a_checkpoint_of_another_dtype_is_named_when_loaded_for_a_model(tmp_path):
    model = mlp(torch.float32)
    path = mb.save_params(
        {name: tensor.double() for name, tensor in model.named_parameters()}, tmp_path / "p.pt"
    )
    with pytest.raises(
        ValueError, match=r"holds 'body.0.weight' as torch.float64 but the model's is torch.float32"
    ):
        mb.load_params(path, model=model)
    assert mb.load_params(path, model=model.double())["body.0.weight"].dtype == torch.float64


def test_class_labels_outside_the_models_outputs_are_named(theta, backend):
    if backend == "closed_form":
        pytest.skip("the closed form takes the MSE alone")
    model = nn.Linear(4, 3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6))
    labels[1, 2] = 7
    batch = mb.TaskBatch(x, labels, x, labels)
    with pytest.raises(
        ValueError, match=r"a target label is outside 0..2, the classes of the model's 3 outputs"
    ):
        mb.maml_loss(
            model, theta(model), batch, loss_fn=F.cross_entropy, inner_lr=0.1, inner_steps=1, backend=backend
        )
