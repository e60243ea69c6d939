"""Frozen token tables for experts, loaded once per process and shared by every expert and run
that uses the same source (the float32 copy is made once; the float16 .npy stays memory-mapped)."""

from __future__ import annotations

import numpy as np
import torch

_SHARED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def expert_sources(llms: str | list[str], n_experts: int) -> list[str]:
    from mltfrkit.vocab import resolve_preset

    names = resolve_preset(llms)
    if n_experts > len(names):
        raise ValueError(f"{n_experts} experts requested but {llms!r} has only {len(names)} sources: {names}")
    return names[:n_experts]


def load_expert_table(name: str, exclude_classes: tuple[str, ...] = ("special", "byte")):
    """(frozen float32 (V, d) tensor, kept row ids) for a token source; shared across callers."""
    from mltfrkit.vocab import load_table

    table = load_table(name)
    key = (table.name, table.meta.get("sha256"), tuple(sorted(exclude_classes)))
    if key not in _SHARED:
        matrix = torch.from_numpy(np.asarray(table.matrix, dtype=np.float32))
        keep = torch.from_numpy(np.flatnonzero(table.keep_mask(exclude=tuple(exclude_classes))))
        _SHARED[key] = (matrix, keep)
    return _SHARED[key]


def table_reference(name: str) -> dict:
    """What a checkpoint stores instead of the table itself: the source and its sha256."""
    from mltfrkit.vocab import load_table

    table = load_table(name)
    return {"name": table.name, "sha256": table.meta.get("sha256"), "V": table.V, "d": table.d}
