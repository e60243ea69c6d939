"""MLTFR's cost over its backbone, measured side by side in one run.

For each configuration (backbone alone, + MLTFR with the offline preset's first 4 experts,
+ all 6), a fresh subprocess builds the model on Pantry, times training steps (batch 128) and
full-ranking evaluation, and reports its peak resident memory. Ratios are against the
backbone alone, measured in the same run. ``--variants PRECISION:MAX_VOCAB ...`` chooses the
MLTFR rows (speed knobs: ``bfloat16`` tables and projection, a per-source cap, ``none`` = uncapped).

    python benchmarks/mltfr_overhead.py --data-dir ../shared/data [--backbones sasrec bert4rec]
        [--variants float32:none float32:16000 bfloat16:16000 float32:64] [--threads 2]

``--switches`` adds rows for the authors' behaviours (README "The authors' MLTFR") on top of
``--switch-base`` (default float32:16000): each item is KEY=VALUE[,KEY=VALUE...] of MLTFRConfig, or
``authors`` for all of them together; ratios are against the backbone and against the same variant
without the switch, both measured in this run.

    python benchmarks/mltfr_overhead.py --data-dir ../shared/data --variants float32:16000 \
        --switches keys=batch trainable_tables=true eval_noise=true token_scale=sum,expert_dropout=0.1 authors

The last line reads ``RATIOS step4=<x> step6=<y> eval=<z> peak6_gb=<m>`` (SASRec, first variant).
``--out FILE.json`` also stores every measured row (with each step's time, for intervals) and the command; the
claims notebook (``mltfrkit.claims``, Appendix A's claim) reads it from ``<store>/benchmarks/mltfr_overhead.json``:

    python benchmarks/mltfr_overhead.py --data-dir ../shared/data --variants float32:2000 --threads 1 \
        --out "$MLTFR_RUNS_DIR/mltfrkit-0.1.0/benchmarks/mltfr_overhead.json"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def switch_options(text: str) -> dict:
    """``keys=batch,trainable_tables=true`` or ``authors`` -> MLTFRConfig overrides."""
    if text == "authors":
        from mltfrkit.mltfr.plugin import AUTHOR_BEHAVIOURS

        return dict(AUTHOR_BEHAVIOURS)
    options = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def measure(backbone: str, experts: int, data_dir: str, steps: int, eval_users: int, precision: str,
            max_vocab: int | None, threads: int, switches: dict | None = None) -> dict:
    import torch

    from mltfrkit.data import load_dataset
    from mltfrkit.runs import RunSpec, build_model
    from mltfrkit.train.metrics import evaluate
    from mltfrkit.train.trainer import training_sequences

    torch.set_num_threads(threads)
    split = load_dataset("Pantry", data_dir)
    data = training_sequences(split, 50)
    options = {"n_experts": experts, "precision": precision, "max_vocab": max_vocab, **(switches or {})}
    spec = RunSpec("Pantry", backbone, plugin="mltfr" if experts else "none",
                   plugin_options=options if experts else {})
    model, _ = build_model(spec, split.n_items)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for step in range(steps + 2):  # two warm-up steps
        batch = data[(step * 128) % (len(data) - 128):][:128]
        began = time.perf_counter()
        loss = model.loss(batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    hist, targets = split.eval_pairs("test")
    began = time.perf_counter()
    evaluate(model, hist[:eval_users], targets[:eval_users])
    eval_seconds = time.perf_counter() - began
    return {"step_ms": 1000 * sorted(times[2:])[len(times[2:]) // 2], "step_times_ms": [1000 * t for t in times[2:]],
            "eval_users_per_s": min(eval_users, len(hist)) / eval_seconds,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["float32:none", "bfloat16:none", "bfloat16:32000"],
                        help="precision:max_vocab pairs to measure")
    parser.add_argument("--switches", nargs="*", default=[],
                        help="authors' behaviours to measure: KEY=VALUE[,KEY=VALUE] of MLTFRConfig, or 'authors'")
    parser.add_argument("--switch-base", default="float32:16000", help="precision:max_vocab the switches run on")
    parser.add_argument("--out", default=None, help="also write every measured row as JSON here (read by the claims "
                        "notebook from <store>/benchmarks/mltfr_overhead.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    measured = []  # every row, for --out

    def run(backbone, experts, precision="float32", max_vocab=None, switches=None):
        child = {"backbone": backbone, "experts": experts, "data_dir": args.data_dir, "steps": args.steps,
                 "eval_users": args.eval_users, "precision": precision, "max_vocab": max_vocab,
                 "threads": args.threads, "switches": switches}
        out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(child)],
                             check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        measured.append({"backbone": backbone, "experts": experts, "precision": precision if experts else None,
                         "max_vocab": max_vocab if experts else None, "switches": switches, **result})
        return result

    print(f"{'backbone':9s} {'experts':>7s} {'precision':>9s} {'max_vocab':>9s} {'step ms':>8s} {'x step':>7s} "
          f"{'eval u/s':>9s} {'x eval':>7s} {'peak GB':>8s}")
    summary = None
    for backbone in args.backbones:
        base = run(backbone, 0)
        print(f"{backbone:9s} {0:7d} {'-':>9s} {'-':>9s} {base['step_ms']:8.0f} {1:7.2f} "
              f"{base['eval_users_per_s']:9.0f} {1:7.2f} {base['peak_gb']:8.2f}", flush=True)
        for variant in args.variants:
            precision, cap = variant.split(":")
            cap = None if cap == "none" else int(cap)
            row = {}
            for experts in (4, 6):
                r = run(backbone, experts, precision, cap)
                row[experts] = r
                print(f"{backbone:9s} {experts:7d} {precision:>9s} {str(cap):>9s} {r['step_ms']:8.0f} "
                      f"{r['step_ms'] / base['step_ms']:7.2f} {r['eval_users_per_s']:9.0f} "
                      f"{base['eval_users_per_s'] / r['eval_users_per_s']:7.2f} {r['peak_gb']:8.2f}", flush=True)
            if summary is None and backbone == "sasrec":
                summary = (row[4]["step_ms"] / base["step_ms"], row[6]["step_ms"] / base["step_ms"],
                           base["eval_users_per_s"] / row[4]["eval_users_per_s"], row[6]["peak_gb"])
        if args.switches:
            precision, cap = args.switch_base.split(":")
            cap = None if cap == "none" else int(cap)
            plain = {experts: run(backbone, experts, precision, cap) for experts in (4, 6)}
            print(f"  switches on {precision}:{cap} (x plain = against the same variant without the switch)")
            for text in args.switches:
                for experts in (4, 6):
                    r = run(backbone, experts, precision, cap, switch_options(text))
                    print(f"  {text:45s} {experts:2d} experts  step {r['step_ms']:6.0f} ms  "
                          f"x step {r['step_ms'] / base['step_ms']:5.2f}  x plain {r['step_ms'] / plain[experts]['step_ms']:5.2f}"
                          f"  eval x plain {plain[experts]['eval_users_per_s'] / r['eval_users_per_s']:5.2f}"
                          f"  peak {r['peak_gb']:5.2f} GB (plain {plain[experts]['peak_gb']:5.2f})", flush=True)
    if summary:
        print("RATIOS step4={:.2f} step6={:.2f} eval={:.2f} peak6_gb={:.2f}".format(*summary))
    if args.out:
        from mltfrkit import __version__

        record = {"benchmark": "mltfr_overhead", "dataset": "Pantry", "batch_size": 128, "steps": args.steps,
                  "eval_users": args.eval_users, "threads": args.threads, "mltfrkit": __version__,
                  "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                  "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join([sys.executable, *sys.argv]),
                  "rows": measured}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        scratch = f"{args.out}.tmp-{os.getpid()}"
        with open(scratch, "w") as handle:
            json.dump(record, handle, indent=1)
        os.replace(scratch, args.out)
        print(f"measurements written to {args.out}")


if __name__ == "__main__":
    main()
