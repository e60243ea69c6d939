"""Preparation: chronological order, filters, id remapping, leave-one-out split, on-disk cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mltfrkit.paths import atomic_write_bytes

PREP_VERSION = 2  # bump when preparation logic changes: invalidates cached splits (2: repeated users in .txt)


class EmptyDatasetError(ValueError):
    """Filtering removed every user; the message says which filter removed what."""


@dataclass(frozen=True)
class PrepSettings:
    k_core: int = 0  # iterative k-core on users and items (0 = off)
    user_core: int = 0  # users need at least this many interactions before the item core (0 = off)
    min_user_len: int = 3  # leave-one-out needs >= 3 (train, validation, test)
    dedupe: bool = True  # drop exact duplicate (user, item, time) rows

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SplitData:
    """Chronological item sequences per user; items are 1..n_items, 0 is padding.

    Leave-one-out: ``seq[-1]`` = test target, ``seq[-2]`` = validation target, ``seq[:-2]`` = training.
    ``holdout="test"`` (the MLTFR authors' split, paper appendix C) has no validation target:
    ``seq[:-1]`` trains and ``seq[-1]`` is the test target. Set per run (``TrainConfig.holdout``,
    :meth:`with_holdout`), never in the cache.
    """

    name: str
    sequences: list[np.ndarray]
    item_ids: np.ndarray  # original id of item i at index i (index 0 = "<pad>")
    user_ids: np.ndarray
    settings: PrepSettings = field(default_factory=PrepSettings)
    source_sha256: str = ""
    item_titles: dict[int, str] | None = None
    filter_log: list[str] = field(default_factory=list)
    holdout: str = "valid_test"

    def with_holdout(self, holdout: str) -> "SplitData":
        """The same data under another holdout (a shallow copy; the sequences are shared)."""
        if holdout not in ("valid_test", "test"):
            raise ValueError(f"holdout must be 'valid_test' or 'test', not {holdout!r}")
        return self if holdout == self.holdout else replace(self, holdout=holdout)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def train_sequences(self) -> list[np.ndarray]:
        return [s[:-1] for s in self.sequences] if self.holdout == "test" else [s[:-2] for s in self.sequences]

    def eval_pairs(self, which: str) -> tuple[list[np.ndarray], np.ndarray]:
        """(history, target) per user: validation uses seq[:-2] -> seq[-2], test seq[:-1] -> seq[-1]."""
        if which == "valid" and self.holdout == "test":
            raise ValueError("this split has no validation target (holdout='test', the authors' protocol): "
                             "evaluate on 'test', or use holdout='valid_test'")
        if which == "valid":
            return [s[:-2] for s in self.sequences], np.array([s[-2] for s in self.sequences])
        if which == "test":
            return [s[:-1] for s in self.sequences], np.array([s[-1] for s in self.sequences])
        raise ValueError(f"which must be 'valid' or 'test', not {which!r}")

    def stats(self) -> dict:
        """The paper's Table 5 layout: users, items, average length, density."""
        lengths = np.array([len(s) for s in self.sequences])
        n = int(lengths.sum())
        return {"dataset": self.name, "users": self.n_users, "items": self.n_items, "interactions": n,
                "avg_length": float(lengths.mean()), "density": n / (self.n_users * self.n_items)}

    def fingerprint(self) -> str:
        payload = json.dumps({"sha": self.source_sha256, "settings": self.settings.to_dict(), "v": PREP_VERSION},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # -- cache -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        meta = {"name": self.name, "settings": self.settings.to_dict(), "source_sha256": self.source_sha256,
                "filter_log": self.filter_log, "item_titles": self.item_titles, "version": PREP_VERSION}
        import io

        buffer = io.BytesIO()
        np.savez(buffer, items=np.concatenate(self.sequences).astype(np.int64), lengths=lengths,
                 item_ids=self.item_ids.astype(str), user_ids=self.user_ids.astype(str),
                 meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "SplitData":
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            items, lengths = archive["items"], archive["lengths"]
            sequences = np.split(items, np.cumsum(lengths)[:-1])
            titles = {int(k): v for k, v in meta["item_titles"].items()} if meta["item_titles"] else None
            return cls(name=meta["name"], sequences=sequences, item_ids=archive["item_ids"],
                       user_ids=archive["user_ids"], settings=PrepSettings(**meta["settings"]),
                       source_sha256=meta["source_sha256"], item_titles=titles, filter_log=meta["filter_log"])


def _core_filter(frame: pd.DataFrame, k: int, log: list[str], users_only: bool = False) -> pd.DataFrame:
    """Iterate until every user (and item, unless users_only) has at least k interactions."""
    while True:
        before = len(frame)
        user_counts = frame.groupby("user")["item"].transform("size")
        frame = frame[user_counts >= k]
        if not users_only:
            item_counts = frame.groupby("item")["user"].transform("size")
            frame = frame[item_counts >= k]
        if len(frame) == before:
            return frame
        log.append(f"{'user' if users_only else ''}{k}-core removed {before - len(frame)} interactions")


def prepare_split(table: pd.DataFrame, name: str, settings: PrepSettings = PrepSettings(),
                  source_sha256: str = "", item_titles: dict[str, str] | None = None) -> SplitData:
    log: list[str] = []
    stages = [("raw file", len(table), table["user"].nunique())]
    frame = table
    if settings.dedupe:
        frame = frame.drop_duplicates(subset=["user", "item", "time"], keep="first")
        if len(frame) < len(table):
            log.append(f"dedupe removed {len(table) - len(frame)} duplicate (user, item, time) rows")
    if settings.user_core:
        frame = _core_filter(frame, settings.user_core, log, users_only=True)
        stages.append((f"user {settings.user_core}-core", len(frame), frame["user"].nunique()))
    if settings.k_core:
        frame = _core_filter(frame, settings.k_core, log)
        stages.append((f"{settings.k_core}-core", len(frame), frame["user"].nunique()))
    lengths = frame.groupby("user")["item"].transform("size")
    short = frame[lengths < settings.min_user_len]["user"].nunique()
    frame = frame[lengths >= settings.min_user_len]
    if short:
        log.append(f"dropped {short} users with fewer than {settings.min_user_len} interactions")
    stages.append((f"min_user_len={settings.min_user_len}", len(frame), frame["user"].nunique()))
    if frame.empty:
        trail = "; ".join(f"after {stage}: {n} interactions, {u} users" for stage, n, u in stages)
        raise EmptyDatasetError(f"dataset {name!r} is empty after filtering ({trail}). "
                                f"Loosen the filter that emptied it (k_core, user_core, min_user_len).")

    # Chronological with a stable tie-break on file order (MovieLens has many equal timestamps).
    frame = frame.sort_values(["user", "time", "order"], kind="stable")
    item_ids = np.array(sorted(frame["item"].unique()), dtype=object)
    item_index = {item: i + 1 for i, item in enumerate(item_ids)}
    codes = frame["item"].map(item_index).to_numpy(dtype=np.int64)
    user_codes, user_ids = pd.factorize(frame["user"], sort=False)
    boundaries = np.flatnonzero(np.diff(user_codes)) + 1
    sequences = np.split(codes, boundaries)
    titles = None
    if item_titles:
        titles = {item_index[i]: t for i, t in item_titles.items() if i in item_index}
    return SplitData(name=name, sequences=list(sequences), item_ids=np.concatenate([["<pad>"], item_ids]).astype(str),
                     user_ids=np.asarray(user_ids, dtype=str), settings=settings, source_sha256=source_sha256,
                     item_titles=titles, filter_log=log)
