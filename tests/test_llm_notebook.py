"""notebooks/llm_comparison.ipynb (Table 4) executed by papermill on tiny settings: a small sequence file
with a title CSV, SASRec W/O and with MLTFR for one epoch, the real SmolLM2 on a handful of users, and a
MixRec column (the tiny random Llama of tests/test_mixrec.py as a local folder, one epoch, in a MixRec store of
its own). Checks the table it writes (both LLM variants, CIs, invalid rate, users/s, MixRec's top-1 equal to its
stored run's pool ranks) and that a second execution, with no MixRec variant, trains nothing and reads the LLM's
answers from the store."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from test_llmrec import smollm2  # noqa: F401  (links the converted SmolLM2 folder into the session cache)
from test_notebooks import NOTEBOOKS, QUICK_SOURCES, REPO, SMALL
from test_store import link_cached_inputs, tiny_file  # noqa: F401  (the fixture: 40 users, items i1..i25)

papermill = pytest.importorskip("papermill")

TITLES = ["Heat (1995)", "Alien (1979)", "Fargo (1996)", "Babe (1995)", "Nixon (1995)", "Balto (1995)",
          "Sabrina (1995)", "Jumanji (1995)", "Othello (1995)", "Casino (1995)", "Clueless (1995)", "Congo (1995)",
          "Ed Wood (1994)", "Shallow Grave (1994)", "Braveheart (1995)", "Apollo 13 (1995)", "Batman Forever (1995)",
          "Rob Roy (1995)", "Waterworld (1995)", "Bad Boys (1995)", "Crimson Tide (1995)", "Desperado (1995)",
          "Hackers (1995)", "Dolores Claiborne (1995)", "Assassins (1995)"]


def test_llm_comparison_notebook(tmp_path, smollm2, tiny_file):  # noqa: F811
    link_cached_inputs(QUICK_SOURCES)
    data = tiny_file
    titles = tmp_path / "tiny_titles.csv"
    with open(titles, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title"])
        writer.writerows([f"i{i + 1}", title] for i, title in enumerate(TITLES[:24]))  # i25 has none: reported
    figures, runs = tmp_path / "figures", tmp_path / "runs"
    parameters = {"dataset": str(data), "titles_file": str(titles), "backbones": ["sasrec"], "seeds": [0],
                  "epochs": 1, "profile": "quick", "mltfr_options": SMALL, "runs_dir": str(runs),
                  "figures_dir": str(figures), "executor": "local", "pool_size": 8, "max_users": 3,
                  "llm_dtype": "float32"}
    from test_mixrec_notebook import TINY_MODEL, TINY_TRAIN
    from test_mixrec import save_tiny_llm

    mixrec_runs = tmp_path / "mixrec-runs"  # MixRec runs in another store than the ID runs
    mixrec = {"mixrec_variants": ["mixrec"], "mixrec_runs_dir": str(mixrec_runs), "mixrec_train_missing": True,
              "mixrec_llm": save_tiny_llm(tmp_path / "tiny-llm"),
              "mixrec_options": {"model": TINY_MODEL, "train": {**TINY_TRAIN, "epochs": 1}}}
    for attempt in range(2):
        papermill.execute_notebook(str(NOTEBOOKS / "llm_comparison.ipynb"), str(tmp_path / f"out{attempt}.ipynb"),
                                   kernel_name="python3", progress_bar=False, cwd=str(REPO),
                                   parameters={**parameters, **(mixrec if attempt == 0 else {"mixrec_variants": []})})
        if attempt == 0:
            trained = sorted(p.stat().st_mtime for p in runs.rglob("result.json"))
            llm_files = sorted(runs.rglob("pools/tiny-llm-*.json"))
            with_mixrec = pd.read_csv(figures / "table4_long-tiny.csv")
    [mixrec_row] = with_mixrec[with_mixrec["backbone"] == "mixrec"].to_dict("records")
    [mixrec_run] = [p.parent for p in mixrec_runs.rglob("result.json")]  # trained there, not in the ID store
    assert mixrec_row["method"] == "MixRec (all serial)" and mixrec_row["seeds"] == 1 and mixrec_row["users"] == 3
    [cached] = list(mixrec_run.glob("pools/*.json"))  # its pool ranks, from its full-ranking scores
    ranks = np.array(json.loads(cached.read_text())["ranks"])
    assert len(ranks) == 3 and mixrec_row["top1"] == pytest.approx(np.mean(ranks == 0))
    assert mixrec_row["ci_low"] <= mixrec_row["top1"] <= mixrec_row["ci_high"]
    assert list(with_mixrec["method"])[:4] == ["sasrec W/O", "sasrec MLTFR", "MixRec (all serial)",
                                               "LLM (generation)"]
    assert sorted(p.stat().st_mtime for p in runs.rglob("result.json")) == trained  # nothing trained again
    assert sorted(runs.rglob("pools/tiny-llm-*.json")) == llm_files and len(llm_files) == 1
    long = pd.read_csv(figures / "table4_long-tiny.csv")
    assert list(long["method"]) == ["sasrec W/O", "sasrec MLTFR", "LLM (generation)", "LLM (likelihood)"]
    assert (long["users"] == 3).all() and long["top1"].between(0, 1).all()
    assert (long["ci_low"] <= long["top1"]).all() and (long["top1"] <= long["ci_high"]).all()
    assert long.loc[long["method"] == "LLM (likelihood)", "invalid_rate"].item() == 0
    assert long["users_per_second"].dropna().gt(0).all() and (long["titled items"] == "24 of 25").all()
    wide = pd.read_csv(figures / "table4-tiny.csv")
    assert len(wide) == 1 and "LLM (generation) invalid rate" in wide and "sasrec MLTFR 95% CI" in wide
    assert (figures / "table4-tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "out1.ipynb").read_text()
    assert "Candidates:" in html and "answer:" in html  # the exact prompt is shown
