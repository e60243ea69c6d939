"""The MLTFR plug-in on synthetic token tables: selection, gradients, determinism, batch
independence, Fisher, consensus, frozen tables, two rounds, TE/RE."""

from __future__ import annotations

import copy

import pytest
import torch

from mltfrkit.mltfr import (ItemTokenInjection, MLTFRConfig, MLTFRPlugin, TokenFilter, build_consensus, expert_fisher,
                            fisher_merge, fisher_samples, train_two_rounds)
from mltfrkit.models import BACKBONES, build_backbone
from mltfrkit.train import TrainConfig

N_ITEMS, MAX_LEN, D = 30, 12, 64


def synthetic_tables(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [("wide", torch.randn(200, 24, generator=g), None),
            ("narrow-a", torch.randn(300, 16, generator=g), None),
            ("narrow-b", torch.randn(150, 16, generator=g), torch.arange(0, 150, 2))]


def model_with_plugin(backbone="sasrec", seed=0, **options):
    torch.manual_seed(seed)
    model = build_backbone(backbone, N_ITEMS, max_len=MAX_LEN)
    plugin = MLTFRPlugin(synthetic_tables(), D, MLTFRConfig(**{"top_k": 3, **options}))
    model.attach_plugin(plugin, plugin.config.placement)
    return model, plugin


def seeded_builder(n_items, config):
    """``build()`` for ``train_two_rounds``: a freshly seeded SASRec with the plug-in on synthetic tables."""
    def build():
        torch.manual_seed(0)
        model = build_backbone("sasrec", n_items, max_len=MAX_LEN)
        plugin = MLTFRPlugin(synthetic_tables(), D, config)
        model.attach_plugin(plugin)
        return model, plugin
    return build


def sequences(batch=6, seed=1, length=MAX_LEN):
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, N_ITEMS + 1, (batch, length), generator=g)
    for row in range(batch):
        seqs[row, : row] = 0
    return seqs


def E_and_mask(batch=6):
    seqs = sequences(batch)
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, MAX_LEN, D, generator=g, requires_grad=True), seqs > 0


@pytest.mark.parametrize("noise", ["paper", "tempered", "none"])
def test_straight_through_forward_is_the_hard_selection(noise):
    table = torch.randn(100, 8)
    filt = TokenFilter(table, D, top_k=4, noise=noise).train()
    E, mask = E_and_mask()
    sel = filt(E, mask, generator=torch.Generator().manual_seed(0))
    assert sel.tokens.shape == (6, 4, 8) and sel.token_ids.shape == (6, 4)
    assert torch.equal(sel.weights.detach(), torch.ones(6, 4))
    assert torch.equal(sel.tokens.detach(), table[sel.token_ids])
    assert len(set(sel.token_ids[0].tolist())) == 4  # K distinct tokens


@pytest.mark.parametrize("k", [1, 10])
def test_align_projection_receives_gradient(k):
    filt = TokenFilter(torch.randn(500, 8), D, top_k=k).train()
    E, mask = E_and_mask()
    sel = filt(E, mask, generator=torch.Generator().manual_seed(0))
    (sel.tokens * torch.randn_like(sel.tokens)).sum().backward()
    assert filt.align.weight.grad is not None and filt.align.weight.grad.abs().sum() > 0
    assert E.grad.abs().sum() > 0  # and the interest vector, hence the backbone


def test_evaluation_selects_deterministic_top_k_by_cosine():
    table = torch.randn(300, 8)
    filt = TokenFilter(table, D, top_k=5).eval()
    E, mask = E_and_mask()
    with torch.no_grad():
        first, second = filt(E, mask), filt(E, mask)
        s = filt.similarity(E, mask)
    assert torch.equal(first.token_ids, second.token_ids)
    assert torch.equal(first.token_ids, s.topk(5, dim=-1).indices)
    assert torch.allclose(first.scores, s.topk(5, dim=-1).values)


def test_prefilter_maps_back_to_full_vocabulary_ids():
    table = torch.randn(100, 8)
    keep = torch.arange(50, 100)
    filt = TokenFilter(table, D, top_k=3, keep_ids=keep).eval()
    E, mask = E_and_mask()
    with torch.no_grad():
        sel = filt(E, mask)
    assert (sel.token_ids >= 50).all()
    assert torch.equal(sel.tokens, table[sel.token_ids])


def test_aligned_vocabulary_computed_once_per_evaluation():
    model, plugin = model_with_plugin()
    model.eval()
    calls = []
    plugin.experts[0].filter.align.register_forward_hook(lambda *a: calls.append(1))
    for seed in range(4):
        model.score_all(sequences(seed=seed))
    assert len(calls) == 1
    model.train()
    model.loss(torch.cat([torch.zeros(6, 1, dtype=torch.long), sequences()], 1)).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    model.score_all(sequences())
    assert len(calls) == 3  # recomputed in training, and again after the weights changed


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_user_scores_independent_of_batch_and_deterministic(name):
    model, plugin = model_with_plugin(name)
    model.eval()
    seqs = sequences()
    together = model.score_all(seqs)
    assert torch.equal(together, model.score_all(seqs))
    alone = model.score_all(seqs[:1])
    others = seqs.clone()
    others[1:] = sequences(seed=9)[1:]
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert torch.allclose(together[0], model.score_all(others)[0], atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("placement", ["input", "after_first_block"])
def test_training_step_finite_on_every_backbone(name, placement):
    model, plugin = model_with_plugin(name, placement=placement)
    model.train()
    loss = model.loss(torch.cat([torch.zeros(6, 1, dtype=torch.long), sequences()], 1),
                      torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(e.filter.align.weight.grad is not None for e in plugin.experts)


def test_padding_positions_get_no_augmentation():
    model, plugin = model_with_plugin()
    plugin.eval()
    E, mask = E_and_mask()
    out = plugin(E, mask)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))


def test_fisher_matches_brute_force_loop():
    model, plugin = model_with_plugin()
    train = [s.numpy() for s in sequences(batch=10, length=MAX_LEN + 1)]
    histories, targets = fisher_samples(train, 10, MAX_LEN)
    for labels in ("observed", "sampled"):
        fast = expert_fisher(model, plugin, histories, targets, labels=labels, chunk=4)
        slow = expert_fisher(model, plugin, histories, targets, labels=labels, vectorise=False)
        for f, s in zip(fast, slow):
            for name in f:
                assert torch.allclose(f[name], s[name], rtol=1e-4, atol=1e-12), name
    # and against plain autograd, one sample at a time
    model.eval()
    manual = {n: torch.zeros_like(p) for n, p in plugin.experts[1].integration.named_parameters()}
    for history, target in zip(histories, targets):
        model.zero_grad()
        logits = model.output_logits(model.user_representation(history[None]))[0]
        logits = torch.cat([logits.new_full((1,), float("-inf")), logits[1:]])
        torch.log_softmax(logits, -1)[target].backward()
        for n, p in plugin.experts[1].integration.named_parameters():
            manual[n] += p.grad ** 2
    observed = expert_fisher(model, plugin, histories, targets)
    for n in manual:
        assert torch.allclose(observed[1][n], manual[n] / len(histories), rtol=1e-4, atol=1e-12), n


def test_consensus_is_fisher_weighted_average_of_same_width_experts():
    model, plugin = model_with_plugin()
    assert plugin.consensus_group() == [1, 2]  # the two 16-d experts, not the 24-d one
    fishers = [{n: torch.rand_like(p) for n, p in e.integration.named_parameters()} for e in plugin.experts]
    consensus = build_consensus(plugin, fishers)
    for name, param in consensus.integration.named_parameters():
        a = dict(plugin.experts[1].integration.named_parameters())[name]
        b = dict(plugin.experts[2].integration.named_parameters())[name]
        fa, fb = fishers[1][name], fishers[2][name]
        assert torch.allclose(param, (fa * a + fb * b) / (fa + fb))
        assert not param.requires_grad
    merged = fisher_merge([{"w": torch.tensor([1.0, 3.0])}, {"w": torch.tensor([3.0, 5.0])}],
                          [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 0.0])}])
    assert merged["w"].tolist() == [2.5, 4.0]  # zero Fisher everywhere: plain mean


def test_consensus_and_tables_unchanged_by_training():
    model, plugin = model_with_plugin()
    fishers = [{n: torch.ones_like(p) for n, p in e.integration.named_parameters()} for e in plugin.experts]
    plugin.set_consensus(build_consensus(plugin, fishers))
    frozen = copy.deepcopy(plugin.consensus.integration.state_dict())
    tables = [e.filter.vocab.clone() for e in plugin.experts]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(3):
        loss = model.loss(torch.cat([torch.zeros(6, 1, dtype=torch.long), sequences(seed=step)], 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in plugin.consensus.integration.state_dict().items():
        assert torch.equal(value, frozen[name]), name
    for expert, table in zip(plugin.experts, tables):
        assert torch.equal(expert.filter.vocab, table)
    assert not any("vocab" in key for key in model.state_dict())  # tables never enter checkpoints


def test_experts_share_one_table_tensor():
    table = torch.randn(100, 8)
    plugin = MLTFRPlugin([("a", table, None), ("a-again", table, None)], D, MLTFRConfig(top_k=2))
    assert plugin.experts[0].filter.vocab.data_ptr() == plugin.experts[1].filter.vocab.data_ptr() == table.data_ptr()


def test_two_rounds_build_consensus_and_freeze_it(tiny_split, tmp_path):
    config = MLTFRConfig(top_k=2, fisher_samples=16)
    build = seeded_builder(tiny_split.n_items, config)
    train = TrainConfig(epochs=2, batch_size=16, device="cpu")
    result = train_two_rounds(build, tiny_split, train, config, tmp_path, {"test": True}, progress=False, log=None)
    assert result["rounds"] == 2 and result["consensus"]["members"] == ["narrow-a", "narrow-b"]
    assert (tmp_path / "fisher.pt").exists() and (tmp_path / "round2" / "checkpoint.pt").exists()
    again = train_two_rounds(build, tiny_split, train, config, tmp_path, {"test": True}, progress=False, log=None)
    assert again["test"] == result["test"]  # resumed from the stored rounds, same numbers
    single = train_two_rounds(build, tiny_split, train, MLTFRConfig(top_k=2, consensus=False), None, {},
                              progress=False, log=None)
    assert single["rounds"] == 1


def test_te_and_re_rows():
    vocab = torch.randn(1000, 8) * torch.linspace(0.5, 3, 8) + 2.0
    te = ItemTokenInjection(N_ITEMS, vocab, None, D, assignment_seed=3)
    again = ItemTokenInjection(N_ITEMS, vocab, None, D, assignment_seed=3)
    assert torch.equal(te.item_tokens, again.item_tokens)
    assert torch.equal(te.item_tokens[1:], vocab[te.vocab_rows[1:]])
    assert len(set(te.vocab_rows[1:].tolist())) == N_ITEMS
    big_re = ItemTokenInjection(900, vocab, None, D, random_rows=True, assignment_seed=3)
    big_te = ItemTokenInjection(900, vocab, None, D, assignment_seed=3)
    assert big_re.item_tokens.shape == big_te.item_tokens.shape
    assert torch.allclose(big_re.item_tokens[1:].std(0), big_te.item_tokens[1:].std(0), rtol=0.15)
    assert torch.allclose(big_re.item_tokens[1:].mean(0), big_te.item_tokens[1:].mean(0), atol=0.3)
    model = build_backbone("sasrec", N_ITEMS, max_len=MAX_LEN)
    model.attach_plugin(te)
    model.eval()
    assert torch.isfinite(model.score_all(sequences())[:, 1:]).all()


def test_selection_diagnostic_orders_noise_modes():
    from mltfrkit.mltfr.diagnostics import selection_diagnostic

    model, plugin = model_with_plugin(top_k=2)
    g = torch.Generator().manual_seed(4)
    histories = [torch.randint(1, N_ITEMS + 1, (int(n),), generator=g).numpy()
                 for n in torch.randint(1, MAX_LEN + 1, (40,), generator=g)]
    table = selection_diagnostic(model, histories, seed=0)
    assert set(table["noise"]) == {"paper", "tempered", "none"} and len(table) == 3 * len(plugin.experts)
    by_mode = table.groupby("noise")["mean_percentile"].mean()
    for row in table[table["noise"] == "none"].itertuples():  # deterministic top-K: the K most similar tokens
        assert row.mean_percentile == pytest.approx(100 * (row.V - (row.K + 1) / 2) / row.V)
    assert by_mode["paper"] < by_mode["none"]
    assert ((table["vocab_fraction_selected"] > 0) & (table["vocab_fraction_selected"] <= 1)).all()


def test_load_trained_restores_selected_weights(tiny_split, tmp_path, monkeypatch):
    """A stored two-round run reloads with the same test scores, without retraining."""

    import mltfrkit.mltfr.tables as tables
    from mltfrkit.runs import RunSpec, load_trained, run_training
    from mltfrkit.train.metrics import evaluate

    fake = {"wide": torch.randn(200, 24), "narrow-a": torch.randn(300, 16), "narrow-b": torch.randn(150, 16)}
    monkeypatch.setattr(tables, "expert_sources", lambda llms, n: list(fake)[:n])
    monkeypatch.setattr(tables, "load_expert_table",
                        lambda name, *options: (fake[name], torch.arange(fake[name].shape[0])))
    monkeypatch.setattr(tables, "table_reference", lambda name: {"name": name, "sha256": "synthetic"})
    monkeypatch.setattr("mltfrkit.runs.load_dataset", lambda name, data_dir=None: tiny_split)
    spec = RunSpec("tiny", "sasrec", model={"max_len": MAX_LEN}, train=TrainConfig(epochs=2, batch_size=16),
                   plugin="mltfr", plugin_options={"n_experts": 3, "top_k": 2, "fisher_samples": 16})
    result = run_training(spec, root=tmp_path, progress=False, log=None)
    assert result["rounds"] == 2
    _, split, model = load_trained(result["run_dir"])
    assert model.plugin.consensus is not None
    hist, targets = split.eval_pairs("test")
    assert evaluate(model, hist, targets) == result["test"]


def test_bfloat16_precision_matches_float32_selection():
    torch.manual_seed(0)
    table = torch.randn(2000, 32)
    exact = TokenFilter(table, D, top_k=5).eval()
    fast = TokenFilter(table.bfloat16(), D, top_k=5).eval()
    fast.load_state_dict(exact.state_dict())
    E, mask = E_and_mask()
    with torch.no_grad():
        s_exact, s_fast = exact.similarity(E, mask), fast.similarity(E, mask)
    assert s_fast.dtype == torch.float32 and (s_exact - s_fast).abs().max() < 2e-2
    assert exact(E, mask).token_ids[:, 0].eq(fast(E, mask).token_ids[:, 0]).float().mean() >= 0.8
    fast.train()
    sel = fast(E, mask, generator=torch.Generator().manual_seed(0))
    assert sel.tokens.dtype == torch.float32
    sel.tokens.sum().backward()
    assert fast.align.weight.grad is not None and torch.isfinite(fast.align.weight.grad).all()


def test_expert_table_holds_only_kept_rows_and_filters_map_back(monkeypatch):
    """load_expert_table widens only the kept rows; a filter given those rows selects the same
    tokens, with the same full-vocabulary ids, as one given the whole table."""
    import numpy as np

    from mltfrkit.mltfr import tables

    full = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float16)

    class FakeTable:
        name, meta, matrix = "fake", {"sha256": "f"}, full

        def keep_mask(self, exclude):
            return np.arange(60) % 3 != 0  # every third token is "special"

    monkeypatch.setattr("mltfrkit.vocab.load_table", lambda name: FakeTable())
    monkeypatch.setattr(tables, "_SHARED", {})
    rows, keep = tables.load_expert_table("fake", ("special",), max_vocab=25)
    assert rows.shape == (25, 8) and len(keep) == 25 and (keep % 3 != 0).all()
    assert torch.equal(rows, torch.from_numpy(full[keep.numpy()].astype(np.float32)))
    assert tables.load_expert_table("fake", ("special",), max_vocab=25)[0] is rows  # shared, not copied

    whole = torch.from_numpy(full.astype(np.float32))
    torch.manual_seed(0)
    from_rows = TokenFilter(rows, D, top_k=3, keep_ids=keep).eval()
    torch.manual_seed(0)
    from_whole = TokenFilter(whole, D, top_k=3, keep_ids=keep).eval()
    assert from_rows.vocab.data_ptr() == rows.data_ptr()  # no per-filter copy
    E, mask = E_and_mask()
    with torch.no_grad():
        a, b = from_rows(E, mask), from_whole(E, mask)
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.tokens, whole[a.token_ids])


def test_gumbel_noise_has_the_gumbel_distribution():
    """The sampler was rewritten for speed (two logs of uniforms instead of exponential_): it must
    still draw Gumbel(0, 1), whose CDF is exp(-exp(-x)), mean Euler's gamma and variance pi^2 / 6."""
    from mltfrkit.mltfr.filter import gumbel_like

    draws = gumbel_like(torch.empty(400, 1000), torch.Generator().manual_seed(0)).flatten().double()  # float32, as trained
    assert abs(draws.mean().item() - 0.5772157) < 0.01
    assert abs(draws.var().item() - torch.pi ** 2 / 6) < 0.02
    ordered = draws.sort().values
    empirical = torch.arange(1, len(ordered) + 1, dtype=torch.float64) / len(ordered)
    kolmogorov_smirnov = (empirical - torch.exp(-torch.exp(-ordered))).abs().max().item()
    assert kolmogorov_smirnov < 0.004  # the 1% critical value for 400k draws is about 0.0026
    assert torch.isfinite(gumbel_like(torch.zeros(10_000), torch.Generator().manual_seed(1))).all()


def test_config_rejects_mistyped_choices_and_reads_one_class_name():
    assert MLTFRConfig(exclude_classes="special").exclude_classes == ("special",)
    for bad in ({"noise": "papr"}, {"precision": "float16"}, {"fisher_labels": "true"}, {"top_k": 0},
                {"max_vocab": 0}, {"exclude_classes": ("speshal",)}):
        with pytest.raises(ValueError):
            MLTFRConfig(**bad)


def picked(V, batch, seed=0, K=3, d_llm=12):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, d_llm, generator=g, requires_grad=True)
    rows = torch.randint(0, V, (batch, K), generator=g)
    weights = torch.rand(batch, K, generator=g, requires_grad=True)
    return table, rows, weights


@pytest.mark.parametrize("V, batch", [(500, 4), (5, 40)])  # fewer picks than rows, and more
@pytest.mark.parametrize("batch_keys", [False, True])
@pytest.mark.parametrize("members", [1, 2])
def test_keys_and_values_of_picked_tokens_are_the_same_in_either_order(V, batch, batch_keys, members):
    """PickedTokens: the table projected once and its rows picked (more picks than rows in training: prefix
    windows) gives the output and gradients of the picks projected as tokens; with fewer picks, and at
    evaluation, it *is* that computation."""
    from mltfrkit.mltfr.integration import CrossAttentionIntegration, PickedTokens

    torch.manual_seed(0)
    integration = CrossAttentionIntegration(16, 12, 4, 0.0)
    parts = [picked(V, batch, seed) for seed in range(members)]
    E = torch.randn(batch, 7, 16)

    def picks():
        made = [PickedTokens(table, rows, weights * (1 + i)) for i, (table, rows, weights) in enumerate(parts)]
        return made[0] if members == 1 else PickedTokens.mean(made)

    leaves = [parts[0][0], parts[0][2], integration.key.weight, integration.value.bias]
    assert picks().table_first == (batch * 3 > V)
    with torch.no_grad():  # evaluation: the picks as tokens, whatever their number
        assert not picks().table_first
        assert torch.equal(integration(E, picks(), batch_keys), integration(E, picks().dense(), batch_keys))
    out = integration(E, picks(), batch_keys)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    reference = integration(E, picks().dense(), batch_keys)
    reference_grads = torch.autograd.grad(reference.square().sum(), leaves)
    if batch * 3 <= V:
        assert torch.equal(out, reference)
    assert torch.allclose(out, reference, atol=1e-6)
    for grad, expected in zip(grads, reference_grads):
        assert torch.allclose(grad, expected, atol=1e-5)
    table_first = picks().project(integration.key, flat=batch_keys)
    expected = integration.key(picks().dense().reshape(1, -1, 12) if batch_keys else picks().dense())
    assert torch.allclose(table_first, expected, atol=1e-6)


def test_the_consensus_expert_reads_its_members_tokens_made_once():
    """Round 2 with a consensus expert: each member's picked tokens are made once and shared by the member's own
    cross-attention and the consensus's mean (the computation before picks could be projected table-first)."""
    model, plugin = model_with_plugin()
    fishers = [{n: torch.ones_like(p) for n, p in e.integration.named_parameters()} for e in plugin.experts]
    plugin.set_consensus(build_consensus(plugin, fishers))
    plugin.record = True
    plugin.train()
    E, mask = E_and_mask()
    plugin(E, mask)
    selections = plugin.last["selections"]
    assert all(sel.tokens is sel.tokens for sel in selections)  # made once
    group = plugin.consensus.members
    mean = torch.stack([selections[m].tokens for m in group]).mean(0)
    from mltfrkit.mltfr.integration import PickedTokens

    assert torch.equal(PickedTokens.mean([selections[m].picks for m in group]).dense(), mean)


def right_aligned_windows(n_windows, length, seed=0):
    """(n, L) embeddings and masks like a prefix-encoded batch's: each window's real positions at its end; then
    a window with none and one with a hole (what the plug-in must also get right, though windows never are)."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randint(1, length + 1, (n_windows,), generator=g)
    mask = torch.arange(length).unsqueeze(0) >= (length - real).unsqueeze(1)
    mask[0] = False
    mask[1] = torch.arange(length) % 3 == 1
    return torch.randn(n_windows, length, D, generator=g), mask


@pytest.mark.parametrize("length", [MAX_LEN, 50, 53])  # buckets of one position, and of five (some padding in them)
@pytest.mark.parametrize("options", [
    {},  # ours: per-user keys, attention dropout
    {"expert_dropout": 0.1, "keys": "batch", "eval_batch": 8, "token_scale": "sum"},  # the authors': grouped keys
    {"expert_dropout": 0.1},
])
@pytest.mark.parametrize("consensus", [False, True])
def test_the_plugin_at_real_positions_only_is_the_full_computation(options, consensus, length):
    """A prefix-encoded backbone's windows (half of their positions leading padding) go through the plug-in at
    their real positions only: the same output and gradients as the whole windows, up to float rounding, with
    the same random numbers drawn (the generator ends in the same state), in training with every dropout on."""
    results = []
    for skip in (False, True):
        _, plugin = model_with_plugin(**options)
        if consensus:
            fishers = [{n: torch.ones_like(p) for n, p in e.integration.named_parameters()} for e in plugin.experts]
            plugin.set_consensus(build_consensus(plugin, fishers))
        plugin.train()
        E, mask = right_aligned_windows(40, length)
        E.requires_grad_(True)
        plugin.skip_leading_padding = skip
        torch.manual_seed(123)
        out = plugin(E, mask)
        state = torch.rand(8)  # the next draw: the stream went on from the same place
        leaves = [E] + [p for p in plugin.parameters() if p.requires_grad]
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, D)).square().sum(), leaves, allow_unused=True)
        results.append((out, state, grads))
    (full, full_state, full_grads), (real, real_state, real_grads) = results
    assert torch.equal(full_state, real_state)
    assert (full[~mask] == 0).all() and (real[~mask] == 0).all()
    assert full.abs().sum() > 0
    assert torch.allclose(real, full, atol=1e-5, rtol=1e-5)
    for got, expected in zip(real_grads, full_grads):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["fmlprec", "bsarec"])
def test_a_prefix_encoded_training_step_skips_the_plugins_leading_padding_and_nothing_else(backbone, monkeypatch):
    """Through the backbone: the training loss and every gradient are those of the whole windows (the shortcut
    replaced by the whole computation), the flag is on only while the windows are encoded, and evaluation
    (no windows) never takes the shortcut."""
    from mltfrkit.mltfr.plugin import MLTFRPlugin

    calls = []
    shortcut = MLTFRPlugin._forward_at_real_positions

    def counted(self, E, *args):
        calls.append(E.shape[0])
        return shortcut(self, E, *args)

    seqs = torch.tensor([[0] * 7 + list(range(1, 7)), list(range(3, 16)), [0] * 10 + [4, 9, 2]])
    results = []
    for skip in (False, True):
        monkeypatch.setattr(MLTFRPlugin, "_forward_at_real_positions", counted if skip else MLTFRPlugin._forward_whole)
        model, plugin = model_with_plugin(backbone)
        model.train()
        torch.manual_seed(7)
        loss = model.loss(seqs, torch.Generator().manual_seed(0))
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results.append((loss, grads))
        assert plugin.skip_leading_padding is False
    assert calls == [int((seqs[:, :-1] > 0).sum())]  # one call, on every window
    (full_loss, full_grads), (loss, grads) = results
    assert torch.allclose(loss, full_loss, atol=1e-6)
    for got, expected in zip(grads, full_grads):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    calls.clear()
    model.eval()
    with torch.no_grad():  # the windows without training: the whole computation, exactly
        encoded = model.encode(seqs[:, 1:])
        monkeypatch.setattr(MLTFRPlugin, "_forward_at_real_positions", MLTFRPlugin._forward_whole)
        assert torch.equal(encoded, model.encode(seqs[:, 1:]))
    assert not calls


def test_the_real_positions_flag_is_cleared_when_encoding_fails(monkeypatch):
    from mltfrkit.mltfr.plugin import MLTFRPlugin

    def fail(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(MLTFRPlugin, "_forward_at_real_positions", fail)
    model, plugin = model_with_plugin("fmlprec")
    model.train()
    with pytest.raises(RuntimeError, match="out of memory"):
        model.loss(torch.arange(1, MAX_LEN + 2).unsqueeze(0))
    assert plugin.skip_leading_padding is False
