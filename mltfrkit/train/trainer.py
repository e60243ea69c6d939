"""The training loop: Adam, validation NDCG@20 early stopping, best weights restored, the test
split evaluated once at the end, checkpoints every epoch and exact resume."""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mltfrkit.data.split import SplitData
from mltfrkit.paths import atomic_write_json
from mltfrkit.train.compiled import Steps, graphs_compiled, normalise_mode
from mltfrkit.train.checkpoint import (load_checkpoint, numpy_rng_from_plain, numpy_rng_to_plain, python_rng_from_plain,
                                       python_rng_to_plain, save_torch)
from mltfrkit.train.memory import check_memory
from mltfrkit.train.metrics import evaluate, pad_left

CHECKPOINT = "checkpoint.pt"
HOLDOUTS = ("valid_test", "test")
# Every figure selected on the test set carries this label wherever it is stored or shown.
ORACLE_LABEL = "test-selected (authors' protocol, optimistic)"


class DivergedError(ValueError):
    """The training loss became NaN or infinite; the message names the epoch and what to change."""


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without validation improvement before stopping
    # Plateau-proof stopping: the patience grows to patience_relative x the best epoch so far (at 1.0: stop
    # after max(patience, best epoch) epochs without improvement), and no run stops before min_epochs.
    # benchmarks/early_stopping.py chose the default 1.0 (README "Early stopping"): plain patience 10 stopped 2 of
    # 3 ml-100k SASRec seeds on a plateau (test NDCG@20 .0545 against .0585), while on Pantry, whose best epoch
    # is early, the two rules stop at the same epoch. 0 = plain patience (the rule before; the authors' runs).
    patience_relative: float = 1.0
    min_epochs: int = 0
    valid_metric: str = "NDCG@20"
    ks: tuple[int, ...] = (5, 10, 20)
    seed: int = 0
    device: str = "auto"
    exclude_history: bool = False
    eval_max_bytes: int = 256 << 20
    # "last": each user's most recent max_len + 1 training items (SASRec's own practice); "all": the whole
    # training history in windows of max_len + 1, every training item a target exactly once.
    windows: str = "last"
    # With "all": a window ends every `stride` items and its loss scores only its last `stride` targets, so
    # every target sees at least max_len + 1 - stride items of context (all of them near the start of a
    # history). None = max_len: the cheapest (windows overlap by one item except near a history's
    # start), but a target early in a window sees little history. Smaller strides approach RecBole's
    # one-sample-per-prefix training (stride 1: the same contexts) at about max_len / stride times the cost.
    stride: int | None = None
    # "valid_test": leave-one-out, last item = test, second to last = validation (model selection and early
    # stopping on validation). "test": the MLTFR authors' split (paper appendix C): no validation, every item but
    # the last trains, and selection and stopping can only use the test curve (reported as `test_oracle` only).
    holdout: str = "valid_test"
    # Evaluate the test split after every epoch too: the per-epoch curve goes into the result's `epochs` and the
    # best test epoch into `test_oracle` (the authors' selection). It never changes `test` (validation-selected).
    test_every_epoch: bool = False
    # torch.compile (inductor) for the training step (forward + loss, and its backward) and full-ranking scoring:
    # False (eager), True (both), "train" or "score" (mltfrkit/train/compiled.py). In the run's key when on: a
    # compiled run's numbers differ from an eager one's by float rounding, so the two are different runs.
    compile: bool | str = False

    def __post_init__(self):
        self.compile = normalise_mode(self.compile)
        if self.windows not in ("last", "all"):
            raise ValueError(f"windows must be 'last' or 'all', not {self.windows!r}")
        if self.stride is not None and self.windows != "all":
            raise ValueError("stride applies to windows='all' only; set windows='all' or leave stride unset")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1, not {self.stride}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, not {self.lr} (the default is 1e-3)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, not {self.weight_decay}")
        if self.eval_max_bytes < 1:
            raise ValueError(f"eval_max_bytes must be at least 1, not {self.eval_max_bytes}")
        if not (math.isfinite(self.patience_relative) and self.patience_relative >= 0):
            raise ValueError(f"patience_relative must be a finite number >= 0, not {self.patience_relative}")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, not {self.min_epochs}")
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {list(HOLDOUTS)}, not {self.holdout!r}")

    def should_stop(self, epoch: int, best_epoch: int) -> bool:
        """Early stopping after ``epoch`` epochs whose best was ``best_epoch``."""
        wait = max(self.patience, math.ceil(self.patience_relative * best_epoch))
        return epoch - best_epoch >= wait and epoch >= self.min_epochs

    @property
    def tracks_test(self) -> bool:
        """Whether every epoch is evaluated on the test split (always under the authors' holdout)."""
        return self.test_every_epoch or self.holdout == "test"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ks"] = list(self.ks)
        if out["windows"] == "last":  # added after runs were stored: left out at its default, so their keys hold
            del out["windows"], out["stride"]
        # The same for these, at the value runs were stored with before each existed: patience_relative's
        # default became 1.0 later, so 1.0 is in every key and a key without it means plain patience (0.0).
        for name, default in (("holdout", "valid_test"), ("test_every_epoch", False), ("patience_relative", 0.0),
                              ("min_epochs", 0), ("compile", False)):
            if out[name] == default:
                del out[name]
        return out


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine (or this torch build, {torch.__version__}) has no CUDA; "
                         f"use --device cpu or auto")
    return resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def library_versions() -> dict[str, str]:
    import mltfrkit

    return {"mltfrkit": mltfrkit.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _rng_state() -> dict:
    """Every RNG state as ints, lists and tensors: a checkpoint loads with ``weights_only=True``."""
    state = {"python": python_rng_to_plain(random.getstate()), "numpy": numpy_rng_to_plain(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    random.setstate(python_rng_from_plain(state["python"]))
    np.random.set_state(numpy_rng_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, payload: dict) -> None:
    save_torch(path, payload)  # unique temporary name, fsync, rename: concurrent writers never collide


@dataclass
class EpochLog:
    epoch: int
    loss: float
    valid: dict[str, float]
    seconds: float
    test: dict[str, float] | None = None  # only with TrainConfig.tracks_test


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly where it stopped."""

    epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def training_windows(split: SplitData, max_len: int, windows: str = "last",
                     stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, max_len + 1) left-padded training sequences, and which of their max_len targets the loss
    scores ((N, max_len) bool; None: every real one). ``windows="last"``: one per user with at least
    one training pair; ``"all"``: windows ending every ``stride`` items (default max_len) of each
    history, each scoring the targets no later window scores, so every training item is a target once."""
    usable = [s for s in split.train_sequences() if len(s) >= 2]
    if windows == "last":
        return pad_left(usable, max_len + 1), None
    stride = max_len if stride is None else stride  # the windows nearest a history's start overlap more
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride must be between 1 and max_len={max_len}, not {stride}")
    span = max_len + 1
    chunks, scored_counts = [], []
    for sequence in usable:
        first_end = min(len(sequence), span)  # the window at the history's start scores all of its targets
        for end in range(len(sequence), first_end, -stride):
            chunks.append(sequence[end - span:end])
            scored_counts.append(end - max(end - stride, first_end))
        chunks.append(sequence[:first_end])
        scored_counts.append(first_end - 1)
    scored = torch.arange(max_len).flip(0) < torch.tensor(scored_counts).unsqueeze(1)  # each window's last k
    return pad_left(chunks, span), scored


def training_sequences(split: SplitData, max_len: int) -> torch.Tensor:
    """Each user's last max_len + 1 training items (the default training data), left-padded."""
    return training_windows(split, max_len)[0]


def fit(model: torch.nn.Module, split: SplitData, config: TrainConfig, run_dir: str | Path | None = None,
        run_config: dict | None = None, progress: bool = True,
        on_epoch_end: Callable[[EpochLog], None] | None = None, log: Callable[[str], None] | None = print) -> dict:
    """Train with early stopping, restore the best weights, evaluate the test split once.

    With ``run_dir``, a checkpoint is written after every epoch and an existing one is resumed
    (its stored config must match). Returns the result dict (also the result JSON's content).
    """
    device = resolve_device(config.device)
    full_config = {"train": config.to_dict(), **(run_config or {})}
    seed_everything(config.seed)
    model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                 weight_decay=config.weight_decay)
    state = TrainState()
    checkpoint = Path(run_dir) / CHECKPOINT if run_dir else None
    if checkpoint and checkpoint.exists():
        saved = load_checkpoint(checkpoint, map_location=device)  # weights_only: loading runs no code
        if json.dumps(saved["config"], sort_keys=True) != json.dumps(full_config, sort_keys=True, default=str):
            raise ValueError(f"{checkpoint} belongs to a different configuration; use another run directory "
                             f"or delete it to start over")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
        _restore_rng(saved["rng"])
        if log:
            log(f"resumed from {checkpoint} after epoch {state.epoch}")

    split = split.with_holdout(config.holdout)
    check_memory(model, split, config)  # an impossible setting is refused with one that fits, before any allocation
    train_seqs, scored = training_windows(split, model.config.max_len, config.windows, config.stride)
    test_hist, test_targets = split.eval_pairs("test")
    has_valid = config.holdout == "valid_test"
    valid_hist, valid_targets = split.eval_pairs("valid") if has_valid else ([], None)

    steps = Steps(model, config.compile, device)  # the model's own methods unless compiled (not wrapped)
    compiled_graphs = []  # with compile: graphs dynamo compiled in each epoch (0 after the first: no recompiles)

    def evaluate_on(histories, targets):
        return evaluate(model, histories, targets, config.ks, max_bytes=config.eval_max_bytes,
                        exclude_history=config.exclude_history, device=device, score=steps.score)
    finished = config.should_stop(state.epoch, state.best_epoch) if state.epoch else False
    while state.epoch < config.epochs and not finished:
        started, graphs_before = time.perf_counter(), graphs_compiled()
        epoch = state.epoch + 1
        model.train()
        # Data order and negatives come from a generator seeded by (seed, epoch): resume-exact.
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_seqs), generator=generator)
        total, batches = 0.0, 0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch}", leave=False,
                   disable=not progress)
        for start in bar:
            rows = order[start:start + config.batch_size]
            batch = train_seqs[rows].to(device)
            if scored is None:
                loss = steps.loss(batch, generator)
            else:
                loss = steps.loss(batch, generator, scored=scored[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
            bar.set_postfix(loss=f"{total / batches:.4f}", refresh=False)
        if not math.isfinite(total):  # before anything of this epoch is evaluated, kept or checkpointed
            raise DivergedError(f"training diverged in epoch {epoch}: the loss is {total / max(batches, 1)} "
                                f"(lr {config.lr}); nothing of this epoch was kept and no result was written. "
                                f"Lower the learning rate (--lr, for example {config.lr / 10:g})")
        valid = evaluate_on(valid_hist, valid_targets) if has_valid else {}
        test_now = evaluate_on(test_hist, test_targets) if config.tracks_test else None
        seconds = time.perf_counter() - started
        compiled_graphs.append(graphs_compiled() - graphs_before)
        state.epoch, state.seconds = epoch, state.seconds + seconds
        curve = valid if has_valid else test_now  # what selects: validation, or the test set (authors' holdout)
        improved = curve[config.valid_metric] > state.best_metric
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = curve[config.valid_metric], epoch, 0
            state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        entry = EpochLog(epoch, total / max(batches, 1), valid, seconds, test_now)
        state.history.append(asdict(entry))
        if log:
            marks = "  *" if improved else ""
            shown = f"valid HR@20 {valid.get('HR@20', float('nan')):.4f}  NDCG@20 {valid.get('NDCG@20', float('nan')):.4f}"
            if test_now is not None:
                shown = (shown + "  " if has_valid else "") + \
                    f"test HR@20 {test_now['HR@20']:.4f}  NDCG@20 {test_now['NDCG@20']:.4f}"
            log(f"epoch {epoch:3d}  loss {entry.loss:.4f}  {shown}  ({seconds:.1f}s){marks}")
        if checkpoint:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(checkpoint, {"config": json.loads(json.dumps(full_config, default=str)),
                                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "state": asdict(state), "rng": _rng_state()})
        if on_epoch_end:
            on_epoch_end(entry)
        finished = config.should_stop(state.epoch, state.best_epoch)

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    # The validation-selected figure: the test split read once, with the restored weights. None under the
    # authors' holdout, which has no validation split to select with.
    test = evaluate_on(test_hist, test_targets) if has_valid else None
    best_valid = next((h["valid"] for h in state.history if h["epoch"] == state.best_epoch), {})
    result = {"config": json.loads(json.dumps(full_config, default=str)), "best_epoch": state.best_epoch,
              "best_valid": best_valid, "test": test, "epochs": state.history, "seconds": state.seconds,
              "stopped_early": config.should_stop(state.epoch, state.best_epoch), "device": str(device),
              "versions": library_versions()}
    if config.tracks_test:
        result["test_oracle"] = test_oracle(state.history, config.valid_metric)
    if config.compile is not False:  # this session's epochs only (a resumed run compiles again)
        result["compile"] = {"mode": config.compile, "graphs_per_epoch": compiled_graphs}
    return result


def test_oracle(history: list[dict], metric: str = "NDCG@20") -> dict | None:
    """The best epoch by the test curve itself (the MLTFR authors' model selection): optimistic by
    construction, so it is stored apart from ``test`` and labelled wherever it is shown."""
    tested = [h for h in history if h.get("test")]
    if not tested:
        return None
    best = max(tested, key=lambda h: h["test"][metric])  # the first of equal values, as the trainer's "improved"
    return {"epoch": best["epoch"], "metrics": best["test"], "selected_by": f"test {metric}", "label": ORACLE_LABEL}


def write_result(path: str | Path, result: dict) -> Path:
    """Atomic: a reader sees no file or the whole file, never a partial one."""
    return atomic_write_json(path, result)
