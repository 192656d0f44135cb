"""Data sets of the book: Omniglot, the few-shot benchmark of the MAML paper (``omniglot``)."""

from .omniglot import (
    PARTS,
    ClassificationData,
    Omniglot,
    OmniglotDownloadError,
    OmniglotSplit,
    default_cache_dir,
    default_data_dir,
    load_omniglot,
    split_omniglot,
)

__all__ = [
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
