from __future__ import annotations

import math

import numpy as np
import pytest
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


# -- chunks of similar length, each only as wide as it needs (padding-free scores) ------------------------------

TRIM_ITEMS, TRIM_LEN = 40, 12
PADDING_FREE = {"sasrec", "cl4srec", "bert4rec", "linrec"}  # the filters of FMLP-Rec and BSARec mix the window


def trim_model(backbone: str, plugin: str, **overrides):
    from mltfrkit.mltfr import ItemTokenInjection, MLTFRConfig, MLTFRPlugin
    from mltfrkit.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone(backbone, TRIM_ITEMS, max_len=TRIM_LEN, **overrides)
    g = torch.Generator().manual_seed(1)
    if plugin in ("te", "re"):
        model.attach_plugin(ItemTokenInjection(TRIM_ITEMS, torch.randn(500, 8, generator=g), None, 64,
                                               random_rows=plugin == "re", assignment_seed=2))
    elif plugin.startswith("mltfr"):
        placement = {"mltfr": "input", "mltfr-after": "from_input_after_first_block",
                     "mltfr-block": "after_first_block"}[plugin]  # the last sees BERT4Rec's non-zero padding rows
        tables = [("a", torch.randn(200, 16, generator=g), None), ("b", torch.randn(150, 16, generator=g), None)]
        mltfr = MLTFRPlugin(tables, 64, MLTFRConfig(top_k=3, placement=placement))
        model.attach_plugin(mltfr, mltfr.config.placement)
        if plugin == "mltfr-block":  # with the consensus expert of round 2 (eq. 15)
            from mltfrkit.mltfr import build_consensus

            fishers = [{n: torch.rand(p.shape, generator=g) for n, p in e.integration.named_parameters()}
                       for e in mltfr.experts]
            mltfr.set_consensus(build_consensus(mltfr, fishers))
    # trained-looking weights: padding rows and positions that the initialisation leaves at zero or alike
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=g))
    return model.eval()


def short_histories(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[1, 2, TRIM_LEN - 1, TRIM_LEN, TRIM_LEN + 7], rng.integers(1, 6, n - 5)])
    return [rng.integers(1, TRIM_ITEMS + 1, size=length) for length in lengths]


@pytest.mark.parametrize("plugin", ["none", "te", "re", "mltfr", "mltfr-after", "mltfr-block"])
@pytest.mark.parametrize("backbone", ["sasrec", "cl4srec", "bert4rec", "linrec", "fmlprec", "bsarec"])
def test_a_padding_free_model_scores_a_narrow_window_as_the_full_one(backbone, plugin):
    """Where a model says its scores do not depend on leading padding, a history left-padded to just past its
    length scores as it does left-padded to max_len (positions are the window's right end), alone, with
    LLM-TE/RE and with MLTFR at each placement (the last with a consensus expert); the models whose filters
    mix the whole window say they do not. Left-aligned positions, or a padding key let into a mix, fail it."""
    model = trim_model(backbone, plugin)
    assert model.padding_free_scores() == (backbone in PADDING_FREE)
    if backbone not in PADDING_FREE:
        return
    histories = short_histories(16)[:4]  # lengths 1, 2, 11, 12
    full = model.score_all(pad_left(histories, TRIM_LEN))
    for width in (2, 5, 13 - 1):
        fits = [h for h in histories if len(h) < width]
        if fits:
            narrow = model.score_all(pad_left(fits, width))
            assert narrow.shape == (len(fits), TRIM_ITEMS + 1)
            expected = full[[i for i, h in enumerate(histories) if len(h) < width]]
            assert torch.allclose(narrow[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)


def test_linrec_without_padding_masks_is_not_padding_free():
    assert not trim_model("linrec", "none", mask_padding=False).padding_free_scores()
    assert trim_model("linrec", "none").padding_free_scores()


def test_an_mltfr_plugin_with_batch_keys_or_evaluation_noise_is_not_padding_free():
    from mltfrkit.mltfr import MLTFRConfig, MLTFRPlugin

    tables = [("a", torch.randn(200, 16), None)]
    for options in ({"keys": "batch"}, {"eval_noise": True}):
        assert not MLTFRPlugin(tables, 64, MLTFRConfig(top_k=3, **options)).padding_free_scores()


@pytest.mark.parametrize("plugin", ["none", "mltfr"])
@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "bsarec"])
def test_evaluate_in_narrow_length_sorted_chunks_gives_the_full_window_metrics(backbone, plugin):
    """Chunks sorted by history length and cut to their longest history give each user the rank the full,
    dataset-ordered evaluation gives it (compared at every cut-off), with history exclusion too; the chunks
    are narrower than max_len only for padding-free models, and a compiled (foreign) scorer is never trimmed."""
    model = trim_model(backbone, plugin)
    histories = short_histories(60)
    rng = np.random.default_rng(5)
    targets = rng.integers(1, TRIM_ITEMS + 1, size=len(histories))
    ks = tuple(range(1, TRIM_ITEMS + 1))
    widths = []
    own = type(model).score_all

    def spy(history):
        widths.append(history.shape[1])
        return own(model, history)

    model.score_all = spy  # the model's own scorer, watched
    extra = model.plugin.eval_bytes_per_user() if model.plugin is not None else 0
    budget = 12 * ((TRIM_ITEMS + 1) * 10 + extra)  # 12 users per chunk (users_per_chunk)
    for exclude in (False, True):
        widths.clear()
        trimmed = evaluate(model, histories, targets, ks=ks, max_bytes=budget,
                           exclude_history=exclude)
        trimmed_widths = list(widths)
        widths.clear()
        full = evaluate(model, histories, targets, ks=ks, max_bytes=budget,
                        exclude_history=exclude, trim_padding=False)
        assert trimmed == pytest.approx(full, abs=1e-12)
        assert set(widths) == {TRIM_LEN} and len(widths) == len(trimmed_widths) == 5  # chunks of 12 users
        if backbone == "bsarec":
            assert set(trimmed_widths) == {TRIM_LEN}
        else:  # shortest first, each chunk one column past its longest history; the last holds the long ones
            lengths = sorted(len(h) for h in histories)
            assert trimmed_widths == [min(TRIM_LEN, max(lengths[i:i + 12]) + 1) for i in range(0, 60, 12)]
            assert trimmed_widths[0] < trimmed_widths[-2] <= 6 and trimmed_widths[-1] == TRIM_LEN
    widths.clear()
    evaluate(model, histories, targets, score=lambda history: spy(history))  # not the model's own: whole windows
    assert set(widths) == {TRIM_LEN}


def test_evaluating_no_users_is_an_error_that_says_so():
    model = trim_model("sasrec", "none")
    with pytest.raises(ValueError, match="no users to evaluate"):
        evaluate(model, [], np.array([], dtype=np.int64))
