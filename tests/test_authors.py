"""The authors' MLTFR behind switches (README "The authors' MLTFR"): each switch does what their
code does, our defaults do not, and one run yields both selection protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mltfrkit.mltfr import MLTFRConfig, MLTFRPlugin, TokenFilter
from mltfrkit.models import build_backbone
from mltfrkit.models.base import causal_padding_mask
from mltfrkit.train import TrainConfig, fit
from mltfrkit.train.metrics import evaluate

from test_mltfr import D, MAX_LEN, N_ITEMS, E_and_mask, model_with_plugin, seeded_builder, sequences, synthetic_tables


def plugin_output(plugin, E, mask, seed=0):
    torch.manual_seed(seed)
    return plugin(E, mask)


@pytest.mark.parametrize("keys", ["user", "batch"])
def test_batch_keys_make_a_users_training_output_depend_on_its_batch(keys):
    plugin = MLTFRPlugin(synthetic_tables(), D, MLTFRConfig(top_k=1, keys=keys, noise="none", attn_dropout=0.0))
    plugin.train()
    E, mask = E_and_mask()
    other = E.detach().clone()
    other[1:] = torch.randn_like(other[1:])  # the other users of the batch change, user 0 does not
    first = plugin_output(plugin, E, mask)[0]
    second = plugin_output(plugin, other, mask)[0]
    if keys == "user":
        assert torch.allclose(first, second, atol=1e-6)
    else:
        assert not torch.allclose(first, second, atol=1e-4)


def test_user_keys_with_k1_give_query_and_key_no_gradient_batch_keys_do():
    """Why the switch matters: one key per user is a constant attention (softmax over one key)."""
    grads = {}
    for keys in ("user", "batch"):
        plugin = MLTFRPlugin(synthetic_tables(), D, MLTFRConfig(top_k=1, keys=keys, noise="none", attn_dropout=0.0))
        plugin.train()
        E, mask = E_and_mask()
        plugin(E, mask).pow(2).sum().backward()
        grads[keys] = plugin.experts[0].integration.query.weight.grad.abs().sum().item()
    assert grads["user"] < 1e-3 * grads["batch"]  # float round-off only, against real attention


def test_batch_key_evaluation_uses_fixed_batches_and_is_deterministic(tiny_split):
    model, plugin = model_with_plugin(keys="batch", eval_batch=16)
    hist, targets = tiny_split.eval_pairs("test")
    targets = np.minimum(targets, N_ITEMS)
    assert plugin.eval_batch_users() == 16
    first = evaluate(model, hist, targets)
    assert evaluate(model, hist, targets, max_bytes=1 << 16) == first  # the memory budget no longer decides batches
    model_user, plugin_user = model_with_plugin(keys="user")
    assert plugin_user.eval_batch_users() is None


def test_evaluation_noise_is_reproducible_and_differs_from_deterministic_top_k(tiny_split):
    model, plugin = model_with_plugin(eval_noise=True, top_k=2)
    hist, targets = tiny_split.eval_pairs("test")
    targets = np.minimum(targets, N_ITEMS)
    assert evaluate(model, hist, targets) == evaluate(model, hist, targets)  # same seed, same noise, same result
    model.eval()
    plugin.record = True
    plugin.begin_evaluation()
    with torch.no_grad():
        model.score_all(sequences())
    noisy = plugin.last["selections"][1].token_ids
    plugin.begin_evaluation()
    with torch.no_grad():
        model.score_all(sequences())
    assert torch.equal(noisy, plugin.last["selections"][1].token_ids)
    plugin.experts[1].filter.eval_noise = False
    with torch.no_grad():
        model.score_all(sequences())
    assert not torch.equal(noisy, plugin.last["selections"][1].token_ids)  # eq. (4)'s noise: a different pick


@pytest.mark.parametrize("trainable", [False, True])
def test_trainable_tables_change_after_one_step_frozen_ones_do_not(trainable):
    model, plugin = model_with_plugin(trainable_tables=trainable, top_k=2)
    before = [e.filter.vocab.detach().clone() for e in plugin.experts]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = model.loss(torch.cat([torch.zeros(6, 1, dtype=torch.long), sequences()], 1), torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(b, e.filter.vocab.detach()) for b, e in zip(before, plugin.experts)]
    assert all(changed) if trainable else not any(changed)
    in_state = any("filter.vocab" in name for name in model.state_dict())
    assert in_state == trainable  # trained tables are saved with the model; frozen ones never are


def test_trainable_tables_refuse_bfloat16():
    with pytest.raises(ValueError, match="trainable_tables needs precision='float32'"):
        MLTFRConfig(trainable_tables=True, precision="bfloat16")


def test_authors_placement_adds_the_output_computed_from_E_after_block_0():
    model, plugin = model_with_plugin("sasrec", placement="from_input_after_first_block")
    model.eval()
    seqs = sequences()
    mask = seqs > 0
    with torch.no_grad():
        E = model.embed(seqs)
        W = plugin(E, mask, seqs)
        allowed, keep = causal_padding_mask(mask, causal=True), mask.unsqueeze(-1).float()
        x = model.blocks[0](E, allowed, keep) + W  # block 0 sees E alone; the MoE output joins after it
        for block in model.blocks[1:]:
            x = block(x, allowed, keep)
        expected = model.final_norm(x)
        assert torch.allclose(model.encode(seqs), expected, atol=1e-6)
        model.attach_plugin(plugin, "input")  # eq. (18) is something else
        assert not torch.allclose(model.encode(seqs), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["bert4rec", "fmlprec", "linrec", "bsarec", "cl4srec"])
def test_authors_placement_trains_on_every_backbone(name):
    model, plugin = model_with_plugin(name, placement="from_input_after_first_block")
    model.train()
    loss = model.loss(torch.cat([torch.zeros(6, 1, dtype=torch.long), sequences()], 1), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and plugin.gate.weight.grad.abs().sum() > 0


def test_sum_scaling_is_one_over_k_and_starves_the_k1_projection():
    table = torch.randn(400, 8)
    E, mask = E_and_mask()
    for k in (1, 4):
        for scale in ("straight_through", "sum"):
            filt = TokenFilter(table, D, top_k=k, token_scale=scale).train()
            E.grad = None
            sel = filt(E, mask, generator=torch.Generator().manual_seed(0))
            expected = 1.0 if scale == "straight_through" else 1.0 / (k + 1e-8)
            assert torch.allclose(sel.weights.detach(), torch.full((6, k), expected))
            (sel.tokens * torch.randn_like(sel.tokens)).sum().backward()
            grad = filt.align.weight.grad.abs().sum().item()
            if scale == "sum" and k == 1:
                assert grad < 1e-6  # the authors' K = 1 setting: their align projection does not learn
            else:
                assert grad > 1e-4


def test_expert_dropout_acts_in_training_only():
    E, mask = E_and_mask()
    outputs = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        plugin = MLTFRPlugin(synthetic_tables(), D, MLTFRConfig(top_k=2, expert_dropout=p, noise="none",
                                                                 attn_dropout=0.0))
        plugin.train()
        outputs[("train", p)] = plugin_output(plugin, E, mask).detach()
        plugin.eval()
        outputs[("eval", p)] = plugin_output(plugin, E, mask).detach()
    assert not torch.allclose(outputs[("train", 0.0)], outputs[("train", 0.5)])
    assert torch.allclose(outputs[("eval", 0.0)], outputs[("eval", 0.5)])


def test_per_epoch_test_metrics_are_stored_and_never_change_test(tiny_split):
    results = {}
    for tracked in (False, True):
        torch.manual_seed(0)
        model = build_backbone("sasrec", tiny_split.n_items, max_len=MAX_LEN)
        results[tracked] = fit(model, tiny_split, TrainConfig(epochs=4, batch_size=16, device="cpu",
                                                              test_every_epoch=tracked), progress=False, log=None)
    plain, tracked = results[False], results[True]
    assert tracked["test"] == plain["test"] and tracked["best_epoch"] == plain["best_epoch"]
    assert "test_oracle" not in plain and all(e["test"] is None for e in plain["epochs"])
    curve = [e["test"]["NDCG@20"] for e in tracked["epochs"]]
    oracle = tracked["test_oracle"]
    assert oracle["metrics"]["NDCG@20"] == max(curve) and curve[oracle["epoch"] - 1] == max(curve)
    assert "optimistic" in oracle["label"]
    assert tracked["config"]["train"]["test_every_epoch"] is True
    assert "test_every_epoch" not in plain["config"]["train"]  # default runs keep their keys


def test_authors_holdout_trains_on_the_validation_item_and_selects_on_test(tiny_split):
    authors = tiny_split.with_holdout("test")
    assert all(np.array_equal(a, s[:-1]) for a, s in zip(authors.train_sequences(), tiny_split.sequences))
    with pytest.raises(ValueError, match="no validation target"):
        authors.eval_pairs("valid")
    assert tiny_split.holdout == "valid_test"  # the original is untouched
    torch.manual_seed(0)
    model = build_backbone("sasrec", tiny_split.n_items, max_len=MAX_LEN)
    result = fit(model, tiny_split, TrainConfig(epochs=3, batch_size=16, device="cpu", holdout="test"),
                 progress=False, log=None)
    assert result["test"] is None and result["best_valid"] == {}
    assert result["best_epoch"] == result["test_oracle"]["epoch"]
    assert result["config"]["train"]["holdout"] == "test"


def _fake_round(valid_ndcg, test_ndcg, epoch):
    return {"best_epoch": epoch, "best_valid": {"NDCG@20": valid_ndcg}, "test": {"NDCG@20": test_ndcg},
            "epochs": [], "seconds": 1.0, "stopped_early": True,
            "test_oracle": {"epoch": epoch, "metrics": {"NDCG@20": test_ndcg}, "label": "x"}}


@pytest.mark.parametrize("selection", ["both", "round2"])
def test_round_selection_over_both_rounds_can_return_round_1(tiny_split, monkeypatch, selection):
    import mltfrkit.mltfr.rounds as rounds

    outcomes = iter([_fake_round(0.5, 0.30, 7), _fake_round(0.4, 0.35, 3)])  # round 2 over-trains on validation
    monkeypatch.setattr(rounds, "fit", lambda *args, **kwargs: next(outcomes))
    config = MLTFRConfig(top_k=2, fisher_samples=8, round_selection=selection)
    result = rounds.train_two_rounds(seeded_builder(tiny_split.n_items, config), tiny_split, TrainConfig(device="cpu"), config, None, {}, progress=False,
                                     log=None)
    if selection == "both":
        assert result["selected_round"] == 1 and result["best_epoch"] == 7 and result["test"]["NDCG@20"] == 0.30
    else:
        assert result["selected_round"] == 2 and result["best_epoch"] == 3 and result["test"]["NDCG@20"] == 0.35
    assert result["test_oracle"]["round"] == 2  # the best test epoch was round 2's in both candidate sets
    assert result["round1"]["best_epoch"] == 7 and result["round2"]["best_epoch"] == 3


def test_authors_configuration_sets_every_behaviour_and_their_expert_counts():
    from mltfrkit.runs import RunSpec, authors_configuration, configured

    spec = RunSpec("Pantry", "sasrec", plugin="mltfr", plugin_options={"n_experts": 4, "max_vocab": 16000,
                                                                       "precision": "bfloat16"})
    authors = authors_configuration(spec)
    config = authors.mltfr_config()
    assert (config.keys, config.placement, config.token_scale, config.expert_dropout, config.eval_noise,
            config.trainable_tables, config.round2, config.round_selection) == (
        "batch", "from_input_after_first_block", "sum", 0.1, True, True, "restart", "round2")
    assert (config.n_experts, config.top_k, config.alpha, config.max_vocab) == (6, 1, 0.01, 16000)
    assert authors.train.holdout == "test" and authors.train.test_every_epoch
    assert authors_configuration(RunSpec("Pantry", "bert4rec", plugin="mltfr")).mltfr_config().n_experts == 4
    baseline = authors_configuration(RunSpec("Pantry", "sasrec"))
    assert baseline.train.holdout == "test" and baseline.plugin_options == {}  # W/O is selected the same way
    assert configured(spec, "ours") is spec
    with pytest.raises(ValueError, match="configuration"):
        configured(spec, "theirs")


def test_our_defaults_are_not_the_authors():
    config = MLTFRConfig()
    assert (config.keys, config.placement, config.token_scale, config.expert_dropout, config.eval_noise,
            config.trainable_tables, config.round_selection) == ("user", "input", "straight_through", 0.0, False,
                                                                  False, "both")


def test_plateau_proof_stopping_rules_and_their_keys():
    plain = TrainConfig(patience=10, patience_relative=0.0)
    assert not plain.should_stop(19, 10) and plain.should_stop(20, 10) and plain.should_stop(40, 30)
    assert TrainConfig().patience_relative == 1.0  # the default (README "Early stopping")
    assert not TrainConfig(patience=10).should_stop(40, 30) and TrainConfig(patience=10).should_stop(60, 30)
    relative = TrainConfig(patience=10, patience_relative=1.0)
    assert relative.should_stop(20, 10) and not relative.should_stop(59, 30) and relative.should_stop(60, 30)
    floor = TrainConfig(patience=10, min_epochs=30)
    assert not floor.should_stop(13, 3) and floor.should_stop(30, 3)
    assert {"patience_relative", "min_epochs"}.isdisjoint(plain.to_dict())  # runs stored before keep their keys
    assert relative.to_dict()["patience_relative"] == 1.0 == TrainConfig().to_dict()["patience_relative"]
    from mltfrkit.runs import RunSpec, authors_configuration, spec_from_config

    old_config = {"dataset": "x", "backbone": "sasrec", "model": {}, "train": plain.to_dict()}
    assert spec_from_config(old_config).train.patience_relative == 0.0  # a stored key without it: plain
    assert authors_configuration(RunSpec("x")).train.patience_relative == 0.0
    with pytest.raises(ValueError, match="patience_relative"):
        TrainConfig(patience_relative=-1.0)


def test_relative_patience_trains_on_past_a_plateau(tiny_split):
    torch.manual_seed(0)
    model = build_backbone("sasrec", tiny_split.n_items, max_len=MAX_LEN)
    result = fit(model, tiny_split, TrainConfig(epochs=6, patience=1, min_epochs=5, batch_size=16, device="cpu"),
                 progress=False, log=None)
    assert len(result["epochs"]) >= 5  # patience 1 alone may stop at epoch 2; the floor keeps it going


def test_grouped_batch_keys_match_each_group_attended_alone_at_real_positions():
    """A prefix-encoded batch has more windows than the authors' batch of samples: windows are dealt round-robin
    into groups of at most ``eval_batch`` and a window attends over its group's tokens only, exactly as if each
    group were its own batch; padding positions get nothing."""
    from mltfrkit.mltfr.integration import CrossAttentionIntegration, PickedTokens

    torch.manual_seed(0)
    B, L, K, group = 11, 6, 3, 4
    integration = CrossAttentionIntegration(16, 12, 4, 0.0)
    E = torch.randn(B, L, 16)
    mask = torch.arange(L).flip(0).unsqueeze(0) < torch.randint(1, L + 1, (B, 1))  # left-padded
    table = torch.randn(30, 12, requires_grad=True)
    rows, weights = torch.randint(0, 30, (B, K)), torch.rand(B, K)
    out = integration(E, PickedTokens(table, rows, weights), group, mask)
    n_groups = 3  # ceil(11 / 4): row i in group i % 3, groups of 4, 4, 3
    for g in range(n_groups):
        members = torch.arange(g, B, n_groups)
        alone = integration(E[members], PickedTokens(table, rows[members], weights[members]), True)
        real = mask[members]
        assert torch.allclose(out[members][real], alone[real], atol=1e-5)
        assert not out[members][~real].any()
    assert torch.equal(integration(E, PickedTokens(table, rows, weights), B, mask),
                       integration(E, PickedTokens(table, rows, weights), True))  # one group: the old path
    table_grad = torch.autograd.grad(out.square().sum(), table)[0]
    assert table_grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask"):
        integration(E, PickedTokens(table, rows, weights), group)


def test_batch_keys_over_more_rows_than_eval_batch_are_shared_within_groups_only():
    """The plug-in under the authors' keys with 24 rows (a prefix-encoded batch's windows) and eval_batch 8: a row's
    output must not depend on rows outside its group (before, every window read every window's tokens: a
    (W x L) x (W x K) attention that ran a Pantry FMLP-Rec run out of 24 GB)."""
    torch.manual_seed(0)
    config = MLTFRConfig(top_k=2, keys="batch", noise="none", attn_dropout=0.0, eval_batch=8)
    plugin = MLTFRPlugin(synthetic_tables(), D, config)
    plugin.train()
    W, L = 24, MAX_LEN
    E = torch.randn(W, L, D)
    mask = torch.ones(W, L, dtype=torch.bool)
    out = plugin(E, mask)
    other = E.clone()
    other[1::3] = torch.randn_like(other[1::3])  # groups: i % 3; change every window of group 1
    changed = plugin(other, mask)
    assert torch.allclose(out[0::3], changed[0::3], atol=1e-6) and torch.allclose(out[2::3], changed[2::3], atol=1e-6)
    assert not torch.allclose(out[1::3], changed[1::3], atol=1e-4)
