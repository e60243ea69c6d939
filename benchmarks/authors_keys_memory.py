"""Memory of the authors' batch-wide keys on a prefix-encoded backbone: grouped (now) against every window
sharing every window's tokens (before), side by side in one run.

Under the authors' configuration (``keys="batch"``) a row's cross-attention reads the tokens selected for the
whole batch. FMLP-Rec and BSARec encode each training position from its own prefix window, so a batch of users
is many more windows; before, every window attended over all windows' K picks, a (W x L) x (W x K) attention:
a Pantry FMLP-Rec run (128 users, K = 10, 4 experts) passed 24 GB and was killed by the kernel. Now windows are
dealt into groups of at most ``eval_batch`` (128, the authors' batch of samples) that share keys, and only real
positions are queried (``CrossAttentionIntegration.grouped``).

Each row is a fresh subprocess that builds the authors' FMLP-Rec + MLTFR (their K, alpha and expert count, our
offline token tables, max_vocab 2000), runs one training step (forward, backward, Adam) on the first ``users``
training sequences, and reports the growth of its peak resident memory over the step and the step's time.

    python benchmarks/authors_keys_memory.py --data-dir ../shared/data [--dataset Pantry] [--users 16 24 32]

Keep ``--users`` small: ``before`` grows with the square of the window count (48 users of Pantry passed 12 GB and
were killed; 128 users passed 24 GB). On this 2-core laptop, 2026-12-06, beside two training runs: 16 users (142
windows) 2,628 MB before / 542 MB now (x4.8), 24 users 3,333 / 616 (x5.4), 32 users (265 windows) 8,821 / 986
(x8.9); the step took 56.1 s before and 2.5 s now at 32 users. The last line reads ``RATIOS users<n>=<before / now peak growth> ...``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def use_previous_computation() -> None:
    """Every window shares every window's tokens (the single-group path), whatever the batch's size."""
    from mltfrkit.mltfr.integration import CrossAttentionIntegration

    forward = CrossAttentionIntegration.forward

    def ungrouped(self, E, tokens, batch_keys=False, mask=None):
        return forward(self, E, tokens, True if batch_keys else False)

    CrossAttentionIntegration.forward = ungrouped


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(dataset: str, data_dir: str, users: int, backbone: str, before: bool) -> dict:
    import torch

    from mltfrkit.data import load_dataset
    from mltfrkit.runs import RunSpec, authors_configuration, build_model
    from mltfrkit.train.trainer import training_sequences

    if before:
        use_previous_computation()
    torch.set_num_threads(1)
    split = load_dataset(dataset, data_dir)
    data = training_sequences(split, 50)
    spec = authors_configuration(RunSpec(dataset, backbone, plugin="mltfr", plugin_options={"max_vocab": 2000}))
    torch.manual_seed(0)
    model, _ = build_model(spec, split.n_items)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    batch = data[:users]
    start = rss_mb()
    began = time.perf_counter()
    loss = model.loss(batch, torch.Generator().manual_seed(0))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"windows": int((batch[:, :-1] > 0).sum()), "growth_mb": max(0.0, peak - start), "step_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--dataset", default="Pantry")
    parser.add_argument("--backbone", default="fmlprec", choices=["fmlprec", "bsarec"])
    parser.add_argument("--users", type=int, nargs="+", default=[16, 24, 32])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    def run(users, before):
        child = {"dataset": args.dataset, "data_dir": args.data_dir, "users": users, "backbone": args.backbone,
                 "before": before}
        out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(child)],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"{args.dataset} {args.backbone} + MLTFR, the authors' configuration, one training step, 1 thread")
    print(f"{'users':>5s} {'windows':>8s} {'before MB':>10s} {'now MB':>8s} {'x memory':>9s} {'before s':>9s} {'now s':>6s}")
    ratios = {}
    for users in args.users:
        now, before = run(users, False), run(users, True)
        ratio = before["growth_mb"] / max(now["growth_mb"], 1.0)
        ratios[f"users{users}"] = ratio
        print(f"{users:5d} {now['windows']:8d} {before['growth_mb']:10.0f} {now['growth_mb']:8.0f} {ratio:9.1f} "
              f"{before['step_s']:9.2f} {now['step_s']:6.2f}", flush=True)
    print("RATIOS " + " ".join(f"{name}={value:.1f}" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
