"""File helpers shared by the package: atomic writes, checked downloads and atomic extraction.

The module is private (its name starts with an underscore), so its functions are not.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import tempfile
import urllib.request
import uuid
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TIMEOUT_S = 60
"""Seconds a download waits for the server before it fails."""

open_url = urllib.request.urlopen
"""Opens a URL; the seam that tests replace to download without a network."""


def write_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file beside it, moved into place once ``fill`` returns.

    ``fill(file)`` writes the content to a file open in binary mode. A reader sees the
    old file or the complete new one, never a partial one, and an interrupted write
    leaves no temporary file. The folder must exist. A file that is replaced keeps its
    permissions; a new one gets those the umask gives.

    Raises:
        the errors of ``check_replaceable``.
    """
    check_replaceable(path)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("xb") as file:
            fill(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_replaceable(path: Path) -> None:
    """``path`` must be a new file or a writable one, which ``write_atomically`` may replace.

    Raises:
        PermissionError: ``path`` is a read-only file (its owner may not write it).
        IsADirectoryError: ``path`` is a folder.
        ValueError: ``path`` is a symbolic link, which the rename would replace by a file.
    """
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link; write to the file it points to, {path.resolve()}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of a file")
    if path.exists() and not path.stat().st_mode & stat.S_IWUSR:
        raise PermissionError(f"{path} exists and is read-only; make it writable (chmod u+w) to replace it")


def download(url: str, target: Path, *, md5: str, error: type[Exception]) -> None:
    """Download ``url`` to ``target`` atomically, keeping it only if its MD5 is ``md5``.

    Raises:
        error: the download failed, or its MD5 is not ``md5``; ``target`` is unchanged.
    """

    def fill(file: BinaryIO) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with open_url(url, timeout=TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    file.write(chunk)
        except (OSError, http.client.HTTPException) as err:
            raise error(
                f"could not download {url} ({err}); check the connection, or save that file as {target} "
                "yourself"
            ) from err
        if digest.hexdigest() != md5:
            raise error(
                f"the file downloaded from {url} has MD5 {digest.hexdigest()} instead of {md5}, so it was "
                f"not kept: try again, or save a good copy as {target} yourself"
            )

    write_atomically(target, fill)


def extract_atomically(archive: Path, folder: Path) -> None:
    """Extract the zip ``archive`` beside ``folder``, then rename its top folder to ``folder``.

    The archive must hold a top folder named ``folder.name``. An interrupted run leaves
    at most a hidden ``.<folder name>.*.extracting`` folder beside ``folder``.

    Raises:
        ValueError: ``archive`` is not a valid zip, or holds no folder ``folder.name``.
    """
    with tempfile.TemporaryDirectory(
        dir=folder.parent, prefix=f".{folder.name}.", suffix=".extracting", ignore_cleanup_errors=True
    ) as temp:
        try:
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(temp)  # drops ".." and absolute paths from member names
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ValueError(
                f"{archive} is not a valid zip file ({err}); delete it and download it again"
            ) from err
        extracted = Path(temp, folder.name)
        if not extracted.is_dir():
            raise ValueError(f"{archive} holds no folder {folder.name}/; delete it and download it again")
        os.replace(extracted, folder)
