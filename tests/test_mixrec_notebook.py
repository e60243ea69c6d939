"""notebooks/mixrec.ipynb executed by papermill on tiny settings: the tiny data file of the store tests with a
title CSV, the tiny random Llama of tests/test_mixrec.py saved as a local folder (the kernel loads it by path),
one seed, one epoch, a 3-trial DAMoE search, SASRec W/O and with MLTFR for one epoch. Checks the structure of the
tables it writes and that every number in them is the stored runs' result.json value."""

from __future__ import annotations

import csv
import html
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")
pytest.importorskip("botorch")

from test_llm_notebook import TITLES  # noqa: E402
from test_mixrec import save_tiny_llm  # noqa: E402
from test_notebooks import NOTEBOOKS, QUICK_SOURCES, REPO, SMALL  # noqa: E402
from test_store import link_cached_inputs, tiny_file  # noqa: E402,F401  (40 users, items i1..i25)

papermill = pytest.importorskip("papermill")

TINY_MODEL = {"llm_layers": None, "max_tokens": 6, "history_len": 4, "bottleneck": 8, "cf_dim": 8, "n_cl": 2,
              "hard_fraction": 0.2, "max_align_items": 8}
TINY_TRAIN = {"batch_size": 8, "lr": 1e-2, "precision": "float32", "eval_batch": 20, "checkpoint_steps": 50}
TINY_BO = {"iterations": 3, "n_init": 2, "user_fraction": 0.6,
           "pr": {"restarts": 1, "steps": 5, "samples": 16, "candidates": 16}}


def write_titles(path, n=25):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title"])
        writer.writerows([f"i{i + 1}", TITLES[i]] for i in range(n))
    return path


def output_text(path) -> str:
    """Everything an executed notebook printed or displayed (streams, HTML, plain text), HTML entities decoded."""
    parts = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for value in out.get("data", {}).values():
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return html.unescape("\n".join(parts))


def test_mixrec_notebook(tmp_path, tiny_file):  # noqa: F811
    from mltfrkit.mixrec.experiment import CPU_REDUCTIONS
    from mltfrkit.store import read_result

    link_cached_inputs(QUICK_SOURCES)
    figures, runs = tmp_path / "figures", tmp_path / "runs"
    parameters = {"dataset": str(tiny_file), "text": str(write_titles(tmp_path / "titles.csv")), "profile": "cpu",
                  "seeds": [0], "epochs": 1, "llm": save_tiny_llm(tmp_path / "tiny-llm"),
                  "mixrec_options": TINY_MODEL, "mixrec_train_options": TINY_TRAIN, "bo_options": TINY_BO,
                  "backbones": ["sasrec"], "backbone_epochs": 1, "mltfr_options": SMALL, "runs_dir": str(runs),
                  "figures_dir": str(figures), "train_missing": True, "executor": "local"}
    output = tmp_path / "mixrec-tiny.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "mixrec.ipynb"), str(output), kernel_name="python3",
                               progress_bar=False, cwd=str(REPO), parameters=parameters)

    trials = pd.read_csv(figures / "mixrec_bo-tiny.csv")
    assert list(trials["trial"]) == [1, 2, 3] and list(trials["kind"]) == ["random", "random", "BO"]
    for _, trial in trials.iterrows():  # the objective is each trial run's stored validation MRR on Data_BO
        stored = read_result(f"{trial['run_dir']}/result.json")
        assert stored["best_valid"]["MRR"] == pytest.approx(trial["valid MRR (Data_BO)"], abs=0)
        assert stored["users"] == 24  # 60% of the 40 users
    assert trials["chosen"].sum() == 1
    chosen = trials.loc[trials["chosen"], "design"].item()
    assert trials.loc[trials["chosen"], "valid MRR (Data_BO)"].item() == trials["valid MRR (Data_BO)"].max()

    table = pd.read_csv(figures / "mixrec-tiny.csv")
    assert list(table["model"]) == ["LLMRec", "MixRec_base", "MixRec (all serial)", f"MixRec (BO design {chosen})",
                                    "SASRec", "SASRec + MLTFR"]
    assert (table["seeds"] == 1).all() and (table["missing seeds"] == 0).all()
    shown = ["NDCG@10", "Recall@10", "MRR", "HR@20", "NDCG@20"]
    for column in shown:
        assert f"{column} std" in table and f"p {column} vs SASRec" in table
    per_seed = pd.read_csv(figures / "mixrec_per_seed-tiny.csv")
    assert len(per_seed) == 6 and not per_seed["missing"].any()
    for _, row in per_seed.iterrows():  # every number is a stored run's result.json value
        stored = read_result(f"{row['run_dir']}/result.json")
        assert stored["config"]["train"]["seed"] == 0
        for column in shown:
            key = "HR@10" if column == "Recall@10" else column
            if key in stored["test"]:
                assert row[column] == pytest.approx(stored["test"][key], abs=1e-12), (row["model"], column)
        if row["family"] == "mixrec":
            assert stored["config"]["backbone"] == "mixrec" and stored["config"]["plugin"] == row["variant"]
            assert stored["config"]["model"]["max_tokens"] == 6 and stored["config"]["train"]["epochs"] == 1
        else:  # the backbones' MRR: from their stored weights, bounded by their stored HR@5
            assert stored["test"]["HR@5"] / 5 <= row["MRR"] <= 1
        mean = table.loc[table["model"] == row["model"], shown].iloc[0].to_numpy(dtype=float)
        assert mean == pytest.approx(row[shown].to_numpy(dtype=float))  # one seed: the mean is that run's value
    bo_row = per_seed[per_seed["model"].str.startswith("MixRec (BO design")]
    assert read_result(f"{bo_row['run_dir'].item()}/result.json")["config"]["model"]["design"] == \
        [int(b) for b in chosen.replace(" ", "")]

    ablation = pd.read_csv(figures / "mixrec_ablation-tiny.csv")
    assert list(ablation["step"]) == ["LLMRec", "Variation 1 (MixRec_base)", "Variation 2 (MixRec, no BO)",
                                      "MixRec (BO design)"]
    for _, step in ablation.iterrows():
        assert step["NDCG@10"] == table.loc[table["model"] == step["model"], "NDCG@10"].item()
    for stem in ("mixrec-tiny", "mixrec_ablation-tiny"):
        assert (figures / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (figures / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"

    text = output_text(output)
    for reduction in CPU_REDUCTIONS.values():  # the reductions are printed from the library, never typed in
        assert reduction in text, reduction
    assert "chosen design: " + chosen in text
    assert np.isnan(table["p MRR vs SASRec"]).all()  # one seed: no paired test
