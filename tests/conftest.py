"""Shared fixtures: an isolated cache per session, the shared data directory, tiny datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLTFR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache, unless MLTFR_TEST_CACHE_DIR names one to reuse."""
    previous = os.environ.get("MLTFR_CACHE_DIR")
    os.environ["MLTFR_CACHE_DIR"] = os.environ.get("MLTFR_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    if previous is None:
        os.environ.pop("MLTFR_CACHE_DIR", None)
    else:
        os.environ["MLTFR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Pantry.txt").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}; set MLTFR_SHARED_DATA")
    return SHARED_DATA


def make_tiny_split(n_users: int = 60, n_items: int = 30, seed: int = 0, min_len: int = 4, max_len: int = 12):
    """Users walk a noisy cycle over the items, so there is a sequential pattern to learn."""
    from mltfrkit.data import SplitData

    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_users):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(1, n_items + 1))
        seq = [(start - 1 + step) % n_items + 1 for step in range(length)]
        sequences.append(np.array(seq, dtype=np.int64))
    item_ids = np.array(["<pad>"] + [f"i{i}" for i in range(1, n_items + 1)])
    return SplitData(name="tiny", sequences=sequences, item_ids=item_ids,
                     user_ids=np.array([f"u{u}" for u in range(n_users)]), source_sha256="tiny")


@pytest.fixture
def tiny_split():
    return make_tiny_split()


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test (the session uses two): tiny ops, such as a 2-layer test LLM or a GP
    fit, lose more to thread hand-offs on a busy machine than a second thread gains (MixRec's tests ran
    4x slower with two). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
