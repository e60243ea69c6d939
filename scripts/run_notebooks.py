#!/usr/bin/env python
"""Run every notebook with papermill for one or more datasets.

    python scripts/run_notebooks.py                              # all notebooks, ml-100k, quick profile
    python scripts/run_notebooks.py --datasets ml-100k Music --data-dir ../shared/data
    python scripts/run_notebooks.py --profile paper --notebooks table2 ablation -p backbones '["sasrec"]'

Executed notebooks go to ``papermill_runs/<notebook>-<dataset>.ipynb``, figures (PNG + PDF) and
tables (CSV) to ``figures/`` (names gain ``-paper`` under ``--profile paper``). Runs come from the result store (``$MLTFR_RUNS_DIR``, else
``<cache>/runs``): a second invocation trains nothing, and an interrupted one resumes. Missing runs
are trained in parallel by the executor (default on a machine with more than one core: ``processes``,
one run per core with one torch thread each; ``--executor ray [--ray-address ...]`` for Ray,
``--executor local`` for one run after another in the notebook's kernel). With ``--grid-first`` and a
parallel executor the batch first trains the union of its notebooks' grids in one pool, longest runs first
(``NOTEBOOK_GRIDS``), then runs the notebooks, which read everything from the store (for ``make run`` it measured
no faster than letting each notebook train its own runs, the default: README "Running grids in parallel").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
# Order: Table 2 first, so the MLTFR runs it trains are reused by the ablation, the sweep and the inspector.
DEFAULT_ORDER = ["table2", "ablation", "expert_sweep", "te_vs_re", "token_inspector"]
# Studies of their own, run only when named (--notebooks): the reproduction-gap ladder trains 13 rungs x 4 kinds
# of run per backbone and seed (about 40 MLTFR runs on one seed), several times the rest of the batch; the LLM
# comparison (Table 4) runs an LLM over every sampled user's candidate pool (its own 30-minute budget); the MixRec
# study fine-tunes an LLM (1-8 minutes a run at its reduced `cpu` profile, which `--profile quick` maps to; days at the
# paper's); the claims
# notebook reads every claim's runs on several datasets (-p datasets '["Pantry", "ml-100k", "Beauty"]'; by default
# it trains nothing: rows whose runs are missing say so).
STUDIES = ["reproduction_gap", "llm_comparison", "mixrec", "claims"]
# The grid each notebook reads (Experiment.grid), and which notebook parameters shape it. With --grid-first and a
# parallel executor the batch trains the union of its notebooks' grids first, in one pool (longest runs first), and
# the notebooks then read every run from the store (a notebook's own grid is a handful of runs).
NOTEBOOK_GRIDS = {"table2": ("table2", ("controls",)), "ablation": ("ablation", ("noise_modes", "top_ks")),
                  "expert_sweep": ("expert_sweep", ("experts",)), "te_vs_re": ("te_vs_re", ("sources",))}
EXPERIMENT_PARAMETERS = ("data_dir", "profile", "backbones", "llms", "seeds", "epochs", "device", "runs_dir",
                         "mltfr_options", "executor", "workers", "threads", "ray_address")


def parse_value(text: str):
    """-p values: JSON when it parses (numbers, lists, null, true), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def batch_grid(dataset: str, names: list[str], parameters: dict):
    """The Experiment the notebooks build from ``parameters`` and the union of the grids of ``names``
    (each run once, in notebook order); notebooks without a grid here (the inspector, the studies) add none."""
    from mltfrkit.experiments import Experiment

    experiment = Experiment(dataset, **{k: parameters[k] for k in EXPERIMENT_PARAMETERS if k in parameters})
    specs, keys = [], set()
    for name in names:
        if name not in NOTEBOOK_GRIDS:
            continue
        grid, options = NOTEBOOK_GRIDS[name]
        for spec in experiment.grid(grid, **{k: parameters[k] for k in options if parameters.get(k) is not None}):
            key = experiment.store.run_dir(spec)
            if key not in keys:
                keys.add(key)
                specs.append(spec)
    return experiment, specs


def train_batch_grid(dataset: str, names: list[str], parameters: dict) -> None:
    """Train the missing runs of every notebook of the batch in one pool (see NOTEBOOK_GRIDS). A failed run is
    reported here and again by the notebook that needs it; the batch goes on."""
    from mltfrkit.executors import GridFailed

    experiment, specs = batch_grid(dataset, names, parameters)
    if not specs:
        return
    began = time.perf_counter()
    print(f"training the batch's grid on {dataset} first: {len(specs)} runs of "
          f"{', '.join(n for n in names if n in NOTEBOOK_GRIDS)}", flush=True)
    try:
        experiment.store.ensure_many(specs, desc=f"{dataset} batch grid")
    except GridFailed as failed:
        print(f"    {failed}", file=sys.stderr, flush=True)
    print(f"    grid done in {time.perf_counter() - began:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"])
    parser.add_argument("--data-dir", default=None, help="data directory (default: $MLTFR_DATA_DIR, else ./data)")
    parser.add_argument("--profile", default="quick", choices=["quick", "paper"])
    parser.add_argument("--notebooks", nargs="+", default=None,
                        help=f"names without .ipynb (default, in this order: {' '.join(DEFAULT_ORDER)}, then any "
                             f"other notebook but the studies run only when named: {' '.join(STUDIES)})")
    parser.add_argument("--output", default=str(REPO / "papermill_runs"))
    parser.add_argument("--figures", default=str(REPO / "figures"))
    parser.add_argument("--runs-dir", default=None, help="result store (default: $MLTFR_RUNS_DIR, else <cache>/runs)")
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="any notebook parameter, e.g. -p epochs 5 -p seeds '[0,1,2]'")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    parser.add_argument("--executor", default="auto", choices=["auto", "local", "processes", "ray"],
                        help="who trains missing runs (default auto: processes when this machine has more than one core)")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: cores / threads)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1)")
    parser.add_argument("--ray-address", default=None, help="with --executor ray: auto, HOST:PORT or ray://HOST:10001")
    parser.add_argument("--grid-first", action="store_true",
                        help="with a parallel executor, train the union of the notebooks' grids first, in one pool "
                             "(default: each notebook trains its own missing runs; measured no faster for make run)")
    args = parser.parse_args(argv)

    import papermill

    available = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    names = args.notebooks or [n for n in DEFAULT_ORDER if n in available] + \
        [n for n in available if n not in DEFAULT_ORDER and n not in STUDIES]
    unknown = sorted(set(names) - set(available))
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; available: {available}")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    extra = {name: parse_value(value) for name, value in args.parameter}

    started, failures, timings = time.perf_counter(), [], []
    jobs = [(dataset, name) for dataset in args.datasets for name in names]
    from mltfrkit.executors import make_executor

    executor = make_executor(args.executor, args.workers, args.threads, args.ray_address)
    print(f"executor: {executor!r}", flush=True)
    grids_trained = set()
    for number, (dataset, name) in enumerate(jobs, 1):
        parameters = {"dataset": dataset, "data_dir": args.data_dir, "profile": args.profile,
                      "figures_dir": str(Path(args.figures).resolve()), "runs_dir": args.runs_dir,
                      "executor": args.executor, "workers": args.workers, "threads": args.threads,
                      "ray_address": args.ray_address, **extra}
        if args.grid_first and type(executor).__name__ != "LocalExecutor" and dataset not in grids_trained:
            grids_trained.add(dataset)
            train_batch_grid(dataset, names, {k: v for k, v in parameters.items() if k != "dataset"})
        tag = dataset if args.profile == "quick" else f"{dataset}-{args.profile}"  # as Experiment.output_tag
        target = output / f"{name}-{tag}.ipynb"
        print(f"[{number}/{len(jobs)}] {name} on {dataset} -> {target}", flush=True)
        began = time.perf_counter()
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(target), parameters=parameters,
                                       kernel_name=args.kernel, progress_bar=True, cwd=str(REPO))
        except Exception as error:  # papermill stores the failing cell's traceback in the output notebook
            failures.append((name, dataset))
            message = str(error).strip().splitlines()
            print(f"    FAILED after {time.perf_counter() - began:.0f}s: {message[-1] if message else error}",
                  file=sys.stderr, flush=True)
            if not args.keep_going:
                break
        else:
            timings.append((name, dataset, time.perf_counter() - began))
            print(f"    done in {timings[-1][2]:.0f}s", flush=True)
    total = time.perf_counter() - started
    print(f"\n{len(timings)} notebook(s) in {total / 60:.1f} min; figures in {args.figures}")
    for name, dataset, seconds in timings:
        print(f"  {name:16s} {dataset:10s} {seconds:7.0f}s")
    if failures:
        print(f"failed: {', '.join(f'{n} ({d})' for n, d in failures)}; see the executed notebooks in {output}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
