"""``save_params`` and ``load_params``: round trips, atomic writes and refused files."""

from __future__ import annotations

import stat

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP


@pytest.fixture
def model(make_model):
    return make_model(lambda: MLP(1, (8, 8), 1), dtype=torch.float32)


def test_round_trip_keeps_names_values_and_dtypes(model, tmp_path, make_model):
    params = dict(model.named_parameters())
    path = mb.save_params(params, tmp_path / "theta.pt")

    loaded = mb.load_params(path)

    assert path == tmp_path / "theta.pt"
    assert list(loaded) == list(params)
    for name, tensor in params.items():
        assert torch.equal(loaded[name], tensor.detach())
        assert loaded[name].dtype == tensor.dtype
        assert not loaded[name].requires_grad
    double = {
        name: tensor.double() for name, tensor in make_model(lambda: MLP(1, (8, 8), 1)).named_parameters()
    }
    mb.save_params(double, tmp_path / "theta64.pt")
    assert all(tensor.dtype == torch.float64 for tensor in mb.load_params(tmp_path / "theta64.pt").values())


def test_loaded_params_drive_the_model_like_the_originals(model, tmp_path, make_model):
    mb.save_params(dict(model.named_parameters()), str(tmp_path / "theta.pt"))  # a str path works too
    other = make_model(lambda: MLP(1, (8, 8), 1), seed=1, dtype=torch.float32)
    x = torch.linspace(-5, 5, 11)[:, None]
    assert not torch.equal(other(x), model(x))

    other.load_state_dict(mb.load_params(tmp_path / "theta.pt", model=other))

    assert torch.equal(other(x), model(x))


def test_saving_adapted_params_detaches_them(model, tmp_path, sine_batch):
    support_x, support_y, _, _ = (tensor[0] for tensor in sine_batch(dtype=torch.float32))
    params = dict(model.named_parameters())
    adapted = mb.adapt(model, params, support_x, support_y, loss_fn=F.mse_loss, inner_lr=0.1, inner_steps=1)
    assert adapted["head.bias"].requires_grad

    mb.save_params(adapted, tmp_path / "phi.pt")

    loaded = mb.load_params(tmp_path / "phi.pt")
    assert all(torch.equal(loaded[name], adapted[name].detach()) for name in adapted)


def test_save_is_atomic_and_leaves_no_temporary_files(model, tmp_path):
    params = dict(model.named_parameters())
    mb.save_params(params, tmp_path / "theta.pt")
    mb.save_params({name: 2 * t for name, t in params.items()}, tmp_path / "theta.pt")  # overwrite

    assert [p.name for p in tmp_path.iterdir()] == ["theta.pt"]
    loaded = mb.load_params(tmp_path / "theta.pt")
    assert torch.equal(loaded["head.bias"], 2 * params["head.bias"].detach())


def test_a_failed_save_keeps_the_previous_file_and_leaves_nothing_behind(model, tmp_path, monkeypatch):
    params = dict(model.named_parameters())
    mb.save_params(params, tmp_path / "theta.pt")
    before = (tmp_path / "theta.pt").read_bytes()

    def interrupted_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        mb.save_params({name: 2 * t for name, t in params.items()}, tmp_path / "theta.pt")

    assert [p.name for p in tmp_path.iterdir()] == ["theta.pt"]
    assert (tmp_path / "theta.pt").read_bytes() == before


def test_saving_into_a_missing_folder_raises(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        mb.save_params(dict(model.named_parameters()), tmp_path / "missing" / "theta.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("params", [[torch.zeros(1)], {"w": [0.0]}, {0: torch.zeros(1)}, None])
def test_saving_something_else_than_named_tensors_raises(params, tmp_path):
    with pytest.raises(TypeError, match="params"):
        mb.save_params(params, tmp_path / "theta.pt")
    assert list(tmp_path.iterdir()) == []


def test_loading_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        mb.load_params(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="path"):
        mb.load_params(tmp_path)  # a folder is not a parameter file


def test_loading_garbage_raises(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(ValueError, match="path.*not a parameter file"):
        mb.load_params(path)


class Payload:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to unpickle it."""

    def __init__(self) -> None:
        self.weights = torch.zeros(1)


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"head.weight": torch.zeros(1, 1), "payload": Payload()}, path)
    with pytest.raises(ValueError, match="not a parameter file"):
        mb.load_params(path)


@pytest.mark.parametrize(
    "content", [torch.zeros(3), {"head.bias": 1.0}, {1: torch.zeros(1)}, [torch.zeros(1)]]
)
def test_loading_a_file_without_a_dict_of_named_tensors_raises(content, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="dict of named tensors"):
        mb.load_params(path)


def test_loading_with_a_model_checks_the_params_match_it(model, tmp_path):
    mb.save_params(dict(model.named_parameters()), tmp_path / "theta.pt")

    assert mb.load_params(tmp_path / "theta.pt", model=model).keys() == dict(model.named_parameters()).keys()
    with pytest.raises(ValueError, match=r"params\['body\.0\.weight'\] has shape"):
        mb.load_params(tmp_path / "theta.pt", model=MLP(1, (4, 8), 1))
    with pytest.raises(ValueError, match=r"params does not match the model"):
        mb.load_params(tmp_path / "theta.pt", model=MLP(1, (8,), 1))


def test_load_puts_tensors_on_the_map_location(model, tmp_path):
    mb.save_params(dict(model.named_parameters()), tmp_path / "theta.pt")
    loaded = mb.load_params(tmp_path / "theta.pt", map_location="meta")
    assert all(tensor.device.type == "meta" for tensor in loaded.values())
    assert all(tensor.device.type == "cpu" for tensor in mb.load_params(tmp_path / "theta.pt").values())


def test_resaving_keeps_the_files_permissions(tmp_path):
    path = tmp_path / "theta.pt"
    mb.save_params({"w": torch.zeros(2)}, path)
    path.chmod(0o640)
    mb.save_params({"w": torch.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert torch.equal(mb.load_params(path)["w"], torch.ones(2))


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "theta.pt"
    mb.save_params({"w": torch.zeros(2)}, path)
    path.chmod(0o444)
    with pytest.raises(PermissionError, match="is read-only"):
        mb.save_params({"w": torch.ones(2)}, path)
    assert torch.equal(mb.load_params(path)["w"], torch.zeros(2))


def test_a_symbolic_link_is_not_replaced_by_a_file(tmp_path):
    target = tmp_path / "real.pt"
    mb.save_params({"w": torch.zeros(2)}, target)
    link = tmp_path / "link.pt"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link; write to the file it points to"):
        mb.save_params({"w": torch.ones(2)}, link)
    assert link.is_symlink() and torch.equal(mb.load_params(target)["w"], torch.zeros(2))
