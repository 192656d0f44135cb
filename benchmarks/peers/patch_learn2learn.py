"""Let learn2learn 0.2.0 import without torchvision: run by ``setup_peers.sh`` on the unpacked sdist.

``learn2learn/__init__.py`` imports every subpackage, and ``learn2learn.vision`` (its
image datasets, models and benchmarks) imports torchvision, which has no build here that
imports beside the CPU-only torch. This replaces that one line by an import that leaves
``learn2learn.vision`` out when torchvision is missing, and nothing else: the algorithms
(``learn2learn.algorithms.MAML``) do not use torchvision.

Usage: ``python patch_learn2learn.py SOURCE_DIR`` (the folder holding ``setup.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ORIGINAL = "from . import vision\n"
PATCHED = """\
# Patched by mamlbook's benchmarks/setup_peers.sh: learn2learn.vision needs torchvision,
# which is not installed; without it, learn2learn.vision is left out.
try:
    from . import vision
except ModuleNotFoundError as error:
    if error.name != "torchvision":
        raise
"""


def patch(source_dir: Path) -> None:
    """Rewrite ``learn2learn/__init__.py`` under ``source_dir``; fail unless the line occurs once."""
    init = source_dir / "learn2learn" / "__init__.py"
    text = init.read_text(encoding="utf-8")
    if text.count(ORIGINAL) != 1:
        raise SystemExit(f"{init}: expected the line {ORIGINAL.strip()!r} once; is this learn2learn 0.2.0?")
    init.write_text(text.replace(ORIGINAL, PATCHED), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    patch(Path(sys.argv[1]))
