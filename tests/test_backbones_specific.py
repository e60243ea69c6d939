"""What makes each backbone itself: BERT4Rec/LinRec's [MASK] prediction, BSARec's mixing, FMLP-Rec's
filter, LinRec's per-user linear attention, CL4SRec's augmentations and InfoNCE, prefix encoding of
the frequency models, and plug-in tables that no backbone ever re-initialises."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mltfrkit.models import BACKBONES, build_backbone
from mltfrkit.models.base import prefix_windows
from mltfrkit.models.cl4srec import (
    CROP,
    MASK,
    REORDER,
    crop,
    info_nce,
    mask_items,
    reorder,
)
from mltfrkit.models.linrec import L2LinearAttention

N_ITEMS, MAX_LEN, D = 30, 12, 16


def small(name, **kw):
    torch.manual_seed(0)
    kw.setdefault("hidden_size", D)
    return build_backbone(name, N_ITEMS, max_len=MAX_LEN, **kw)


def histories(batch=5, seed=1):
    """Left-padded rows with 0, 2, 4, ... padding positions (all padding from row 6 on)."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, N_ITEMS + 1, (batch, MAX_LEN), generator=g)
    for row in range(batch):
        seqs[row, : row * 2] = 0
    return seqs


def user_sequences(batch, seed):
    """Left-padded rows of random lengths 1..MAX_LEN."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, N_ITEMS + 1, (batch, MAX_LEN), generator=g)
    lengths = torch.randint(1, MAX_LEN + 1, (batch,), generator=g)
    return seqs.masked_fill(torch.arange(MAX_LEN) < (MAX_LEN - lengths).unsqueeze(1), 0)


# -- bidirectional (cloze) models: prediction at an appended [MASK] -------------------------------

@pytest.mark.parametrize("name", ["bert4rec", "linrec"])
def test_cloze_models_predict_at_the_mask_slot(name):
    model = small(name).eval()
    assert model.bidirectional
    seqs = histories()
    fed = model.eval_input(seqs)
    assert fed.shape == seqs.shape
    assert (fed[:, -1] == N_ITEMS + 1).all() and torch.equal(fed[:, :-1], seqs[:, 1:])
    assert model.item_emb.weight.shape[0] == N_ITEMS + 2
    assert model.item_embeddings().shape == (N_ITEMS + 1, D)
    scores = model.score_all(seqs)
    assert scores.shape == (5, N_ITEMS + 1)
    logits = model.output_logits(model.encode(fed)[:, -1])
    assert torch.allclose(scores[:, 1:], logits[:, 1:], atol=1e-5)
    with torch.no_grad():
        model.item_emb.weight[N_ITEMS + 1] += torch.randn(D)  # the [MASK] row: never a candidate, only input
    changed = model.score_all(seqs)
    assert not torch.allclose(scores[:, 1:], changed[:, 1:], atol=1e-4)


@pytest.mark.parametrize("name", ["bert4rec", "linrec"])
def test_cloze_training_masks_with_the_generator(name):
    model = small(name, mask_ratio=0.5).eval()
    items = user_sequences(64, seed=3)
    masked = model.cloze_mask(items, torch.Generator().manual_seed(5))
    assert torch.equal(masked, model.cloze_mask(items, torch.Generator().manual_seed(5)))
    assert not masked[items == 0].any()
    assert 0.4 < masked.sum() / (items > 0).sum() < 0.6
    train = torch.cat([torch.zeros(64, 1, dtype=torch.long), items], 1)
    one = model.loss(train, torch.Generator().manual_seed(9))
    assert torch.equal(one, model.loss(train, torch.Generator().manual_seed(9)))
    bce = small(name, loss="bce").eval().loss(train, torch.Generator().manual_seed(9))
    assert torch.isfinite(bce)


def test_output_head_scores_agree_with_pair_scores():
    model = small("bert4rec").eval()
    hidden = torch.randn(7, D)
    items = torch.randint(1, N_ITEMS + 1, (7,))
    full = model.output_logits(hidden).gather(1, items[:, None])[:, 0]
    assert torch.allclose(full, model.pair_scores(hidden, items), atol=1e-5)


# -- BSARec ----------------------------------------------------------------------------------------

def test_bsarec_alpha_zero_is_its_attention_path():
    model = small("bsarec", alpha=0.0).eval()
    attention_only = copy.deepcopy(model)
    attention_only.mixers = nn.ModuleList(mixer.attention for mixer in attention_only.mixers)
    seqs = histories()
    assert torch.allclose(model.score_all(seqs), attention_only.score_all(seqs), atol=1e-6)
    full = small("bsarec", alpha=0.5).eval()
    full.load_state_dict(model.state_dict())
    assert not torch.allclose(full.score_all(seqs), model.score_all(seqs), atol=1e-4)


def test_bsarec_frequency_layer_splits_low_and_high():
    model = small("bsarec", c=5)
    layer = model.mixers[0].frequency
    assert layer.bins == 3 and layer.sqrt_beta.shape == (D,)
    x = torch.randn(2, MAX_LEN, D)
    with torch.no_grad():
        layer.sqrt_beta.fill_(1.0)  # beta = 1: low + high = x
        assert torch.allclose(layer.mix(x, None, None), x, atol=1e-5)
        layer.sqrt_beta.zero_()  # beta = 0: only the low-pass part, whose spectrum stops after 3 bins
        low = layer.mix(x, None, None)
    spectrum = torch.fft.rfft(low, dim=1, norm="ortho")
    assert spectrum[:, 3:].abs().max() < 1e-4 and spectrum[:, :3].abs().max() > 1e-2


# -- FMLP-Rec --------------------------------------------------------------------------------------

def test_fmlprec_filter_is_complex_of_half_spectrum_shape():
    model = small("fmlprec")
    for mixer in model.mixers:
        weight = mixer.complex_weight
        assert weight.shape == (MAX_LEN // 2 + 1, D) and weight.is_complex()
        assert weight.abs().mean() < 0.1  # N(0, 0.02) initialisation
    x = torch.randn(3, MAX_LEN, D)
    with torch.no_grad():
        model.mixers[0].weight.copy_(torch.view_as_real(torch.ones(MAX_LEN // 2 + 1, D, dtype=torch.complex64)))
    assert torch.allclose(model.mixers[0].mix(x, None, None), x, atol=1e-5)  # all-pass filter = identity


@pytest.mark.parametrize("name", ["fmlprec", "bsarec"])
def test_frequency_models_encode_each_position_from_its_prefix(name):
    model = small(name).eval()
    seqs = histories()
    hidden = model.encode(seqs)
    assert torch.allclose(hidden[:, -1], model.user_representation(seqs), atol=1e-5)
    for t in (5, 9):
        prefix = torch.cat([torch.zeros(5, MAX_LEN - 1 - t, dtype=torch.long), seqs[:, : t + 1]], 1)
        rows = seqs[:, t] > 0
        assert torch.allclose(hidden[rows, t], model.user_representation(prefix)[rows], atol=1e-5)
    assert (hidden[seqs == 0] == 0).all()


@pytest.mark.parametrize("name", ["fmlprec", "bsarec"])
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("placement", [None, "input", "after_first_block", "from_input_after_first_block"])
def test_encoding_the_last_position_only_gives_the_whole_windows_last_position(name, n_layers, placement):
    """What a prefix window is used for: its last hidden state, from a last block whose feed-forward runs on
    that position alone; the same value as the whole window's, with a plug-in in any placement."""
    from mltfrkit.mltfr import MLTFRConfig, MLTFRPlugin
    from mltfrkit.models.base import PostNormBackbone

    model = small(name, n_layers=n_layers)
    if placement:
        g = torch.Generator().manual_seed(0)
        plugin = MLTFRPlugin([("a", torch.randn(40, 8, generator=g), None), ("b", torch.randn(30, 8, generator=g), None)],
                             D, MLTFRConfig(top_k=2, placement=placement))
        model.attach_plugin(plugin, placement)
    model.eval()
    seqs = histories()
    whole = PostNormBackbone.encode(model, seqs)
    last = PostNormBackbone.encode(model, seqs, last_only=True)
    assert last.shape == (5, 1, D)
    assert torch.allclose(last[:, 0], whole[:, -1], atol=1e-6)
    assert torch.allclose(model.user_representation(seqs), whole[:, -1], atol=1e-6)


def test_prefix_windows():
    seqs = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    windows = prefix_windows(seqs, seqs > 0)
    assert windows.tolist() == [[0, 0, 0, 0, 3], [0, 0, 0, 3, 4], [0, 0, 3, 4, 5],
                                [0, 0, 0, 0, 1], [0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]


# -- LinRec ----------------------------------------------------------------------------------------

def test_linear_attention_matches_its_quadratic_form_and_never_mixes_users():
    torch.manual_seed(0)
    layer = L2LinearAttention(D, 2, 0.0).eval()
    x = torch.randn(4, MAX_LEN, D)
    mask = torch.ones(4, MAX_LEN, dtype=torch.bool)
    mask[1, :5] = False
    out = layer.mix(x, mask, None)
    # explicit (Q' K'^T) V / sqrt(h), per user and head
    q, k, v = layer.qkv(x).view(4, MAX_LEN, 3, 2, D // 2).permute(2, 0, 3, 1, 4)
    q = torch.nn.functional.normalize(torch.nn.functional.elu(q), dim=-1)
    k = torch.nn.functional.normalize(torch.nn.functional.elu(k), dim=-1) * mask[:, None, :, None]
    explicit = ((q @ k.transpose(-2, -1)) @ v / math.sqrt(D // 2)).transpose(1, 2).reshape(4, MAX_LEN, D)
    assert torch.allclose(out, layer.out(explicit), atol=1e-5)
    # each user alone gives the same output as in the batch; other users' changes do not matter
    for row in range(4):
        assert torch.allclose(out[row], layer.mix(x[row:row + 1], mask[row:row + 1], None)[0], atol=1e-5)
    other = x.clone()
    other[1:] = torch.randn(3, MAX_LEN, D)
    assert torch.allclose(out[0], layer.mix(other, mask, None)[0], atol=1e-5)
    # padding keys are ignored: changing the padded positions' inputs leaves the real ones unchanged
    padded = x.clone()
    padded[1, :5] = torch.randn(5, D)
    assert torch.allclose(out[1, 5:], layer.mix(padded, mask, None)[1, 5:], atol=1e-5)


def test_linrec_model_never_mixes_users_in_training_mode_without_dropout():
    model = small("linrec", dropout=0.0).train()
    seqs = histories()
    alone = model.encode(seqs[:1])
    others = seqs.clone()
    others[1:] = histories(seed=11)[1:]
    assert torch.allclose(model.encode(seqs)[0], alone[0], atol=1e-5)
    assert torch.allclose(model.encode(others)[0], alone[0], atol=1e-5)


# -- CL4SRec ---------------------------------------------------------------------------------------

def _rows(seqs):
    return [row[row > 0].tolist() for row in seqs]


def _left_padded(seqs):
    valid = seqs > 0
    return bool((valid.int().diff(dim=1) >= 0).all())  # once an item appears, no padding follows


def test_cl4srec_augmentations_keep_lengths_and_ids_valid():
    seqs = user_sequences(40, seed=4)
    g = torch.Generator().manual_seed(0)
    lengths = [len(r) for r in _rows(seqs)]

    cropped = crop(seqs, 0.6, g)
    assert _left_padded(cropped)
    for original, view, n in zip(_rows(seqs), _rows(cropped), lengths):
        k = max(1, math.floor(0.6 * n))
        assert len(view) == k
        assert any(original[s:s + k] == view for s in range(n - k + 1))  # a contiguous run

    masked = mask_items(seqs, 0.3, N_ITEMS + 1, g)
    assert _left_padded(masked) and torch.equal(masked > 0, seqs > 0)
    for original, view, n in zip(_rows(seqs), _rows(masked), lengths):
        hidden = [i for i, item in enumerate(view) if item == N_ITEMS + 1]
        assert len(hidden) == math.floor(0.3 * n)
        assert all(view[i] == original[i] for i in range(n) if i not in hidden)

    shuffled = reorder(seqs, 0.6, g)
    assert torch.equal(shuffled > 0, seqs > 0)
    changed = 0
    for original, view, n in zip(_rows(seqs), _rows(shuffled), lengths):
        assert sorted(view) == sorted(original)
        differ = [i for i in range(n) if view[i] != original[i]]
        if differ:
            changed += 1
            assert differ[-1] - differ[0] < math.floor(0.6 * n)  # only inside one run of floor(beta n)
    assert changed > 10

    for view in (cropped, masked, shuffled):
        assert view.min() >= 0 and view.max() <= N_ITEMS + 1 and view.shape == seqs.shape


def test_cl4srec_views_use_two_different_augmentations_from_the_generator():
    model = small("cl4srec")
    seqs = user_sequences(30, seed=2)
    one, two = model.views(seqs, torch.Generator().manual_seed(1))
    again = model.views(seqs, torch.Generator().manual_seed(1))
    assert torch.equal(one, again[0]) and torch.equal(two, again[1])
    assert not torch.equal(one, model.views(seqs, torch.Generator().manual_seed(2))[0])
    methods = torch.tensor([CROP, MASK, REORDER] * 10)
    by_method = model.augment(seqs, methods, torch.Generator().manual_seed(3))
    assert ((by_method[methods == MASK] == N_ITEMS + 1).any(1) | ((seqs[methods == MASK] > 0).sum(1) < 4)).all()
    cropped_lengths, lengths = (by_method[methods == CROP] > 0).sum(1), (seqs[methods == CROP] > 0).sum(1)
    assert ((cropped_lengths < lengths) | (lengths == 1)).all()


def test_info_nce_has_gradient_and_decreases():
    torch.manual_seed(0)
    a = torch.randn(8, D, requires_grad=True)
    b = (a.detach() + torch.randn(8, D)).requires_grad_(True)
    loss = info_nce(a, b, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    # 2N - 2 negatives: identical pairs far from the rest give ~0; a random pairing gives ~log(2N - 1)
    pairs = torch.eye(8, D) * 20
    assert info_nce(pairs, pairs, 1.0) < 1e-3
    model = small("cl4srec").train()
    seqs = user_sequences(16, seed=5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for step in range(15):
        loss = model.contrastive_loss(seqs, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        values.append(float(loss.detach()))
        opt.step()
    assert sum(values[-3:]) < sum(values[:3])


def test_cl4srec_loss_adds_the_weighted_contrastive_term():
    seqs = torch.cat([torch.zeros(5, 1, dtype=torch.long), histories()], 1)
    plain = small("cl4srec", cl_weight=0.0).eval()
    weighted = small("cl4srec", cl_weight=0.5).eval()
    g = lambda: torch.Generator().manual_seed(0)
    nce = weighted.contrastive_loss(seqs[:, -MAX_LEN:], _after_main_loss(weighted, seqs))
    assert torch.allclose(weighted.loss(seqs, g()), plain.loss(seqs, g()) + 0.5 * nce, atol=1e-5)


def _after_main_loss(model, seqs):
    """The generator in the state the contrastive term sees it: after the next-item loss's draws."""
    generator = torch.Generator().manual_seed(0)
    model.next_item_loss(model.encode(seqs[:, :-1]), seqs[:, 1:], seqs, generator)
    return generator


# -- every backbone: a plug-in's own tables are never re-initialised --------------------------------

class TablePlugin(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.table = nn.Embedding(50, d)
        self.table.weight.requires_grad_(False)  # a frozen LLM token table
        with torch.no_grad():
            self.table.weight.copy_(torch.arange(50 * d, dtype=torch.float).view(50, d) / 100.0)
        self.proj = nn.Linear(d, d)

    def forward(self, E, mask, seqs=None):
        return self.proj(self.table.weight[:1]).expand_as(E) * mask.unsqueeze(-1).to(E.dtype)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_plugin_tables_are_never_touched(name):
    model = small(name)
    plugin = TablePlugin(D)
    before = plugin.table.weight.detach().clone()
    model.attach_plugin(plugin, "after_first_block")
    small(name)  # building another model re-initialises nothing outside itself
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train = torch.cat([torch.zeros(5, 1, dtype=torch.long), histories()], 1)
    loss = model.loss(train, torch.Generator().manual_seed(0))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.eval().score_all(histories())
    restored = small(name)
    restored.attach_plugin(TablePlugin(D), "after_first_block")
    restored.load_state_dict(model.state_dict())
    assert torch.equal(plugin.table.weight, before)
    assert torch.equal(restored.plugin.table.weight, before)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_all_padding_input_is_finite(name):
    model = small(name).eval()
    empty = torch.zeros(2, MAX_LEN, dtype=torch.long)
    assert model.encode(empty).shape == (2, MAX_LEN, D)
    assert torch.isfinite(model.score_all(empty)[:, 1:]).all()
