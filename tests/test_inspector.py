"""Token inspector: a stored MLTFR run on ml-100k (quick profile, 1 epoch), inspected without
retraining; the widgets are driven by setting their values and checked by what they display.

The run lives in the session's shared runs directory, the same one the notebook tests use, so
whichever test comes first trains it and the other reuses it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from test_store import link_cached_inputs

QUICK_SOURCES = ["SmolLM2-135M", "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]  # offline[:3]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    link_cached_inputs(QUICK_SOURCES, ["ml-100k"])
    from mltfrkit.experiments import Experiment

    runs = tmp_path_factory.getbasetemp() / "shared-runs"  # same directory for every test module
    exp = Experiment("ml-100k", epochs=1, device="auto", runs_dir=str(runs), progress=False,
                     mltfr_options={"max_vocab": 2000, "fisher_samples": 16})  # = test_notebooks.SMALL
    exp.store.ensure(exp.spec("sasrec", "mltfr"))
    return exp


@pytest.fixture(scope="module")
def inspector(experiment):
    from mltfrkit.inspector import TokenInspector, mltfr_runs

    # The shared store may also hold other tests' runs (e.g. the Music notebook's): put this one first.
    runs = mltfr_runs(experiment.store)
    ours = runs["run_dir"] == fixture_run_dir(experiment)
    return TokenInspector(store=experiment.store, runs=pd.concat([runs[ours], runs[~ours]], ignore_index=True))


def fixture_run_dir(experiment) -> str:
    return experiment.store.get(experiment.spec("sasrec", "mltfr"))["run_dir"]


def test_loaded_run_reproduces_the_stored_test_metrics(experiment):
    from mltfrkit.inspector import load_run, mltfr_runs
    from mltfrkit.train import evaluate

    runs = mltfr_runs(experiment.store)
    assert fixture_run_dir(experiment) in set(runs["run_dir"])
    loaded = load_run(fixture_run_dir(experiment))
    assert loaded.round == 2 and loaded.plugin.consensus is not None  # offline[:3] has two 384-d tables
    history, targets = loaded.split.eval_pairs("test")
    metrics = evaluate(loaded.model, history, targets, (20,))
    assert metrics["NDCG@20"] == pytest.approx(loaded.result["test"]["NDCG@20"], abs=1e-6)


def test_widgets_show_history_tokens_and_gates(inspector, experiment):
    split = experiment.split
    names = inspector.loaded.expert_names
    assert names == QUICK_SOURCES
    assert inspector.expert.options == tuple(["all"] + names)

    inspector.search.value = "42"
    assert inspector.user.options and all("42" in u for u in inspector.user.options)
    inspector.user.value = "42"
    current = inspector.current
    assert current.user == "42"
    index = [str(u) for u in split.user_ids].index("42")
    expected = split.sequences[index][:-1]  # every item but the held-out test item
    shown = current.history["item"].tolist()
    assert shown == expected[-len(shown):].tolist() and len(shown) == min(len(expected), 50)
    title = split.item_titles[shown[-1]]
    assert title and title.split(" (")[0] in inspector.history_html.value  # titles for ml-100k

    # default K = the run's K (SASRec: 1); every expert shows its tokens with score and weight
    assert inspector.k.value == 1
    inspector.k.value = 5
    for name in names:
        frame = inspector.current.tokens[name]
        assert len(frame) == 5 and frame["in_eval_selection"].all()
        assert np.all(np.diff(frame["score"]) <= 1e-6)  # deterministic top-K: sorted by cosine
        np.testing.assert_allclose(frame["weight"], 1.0, atol=1e-5)  # straight-through: forward value 1
        assert name in inspector.tokens_html.value
        for token in frame["token"]:
            assert token.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
                in inspector.tokens_html.value

    # gate heatmap: one row per history position, one column per expert, rows sum to 1
    gates = inspector.current.gates
    assert gates.shape == (len(shown), len(names))
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-5)
    assert inspector.gates_image.value[:8] == b"\x89PNG\r\n\x1a\n"

    # one expert only
    inspector.expert.value = names[1]
    assert names[1] in inspector.tokens_html.value and names[0] not in inspector.tokens_html.value

    # switching the noise mode: a seeded draw, different from the deterministic selection
    deterministic = inspector.current.tokens[names[1]]["token_id"].tolist()
    inspector.noise.value = "paper"
    noisy = inspector.current.tokens[names[1]]
    assert not noisy["in_eval_selection"].all() and noisy["token_id"].tolist() != deterministic
    assert "not in the deterministic selection" in inspector.tokens_html.value
    inspector.seed.value = 1
    other = inspector.current.tokens[names[1]]["token_id"].tolist()
    inspector.seed.value = 0
    assert inspector.current.tokens[names[1]]["token_id"].tolist() == noisy["token_id"].tolist() != other
    inspector.noise.value = "none"
    assert inspector.current.tokens[names[1]]["token_id"].tolist() == deterministic

    # moving K keeps the top of the ranking: the first 5 of K=8 are the K=5 selection
    inspector.k.value = 8
    assert inspector.current.tokens[names[1]]["token_id"].tolist()[:5] == deterministic


def test_inspect_rejects_unknown_noise_and_user(inspector):
    with pytest.raises(ValueError, match="noise"):
        inspector.loaded.inspect("42", noise="loud")
    with pytest.raises(KeyError, match="unknown user"):
        inspector.loaded.inspect("no-such-user")
    assert torch.is_grad_enabled()


def test_show_user_opens_a_user_or_names_close_ids(inspector):
    user = inspector.loaded.user_ids[5]
    inspector.show_user(user)
    assert inspector.user.value == user and inspector.current.user == user
    with pytest.raises(LookupError, match="no user 'no-such-user'"):
        inspector.show_user("no-such-user")


def test_inspectable_runs_are_this_datasets_finished_mltfr_runs(experiment):
    runs = experiment.inspectable_runs()  # the fixture's run exists: nothing is trained
    assert fixture_run_dir(experiment) in set(runs["run_dir"])
    assert set(runs["dataset"]) == {"ml-100k"} and set(runs["plugin"]) == {"mltfr"}
