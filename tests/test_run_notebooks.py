"""scripts/run_notebooks.py: with a parallel executor the batch trains the union of its notebooks' grids
first, in one pool, so that each notebook then reads its runs from the store. The union must be exactly
the runs the notebooks would ask for (no run missing, none extra, none twice)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_store import link_cached_inputs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import run_notebooks  # noqa: E402

QUICK_SOURCES = ["SmolLM2-135M", "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]
SMALL = {"max_vocab": 2000, "fisher_samples": 16}


@pytest.fixture(scope="module")
def linked():
    link_cached_inputs(QUICK_SOURCES, ["ml-100k"])


def parameters(tmp_path, **extra) -> dict:
    return {"profile": "quick", "epochs": 1, "seeds": [0], "backbones": ["sasrec"], "mltfr_options": SMALL,
            "runs_dir": str(tmp_path / "runs"), "executor": "processes", "workers": 2, **extra}


def test_the_batch_grid_is_the_union_of_the_notebooks_grids(linked, tmp_path):
    names = run_notebooks.DEFAULT_ORDER
    experiment, specs = run_notebooks.batch_grid("ml-100k", names, parameters(tmp_path))
    keys = [experiment.store.run_dir(s) for s in specs]
    assert len(keys) == len(set(keys)), "a run appears twice in the batch's grid"
    wanted = {experiment.store.run_dir(s) for grid in ("table2", "ablation", "expert_sweep", "te_vs_re")
              for s in experiment.grid(grid)}
    assert set(keys) == wanted
    # Table 2's MLTFR run is the ablation's "Full" and the sweep's m = 3: shared, not repeated
    assert len(keys) < sum(len(experiment.grid(g)) for g in ("table2", "ablation", "expert_sweep", "te_vs_re"))
    # notebook parameters reach only the grid they shape
    _, narrower = run_notebooks.batch_grid("ml-100k", ["expert_sweep"], parameters(tmp_path, experts=[1]))
    assert {experiment.store.run_dir(s) for s in narrower} == {experiment.store.run_dir(s)
                                                               for s in experiment.grid("expert_sweep", experts=[1])}
    _, none = run_notebooks.batch_grid("ml-100k", ["token_inspector"], parameters(tmp_path))
    assert none == []


def test_training_the_batch_grid_leaves_nothing_for_the_notebook_to_train(linked, tmp_path):
    run_notebooks.train_batch_grid("ml-100k", ["table2"], parameters(tmp_path))
    experiment, specs = run_notebooks.batch_grid("ml-100k", ["table2"], parameters(tmp_path))
    assert len(specs) == 3  # W/O, MLTFR, W/O 2-round (the quick profile's control)
    assert all(experiment.store.get(s) is not None for s in experiment.grid("table2"))
