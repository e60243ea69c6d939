"""Candidate pools (Table 4's protocol): identical for a seed whatever the method, the run or the user
sample; never a history item or a duplicate; ties against the target; stored runs scored without training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mltfrkit.cli import main
from mltfrkit.data import load_dataset
from mltfrkit.runs import RunSpec, run_training
from mltfrkit.store import pool_evaluation
from mltfrkit.train import TrainConfig
from mltfrkit.train.pools import (PoolSpec, bootstrap_ci, evaluate_on_pools, make_pools, pool_metrics,
                                  ranks_from_scores, score_pools)
from conftest import make_tiny_split
from test_store import tiny_file  # noqa: F401  (the fixture: 40 users with a learnable cyclic pattern)


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_pools_never_hold_history_or_duplicates(ml100k, sampling):
    pools = make_pools(ml100k, PoolSpec(size=20, sampling=sampling, seed=3))
    assert pools.candidates.shape == (ml100k.n_users, 20) and len(pools) == 943
    for row, user in enumerate(pools.users):
        sequence = ml100k.sequences[user]
        pool = pools.candidates[row]
        assert len(set(pool.tolist())) == 20 and pool.min() >= 1 and pool.max() <= ml100k.n_items
        assert pool[pools.target_index[row]] == sequence[-1]
        negatives = np.delete(pool, pools.target_index[row])
        assert not set(negatives.tolist()) & set(sequence.tolist())  # history, validation and test item
        assert np.array_equal(pools.histories[row], sequence[:-1])
    # the target is not always in one position (an LLM answering "A" gains nothing)
    assert len(set(pools.target_index.tolist())) > 15


def test_pools_are_identical_for_a_seed_across_calls_samples_and_holdouts(ml100k):
    spec = PoolSpec(size=20, seed=0)
    first, again = make_pools(ml100k, spec), make_pools(ml100k.with_holdout("test"), spec)
    assert np.array_equal(first.candidates, again.candidates) and np.array_equal(first.target_index,
                                                                                   again.target_index)
    sample = make_pools(ml100k, PoolSpec(size=20, seed=0, max_users=50))
    assert len(sample) == 50 and np.array_equal(sample.candidates, first.candidates[sample.users])
    assert np.array_equal(make_pools(ml100k, PoolSpec(size=20, seed=0, max_users=50)).users, sample.users)
    other = make_pools(ml100k, PoolSpec(size=20, seed=1))
    assert (other.candidates != first.candidates).any()
    popular = make_pools(ml100k, PoolSpec(size=20, seed=0, sampling="popularity"))
    assert (popular.candidates != first.candidates).any()


def test_popularity_sampling_draws_popular_negatives(ml100k):
    counts = np.bincount(np.concatenate(ml100k.train_sequences()), minlength=ml100k.n_items + 1)

    def negative_popularity(sampling):
        pools = make_pools(ml100k, PoolSpec(size=20, seed=0, sampling=sampling, max_users=200))
        mask = np.ones(pools.candidates.shape, dtype=bool)
        mask[np.arange(len(pools)), pools.target_index] = False
        return counts[pools.candidates[mask]].mean()

    assert negative_popularity("popularity") > 2 * negative_popularity("uniform")


def test_too_small_catalogue_for_the_pool_is_refused():
    split = make_tiny_split(n_users=5, n_items=12, min_len=8, max_len=8)
    with pytest.raises(ValueError, match="only 4 negatives left for a pool of 20.*smaller pool"):
        make_pools(split, PoolSpec(size=20))
    with pytest.raises(ValueError, match="pool size must be an integer >= 2"):
        PoolSpec(size=1)
    with pytest.raises(ValueError, match="sampling must be one of"):
        PoolSpec(sampling="zipf")


def test_ties_and_non_finite_scores_count_against_the_target():
    target_index = np.array([0, 2, 1, 3])
    scores = np.array([[1.0, 1.0, 1.0, 1.0],      # constant scorer: the target ties with all: last
                       [0.1, 0.2, 0.9, 0.3],      # clear win
                       [0.5, np.nan, 0.1, 0.2],   # NaN target: last
                       [0.1, np.nan, 0.2, 0.9]])  # another item NaN: counted above the target
    ranks = ranks_from_scores(scores, target_index)
    assert ranks.tolist() == [3, 0, 3, 1]
    metrics = pool_metrics(ranks, ks=(1, 2))
    assert metrics["top1"] == metrics["HR@1"] == 0.25 and metrics["HR@2"] == 0.5
    low, high = bootstrap_ci([1, 0, 0, 0] * 50)
    assert low < 0.25 < high and high - low < 0.2


def test_pool_scores_are_the_full_ranking_scores_of_the_candidates(tiny_file, tmp_path):  # noqa: F811
    spec = RunSpec(str(tiny_file), train=TrainConfig(epochs=1, device="cpu"),
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1})
    result = run_training(spec, root=tmp_path / "runs", progress=False, log=None)
    from mltfrkit.runs import load_trained
    from mltfrkit.train.metrics import pad_left

    _, split, model = load_trained(result["run_dir"])
    pools = make_pools(split, PoolSpec(size=10, seed=0))
    scores = score_pools(model, pools, batch_users=7)  # batching does not change anything
    with torch.no_grad():
        full = model.score_all(pad_left(pools.histories, model.config.max_len))
    assert np.allclose(scores, full.gather(1, torch.as_tensor(pools.candidates)).numpy(), atol=1e-5)
    direct = evaluate_on_pools(model, pools)
    # the stored run, scored through the store: nothing retrained, cached in the run directory
    stored = pool_evaluation(result["run_dir"], PoolSpec(size=10, seed=0))
    assert stored["ranks"] == direct["ranks"] and stored["top1"] == direct["top1"]
    cached = list((tmp_path / "runs").glob("*/pools/*.json"))
    assert len(cached) == 1
    assert pool_evaluation(result["run_dir"], PoolSpec(size=10, seed=0))["ranks"] == direct["ranks"]


def test_cli_evaluate_pool_reads_a_stored_run(tiny_file, tmp_path, capsys):  # noqa: F811
    spec = RunSpec(str(tiny_file), train=TrainConfig(epochs=1, device="cpu"),
                   model={"hidden_size": 16, "n_layers": 1, "n_heads": 1})
    run_dir = run_training(spec, root=tmp_path / "runs", progress=False, log=None)["run_dir"]
    assert main(["evaluate", run_dir, "--pool", "10", "--pool-seed", "2", "--max-users", "20"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["users"] == 20 and printed["pool"]["size"] == 10 and 0 <= printed["top1"] <= 1
    assert main(["evaluate", run_dir, "--pool", "1"]) == 2
    assert "pool size must be an integer >= 2" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere"), "--pool", "20"]) == 2
    assert "no finished result" in capsys.readouterr().err
