"""Few-shot classification tasks, the Conv4 network and classification accuracy.

The synthetic images carry their own identity: pixel (0, 0) holds the class index and
pixel (0, 1) the example's number within its class, so every sampled image can be
traced back to the example it came from.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

import mamlbook as mb
from mamlbook.models import Conv4
from mamlbook.tasks import FewShotClassification, classification_accuracy

NUM_CLASSES = 30


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tagged_images(counts: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 28x28 uint8 images, ``counts[c]`` of class c, shuffled; labels 7 + 3c."""
    rng = generator(seed)
    klass = torch.cat([torch.full((count,), c) for c, count in enumerate(counts)])
    number = torch.cat([torch.arange(count) for count in counts])
    images = torch.randint(0, 256, (len(klass), 28, 28), dtype=torch.uint8, generator=rng)
    images[:, 0, 0], images[:, 0, 1] = klass.to(torch.uint8), number.to(torch.uint8)
    order = torch.randperm(len(klass), generator=rng)
    return images[order], 7 + 3 * klass[order]


def identities(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class index and example number of sampled images ``(..., 1, 28, 28)``."""
    pixels = torch.round(x[..., 0, 0, :2] * 255).long()
    return pixels[..., 0], pixels[..., 1]


@pytest.fixture(scope="module")
def omniglot_like() -> tuple[torch.Tensor, torch.Tensor]:
    return tagged_images([20] * NUM_CLASSES)


def test_sample_shapes_dtypes_and_labels(omniglot_like):
    tasks = FewShotClassification(*omniglot_like, n_way=5, k_shot=2, n_query=3)
    batch = tasks.sample(7, generator=generator())

    assert batch.support_x.shape == (7, 10, 1, 28, 28)
    assert batch.query_x.shape == (7, 15, 1, 28, 28)
    assert batch.support_x.dtype == batch.query_x.dtype == torch.float32
    assert batch.support_y.dtype == batch.query_y.dtype == torch.int64
    assert all(tensor.device.type == "cpu" for tensor in batch)
    assert torch.equal(batch.support_y, torch.arange(5).repeat_interleave(2).expand(7, 10))
    assert torch.equal(batch.query_y, torch.arange(5).repeat_interleave(3).expand(7, 15))
    assert (tasks.n_way, tasks.k_shot, tasks.n_query, tasks.num_classes) == (5, 2, 3, NUM_CLASSES)


def test_sampled_images_are_the_stored_images_scaled_to_unit_range(omniglot_like):
    images, labels = omniglot_like
    tasks = FewShotClassification(images, labels, n_way=3, k_shot=1, n_query=2)
    batch = tasks.sample(4, generator=generator())

    klass, number = identities(batch.query_x)
    for x, c, n in zip(batch.query_x.flatten(0, 1), klass.flatten(), number.flatten(), strict=True):
        (source,) = ((labels == 7 + 3 * c) & (images[:, 0, 1] == n)).nonzero()[:, 0]
        torch.testing.assert_close(x[0], images[source].float() / 255, rtol=0, atol=0)


def test_uint8_images_are_stored_as_given_without_a_copy(omniglot_like):
    images, labels = omniglot_like
    tasks = FewShotClassification(images, labels, n_way=5, k_shot=1, n_query=1)

    assert tasks.images.dtype == torch.uint8
    assert tasks.images.shape == (len(images), 1, 28, 28)
    assert tasks.images.data_ptr() == images.data_ptr()


def test_float_images_with_channels_are_used_as_they_are():
    images = torch.randn(40, 3, 8, 8, dtype=torch.float64, generator=generator())
    labels = torch.arange(40) % 4
    tasks = FewShotClassification(images, labels, n_way=2, k_shot=3, n_query=2)
    batch = tasks.sample(5, generator=generator())

    assert batch.support_x.shape == (5, 6, 3, 8, 8) and batch.support_x.dtype == torch.float32
    stored = images.float()
    for x in batch.support_x.flatten(0, 1):
        assert (stored == x).flatten(1).all(1).sum() == 1  # exactly one stored image matches


@pytest.mark.parametrize("counts", [[20] * NUM_CLASSES, [5 + (7 * c) % 16 for c in range(NUM_CLASSES)]])
def test_tasks_hold_distinct_classes_and_distinct_examples_consistently_labelled(counts):
    tasks = FewShotClassification(*tagged_images(counts), n_way=5, k_shot=2, n_query=3)
    batch = tasks.sample(300, generator=generator())

    support_class, support_number = identities(batch.support_x.unflatten(1, (5, 2)))  # (T, 5, 2)
    query_class, query_number = identities(batch.query_x.unflatten(1, (5, 3)))  # (T, 5, 3)
    # One class per label, the same in support and query: label i is one class throughout the task.
    assert (support_class == support_class[..., :1]).all() and (query_class == support_class[..., :1]).all()
    # The n_way classes of a task are distinct.
    task_classes = support_class[..., 0].sort(-1).values  # (T, 5)
    assert (task_classes.diff(dim=-1) > 0).all()
    # The k_shot + n_query examples of each class are distinct and existing: support and query are disjoint.
    numbers = torch.cat([support_number, query_number], -1).sort(-1).values  # (T, 5, 5)
    assert (numbers.diff(dim=-1) > 0).all()
    assert (numbers[..., -1] < torch.tensor(counts)[support_class[..., 0]]).all()


def test_classes_and_examples_are_drawn_uniformly(omniglot_like):
    tasks = FewShotClassification(*omniglot_like, n_way=5, k_shot=1, n_query=1)
    klass, number = identities(tasks.sample(3000, generator=generator()).support_x)

    class_counts = torch.bincount(klass.flatten(), minlength=NUM_CLASSES)  # 500 expected each
    assert class_counts.min() > 400 and class_counts.max() < 600
    number_counts = torch.bincount(number.flatten(), minlength=20)  # 750 expected each
    assert number_counts.min() > 620 and number_counts.max() < 880
    # The label a class gets is random too: class 0 is seen under every label.
    assert set(torch.nonzero(klass == 0)[:, 1].tolist()) == set(range(5))


def test_sampling_is_deterministic_for_a_seeded_generator(omniglot_like):
    tasks = FewShotClassification(*omniglot_like, n_way=5, k_shot=1, n_query=4)
    first, again, other = (tasks.sample(6, generator=generator(seed)) for seed in (3, 3, 4))

    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first.query_x, other.query_x)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_way": 0}, ValueError, "n_way must be >= 1"),
        ({"n_way": 2.0}, TypeError, "n_way must be an integer"),
        ({"k_shot": 0}, ValueError, "k_shot must be >= 1"),
        ({"n_query": True}, TypeError, "n_query must be an integer"),
        ({"n_way": 31}, ValueError, "n_way must be at most the number of classes, 30"),
        ({"k_shot": 10, "n_query": 11}, ValueError, "21 examples per class .* class 7 has only 20"),
        ({"images": torch.zeros(600, 28)}, ValueError, r"images must have shape \(N, H, W\)"),
        ({"images": torch.zeros(600, 28, 28, dtype=torch.int32)}, TypeError, "images must be uint8"),
        ({"images": [[0.0]]}, TypeError, "images must be a torch.Tensor"),
        ({"labels": torch.zeros(599, dtype=torch.long)}, ValueError, "labels must have shape .* N = 600"),
        ({"labels": torch.zeros(600)}, TypeError, "labels must hold integer class ids"),
    ],
)
def test_constructor_errors_name_the_argument(omniglot_like, kwargs, error, message):
    images, labels = omniglot_like
    args = {"images": images, "labels": labels, "n_way": 5, "k_shot": 1, "n_query": 1} | kwargs
    with pytest.raises(error, match=message):
        FewShotClassification(**args)


def test_smallest_class_is_named_when_too_small():
    images, labels = tagged_images([20, 20, 4, 20])
    with pytest.raises(ValueError, match="class 13 has only 4"):
        FewShotClassification(images, labels, n_way=2, k_shot=1, n_query=4)


def test_sample_rejects_bad_num_tasks(omniglot_like):
    tasks = FewShotClassification(*omniglot_like, n_way=5, k_shot=1, n_query=1)
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        tasks.sample(0)


@pytest.mark.parametrize(
    ("stride_conv", "image_size", "in_channels"), [(True, 28, 1), (False, 28, 1), (False, 84, 3)]
)
def test_conv4_output_shape_and_parameter_names(stride_conv, image_size, in_channels):
    model = Conv4(in_channels, n_way=7, hidden=8, image_size=image_size, stride_conv=stride_conv)
    x = torch.rand(6, in_channels, image_size, image_size, generator=generator())

    assert model(x).shape == (6, 7)
    names = [name for name, _ in model.named_parameters()]
    assert names[-2:] == ["head.weight", "head.bias"]
    assert all(name.startswith("body.") for name in names[:-2])
    convolutions = [f"body.{block}.0.weight" for block in range(4)]
    assert [name for name in names if name.endswith(".0.weight")] == convolutions
    assert model.head.weight.shape == (7, 8)
    assert list(model.buffers()) == []


def test_conv4_downsamples_28_to_2_with_strided_convolutions():
    model = Conv4(hidden=4)
    assert model.body(torch.rand(3, 1, 28, 28, generator=generator())).shape == (3, 4, 2, 2)
    assert Conv4(hidden=4, stride_conv=False).body(torch.rand(3, 1, 28, 28)).shape == (3, 4, 1, 1)


def test_conv4_batch_norm_uses_the_batch_statistics_in_eval_mode_too(make_model):
    model = make_model(lambda: Conv4(hidden=8), dtype=torch.float32)
    x = torch.rand(10, 1, 28, 28, generator=generator())
    train_logits = model.train()(x)
    eval_logits = model.eval()(x)

    torch.testing.assert_close(eval_logits, train_logits)
    # Each example is normalised with the others of its batch: alone, it gives other logits.
    assert not torch.allclose(model(x[:5])[0], eval_logits[0], atol=1e-3)
    # Normalisation: rescaling the whole batch changes nothing (the convolutions have no bias).
    torch.testing.assert_close(model(3 * x), eval_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1"),
        ({"n_way": 1.5}, TypeError, "n_way must be an integer"),
        ({"hidden": 0}, ValueError, "hidden must be >= 1"),
        ({"image_size": 8, "stride_conv": False}, ValueError, "image_size must be >= 16"),
        ({"stride_conv": 1}, TypeError, "stride_conv must be a bool"),
    ],
)
def test_conv4_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        Conv4(**kwargs)


def test_conv4_rejects_images_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        Conv4(hidden=4)(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 28, 28\)"):
        Conv4(hidden=4)(torch.zeros(1, 28, 28))


@pytest.fixture(scope="module")
def conv_batch(omniglot_like):
    tasks = FewShotClassification(*omniglot_like, n_way=5, k_shot=2, n_query=3)
    return tasks.sample(4, generator=generator())


@pytest.mark.parametrize("backend", ["autograd", "batched"])
def test_task_losses_equal_a_loop_over_tasks(make_model, conv_batch, backend):
    model = make_model(lambda: Conv4(hidden=16), dtype=torch.float32)
    rng = generator(1)
    params = {  # a different starting point per task, (T, ...) each
        name: tensor.detach() + 0.05 * torch.randn(4, *tensor.shape, generator=rng)
        for name, tensor in model.named_parameters()
    }
    x, y = conv_batch.support_x, conv_batch.support_y

    theta = dict(model.named_parameters())
    loop = mb.InnerLoop.of(theta, inner_lr=0.4, inner_steps=1)
    problem = mb.backends.Problem("test", model, theta, F.cross_entropy, loop, (x,))
    vmapped = mb.backends.BACKENDS[backend].task_losses(problem, x, y, F.cross_entropy)(params)
    looped = torch.stack(
        [
            F.cross_entropy(functional_call(model, {n: p[t] for n, p in params.items()}, (x[t],)), y[t])
            for t in range(4)
        ]
    )
    torch.testing.assert_close(vmapped, looped, rtol=1e-5, atol=1e-5)
    # Batch statistics are per task: normalising all tasks' images together would differ.
    all_logits = functional_call(model, {n: p[0] for n, p in params.items()}, (x.flatten(0, 1),))
    assert not torch.allclose(F.cross_entropy(all_logits[:10], y[0]), looped[0], atol=1e-3)


@pytest.mark.parametrize("backend", ["autograd", "batched"])
def test_second_order_inner_loop_through_conv4_gives_finite_meta_gradients(make_model, conv_batch, backend):
    model = make_model(lambda: Conv4(hidden=16), dtype=torch.float32)
    params = dict(model.named_parameters())
    mb.maml_loss(
        model, params, conv_batch, loss_fn=F.cross_entropy, inner_lr=0.4, inner_steps=1, backend=backend
    ).backward()

    for name, tensor in model.named_parameters():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


def test_classification_accuracy_on_hand_made_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 5.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, 0, 1])  # argmax is 0, 2, 1, 2: two right

    accuracy = classification_accuracy(logits, labels)
    assert accuracy.shape == () and accuracy.dtype == torch.float32
    assert accuracy.item() == 0.5
    assert classification_accuracy(logits, torch.tensor([0, 2, 1, 2])).item() == 1.0
    assert classification_accuracy(logits.double(), torch.tensor([1, 0, 0, 0])).item() == 0.0
    assert classification_accuracy(logits.double(), labels).dtype == torch.float64


def test_classification_accuracy_vmaps_over_tasks():
    logits = torch.randn(6, 10, 5, generator=generator())
    labels = torch.randint(0, 5, (6, 10), generator=generator(1))

    expected = torch.stack([classification_accuracy(logits[t], labels[t]) for t in range(6)])
    torch.testing.assert_close(vmap(classification_accuracy)(logits, labels), expected)
    assert classification_accuracy(logits, labels) == expected.mean()


@pytest.mark.parametrize(
    ("logits", "labels", "error", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), ValueError, r"labels must have shape \(4,\)"),
        (torch.zeros(4, 3), torch.zeros(4), TypeError, "labels must hold integers"),
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), ValueError, "floating"),
        ([[0.0]], torch.zeros(1, dtype=torch.long), TypeError, "logits must be a torch.Tensor"),
    ],
)
def test_classification_accuracy_errors(logits, labels, error, message):
    with pytest.raises(error, match=message):
        classification_accuracy(logits, labels)
