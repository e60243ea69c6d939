"""Throughput of training and full-ranking evaluation, per backbone, on Pantry and Beauty.

Prints training sequences/s, evaluation users/s, and each backbone's epoch time relative to
SASRec, all measured in this one run, with every backbone at its default configuration (its
default loss included). Evaluation is timed twice, side by side: as the trainer runs it (chunks of
similar history length, each as wide as it needs, where the model's scores do not depend on leading
padding: ``mltfrkit.train.metrics.evaluate``) and with every chunk ``max_len`` wide in dataset order
(``trim_padding=False``, as before); ``x eval`` is whole / trimmed time, ``same`` whether the metrics agree.
The last line reads ``RATIOS eval_<dataset>_<backbone>=<x eval> ...``. ``--max-batches N`` times the first N batches of the epoch and scales
the time up to a full epoch (for quick looks at large datasets).

FMLP-Rec and BSARec encode every position of a training sequence from its own prefix (their
frequency filters are not causal), so their epoch cost grows with the sequence lengths.

    python benchmarks/train_eval_speed.py --data-dir ../shared/data [--datasets Pantry] [--backbones sasrec bert4rec ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from mltfrkit.data import load_dataset
from mltfrkit.models import backbone_names, build_backbone
from mltfrkit.train.metrics import evaluate
from mltfrkit.train.trainer import training_sequences


def time_epoch(model, data, batch_size=128, max_batches=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    model.train()
    starts = list(range(0, len(order), batch_size))[:max_batches]
    began = time.perf_counter()
    for start in starts:
        loss = model.loss(data[order[start:start + batch_size]], generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - began
    return seconds, min(len(order), len(starts) * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=["Pantry", "Beauty"])
    parser.add_argument("--backbones", nargs="+", default=backbone_names())
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=None, help="time only the first N batches of an epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"{'dataset':8s} {'backbone':10s} {'params':>9s} {'epoch s':>8s} {'train seq/s':>12s} "
          f"{'eval users/s':>13s} {'epoch/SASRec':>13s} {'whole users/s':>12s} {'x eval':>7s} {'same':>5s}")
    eval_ratios = {}
    for name in args.datasets:
        split = load_dataset(name, data_dir=args.data_dir)
        data = training_sequences(split, 50)
        hist, targets = split.eval_pairs("test")
        reference = None
        for backbone in ["sasrec"] + [b for b in args.backbones if b != "sasrec"]:
            torch.manual_seed(0)
            model = build_backbone(backbone, split.n_items)
            time_epoch(model, data, max_batches=3)  # warm-up
            seconds, sequences = time_epoch(model, data, max_batches=args.max_batches)
            seconds *= len(data) / sequences  # a full epoch
            sequences = len(data)
            began = time.perf_counter()
            trimmed = evaluate(model, hist, targets)
            eval_seconds = time.perf_counter() - began
            began = time.perf_counter()  # the same evaluation, every chunk max_len wide in dataset order
            whole = evaluate(model, hist, targets, trim_padding=False)
            whole_seconds = time.perf_counter() - began
            same = all(abs(trimmed[k] - whole[k]) < 1e-9 for k in whole)
            reference = reference or seconds
            params = sum(p.numel() for p in model.parameters())
            eval_ratios[f"{name}_{backbone}"] = whole_seconds / eval_seconds
            print(f"{name:8s} {backbone:10s} {params:9,d} {seconds:8.2f} {sequences / seconds:12.0f} "
                  f"{len(hist) / eval_seconds:13.0f} {seconds / reference:13.2f} {len(hist) / whole_seconds:12.0f} "
                  f"{whole_seconds / eval_seconds:7.2f} {'yes' if same else 'NO':>5s}", flush=True)
    print("RATIOS " + " ".join(f"eval_{key}={value:.2f}" for key, value in eval_ratios.items()))


if __name__ == "__main__":
    main()
