"""Every flag of the public functions is a real bool: the string "False" is refused, not read as true."""

import functools

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP


def sine_setup():
    torch.manual_seed(0)
    model = MLP(1, (8,))
    batch = mb.tasks.Sinusoid().sample(2, 5, 5, generator=torch.Generator().manual_seed(0))
    return model, dict(model.named_parameters()), batch


def sampler():
    return functools.partial(mb.tasks.Sinusoid().sample, k_shot=5, n_query=5)


def call_adapt(flag):
    model, params, batch = sine_setup()
    x, y = batch.support_x[0], batch.support_y[0]
    mb.adapt(model, params, x, y, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1, first_order=flag)


def call_maml_loss(flag):
    model, params, batch = sine_setup()
    mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1, first_order=flag)


def call_reptile_step(flag):
    model, params, batch = sine_setup()
    mb.reptile.reptile_step(
        model,
        params,
        batch,
        loss_fn=F.mse_loss,
        inner_lr=0.01,
        inner_steps=1,
        outer_step_size=0.5,
        include_query=flag,
    )


def call_meta_train(flag):
    config = mb.MetaTrainConfig(iterations=1, meta_batch_size=2)
    mb.meta_train(MLP(1, (8,)), sampler(), config, loss_fn=F.mse_loss, device="cpu", progress=flag)


def call_reptile_train(flag):
    config = mb.reptile.ReptileConfig(iterations=1, meta_batch_size=2)
    mb.reptile.reptile_train(MLP(1, (8,)), sampler(), config, loss_fn=F.mse_loss, device="cpu", progress=flag)


def call_pretrain(flag):
    mb.baselines.pretrain(
        MLP(1, (8,)), sampler(), iterations=1, loss_fn=F.mse_loss, device="cpu", progress=flag
    )


def call_reproduce(flag):
    mb.reproduce.reproduce("sinusoid", "quick", device="cpu", progress=flag)


def call_save_params(flag, tmp_path):
    mb.save_params({"w": torch.zeros(2)}, tmp_path / "w.pt", allow_non_finite=flag)


def call_conv4(flag):
    mb.models.Conv4(5, stride_conv=flag)


def call_plot_versus(flag):
    mb.plotting.plot_versus([1, 2], {"a": [1.0, 2.0]}, xlabel="x", logx=flag)


def call_plot_loss_curves(flag):
    mb.plotting.plot_loss_curves({"a": [1.0, 0.5]}, log_scale=flag)


def call_meta_train_config(flag):
    mb.MetaTrainConfig(first_order=flag)


def call_reptile_config(flag):
    mb.reptile.ReptileConfig(include_query=flag)


CALLS = {
    "adapt first_order": call_adapt,
    "maml_loss first_order": call_maml_loss,
    "reptile_step include_query": call_reptile_step,
    "meta_train progress": call_meta_train,
    "reptile_train progress": call_reptile_train,
    "pretrain progress": call_pretrain,
    "reproduce progress": call_reproduce,
    "save_params allow_non_finite": call_save_params,
    "Conv4 stride_conv": call_conv4,
    "plot_versus logx": call_plot_versus,
    "plot_loss_curves log_scale": call_plot_loss_curves,
    "MetaTrainConfig first_order": call_meta_train_config,
    "ReptileConfig include_query": call_reptile_config,
}


@pytest.mark.parametrize("flag", ["False", 0, None])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_flag_that_is_not_a_bool_is_refused_naming_it(name, flag, tmp_path):
    call = CALLS[name]
    argument = name.split()[1]
    with pytest.raises(TypeError, match=rf"{argument} must be a bool"):
        call(flag, tmp_path) if "tmp_path" in call.__code__.co_varnames else call(flag)
