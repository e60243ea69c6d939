"""Issue 18, item 12: a setting whose largest tensor cannot fit is refused before training, with the
figure and a setting that fits (the budget is set by MLTFR_MEMORY_LIMIT here, not the machine's)."""

from __future__ import annotations

import re

import pytest
import torch

from mltfrkit.models import build_backbone
from mltfrkit.train import TrainConfig, fit
from mltfrkit.train.memory import MemoryBudgetError, check_memory


def test_huge_batch_with_softmax_is_refused_with_a_batch_that_fits(tiny_split, monkeypatch):
    monkeypatch.setenv("MLTFR_MEMORY_LIMIT", "80K")
    model = build_backbone("sasrec", tiny_split.n_items, max_len=12, loss="ce")
    config = TrainConfig(batch_size=1_000_000, epochs=1, device="cpu")
    with pytest.raises(MemoryBudgetError, match=r"about .* KB \(the full-softmax logits.*use --batch-size (\d+) or less"
                       r" \(or --loss bce") as error:
        fit(model, tiny_split, config, progress=False, log=None)
    fitting = int(re.search(r"--batch-size (\d+)", str(error.value)).group(1))
    check_memory(model, tiny_split, TrainConfig(batch_size=fitting))  # the suggestion fits
    with pytest.raises(MemoryBudgetError):
        check_memory(model, tiny_split, TrainConfig(batch_size=fitting + 1))


def test_huge_max_len_is_refused_with_a_length_that_fits(tiny_split, monkeypatch):
    monkeypatch.setenv("MLTFR_MEMORY_LIMIT", "1G")
    model = build_backbone("sasrec", tiny_split.n_items, max_len=100_000)
    with pytest.raises(MemoryBudgetError, match=r"GB \(.*100,000 x 100,000.*use --set max_len=(\d+) or less"):
        check_memory(model, tiny_split, TrainConfig())


def test_ordinary_runs_pass(tiny_split, monkeypatch):
    monkeypatch.delenv("MLTFR_MEMORY_LIMIT", raising=False)
    for name in ("sasrec", "bert4rec", "fmlprec", "bsarec"):
        check_memory(build_backbone(name, tiny_split.n_items, max_len=12), tiny_split, TrainConfig())
    monkeypatch.setenv("MLTFR_MEMORY_LIMIT", "lots")
    with pytest.raises(MemoryBudgetError, match="MLTFR_MEMORY_LIMIT='lots' is not a size"):
        check_memory(build_backbone("sasrec", tiny_split.n_items), tiny_split, TrainConfig())
