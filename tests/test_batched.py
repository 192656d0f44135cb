"""The ``batched`` backend (``mamlbook.fast.batched``) equals vmap over tasks, in value and in
second-order meta-gradient, and refuses the models it does not know."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import mamlbook as mb
from mamlbook.fast import batched

TOLERANCE = 1e-10


def batched_forward(model: nn.Module, params: mb.Params, x: torch.Tensor) -> torch.Tensor | None:
    """``batched.forward`` of ``params`` ``(T, ...)`` on ``x``, or None where its plan does not run them."""
    model_plan = batched.plan(model)
    one_task = {name: tensor[0] for name, tensor in params.items()}
    if model_plan is None or not model_plan.runs(one_task, x.dim() - 1):
        return None
    return batched.forward(model_plan, params, x)


def batched_task_losses(model, params, x, y, loss_fn, tasks_per_chunk=None) -> torch.Tensor:
    """``batched.task_losses``, ``tasks_per_chunk`` tasks at a time (None: the CPU's default)."""
    chunk_elements = batched.CPU_CHUNK_ELEMENTS if tasks_per_chunk is None else tasks_per_chunk * x[0].numel()
    return batched.task_losses(batched.plan(model), loss_fn, x, y, chunk_elements=chunk_elements)(params)


def params_per_task(model: nn.Module, num_tasks: int, seed: int = 1) -> mb.Params:
    """Different parameters for each of ``num_tasks`` tasks, ``(T, ...)`` each, float64."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: tensor.detach() + 0.3 * torch.randn(num_tasks, *tensor.shape, generator=generator).double()
        for name, tensor in model.named_parameters()
    }


def vmapped_forward(model: nn.Module, params: mb.Params, x: torch.Tensor) -> torch.Tensor:
    """The reference: every task's model, by vmap over ``functional_call``."""
    return vmap(lambda task_params, task_x: functional_call(model, task_params, (task_x,)))(params, x)


def vmapped_losses(model, params, x, y, loss_fn):
    """The reference ``(T,)`` losses: ``loss_fn`` of every task's model, by vmap."""
    return vmap(lambda p, task_x, task_y: loss_fn(functional_call(model, p, (task_x,)), task_y))(params, x, y)


def inputs(*shape: int, seed: int = 2) -> torch.Tensor:
    """Seeded standard normal float64 values of ``shape``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).double()


def assert_matches_vmap(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``batched_forward`` equals the vmap reference on ``x`` with different params per task."""
    params = params_per_task(model, x.shape[0])
    outputs = batched_forward(model, params, x)
    assert outputs is not None
    expected = vmapped_forward(model, params, x)
    assert outputs.shape == expected.shape
    assert (outputs - expected).abs().max() < TOLERANCE
    return outputs


@pytest.mark.parametrize(
    ("in_features", "hidden", "out_features"),
    [(1, (40, 40), 1), (1, (), 1), (3, (5,), 2), (2, (7, 4, 6), 3)],
)
def test_mlp_matches_vmap(make_model, in_features, hidden, out_features):
    model = make_model(lambda: mb.models.MLP(in_features, hidden, out_features))
    assert_matches_vmap(model, inputs(4, 6, in_features))


def test_mlp_on_inputs_with_more_dimensions_matches_vmap(make_model):
    model = make_model(lambda: mb.models.MLP(3, (5,), 2))
    outputs = assert_matches_vmap(model, inputs(3, 4, 2, 3))
    assert outputs.shape == (3, 4, 2, 2)
    assert_matches_vmap(model, inputs(3, 3))  # one input vector per task


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_vmap(make_model, bias):
    model = make_model(lambda: nn.Linear(4, 3, bias=bias))
    assert_matches_vmap(model, inputs(5, 2, 4))


@pytest.mark.parametrize(
    ("stride_conv", "image_size", "in_channels"),
    [(True, 28, 1), (True, 9, 3), (False, 16, 1), (False, 19, 2)],
)
def test_conv4_matches_vmap(make_model, stride_conv, image_size, in_channels):
    model = make_model(lambda: mb.models.Conv4(in_channels, 3, 4, image_size, stride_conv=stride_conv))
    assert_matches_vmap(model, inputs(3, 5, in_channels, image_size, image_size))
    model.eval()  # batch statistics in evaluation mode too
    assert_matches_vmap(model, inputs(3, 5, in_channels, image_size, image_size))


def test_a_layer_without_parameters_used_twice_matches_vmap(make_model):
    relu = nn.ReLU()
    model = make_model(lambda: nn.Sequential(relu, nn.Linear(3, 3), relu, nn.Linear(3, 2), relu))
    assert_matches_vmap(model, inputs(2, 4, 3))


def test_sequential_of_supported_layers_matches_vmap(make_model):
    model = make_model(
        lambda: nn.Sequential(
            nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(3, affine=False, track_running_stats=False),
            nn.ReLU(),
            nn.Conv2d(3, 4, kernel_size=(3, 2), padding=(2, 1), dilation=2, bias=False),
            nn.BatchNorm2d(4, eps=1e-3, track_running_stats=False),
            nn.Conv2d(4, 4, 3, padding="same"),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(4 * 3 * 3, 5, bias=False),
            nn.ReLU(),
            nn.Sequential(nn.Linear(5, 2)),
        )
    )
    assert_matches_vmap(model, inputs(3, 4, 2, 11, 11))


@pytest.mark.parametrize(("start_dim", "end_dim"), [(0, -1), (1, 2), (-2, -1), (2, 3)])
def test_flatten_dims_match_vmap(make_model, start_dim, end_dim):
    model = make_model(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(start_dim, end_dim)))
    assert_matches_vmap(model, inputs(2, 3, 1, 5, 6))


def test_task_losses_match_vmap(make_model):
    model = make_model(lambda: mb.models.MLP(1, (8,)))
    params = params_per_task(model, 4)
    x, y = inputs(4, 6, 1), inputs(4, 6, 1, seed=3)
    mse = batched_task_losses(model, params, x, y, F.mse_loss)
    vmapped_mse = batched_task_losses(model, params, x, y, lambda output, target: F.mse_loss(output, target))
    expected = vmapped_losses(model, params, x, y, F.mse_loss)
    assert mse.shape == vmapped_mse.shape == (4,)
    assert (mse - expected).abs().max() < TOLERANCE
    assert (vmapped_mse - expected).abs().max() < TOLERANCE


def meta_gradient(model, theta, batch, loss_fn, task_losses, inner_lr=0.1):
    """Second-order meta-gradient of one inner step, the per-task losses from ``task_losses``."""
    params = {name: tensor.expand(batch.num_tasks, *tensor.shape) for name, tensor in theta.items()}
    support = task_losses(model, params, batch.support_x, batch.support_y, loss_fn)
    grads = torch.autograd.grad(support.sum(), list(params.values()), create_graph=True)
    adapted = {name: params[name] - inner_lr * grad for name, grad in zip(params, grads, strict=True)}
    query = task_losses(model, adapted, batch.query_x, batch.query_y, loss_fn).mean()
    return torch.autograd.grad(query, list(theta.values()))


def assert_meta_gradients_agree(model, theta, batch, loss_fn, tasks_per_chunk):
    """The batched backend's second-order meta-gradient equals vmap's, and is not zero."""

    def chunked(*args):
        return batched_task_losses(*args, tasks_per_chunk=tasks_per_chunk)

    got_grads = meta_gradient(model, theta, batch, loss_fn, chunked)
    expected = meta_gradient(model, theta, batch, loss_fn, vmapped_losses)
    for got, want in zip(got_grads, expected, strict=True):
        assert want.abs().max() > 0
        assert (got - want).abs().max() < TOLERANCE


def test_tasks_per_chunk_bounds_a_chunk_on_the_cpu_only():
    budget = batched.CPU_CHUNK_ELEMENTS
    assert batched.tasks_per_chunk(torch.zeros(25, 10, 1)) == 25  # the sinusoid: one chunk
    assert batched.tasks_per_chunk(torch.zeros(32, 1, budget // 4)) == 4
    assert batched.tasks_per_chunk(torch.zeros(3, 1, 2 * budget)) == 1  # at least one task
    assert batched.tasks_per_chunk(torch.zeros(0, 1, budget)) == 0
    assert batched.tasks_per_chunk(torch.zeros(32, 1, budget // 4, device="meta")) == 32
    assert batched.tasks_per_chunk(torch.zeros(32, 1, 10), chunk_elements=25) == 2


@pytest.fixture(params=[None, 1, 2], ids=["one_chunk", "chunks_of_1", "chunks_of_2"])
def tasks_in_chunks(request) -> int | None:
    """Run the batched backend with all tasks at once, or in chunks of 1 or 2 tasks."""
    return request.param


def test_mlp_meta_gradient_matches_vmap(make_model, theta, sine_batch, tasks_in_chunks):
    model = make_model(lambda: mb.models.MLP(1, (16, 16)))
    assert_meta_gradients_agree(model, theta(model), sine_batch(num_tasks=3), F.mse_loss, tasks_in_chunks)


@pytest.mark.parametrize(("stride_conv", "image_size"), [(True, 9), (False, 16)])
def test_conv4_meta_gradient_matches_vmap(make_model, theta, stride_conv, image_size, tasks_in_chunks):
    model = make_model(lambda: mb.models.Conv4(1, 3, 3, image_size, stride_conv=stride_conv))
    labels = torch.arange(3).repeat(2, 2)  # (T, K) = (2, 6): two of each class
    batch = mb.TaskBatch(
        inputs(2, 6, 1, image_size, image_size),
        labels,
        inputs(2, 6, 1, image_size, image_size, seed=3),
        labels,
    )
    assert_meta_gradients_agree(model, theta(model), batch, F.cross_entropy, tasks_in_chunks)


def shared_and_copied(theta: mb.Params, num_tasks: int) -> tuple[mb.Params, mb.Params]:
    """theta for T tasks twice: expanded views (the shared-filter path) and contiguous copies."""
    shared = {name: tensor.expand(num_tasks, *tensor.shape) for name, tensor in theta.items()}
    return shared, {name: tensor.contiguous() for name, tensor in shared.items()}


SHARED_FILTER_CONVS = {
    "padded": lambda: nn.Conv2d(2, 3, 3, padding=1),
    "strided": lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1),
    "dilated_no_bias": lambda: nn.Conv2d(2, 3, (3, 2), padding=(2, 1), dilation=2, bias=False),
}


@pytest.mark.parametrize("factory", SHARED_FILTER_CONVS.values(), ids=SHARED_FILTER_CONVS.keys())
def test_filters_shared_by_all_tasks_give_the_grouped_convolution_to_second_order(make_model, theta, factory):
    """Where every task's filters are theta, expanded, the shared-filter convolution gives the
    copied filters' outputs, per-task gradients (filters, bias, inputs) and their gradients."""
    model = make_model(lambda: nn.Sequential(factory(), nn.ReLU(), nn.Conv2d(3, 2, 3)))
    x = inputs(3, 4, 2, 9, 9).requires_grad_()
    leaves = theta(model)
    directions = None
    results = []
    for params in shared_and_copied(leaves, 3):
        outputs = batched_forward(model, params, x)
        grads = torch.autograd.grad(outputs.square().sum(), [*params.values(), x], create_graph=True)
        if directions is None:
            generator = torch.Generator().manual_seed(5)
            directions = [torch.randn(g.shape, generator=generator).double() for g in grads]
        inner = sum((g * d).sum() for g, d in zip(grads, directions, strict=True))
        second = torch.autograd.grad(inner, [*leaves.values(), x])  # d(grads . directions) / d(theta, x)
        assert all(tensor.abs().max() > 0 for tensor in second)
        results.append((outputs, *grads, *second))
    assert _shared_path_ran(model, leaves)
    for shared, copied in zip(*results, strict=True):
        assert shared.shape == copied.shape
        assert (shared - copied).abs().max() < TOLERANCE


def _shared_path_ran(model: nn.Module, theta: mb.Params) -> bool:
    """Whether ``batched_forward`` of expanded theta records the shared-filter convolution."""
    shared, _ = shared_and_copied(theta, 3)
    outputs = batched_forward(model, shared, inputs(3, 4, 2, 9, 9))
    names, stack = set(), [outputs.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return "_SharedFilterConv2dBackward" in names


def test_shared_filter_convolution_passes_gradgradcheck(make_model):
    conv = make_model(lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1))
    x = inputs(2, 3, 2, 5, 5).requires_grad_()

    def outputs(x, weight, bias):
        params = {"weight": weight.expand(2, *weight.shape), "bias": bias.expand(2, *bias.shape)}
        return batched_forward(conv, params, x)

    theta = [tensor.detach().requires_grad_() for tensor in (conv.weight, conv.bias)]
    assert torch.autograd.gradgradcheck(outputs, (x, *theta))


def test_filters_shared_by_all_tasks_are_not_copied_for_backward(make_model, theta):
    """The expanded filters are kept for backward as theta's one copy, not T copies."""
    model = make_model(lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3)))
    num_tasks, x = 5, inputs(5, 2, 2, 7, 7)
    saved = []
    for params in shared_and_copied(theta(model), num_tasks):

        def inner_gradient(params=params):
            losses = batched_task_losses(
                model, params, x, torch.zeros(num_tasks, 2, 4, 3, 3).double(), F.mse_loss
            )
            return torch.autograd.grad(losses.sum(), list(params.values()), create_graph=True)

        saved.append(mb.profiling.peak_saved_bytes(inner_gradient))
    shared_saved, copied_saved = saved
    filter_bytes = sum(conv.weight.nbytes for conv in model if isinstance(conv, nn.Conv2d))
    # The inner gradient keeps three one-element stand-ins, for the shapes given to
    # torch.nn.grad's conv2d_input (second layer) and conv2d_weight (both layers).
    stand_ins = 3 * x.element_size()
    saving = (num_tasks - 1) * filter_bytes
    assert saving - stand_ins <= copied_saved - shared_saved <= saving


class Doubled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.linear(x)


class ShiftedMLP(mb.models.MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1


def tied_linears() -> nn.Sequential:
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    second.weight = first.weight
    return nn.Sequential(first, second)


def linear_with_bias_buffer() -> nn.Linear:
    linear = nn.Linear(2, 2)
    del linear.bias
    linear.register_buffer("bias", torch.ones(2))  # read by forward, but not a parameter
    return linear


def batch_norm_with_running_stats_in_eval() -> nn.Sequential:
    norm = nn.BatchNorm2d(2)
    norm.track_running_stats = False  # its buffers stay, and evaluation mode uses them
    return nn.Sequential(nn.Conv2d(1, 2, 3), norm).eval()


def hooked_linear() -> nn.Linear:
    linear = nn.Linear(2, 2)
    linear.register_forward_hook(lambda module, args, output: output + 1)
    return linear


@pytest.mark.parametrize(
    ("factory", "x_shape"),
    [
        (Doubled, (2, 3, 2)),
        (lambda: ShiftedMLP(2, (3,), 2), (2, 3, 2)),
        (lambda: nn.Sequential(nn.Linear(2, 2), nn.Tanh()), (2, 3, 2)),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), (2, 3, 1, 5, 5)),
        (batch_norm_with_running_stats_in_eval, (2, 3, 1, 5, 5)),
        (lambda: nn.Conv2d(2, 2, 3, groups=2), (2, 3, 2, 5, 5)),
        (lambda: nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), (2, 3, 1, 5, 5)),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)), (2, 3, 1, 5, 5)),
        (lambda: nn.Sequential(*[nn.Linear(2, 2)] * 2), (2, 3, 2)),  # one Linear used twice
        (tied_linears, (2, 3, 2)),
        (linear_with_bias_buffer, (2, 3, 2)),
        (hooked_linear, (2, 3, 2)),
        (lambda: nn.Conv2d(1, 2, 3), (2, 1, 5, 5)),  # each task's input (C, H, W): unbatched
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2, 1)), (2, 3, 1, 5, 5)),
    ],
)
def test_unsupported_models_are_refused(make_model, factory, x_shape):
    model = make_model(factory)
    params = dict(model.named_parameters())
    x = inputs(*x_shape)
    assert batched_forward(model, params_per_task(model, x_shape[0]), x) is None
    loop = mb.InnerLoop.of(params, inner_lr=0.1, inner_steps=1)
    problem = mb.backends.Problem("maml_loss", model, params, F.mse_loss, loop, (x,))
    assert isinstance(mb.backends.Batched().refusal(problem), str)
    assert mb.backends.choose_backend("auto", problem).name == "autograd"


def test_parameters_shared_by_two_layers_are_refused(make_model):
    model = make_model(tied_linears)
    names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    params = {
        name: inputs(2, *model.get_parameter(name).shape, seed=index) for index, name in enumerate(names)
    }
    assert batched_forward(model, params, inputs(2, 3, 2)) is None


def test_mismatched_params_are_refused(make_model):
    model = make_model(lambda: mb.models.MLP(1, (4,)))
    params, x = params_per_task(model, 3), inputs(3, 5, 1)
    assert batched_forward(model, {**params, "extra": params["head.bias"]}, x) is None
    assert batched_forward(model, {k: v for k, v in params.items() if k != "head.bias"}, x) is None
    assert batched_forward(model, {k: v[:, :2] for k, v in params.items()}, x) is None  # other shapes
    assert batched_forward(model, params, x) is not None


def test_a_hook_added_after_a_call_is_seen(make_model):
    model = make_model(lambda: mb.models.MLP(1, (4,)))
    params, x = params_per_task(model, 2), inputs(2, 5, 1)
    assert batched_forward(model, params, x) is not None
    model.head.register_forward_pre_hook(lambda module, args: None)
    assert batched_forward(model, params, x) is None


def test_conv4_rejects_images_of_another_size_like_conv4(make_model):
    model = make_model(lambda: mb.models.Conv4(1, 3, 2, 12))
    params, x = params_per_task(model, 2), inputs(2, 3, 1, 10, 10)
    with pytest.raises(ValueError) as expected:
        vmapped_forward(model, params, x)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 12, 12\), got \(3, 1, 10, 10\)") as got:
        batched_forward(model, params, x)
    assert str(got.value) == str(expected.value)
