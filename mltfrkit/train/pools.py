"""Candidate-pool evaluation (the paper's Table 4 protocol): each test user's held-out item among N
sampled negatives, scored by any model, ID-based or text-prompted.

Why pools: a text-prompted LLM cannot rank 1,682 items, so the paper (RQ4) compares on a restricted
candidate set and reports top-1 accuracy. It states neither the pool size nor how negatives are drawn;
ours are explicit and seeded (:class:`PoolSpec`), so every method is scored on the very same pools:

- a pool = the user's test target plus ``size - 1`` negatives (default 19), distinct, drawn from the
  items the user never interacted with (none of the full sequence: history, validation and test item),
  ``uniform`` or ``popularity``-weighted (by training interactions, the popularity a recommender sees);
- each user's pool is drawn from its own generator, seeded by (pool seed, user index): the pool of a
  user does not depend on which other users are sampled, on the method, or on the run;
- the candidates are in a seeded random order (``target_index`` says where the target is), so a method
  that favours a position, such as an LLM answering "A", gains nothing on average;
- ``max_users`` samples users (seeded) when a method is too slow for the whole test set.

Ranks count ties against the target exactly as the full ranking does (:func:`metrics.target_ranks`):
a constant scorer has top-1 accuracy 0, never 1/size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from mltfrkit.train.metrics import pad_left, target_ranks

SAMPLINGS = ("uniform", "popularity")
POOL_KS = (1, 5, 10)


@dataclass(frozen=True)
class PoolSpec:
    """Which pools: ``size`` candidates a user (target + ``size - 1`` negatives), how negatives are drawn,
    the seed, and optionally a seeded sample of ``max_users`` test users (None: every user)."""

    size: int = 20
    sampling: str = "uniform"
    seed: int = 0
    max_users: int | None = None

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 2:
            raise ValueError(f"pool size must be an integer >= 2 (the target and at least one negative), "
                             f"not {self.size!r}; e.g. --pool 20")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"pool sampling must be one of {list(SAMPLINGS)}, not {self.sampling!r}")
        if self.max_users is not None and (isinstance(self.max_users, bool) or not isinstance(self.max_users, int)
                                           or self.max_users < 1):
            raise ValueError(f"max_users must be a whole number >= 1 or None (every user), not {self.max_users!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self, data_sha256: str) -> str:
        """What results on these pools are cached under (with the data's content hash)."""
        payload = json.dumps({**self.to_dict(), "data_sha256": data_sha256, "v": 1}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def label(self) -> str:
        users = "all users" if self.max_users is None else f"{self.max_users} sampled users"
        return f"pool of {self.size} ({self.size - 1} {self.sampling} negatives, seed {self.seed}, {users})"


@dataclass
class CandidatePools:
    """Pools of the test split. Row r is user ``users[r]`` (index into the split's users)."""

    spec: PoolSpec
    users: np.ndarray  # (n,) user indices into split.sequences, ascending
    candidates: np.ndarray  # (n, size) internal item ids, in presentation order
    target_index: np.ndarray  # (n,) column of the target in candidates
    histories: list[np.ndarray]  # test histories of the pooled users (seq[:-1])

    def __len__(self) -> int:
        return len(self.users)

    @property
    def targets(self) -> np.ndarray:
        return self.candidates[np.arange(len(self)), self.target_index]


def _popularity(split) -> np.ndarray:
    counts = np.zeros(split.n_items + 1, dtype=np.float64)
    for sequence in split.with_holdout("valid_test").train_sequences():  # one popularity whatever a run's holdout
        np.add.at(counts, sequence, 1.0)
    counts[0] = 0.0
    return counts


def sample_users(n_users: int, max_users: int | None, seed: int) -> np.ndarray:
    """Ascending user indices: all of them, or a seeded sample of ``max_users`` without replacement."""
    if max_users is None or max_users >= n_users:
        return np.arange(n_users)
    rng = np.random.default_rng([seed, 0x5EED])
    return np.sort(rng.choice(n_users, size=max_users, replace=False))


def make_pools(split, spec: PoolSpec | None = None) -> CandidatePools:
    """The pools of ``split``'s test users under ``spec`` (deterministic in spec and data)."""
    spec = spec or PoolSpec()
    users = sample_users(split.n_users, spec.max_users, spec.seed)
    n_items = split.n_items
    popularity = _popularity(split) if spec.sampling == "popularity" else None
    candidates = np.zeros((len(users), spec.size), dtype=np.int64)
    target_index = np.zeros(len(users), dtype=np.int64)
    histories = []
    for row, user in enumerate(users):
        sequence = split.sequences[user]
        seen = np.unique(sequence)
        available = n_items - len(seen)
        if available < spec.size - 1:
            raise ValueError(f"user {split.user_ids[user]!r} of {split.name} interacted with {len(seen)} of "
                             f"{n_items} items: only {available} negatives left for a pool of {spec.size}; "
                             f"use a smaller pool (--pool)")
        rng = np.random.default_rng([spec.seed, int(user)])
        mask = np.ones(n_items + 1, dtype=bool)
        mask[0] = False
        mask[seen] = False
        if popularity is None:
            negatives = _uniform(rng, mask, spec.size - 1, n_items)
        else:
            weights = popularity * mask
            if np.count_nonzero(weights) < spec.size - 1:  # too few popular unseen items: fall back to all unseen
                weights = weights + mask * 1e-9
            negatives = rng.choice(n_items + 1, size=spec.size - 1, replace=False, p=weights / weights.sum())
        pool = np.concatenate([[sequence[-1]], negatives])
        order = rng.permutation(spec.size)
        candidates[row] = pool[order]
        target_index[row] = int(np.flatnonzero(order == 0)[0])
        histories.append(sequence[:-1])
    return CandidatePools(spec, users, candidates, target_index, histories)


def _uniform(rng: np.random.Generator, allowed: np.ndarray, count: int, n_items: int) -> np.ndarray:
    """``count`` distinct items where ``allowed``, uniformly: rejection sampling while the unseen items are
    most of the catalogue (the usual case), else a draw from the explicit list."""
    if allowed.sum() < 4 * count or allowed.mean() < 0.5:
        return rng.choice(np.flatnonzero(allowed), size=count, replace=False)
    chosen: list[int] = []
    taken = set()
    while len(chosen) < count:
        for item in rng.integers(1, n_items + 1, size=2 * count):
            item = int(item)
            if allowed[item] and item not in taken:
                taken.add(item)
                chosen.append(item)
                if len(chosen) == count:
                    break
    return np.asarray(chosen, dtype=np.int64)


def ranks_from_scores(scores: np.ndarray | torch.Tensor, target_index: np.ndarray) -> np.ndarray:
    """0-based rank of the target within each pool from (n, size) candidate scores, ties and non-finite
    scores against the target (the full ranking's rule)."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    return target_ranks(scores, torch.as_tensor(target_index, dtype=torch.long)).numpy()


@torch.no_grad()
def score_pools(model, pools: CandidatePools, batch_users: int = 256, device: torch.device | str = "cpu",
                max_len: int | None = None) -> np.ndarray:
    """Scores (n, size) of an ID-based model (anything with ``score_all`` and ``config.max_len``) on the pools.

    A plug-in whose scores depend on the batch (the authors' MLTFR keys, ``eval_batch_users``) is scored in
    its fixed batches, as :func:`metrics.evaluate` does."""
    was_training = model.training
    model.eval()
    max_len = max_len or model.config.max_len
    plugin = getattr(model, "plugin", None)
    batch_users = getattr(plugin, "eval_batch_users", lambda: None)() or batch_users
    if hasattr(plugin, "begin_evaluation"):
        plugin.begin_evaluation()
    out = []
    for start in range(0, len(pools), batch_users):
        history = pad_left(pools.histories[start:start + batch_users], max_len).to(device)
        scores = model.score_all(history)
        chosen = torch.as_tensor(pools.candidates[start:start + batch_users], device=device)
        out.append(scores.gather(1, chosen).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, pools.spec.size), dtype=np.float32)


def pool_metrics(ranks: Sequence[int], ks: Iterable[int] = POOL_KS) -> dict[str, float]:
    """Top-1 accuracy (= HR@1), HR@k and NDCG@k within the pool (one relevant item, IDCG = 1)."""
    from mltfrkit.train.metrics import metrics_from_ranks

    ranks = np.asarray(ranks)
    ks = sorted(set(ks) | {1})
    metrics = metrics_from_ranks(ranks, ks)
    metrics["top1"] = metrics["HR@1"]
    return metrics


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (users resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def evaluate_on_pools(model, pools: CandidatePools, ks: Iterable[int] = POOL_KS, **kwargs) -> dict:
    """Metrics of an ID-based model on the pools, with the per-user ranks (for confidence intervals)."""
    ranks = ranks_from_scores(score_pools(model, pools, **kwargs), pools.target_index)
    return {"pool": pools.spec.to_dict(), "users": len(pools), **pool_metrics(ranks, ks), "ranks": ranks.tolist()}
