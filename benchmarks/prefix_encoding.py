"""FMLP-Rec's and BSARec's training step, as computed now against as computed before, side by side in one run.

Their filters are not causal, so each training position is encoded from its own prefix window
(``PrefixEncodedMixin``): a batch of 128 users of ml-100k is about 5,000 windows of 50 positions, and an epoch
took about 3 minutes with MLTFR. Three exact rewrites cut that:

- ``last_only``: a window is used for its last position only, so the last block's feed-forward sublayer runs
  on that position alone (``PostNormBackbone.encode(last_only=True)``), not on all 50;
- table-first projection: with more picks (windows x K) than table rows (2,000) in training, each expert's keys
  and values come from its table projected once and its rows picked (``PickedTokens.project``), not from every
  pick projected one by one;
- real positions only: MLTFR's cross-attention, gate and mix run from each window's first real position on
  (``MLTFRPlugin._forward_at_real_positions``), not over its leading padding (half a window on average), with
  the dropout masks drawn whole as before (the same random stream).

``before`` re-creates the computation before all three in the same code (the window encoded whole and sliced
afterwards; every pick materialised as a token, then projected; the plug-in over whole windows); ``whole`` has
only the third rewrite patched out, to time it alone. Each row is a fresh subprocess that times
``--steps`` training steps (forward, backward, Adam; the median after two warm-up steps) and one full-ranking
evaluation of ``--eval-users`` users, alternating after / before for each configuration.

    python benchmarks/prefix_encoding.py --data-dir ../shared/data [--dataset ml-100k] [--threads 1]

The last line reads ``RATIOS fmlprec_none=<x> fmlprec_mltfr=<y> ... fmlprec_mltfr_real_positions=<z> ...``: step
time before / after (above 1: faster now); ``*_real_positions`` is whole / now, the third rewrite alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def use_whole_windows_in_the_plugin() -> None:
    """Patch the third rewrite out: MLTFR over every position of every window."""
    from mltfrkit.mltfr.plugin import MLTFRPlugin

    MLTFRPlugin._forward_at_real_positions = MLTFRPlugin._forward_whole


def use_previous_computation() -> None:
    """Patch the rewrites out: the whole window through every block, every pick projected one by one, the
    plug-in over whole windows."""
    from mltfrkit.mltfr.integration import PickedTokens
    from mltfrkit.models.base import PostNormBackbone

    use_whole_windows_in_the_plugin()

    whole = PostNormBackbone.encode

    def encode(self, seqs, last_only=False):
        hidden = whole(self, seqs)
        return hidden[:, -1:] if last_only else hidden

    PostNormBackbone.encode = encode
    PickedTokens.table_first = property(lambda self: False)


def measure(dataset: str, backbone: str, mltfr: bool, data_dir: str, steps: int, eval_users: int, threads: int,
            before: bool, whole: bool = False) -> dict:
    import torch

    from mltfrkit.data import load_dataset
    from mltfrkit.runs import RunSpec, build_model
    from mltfrkit.train.metrics import evaluate
    from mltfrkit.train.trainer import training_sequences

    if before:
        use_previous_computation()
    if whole:
        use_whole_windows_in_the_plugin()
    torch.set_num_threads(threads)
    split = load_dataset(dataset, data_dir)
    data = training_sequences(split, 50)
    # the claims grids' MLTFR setting (paper profile, --plugin-set max_vocab=2000)
    options = {"n_experts": 4, "max_vocab": 2000, "fisher_samples": 256} if mltfr else {}
    spec = RunSpec(dataset, backbone, plugin="mltfr" if mltfr else "none", plugin_options=options)
    torch.manual_seed(0)
    model, _ = build_model(spec, split.n_items)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for step in range(steps + 2):  # two warm-up steps
        batch = data[(step * 128) % max(1, len(data) - 128):][:128]
        began = time.perf_counter()
        loss = model.loss(batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    windows = int((data[:128, :-1] > 0).sum())
    hist, targets = split.eval_pairs("test")
    began = time.perf_counter()
    evaluate(model, hist[:eval_users], targets[:eval_users])
    eval_seconds = time.perf_counter() - began
    step = sorted(times[2:])[len(times[2:]) // 2]
    return {"step_ms": 1000 * step, "epoch_s": step * len(data) / 128, "windows_per_batch": windows,
            "eval_users_per_s": min(eval_users, len(hist)) / eval_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--backbones", nargs="+", default=["fmlprec", "bsarec"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eval-users", type=int, default=943)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    def run(backbone, mltfr, before, whole=False):
        child = {"dataset": args.dataset, "backbone": backbone, "mltfr": mltfr, "data_dir": args.data_dir,
                 "steps": args.steps, "eval_users": args.eval_users, "threads": args.threads, "before": before,
                 "whole": whole}
        out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(child)],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"{args.dataset}, batch 128, {args.threads} thread(s), median of {args.steps} steps")
    print(f"{'backbone':9s} {'MLTFR':>5s} {'windows':>8s} {'before ms':>10s} {'now ms':>8s} {'x step':>7s} "
          f"{'epoch s before':>15s} {'now':>6s} {'x eval':>7s} {'whole ms':>9s} {'x real':>7s}")
    ratios = {}
    for backbone in args.backbones:
        for mltfr in (False, True):
            now, before = run(backbone, mltfr, False), run(backbone, mltfr, True)
            whole = run(backbone, mltfr, False, whole=True) if mltfr else None  # the third rewrite alone
            ratio = before["step_ms"] / now["step_ms"]
            ratios[f"{backbone}_{'mltfr' if mltfr else 'none'}"] = ratio
            real = f"{whole['step_ms']:9.0f} {whole['step_ms'] / now['step_ms']:7.2f}" if whole else ""
            if whole:
                ratios[f"{backbone}_mltfr_real_positions"] = whole["step_ms"] / now["step_ms"]
            print(f"{backbone:9s} {'yes' if mltfr else 'no':>5s} {now['windows_per_batch']:8d} {before['step_ms']:10.0f} "
                  f"{now['step_ms']:8.0f} {ratio:7.2f} {before['epoch_s']:15.0f} {now['epoch_s']:6.0f} "
                  f"{now['eval_users_per_s'] / before['eval_users_per_s']:7.2f} {real}", flush=True)
    print("RATIOS " + " ".join(f"{name}={value:.2f}" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
