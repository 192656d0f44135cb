from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, vmap

import mamlbook as mb
from mamlbook.analysis import centered_gram, layer_outputs, linear_cka


def random_orthogonal(d: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # (d, d), Q^T Q = I


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_centered_gram_removes_the_mean_example():
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    centered = torch.tensor([[-2.0, -2.0], [0.0, -2.0], [2.0, 4.0]])
    torch.testing.assert_close(centered_gram(x), centered @ centered.T)
    torch.testing.assert_close(centered_gram(x + 10.0), centered_gram(x))


def test_linear_cka_hand_computed():
    # Centred already, columns orthogonal with squared norm 2: X^T X = 2 I, ||X^T X||_F = 2 sqrt(2).
    # Y is X's first column: Y^T X = [2, 0], ||Y^T Y||_F = 2, so CKA = 4 / (2 sqrt(2) * 2) = 1 / sqrt(2).
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    assert linear_cka(x, x[:, :1]).item() == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def test_linear_cka_equals_its_feature_space_formula(generator):
    x = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(12, 3, generator=generator, dtype=torch.float64) + x[:, :3]
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    torch.testing.assert_close(linear_cka(x, y), expected)
    assert 0.0 < expected < 1.0


def test_linear_cka_of_one_feature_each_is_the_squared_correlation(generator):
    x = torch.randn(20, 1, generator=generator, dtype=torch.float64)
    y = 0.5 * x + torch.randn(20, 1, generator=generator, dtype=torch.float64)
    correlation = torch.corrcoef(torch.cat([x, y], dim=1).T)[0, 1]
    torch.testing.assert_close(linear_cka(x, y), correlation**2)


def test_linear_cka_of_a_representation_with_itself_is_one_and_it_is_symmetric(generator):
    x = torch.randn(30, 7, generator=generator, dtype=torch.float64)
    y = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(linear_cka(x, y), linear_cka(y, x))


def test_linear_cka_is_invariant_to_rotations_one_scale_and_shifts(generator):
    x = torch.randn(25, 6, generator=generator, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(6, 4, generator=generator, dtype=torch.float64))
    transformed = 3.7 * x @ random_orthogonal(6, generator) + torch.randn(6, generator=generator)
    torch.testing.assert_close(linear_cka(transformed, y), linear_cka(x, y))
    assert linear_cka(transformed, x).item() == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_changes_when_one_feature_is_stretched(generator):
    x = torch.randn(25, 6, generator=generator, dtype=torch.float64)
    stretched = x * torch.tensor([10.0, 1, 1, 1, 1, 1], dtype=torch.float64)
    assert linear_cka(stretched, x).item() < 0.9


def test_linear_cka_of_unrelated_representations_is_small(generator):
    x = torch.randn(2000, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(2000, 3, generator=generator, dtype=torch.float64)
    assert linear_cka(x, y).item() < 0.01


def test_linear_cka_over_leading_dimensions_equals_one_pair_at_a_time(generator):
    x = torch.randn(3, 2, 10, 5, generator=generator)
    y = torch.randn(3, 2, 10, 8, generator=generator) + x.sum(-1, keepdim=True)
    batched = linear_cka(x, y)
    assert batched.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(batched[i, j], linear_cka(x[i, j], y[i, j]))


def test_linear_cka_is_nan_for_a_constant_representation(generator):
    x = torch.randn(3, 6, 4, generator=generator)
    y = x.clone()
    y[1] = 2.0  # the second pair: every example represented alike
    values = linear_cka(x, y)
    assert torch.isnan(values[1])
    torch.testing.assert_close(values[[0, 2]], torch.ones(2))


def test_linear_cka_rejects_bad_inputs():
    with pytest.raises(ValueError, match="the same examples"):
        linear_cka(torch.zeros(5, 3), torch.zeros(6, 3))
    with pytest.raises(ValueError, match="n >= 2"):
        linear_cka(torch.ones(1, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., n, d\)"):
        linear_cka(torch.zeros(5), torch.zeros(5, 1))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        linear_cka(torch.zeros(5, 2), [[0.0, 1.0]] * 5)


@pytest.fixture
def conv4() -> mb.models.Conv4:
    torch.manual_seed(0)
    return mb.models.Conv4(hidden=8)


def shifted_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters other than the module's own, as an adapted phi would be."""
    return {name: tensor.detach() + 0.1 for name, tensor in model.named_parameters()}


def test_layer_outputs_are_what_the_submodules_compute_with_the_given_params(conv4, generator):
    x = torch.rand(6, 1, 28, 28, generator=generator)
    params = shifted_params(conv4)
    outputs = layer_outputs(conv4, params, x, ["body.1", "body.0", ""])
    assert list(outputs) == ["body.1", "body.0", ""]
    first_block = {name[len("body.0.") :]: p for name, p in params.items() if name.startswith("body.0.")}
    second_block = {name[len("body.1.") :]: p for name, p in params.items() if name.startswith("body.1.")}
    expected_first = functional_call(conv4.body[0], first_block, (x,))  # (6, 8, 14, 14)
    torch.testing.assert_close(outputs["body.0"], expected_first)
    expected_second = functional_call(conv4.body[1], second_block, (expected_first,))  # (6, 8, 7, 7)
    torch.testing.assert_close(outputs["body.1"], expected_second)
    torch.testing.assert_close(outputs[""], functional_call(conv4, params, (x,)))
    assert not torch.allclose(outputs[""], conv4(x))  # not the module's own parameters


def test_layer_outputs_remove_their_hooks_even_when_the_model_fails(conv4):
    params = dict(conv4.named_parameters())
    layer_outputs(conv4, params, torch.rand(2, 1, 28, 28), ["body.0"])
    with pytest.raises(ValueError, match="x must have shape"):
        layer_outputs(conv4, params, torch.rand(2, 1, 14, 14), ["body.0"])
    assert all(not module._forward_hooks for module in conv4.modules())


def test_layer_outputs_run_under_vmap_over_tasks(conv4, generator):
    x = torch.rand(3, 5, 1, 28, 28, generator=generator)  # (T, B, 1, 28, 28)
    params = mb.inner.per_task(shifted_params(conv4), 3)
    batched = vmap(lambda p, images: layer_outputs(conv4, p, images, ["body.3", ""]))(params, x)
    assert batched["body.3"].shape == (3, 5, 8, 2, 2)
    for task in range(3):
        one = layer_outputs(conv4, {name: p[task] for name, p in params.items()}, x[task], ["body.3", ""])
        torch.testing.assert_close(batched["body.3"][task], one["body.3"])
        torch.testing.assert_close(batched[""][task], one[""])


def test_layer_outputs_reject_unknown_or_missing_names(conv4):
    params = dict(conv4.named_parameters())
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"names \['body.7'\] are not submodules"):
        layer_outputs(conv4, params, x, ["body.7"])
    with pytest.raises(TypeError, match="names must be a non-empty sequence"):
        layer_outputs(conv4, params, x, "body.0")
    with pytest.raises(ValueError, match="params does not match the model"):
        layer_outputs(conv4, {}, x, ["body.0"])
