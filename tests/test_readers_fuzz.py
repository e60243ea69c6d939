"""Property-based tests of every reader (issue 18): arbitrary bytes and mutated valid files end in
the library's own MalformedInputError or a table, never another exception; a valid file reads back
the same interactions whatever its line endings, byte-order mark or trailing whitespace."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mltfrkit.data import readers
from mltfrkit.data.readers import COLUMNS, MalformedInputError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# (file name, reader): every reader, and read_any's choice by name
READERS = [("seq.txt", readers.read_sequence_file), ("seq.txt.gz", readers.read_sequence_file),
           ("reviews.json", readers.read_amazon_json), ("reviews.json.gz", readers.read_amazon_json),
           ("Ratebeer.txt", readers.read_ratebeer), ("Ratebeer.txt.gz", readers.read_ratebeer),
           ("x.inter", readers.read_atomic_inter), ("own.csv", readers.read_user_item_table),
           ("own.parquet", readers.read_user_item_table), ("any.txt", readers.read_any),
           ("any.json", readers.read_any), ("any.inter", readers.read_any), ("any.csv", readers.read_any),
           ("any.bin", readers.read_any)]

ID = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="_-.é中"), min_size=1,
             max_size=6)
INTERACTIONS = st.lists(st.tuples(ID, ID, st.integers(0, 2**40)), min_size=1, max_size=12)
LAYOUT = st.tuples(st.sampled_from(["\n", "\r\n", "\r"]), st.booleans(), st.sampled_from(["", " ", "  "]))


def must_be_named_or_a_table(reader, path):
    try:
        table = reader(path)
    except MalformedInputError as error:
        assert str(path) in str(error)  # the message names the file
        return
    assert list(table.columns) == COLUMNS


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=400), which=st.sampled_from(READERS), compress=st.booleans())
def test_arbitrary_bytes_never_crash(fuzz_dir, data, which, compress):
    name, reader = which
    path = fuzz_dir / name
    path.write_bytes(gzip.compress(data) if compress and name.endswith(".gz") else data)
    must_be_named_or_a_table(reader, path)


def valid_files(rows):
    """The same interactions in each format (per user in time order, one user per line for .txt)."""
    users = list(dict.fromkeys(u for u, _, _ in rows))
    by_user = {u: sorted((t, i) for uu, i, t in rows if uu == u) for u in users}
    sequence = "".join(f"{u} " + " ".join(i for _, i in by_user[u]) + "\n" for u in users)
    amazon = "".join(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t}) + "\n" for u, i, t in rows)
    ratebeer = "\n".join(f"beer/beerId: {i}\nreview/profileName: {u}\nreview/time: {t}\n" for u, i, t in rows)
    inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    csv = "user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    return {"seq.txt": sequence, "reviews.json": amazon, "Ratebeer.txt": ratebeer, "x.inter": inter, "own.csv": csv}


@FUZZ
@given(rows=INTERACTIONS, name=st.sampled_from(["seq.txt", "reviews.json", "Ratebeer.txt", "x.inter", "own.csv"]),
       position=st.integers(0, 10**6), change=st.binary(min_size=0, max_size=3), cut=st.booleans())
def test_mutated_valid_files_never_crash(fuzz_dir, rows, name, position, change, cut):
    data = valid_files(rows)[name].encode()
    at = position % (len(data) + 1)
    data = data[:at] + change + data[at + (len(change) if cut else 0):]
    for suffix, payload in (("", data), (".gz", gzip.compress(data)[: max(1, position % 60)])):  # also truncated gzip
        path = fuzz_dir / (name + suffix)
        path.write_bytes(payload)
        must_be_named_or_a_table({"seq.txt": readers.read_sequence_file, "reviews.json": readers.read_amazon_json,
                                  "Ratebeer.txt": readers.read_ratebeer, "x.inter": readers.read_atomic_inter,
                                  "own.csv": readers.read_any}[name], path)


def interactions(table: pd.DataFrame, by_time: bool) -> list:
    if by_time:  # formats with timestamps: compare (user, item, time) in file order
        return list(zip(table["user"], table["item"], table["time"].astype("int64")))
    return list(zip(table["user"], table["item"]))


@FUZZ
@given(rows=INTERACTIONS, layout=LAYOUT,
       name=st.sampled_from(["seq.txt", "reviews.json", "Ratebeer.txt", "x.inter", "own.csv"]), gz=st.booleans())
def test_valid_file_round_trips_whatever_its_layout(fuzz_dir, rows, layout, name, gz):
    newline, bom, trailing = layout
    text = valid_files(rows)[name]
    reference = fuzz_dir / f"ref-{name}"
    reference.write_text(text, encoding="utf-8", newline="\n")
    laid_out = newline.join(line + trailing if line else line for line in text.split("\n"))
    payload = ("\ufeff" if bom else "").encode() + laid_out.encode("utf-8")
    if gz and name != "own.csv" and name != "x.inter":
        name += ".gz"
        payload = gzip.compress(payload)
    path = fuzz_dir / f"laid-out-{name}"
    path.write_bytes(payload)
    reader = readers.read_any if name.startswith("own") else {
        "seq": readers.read_sequence_file, "rev": readers.read_amazon_json, "Rat": readers.read_ratebeer,
        "x.i": readers.read_atomic_inter}[name[:3]]
    by_time = not name.startswith("seq")
    assert interactions(reader(path), by_time) == interactions(reader(reference), by_time)
    if by_time:
        assert interactions(reader(path), True) == [(u, i, t) for u, i, t in rows]
