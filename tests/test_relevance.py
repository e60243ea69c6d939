"""Does the user-guided filter select task-relevant tokens? The relevance percentile of
mltfrkit.mltfr.diagnostics, on a real token table (all-MiniLM-L6-v2) and a tiny trained MLTFR run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from test_store import tiny_file  # noqa: F401  (fixture)

from mltfrkit.mltfr.diagnostics import (TitleSpace, relevance_percentiles, relevance_report, relevance_verdict,
                                        summarise_relevance, title_words, token_percentiles)

SOURCE = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    from test_store import link_cached_inputs

    link_cached_inputs([SOURCE])
    from mltfrkit.vocab import load_table

    return load_table(SOURCE)


def test_title_words_keep_content_words_only():
    assert title_words("Toy Story (1995)") == ["toy", "story"]
    assert title_words("Shawshank Redemption, The (1994)") == ["shawshank", "redemption"]
    assert title_words("Kids in the Hall: Brain Candy (1996)") == ["kids", "hall", "brain", "candy"]
    assert title_words("M*A*S*H (1970)") == [] and title_words("") == [] and title_words(None) == []


def test_token_percentiles_span_0_to_100_and_average_50_at_random():
    relevance = torch.randn(1001, generator=torch.Generator().manual_seed(0))
    order = relevance.argsort()
    assert token_percentiles(relevance, order[-1:]).item() == pytest.approx(100.0)
    assert token_percentiles(relevance, order[:1]).item() == pytest.approx(0.0)
    assert token_percentiles(relevance, torch.arange(1001)).mean().item() == pytest.approx(50.0)
    tied = torch.zeros(11)  # every token equally relevant: each sits in the middle
    assert torch.allclose(token_percentiles(tied, torch.arange(3)), torch.full((3,), 50.0))


def test_verdict_rule():
    assert relevance_verdict(62.0, 58.0, 66.0) == "relevant"
    assert relevance_verdict(51.0, 50.4, 51.6) == "barely above chance"
    assert relevance_verdict(50.2, 48.9, 51.5) == "chance"
    assert relevance_verdict(44.0, 41.0, 47.0) == "below chance"
    frame = pd.DataFrame({"model": "trained", "expert": "e", "noise": "none",
                          "percentile": np.r_[np.full(50, 90.0), np.full(50, 80.0)]})
    row = summarise_relevance(frame).iloc[0]
    assert row["mean percentile"] == pytest.approx(85.0) and row["verdict"] == "relevant"
    assert 80 <= row["CI low"] <= 85 <= row["CI high"] <= 90 and row["share of users above 50"] == 1


def test_title_space_points_at_the_titles_words(minilm):
    keep = torch.from_numpy(np.flatnonzero(minilm.keep_mask())[:8000])
    space = TitleSpace(SOURCE, keep)
    direction = space.history_direction(np.array([1, 2]), {1: "Guitar Heroes", 2: "The Piano Lesson"})
    relevance = space.kept @ direction
    top = {minilm.display[int(keep[i])] for i in relevance.topk(30).indices}
    assert {"guitar", "piano"} & top, top  # the words themselves are among the most relevant tokens
    guitar = int(np.flatnonzero((np.asarray(minilm.display) == "guitar"))[0])
    position = int((keep == guitar).nonzero()[0])
    assert token_percentiles(relevance, torch.tensor([position])).item() > 99
    assert space.history_direction(np.array([3]), {3: "(1995)"}) is None  # no word: no direction


def test_an_oracle_filter_scores_near_100_and_the_report_covers_trained_and_untrained(tiny_file, tmp_path, minilm,
                                                                                      monkeypatch):
    """A trained tiny MLTFR run: every (user, expert, mode) gets a percentile in [0, 100]; a filter whose
    similarity *is* the relevance (monkeypatched) selects at the top; a dataset without titles is refused."""
    from test_store import SOURCES, link_cached_inputs

    from mltfrkit.runs import RunSpec, load_trained, run_training
    from mltfrkit.train import TrainConfig

    link_cached_inputs(SOURCES)
    spec = RunSpec(str(tiny_file), train=TrainConfig(epochs=1, device="cpu"), plugin="mltfr",
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1},
                   plugin_options={"llms": SOURCES, "n_experts": 2, "max_vocab": 300, "fisher_samples": 8})
    result = run_training(spec, root=tmp_path, progress=False, log=None)
    run_dir = result["run_dir"]
    with pytest.raises(ValueError, match="no item titles"):
        relevance_report(run_dir)

    _, split, model = load_trained(run_dir)
    words = ["guitar", "piano", "violin", "drums", "apple", "banana", "cherry", "grape"]
    titles = {item: f"{words[item % 8].title()} {words[(item * 3) % 8]} (1999)" for item in range(1, split.n_items + 1)}
    histories, _ = split.eval_pairs("test")
    frame = relevance_percentiles(model, histories, titles)
    assert len(frame) == len(histories) * 2 * 3 and frame["percentile"].between(0, 100).all()
    assert set(frame["expert"]) == set(SOURCES) and set(frame["noise"]) == {"paper", "tempered", "none"}

    spaces = {}
    relevance_percentiles(model, histories[:1], titles, modes=("none",), spaces=spaces)  # build the spaces
    max_len = model.config.max_len
    directions = {name: torch.stack([space.history_direction(h[-max_len:], titles) for h in histories])
                  for name, space in spaces.items()}
    for expert in model.plugin.experts:  # the oracle: similarity = relevance in the LLM's own space
        oracle = (spaces[expert.name].kept @ directions[expert.name].T).T
        monkeypatch.setattr(expert.filter, "similarity", lambda E, mask, o=oracle: o[:E.shape[0]])
    best = relevance_percentiles(model, histories, titles, modes=("none",), spaces=spaces)
    assert best["percentile"].min() > 95  # the K most relevant of 300 tokens


def test_relevance_sentence_names_each_expert_and_verdict():
    from mltfrkit.mltfr.diagnostics import relevance_sentence

    frame = pd.DataFrame({"model": ["trained"] * 40 + ["untrained"] * 40, "expert": "SmolLM2-135M",
                          "noise": "none", "percentile": np.r_[np.full(40, 70.0), np.linspace(40, 60, 40)]})
    line = relevance_sentence(summarise_relevance(frame))
    assert "trained: SmolLM2-135M 70 (relevant)" in line and "untrained: SmolLM2-135M 50 (chance)" in line


def test_relevance_gain_pairs_users():
    from mltfrkit.mltfr.diagnostics import relevance_gain, relevance_sentence

    users = np.arange(30)
    base = 50 + np.random.default_rng(0).normal(0, 10, 30)
    frame = pd.concat([pd.DataFrame({"model": "untrained", "expert": "e", "noise": "none", "user": users,
                                     "percentile": base}),
                       pd.DataFrame({"model": "trained", "expert": "e", "noise": "none", "user": users,
                                     "percentile": base + 4.0})])
    gain = relevance_gain(frame)
    assert gain.loc[0, "trained - untrained"] == pytest.approx(4.0)
    assert gain.loc[0, "CI low"] == pytest.approx(4.0) and gain.loc[0, "users"] == 30  # the same shift for everyone
    assert "Training adds: e +4.0 points" in relevance_sentence(summarise_relevance(frame), gain=gain)
    assert relevance_gain(frame[frame["model"] == "trained"]).empty
