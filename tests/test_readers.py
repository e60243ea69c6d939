"""Readers on fixture files written in exactly the distributed formats."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from mltfrkit.data import (DatasetNotFoundError, EmptyDatasetError, MalformedInputError, PrepSettings, load_dataset,
                           prepare_split)
from mltfrkit.data import readers


def write_amazon(path, rows, gz=True):
    lines = "".join(json.dumps({"overall": 5.0, "verified": True, "reviewTime": "01 1, 2015", "reviewerID": u,
                                "asin": i, "unixReviewTime": t, "reviewText": "fine"}) + "\n" for u, i, t in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")


def amazon_rows(n_users=8, n_items=6, per_user=6, seed=0):
    """Every user reviews per_user distinct items at shuffled times (written out of time order)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        times = rng.choice(np.arange(1_400_000_000, 1_400_000_000 + 1000), size=per_user, replace=False)
        rows += [(f"U{u}", f"B{i:04d}", int(t)) for i, t in zip(items, times)]
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("gz", [True, False])
def test_amazon_reader_orders_by_time(tmp_path, gz):
    rows = amazon_rows()
    path = tmp_path / ("Musical_Instruments_5.json" + (".gz" if gz else ""))
    write_amazon(path, rows, gz=gz)
    table = readers.read_amazon_json(path)
    assert len(table) == len(rows)
    split = prepare_split(table, "Music", PrepSettings())
    for user_index, user in enumerate(split.user_ids):
        expected = [i for _, i, _ in sorted((t, i, u) for u, i, t in rows if u == user)]
        got = [split.item_ids[code] for code in split.sequences[user_index]]
        assert got == expected


def test_amazon_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "Office_Products_5.json"
    write_amazon(path, [("U1", "B1", 1)], gz=False)
    with open(path, "a") as handle:
        handle.write('{"reviewerID": "U2", "asin": "B2"}\n')
    with pytest.raises(MalformedInputError, match=r"Office_Products_5.json:2"):
        readers.read_amazon_json(path)


def write_ratebeer(path, records):
    """RateBeer as distributed: key: value lines, blank line between records, Latin-1 text."""
    blocks = []
    for user, beer, t in records:
        blocks.append(f"beer/name: Caf\xe9 Ale\nbeer/beerId: {beer}\nbeer/brewerId: 3\nbeer/ABV: 5.0\n"
                      f"beer/style: Ale\nreview/appearance: 4/5\nreview/aroma: 6/10\nreview/palate: 3/5\n"
                      f"review/taste: 6/10\nreview/overall: 13/20\nreview/time: {t}\n"
                      f"review/profileName: {user}\nreview/text: Cr\xe8me br\xfbl\xe9e notes\n")
    with gzip.open(path, "wb") as handle:
        handle.write("\n".join(blocks).encode("latin-1"))


def test_ratebeer_reader_latin1_and_time_order(tmp_path):
    records = [("ana", "10", 300), ("ana", "11", 100), ("ana", "12", 200), ("b\xf6b", "10", 5), ("b\xf6b", "12", 1),
               ("b\xf6b", "13", 9)]
    path = tmp_path / "Ratebeer.txt.gz"
    write_ratebeer(path, records)
    table = readers.read_ratebeer(path)
    assert sorted(table["user"].unique()) == ["ana", "b\xf6b"]
    split = prepare_split(table, "Beer")
    by_user = {u: [split.item_ids[c] for c in s] for u, s in zip(split.user_ids, split.sequences)}
    assert by_user["ana"] == ["11", "12", "10"]
    assert by_user["b\xf6b"] == ["12", "10", "13"]


def test_ratebeer_record_without_time(tmp_path):
    path = tmp_path / "Ratebeer.txt"
    path.write_text("beer/beerId: 1\nreview/profileName: x\n\nbeer/beerId: 2\nreview/profileName: y\n"
                    "review/time: 5\n")
    with pytest.raises(MalformedInputError, match=r"Ratebeer.txt:1-3: RateBeer record lacks review/time"):
        readers.read_ratebeer(path)


def test_atomic_inter_and_csv_and_parquet(tmp_path):
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\ta\t3\t20\n1\tb\t4\t10\n"
                     "1\tc\t4\t10\n")
    table = readers.read_atomic_inter(inter)
    split = prepare_split(table, "x")
    # equal timestamps keep file order (b before c), then the later one (a)
    assert [split.item_ids[c] for c in split.sequences[0]] == ["b", "c", "a"]
    frame = pd.DataFrame({"user": [1, 1, 1], "item": ["a", "b", "c"], "timestamp": [3, 2, 1]})
    frame.to_csv(tmp_path / "own.csv", index=False)
    frame.to_parquet(tmp_path / "own.parquet")
    for name in ("own.csv", "own.parquet"):
        split = prepare_split(readers.read_any(tmp_path / name), "own")
        assert [split.item_ids[c] for c in split.sequences[0]] == ["c", "b", "a"]
    with pytest.raises(MalformedInputError, match="missing column"):
        readers.read_user_item_table(tmp_path / "own.csv", time_col="when")


def test_sequence_file_malformed_line(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 a b c\n2\n")
    with pytest.raises(MalformedInputError, match=r"seq.txt:2"):
        readers.read_sequence_file(path)


def test_sequence_file_user_on_two_lines_continues_in_file_order(tmp_path):
    """It used to interleave: u1 got a d b e c f (issue 18, item 2)."""
    path = tmp_path / "seq.txt"
    path.write_text("u1 a b c\nu2 x y z\nu1 d e f\n")
    split = prepare_split(readers.read_sequence_file(path), "seq")
    by_user = {u: [split.item_ids[c] for c in s] for u, s in zip(split.user_ids, split.sequences)}
    assert by_user == {"u1": list("abcdef"), "u2": list("xyz")}


def test_registry_music_applies_5core(tmp_path):
    rows = amazon_rows(n_users=12, n_items=8, per_user=6)
    rows += [("LONER", "B9999", 5), ("LONER", "B0000", 6), ("LONER", "B0001", 7)]  # user with 3 < 5 reviews
    write_amazon(tmp_path / "Musical_Instruments_5.json.gz", rows)
    split = load_dataset("music", data_dir=tmp_path)  # names are case-insensitive
    assert "LONER" not in set(split.user_ids)
    assert "B9999" not in set(split.item_ids)
    assert all(len(s) >= 5 for s in split.sequences)
    assert split.settings.k_core == 5
    assert any("5-core" in line for line in split.filter_log)


def test_missing_file_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("Music", data_dir=tmp_path)
    text = str(error.value)
    assert "Musical_Instruments_5.json.gz" in text and str(tmp_path) in text and "nijianmo" in text


def test_unknown_dataset_lists_names():
    with pytest.raises(KeyError, match="Valid names: ml-100k, ml-1m, Pantry, Beauty, Office, Music, Beer"):
        load_dataset("NoSuchSet")


def test_emptied_dataset_says_which_filter(tmp_path):
    write_amazon(tmp_path / "Office_Products_5.json.gz", [("U1", "A", 1), ("U1", "B", 2), ("U2", "A", 3)])
    with pytest.raises(EmptyDatasetError, match=r"after 5-core: 0 interactions"):
        load_dataset("Office", data_dir=tmp_path)


def test_clear_errors_for_bad_files(tmp_path):
    """Issue 18, item 7: each names the file, what is wrong and what to do."""
    good = "".join(f"u{u} a b c d\n" for u in range(50)).encode()
    truncated = tmp_path / "seqs.txt.gz"
    truncated.write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(MalformedInputError, match=rf"{truncated}: truncated or corrupt gzip.*download it again"):
        load_dataset(str(truncated))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"u1 a b\nu2 \xff\xfe\x00 c\n")
    with pytest.raises(MalformedInputError, match=rf"{binary}:2: not UTF-8 text.*convert it"):
        load_dataset(str(binary))
    with pytest.raises(DatasetNotFoundError, match=rf"{tmp_path} is a directory"):
        load_dataset(str(tmp_path))
    (tmp_path / "Pantry.txt").write_bytes(good)
    with pytest.raises(DatasetNotFoundError, match=r"holds Pantry.txt: use --dataset NAME --data-dir"):
        load_dataset(str(tmp_path))
    for missing in (str(tmp_path / "nope.txt"), "data/Pantry.txt", "pantry.csv"):
        with pytest.raises(DatasetNotFoundError, match="no such file"):
            load_dataset(missing)
    tabbed = tmp_path / "own.csv"
    tabbed.write_text("user\titem\ttimestamp\n1\ta\t3\n")
    with pytest.raises(MalformedInputError, match=r"own.csv: looks tab-separated.*comma-separated") as error:
        load_dataset(str(tabbed))
    assert "user_col" not in str(error.value)  # no options the command line does not have
    unknown = tmp_path / "data.bin"
    unknown.write_bytes(b"x")
    with pytest.raises(MalformedInputError, match="unknown format"):
        load_dataset(str(unknown))
