"""Frozen token tables for experts, loaded once per process and shared by every expert and run
that uses the same source (the float32 copy is made once; the float16 .npy stays memory-mapped)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

_SHARED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def expert_sources(llms: str | list[str], n_experts: int) -> list[str]:
    from mltfrkit.vocab import resolve_preset

    names = resolve_preset(llms)
    if n_experts > len(names):
        raise ValueError(f"{n_experts} experts requested but {llms!r} has only {len(names)} sources: {names}")
    return names[:n_experts]


def load_expert_table(name: str, exclude_classes: tuple[str, ...] = ("special", "byte"),
                      max_vocab: int | None = None, precision: str = "float32"):
    """(frozen (len(keep), d) tensor of the kept rows only, kept row ids of the full vocabulary)
    for a token source; shared across callers, so experts and runs of one process hold one copy.

    Only kept rows are read from the float16 memory map and widened, never the whole table
    (with all six offline sources uncapped, peak memory 4.23 -> 3.02 GB against widening every table and
    then selecting rows). ``max_vocab`` keeps the first N tokens that pass the class filter, in id
    order (BPE merge order / SentencePiece score order, i.e. roughly by frequency): a speed knob,
    since every training step projects and scores every kept token."""
    from mltfrkit.vocab import load_table

    table = load_table(name)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]
    key = (table.name, table.meta.get("sha256"), tuple(sorted(exclude_classes)), precision, max_vocab)
    if key not in _SHARED:
        keep = np.flatnonzero(table.keep_mask(exclude=tuple(exclude_classes)))[:max_vocab]
        rows = torch.from_numpy(np.asarray(table.matrix[keep], dtype=np.float32)).to(dtype)
        _SHARED[key] = (rows, torch.from_numpy(keep))
    return _SHARED[key]


def kept_rows(vocab: torch.Tensor, keep_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the kept rows, their full-vocabulary ids) from either the full table or the kept rows
    alone (what :func:`load_expert_table` returns); kept ids are sorted and unique, so a table
    with exactly ``len(keep_ids)`` rows is already restricted."""
    if keep_ids is None:
        return vocab, torch.arange(vocab.shape[0])
    if vocab.shape[0] == len(keep_ids):
        return vocab, keep_ids
    return vocab.index_select(0, keep_ids), keep_ids


def table_reference(name: str) -> dict:
    """What a checkpoint stores instead of the table itself: the source and its sha256. Every run key
    contains it, so it reads the cached table's ``meta.json`` alone (not its token strings: Gemma's
    262k-token list took a second per key) and remembers it until that file changes."""
    from mltfrkit.vocab.sources import ensure_table

    directory, _ = ensure_table(name)
    meta = directory / "meta.json"
    return dict(_table_reference(str(meta), meta.stat().st_mtime_ns))


@lru_cache(maxsize=512)
def _table_reference(meta_path: str, _stamp: int) -> dict:
    meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    return {"name": meta["name"], "sha256": meta.get("sha256"), "V": int(meta["V"]), "d": int(meta["d"])}


def random_rows_like(rows: torch.Tensor, seed: int) -> torch.Tensor:
    """MLTFR-RE's table: Gaussian rows of the same shape whose norms equal the real rows' norms, from a
    seeded generator. Everything the LLM's geometry says about which tokens are near which is gone;
    what the filter and the cross-attention can still use (width, vocabulary size, row scale) stays."""
    generator = torch.Generator().manual_seed(seed)
    real = rows.float()
    random = torch.randn(real.shape, generator=generator)
    random = random / random.norm(dim=1, keepdim=True).clamp_min(1e-12) * real.norm(dim=1, keepdim=True)
    return random.to(rows.dtype)
