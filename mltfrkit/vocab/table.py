"""The token table: a V x d float16 matrix on disk, the token strings, and what they are.

A table lives in ``<cache>/vocab/<name>/``::

    matrix.npy        float16, V x d, memory-mapped when loaded
    tokens.json       {"tokens": [...], "display": [...]}
    token_class.npy   int8, V (see ``TokenClass``)
    meta.json         source, family, tokenizer, V, d, sha256, ... (written last)

A table is built in a hidden sibling directory and renamed into place in one step, so a
reader sees a complete table or none; an interrupted build leaves only a ``.partial``
directory that is never read and is swept on the next build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .formats import BLOCK_BYTES, MatrixSource
from .tokens import TokenClass, Vocabulary, describe_vocabulary

FORMAT_VERSION = 1
_FILES = ("matrix.npy", "tokens.json", "token_class.npy", "meta.json")
_STALE_PARTIAL_SECONDS = 6 * 3600


def cache_root() -> Path:
    """``MLTFR_CACHE_DIR`` if set, else the platform cache directory for mltfrkit."""
    configured = os.environ.get("MLTFR_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mltfrkit"))


def tables_dir() -> Path:
    return cache_root() / "vocab"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def safe_name(text: str) -> str:
    """A directory-safe version of a source name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "table"


def sha256_file(path: str | Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class TokenTable:
    """One cached token table, opened read-only with the matrix memory-mapped.

    Attributes: ``name``, ``matrix`` (``np.memmap`` float16, V x d), ``tokens`` (raw token
    strings), ``display`` (markers removed), ``token_class`` (int8 codes of
    :class:`TokenClass`), ``meta`` (dict), ``V``, ``d``, ``path``.
    """

    def __init__(self, directory: str | Path):
        self.path = Path(directory)
        if not is_complete(self.path):
            raise FileNotFoundError(f"{self.path} is not a complete token table")
        self.meta: dict = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        self.name: str = self.meta["name"]
        self.matrix: np.memmap = np.load(self.path / "matrix.npy", mmap_mode="r")
        doc = json.loads((self.path / "tokens.json").read_text(encoding="utf-8"))
        self.tokens: list[str] = doc["tokens"]
        self.display: list[str] = doc["display"]
        self.token_class: np.ndarray = np.load(self.path / "token_class.npy")
        expected = (self.meta["V"], self.meta["d"])
        if self.matrix.shape != expected or len(self.tokens) != expected[0] or len(self.token_class) != expected[0]:
            raise ValueError(f"{self.path}: parts disagree on the table size {expected}")

    @property
    def V(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def d(self) -> int:
        return int(self.matrix.shape[1])

    def keep_mask(self, exclude: Iterable["str | int | TokenClass"] = ("special", "byte")) -> np.ndarray:
        """Boolean mask over the vocabulary: True for tokens whose class is not excluded."""
        excluded = [int(TokenClass.parse(c)) for c in exclude]
        return ~np.isin(self.token_class, excluded)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.token_class.astype(np.int64), minlength=len(TokenClass))
        return {c.name.lower(): int(counts[c]) for c in TokenClass}

    def __len__(self) -> int:
        return self.V

    def __repr__(self) -> str:
        return f"TokenTable({self.name!r}, V={self.V}, d={self.d}, tokenizer={self.meta.get('tokenizer')!r})"


def is_complete(directory: Path) -> bool:
    """A table directory counts only if every part is there and the format is current."""
    if not all((directory / name).is_file() for name in _FILES):
        return False
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == FORMAT_VERSION


def _write_npy_float16(path: Path, source: MatrixSource, block_bytes: int) -> dict:
    """Stream ``source`` into a float16 ``.npy`` with plain writes (no whole-matrix buffer)."""
    n_rows, dim = source.shape
    written, largest = 0, 0.0
    with open(path, "wb") as handle:
        header = {"descr": "<f2", "fortran_order": False, "shape": (n_rows, dim)}
        np.lib.format.write_array_header_1_0(handle, header)
        for block in source.blocks(block_bytes):
            if block.shape[1] != dim:
                raise ValueError(f"{source.origin}: block has width {block.shape[1]}, expected {dim}")
            if not np.isfinite(block).all():
                raise ValueError(f"{source.origin}: non-finite values near row {written}")
            largest = max(largest, float(np.abs(block).max(initial=0.0)))
            if largest > np.finfo(np.float16).max:
                raise ValueError(f"{source.origin}: value {largest:g} does not fit float16")
            handle.write(block.astype("<f2").tobytes())
            written += block.shape[0]
        handle.flush()
        os.fsync(handle.fileno())
    if written != n_rows:
        raise ValueError(f"{source.origin}: wrote {written} rows, expected {n_rows}")
    return {"max_abs": largest}


def _sweep_partials(parent: Path) -> None:
    """Remove build directories abandoned by crashed runs (old enough not to be live)."""
    now = time.time()
    for entry in parent.glob(".*.partial"):
        try:
            if now - entry.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            pass


def write_table(
    name: str,
    source: MatrixSource,
    vocab: Vocabulary,
    meta: dict,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> Path:
    """Convert ``source`` + ``vocab`` into a cached table named ``name``; return its path.

    Built under a temporary name and renamed into place: a crash never leaves a table
    that looks complete.
    """
    final = tables_dir() / safe_name(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_partials(final.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        vocab = vocab.fitted_to(source.shape[0])
        stats = _write_npy_float16(work / "matrix.npy", source, block_bytes)
        display, classes = describe_vocabulary(vocab)
        tokens_doc = {"tokens": vocab.tokens, "display": display}
        (work / "tokens.json").write_text(json.dumps(tokens_doc, ensure_ascii=False), encoding="utf-8")
        np.save(work / "token_class.npy", np.asarray(classes, dtype=np.int8))
        counts = np.bincount(np.asarray(classes), minlength=len(TokenClass))
        full_meta = {
            **meta,
            "name": name,
            "V": int(source.shape[0]),
            "d": int(source.shape[1]),
            "tokenizer": vocab.family,
            "tokenizer_origin": vocab.origin,
            "matrix_origin": source.origin,
            "class_counts": {c.name.lower(): int(counts[c]) for c in TokenClass},
            "max_abs": stats["max_abs"],
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # meta.json last: its presence marks the directory complete.
        (work / "meta.json").write_text(json.dumps(full_meta, indent=2, ensure_ascii=False), encoding="utf-8")
        _move_into_place(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def _move_into_place(work: Path, final: Path) -> None:
    """Rename the finished build to its final name, replacing an incomplete leftover."""
    if final.exists():
        if is_complete(final):  # another process finished the same table first
            shutil.rmtree(work, ignore_errors=True)
            return
        stale = final.with_name(f".{final.name}.stale-{os.getpid()}.partial")
        os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.rename(work, final)


def open_cached(name: str) -> TokenTable | None:
    """The cached table called ``name``, or None if it is absent or incomplete."""
    directory = tables_dir() / safe_name(name)
    return TokenTable(directory) if is_complete(directory) else None


def cached_names() -> list[str]:
    root = tables_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and is_complete(p))


def table_size_bytes(name: str) -> int:
    directory = tables_dir() / safe_name(name)
    return sum(p.stat().st_size for p in directory.glob("*") if p.is_file())
