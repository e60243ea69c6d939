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


def test_all_windows_make_every_training_item_a_target_once(tiny_split):
    from mltfrkit.train.trainer import training_sequences

    def transitions(seqs):  # (previous item, next item) pairs a window trains on
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        real = (inputs > 0) & (targets > 0)
        return sorted(zip(inputs[real].tolist(), targets[real].tolist()))

    max_len = 3  # the tiny users have 4-12 items: several windows each
    last = training_sequences(tiny_split, max_len)
    windows = training_sequences(tiny_split, max_len, "all")
    history = [s for s in tiny_split.train_sequences() if len(s) >= 2]
    assert len(last) == len(history) < len(windows)
    every = sorted((int(a), int(b)) for s in history for a, b in zip(s[:-1], s[1:]))
    assert transitions(windows) == every  # each training transition exactly once
    assert len(transitions(last)) < len(every)  # the last window alone drops the older ones


def test_default_windows_leave_stored_run_keys_unchanged():
    from mltfrkit.train import TrainConfig

    assert "windows" not in TrainConfig().to_dict()  # runs stored before the option keep their keys
    assert TrainConfig(windows="all").to_dict()["windows"] == "all"
    with pytest.raises(ValueError, match="windows"):
        TrainConfig(windows="some")
