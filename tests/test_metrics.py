from __future__ import annotations

import math

import numpy as np
import torch

from mltfrkit.train.metrics import evaluate, metrics_from_ranks, pad_left, target_ranks, users_per_chunk


def test_ranks_count_ties_against_target():
    scores = torch.tensor([[float("-inf"), 1.0, 3.0, 2.0, 3.0]])
    assert target_ranks(scores, torch.tensor([2])).item() == 1  # item 4 ties with the target
    assert target_ranks(scores, torch.tensor([3])).item() == 2
    flat = torch.zeros(1, 6)
    flat[0, 0] = float("-inf")
    assert target_ranks(flat, torch.tensor([3])).item() == 4  # all alike: the target is ranked last


def test_hr_ndcg_values():
    m = metrics_from_ranks(np.array([0, 1, 4, 25]), ks=(5, 20))
    assert m["HR@5"] == 0.75 and m["HR@20"] == 0.75
    assert math.isclose(m["NDCG@5"], (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)


class FixedScores(torch.nn.Module):
    """Scores = a fixed table indexed by the last history item: lets us check the evaluator alone."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.n_items = table.shape[1] - 1
        self.config = type("C", (), {"max_len": 5})()

    def score_all(self, history):
        scores = self.table[history[:, -1]].clone()
        scores[:, 0] = float("-inf")
        return scores


def test_chunked_equals_unchunked_and_padding_never_ranked():
    torch.manual_seed(0)
    n_items = 50
    table = torch.randn(n_items + 1, n_items + 1)
    table[:, 0] = 1e9  # would win if padding were ranked
    model = FixedScores(table)
    histories = [np.array([i % n_items + 1]) for i in range(300)]
    targets = np.array([(i * 7) % n_items + 1 for i in range(300)])
    small = evaluate(model, histories, targets, max_bytes=1)  # one user per chunk
    large = evaluate(model, histories, targets, max_bytes=1 << 30)
    assert small == large
    assert users_per_chunk(100_000, 256 << 20) * 100_001 * 10 <= 256 << 20
    scores = table[torch.tensor([h[-1] for h in histories])]
    scores[:, 0] = float("-inf")
    ranks = target_ranks(scores, torch.tensor(targets)).numpy()
    assert small == metrics_from_ranks(ranks)


def test_exclude_history():
    table = torch.zeros(4, 4)
    table[:, 1], table[:, 2], table[:, 3] = 3.0, 2.0, 1.0
    model = FixedScores(table)
    histories, targets = [np.array([1])], np.array([2])
    assert evaluate(model, histories, targets, ks=(1,))["HR@1"] == 0.0
    assert evaluate(model, histories, targets, ks=(1,), exclude_history=True)["HR@1"] == 1.0


def test_pad_left_keeps_most_recent():
    out = pad_left([np.array([1, 2, 3, 4]), np.array([5])], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5]]


def test_non_finite_scores_never_flatter():
    """A diverged model (NaN scores) got rank -1, a "hit" with NDCG inf (issue 18, item 1)."""
    nan, inf = float("nan"), float("inf")
    all_nan = torch.full((1, 5), nan)
    all_nan[0, 0] = -inf
    assert target_ranks(all_nan, torch.tensor([2])).item() == 4  # last
    scores = torch.tensor([[-inf, 1.0, nan, 3.0, 0.5]])
    assert target_ranks(scores, torch.tensor([2])).item() == 4  # NaN target: last
    assert target_ranks(scores, torch.tensor([3])).item() == 1  # the NaN item counts against the target
    assert target_ranks(torch.tensor([[-inf, 1.0, inf, 3.0]]), torch.tensor([2])).item() == 3  # +inf: last
    table = torch.full((31, 31), nan)  # 30 items: "last" is beyond the cut-off 20
    metrics = evaluate(FixedScores(table), [np.array([1]), np.array([2])], np.array([3, 4]))
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["HR@20"] == 0.0 and metrics["NDCG@20"] == 0.0
