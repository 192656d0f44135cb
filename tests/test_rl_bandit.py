"""The two meta-gradient estimators of chapter 8 against the bandit's exact meta-gradient."""

import pytest
import torch

from mamlbook.rl.bandit import GaussianBandit, meta_gradient_estimates
from mamlbook.rl.estimators import leave_one_out_mean, magic_box, score_function_term

SETTINGS = [(GaussianBandit(), 1.0), (GaussianBandit(inner_lr=0.2, num_samples=5, goal=0.3), -0.2)]


def standard_error(estimates: torch.Tensor) -> float:
    return (estimates.std() / len(estimates) ** 0.5).item()


def test_closed_form_equals_the_average_return_after_a_sampled_step():
    bandit = GaussianBandit(inner_lr=0.2, num_samples=3)
    generator = torch.Generator().manual_seed(1)
    mean, samples = 0.7, 400_000
    actions = mean + bandit.std * torch.randn(
        samples, bandit.num_samples, generator=generator, dtype=torch.float64
    )
    step = (bandit.reward(actions) * (actions - mean) / bandit.std**2).mean(dim=1)
    adapted = mean + bandit.inner_lr * step
    returns = -((adapted - bandit.goal) ** 2) - bandit.std**2  # the adapted policy's exact return
    exact = bandit.expected_return_after_step(torch.tensor(mean, dtype=torch.float64)).item()
    assert abs(returns.mean().item() - exact) < 4 * standard_error(returns)


@pytest.mark.parametrize(("bandit", "mean"), SETTINGS)
def test_dice_estimator_is_unbiased(bandit, mean):
    estimates = meta_gradient_estimates(
        bandit, mean, estimator="dice", replicates=200_000, generator=torch.Generator().manual_seed(0)
    )
    exact = bandit.exact_meta_gradient(mean)
    assert abs(estimates.mean().item() - exact) < 4 * standard_error(estimates)


@pytest.mark.parametrize(("bandit", "mean"), SETTINGS)
def test_paper_estimator_is_biased(bandit, mean):
    estimates = meta_gradient_estimates(
        bandit, mean, estimator="paper", replicates=200_000, generator=torch.Generator().manual_seed(0)
    )
    exact = bandit.exact_meta_gradient(mean)
    assert abs(estimates.mean().item() - exact) > 10 * standard_error(estimates)


def test_estimators_agree_without_an_inner_step():
    # With alpha = 0 the adapted policy is theta's, whatever the pre-update actions: no bias to correct.
    bandit = GaussianBandit(inner_lr=0.0)
    paper, dice = (
        meta_gradient_estimates(bandit, 0.5, estimator=name, replicates=100_000, generator=torch.Generator())
        for name in ("paper", "dice")
    )
    exact = bandit.exact_meta_gradient(0.5)
    assert abs(paper.mean().item() - exact) < 4 * standard_error(paper)
    assert abs(dice.mean().item() - exact) < 4 * standard_error(dice)


def test_magic_box_is_one_with_the_gradient_of_its_argument():
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    box = magic_box(2 * x)
    assert torch.equal(box.detach(), torch.ones(2, dtype=torch.float64))
    (gradient,) = torch.autograd.grad(box.sum(), x, create_graph=True)
    assert torch.allclose(gradient, torch.full((2,), 2.0, dtype=torch.float64))
    (second,) = torch.autograd.grad(gradient.sum(), x)
    assert torch.allclose(second, torch.full((2,), 4.0, dtype=torch.float64))


def test_score_function_term_adds_nothing_to_the_value():
    log_likelihood = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    values = torch.tensor([1.0, 3.0, 2.0])
    term = score_function_term(log_likelihood, values)
    assert term.item() == 0.0
    (gradient,) = torch.autograd.grad(term, log_likelihood)
    centred = values - torch.tensor([2.5, 1.5, 2.0])  # minus the mean of the other two
    assert torch.allclose(gradient, -centred / 3)
    assert torch.equal(leave_one_out_mean(torch.tensor([4.0])), torch.tensor([0.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"std": 0.0}, "std"),
        ({"inner_lr": -0.1}, "inner_lr"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_post_samples": 0}, "num_post_samples"),
        ({"goal": float("nan")}, "goal"),
    ],
)
def test_bad_bandit_settings_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianBandit(**kwargs)


def test_bad_estimator_arguments_name_the_argument():
    with pytest.raises(ValueError, match="estimator"):
        meta_gradient_estimates(GaussianBandit(), 0.0, estimator="reinforce", replicates=10)
    with pytest.raises(ValueError, match="replicates"):
        meta_gradient_estimates(GaussianBandit(), 0.0, estimator="paper", replicates=1)
