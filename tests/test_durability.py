"""Issue 18, items 4-6 and 8: checkpoints and cached files written under unique temporary names with
fsync, loaded with weights_only=True, readable by the group (umask mode), and named clearly (or
rebuilt, for derived data) when they are damaged."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import pytest
import torch

from mltfrkit.models import build_backbone
from mltfrkit.train import TrainConfig, fit
from mltfrkit.train.checkpoint import CheckpointError, load_checkpoint, load_torch, save_torch


class Interrupt(Exception):
    pass


def train_tiny(split, run_dir=None, epochs=3, interrupt_after=None):
    torch.manual_seed(123)
    model = build_backbone("sasrec", split.n_items, max_len=8, hidden_size=16, n_layers=1)

    def stop(entry):
        if interrupt_after and entry.epoch == interrupt_after:
            raise Interrupt

    config = TrainConfig(epochs=epochs, batch_size=16, seed=3, device="cpu")
    return fit(model, split, config, run_dir=run_dir, progress=False, on_epoch_end=stop, log=None)


def test_checkpoint_loads_with_weights_only(tiny_split, tmp_path):
    train_tiny(tiny_split, run_dir=tmp_path, epochs=1)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no allow-list needed at all
    assert saved["state"]["epoch"] == 1 and isinstance(saved["rng"]["numpy"]["key"], torch.Tensor)


def test_trained_seconds_reads_the_checkpoints_state_and_never_fails(tiny_split, tmp_path):
    """What an interrupted run has trained (the plan and --finish-by count only what is left of it): the
    checkpoint state's seconds, every epoch's; 0 for a missing, damaged or foreign file."""
    from mltfrkit.train.checkpoint import trained_seconds

    with pytest.raises(Interrupt):
        train_tiny(tiny_split, run_dir=tmp_path, epochs=3, interrupt_after=2)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["state"]["epoch"] == 2
    assert trained_seconds(tmp_path / "checkpoint.pt") == pytest.approx(sum(h["seconds"] for h in saved["state"]["history"]))
    assert trained_seconds(tmp_path / "checkpoint.pt") > 0
    assert trained_seconds(tmp_path / "missing.pt") == 0.0
    (tmp_path / "damaged.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:1000])
    assert trained_seconds(tmp_path / "damaged.pt") == 0.0
    torch.save({"state": {"seconds": "soon"}}, tmp_path / "odd.pt")
    assert trained_seconds(tmp_path / "odd.pt") == 0.0
    torch.save({"state": {"seconds": 12.5}}, tmp_path / "other.pt")  # only the state is read, not the other parts
    assert trained_seconds(tmp_path / "other.pt") == 12.5


def test_old_format_checkpoint_resumes_exactly(tiny_split, tmp_path, monkeypatch):
    """Checkpoints of earlier versions pickled numpy's RNG state: they load through the numpy allow-list
    (arrays and dtypes only) and resume to the uninterrupted result."""
    import mltfrkit.train.trainer as trainer

    reference = train_tiny(tiny_split)

    def old_rng_state():
        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}

    monkeypatch.setattr(trainer, "_rng_state", old_rng_state)
    with pytest.raises(Interrupt):
        train_tiny(tiny_split, run_dir=tmp_path, interrupt_after=1)
    with pytest.raises(Exception):  # really the old format: plain weights_only refuses it
        torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    monkeypatch.undo()
    resumed = train_tiny(tiny_split, run_dir=tmp_path)
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in reference["epochs"]]
    assert resumed["test"] == reference["test"]


class Payload:
    """Anything outside the allow-list: loading it could run code."""

    def __reduce__(self):
        return (print, ("this ran on load",))


def test_checkpoint_with_foreign_objects_is_refused(tiny_split, tmp_path, capsys):
    torch.save({"config": {}, "model": {}, "optimizer": {}, "state": {}, "rng": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt.*could run code.*refused"):
        train_tiny(tiny_split, run_dir=tmp_path)
    assert "this ran on load" not in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "not ours"])
def test_damaged_checkpoint_is_named(tiny_split, tmp_path, damage):
    train_tiny(tiny_split, run_dir=tmp_path, epochs=1)
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "not ours":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                          "random": np.random.default_rng(0).bytes(5000)}[damage])
    with pytest.raises(CheckpointError, match=rf"{path}.*delete it"):
        train_tiny(tiny_split, run_dir=tmp_path, epochs=2)


def test_concurrent_writers_and_readers_of_one_checkpoint(tmp_path):
    """A fixed temporary name made 62 of 300 saves fail at the rename and 145 of 347 reads find an
    unreadable file; with unique names every save and every read succeeds."""
    path = tmp_path / "checkpoint.pt"
    save_torch(path, {"w": torch.zeros(1000)})
    errors, reads = [], []

    def writer(value):
        try:
            for _ in range(40):
                save_torch(path, {"w": torch.full((1000,), float(value))})
        except Exception as error:  # noqa: BLE001 - the test reports any failure
            errors.append(error)

    def reader():
        try:
            for _ in range(60):
                w = load_torch(path)["w"]
                reads.append(bool((w == w[0]).all()))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(reads) == 60 and all(reads)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


def test_written_files_get_the_umask_mode(tmp_path):
    from mltfrkit.paths import atomic_write_bytes, atomic_write_json

    previous = os.umask(0o002)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        save_torch(tmp_path / "checkpoint.pt", {"a": torch.zeros(1)})
        os.umask(0o022)
        atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.bin": 0o664, "result.json": 0o664, "checkpoint.pt": 0o664, "b.bin": 0o644}


def test_cached_split_has_the_umask_mode_and_is_rebuilt_when_damaged(tmp_path, monkeypatch):
    from mltfrkit.data import load_dataset

    monkeypatch.setenv("MLTFR_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "seqs.txt"
    data.write_text("".join(f"u{u} " + " ".join(f"i{(u + k) % 9}" for k in range(5)) + "\n" for u in range(12)))
    previous = os.umask(0o022)
    try:
        first = load_dataset(str(data))
    finally:
        os.umask(previous)
    (cached,) = (tmp_path / "cache" / "splits").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o644
    good = cached.read_bytes()
    other = tmp_path / "other.npz"
    np.savez(other, items=np.arange(3))
    for damaged in (b"", good[: len(good) // 2], np.random.default_rng(0).bytes(300), other.read_bytes()):
        cached.write_bytes(damaged)
        with pytest.warns(UserWarning, match=rf"{cached}.*rebuilding"):
            again = load_dataset(str(data))
        assert [s.tolist() for s in again.sequences] == [s.tolist() for s in first.sequences]
        assert cached.read_bytes() == good  # rewritten


def test_damaged_fisher_file_is_recomputed(tmp_path):
    from mltfrkit.mltfr.rounds import _stored_fisher

    path = tmp_path / "fisher.pt"
    save_torch(path, [{"w": torch.ones(3)}])
    assert torch.equal(_stored_fisher(path, None)[0]["w"], torch.ones(3))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match=rf"{path}.*recomputed"):
        assert _stored_fisher(path, None) is None
