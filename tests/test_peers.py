"""The peer libraries' MAML (``benchmarks/peers.py``) against ``mamlbook.maml_loss``, in float64.

higher, torchopt and learn2learn are not installed beside the book: each test that needs
one skips unless it imports, so these run in the environment that
``benchmarks/setup_peers.sh`` makes::

    benchmarks/.venv-peers/bin/python -m pytest tests/test_peers.py -p no:cacheprovider -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402  (benchmarks/peers.py)

EXACT = {"atol": 1e-10, "rtol": 1e-10}
N_WAY, K_SHOT, QUERIES = 3, 1, 2


@pytest.fixture(params=peers.PEERS)
def peer(request) -> str:
    """Each peer library that imports here; the others skip."""
    pytest.importorskip(request.param)
    return request.param


def sinusoid_problem(make_model):
    """A sinusoid batch of 3 tasks and the paper's MLP, float64."""
    generator = torch.Generator().manual_seed(0)
    batch = mb.tasks.Sinusoid().sample(3, 5, 6, generator=generator)
    batch = mb.TaskBatch(*(tensor.double() for tensor in batch))
    return make_model(lambda: mb.models.MLP(1)), batch, F.mse_loss, 0.01


def omniglot_problem(make_model):
    """Two 3-way 1-shot tasks of random 28x28 images and a narrow Conv4, float64."""
    generator = torch.Generator().manual_seed(0)
    num_tasks = 2

    def images(per_class: int) -> torch.Tensor:
        shape = (num_tasks, N_WAY * per_class, 1, 28, 28)
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(N_WAY).repeat(num_tasks, per_class)  # (T, N * per_class)

    batch = mb.TaskBatch(images(K_SHOT), labels(K_SHOT), images(QUERIES), labels(QUERIES))
    return make_model(lambda: mb.models.Conv4(1, N_WAY, hidden=8)), batch, F.cross_entropy, 0.4


PROBLEMS = {"sinusoid": sinusoid_problem, "omniglot": omniglot_problem}


def package_meta_gradient(model, batch, **kwargs) -> list[torch.Tensor]:
    """The meta-gradient of ``mb.maml_loss`` at the model's parameters, in their order."""
    params = dict(model.named_parameters())
    return list(torch.autograd.grad(mb.maml_loss(model, params, batch, **kwargs), list(params.values())))


def peer_meta_gradient(meta_loss, model, batch) -> list[torch.Tensor]:
    """The meta-gradient that ``meta_loss(batch).backward()`` leaves in the model's ``.grad``."""
    model.zero_grad(set_to_none=True)
    meta_loss(batch).backward()
    return [param.grad for param in model.parameters()]


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_peer_meta_gradient_equals_maml_loss(peer, problem, steps, make_model):
    model, batch, loss_fn, inner_lr = PROBLEMS[problem](make_model)
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": steps}
    expected = package_meta_gradient(model, batch, **kwargs)
    theta = list(model.parameters())

    actual = peer_meta_gradient(peers.make_peer_meta_loss(peer, model, **kwargs), model, batch)

    assert all(a is b for a, b in zip(model.parameters(), theta, strict=True)), "theta left the model"
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **EXACT)


def test_peer_meta_loss_follows_an_outer_optimizer(peer, make_model):
    """Built once, the peer's meta-loss reads theta as an outer Adam step leaves it."""
    model, batch, loss_fn, inner_lr = sinusoid_problem(make_model)
    kwargs = {"loss_fn": loss_fn, "inner_lr": inner_lr, "inner_steps": 1}
    meta_loss = peers.make_peer_meta_loss(peer, model, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        peer_meta_gradient(meta_loss, model, batch)
        optimizer.step()

    actual = peer_meta_gradient(meta_loss, model, batch)

    for a, e in zip(actual, package_meta_gradient(model, batch, **kwargs), strict=True):
        torch.testing.assert_close(a, e, **EXACT)


def test_peer_versions_name_every_peer():
    versions = peers.peer_versions()
    assert tuple(versions) == peers.PEERS
    for name, version in versions.items():
        assert (version is None) == (peers.peer_unavailable_reason(name) is not None)


def test_unknown_peer_is_a_value_error_listing_the_peers():
    with pytest.raises(ValueError, match="higher, torchopt, learn2learn"):
        peers.make_peer_meta_loss("jax", mb.models.MLP(1), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1)
    with pytest.raises(ValueError, match="name must be one of"):
        peers.peer_unavailable_reason("jax")


def test_unavailable_peer_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(peers, "_import_peer", lambda name: (None, "no module named x"))
    with pytest.raises(ImportError, match="'higher' is not available: no module named x"):
        peers.make_peer_meta_loss(
            "higher", mb.models.MLP(1), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1
        )


def test_bad_arguments_are_named():
    mlp = mb.models.MLP(1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        peers.make_peer_meta_loss("higher", object(), loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=1)
    with pytest.raises(ValueError, match="inner_steps must be >= 0"):
        peers.make_peer_meta_loss("higher", mlp, loss_fn=F.mse_loss, inner_lr=0.01, inner_steps=-1)
    with pytest.raises(ValueError, match="inner_lr must be a finite number"):
        peers.make_peer_meta_loss("higher", mlp, loss_fn=F.mse_loss, inner_lr=float("nan"), inner_steps=1)
