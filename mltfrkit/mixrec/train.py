"""MixRec's own training entry point, writing runs the result store reads.

Why not the backbone trainer (:func:`mltfrkit.train.fit`): MixRec needs the user of every sequence
(its CF slots, section 2.3.2), the item text, AdamW with warm-up and a cosine schedule (section
3.1.4, Table 3), and checkpoints that hold only the trained parameters (the frozen LLM is most of
the model: SmolLM2-135M is 540 MB in float32, and it is reloaded, not saved). What it shares with
the backbones: the prepared leave-one-out splits (:mod:`mltfrkit.data`), full ranking over every
item with :func:`mltfrkit.train.metrics.target_ranks` and :func:`~mltfrkit.train.metrics.metrics_from_ranks`
(HR/NDCG@k, ties against the target), the run lock (:mod:`mltfrkit.locks`), atomic result files and
the store's layout: a run lives in ``<store>/<dataset>-mixrec-<variant>-<key>/result.json`` with a
``config`` (``dataset``, ``backbone = "mixrec"``, ``train.seed``, ``train.epochs``), ``best_valid``,
``test`` and per-epoch ``epochs``, so :meth:`mltfrkit.store.ResultStore.records` lists MixRec beside
SASRec. MixRec adds ``MRR`` (the paper's BO objective, section 2.3.3) to every metrics dict.

Resume: a checkpoint (trained parameters, optimizer, scheduler, the data generator's state and the
position in the epoch) is written every ``checkpoint_steps`` steps and after every epoch; the same
command resumes it exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mltfrkit.mixrec.model import MixRec, MixRecConfig
from mltfrkit.train.metrics import metrics_from_ranks, pad_left, target_ranks

BACKBONE = "mixrec"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PARTS = ("config", "model", "optimizer", "scheduler", "state")

# name -> loader returning (model, tokenizer); "SmolLM2-135M", folders and hub ids go through load_llm
_LLM_LOADERS: dict[str, Callable[[], tuple]] = {}
_LLM_CACHE: dict[str, tuple] = {}
_TEXT_CACHE: dict[tuple, dict[int, str]] = {}


def register_llm(name: str, loader: Callable[[], tuple]) -> None:
    """Make ``loader()`` -> (model, tokenizer) the LLM called ``name`` (tests register tiny random models)."""
    _LLM_LOADERS[name] = loader
    _LLM_CACHE.pop(name, None)


def get_llm(name: str) -> tuple:
    """(DecoderParts, tokenizer), loaded once per process: BO trials share the frozen LLM."""
    from mltfrkit.mixrec.llm import DecoderParts, load_llm

    if name not in _LLM_CACHE:
        model, tokenizer = _LLM_LOADERS[name]() if name in _LLM_LOADERS else load_llm(name)
        model.eval()
        _LLM_CACHE[name] = (DecoderParts(model), tokenizer)
    return _LLM_CACHE[name]


@dataclass
class MixRecTrainConfig:
    """Paper defaults (section 3.1.4, Table 3): AdamW, peak lr 5e-5, warm-up over the first 6% of the
    steps, cosine decay, 40 epochs; batch size 8 (Pantry's)."""

    epochs: int = 40
    batch_size: int = 8
    lr: float = 5e-5
    warmup: float = 0.06
    weight_decay: float = 0.0
    patience: int = 10
    valid_metric: str = "NDCG@10"
    ks: tuple[int, ...] = (5, 10, 20)
    seed: int = 0
    device: str = "auto"
    precision: str = "float32"  # "bfloat16": autocast (CPU or CUDA)
    exclude_history: bool = False
    eval_batch: int = 16
    checkpoint_steps: int = 200
    user_fraction: float = 1.0  # b of section 3.1.1: a random share of the users (Data_BO), 1.0 = all
    subset_seed: int = 0

    def __post_init__(self):
        self.ks = tuple(self.ks)
        for name in ("epochs", "batch_size", "patience", "eval_batch", "checkpoint_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, not {self.lr} (the paper: 5e-5)")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a share of the steps in [0, 1), not {self.warmup} (the paper: 0.06)")
        if not 0 < self.user_fraction <= 1:
            raise ValueError(f"user_fraction must be in (0, 1], not {self.user_fraction}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, not {self.precision!r}")
        if self.valid_metric != "MRR" and not any(self.valid_metric == f"{m}@{k}" for m in ("HR", "NDCG")
                                                 for k in self.ks):
            raise ValueError(f"valid_metric {self.valid_metric!r} is not computed: use MRR or HR/NDCG@k with k in "
                             f"{list(self.ks)}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ks"] = list(self.ks)
        return out


@dataclass
class MixRecSpec:
    """One MixRec run: dataset, LLM, item text, model and training options."""

    dataset: str
    llm: str = "SmolLM2-135M"
    # "titles": the dataset's own title file (mltfrkit.data.text: ml-100k / ml-1m .item, Amazon meta_*.json.gz
    # in the data directory); or a path to a title file (a CSV item,title, an Amazon meta file)
    text: str = "titles"
    model: MixRecConfig = field(default_factory=MixRecConfig)
    train: MixRecTrainConfig = field(default_factory=MixRecTrainConfig)
    backbone: str = BACKBONE

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = MixRecConfig(**self.model)
        if isinstance(self.train, dict):
            self.train = MixRecTrainConfig(**self.train)
        if self.text != "titles" and not Path(self.text).expanduser().exists():
            raise FileNotFoundError(f"text={self.text!r}: no such title file; use 'titles' (the dataset's own) or "
                                    f"the path of a CSV item,title or an Amazon meta_<Category>.json.gz")

    @property
    def plugin(self) -> str:  # the store's row names the variant where backbones name their plug-in
        return self.model.variant

    def to_dict(self, data_sha256: str = "", text_sha256: str = "") -> dict:
        return {"dataset": self.dataset, "backbone": BACKBONE, "plugin": self.model.variant, "llm": self.llm,
                "text": self.text, "model": self.model.to_dict(), "train": self.train.to_dict(),
                "data_sha256": data_sha256, "text_sha256": text_sha256}

    def key(self, data_sha256: str, text_sha256: str = "") -> str:
        payload = json.dumps(self.to_dict(data_sha256, text_sha256), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def run_dir(self, split, runs_dir: str | os.PathLike | None = None, data_dir=None) -> Path:
        """``<store>/<dataset>-mixrec-<variant>-<key>``, the store being ``ResultStore(runs_dir)``'s folder."""
        from mltfrkit.runs import store_root

        text_sha = text_digest(item_texts(self, split, data_dir))
        return store_root(runs_dir) / f"{split.name}-{BACKBONE}-{self.model.variant}-{self.key(split.source_sha256, text_sha)}"


def item_texts(spec: MixRecSpec, split, data_dir=None) -> dict[int, str]:
    """Item text by internal id, read by :func:`mltfrkit.data.text.item_titles` (shared with Table 4). A
    split built in memory with ``item_titles`` and no title file on disk uses those titles."""
    from mltfrkit.data.text import NoTitlesError, item_titles

    key = (split.name, split.source_sha256, split.n_items, spec.text, str(data_dir))
    if key not in _TEXT_CACHE:  # read once per process: run_dir, the key and the model all need it
        try:
            titles = item_titles(split, data_dir, titles_file=None if spec.text == "titles" else spec.text).titles
        except NoTitlesError as error:
            if not (spec.text == "titles" and split.item_titles):
                raise NoTitlesError(f"{error} For MixRec: MixRecSpec(text=PATH), or `mltfrkit mixrec ... --text PATH`.") \
                    from None
            titles = split.item_titles
        _TEXT_CACHE[key] = dict(titles)
    return _TEXT_CACHE[key]


def text_digest(texts: dict) -> str:
    return hashlib.sha256(json.dumps(sorted((int(k), str(v)) for k, v in texts.items())).encode()).hexdigest()


def subset_users(n_users: int, fraction: float, seed: int) -> np.ndarray:
    """Data_BO (section 3.1.1): a seeded random share of the users, sorted; all of them at fraction 1."""
    if fraction >= 1:
        return np.arange(n_users)
    count = max(1, round(fraction * n_users))
    return np.sort(np.random.default_rng(seed).choice(n_users, count, replace=False))


def training_windows(split, users: np.ndarray, history_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) users and (N, history_len + 1) left-padded windows: each user's last history_len + 1 training items."""
    train = split.train_sequences()
    kept = [u for u in users if len(train[u]) >= 2]
    return torch.as_tensor(kept, dtype=torch.long), pad_left([train[u] for u in kept], history_len + 1)


def lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over the first ``warmup`` share of the steps, then cosine decay to 0 (3.1.4, Table 3)."""
    warm = max(1, round(warmup * total_steps)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


@torch.no_grad()
def evaluate_mixrec(model: MixRec, split, users: np.ndarray, which: str, ks, batch: int = 16,
                    exclude_history: bool = False, device="cpu", autocast: bool = False) -> dict[str, float]:
    """Full ranking over every item for the given users: HR/NDCG@k (the toolkit's metrics) and MRR."""
    was_training = model.training
    model.eval()
    histories, targets = split.eval_pairs(which)
    ranks = []
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        history = pad_left([histories[u] for u in rows], model.config.history_len).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            scores = model.score_all(torch.as_tensor(rows, device=device), history)
        if exclude_history:
            for row, u in enumerate(rows):
                scores[row, torch.as_tensor(histories[u], device=device)] = float("-inf")
        ranks.append(target_ranks(scores, torch.as_tensor(targets[rows], device=device)).cpu())
    model.train(was_training)
    ranks = torch.cat(ranks).numpy()
    out = metrics_from_ranks(ranks, ks)
    out["MRR"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def build_mixrec(spec: MixRecSpec, split, device="cpu", data_dir=None) -> MixRec:
    from mltfrkit.mixrec.sentences import build_item_sentences, prompt_tokens
    from mltfrkit.train import seed_everything

    parts, tokenizer = get_llm(spec.llm)
    sentences = build_item_sentences(item_texts(spec, split, data_dir), split.n_items, tokenizer, spec.model.max_tokens,
                                     fallback={i: split.item_ids[i] for i in range(1, split.n_items + 1)})
    seed_everything(spec.train.seed)
    return MixRec(parts, sentences, prompt_tokens(tokenizer), split.n_users, spec.model).to(device)


def _hard_negatives(model: MixRec, spec: MixRecSpec, split, text_sha: str, log) -> list[torch.Tensor]:
    """Appendix A's hard sets, computed once per (data, text, LLM, sentence length, fraction) and cached under
    ``<cache>/mixrec/``: every run and BO trial on the same data shares them."""
    from mltfrkit.mixrec.hard import hard_negative_sets, llm_text_embeddings
    from mltfrkit.paths import cache_dir
    from mltfrkit.train.checkpoint import load_torch, save_torch

    identity = {"data": split.source_sha256, "split": split.fingerprint(), "text": text_sha, "llm": spec.llm,
                "llm_layers": spec.model.llm_layers, "max_tokens": spec.model.max_tokens,
                "fraction": spec.model.hard_fraction, "v": 1}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("mixrec") / f"hard-{split.name}-{digest}.pt"
    if path.exists():
        saved = load_torch(path, what="hard negatives", remedy="delete it; it is recomputed")
        return list(torch.split(saved["items"], saved["counts"].tolist()))
    started = time.perf_counter()
    sets = hard_negative_sets(split.train_sequences(), split.n_items, llm_text_embeddings(model),
                              model.config.hard_fraction, seed=0)
    save_torch(path, {"items": torch.cat(sets), "counts": torch.tensor([len(s) for s in sets])})
    if log:
        sizes = np.array([len(s) for s in sets[1:]])
        log(f"hard negatives (Appendix A): mean {sizes.mean():.1f} per item, {int((sizes == 0).sum())} items with "
            f"none ({time.perf_counter() - started:.1f}s; cached in {path})")
    return sets


def run_mixrec(spec: MixRecSpec, data_dir=None, runs_dir=None, split=None, log: Callable[[str], None] | None = print,
               stop_after_steps: int | None = None) -> dict | None:
    """Train (or resume, or read) a MixRec run; returns the result dict (also ``<run dir>/result.json``).
    ``runs_dir`` is the result store's root, as in ``ResultStore(runs_dir)`` (default ``$MLTFR_RUNS_DIR``).

    ``stop_after_steps`` stops after that many optimizer steps of this call, leaving a checkpoint
    (for tests of resume, and for budgeted sessions); it then returns None."""
    from mltfrkit.data import load_dataset
    from mltfrkit.locks import run_lock
    from mltfrkit.paths import ensure_directory
    from mltfrkit.store import read_result

    split = split if split is not None else load_dataset(spec.dataset, data_dir)
    run_dir = spec.run_dir(split, runs_dir, data_dir)
    ensure_directory(run_dir, "the run directory (--runs-dir / MLTFR_RUNS_DIR)")
    with run_lock(run_dir, log=log):
        stored = read_result(run_dir / "result.json")
        if stored is not None:
            stored["run_dir"] = str(run_dir)
            return stored
        return _train(spec, split, run_dir, log, stop_after_steps, data_dir)


def _train(spec: MixRecSpec, split, run_dir: Path, log, stop_after_steps: int | None, data_dir=None) -> dict | None:
    from mltfrkit.paths import atomic_write_json
    from mltfrkit.train.checkpoint import CheckpointError, load_torch, save_torch
    from mltfrkit.train.trainer import library_versions, resolve_device

    cfg = spec.train
    device = resolve_device(cfg.device)
    text_sha = text_digest(item_texts(spec, split, data_dir))
    config = spec.to_dict(split.source_sha256, text_sha)
    model = build_mixrec(spec, split, device, data_dir)
    model.hard_negatives = _hard_negatives(model, spec, split, text_sha, log) if "cl" in spec.model.losses_used() \
        else None
    users = subset_users(split.n_users, cfg.user_fraction, cfg.subset_seed)
    train_users, windows = training_windows(split, users, spec.model.history_len)
    steps_per_epoch = math.ceil(len(windows) / cfg.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup))
    state = {"epoch": 0, "step_in_epoch": 0, "best_metric": -1.0, "best_epoch": 0, "history": [], "seconds": 0.0,
             "loss_sum": 0.0, "terms": {}, "generator": None, "best_state": None}
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists():
        saved = load_torch(checkpoint, map_location=device)
        missing = [k for k in CHECKPOINT_PARTS if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise CheckpointError(f"{checkpoint}: not a MixRec checkpoint (lacks {', '.join(missing)}); delete it "
                                  f"to train the run again from the start")
        if json.dumps(saved["config"], sort_keys=True) != json.dumps(config, sort_keys=True):
            raise ValueError(f"{checkpoint} belongs to a different configuration; delete it to start over")
        model.load_trainable_state(saved["model"], str(checkpoint))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        if log:
            log(f"resumed from {checkpoint}: epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")
    autocast = cfg.precision == "bfloat16"

    def save():
        save_torch(checkpoint, {"config": config, "model": {k: v.detach() for k, v in model.trainable_state().items()},
                                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "state": state})

    if log:
        trainable = sum(p.numel() for p in params)
        log(f"{split.name} MixRec ({spec.model.variant}, {spec.llm}): {len(users)} users, {len(windows)} training "
            f"windows, {steps_per_epoch} steps/epoch, {trainable:,} trainable parameters; run dir {run_dir}")
    steps_this_call = 0
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(windows), generator=generator)
        if state["generator"] is not None:  # resumed inside this epoch: the stream continues where it stopped
            generator.set_state(state["generator"])
        model.train()
        for step in range(state["step_in_epoch"], steps_per_epoch):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                losses = model.losses(train_users[rows].to(device), windows[rows].to(device), generator)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            scheduler.step()
            total = float(losses["total"].detach())
            if not math.isfinite(total):
                raise ValueError(f"MixRec training diverged in epoch {epoch} (loss {total}); "
                                 f"lower the learning rate (lr={cfg.lr})")
            state["loss_sum"] += total
            for name, value in losses.items():
                state["terms"][name] = state["terms"].get(name, 0.0) + float(value.detach())
            state["step_in_epoch"] = step + 1
            steps_this_call += 1
            stopping = stop_after_steps is not None and steps_this_call >= stop_after_steps
            if stopping or (step + 1) % cfg.checkpoint_steps == 0:
                state["generator"] = generator.get_state()
                state["epoch_seconds"] = state.get("epoch_seconds", 0.0) + time.perf_counter() - started
                started = time.perf_counter()
                save()
            if stopping:
                if log:
                    log(f"stopped after {steps_this_call} steps (epoch {epoch}, step {step + 1}); checkpoint {checkpoint}")
                return None
        valid = evaluate_mixrec(model, split, users, "valid", cfg.ks, cfg.eval_batch, cfg.exclude_history, device,
                                autocast)
        seconds = state.get("epoch_seconds", 0.0) + time.perf_counter() - started  # the whole epoch, resumed or not
        n = max(1, state["step_in_epoch"])
        entry = {"epoch": epoch, "loss": state["loss_sum"] / n, "terms": {k: v / n for k, v in state["terms"].items()},
                 "valid": valid, "seconds": seconds}
        state["history"].append(entry)
        state["seconds"] += seconds
        improved = valid[cfg.valid_metric] > state["best_metric"]
        if improved:
            state["best_metric"], state["best_epoch"] = valid[cfg.valid_metric], epoch
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.trainable_state().items()}
        if log:
            shown = f"valid {cfg.valid_metric} {valid[cfg.valid_metric]:.4f}" + \
                (f"  MRR {valid['MRR']:.4f}" if cfg.valid_metric != "MRR" else "")
            log(f"epoch {epoch:3d}  loss {entry['loss']:.4f}  {shown}  ({seconds:.1f}s){'  *' if improved else ''}")
        state.update(epoch=epoch, step_in_epoch=0, loss_sum=0.0, terms={}, generator=None, epoch_seconds=0.0)
        save()
        if epoch - state["best_epoch"] >= cfg.patience:
            break
    if state["best_state"] is not None:
        model.load_trainable_state(state["best_state"], "the best epoch's weights")
    test = evaluate_mixrec(model, split, users, "test", cfg.ks, cfg.eval_batch, cfg.exclude_history, device, autocast)
    best_valid = next((h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    result = {"config": config, "best_epoch": state["best_epoch"], "best_valid": best_valid, "test": test,
              "epochs": state["history"], "seconds": state["seconds"], "device": str(device),
              "users": len(users), "versions": {**library_versions(), **_llm_versions()}, "run_dir": str(run_dir)}
    atomic_write_json(run_dir / "result.json", result)
    return result


def _llm_versions() -> dict:
    out = {}
    for name in ("transformers", "botorch"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def spec_with(spec: MixRecSpec, **model_changes) -> MixRecSpec:
    return replace(spec, model=replace(spec.model, **model_changes))


def spec_from_config(config: dict) -> MixRecSpec:
    """The MixRecSpec a stored result's (or checkpoint's) ``config`` describes."""
    model = dict(config["model"])
    if model.get("design") is not None:
        model["design"] = tuple(model["design"])
    return MixRecSpec(config["dataset"], llm=config["llm"], text=config["text"], model=MixRecConfig(**model),
                      train=MixRecTrainConfig(**config["train"]))


def load_trained_mixrec(run_dir, data_dir=None, split=None, device="cpu"):
    """(spec, split, model) of a stored MixRec run with its selected (best) weights: nothing is retrained.
    What downstream readers (candidate pools, notebooks) use, as :func:`mltfrkit.runs.load_trained` for backbones."""
    from mltfrkit.data import load_dataset
    from mltfrkit.train.checkpoint import load_torch

    from mltfrkit.archive import refuse_if_imported

    run_dir = Path(run_dir)
    refuse_if_imported(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no MixRec checkpoint under {run_dir}: train the run first (mltfrkit mixrec train)")
    saved = load_torch(path, map_location=device)
    spec = spec_from_config(saved["config"])
    split = split if split is not None else load_dataset(spec.dataset, data_dir)
    if saved["config"]["data_sha256"] != split.source_sha256:
        raise ValueError(f"{run_dir} was trained on another version of {spec.dataset}'s data file; point data_dir at "
                         f"the file it was trained on")
    model = build_mixrec(spec, split, device, data_dir)
    model.load_trainable_state(saved["state"]["best_state"] or saved["model"], str(path))
    model.eval()
    return spec, split, model


# --------------------------------------------------------------------------- candidate pools (Table 4)


@torch.no_grad()
def score_mixrec_pools(model: MixRec, pools, batch: int = 16, device="cpu", autocast: bool = False) -> np.ndarray:
    """(n, size) scores of a MixRec model on candidate pools (:mod:`mltfrkit.train.pools`): each pooled user's
    full-ranking score vector (:meth:`MixRec.score_all`, the one :func:`evaluate_mixrec` ranks, on the same
    test history and with the same autocast) restricted to the user's candidates, in presentation order."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pools), batch):
        users = torch.as_tensor(pools.users[start:start + batch], dtype=torch.long, device=device)
        history = pad_left(pools.histories[start:start + batch], model.config.history_len).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            scores = model.score_all(users, history)
        chosen = torch.as_tensor(pools.candidates[start:start + batch], device=device)
        out.append(scores.gather(1, chosen).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, pools.spec.size), dtype=np.float32)


def mixrec_pool_evaluation(run_dir, pool, data_dir=None, split=None, device="cpu") -> dict:
    """A finished MixRec run's metrics on candidate pools, with the per-user ranks (ties and non-finite scores
    against the target, :func:`mltfrkit.train.pools.ranks_from_scores`), from its selected weights: nothing is
    retrained. Cached in ``<run dir>/pools/<pool key>.json`` as :func:`mltfrkit.store.pool_evaluation` does
    for the backbones (which calls this for a MixRec run)."""
    from mltfrkit.paths import atomic_write_json
    from mltfrkit.store import RESULT, read_json, read_result
    from mltfrkit.train.pools import make_pools, pool_metrics, ranks_from_scores

    run_dir = Path(run_dir)
    result = read_result(run_dir / RESULT)
    if result is None:
        raise FileNotFoundError(f"{run_dir} has no finished result ({RESULT}): train the run first "
                                f"(mltfrkit mixrec train ...)")
    path = run_dir / "pools" / f"{pool.key(result['config'].get('data_sha256', ''))}.json"
    cached = read_json(path)
    if cached is not None and "ranks" in cached:
        return cached
    spec, split, model = load_trained_mixrec(run_dir, data_dir, split, device)
    pools = make_pools(split, pool)
    scores = score_mixrec_pools(model, pools, spec.train.eval_batch, device, spec.train.precision == "bfloat16")
    ranks = ranks_from_scores(scores, pools.target_index)
    evaluation = {"pool": pool.to_dict(), "users": len(pools), **pool_metrics(ranks), "ranks": ranks.tolist(),
                  "run_dir": str(run_dir), "dataset": split.name, "data_sha256": split.source_sha256}
    atomic_write_json(path, evaluation)
    return evaluation
