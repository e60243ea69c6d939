"""The text-prompted LLM recommender on candidate pools, with its results cached in the result store.

One call scores every pooled user with both variants (``generation``: the answer parsed to a lettered
candidate; ``likelihood``: each candidate title's mean token log-likelihood as the answer) and returns
one result dict: per-user answers, choices and scores, the metrics, the exact prompts, timing.

Cache: ``<store root>/pools/<dataset>-llm-<model>-<key>.json``, the key hashing the model's identity
(artifact sha256 or hub id), the prompt set (full texts), the pool spec, the variants and the data's
content hash. Partial progress is written every ``checkpoint_every`` users to ``<same>.partial.json``
(atomically), so an interrupted run resumes where it stopped; a finished result is read, never recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from mltfrkit.llmrec.parse import parse_answer
from mltfrkit.llmrec.prompts import UNTITLED, PromptSet
from mltfrkit.paths import atomic_write_json
from mltfrkit.train.pools import CandidatePools, bootstrap_ci, pool_metrics, ranks_from_scores

VARIANTS = ("generation", "likelihood")


def _titles(item_text, items) -> list[str]:
    return [item_text.get(int(i)) or UNTITLED for i in items]


def llm_key(backend, prompt: PromptSet, pools: CandidatePools, variants, data_sha256: str,
            normalize: str) -> str:
    payload = {"model": backend.fingerprint(), "prompt": prompt.to_dict(), "pool": pools.spec.to_dict(),
               "variants": list(variants), "data_sha256": data_sha256, "normalize": normalize, "v": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def llm_result_path(root: Path, dataset: str, backend, key: str) -> Path:
    model = "".join(c if c.isalnum() or c in "._-" else "-" for c in backend.name)
    return Path(root) / "pools" / f"{dataset}-llm-{model}-{key}.json"


def stored_llm_result(root: str | Path, split, pool_spec, variants=VARIANTS, model: str = "SmolLM2-135M-Instruct",
                      dtype: str | None = "bfloat16", prompt: PromptSet | None = None,
                      normalize: str = "mean") -> dict | None:
    """A finished result of :func:`run_llm_on_pools` for these pools, read from the cache without loading or
    running any model (None if there is none): a complete ``<root>/pools/<dataset>-llm-*.json`` whose model
    name (and ``dtype``, unless None), prompt set, pool spec, normalisation and data hash match, holding
    every asked variant. The newest match wins."""
    from mltfrkit.store import read_json

    prompt = prompt or PromptSet.for_dataset(split.name)
    wanted = {v for v in variants if v in VARIANTS}
    matches = []
    for path in sorted((Path(root) / "pools").glob(f"{split.name}-llm-*.json")):
        if path.name.endswith(".partial.json"):
            continue
        stored = read_json(path)
        if not stored or not stored.get("complete"):
            continue
        fingerprint = stored.get("model") or {}
        if (fingerprint.get("model") != model or (dtype is not None and fingerprint.get("dtype", dtype) != dtype)
                or stored.get("pool") != pool_spec.to_dict() or stored.get("data_sha256") != split.source_sha256
                or stored.get("prompt") != prompt.to_dict() or stored.get("normalize") != normalize
                or not wanted <= set(stored.get("variants") or ())):
            continue
        matches.append((path.stat().st_mtime, path, stored))
    if not matches:
        return None
    _, path, stored = max(matches, key=lambda match: match[0])
    stored["metrics"] = {v: m for v, m in stored["metrics"].items() if v in wanted}
    stored["path"] = str(path)
    return stored


def _summarise(result: dict, pools: CandidatePools) -> dict:
    """Metrics of the finished per-user records (both variants, with bootstrap intervals over users)."""
    summary = {}
    target = pools.target_index
    if "generation" in result["variants"]:
        choices = np.array([-1 if c is None else c for c in result["choices"]])
        hits = (choices == target).astype(float)
        summary["generation"] = {"top1": float(hits.mean()), "top1_ci": bootstrap_ci(hits),
                                 "invalid_rate": float((choices < 0).mean()), "users": len(hits)}
    if "likelihood" in result["variants"]:
        ranks = ranks_from_scores(np.array(result["scores"]), target)
        hits = (ranks == 0).astype(float)
        summary["likelihood"] = {**pool_metrics(ranks), "top1_ci": bootstrap_ci(hits), "invalid_rate": 0.0,
                                 "users": len(hits)}
    return summary


def run_llm_on_pools(split, item_text, pools: CandidatePools, backend, prompt: PromptSet | None = None,
                     variants=VARIANTS, root: str | Path | None = None, normalize: str = "mean",
                     checkpoint_every: int = 10, progress: bool = True, log=print) -> dict:
    """Both variants on every pooled user, read from the cache when stored (see module docstring)."""
    from mltfrkit.runs import store_root
    from mltfrkit.store import read_json

    variants = tuple(v for v in VARIANTS if v in variants)
    if not variants:
        raise ValueError(f"variants must name at least one of {list(VARIANTS)}")
    prompt = prompt or PromptSet.for_dataset(split.name)
    root = Path(root) if root is not None else store_root()  # the store's versioned folder (ResultStore.root)
    key = llm_key(backend, prompt, pools, variants, split.source_sha256, normalize)
    path = llm_result_path(root, split.name, backend, key)
    stored = read_json(path)
    if stored is not None and stored.get("complete"):
        stored["path"] = str(path)
        return stored
    partial = path.with_suffix(".partial.json")
    result = read_json(partial) or {
        "dataset": split.name, "key": key, "model": backend.fingerprint(), "prompt": prompt.to_dict(),
        "pool": pools.spec.to_dict(), "variants": list(variants), "normalize": normalize,
        "data_sha256": split.source_sha256, "users": pools.users.tolist(),
        "target_index": pools.target_index.tolist(), "answers": [], "choices": [], "scores": [], "seconds": 0.0}
    if result["users"] != pools.users.tolist() or result["target_index"] != pools.target_index.tolist():
        raise ValueError(f"{partial} holds other pools than these (same key): delete it to start over")
    done = len(result["answers"] if "generation" in variants else result["scores"])
    if log and done:
        log(f"LLM on {split.name}: resuming at user {done} of {len(pools)} ({partial})")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pools), initial=done, desc=f"LLM {backend.name}", unit="user", disable=not progress)
    started = time.perf_counter()
    for row in range(done, len(pools)):
        history = _titles(item_text, pools.histories[row])
        candidates = _titles(item_text, pools.candidates[row])
        system, prefix, generation = prompt.chat_parts(history, candidates if "generation" in variants else None)
        likelihood = prompt.chat_parts(history)[2] if "likelihood" in variants else None
        output = backend.run_user(system, prefix, generation if "generation" in variants else None, likelihood,
                                  candidates if likelihood is not None else None, normalize=normalize)
        if "generation" in variants:
            result["answers"].append(output.answer)
            result["choices"].append(parse_answer(output.answer, candidates))
        if likelihood is not None:
            result["scores"].append(output.scores)
        if row == 0:  # the exact text the model saw, for the record (the first user's prompt)
            result["example"] = {"system": system, "generation_user": prefix + (generation or ""),
                                 "likelihood_user": prefix + (likelihood or ""), "candidates": candidates,
                                 "answer": output.answer}
        bar.update(1)
        if (row + 1) % checkpoint_every == 0 and row + 1 < len(pools):
            result["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            atomic_write_json(partial, result)
    bar.close()
    result["seconds"] += time.perf_counter() - started
    result["users_per_second"] = len(pools) / result["seconds"] if result["seconds"] else None
    result["untitled_in_pools"] = int(sum(any(int(i) not in item_text for i in row) for row in pools.candidates))
    result["metrics"] = _summarise(result, pools)
    result["complete"] = True
    atomic_write_json(path, result)
    partial.unlink(missing_ok=True)
    result["path"] = str(path)
    if log:
        log(f"LLM on {split.name}: {len(pools)} users in {result['seconds']:.0f} s "
            f"({result['users_per_second']:.2f} users/s); stored in {path}")
    return result
