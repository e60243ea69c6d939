"""Saving and loading torch files (checkpoints, the Fisher estimate) safely.

Writes go through :func:`mltfrkit.paths.atomic_write_with`: a unique temporary name per writer,
fsync, rename. Loads use ``torch.load(weights_only=True)``, which builds tensors and plain
containers only, so a file written by someone else (a store on a shared filesystem) cannot run
code when it is loaded. Checkpoints store every RNG state as ints, lists and tensors for that
reason. Checkpoints written before that change hold numpy's RNG state as an ``ndarray``: they
load through an allow-list of exactly numpy's array reconstruction (array, dtype), nothing else;
any other object in a file is refused with a message naming the file.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mltfrkit.paths import atomic_write_with

CHECKPOINT_KEYS = ("config", "model", "optimizer", "state", "rng")


class CheckpointError(ValueError):
    """A checkpoint (or Fisher file) that cannot be read safely; the message names it and what to do."""


def _numpy_allow_list() -> list:
    """What numpy's legacy RNG state (an uint32 array) needs to be rebuilt: arrays and dtypes only."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed = [_reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.UInt32DType, dtypes.Int64DType, dtypes.Float64DType]
    return allowed


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically (unique temporary name, fsync, rename) ``torch.save`` ``obj`` to ``path``."""
    return atomic_write_with(path, lambda handle: torch.save(obj, handle))


def load_torch(path: str | os.PathLike, map_location=None, what: str = "checkpoint",
               remedy: str = "delete it to train the run again from the start", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``; an unreadable or unsafe file raises :class:`CheckpointError`.
    ``mmap``: tensors stay on disk until touched (reading a checkpoint's small training state only)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "not an allowed global" in str(error):
            raise CheckpointError(
                f"{path}: this {what} holds objects other than tensors and plain values, which could run code "
                f"when loaded; refused: {remedy}") from None
        found = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), "")
        raise CheckpointError(f"{path}: unreadable {what}, not a torch file{f' ({found})' if found else ''}; "
                              f"{remedy}") from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        detail = str(error).strip().splitlines()[0].split(". ")[0][:160] if str(error).strip() else "no detail"
        kind = "empty" if path.stat().st_size == 0 else "truncated or corrupt"
        raise CheckpointError(f"{path}: unreadable {what}, {kind} ({type(error).__name__}: {detail}); "
                              f"{remedy}") from None


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A training checkpoint: loaded safely and checked to have every part a resume needs."""
    saved = load_torch(path, map_location)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise CheckpointError(f"{path}: not an mltfrkit checkpoint (lacks {', '.join(missing)}); delete it to "
                              f"train the run again from the start")
    return saved


def trained_seconds(path: str | os.PathLike) -> float:
    """The training seconds a checkpoint's state records (every epoch it holds, over all its resumes), read
    without loading its tensors (mmap); 0 for a file without a readable state: the number is advice (what is
    left of an interrupted run, :func:`mltfrkit.plan.time_left`), never a reason to fail."""
    try:
        saved = load_torch(path, map_location="cpu", mmap=True)
    except (CheckpointError, OSError, RuntimeError):
        return 0.0
    state = saved.get("state") if isinstance(saved, dict) else None
    seconds = state.get("seconds") if isinstance(state, dict) else None
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


# -- RNG states as plain values (weights_only=True loads them) -----------------------------
def python_rng_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), torch.tensor(internal, dtype=torch.int64), gauss]


def python_rng_from_plain(state) -> tuple:
    if isinstance(state, tuple):  # an old checkpoint: random.getstate() as it was
        return state
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal.tolist()), gauss


def numpy_rng_to_plain(state: tuple) -> dict:
    name, key, pos, has_gauss, gauss = state
    return {"name": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def numpy_rng_from_plain(state) -> tuple:
    if isinstance(state, tuple):  # an old checkpoint: np.random.get_state() as it was
        return state
    return (state["name"], state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])
