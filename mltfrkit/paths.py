"""Where data and caches live, and how files are written without ever leaving half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: argument, else ``MLTFR_DATA_DIR``, else ``./data``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(os.environ.get("MLTFR_DATA_DIR", "data")).expanduser()


def cache_dir(sub: str | None = None) -> Path:
    """The cache directory: ``MLTFR_CACHE_DIR``, else the platform cache dir."""
    root = Path(os.environ.get("MLTFR_CACHE_DIR") or platformdirs.user_cache_dir("mltfrkit")).expanduser()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write to a temporary sibling, fsync, then rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
