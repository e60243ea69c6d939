"""One run on both cores, against the store's usual two one-thread runs side by side, measured in one run.

The claims batch trains two one-thread runs at a time on this 2-core machine (``--workers 2 --threads 1``),
and every stored ``seconds`` was measured that way. Some runs (ml-100k FMLP-Rec and BSARec, whose filters
encode every training position from its own prefix, ``PrefixEncodedMixin``) take longer than a session, so
they can only finish in one if they get the whole machine: ``--workers 1 --threads 2``. This measures, for
each backbone with and without MLTFR (the claims grids' setting: 4 offline experts, ``max_vocab=2000``), the
median training-step time (batch 128: forward, backward, Adam) in three setups, each in fresh processes:

- ``paired``: two one-thread processes at the same time (the stored runs' setup; the slower of the two);
- ``alone``: one one-thread process, the other core idle;
- ``both``: one two-thread process.

and prints ``paired / both``: how much faster a run is on both cores than as one of two side-by-side runs,
so a stored (paired) time divided by it estimates the run on both cores. The step is what scales; a run's
full-ranking evaluation scales alike or better (one large matrix product per chunk).

    python benchmarks/threads_per_run.py --data-dir ../shared/data [--dataset ml-100k] [--backbones fmlprec bsarec]

Run it on an idle machine. The last line reads ``RATIOS fmlprec_none=<paired / both> fmlprec_mltfr=... ``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))


def step_ms(dataset: str, backbone: str, mltfr: bool, data_dir: str, steps: int, threads: int) -> float:
    """The median step of ``benchmarks/prefix_encoding.py``'s measurement (the same model, batches and options)."""
    spec = importlib.util.spec_from_file_location("prefix_encoding", HERE.parent / "prefix_encoding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure(dataset, backbone, mltfr, data_dir, steps, eval_users=1, threads=threads,
                          before=False)["step_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--backbones", nargs="+", default=["fmlprec", "bsarec"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"step_ms": step_ms(**json.loads(args.child))}))
        return

    def start(backbone: str, mltfr: bool, threads: int) -> subprocess.Popen:
        child = {"dataset": args.dataset, "backbone": backbone, "mltfr": mltfr, "data_dir": args.data_dir,
                 "steps": args.steps, "threads": threads}
        return subprocess.Popen([sys.executable, "-W", "ignore", str(HERE), "--child", json.dumps(child)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": str(threads)})

    def finish(process: subprocess.Popen) -> float:
        out, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"a measuring process failed:\n{err}")
        return json.loads(out.strip().splitlines()[-1])["step_ms"]

    print(f"{args.dataset}, batch 128, median of {args.steps} steps; MLTFR: 4 offline experts, max_vocab 2000")
    print(f"{'backbone':9s} {'MLTFR':>5s} {'paired ms':>10s} {'alone ms':>9s} {'both ms':>8s} "
          f"{'paired/alone':>13s} {'paired/both':>12s}")
    ratios = {}
    for backbone in args.backbones:
        for mltfr in (False, True):
            paired = max(finish(p) for p in [start(backbone, mltfr, 1), start(backbone, mltfr, 1)])
            alone = finish(start(backbone, mltfr, 1))
            both = finish(start(backbone, mltfr, 2))
            ratios[f"{backbone}_{'mltfr' if mltfr else 'none'}"] = paired / both
            print(f"{backbone:9s} {'yes' if mltfr else 'no':>5s} {paired:10.0f} {alone:9.0f} {both:8.0f} "
                  f"{paired / alone:13.2f} {paired / both:12.2f}", flush=True)
    print("RATIOS " + " ".join(f"{name}={value:.2f}" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
