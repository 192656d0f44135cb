"""Small shared builders (seeded models and task batches that leave the global RNG alone),
the ``backend`` fixture, and the ``book`` marker on every test that runs a notebook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import mamlbook as mb

BOOK = Path(__file__).resolve().parent.parent / "book"


def pytest_collection_modifyitems(items):
    """Mark nbval's notebook items (``book/*.ipynb``) ``book``, like the notebook and book-build
    tests, so that ``pytest -m "not book"`` runs the unit and oracle tests alone."""
    for item in items:
        if item.path.is_relative_to(BOOK):
            item.add_marker(pytest.mark.book)


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(factory, seed=0, dtype=torch.float64)``: ``factory()`` initialised from ``seed``.

    The initialisation runs inside ``torch.random.fork_rng`` so tests do not disturb each
    other through the global generator.
    """

    def build(factory: Callable[[], nn.Module], seed: int = 0, dtype: torch.dtype = torch.float64):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return factory().to(dtype)

    return build


@pytest.fixture
def sine_batch() -> Callable[..., mb.TaskBatch]:
    """``sine_batch(num_tasks, k_shot, n_query, seed=0, dtype=torch.float64)``: sinusoid tasks."""

    def sample(
        num_tasks: int = 4,
        k_shot: int = 5,
        n_query: int = 6,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> mb.TaskBatch:
        generator = torch.Generator().manual_seed(seed)
        batch = mb.tasks.Sinusoid().sample(num_tasks, k_shot, n_query, generator=generator)
        return mb.TaskBatch(*(tensor.to(dtype) for tensor in batch))

    return sample


def leaf_params(model: nn.Module) -> mb.Params:
    """Fresh leaf copies of ``model``'s parameters that require grad: theta for one test."""
    return {name: tensor.detach().clone().requires_grad_() for name, tensor in model.named_parameters()}


@pytest.fixture
def theta() -> Callable[[nn.Module], mb.Params]:
    """``theta(model)``: fresh leaf copies of the model's parameters that require grad."""
    return leaf_params


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run torch on one thread: the tensors here are tiny, and on a busy two-core machine
    several threads per operation make the suite many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BACKENDS = ("closed_form", "batched", "chunked", "autograd", "loop")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str | mb.backends.Backend:
    """Each backend of ``mamlbook.backends``, to pass as ``backend=``: the closed form, the
    batched forward pass with all tasks at once and in chunks of one task (as large inputs
    run on the CPU), the core's vmap, and its loop over tasks. A call that the backend
    refuses skips the test with the refusal (see ``pytest_pyfunc_call``)."""
    if request.param == "chunked":
        return mb.backends.Batched(chunk_elements=1)
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """Skip, with its reason, a test whose backend refuses the call it makes: the closed
    form computes ``maml_loss`` alone, of ReLU networks with the MSE, and the batched
    backend knows a few layers. Any other error fails the test as usual."""
    try:
        return (yield)
    except ValueError as error:
        if "backend" in pyfuncitem.fixturenames and "cannot compute this" in str(error):
            pytest.skip(f"the backend refuses: {error}")
        raise


@pytest.fixture(params=[0, 1, 2024], ids=lambda seed: f"seed{seed}")
def checker_seed(request) -> int:
    """A checker's ``seed``: 0 is the chapters' problems, the others are problems a grader might pick."""
    return request.param
