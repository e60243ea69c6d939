"""The DAMoE search (MixRec 2.3.3, Appendix E): BoTorch GP + probabilistic reparameterisation finds the
optimum of a cheap synthetic objective over 3L bits in fewer evaluations than seeded random search,
and an interrupted search resumes from its log."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("botorch")

from mltfrkit.mixrec.search import PRSettings, SearchLog, bayesian_search, random_search_evaluations  # noqa: E402

L = 3  # DAMoE layers: 3L = 9 bits, 512 designs
BITS = 3 * L
FAST = PRSettings(restarts=2, steps=15, samples=32, candidates=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic(seed: int = 3):
    """A quadratic pseudo-Boolean function with pairwise interactions (seeded): a stand-in for
    validation MRR as a function of the serial/parallel choices, with its optimum by brute force."""
    rng = np.random.default_rng(seed)
    a, B = rng.normal(size=BITS), np.triu(rng.normal(size=(BITS, BITS)) * 0.5, 1)

    def f(z):
        z = np.asarray(z, float)
        return float(a @ z + z @ B @ z)
    return f, max(f(z) for z in itertools.product((0, 1), repeat=BITS))


def test_bo_with_reparameterisation_finds_the_optimum_before_random_search():
    f, optimum = synthetic()
    trials = bayesian_search(f, BITS, iterations=40, n_init=5, seed=0, settings=FAST, stop_at=optimum)
    bo = next((i + 1 for i, v in enumerate(trials.values) if v >= optimum), None)
    random = random_search_evaluations(f, BITS, optimum, seed=0)
    assert bo is not None, f"BO did not reach the optimum {optimum:.4f} in 40 evaluations (best {max(trials.values):.4f})"
    assert bo < random, (bo, random)
    assert len({tuple(d) for d in trials.designs}) == len(trials.designs)  # never evaluates a design twice


def test_an_interrupted_search_resumes_from_its_log(tmp_path):
    f, _ = synthetic()
    calls = []

    def counted(z):
        calls.append(tuple(z))
        return f(z)
    path = tmp_path / "search.json"
    bayesian_search(counted, BITS, iterations=7, n_init=5, seed=1, settings=FAST, log_path=path)
    assert len(calls) == 7 and len(SearchLog.load(path).values) == 7
    resumed = bayesian_search(counted, BITS, iterations=9, n_init=5, seed=1, settings=FAST, log_path=path)
    assert len(calls) == 9 and resumed.designs[:7] == [list(c) for c in calls[:7]]
    straight = bayesian_search(f, BITS, iterations=9, n_init=5, seed=1, settings=FAST)
    assert straight.designs == resumed.designs  # proposals are seeded by the trial number: same path
