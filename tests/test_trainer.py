from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mltfrkit.models import build_backbone
from mltfrkit.train import TrainConfig, fit, write_result
from mltfrkit.train.metrics import evaluate


class Interrupt(Exception):
    pass


def train_tiny(split, run_dir=None, epochs=4, interrupt_after=None, patience=10):
    torch.manual_seed(123)  # model init; fit() reseeds for training
    model = build_backbone("sasrec", split.n_items, max_len=12)

    def stop(entry):
        if interrupt_after and entry.epoch == interrupt_after:
            raise Interrupt

    config = TrainConfig(epochs=epochs, batch_size=16, seed=3, patience=patience, device="cpu")
    return fit(model, split, config, run_dir=run_dir, progress=False, on_epoch_end=stop, log=None), model


def test_interrupted_run_resumes_to_same_result(tiny_split, tmp_path):
    reference, ref_model = train_tiny(tiny_split)
    with pytest.raises(Interrupt):
        train_tiny(tiny_split, run_dir=tmp_path, interrupt_after=2)
    resumed, model = train_tiny(tiny_split, run_dir=tmp_path)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4]
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in reference["epochs"]]
    assert resumed["test"] == reference["test"]
    for (name, a), (_, b) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoint_of_other_config_is_refused(tiny_split, tmp_path):
    train_tiny(tiny_split, run_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="different configuration"):
        train_tiny(tiny_split, run_dir=tmp_path, epochs=2)


def test_best_weights_restored_and_test_once(tiny_split):
    result, model = train_tiny(tiny_split, epochs=6, patience=2)
    best = max(result["epochs"], key=lambda e: e["valid"]["NDCG@20"])
    assert result["best_epoch"] == best["epoch"]
    assert result["best_valid"] == best["valid"]
    hist, targets = tiny_split.eval_pairs("valid")
    assert evaluate(model, hist, targets) == best["valid"]  # the restored weights are the best epoch's
    assert set(result["test"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)}
    for key in ("config", "best_valid", "test", "epochs", "seconds", "versions"):
        assert key in result
    assert all("seconds" in e and "valid" in e for e in result["epochs"])


def test_result_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_result(path, {"a": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError):
        write_result(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_sasrec_learns_on_pantry(shared_data):
    """Integration: a few epochs on the real Pantry split beat popularity-free chance by far."""
    from mltfrkit.data import load_dataset

    split = load_dataset("Pantry", data_dir=shared_data)
    torch.manual_seed(0)
    model = build_backbone("sasrec", split.n_items)
    result = fit(model, split, TrainConfig(epochs=3, seed=0, device="cpu"), progress=False, log=None)
    chance = 20 / split.n_items
    assert result["test"]["HR@20"] > 5 * chance
    assert result["epochs"][-1]["loss"] < result["epochs"][0]["loss"]


@pytest.mark.parametrize("stride", [None, 1, 2, 3])
def test_all_windows_make_every_training_item_a_target_once(stride):
    from types import SimpleNamespace

    from mltfrkit.train.trainer import training_sequences, training_windows

    max_len = 3
    lengths = [1, 2, 3, 4, 5, 7, 8, 12]  # shorter than a window, exactly one, several, ragged ends
    histories = [np.arange(1, n + 1) + 100 * u for u, n in enumerate(lengths)]  # item = 100 * user + position + 1
    split = SimpleNamespace(train_sequences=lambda: histories)
    seqs, scored = training_windows(split, max_len, "all", stride)
    found = []  # (user, position in the history, items of context) per scored target
    for row, mask in zip(seqs.tolist(), scored.tolist()):
        for t in np.flatnonzero(mask):
            target = row[t + 1]
            assert target > 0, "a padding target is scored"
            context = [x for x in row[:t + 1] if x > 0]
            user, position = divmod(target - 1, 100)
            assert context == list(histories[user][max(0, position - len(context)):position])  # contiguous past
            found.append((user, position, len(context)))
    every = sorted((u, j) for u, n in enumerate(lengths) for j in range(1, n))
    assert sorted((u, j) for u, j, _ in found) == every  # each training item a target exactly once
    least = max_len + 1 - (stride or max_len)
    assert all(context >= min(j, least) for _, j, context in found)  # the context the stride promises
    if stride == 1:  # RecBole's contexts: every target with all of its history, up to max_len items
        assert all(context == min(j, max_len) for _, j, context in found)
    last = training_sequences(split, max_len)
    assert len(last) == sum(n >= 2 for n in lengths) < len(seqs)
    assert int((last[:, 1:] > 0).sum()) < len(every)  # the last window alone drops the older targets


def test_scored_mask_limits_the_loss_to_its_targets(tiny_split):
    from mltfrkit.models import build_backbone
    from mltfrkit.train.trainer import training_windows

    seqs, scored = training_windows(tiny_split, 5, "all", 2)
    for name in ("sasrec", "cl4srec", "fmlprec"):
        model = build_backbone(name, tiny_split.n_items, max_len=5).eval()
        masked = model.loss(seqs, torch.Generator().manual_seed(3), scored=scored)
        assert not torch.allclose(masked, model.loss(seqs, torch.Generator().manual_seed(3)))  # the mask matters
        if name != "cl4srec":  # the same loss with the unscored targets dropped by hand (FMLP-Rec: encoding
            # only the scored prefixes gives the same hidden states as encoding them all)
            expected = model.next_item_loss(model.encode(seqs[:, :-1]), seqs[:, 1:].masked_fill(~scored, 0), seqs,
                                            torch.Generator().manual_seed(3))
            assert torch.allclose(masked, expected, atol=1e-6)
    bert = build_backbone("bert4rec", tiny_split.n_items, max_len=5, mask_ratio=1.0).eval()
    loss = bert.loss(seqs, torch.Generator().manual_seed(0), scored=scored)
    items = seqs[:, -5:]
    hidden = bert.encode(items.masked_fill(scored & (items > 0), bert.mask_id))
    assert torch.allclose(loss, bert.next_item_loss(hidden, items.masked_fill(~scored, 0), items, None))


def test_fit_trains_on_strided_windows(tiny_split):
    from mltfrkit.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("sasrec", tiny_split.n_items, max_len=5)
    result = fit(model, tiny_split, TrainConfig(epochs=2, seed=0, device="cpu", windows="all", stride=2),
                 progress=False, log=None)
    assert result["config"]["train"]["stride"] == 2 and len(result["epochs"]) == 2
    assert all(np.isfinite(e["loss"]) for e in result["epochs"])


def test_default_windows_leave_stored_run_keys_unchanged():
    from mltfrkit.train import TrainConfig

    assert "windows" not in TrainConfig().to_dict()  # runs stored before the option keep their keys
    assert TrainConfig(windows="all").to_dict()["stride"] is None  # unlike the stride-less "all" before it
    assert TrainConfig(windows="all").to_dict()["windows"] == "all"
    assert TrainConfig(windows="all", stride=10).to_dict()["stride"] == 10
    with pytest.raises(ValueError, match="windows"):
        TrainConfig(windows="some")
    with pytest.raises(ValueError, match="stride applies to windows='all'"):
        TrainConfig(stride=5)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        TrainConfig(windows="all", stride=0)


def test_diverged_training_stops_before_its_checkpoint(tiny_split, tmp_path):
    """A NaN loss stops the run naming the epoch; the checkpoint stays the last finite epoch's."""
    from mltfrkit.train import DivergedError

    torch.manual_seed(123)
    model = build_backbone("sasrec", tiny_split.n_items, max_len=12)
    real_loss, epochs_done = model.loss, []
    model.loss = lambda *a, **k: real_loss(*a, **k) * (float("nan") if epochs_done else 1.0)
    config = TrainConfig(epochs=3, batch_size=16, seed=3, device="cpu")
    with pytest.raises(DivergedError, match=r"epoch 2.*Lower the learning rate"):
        fit(model, tiny_split, config, run_dir=tmp_path, progress=False, log=None,
            on_epoch_end=lambda entry: epochs_done.append(entry.epoch))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1


def test_diverged_run_writes_no_result(tmp_path):
    from mltfrkit.runs import RunSpec, run_training
    from mltfrkit.train import DivergedError

    path = tmp_path / "seqs.txt"
    path.write_text("".join(f"u{u} " + " ".join(f"i{(u + k) % 9}" for k in range(6)) + "\n" for u in range(30)))
    spec = RunSpec(str(path), train=TrainConfig(epochs=2, lr=1e4, device="cpu"), model={"hidden_size": 16})
    with pytest.raises(DivergedError, match=r"epoch \d.*--lr"):
        run_training(spec, root=tmp_path / "runs", progress=False, log=None)
    assert not list((tmp_path / "runs").rglob("result.json"))


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("lr", float("nan")), ("lr", 0.0),
                                         ("weight_decay", float("inf")), ("weight_decay", -1.0)])
def test_non_finite_hyper_parameters_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_cuda_without_cuda_is_refused():
    from mltfrkit.train import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA.*--device cpu"):
        resolve_device("cuda")
