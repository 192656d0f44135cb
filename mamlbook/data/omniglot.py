"""Omniglot, the few-shot classification benchmark of the MAML paper (section 5.2).

``load_omniglot`` reads the 1,623 handwritten characters (20 drawings each) from the
two zips of the dataset, or from their extracted folders, shrinks them to 28x28 and
caches the result; ``split_omniglot`` divides the characters into meta-training,
validation and test classes as the paper does.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image

from .. import _files
from .._checks import check_bool, check_int, check_seed

PARTS = ("images_background", "images_evaluation")
"""The two halves of Omniglot, with 964 background and 659 evaluation characters."""

_URLS = {
    part: f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{part}.zip" for part in PARTS
}
_MD5S = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
_CACHE_FORMAT = 1


class OmniglotDownloadError(RuntimeError):
    """Omniglot could not be downloaded, or the download failed its MD5 check."""


class Omniglot(NamedTuple):
    """All of Omniglot: N = 32,460 images of C = 1,623 classes (characters).

    Images are in a fixed order: background classes, then evaluation classes, each
    sorted by alphabet, character and file name.

    Attributes:
        images: ``(N, S, S)`` uint8, ink bright (255) on a black (0) background.
        labels: ``(N,)`` int64 class index in ``0..C-1``.
        class_names: the C names ``"Alphabet/characterNN"``.
        alphabets: the alphabet of each of the C classes.
        background: ``(C,)`` bool, True for the classes of ``images_background``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    alphabets: list[str]
    background: torch.Tensor

    def __repr__(self) -> str:
        return (
            f"Omniglot(images={self.images.dtype} {tuple(self.images.shape)}, "
            f"{len(self.class_names)} classes ({int(self.background.sum())} background), "
            f"{len(set(self.alphabets))} alphabets)"
        )


class ClassificationData(NamedTuple):
    """Labelled images of one split: ``images`` ``(N, S, S)`` uint8, ``labels`` ``(N,)`` int64 in 0..C-1."""

    images: torch.Tensor
    labels: torch.Tensor

    def __repr__(self) -> str:
        images = f"{self.images.dtype} {tuple(self.images.shape)}"
        return f"ClassificationData(images={images}, {self.labels.unique().numel()} classes)"


class OmniglotSplit(NamedTuple):
    """Meta-training, validation and test data, and which Omniglot classes each holds.

    ``train_classes``, ``val_classes`` and ``test_classes`` are the original class
    indices (into ``Omniglot.class_names``): label j of ``val`` and ``test`` is class
    ``val_classes[j]`` or ``test_classes[j]``; see ``split_omniglot`` for ``train``.
    """

    train: ClassificationData
    val: ClassificationData
    test: ClassificationData
    train_classes: torch.Tensor
    val_classes: torch.Tensor
    test_classes: torch.Tensor

    def __repr__(self) -> str:
        return f"OmniglotSplit(train={self.train!r}, val={self.val!r}, test={self.test!r})"


def default_data_dir() -> Path:
    """Where ``load_omniglot`` looks by default: ``$MAMLBOOK_DATA``, else ``~/.cache/mamlbook/omniglot``."""
    return Path(os.environ.get("MAMLBOOK_DATA") or "~/.cache/mamlbook/omniglot").expanduser()


def default_cache_dir() -> Path:
    """Where preprocessed images are cached by default: ``$MAMLBOOK_CACHE``, else ``~/.cache/mamlbook``."""
    return Path(os.environ.get("MAMLBOOK_CACHE") or "~/.cache/mamlbook").expanduser()


def load_omniglot(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    image_size: int = 28,
) -> Omniglot:
    """Load all 32,460 Omniglot images, shrunk to ``image_size`` pixels a side.

    For each part in ``PARTS``, ``root`` must hold the extracted folder
    ``root/<part>/<alphabet>/<character>/<file>.png`` (preferred) or the zip
    ``root/<part>.zip``. Each 105x105 one-bit PNG is converted to greyscale, resized
    with a Lanczos filter and inverted so the ink is bright. The result is cached in
    ``cache_dir`` under a name made from ``image_size`` and the size and modification
    time of every source file, so the next call loads it in a fraction of a second.

    Args:
        root: the data folder; ``default_data_dir()`` when None.
        download: fetch each part that ``root`` lacks from the Omniglot repository,
            check its MD5 and extract it into ``root``.
        cache_dir: where to cache the result; ``default_cache_dir()`` when None.
        image_size: S >= 1, the side of the returned images (28 in the paper).

    Returns:
        An ``Omniglot`` with ``images`` ``(32460, S, S)`` uint8 and ``labels``
        ``(32460,)`` int64 for the 1,623 classes.

    Raises:
        FileNotFoundError: a part is missing from ``root`` and ``download`` is False.
        OmniglotDownloadError: a download failed or did not match its MD5.
        ValueError: a zip is corrupt, or a part holds no images in the expected layout.
    """
    root = _check_dir("root", root, default_data_dir)
    cache_dir = _check_dir("cache_dir", cache_dir, default_cache_dir)
    image_size = check_int("image_size", image_size, minimum=1)
    check_bool("download", download)
    sources = _find_sources(root, download)
    identity = hashlib.sha256(b"".join(_source_identity(part, source) for part, source in sources.items()))
    cache_file = cache_dir / f"omniglot-{image_size}px-v{_CACHE_FORMAT}-{identity.hexdigest()[:16]}.pt"
    data = _read_cache(cache_file, image_size)
    if data is None:
        data = _preprocess(sources, image_size)
        _write_cache(cache_file, data)
    _warn_if_incomplete(data, root)
    return data


_FULL_COUNTS = (30, 964, 20, 659)
"""Omniglot's alphabets and characters: background, then evaluation."""


def _warn_if_incomplete(data: Omniglot, root: Path) -> None:
    """Warn when ``data`` lacks some of Omniglot's alphabets or characters: it would be
    another benchmark, whose results do not compare with the paper's."""
    counts = []
    for in_part in (True, False):
        names = [
            name
            for name, background in zip(data.class_names, data.background.tolist(), strict=True)
            if background == in_part
        ]
        counts += [len({name.split("/")[0] for name in names}), len(names)]
    if tuple(counts) != _FULL_COUNTS:
        warnings.warn(
            f"the Omniglot data in {root} holds {counts[0]} + {counts[2]} alphabets and {counts[1]} + "
            f"{counts[3]} characters (background + evaluation), not the full 30 + 20 and 964 + 659: it is "
            "not the benchmark of the paper, so results will not compare; extract or download the zips again",
            UserWarning,
            stacklevel=3,
        )


def split_omniglot(
    data: Omniglot, *, seed: int = 1, num_train: int = 1100, num_val: int = 100, rotate_train: bool = True
) -> OmniglotSplit:
    """Divide Omniglot's classes into meta-training, validation and test classes.

    The rule of Finn et al.'s code: shuffle all C classes of both parts together
    (here ``torch.randperm`` with a generator seeded by ``seed``, so the classes drawn
    are not those of Finn et al., who used Python's ``random``), then take the first
    ``num_train`` for meta-training, the next ``num_val`` for validation and the
    remaining ones (423 of 1,623 by default) for testing. With ``rotate_train``, each
    training character rotated by 0, 90, 180 and 270 degrees counts as a class of its
    own (Santoro et al., 2016), so 1,100 characters give 4,400 training classes:
    training label ``r * num_train + j`` is class ``train_classes[j]`` turned by
    ``torch.rot90(image, r)``. Validation and test classes are not rotated.

    Args:
        data: all of Omniglot, from ``load_omniglot``.
        seed: seed of the shuffle.
        num_train: number of meta-training characters, >= 0.
        num_val: number of validation characters, >= 0.
        rotate_train: add the rotated training characters as classes.

    Returns:
        An ``OmniglotSplit``; within each split, labels run over ``0..C_split-1`` and
        images ``(N_split, S, S)`` are grouped by label.
    """
    if not isinstance(data, Omniglot):
        raise TypeError(f"data must be the Omniglot returned by load_omniglot, got {type(data).__name__}")
    seed = check_seed("seed", seed)
    num_train = check_int("num_train", num_train, minimum=0)
    num_val = check_int("num_val", num_val, minimum=0)
    check_bool("rotate_train", rotate_train)
    num_classes = len(data.class_names)
    if num_train + num_val > num_classes:
        raise ValueError(
            f"num_train + num_val must be at most the {num_classes} classes of data, "
            f"got {num_train} + {num_val}"
        )
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    train_classes, val_classes, test_classes = order.tensor_split([num_train, num_train + num_val])
    train = _select_classes(data, train_classes)
    if rotate_train:
        train = ClassificationData(
            torch.cat([torch.rot90(train.images, r, dims=(1, 2)) for r in range(4)]),  # (4N, S, S)
            torch.cat([train.labels + r * num_train for r in range(4)]),
        )
    val, test = _select_classes(data, val_classes), _select_classes(data, test_classes)
    return OmniglotSplit(train, val, test, train_classes, val_classes, test_classes)


def _select_classes(data: Omniglot, classes: torch.Tensor) -> ClassificationData:
    """The images of ``classes``, grouped by class, with class ``classes[j]`` labelled j."""
    new_label = torch.full((len(data.class_names),), -1, dtype=torch.int64)
    new_label[classes] = torch.arange(len(classes))
    labels = new_label[data.labels]  # (N,), -1 for the other classes
    kept = (labels >= 0).nonzero().squeeze(1)
    kept = kept[torch.argsort(labels[kept], stable=True)]
    return ClassificationData(data.images[kept], labels[kept])


def _check_dir(name: str, value: object, default: Callable[[], Path]) -> Path:
    if value is None:
        return default()
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got {type(value).__name__}")
    return Path(value).expanduser()


def _find_sources(root: Path, download: bool) -> dict[str, Path]:
    """The folder or, failing that, the zip of each part in ``root``.

    With ``download``, a part that has neither is downloaded and extracted first. An
    interrupted run leaves at most a hidden ``.<part>.*.extracting`` folder, which
    ``load_omniglot`` never reads.
    """
    sources = {}
    for part in PARTS:
        folder, archive = root / part, root / f"{part}.zip"
        if download and not folder.is_dir() and not archive.is_file():
            root.mkdir(parents=True, exist_ok=True)
            _files.download(_URLS[part], archive, md5=_MD5S[part], error=OmniglotDownloadError)
            _files.extract_atomically(archive, folder)
        if folder.is_dir():
            sources[part] = folder
        elif archive.is_file():
            sources[part] = archive
    missing = [f"{part}.zip (or its extracted folder {part}/)" for part in PARTS if part not in sources]
    if missing:
        raise FileNotFoundError(
            f"Omniglot not found in {root}: it lacks {' and '.join(missing)}. Pass download=True to fetch "
            "the zips, or a root that holds them, such as ../shared/data/omniglot from the book's repository."
        )
    return sources


def _folder_files(folder: Path, prefix: str = "") -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime in ns)`` of every file under ``folder``, sorted."""
    files = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if entry.is_dir():
                files += _folder_files(Path(entry.path), f"{prefix}{entry.name}/")
            else:
                stat = entry.stat()
                files.append((f"{prefix}{entry.name}", stat.st_size, stat.st_mtime_ns))
    return files


def _source_identity(part: str, source: Path) -> bytes:
    """The names, sizes and modification times of ``source``'s files, which change when it does;
    for a zip also the MD5 of its content, so that a zip replaced by another of the same size
    and time is not taken for it."""
    if source.is_dir():
        files = _folder_files(source, f"{part}/")
    else:
        stat = source.stat()
        with source.open("rb") as file:
            digest = hashlib.file_digest(file, functools.partial(hashlib.md5, usedforsecurity=False))
        files = [(f"{source.name}\0{digest.hexdigest()}", stat.st_size, stat.st_mtime_ns)]
    return "".join(f"{name}\0{size}\0{mtime}\n" for name, size, mtime in files).encode()


def _png_paths(names: list[str], prefix: str = "") -> list[str]:
    """The names ``<prefix>alphabet/character/file.png``, less the prefix, sorted by their steps."""
    steps = [name.removeprefix(prefix).split("/") for name in names if name.startswith(prefix)]
    steps = [path for path in steps if len(path) == 3 and path[2].lower().endswith(".png")]
    return ["/".join(path) for path in sorted(steps) if not any(step.startswith(".") for step in path)]


def _decode(file: BinaryIO, image_size: int) -> np.ndarray:
    """One PNG as an ``(image_size, image_size)`` uint8 array, ink bright."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # far beyond Omniglot's 105x105
        with Image.open(file) as image:
            grey = image.convert("L")  # before resizing: PIL resizes one-bit images by nearest neighbour
    return 255 - np.asarray(grey.resize((image_size, image_size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _decode_all(
    source: Path, paths: list[str], open_file: Callable[[str], BinaryIO], size: int
) -> np.ndarray:
    """The ``(n, size, size)`` images of the n ``paths`` of ``source``, each opened by ``open_file``."""
    images = np.empty((len(paths), size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with open_file(path) as file:
                images[i] = _decode(file, size)
        except (
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as err:
            raise ValueError(
                f"cannot read the image {path} of {source} ({err}); delete {source} and download it again"
            ) from err
    return images


def _read_part(source: Path, part: str, image_size: int) -> tuple[list[str], np.ndarray]:
    """The sorted ``alphabet/character/file.png`` paths of one part and their ``(n, S, S)`` images."""
    prefix = "" if source.is_dir() else f"{part}/"  # a zip holds the part's folder
    if source.is_dir():
        paths = _png_paths([name for name, _, _ in _folder_files(source)])
        images = _decode_all(source, paths, lambda path: (source / path).open("rb"), image_size)
    else:
        try:
            with zipfile.ZipFile(source) as archive:
                paths = _png_paths(archive.namelist(), prefix)
                images = _decode_all(source, paths, lambda path: archive.open(prefix + path), image_size)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ValueError(
                f"{source} is not a valid zip file ({err}); delete it and download it again (download=True)"
            ) from err
    if not paths:
        raise ValueError(
            f"{source} holds no images laid out as {prefix}<alphabet>/<character>/<file>.png; "
            "delete it and download it again (download=True)"
        )
    return paths, images


def _preprocess(sources: dict[str, Path], image_size: int) -> Omniglot:
    """Read every image of both parts; a class is one ``alphabet/character`` folder of one part."""
    arrays, labels, class_names, background = [], [], [], []
    for part, source in sources.items():
        paths, images = _read_part(source, part, image_size)
        arrays.append(images)
        for name, drawings in itertools.groupby(paths, key=lambda path: path.rsplit("/", 1)[0]):
            labels += [len(class_names)] * len(list(drawings))
            class_names.append(name)
            background.append(part == "images_background")
    return Omniglot(
        torch.from_numpy(np.concatenate(arrays)),
        torch.tensor(labels, dtype=torch.int64),
        class_names,
        [name.split("/")[0] for name in class_names],
        torch.tensor(background, dtype=torch.bool),
    )


def _read_cache(path: Path, image_size: int) -> Omniglot | None:
    """The cached ``Omniglot`` at ``path``; None, with a warning if it exists but is unreadable."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        data = Omniglot(*(blob[field] for field in Omniglot._fields))
        if (
            blob["format"] != _CACHE_FORMAT
            or data.images.dtype != torch.uint8
            or data.images.shape[1:] != (image_size, image_size)
            or data.labels.shape != data.images.shape[:1]
            or not len(data.class_names) == len(data.alphabets) == data.background.numel()
        ):
            raise ValueError("its contents do not match this version of mamlbook")
    except Exception as err:  # torch.load raises many kinds of errors on a damaged file
        warnings.warn(f"ignoring the unreadable Omniglot cache {path} ({err}); rebuilding it", stacklevel=3)
        return None
    return data


def _write_cache(path: Path, data: Omniglot) -> None:
    """Save ``data`` at ``path`` atomically; only warn if that fails, as the data is still good."""
    blob = {"format": _CACHE_FORMAT, **data._asdict()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _files.write_atomically(path, functools.partial(torch.save, blob))
    except OSError as err:
        warnings.warn(
            f"could not cache Omniglot in {path.parent} ({err}); it will be read again", stacklevel=3
        )
