"""The outer optimiser against torch.optim.Adam, the oracle it transcribes."""

import functools

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.outer import OuterAdam


def _twin_tensors(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two identical lists of leaf tensors of mixed shapes, float32 and float64."""
    generator = torch.Generator().manual_seed(seed)
    shapes_and_dtypes = [
        ((40, 1), torch.float32),
        ((40,), torch.float32),
        ((3, 5, 7), torch.float64),
        ((), torch.float32),
    ]
    tensors = [torch.randn(shape, generator=generator, dtype=dtype) for shape, dtype in shapes_and_dtypes]
    return (
        [tensor.clone().requires_grad_() for tensor in tensors],
        [tensor.clone().requires_grad_() for tensor in tensors],
    )


@pytest.mark.parametrize("betas, eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3), ((0.0, 0.0), 0.0)])
def test_outer_adam_equals_torch_adam_bit_for_bit(betas, eps):
    ours, reference = _twin_tensors(0)
    outer, torch_adam = (
        OuterAdam(ours, lr=3e-3, betas=betas, eps=eps),
        torch.optim.Adam(reference, lr=3e-3, betas=betas, eps=eps),
    )
    generator = torch.Generator().manual_seed(1)
    for step in range(300):
        scale = 10.0 ** (step % 7 - 3)  # gradients from 1e-3 to 1e3
        for mine, theirs in zip(ours, reference, strict=True):
            grad = torch.randn(mine.shape, generator=generator, dtype=mine.dtype) * scale
            mine.grad, theirs.grad = grad.clone(), grad.clone()
        outer.step()
        torch_adam.step()
    for mine, theirs, start in zip(ours, reference, _twin_tensors(0)[0], strict=True):
        assert torch.equal(mine, theirs)
        assert not torch.equal(mine, start)  # they moved


def test_a_tensor_without_gradient_keeps_its_value_and_its_step_count():
    ours, reference = _twin_tensors(2)
    outer, torch_adam = OuterAdam(ours, lr=1e-2), torch.optim.Adam(reference, lr=1e-2)
    generator = torch.Generator().manual_seed(3)
    for step in range(20):
        skipped = step % len(ours)  # each tensor misses some steps, so their counts differ
        for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
            grad = (
                None if index == skipped else torch.randn(mine.shape, generator=generator, dtype=mine.dtype)
            )
            mine.grad = None if grad is None else grad.clone()
            theirs.grad = None if grad is None else grad.clone()
        before = ours[skipped].detach().clone()
        outer.step()
        torch_adam.step()
        assert torch.equal(ours[skipped], before)
    assert outer.steps == [torch_adam.state[tensor]["step"].item() for tensor in reference]
    for mine, theirs in zip(ours, reference, strict=True):
        assert torch.equal(mine, theirs)


def test_zero_grad_clears_every_gradient_and_a_step_without_any_changes_nothing():
    ours, _ = _twin_tensors(4)
    outer = OuterAdam(ours)
    for tensor in ours:
        tensor.grad = torch.ones_like(tensor)
    outer.zero_grad()
    assert all(tensor.grad is None for tensor in ours)
    before = [tensor.detach().clone() for tensor in ours]
    outer.step()
    assert outer.steps == [0] * len(ours)
    assert all(torch.equal(tensor, old) for tensor, old in zip(ours, before, strict=True))


def test_meta_train_takes_the_steps_of_torch_adam():
    """meta_train with OuterAdam trains the sinusoid MLP (and Meta-SGD's rates) to the same
    bits as maml_loss, backward and torch.optim.Adam on the same batches."""
    config = mb.MetaTrainConfig(iterations=30, meta_batch_size=4, seed=5, learned_inner_lr="per_parameter")
    sample = functools.partial(mb.tasks.Sinusoid().sample, k_shot=5, n_query=5)
    torch.manual_seed(0)
    model = mb.models.MLP(1)
    reference = mb.models.MLP(1)
    reference.load_state_dict(model.state_dict())
    history = mb.meta_train(model, sample, config, loss_fn=F.mse_loss, device="cpu", progress=False)

    params = dict(reference.named_parameters())
    rates = {
        name: torch.full_like(tensor, config.inner_lr, requires_grad=True) for name, tensor in params.items()
    }
    optimizer = torch.optim.Adam([*params.values(), *rates.values()], lr=config.outer_lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.iterations):
        batch = sample(config.meta_batch_size, generator=generator)
        loss = mb.maml_loss(reference, params, batch, loss_fn=F.mse_loss, inner_lr=rates, inner_steps=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for name, tensor in reference.named_parameters():
        assert torch.equal(dict(model.named_parameters())[name], tensor)
        assert torch.equal(history.inner_lr[name], rates[name])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"params": [torch.zeros(2)]}, ValueError, r"params\[0\] must be a real floating-point leaf tensor"),
        ({"params": [torch.zeros(2, dtype=torch.long)]}, ValueError, r"params\[0\]"),
        ({"params": [[1.0, 2.0]]}, TypeError, r"params\[0\] must be a torch.Tensor, got list"),
        ({"lr": 0.0}, ValueError, "lr must be a finite number > 0, got 0.0"),
        ({"lr": "fast"}, TypeError, "lr must be a real number, got str"),
        ({"betas": (0.9, 1.0)}, ValueError, r"betas\[1\] must be a number in \[0, 1\), got 1.0"),
        ({"betas": [0.9, 0.999]}, TypeError, "betas must be a pair of numbers"),
        ({"betas": (0.9, "slow")}, TypeError, r"betas\[1\] must be a real number, got str"),
        ({"eps": -1e-8}, ValueError, "eps must be a finite number >= 0, got -1e-08"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    arguments = {"params": [torch.zeros(2, requires_grad=True)], **kwargs}
    with pytest.raises(error, match=match):
        OuterAdam(**arguments)


def test_a_tensor_listed_twice_is_refused():
    tensor = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="more than once"):
        OuterAdam([tensor, tensor])
