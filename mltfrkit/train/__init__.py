"""Training loop, early stopping, checkpoints and full-ranking metrics."""

from mltfrkit.train.metrics import evaluate, metrics_from_ranks, pad_left, target_ranks
from mltfrkit.train.trainer import DivergedError, TrainConfig, fit, resolve_device, seed_everything, write_result

__all__ = ["DivergedError", "TrainConfig", "evaluate", "fit", "metrics_from_ranks", "pad_left", "resolve_device",
           "seed_everything", "target_ranks", "write_result"]
