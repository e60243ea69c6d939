"""Where data and caches live, and how files are written without ever leaving half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import platformdirs


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: argument, else ``MLTFR_DATA_DIR``, else ``./data``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(os.environ.get("MLTFR_DATA_DIR", "data")).expanduser()


class UnusableDirectoryError(ValueError):
    """A directory the toolkit must write to is a file, lies under one, or is not writable."""


def ensure_directory(path: str | os.PathLike, what: str) -> Path:
    """Create ``path`` (and its parents) or say clearly why it cannot be a directory we write to;
    ``what`` names the setting it came from (``--runs-dir``, ``MLTFR_CACHE_DIR``, ...)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise UnusableDirectoryError(f"{what} {path} cannot be a directory: {blocker} is a file; point {what} at a "
                                     f"folder (or move the file away)") from None
    except PermissionError as error:
        raise UnusableDirectoryError(f"{what} {path}: cannot create it ({error.strerror}); point {what} at a "
                                     f"folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnusableDirectoryError(f"{what} {path} is not writable; point {what} at a folder you can write to")
    try:  # access() says yes to root everywhere, and to read-only or pseudo filesystems such as /proc
        with tempfile.NamedTemporaryFile(dir=path, prefix=".mltfrkit-write-test-"):
            pass
    except OSError as error:
        raise UnusableDirectoryError(f"{what} {path}: cannot write a file there ({error.strerror or error}); point "
                                     f"{what} at a folder you can write to") from None
    return path


def cache_dir(sub: str | None = None) -> Path:
    """The cache directory: ``MLTFR_CACHE_DIR``, else the platform cache dir."""
    explicit = os.environ.get("MLTFR_CACHE_DIR")
    root = Path(explicit or platformdirs.user_cache_dir("mltfrkit")).expanduser()
    path = root / sub if sub else root
    return ensure_directory(path, "MLTFR_CACHE_DIR" if explicit else "the cache directory")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (else set and restored at once)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(handle)`` into a uniquely named temporary sibling, fsync, then rename over ``path``:
    readers see the old file or the new one, and concurrent writers of one path never share a
    temporary file (the last rename wins). The file gets the umask's normal mode (``mkstemp`` alone
    would leave it 0600, unreadable by a group sharing a store)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself durable too (best effort: not every filesystem allows it)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass
    return path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write to a temporary sibling, fsync, then rename: readers see the old file or the new one."""
    return atomic_write_with(path, lambda handle: handle.write(payload))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
