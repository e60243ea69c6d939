"""Full-ranking evaluation: every item is a candidate; HR@K and NDCG@K with one relevant item.

Ties: the target's rank counts every other item whose score is greater **or equal**, so ties
are broken against the target. A model that scores everything alike therefore gets HR = 0
(not a perfect score), and no implementation detail of the sort can flatter a result.
Padding (item 0) is scored -inf and never ranked. ``exclude_history`` (default off, as in the
MLTFR authors' code) removes the user's history items from the candidates, as RecBole does;
a target that repeats a history item is then a miss.

Short histories: where the model's scores do not depend on leading padding
(``model.padding_free_scores()``: SASRec, CL4SRec, BERT4Rec, LinRec, with no plug-in or LLM-TE/RE or
MLTFR with per-user keys), users are scored in chunks of similar history length, each chunk only as wide
as its longest history (plus one column) instead of ``max_len``: the same scores up to float rounding,
with much less encoder work on datasets of short histories (Beauty's median history is 4 items of 50).
The metrics are means over users, so the order they are scored in does not matter.

Non-finite scores never flatter a model (a diverged one scores NaN everywhere): a target whose
score is NaN or +inf ranks last (a miss), and another item scoring NaN counts against the target,
as a tie does. -inf is the one non-finite score with a meaning (padding, excluded history items):
such candidates are never ranked above anything.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch


def pad_left(sequences: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """The most recent ``length`` items of each sequence, left-padded with 0."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-length:] if length else seq[:0]
        if len(tail):
            out[row, length - len(tail):] = tail
    return torch.from_numpy(out)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all candidates, ties counted against the target.

    A NaN or +inf target score ranks last (rank = number of columns - 1, as for a -inf target);
    NaN scores of other items count as scoring at least as high as the target."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = ((scores >= target_scores) | scores.isnan()).sum(1) - 1
    broken = target_scores.squeeze(1).isnan() | target_scores.squeeze(1).isposinf()
    return torch.where(broken, torch.full_like(ranks, scores.shape[1] - 1), ranks)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> dict[str, float]:
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())  # IDCG = 1
    return out


def users_per_chunk(n_items: int, max_bytes: int, extra_per_user: int = 0) -> int:
    """How many users fit the memory budget: score rows, a comparison mask, and whatever the
    model itself holds per user (a plug-in's user x vocabulary similarities)."""
    per_user = (n_items + 1) * (4 + 1) * 2 + extra_per_user
    return max(1, min(4096, max_bytes // per_user))


def trims_padding(model, score, max_len: int) -> bool:
    """Whether :func:`evaluate` may score ``model`` on chunks narrower than ``max_len``: its own uncompiled
    ``score_all`` (a compiled graph would recompile for every width), at the model's window, and a backbone
    and plug-in whose scores do not depend on leading padding (``padding_free_scores``)."""
    padding_free = getattr(model, "padding_free_scores", None)
    return bool(padding_free and padding_free()) and score == model.score_all and max_len == model.config.max_len


@torch.no_grad()
def evaluate(model, histories: Sequence[np.ndarray], targets: np.ndarray, ks: Iterable[int] = (5, 10, 20),
             max_len: int | None = None, max_bytes: int = 256 << 20, exclude_history: bool = False,
             device: torch.device | str = "cpu", score=None, trim_padding: bool = True) -> dict[str, float]:
    """Score users in chunks so that memory stays under ``max_bytes`` whatever the catalogue size.
    ``score``: what scores a chunk of histories (default ``model.score_all``; the trainer passes a
    compiled one with ``TrainConfig.compile``). ``max_len``: the history columns scored (default the model's
    window; a narrower one is that window's right end, ``window_positions``). ``trim_padding``: chunks of similar length, each as wide as
    it needs, where the model allows it (:func:`trims_padding`; False: every chunk ``max_len`` wide, in
    dataset order, as before; ``benchmarks/train_eval_speed.py`` times both)."""
    if len(histories) == 0:
        raise ValueError("no users to evaluate: the list of histories is empty (a split with no users for this "
                         "holdout?); check the dataset and its filters")
    if len(targets) != len(histories):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets: one next item per user")
    score = score or model.score_all
    was_training = model.training
    model.eval()
    max_len = max_len or model.config.max_len
    plugin = getattr(model, "plugin", None)
    chunk = users_per_chunk(model.n_items, max_bytes, getattr(plugin, "eval_bytes_per_user", lambda: 0)())
    fixed = getattr(plugin, "eval_batch_users", lambda: None)()
    if fixed:  # a plug-in whose scores depend on the batch (the authors' MLTFR keys): fixed batches, in order
        chunk = fixed
    targets = np.asarray(targets)
    lengths = np.fromiter((len(seq) for seq in histories), dtype=np.int64, count=len(histories))
    trim = trim_padding and not fixed and trims_padding(model, score, max_len)
    # shortest histories first (stable: ties keep dataset order); each user's rank goes back to its own row
    order = np.argsort(lengths, kind="stable") if trim else np.arange(len(histories))
    if hasattr(plugin, "begin_evaluation"):
        plugin.begin_evaluation()
    ranks = torch.empty(len(histories), dtype=torch.long)
    for start in range(0, len(histories), chunk):
        rows = order[start:start + chunk]
        batch_hist = [histories[row] for row in rows]
        # one column more than the longest history: BERT4Rec's [MASK] input drops the first column
        width = min(max_len, int(lengths[rows].max(initial=0)) + 1) if trim else max_len
        history = pad_left(batch_hist, width).to(device)
        scores = score(history)
        if exclude_history:
            for row, seq in enumerate(batch_hist):
                scores[row, torch.as_tensor(seq, device=device)] = float("-inf")
        batch_targets = torch.as_tensor(targets[rows], device=device)
        ranks[torch.as_tensor(rows)] = target_ranks(scores, batch_targets).cpu()
    model.train(was_training)
    return metrics_from_ranks(ranks.numpy(), ks)


def ndcg_at(rank: int, k: int) -> float:
    """Reference value for one user, used in tests."""
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0
