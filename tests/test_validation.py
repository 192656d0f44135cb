"""Every bad input raises a TypeError or ValueError that names the argument at fault."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.tasks import Sinusoid

FUNCTIONS = ["adapt", "maml_loss", "evaluate"]
BATCH_FUNCTIONS = ["maml_loss", "evaluate"]


@pytest.fixture
def model(make_model):
    return make_model(lambda: MLP(1, (8,), 1), dtype=torch.float32)


@pytest.fixture
def batch(sine_batch):
    return sine_batch(3, 4, 5, dtype=torch.float32)


def call(function, model, params, batch, **overrides):
    """Run ``adapt`` on the first task of ``batch``, or ``maml_loss``/``evaluate`` on all of it."""
    kwargs = {"loss_fn": F.mse_loss, "inner_lr": 0.01, "inner_steps": 1, **overrides}
    if function == "adapt":
        return mb.adapt(model, params, batch.support_x[0], batch.support_y[0], **kwargs)
    return getattr(mb, function)(model, params, batch, **kwargs)


def zeros(*shape):
    return torch.zeros(*shape)


BAD_BATCHES = {
    "support_y with other T": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(2, 4, 1), zeros(3, 5, 1), zeros(3, 5, 1)),
        ValueError,
        r"batch\.support_y has 2 tasks",
    ),
    "query_x with other T": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(4, 5, 1), zeros(4, 5, 1)),
        ValueError,
        r"batch\.query_x has 4 tasks",
    ),
    "query_y with other T": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 5, 1), zeros(1, 5, 1)),
        ValueError,
        r"batch\.query_y has 1 tasks",
    ),
    "support_y with other K": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 3, 1), zeros(3, 5, 1), zeros(3, 5, 1)),
        ValueError,
        r"batch\.support_y has 3",
    ),
    "query_y with other Q": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 5, 1), zeros(3, 6, 1)),
        ValueError,
        r"batch\.query_y has 6",
    ),
    "query inputs of another trailing shape": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 5, 2), zeros(3, 5, 1)),
        ValueError,
        r"batch\.query_x",
    ),
    "T = 0": (
        lambda: mb.TaskBatch(zeros(0, 4, 1), zeros(0, 4, 1), zeros(0, 5, 1), zeros(0, 5, 1)),
        ValueError,
        r"batch has T = 0",
    ),
    "K = 0 support examples": (
        lambda: mb.TaskBatch(zeros(3, 0, 1), zeros(3, 0, 1), zeros(3, 5, 1), zeros(3, 5, 1)),
        ValueError,
        r"batch\.support_x has K = 0",
    ),
    "K = 0 query examples": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 0, 1), zeros(3, 0, 1)),
        ValueError,
        r"batch\.query_x has K = 0",
    ),
    "no task dimension": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3), zeros(3, 5, 1), zeros(3, 5, 1)),
        ValueError,
        r"batch\.support_y must have leading shape",
    ),
    "a field that is not a tensor": (
        lambda: mb.TaskBatch([[0.0]] * 3, zeros(3, 4, 1), zeros(3, 5, 1), zeros(3, 5, 1)),
        TypeError,
        r"batch\.support_x must be a torch\.Tensor",
    ),
    "three fields": (lambda: (zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 5, 1)), TypeError, r"batch must be"),
    "a dict": (lambda: {"support_x": zeros(3, 4, 1)}, TypeError, r"batch must be"),
    "a tensor on another device": (
        lambda: mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 5, 1).to("meta"), zeros(3, 5, 1)),
        ValueError,
        r"batch\.query_x is on meta",
    ),
}


@pytest.mark.parametrize("function", BATCH_FUNCTIONS)
@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_raises_naming_the_field(model, theta, function, case):
    build, error, match = BAD_BATCHES[case]
    with pytest.raises(error, match=match):
        call(function, model, theta(model), build())


def test_a_good_batch_passes_the_checks(model, theta, batch):
    # The same shapes as the bad batches above, but consistent: no error.
    for function in FUNCTIONS:
        call(function, model, theta(model), batch)
    good = mb.TaskBatch(zeros(3, 4, 1), zeros(3, 4, 1), zeros(3, 6, 1), zeros(3, 6, 1))
    assert mb.maml_loss(model, theta(model), good, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=1).isfinite()


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (zeros(4, 1), zeros(3, 1), r"x and y"),
        (zeros(0, 1), zeros(0, 1), r"x and y"),
        ([[0.0]] * 4, zeros(4, 1), r"\bx\b"),
        (zeros(4, 1), [[0.0]] * 4, r"\by\b"),
        (torch.tensor(0.0), torch.tensor(0.0), r"x and y"),
    ],
)
def test_adapt_rejects_bad_support_sets(model, theta, x, y, match):
    with pytest.raises((TypeError, ValueError), match=match):
        mb.adapt(model, theta(model), x, y, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1)


def test_adapt_rejects_support_set_on_another_device(model, theta):
    with pytest.raises(ValueError, match=r"\bx\b.*meta"):
        mb.adapt(
            model,
            theta(model),
            zeros(4, 1).to("meta"),
            zeros(4, 1),
            loss_fn=F.mse_loss,
            inner_lr=0.1,
            inner_steps=1,
        )


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("inner_lr", "error"),
    [(-0.1, ValueError), (math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError)]
    + [("0.1", TypeError), (True, TypeError), (None, TypeError), (torch.tensor(0.1), TypeError)],
)
def test_bad_inner_lr_raises(model, theta, batch, function, inner_lr, error):
    with pytest.raises(error, match="inner_lr"):
        call(function, model, theta(model), batch, inner_lr=inner_lr)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("steps", "error"),
    [(-1, ValueError), (1.5, TypeError), ("1", TypeError), (True, TypeError), (1.0, TypeError)],
)
def test_bad_steps_raise(model, theta, batch, function, steps, error):
    with pytest.raises(error, match="inner_steps"):
        call(function, model, theta(model), batch, inner_steps=steps)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_numpy_numbers_are_accepted(model, theta, batch, function):
    plain = call(function, model, theta(model), batch, inner_lr=0.01, inner_steps=2)
    numpy = call(function, model, theta(model), batch, inner_lr=np.float64(0.01), inner_steps=np.int64(2))
    if function == "adapt":
        plain, numpy = (
            torch.cat([t.flatten() for t in plain.values()]),
            torch.cat([t.flatten() for t in numpy.values()]),
        )
    elif function == "evaluate":
        plain, numpy = plain.per_task, numpy.per_task
    torch.testing.assert_close(numpy, plain, atol=0, rtol=0)


def bad_params(model, case):
    params = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    if case == "missing key":
        del params["head.bias"]
    elif case == "extra key":
        params["head.scale"] = torch.ones(1)
    elif case == "renamed key":
        params["head.b"] = params.pop("head.bias")
    elif case == "wrong shape":
        params["head.weight"] = torch.zeros(8, 1)
    elif case == "not a tensor":
        params["head.bias"] = [0.0]
    elif case == "a list":
        params = list(params.values())
    elif case == "None":
        params = None
    return params


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("missing key", ValueError, r"params does not match the model: missing \['head\.bias'\]"),
        ("extra key", ValueError, r"params does not match the model: .*unexpected \['head\.scale'\]"),
        ("renamed key", ValueError, r"params does not match the model: missing \['head\.bias'\]"),
        ("wrong shape", ValueError, r"params\['head\.weight'\] has shape \(8, 1\)"),
        ("not a tensor", TypeError, r"params\['head\.bias'\] must be a torch\.Tensor"),
        ("a list", TypeError, r"params must be a dict"),
        ("None", TypeError, r"params must be a dict"),
    ],
)
def test_params_that_do_not_match_the_model_raise(model, batch, function, case, error, match):
    with pytest.raises(error, match=match):
        call(function, model, bad_params(model, case), batch)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_model_that_is_not_a_module_raises(model, theta, batch, function):
    with pytest.raises(TypeError, match="model"):
        call(function, lambda x: x, theta(model), batch)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("loss_fn", [None, "mse", 2.0])
def test_loss_fn_that_is_not_callable_raises(model, theta, batch, function, loss_fn):
    with pytest.raises(TypeError, match="loss_fn"):
        call(function, model, theta(model), batch, loss_fn=loss_fn)


def test_non_finite_loss_error_is_a_value_error():
    assert issubclass(mb.NonFiniteLossError, ValueError)


def linear_model_and_params():
    """y = w x + b with w = 1, b = 0: on inputs 3 with targets 0 its gradients are (18, 6)."""
    model = MLP(1, (), 1)
    return model, {"head.weight": torch.ones(1, 1), "head.bias": torch.zeros(1)}


def two_tasks(nan_in=None):
    """Task 0 has all-zero data (zero gradient: it never moves); task 1 has inputs 3, targets 0."""
    support_x = torch.stack([torch.zeros(4, 1), torch.full((4, 1), 3.0)])
    query_x = torch.stack([torch.zeros(5, 1), torch.full((5, 1), 3.0)])
    batch = mb.TaskBatch(support_x, torch.zeros(2, 4, 1), query_x, torch.zeros(2, 5, 1))
    if nan_in is not None:
        getattr(batch, nan_in)[1, 2, 0] = math.nan
    return batch


def test_adapt_names_the_inner_step_where_the_loss_diverged():
    model, params = linear_model_and_params()
    batch = two_tasks()
    # Step 1: loss 9, w -> 1 - 1.8e31; step 2: loss ~ 3e63, beyond float32.
    with pytest.raises(mb.NonFiniteLossError, match=r"inner step 2 of 3") as raised:
        mb.adapt(
            model,
            params,
            batch.support_x[1],
            batch.support_y[1],
            loss_fn=F.mse_loss,
            inner_lr=1e30,
            inner_steps=3,
        )
    assert "smaller inner_lr" in str(raised.value)
    assert "inner_lr=1e+30" in str(raised.value)


def test_adapt_reports_params_that_overflow_on_the_last_step():
    model, params = linear_model_and_params()
    batch = two_tasks()
    with pytest.raises(mb.NonFiniteLossError, match=r"adapted params.*after all 1 inner step") as raised:
        mb.adapt(
            model,
            params,
            batch.support_x[1],
            batch.support_y[1],
            loss_fn=F.mse_loss,
            inner_lr=1e38,
            inner_steps=1,
        )
    assert "smaller inner_lr" in str(raised.value)


def test_maml_loss_names_the_task_and_inner_step_where_the_loss_diverged():
    model, params = linear_model_and_params()
    with pytest.raises(mb.NonFiniteLossError, match=r"task 1 .*inner step 2 of 3") as raised:
        mb.maml_loss(model, params, two_tasks(), loss_fn=F.mse_loss, inner_lr=1e30, inner_steps=3)
    assert "smaller inner_lr" in str(raised.value)


def test_maml_loss_reports_a_query_loss_that_diverged_after_the_last_step():
    model, params = linear_model_and_params()
    with pytest.raises(mb.NonFiniteLossError, match=r"task 1 .*after all 1 inner step") as raised:
        mb.maml_loss(model, params, two_tasks(), loss_fn=F.mse_loss, inner_lr=1e30, inner_steps=1)
    assert "smaller inner_lr" in str(raised.value)


@pytest.mark.parametrize("nan_in", ["support_x", "support_y"])
def test_nan_in_support_data_is_reported_before_any_inner_step(nan_in):
    model, params = linear_model_and_params()
    batch = two_tasks(nan_in=nan_in)
    with pytest.raises(mb.NonFiniteLossError, match=r"task 1 is non-finite before any inner step"):
        mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=2)
    with pytest.raises(mb.NonFiniteLossError, match=r"before any inner step"):
        mb.adapt(
            model,
            params,
            batch.support_x[1],
            batch.support_y[1],
            loss_fn=F.mse_loss,
            inner_lr=0.01,
            inner_steps=2,
        )


@pytest.mark.parametrize("steps", [0, 2])
@pytest.mark.parametrize("nan_in", ["query_x", "query_y"])
def test_nan_in_query_data_is_blamed_on_the_query_set_not_on_inner_lr(nan_in, steps):
    model, params = linear_model_and_params()
    with pytest.raises(mb.NonFiniteLossError, match=r"query loss for task 1") as raised:
        mb.maml_loss(
            model, params, two_tasks(nan_in=nan_in), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=steps
        )
    assert "batch.query_x" in str(raised.value)
    assert "smaller inner_lr" not in str(raised.value)


@pytest.mark.parametrize("function", ["adapt", "maml_loss"])
@pytest.mark.parametrize("steps", [0, 2])
def test_nan_in_params_is_reported_as_such(function, steps):
    model, params = linear_model_and_params()
    params["head.bias"] = torch.tensor([math.nan])
    with pytest.raises(mb.NonFiniteLossError, match=r"params") as raised:
        call(function, model, params, two_tasks(), inner_lr=0.01, inner_steps=steps)
    assert "smaller inner_lr" not in str(raised.value)


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("num_tasks", 0, ValueError),
        ("num_tasks", -2, ValueError),
        ("num_tasks", 2.0, TypeError),
        ("k_shot", 0, ValueError),
        ("k_shot", "5", TypeError),
        ("n_query", 0, ValueError),
        ("n_query", True, TypeError),
    ],
)
def test_sinusoid_sample_rejects_bad_sizes(argument, value, error):
    sizes = {"num_tasks": 2, "k_shot": 3, "n_query": 4, argument: value}
    with pytest.raises(error, match=argument):
        Sinusoid().sample(**sizes, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("amplitude", (5.0, 0.1), ValueError),
        ("amplitude", (1.0, 1.0), ValueError),
        ("amplitude", (0.1, math.inf), ValueError),
        ("phase", (math.nan, 1.0), ValueError),
        ("phase", (math.pi, 0.0), ValueError),
        ("x_range", (-math.inf, 5.0), ValueError),
        ("x_range", (5.0, -5.0), ValueError),
        ("amplitude", 5.0, TypeError),
        ("phase", (0.0, 1.0, 2.0), TypeError),
        ("x_range", ("a", "b"), TypeError),
    ],
)
def test_sinusoid_rejects_bad_ranges(argument, value, error):
    with pytest.raises(error, match=argument):
        Sinusoid(**{argument: value})


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("iterations", 0, ValueError),
        ("iterations", 10.0, TypeError),
        ("meta_batch_size", 0, ValueError),
        ("inner_lr", -0.01, ValueError),
        ("inner_lr", math.nan, ValueError),
        ("inner_steps", -1, ValueError),
        ("inner_steps", 1.5, TypeError),
        ("outer_lr", 0.0, ValueError),
        ("outer_lr", -1e-3, ValueError),
        ("outer_lr", math.inf, ValueError),
        ("seed", -1, ValueError),
        ("first_order", 1, TypeError),
    ],
)
def test_meta_train_config_rejects_bad_values(argument, value, error):
    with pytest.raises(error, match=argument):
        mb.MetaTrainConfig(**{argument: value})


def test_meta_train_rejects_bad_arguments(model):
    config = mb.MetaTrainConfig(iterations=1, meta_batch_size=2)
    sample = Sinusoid().sample
    with pytest.raises(TypeError, match="config"):
        mb.meta_train(model, sample, {"iterations": 1}, loss_fn=F.mse_loss, device="cpu", progress=False)
    with pytest.raises(TypeError, match="sample_tasks"):
        mb.meta_train(model, Sinusoid(), config, loss_fn=F.mse_loss, device="cpu", progress=False)
    with pytest.raises(TypeError, match="loss_fn"):
        mb.meta_train(model, sample, config, loss_fn="mse", device="cpu", progress=False)
    with pytest.raises(ValueError, match="device"):
        mb.meta_train(model, sample, config, loss_fn=F.mse_loss, device="gpu0", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_features": 0}, ValueError, "in_features"),
        ({"in_features": 1, "out_features": 0}, ValueError, "out_features"),
        ({"in_features": 1.0}, TypeError, "in_features"),
        ({"in_features": 1, "hidden": "40"}, TypeError, "hidden"),
        ({"in_features": 1, "hidden": 40}, TypeError, "hidden"),
        ({"in_features": 1, "hidden": (40, 0)}, ValueError, "hidden layer size"),
    ],
)
def test_mlp_rejects_bad_sizes(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)
