"""An up-front estimate of a run's largest tensor, so that an impossible setting (``--batch-size
1000000 --loss ce``, ``--set max_len=100000``) is refused before training with the figure and a
setting that fits, instead of ending in a raw allocator error mid-epoch.

The estimate is deliberately simple: the largest of a few tensors each step or evaluation chunk
materialises (the padded training windows, full-softmax logits, the negatives' clash mask, the
(L x L) attention masks and weights, FMLP-Rec / BSARec's per-prefix windows, an evaluation chunk's
attention). It is compared with a budget: ``MLTFR_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix),
else half the memory available now (``/proc/meminfo``); without either, nothing is checked.
"""

from __future__ import annotations

import math
import os

from mltfrkit.train.metrics import users_per_chunk


class MemoryBudgetError(ValueError):
    """A setting whose largest tensor would not fit the memory budget; the message gives one that fits."""


def memory_budget() -> tuple[int | None, str]:
    """(bytes, where the figure comes from); (None, ...) when it cannot be known."""
    explicit = os.environ.get("MLTFR_MEMORY_LIMIT", "").strip()
    if explicit:
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        scale = units.get(explicit[-1].upper(), 1)
        number = explicit[:-1] if explicit[-1].upper() in units else explicit
        try:
            return int(float(number) * scale), "MLTFR_MEMORY_LIMIT"
        except ValueError:
            raise MemoryBudgetError(f"MLTFR_MEMORY_LIMIT={explicit!r} is not a size; give bytes or e.g. 8G") from None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2, "half the memory available now; MLTFR_MEMORY_LIMIT sets it"
    except (OSError, ValueError, IndexError):
        pass
    return None, "unknown"


def count_windows(lengths: list[int], max_len: int, windows: str, stride: int | None) -> int:
    """How many training windows :func:`mltfrkit.train.trainer.training_windows` makes, without making them."""
    usable = [n for n in lengths if n >= 2]
    if windows == "last":
        return len(usable)
    stride = max_len if stride is None else stride
    span = max_len + 1
    return sum(1 + math.ceil(max(0, n - min(n, span)) / stride) for n in usable)


def count_targets(lengths: list[int], max_len: int, windows: str) -> int:
    """How many next-item targets one epoch's windows score."""
    usable = [n for n in lengths if n >= 2]
    return sum(min(n - 1, max_len) if windows == "last" else n - 1 for n in usable)


def largest_tensor(model, n_windows: int, batch_size: int, eval_users: int, eval_max_bytes: int,
                   max_len: int | None = None, targets_per_window: float | None = None) -> tuple[int, str]:
    """(bytes, what) of the largest tensor a training step or an evaluation chunk would hold."""
    from mltfrkit.models.base import PrefixEncodedMixin

    config = model.config
    L = max_len or config.max_len
    d, heads, n = config.hidden_size, getattr(config, "n_heads", 1), model.n_items + 1
    B = max(1, min(batch_size, n_windows))
    attention = type(model).__name__ not in ("FMLPRec", "LinRec")
    plugin = getattr(model, "plugin", None)
    extra = getattr(plugin, "eval_bytes_per_user", lambda: 0)() if plugin is not None else 0
    chunk = max(1, min(eval_users, users_per_chunk(model.n_items, eval_max_bytes, extra)))
    candidates = [(n_windows * (L + 1) * 8, f"the padded training windows: {n_windows:,} x {L + 1:,} items x 8 bytes"),
                  (B * L * L, f"the attention mask of a batch: {B:,} windows x {L:,} x {L:,} positions")]
    if config.loss == "ce":  # logits, their softmax and its gradient: three of them, over the scored targets
        targets = max(1, math.ceil(B * (L if targets_per_window is None else min(L, targets_per_window))))
        candidates.append((3 * targets * n * 4, f"the full-softmax logits of a batch, with their softmax and gradient: "
                                                f"3 x {targets:,} targets x {n:,} items x 4 bytes"))
    else:
        candidates.append((B * L * (L + 1), f"the negatives' clash mask: {B:,} windows x {L:,} x {L + 1:,}"))
    if attention:
        candidates.append((B * heads * L * L * 4, f"the attention weights of a batch: {B:,} windows x {heads} heads x "
                                                  f"{L:,} x {L:,} x 4 bytes"))
        candidates.append((chunk * heads * L * L * 4, f"the attention weights of an evaluation chunk: {chunk:,} "
                                                      f"users x {heads} heads x {L:,} x {L:,} x 4 bytes"))
    if isinstance(model, PrefixEncodedMixin):
        candidates.append((B * L * L * d * 4, f"the per-prefix windows of a batch: {B:,} x {L:,} windows x {L:,} x "
                                              f"{d} x 4 bytes"))
        if attention:
            candidates.append((B * L * heads * L * L * 4, f"the per-prefix attention of a batch: {B:,} x {L:,} "
                                                          f"windows x {heads} heads x {L:,} x {L:,} x 4 bytes"))
    return max(candidates)


def _gb(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale // 4:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} bytes"


def check_memory(model, split, config) -> None:
    """Raise :class:`MemoryBudgetError` when the run's largest tensor would exceed the budget."""
    budget, source = memory_budget()
    if budget is None:
        return
    lengths = [len(s) for s in split.train_sequences()]
    max_len = model.config.max_len
    n_windows = count_windows(lengths, max_len, config.windows, config.stride)

    def size(batch: int, length: int = max_len) -> tuple[int, str]:
        windows = count_windows(lengths, length, config.windows, config.stride if config.windows == "all" and
                                config.stride is not None and config.stride <= length else None)
        per_window = count_targets(lengths, length, config.windows) / max(windows, 1)
        return largest_tensor(model, windows, batch, split.n_users, config.eval_max_bytes, length, per_window)

    needed, what = size(config.batch_size)
    if needed <= budget:
        return
    batch = min(config.batch_size, max(n_windows, 1))
    if size(1)[0] <= budget:  # the batch size drives it: the largest that fits
        low, high = 1, batch
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if size(middle)[0] <= budget else (low, middle - 1)
        fix = f"use --batch-size {low} or less" + (" (or --loss bce: no full-softmax logits)"
                                                   if model.config.loss == "ce" else "")
    else:  # the sequence length drives it
        low, high = 1, max_len
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if size(config.batch_size, middle)[0] <= budget else (low, middle - 1)
        longest = max(lengths, default=0)
        fix = f"use --set max_len={low} or less (the longest training history here has {longest:,} items)"
    raise MemoryBudgetError(f"the largest tensor of this run would take about {_gb(needed)} ({what}), more than the "
                            f"memory budget of {_gb(budget)} ({source}): {fix}")
