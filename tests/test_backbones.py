"""Every registered backbone: shapes, masks, causality, batch independence, the hook, learning."""

from __future__ import annotations

import pytest
import torch

from mltfrkit.models import BACKBONES, build_backbone, backbone_class
from mltfrkit.train.trainer import training_sequences

NAMES = sorted(BACKBONES)
N_ITEMS, MAX_LEN = 30, 12


def small(name, **kw):
    torch.manual_seed(0)
    return build_backbone(name, N_ITEMS, max_len=MAX_LEN, **kw)


def histories(batch=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, N_ITEMS + 1, (batch, MAX_LEN), generator=g)
    for row in range(batch):
        seqs[row, : row * 2] = 0  # different amounts of left padding
    return seqs


@pytest.mark.parametrize("name", NAMES)
def test_scores_shape_and_padding(name):
    model = small(name).eval()
    scores = model.score_all(histories())
    assert scores.shape == (5, N_ITEMS + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", NAMES)
def test_user_scores_do_not_depend_on_batch(name):
    model = small(name).eval()
    seqs = histories()
    together = model.score_all(seqs)
    others = seqs.clone()
    others[1:] = histories(seed=7)[1:]
    alone = model.score_all(seqs[:1])
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    assert torch.allclose(together[0], model.score_all(others)[0], atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if not backbone_class(n).bidirectional])
def test_causal_output_ignores_later_items(name):
    model = small(name).eval()
    seqs = histories()
    changed = seqs.clone()
    changed[:, 8:] = (changed[:, 8:] % N_ITEMS) + 1
    before, after = model.encode(seqs), model.encode(changed)
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-5)
    assert not torch.allclose(before[:, 8:], after[:, 8:], atol=1e-5)


class RecordingPlugin(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.full((d,), 0.5))
        self.calls = 0

    def forward(self, E, mask, seqs=None):
        self.calls += 1
        assert E.shape[:2] == mask.shape and mask.dtype == torch.bool
        return self.shift * mask.unsqueeze(-1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("placement", ["input", "after_first_block"])
def test_plugin_hook_changes_output_and_trains(name, placement):
    model = small(name).eval()
    seqs = histories()
    base = model.score_all(seqs)
    plugin = RecordingPlugin(model.config.hidden_size)
    model.attach_plugin(plugin, placement)
    plugged = model.score_all(seqs)
    assert plugin.calls == 1 and not torch.allclose(base, plugged)
    model.train()
    train = torch.cat([torch.zeros(5, 1, dtype=torch.long), histories()], 1)
    model.loss(train, torch.Generator().manual_seed(0)).backward()
    assert plugin.shift.grad is not None and plugin.shift.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_loss(name, tiny_split):
    torch.manual_seed(0)  # before building: the initial weights must not depend on which tests ran first
    model = build_backbone(name, tiny_split.n_items, max_len=MAX_LEN)
    data = training_sequences(tiny_split, MAX_LEN)
    gen = torch.Generator().manual_seed(0)
    model.eval()  # measure without dropout noise

    def full_loss():
        with torch.no_grad():
            return float(model.loss(data, torch.Generator().manual_seed(123)))

    before = full_loss()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):  # 32 steps: the cloze models (masked inputs) need more than a couple of passes
        for start in range(0, len(data), 16):
            loss = model.loss(data[start:start + 16], gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    after = full_loss()
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("loss", ["bce", "bpr", "ce"])
def test_both_losses_finite(name, loss):
    model = small(name, loss=loss).train()
    train = torch.cat([torch.zeros(5, 1, dtype=torch.long), histories()], 1)
    value = model.loss(train, torch.Generator().manual_seed(0))
    assert torch.isfinite(value)
    value.backward()


def test_unknown_backbone_lists_valid():
    with pytest.raises(KeyError, match="Valid backbones: .*sasrec"):
        build_backbone("transformer9000", 10)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="no option"):
        build_backbone("sasrec", 10, n_layerz=3)


def test_bpr_is_the_pairwise_loss_on_the_bce_negatives():
    """BPR scores the same sampled negative as BCE but as one margin: -log sigmoid(pos - neg)."""
    from mltfrkit.models.base import sample_negatives

    model = small("sasrec", loss="bpr").eval()
    train = torch.cat([torch.zeros(5, 1, dtype=torch.long), histories()], 1)
    inputs, targets = train[:, :-1], train[:, 1:]
    valid = targets > 0
    negatives = sample_negatives(targets, train, model.n_items, torch.Generator().manual_seed(4))
    hidden = model.encode(inputs)
    pos = model.pair_scores(hidden[valid], targets[valid])
    neg = model.pair_scores(hidden[valid], negatives[valid])
    expected = torch.nn.functional.softplus(neg - pos).mean()
    assert torch.allclose(model.loss(train, torch.Generator().manual_seed(4)), expected)
    model.config.loss = "bce"
    assert not torch.allclose(model.loss(train, torch.Generator().manual_seed(4)), expected)


def test_unknown_loss_lists_valid():
    with pytest.raises(ValueError, match="bce.*bpr.*ce"):
        small("sasrec", loss="hinge")


@pytest.mark.parametrize("name,option,value", [("sasrec", "max_len", 0), ("sasrec", "hidden_size", 0),
                                               ("bert4rec", "mask_ratio", 0.0), ("sasrec", "dropout", 1.0),
                                               ("cl4srec", "temperature", 0.0), ("bsarec", "alpha", 1.5),
                                               ("fmlprec", "n_layers", 0), ("sasrec", "dropout", float("nan"))])
def test_out_of_range_options_are_refused_naming_them(name, option, value):
    """max_len=0 was an IndexError, hidden_size=0 a ZeroDivisionError, deep inside torch."""
    from mltfrkit.models import make_config

    with pytest.raises(ValueError, match=rf"{option}=.* out of range.*--set {option}="):
        make_config(name, **{option: value})


def test_heads_must_divide_hidden_size():
    from mltfrkit.models import make_config

    with pytest.raises(ValueError, match="not divisible by n_heads=3"):
        make_config("sasrec", hidden_size=64, n_heads=3)
