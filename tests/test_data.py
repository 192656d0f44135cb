"""Omniglot loading, caching, downloading and splitting (mamlbook.data.omniglot).

Most tests use a tiny fake Omniglot (a few generated PNGs, one-bit ones included); the
real copy at ../shared/data/omniglot is preprocessed once for the whole module.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import threading
import time
import urllib.error
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import mamlbook as mb
from mamlbook import _files
from mamlbook.data import omniglot

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"

# Characters of the fake Omniglot and their number of drawings, listed out of order on purpose.
FAKE_CHARACTERS = {
    "images_background": {"Beta/character02": 2, "Alpha/character01": 2, "Beta/character01": 3},
    "images_evaluation": {"Gamma/character01": 2},
}


def drawing(seed: int, mode: str = "1") -> bytes:
    """A 105x105 PNG, white with a black stroke placed by ``seed``, like Omniglot's."""
    image = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(image).line([(10 + 7 * seed, 5), (90 - 3 * seed, 100)], fill=0, width=1 + seed % 3)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def fake_files(extra: int = 0) -> dict[str, dict[str, bytes]]:
    """``{part: {"alphabet/character/file.png": PNG bytes}}``; one greyscale PNG among one-bit ones."""
    files, seed = {}, 0
    for part, characters in FAKE_CHARACTERS.items():
        files[part] = {}
        for character, count in characters.items():
            for index in range(count + (extra if part == "images_background" else 0)):
                seed += 1
                mode = "L" if seed == 4 else "1"
                files[part][f"{character}/{seed:04d}_{index + 1:02d}.png"] = drawing(seed, mode)
    return files


def write_zip(root: Path, part: str, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / f"{part}.zip", "w") as archive:
        archive.writestr(f"{part}/", b"")
        for path, content in files.items():
            archive.writestr(f"{part}/{path}", content)
    return root / f"{part}.zip"


def write_folder(root: Path, part: str, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        (root / part / path).parent.mkdir(parents=True, exist_ok=True)
        (root / part / path).write_bytes(content)


def fake_root(root: Path, *, as_folders: bool = False) -> Path:
    for part, files in fake_files().items():
        (write_folder if as_folders else write_zip)(root, part, files)
    return root


def expected_images(files: dict[str, dict[str, bytes]], size: int = 28) -> np.ndarray:
    """The oracle: each PNG in order of part, alphabet, character and file, made grey, resized, inverted."""
    images = []
    for part in omniglot.PARTS:
        for path in sorted(files[part], key=lambda path: path.split("/")):
            grey = Image.open(io.BytesIO(files[part][path])).convert("L")
            images.append(255 - np.asarray(grey.resize((size, size), Image.Resampling.LANCZOS)))
    return np.stack(images)


def assert_same(a: omniglot.Omniglot, b: omniglot.Omniglot) -> None:
    for field in ("images", "labels", "background"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.class_names, a.alphabets) == (b.class_names, b.alphabets)


def fail_to_decode(*args):
    raise AssertionError("a PNG was decoded although the cache should have been used")


# The real local copy


@pytest.fixture(scope="module")
def real_copy(tmp_path_factory) -> tuple[omniglot.Omniglot, Path]:
    if not (REAL_ROOT / "images_background.zip").is_file():
        pytest.skip(f"the local copy of Omniglot is not at {REAL_ROOT}")
    cache_dir = tmp_path_factory.mktemp("omniglot-cache")
    return omniglot.load_omniglot(REAL_ROOT, cache_dir=cache_dir), cache_dir


@pytest.mark.slow
def test_real_copy_has_all_of_omniglot(real_copy):
    data, _ = real_copy
    assert data.images.shape == (32460, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert torch.equal(data.labels, torch.arange(1623).repeat_interleave(20))
    assert len(data.class_names) == len(data.alphabets) == 1623 == len(set(data.class_names))
    assert len(set(data.alphabets)) == 50
    assert torch.equal(data.background, torch.arange(1623) < 964)
    assert data.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert data.class_names[964] == "Angelic/character01"
    # Ink is bright: the borders are background (0), the strokes reach 255, most pixels are dark.
    assert data.images[:, 0, :].float().mean() < 5 and data.images.amax(dim=(1, 2)).min() > 128
    assert data.images.float().mean() < 40


@pytest.mark.slow
def test_real_copy_loads_from_the_cache_quickly(real_copy, monkeypatch):
    data, cache_dir = real_copy
    monkeypatch.setattr(omniglot, "_decode", fail_to_decode)
    start = time.perf_counter()
    cached = omniglot.load_omniglot(REAL_ROOT, cache_dir=cache_dir)
    assert time.perf_counter() - start < 5  # about 0.02 s when measured; loose for busy machines
    assert_same(cached, data)


# Reading zips and folders


def test_zip_images_are_sorted_greyscale_resized_and_inverted(tmp_path):
    data = omniglot.load_omniglot(fake_root(tmp_path / "data"), cache_dir=tmp_path / "cache")
    assert np.array_equal(data.images.numpy(), expected_images(fake_files()))
    assert data.class_names == [
        "Alpha/character01",
        "Beta/character01",
        "Beta/character02",
        "Gamma/character01",
    ]
    assert data.alphabets == ["Alpha", "Beta", "Beta", "Gamma"]
    assert torch.equal(data.labels, torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3]))
    assert torch.equal(data.background, torch.tensor([True, True, True, False]))


def test_folder_and_zip_give_identical_arrays(tmp_path):
    from_zips = omniglot.load_omniglot(fake_root(tmp_path / "zips"), cache_dir=tmp_path / "cache")
    folders = fake_root(tmp_path / "folders", as_folders=True)
    (folders / "images_background" / "Alpha" / "character01" / "._0003_01.png").write_bytes(
        b"macOS metadata, not a PNG"
    )
    from_folders = omniglot.load_omniglot(folders, cache_dir=tmp_path / "cache")
    assert_same(from_folders, from_zips)


def test_folder_is_preferred_to_the_zip(tmp_path):
    root = fake_root(tmp_path / "data", as_folders=True)
    (root / "images_background.zip").write_bytes(b"a broken zip that must not be read")
    data = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert len(data.images) == 9


def test_one_bit_strokes_are_resized_through_greyscale(tmp_path):
    thin = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(thin).line([(52, 0), (52, 104)], fill=0, width=1)
    buffer = io.BytesIO()
    thin.save(buffer, format="PNG")
    files = {part: {"Alpha/character01/0001_01.png": buffer.getvalue()} for part in omniglot.PARTS}
    for part in omniglot.PARTS:
        write_zip(tmp_path / "data", part, files[part])
    image = omniglot.load_omniglot(tmp_path / "data", cache_dir=tmp_path / "cache").images[0]
    grey_levels = image[(image > 0) & (image < 255)]
    assert len(grey_levels) > 0, "a one-bit image was resized by nearest neighbour"
    # Resizing the one-bit image directly would give black and white only.
    direct = thin.resize((28, 28), Image.Resampling.LANCZOS).convert("L")
    assert set(np.unique(np.asarray(direct)).tolist()) <= {0, 255}


def test_image_size_sets_the_side(tmp_path):
    data = omniglot.load_omniglot(fake_root(tmp_path / "data"), cache_dir=tmp_path / "cache", image_size=14)
    assert data.images.shape == (9, 14, 14)
    assert np.array_equal(data.images.numpy(), expected_images(fake_files(), size=14))


# The cache


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "data")
    first = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("omniglot-28px-*.pt"))) == 1
    monkeypatch.setattr(omniglot, "_decode", fail_to_decode)
    assert_same(omniglot.load_omniglot(root, cache_dir=tmp_path / "cache"), first)


def test_changed_zip_is_read_again(tmp_path):
    root = fake_root(tmp_path / "data")
    omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    write_zip(root, "images_background", fake_files(extra=1)["images_background"])
    data = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert len(data.images) == 9 + 3
    files = {**fake_files(), "images_background": fake_files(extra=1)["images_background"]}
    assert np.array_equal(data.images.numpy(), expected_images(files))


def test_touched_zip_is_read_again(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "data")
    omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    archive = root / "images_evaluation.zip"
    mtime = archive.stat().st_mtime_ns + 10**9
    os.utime(archive, ns=(mtime, mtime))
    decoded = []
    monkeypatch.setattr(
        omniglot, "_decode", lambda *args: decoded.append(args) or np.zeros((28, 28), np.uint8)
    )
    omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert len(decoded) == 9


def test_changed_file_in_a_folder_is_read_again(tmp_path):
    root = fake_root(tmp_path / "data", as_folders=True)
    before = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    changed = root / "images_evaluation" / "Gamma" / "character01" / "0008_01.png"
    changed.write_bytes(drawing(20))
    mtime = changed.stat().st_mtime_ns + 10**9
    os.utime(changed, ns=(mtime, mtime))
    after = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert torch.equal(after.images[:7], before.images[:7]) and not torch.equal(
        after.images[7], before.images[7]
    )
    only_changed = {
        "images_background": {},
        "images_evaluation": {"Gamma/character01/0008_01.png": drawing(20)},
    }
    assert np.array_equal(after.images[7].numpy(), expected_images(only_changed)[0])


def test_unreadable_cache_warns_and_is_rebuilt(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "data")
    first = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable Omniglot cache"):
        assert_same(omniglot.load_omniglot(root, cache_dir=tmp_path / "cache"), first)
    monkeypatch.setattr(omniglot, "_decode", fail_to_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="the Omniglot data in")  # the fake data is small
        assert_same(omniglot.load_omniglot(root, cache_dir=tmp_path / "cache"), first)
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [cache_file.name]


# Missing and broken files


def test_missing_files_name_the_folder_and_the_fixes(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        omniglot.load_omniglot(tmp_path, cache_dir=tmp_path / "cache")
    message = str(error.value)
    for expected in (str(tmp_path), "images_background.zip", "images_evaluation.zip", "download=True"):
        assert expected in message
    assert "../shared/data/omniglot" in message
    write_zip(tmp_path, "images_background", fake_files()["images_background"])
    with pytest.raises(FileNotFoundError, match="images_evaluation") as error:
        omniglot.load_omniglot(tmp_path, cache_dir=tmp_path / "cache")
    assert "images_background" not in str(error.value)


def test_corrupt_zip_says_to_delete_it(tmp_path):
    root = fake_root(tmp_path / "data")
    archive = root / "images_evaluation.zip"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ValueError, match="images_evaluation.zip is not a valid zip file.*delete it"):
        omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")


def test_corrupt_png_is_named(tmp_path):
    files = fake_files()
    files["images_evaluation"]["Gamma/character01/0008_01.png"] = b"not a png"
    for part in omniglot.PARTS:
        write_zip(tmp_path / "data", part, files[part])
    with pytest.raises(ValueError, match="cannot read the image Gamma/character01/0008_01.png"):
        omniglot.load_omniglot(tmp_path / "data", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("as_folders", [False, True])
def test_part_without_pngs_is_an_error(tmp_path, as_folders):
    root = fake_root(tmp_path / "data", as_folders=as_folders)
    wrong = {"0001_01.png": drawing(1), "Alpha/notes.txt": b"no images"}  # not alphabet/character/file
    (write_folder if as_folders else write_zip)(tmp_path / "wrong", "images_background", wrong)
    name = "images_background" if as_folders else "images_background.zip"
    (root / name).rename(root / f"{name}.old")
    (tmp_path / "wrong" / name).rename(root / name)
    with pytest.raises(ValueError, match="holds no images laid out as"):
        omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"image_size": 0}, ValueError, "image_size must be >= 1"),
        ({"image_size": 28.0}, TypeError, "image_size must be an integer"),
        ({"root": 3}, TypeError, "root must be a path"),
        ({"cache_dir": b"cache"}, TypeError, "cache_dir must be a path"),
        ({"download": "yes"}, TypeError, "download must be a bool"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        omniglot.load_omniglot(**{"root": tmp_path, "cache_dir": tmp_path, **kwargs})


def test_default_folders_follow_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_DATA", str(fake_root(tmp_path / "data")))
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    assert omniglot.default_data_dir() == tmp_path / "data"
    assert len(omniglot.load_omniglot().images) == 9
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    monkeypatch.delenv("MAMLBOOK_DATA")
    monkeypatch.delenv("MAMLBOOK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert omniglot.default_data_dir() == tmp_path / "home" / ".cache" / "mamlbook" / "omniglot"
    assert omniglot.default_cache_dir() == tmp_path / "home" / ".cache" / "mamlbook"


# Downloading, without a network


@pytest.fixture
def fake_upstream(tmp_path, monkeypatch) -> Path:
    """Fake zips in ``tmp_path / "upstream"``, with the URL and MD5 tables pointing at them."""
    upstream = tmp_path / "upstream"
    for part, files in fake_files().items():
        archive = write_zip(upstream, part, files)
        monkeypatch.setitem(omniglot._URLS, part, f"http://upstream.invalid/{part}.zip")
        monkeypatch.setitem(omniglot._MD5S, part, hashlib.md5(archive.read_bytes()).hexdigest())
    return upstream


def serve_from(monkeypatch, upstream: Path) -> list[str]:
    """Answer ``_files.open_url`` from the files in ``upstream``; returns the list of URLs asked for."""
    asked = []

    def open_url(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO((upstream / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(_files, "open_url", open_url)
    return asked


def test_download_checks_md5_then_extracts(tmp_path, monkeypatch, fake_upstream):
    asked = serve_from(monkeypatch, fake_upstream)
    root = tmp_path / "data"
    data = omniglot.load_omniglot(root, download=True, cache_dir=tmp_path / "cache")
    assert asked == [omniglot._URLS[part] for part in omniglot.PARTS]
    assert sorted(os.listdir(root)) == sorted([*omniglot.PARTS, *(f"{part}.zip" for part in omniglot.PARTS)])
    assert np.array_equal(data.images.numpy(), expected_images(fake_files()))
    omniglot.load_omniglot(root, download=True, cache_dir=tmp_path / "cache")
    assert len(asked) == 2, "parts already present were downloaded again"


def test_download_through_a_local_http_server(tmp_path, monkeypatch, fake_upstream):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(fake_upstream))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for part in omniglot.PARTS:
            monkeypatch.setitem(omniglot._URLS, part, f"http://127.0.0.1:{server.server_port}/{part}.zip")
        data = omniglot.load_omniglot(tmp_path / "data", download=True, cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert np.array_equal(data.images.numpy(), expected_images(fake_files()))


def test_wrong_md5_keeps_nothing(tmp_path, monkeypatch, fake_upstream):
    serve_from(monkeypatch, fake_upstream)
    monkeypatch.setitem(omniglot._MD5S, "images_background", "0" * 32)
    with pytest.raises(omniglot.OmniglotDownloadError, match="MD5 .* instead of 0{32}, so it was not kept"):
        omniglot.load_omniglot(tmp_path / "data", download=True, cache_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "data") == []


def test_network_failure_keeps_nothing(tmp_path, monkeypatch, fake_upstream):
    def offline(url: str, timeout: float):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(_files, "open_url", offline)
    with pytest.raises(omniglot.OmniglotDownloadError, match="could not download .*no network"):
        omniglot.load_omniglot(tmp_path / "data", download=True, cache_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "data") == []


def test_hostile_member_names_are_extracted_inside_the_folder(tmp_path):
    archive = tmp_path / "data" / "images_background.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("images_background/A/c/1.png", b"png")
        opened.writestr("images_background/../../escaped.txt", b"hostile")
        opened.writestr("/absolute.txt", b"hostile")
    _files.extract_atomically(archive, tmp_path / "data" / "images_background")
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == [
        "data",
        "data/images_background",
        "data/images_background.zip",
        "data/images_background/A",
        "data/images_background/A/c",
        "data/images_background/A/c/1.png",
        "data/images_background/escaped.txt",
    ]


class Interrupted(Exception):
    pass


def test_interrupted_extraction_leaves_no_folder_and_a_retry_works(tmp_path, monkeypatch, fake_upstream):
    serve_from(monkeypatch, fake_upstream)
    real_extractall = zipfile.ZipFile.extractall

    def extract_some_then_fail(self, path=None, members=None, pwd=None):
        real_extractall(self, path, self.namelist()[:3])
        raise Interrupted

    root = tmp_path / "data"
    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "extractall", extract_some_then_fail)
        with pytest.raises(Interrupted):
            omniglot.load_omniglot(root, download=True, cache_dir=tmp_path / "cache")
    assert os.listdir(root) == ["images_background.zip"]
    # What a killed process would leave: a hidden, half-extracted folder, which is never read.
    write_folder(root / ".images_background.x1y2.extracting", "images_background", {"A/c/1.png": b"broken"})
    data = omniglot.load_omniglot(root, download=True, cache_dir=tmp_path / "cache")
    assert np.array_equal(data.images.numpy(), expected_images(fake_files()))
    assert not (root / "images_background").exists() and (root / "images_evaluation").is_dir()


# The package


def test_mamlbook_data_is_the_omniglot_api():
    names = [
        "PARTS",
        "ClassificationData",
        "Omniglot",
        "OmniglotDownloadError",
        "OmniglotSplit",
        "default_cache_dir",
        "default_data_dir",
        "load_omniglot",
        "split_omniglot",
    ]
    assert sorted(mb.data.__all__) == sorted(names)
    assert all(getattr(mb.data, name) is getattr(omniglot, name) for name in names)


# Splitting


@pytest.fixture(scope="module")
def synthetic() -> omniglot.Omniglot:
    """1,623 classes of 2 random images each, shaped like Omniglot."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1623 * 2, 28, 28), dtype=torch.uint8, generator=generator)
    names = [f"Alphabet{c // 40:02d}/character{c % 40 + 1:02d}" for c in range(1623)]
    return omniglot.Omniglot(
        images,
        torch.arange(1623).repeat_interleave(2),
        names,
        [name.split("/")[0] for name in names],
        torch.arange(1623) < 964,
    )


def test_split_follows_the_papers_rule(synthetic):
    split = omniglot.split_omniglot(synthetic)
    order = torch.randperm(1623, generator=torch.Generator().manual_seed(1))
    assert torch.equal(split.train_classes, order[:1100])
    assert torch.equal(split.val_classes, order[1100:1200])
    assert torch.equal(split.test_classes, order[1200:])
    assert torch.equal(
        torch.cat([order[:1100], order[1100:1200], order[1200:]]).sort().values, torch.arange(1623)
    )
    by_class = synthetic.images.view(1623, 2, 28, 28)
    for data, classes in ((split.val, split.val_classes), (split.test, split.test_classes)):
        assert torch.equal(data.labels, torch.arange(len(classes)).repeat_interleave(2))
        assert torch.equal(data.images.view(len(classes), 2, 28, 28), by_class[classes])
    assert (split.val.labels.unique().numel(), split.test.labels.unique().numel()) == (100, 423)


def test_training_classes_are_rotated_into_four(synthetic):
    split = omniglot.split_omniglot(synthetic)
    assert split.train.images.shape == (4400 * 2, 28, 28)
    assert torch.equal(split.train.labels, torch.arange(4400).repeat_interleave(2))
    originals = synthetic.images.view(1623, 2, 28, 28)[split.train_classes]
    rotated = split.train.images.view(4, 1100, 2, 28, 28)  # (rotation, class, drawing, S, S)
    for turns in range(4):
        assert torch.equal(rotated[turns], torch.rot90(originals, turns, dims=(2, 3)))
    plain = omniglot.split_omniglot(synthetic, rotate_train=False)
    assert torch.equal(plain.train.images.view(1100, 2, 28, 28), originals)
    assert plain.train.labels.unique().numel() == 1100


def test_split_is_deterministic_for_a_seed(synthetic):
    first, again = omniglot.split_omniglot(synthetic), omniglot.split_omniglot(synthetic, seed=1)
    other = omniglot.split_omniglot(synthetic, seed=2)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test_classes, again.test_classes)
    assert not torch.equal(first.test_classes, other.test_classes)


def test_split_sizes_are_arguments(synthetic):
    split = omniglot.split_omniglot(synthetic, num_train=1200, num_val=0, rotate_train=False)
    assert [len(classes) for classes in split[3:]] == [1200, 0, 423]
    assert split.val.images.shape == (0, 28, 28)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_train": 1600, "num_val": 100}, ValueError, "at most the 1623 classes"),
        ({"num_train": -1}, ValueError, "num_train must be >= 0"),
        ({"num_val": -5}, ValueError, "num_val must be >= 0"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"rotate_train": 1}, TypeError, "rotate_train must be a bool"),
    ],
)
def test_split_errors_name_the_argument(synthetic, kwargs, error, message):
    with pytest.raises(error, match=message):
        omniglot.split_omniglot(synthetic, **kwargs)


def test_split_needs_omniglot_data(synthetic):
    with pytest.raises(TypeError, match="data must be the Omniglot returned by load_omniglot"):
        omniglot.split_omniglot((synthetic.images, synthetic.labels))


def test_a_decompression_bomb_names_the_image_and_its_zip(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 105 * 105 // 3)  # Omniglot's 105x105 count as bombs
    with pytest.raises(ValueError, match=r"cannot read the image \w+/character\d+/\d+_\d+\.png of .*\.zip"):
        omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")


def test_a_zip_replaced_by_another_of_the_same_size_and_time_is_read_again(tmp_path):
    root = fake_root(tmp_path / "data")
    files = fake_files()["images_evaluation"]
    original = write_zip(tmp_path / "original", "images_evaluation", files).read_bytes()
    files["Gamma/character01/0008_01.png"] = drawing(20)
    replacement = write_zip(tmp_path / "replacement", "images_evaluation", files).read_bytes()
    size = max(len(original), len(replacement))  # zero bytes after a zip's end are ignored by readers
    archive, mtime = root / "images_evaluation.zip", 1_700_000_000 * 10**9
    archive.write_bytes(original.ljust(size, b"\0"))
    os.utime(archive, ns=(mtime, mtime))
    before = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    archive.write_bytes(replacement.ljust(size, b"\0"))
    os.utime(archive, ns=(mtime, mtime))
    after = omniglot.load_omniglot(root, cache_dir=tmp_path / "cache")
    assert not torch.equal(after.images[7], before.images[7])
    assert np.array_equal(
        after.images[7].numpy(),
        expected_images({"images_background": {}, "images_evaluation": {"x/y/z.png": drawing(20)}})[0],
    )


def test_data_with_missing_alphabets_is_reported(tmp_path):
    with pytest.warns(UserWarning, match=r"holds 2 \+ 1 alphabets .* not the full 30 \+ 20"):
        omniglot.load_omniglot(fake_root(tmp_path / "data"), cache_dir=tmp_path / "cache")
