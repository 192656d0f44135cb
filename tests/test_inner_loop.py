"""The inner loop's options as one value (``InnerLoop``), and the loop itself (``adaptation``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP

EXACT = {"atol": 1e-10, "rtol": 1e-10}


@pytest.fixture
def mlp(make_model):
    return make_model(lambda: MLP(1, (8,), 1))


def test_the_three_forms_of_inner_lr_become_one_rate_per_step_and_parameter(mlp, theta):
    params = theta(mlp)
    number = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=2)
    assert number.steps == 2 and number.adapted == tuple(params)
    assert all(rates == dict.fromkeys(params, 0.1) for rates in number.rates)

    per_parameter = {name: torch.full_like(tensor, 0.2) for name, tensor in params.items()}
    learned = mb.InnerLoop.of(params, inner_lr=per_parameter, inner_steps=3)
    assert len(learned.rates) == 3 and all(
        rates["head.bias"] is per_parameter["head.bias"] for rates in learned.rates
    )

    per_step = [{name: torch.tensor(rate) for name in params} for rate in (0.3, 0.0)]
    stepped = mb.InnerLoop.of(params, inner_lr=per_step, inner_steps=2)
    assert [float(rates["head.weight"]) for rates in stepped.rates] == pytest.approx([0.3, 0.0])


def test_adapt_only_selects_by_name_or_module_prefix(mlp, theta):
    params = theta(mlp)
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=1, adapt_only="head")
    assert loop.adapted == ("head.weight", "head.bias")
    assert set(loop.rates[0]) == {"head.weight", "head.bias"}
    assert loop.options() == set()
    assert mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=1, first_order=True).options() == {"first_order"}


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"first_order": "False"}, TypeError, "first_order must be a bool"),
        ({"inner_steps": 1.0}, TypeError, "inner_steps must be an integer"),
        ({"inner_steps": -1}, ValueError, "inner_steps must be >= 0"),
        ({"inner_lr": float("nan")}, ValueError, "inner_lr must be a finite number >= 0"),
    ],
)
def test_bad_options_are_named(mlp, theta, changes, error, match):
    with pytest.raises(error, match=match):
        mb.InnerLoop.of(theta(mlp), **{"inner_lr": 0.1, "inner_steps": 1, **changes})


def test_an_inner_loop_is_given_alone_or_not_at_all(mlp, theta, sine_batch):
    params, batch = theta(mlp), sine_batch()
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=1)
    with pytest.raises(TypeError, match="give inner_loop alone"):
        mb.maml_loss(mlp, params, batch, loss_fn=F.mse_loss, inner_loop=loop, inner_steps=1)
    with pytest.raises(TypeError, match="give inner_lr and inner_steps, or an inner_loop"):
        mb.maml_loss(mlp, params, batch, loss_fn=F.mse_loss, inner_lr=0.1)
    with pytest.raises(TypeError, match="inner_loop must be a mamlbook.InnerLoop"):
        mb.maml_loss(mlp, params, batch, loss_fn=F.mse_loss, inner_loop={"inner_steps": 1})


def test_an_inner_loop_of_another_model_is_refused(make_model, mlp, theta, sine_batch):
    other = make_model(lambda: MLP(1, (4, 4), 1))
    loop = mb.InnerLoop.of(theta(other), inner_lr=0.1, inner_steps=1, adapt_only="body.2")
    with pytest.raises(ValueError, match=r"inner_loop adapts \['body.2.weight', 'body.2.bias'\]"):
        mb.maml_loss(mlp, theta(mlp), sine_batch(), loss_fn=F.mse_loss, inner_loop=loop)
    others = theta(other)
    wide = {name: torch.full_like(others[name], 0.1) for name in theta(mlp)}  # the other model's shapes
    with pytest.raises(ValueError, match=r"inner_loop.rates\[0\]\['body.0.weight'\] must be a scalar or"):
        mb.adapt(
            mlp,
            theta(mlp),
            *sine_batch()[:2],
            loss_fn=F.mse_loss,
            inner_loop=mb.InnerLoop((wide,), tuple(wide)),
        )


def test_inner_loop_gives_the_same_numbers_as_its_options(mlp, theta, sine_batch, backend):
    params, batch = theta(mlp), sine_batch()
    options = {"inner_lr": 0.05, "inner_steps": 2, "first_order": True, "adapt_only": "head"}
    loop = mb.InnerLoop.of(params, **options)
    by_value = mb.maml_loss(mlp, params, batch, loss_fn=F.mse_loss, inner_loop=loop, backend=backend)
    by_options = mb.maml_loss(mlp, params, batch, loss_fn=F.mse_loss, **options, backend=backend)
    torch.testing.assert_close(by_value, by_options, **EXACT)


@pytest.mark.parametrize("learned", [None, "per_parameter", "per_layer_per_step"])
def test_the_history_records_the_inner_loop_to_evaluate_with(make_model, learned):
    model = make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)
    config = mb.MetaTrainConfig(
        iterations=3,
        meta_batch_size=2,
        inner_lr=0.05,
        inner_steps=2,
        learned_inner_lr=learned,
        adapt_only=("head",),
    )
    history = mb.meta_train(model, mb.tasks.Sinusoid().sample, config, loss_fn=F.mse_loss, progress=False)
    assert history.inner_loop.steps == 2 and history.inner_loop.adapted == ("head.weight", "head.bias")
    params = dict(model.named_parameters())
    batch = mb.tasks.Sinusoid().sample(3, generator=torch.Generator().manual_seed(0))
    recorded = mb.evaluate(model, params, batch, loss_fn=F.mse_loss, inner_loop=history.inner_loop)
    spelled_out = mb.evaluate(
        model, params, batch, loss_fn=F.mse_loss, inner_lr=history.inner_lr, inner_steps=2, adapt_only="head"
    )
    torch.testing.assert_close(recorded.per_task, spelled_out.per_task, atol=0, rtol=0)


def test_adaptation_yields_every_step_with_the_losses_it_started_from(mlp, theta, sine_batch):
    params, batch = theta(mlp), sine_batch(num_tasks=3)
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=3)

    def one_task(task_params, x, y):
        return F.mse_loss(torch.func.functional_call(mlp, task_params, (x,)), y)

    support_losses = mb.inner.vmapped(one_task, batch.support_x, batch.support_y)
    start = mb.inner.per_task(params, 3)
    steps = list(mb.inner.adaptation(support_losses, start, loop))
    assert [step.number for step in steps] == [1, 2, 3]
    before = [start] + [step.adapted for step in steps[:-1]]
    for step, point in zip(steps, before, strict=True):
        assert step.support_losses.shape == (3,) and not step.support_losses.requires_grad
        torch.testing.assert_close(step.support_losses, support_losses(point).detach(), **EXACT)
    final = mb.adapt_tasks(mlp, params, batch.support_x, batch.support_y, loss_fn=F.mse_loss, inner_loop=loop)
    for name in params:
        torch.testing.assert_close(steps[-1].adapted[name], final[name], **EXACT)


def test_a_diverging_task_is_named_with_its_step(mlp, theta, sine_batch):
    batch = sine_batch(num_tasks=3)
    support_y = batch.support_y.clone()
    support_y[1] = 1e30
    message = r"support loss of task 1 became non-finite at inner step \d of 3 .*inner_lr=10.0"
    with pytest.raises(mb.NonFiniteLossError, match=message):
        mb.adapt_tasks(
            mlp, theta(mlp), batch.support_x, support_y, loss_fn=F.mse_loss, inner_lr=10.0, inner_steps=3
        )
