"""Command line: thin wrappers over library calls that notebooks make too."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
import zipfile

from mltfrkit.data import DATASETS, DatasetNotFoundError, EmptyDatasetError, MalformedInputError, load_dataset
from mltfrkit.models import backbone_names
from mltfrkit.runs import CONFIGURATIONS
from mltfrkit.train import TrainConfig


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_value(text: str) -> tuple[str, object]:
    """argparse type for --set / --plugin-set: KEY=VALUE, the value read as JSON where it parses."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (for example max_vocab=16000), got {text!r}")
    return key.strip(), _parse_value(value)


MLTFR_FLAGS = (("llms", "llms"), ("experts", "n_experts"), ("top_k", "top_k"), ("noise", "noise"),
               ("alpha", "alpha"), ("placement", "placement"), ("round2", "round2"))


def train_spec(args: argparse.Namespace):
    """The RunSpec a ``train`` command line describes (its store key is what notebooks look up)."""
    from mltfrkit.runs import RunSpec
    from mltfrkit.train.trainer import resolve_device

    plugin = "mltfr" if args.mltfr else args.plugin
    # Options that would change the run's key but not the run: refuse them instead of ignoring them.
    mltfr_only = [f"--{flag.replace('_', '-')}" for flag, _ in MLTFR_FLAGS if getattr(args, flag) is not None]
    mltfr_only += ["--no-consensus"] if args.no_consensus else []
    if mltfr_only and plugin != "mltfr":
        raise ValueError(f"{', '.join(mltfr_only)}: for MLTFR runs only; add --mltfr")
    if args.llm is not None and plugin not in ("te", "re"):
        raise ValueError("--llm only applies to --plugin te / re (MLTFR takes --llms)")
    if args.plugin_set and plugin == "none":
        raise ValueError("--plugin-set only applies with a plug-in: add --mltfr or --plugin te / re")
    try:
        resolve_device(args.device)  # a ValueError (CUDA requested, none here) says what to use instead
    except RuntimeError as error:
        raise ValueError(f"--device {args.device!r} is not a device torch knows ({error}); "
                         f"use auto, cpu, cuda or cuda:N") from None

    profile = None
    if args.profile:
        from mltfrkit.experiments import PROFILES

        profile = PROFILES[args.profile]
    epochs = args.epochs if args.epochs is not None else (profile.epochs if profile else TrainConfig.epochs)
    patience = args.patience if args.patience is not None else (profile.patience if profile else TrainConfig.patience)
    model = dict(args.set)
    if args.loss:
        model["loss"] = args.loss
    train = TrainConfig(epochs=epochs, seed=args.seed, patience=patience, lr=args.lr,
                        batch_size=args.batch_size, device=args.device, exclude_history=args.exclude_history,
                        windows=args.windows, stride=args.stride, compile=args.compile or False,
                        patience_relative=(TrainConfig.patience_relative if args.patience_relative is None
                                           else args.patience_relative))
    options = {}
    if profile and plugin == "mltfr":  # the notebooks' settings, so this run is their store entry
        options.update({"llms": profile.llms, **profile.mltfr})
    options.update(dict(args.plugin_set))
    for flag, key in MLTFR_FLAGS + (("llm", "llm"),):
        if getattr(args, flag) is not None:
            options[key] = getattr(args, flag)
    if args.no_consensus:
        options["consensus"] = False
    spec = RunSpec(dataset=args.dataset, backbone=args.backbone, model=model, train=train, plugin=plugin,
                   plugin_options=options)
    if args.authors:
        from mltfrkit.runs import authors_configuration

        spec = authors_configuration(spec)
    elif args.test_every_epoch:
        from dataclasses import replace

        spec = replace(spec, train=replace(spec.train, test_every_epoch=True))
    return spec


def check_output_paths(args: argparse.Namespace) -> None:
    """--out and --runs-dir (or MLTFR_RUNS_DIR / MLTFR_CACHE_DIR) usable, checked before any training."""
    from pathlib import Path

    from mltfrkit.paths import ensure_directory
    from mltfrkit.runs import store_root

    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory; give a file path, for example {out / 'result.json'}")
        ensure_directory(out.parent, "the folder of --out")
    what = ("--runs-dir" if args.runs_dir else "MLTFR_RUNS_DIR" if os.environ.get("MLTFR_RUNS_DIR")
            else "the runs folder")
    ensure_directory(store_root(args.runs_dir), what)


def cmd_train(args: argparse.Namespace) -> int:
    from mltfrkit.runs import run_training
    from mltfrkit.store import ResultStore
    from mltfrkit.train import write_result

    spec = train_spec(args)
    check_output_paths(args)
    # A stored run that answers for this spec (the same run tracked on test, or one whose stopping replays
    # alike: ResultStore.get) is read, not trained again; otherwise train (or resume) it.
    store = ResultStore(args.runs_dir, args.data_dir, progress=False, log=None)  # its root: store_root(runs_dir)
    result = store.get(spec)
    if result is not None:
        print(f"stored: {result['run_dir']}" + (f" ({result['equivalent_stopping']})"
                                                if result.get("equivalent_stopping") else ""))
        if args.out:
            write_result(args.out, result)
    else:
        result = run_training(spec, data_dir=args.data_dir, out=args.out, root=store.root,
                              progress=not args.no_progress, split=store.split(spec.dataset))
    test = result["test"]
    if test is not None:
        round_note = f"round {result['selected_round']}, " if result.get("selected_round") else ""
        print(f"best epoch {result['best_epoch']} ({round_note}validation NDCG@20 "
              f"{result['best_valid'].get('NDCG@20', 0):.5f})")
        print("test  " + "  ".join(f"{k} {v:.5f}" for k, v in _by_cutoff(test)))
    oracle = result.get("test_oracle")
    if oracle:
        print(f"{oracle['label']}: epoch {oracle['epoch']}" + (f" of round {oracle['round']}" if "round" in oracle else ""))
        print("test_oracle  " + "  ".join(f"{k} {v:.5f}" for k, v in _by_cutoff(oracle["metrics"])))
    if args.out:
        print(f"result written to {args.out}")
    return 0


def _by_cutoff(metrics: dict) -> list[tuple[str, float]]:
    """HR@5 NDCG@5 HR@10 ...: a stored result read back from JSON has its keys sorted alphabetically."""
    return sorted(metrics.items(), key=lambda item: (int(item[0].rsplit("@", 1)[1]), item[0]))


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train every missing run of a named experiment, so that the notebook of that name (with the same
    dataset, profile and options) then reads everything from the store and trains nothing. With --plan,
    train nothing: print how many runs are stored, how many would be trained (counted as the sweep would
    train them) and an estimate of the time from the store's measured run times."""
    from mltfrkit.executors import GridDeferred, GridFailed

    exp, options = sweep_experiment(args)  # ValueError: main prints it as one line, exit code 2
    if args.plan:
        plan = exp.plan(args.experiment, workers=args.workers, **options)
        print(plan.report(f"{args.experiment} on {exp.dataset}"))
        return 0
    exp.store.finish_by = args.finish_by
    try:
        results = exp.sweep(args.experiment, **options)
    except GridFailed as failed:
        print(f"mltfrkit: error: {failed}", file=sys.stderr)
        return 3 if failed.deferred else 1  # 3: the time budget left runs to do (the failed ones are named)
    except GridDeferred as deferred:
        print(f"mltfrkit: {deferred}", file=sys.stderr)
        return 3
    print(f"{args.experiment}: {len(results)} runs stored in {exp.store.root}")
    return 0


def sweep_experiment(args: argparse.Namespace):
    """The :class:`~mltfrkit.experiments.Experiment` and grid options of parsed ``mltfrkit sweep`` arguments
    (``scripts/paper_batch.py --plan`` plans its queue with it in one process); ValueError for options that do
    not apply to the grid."""
    from mltfrkit.experiments import Experiment

    exp = Experiment(args.dataset, data_dir=args.data_dir, profile=args.profile, backbones=args.backbones,
                     llms=_llms(args.llms), seeds=args.seeds, epochs=args.epochs, device=args.device,
                     runs_dir=args.runs_dir, progress=not args.no_progress,
                     mltfr_options=dict(args.plugin_set) or None, executor=args.executor, workers=args.workers,
                     threads=args.threads, ray_address=args.ray_address, configuration=args.configuration)
    options = {}
    if args.experts and args.experiment in ("expert_sweep", "claims"):
        options["experts"] = args.experts
    if args.sources and args.experiment in ("te_vs_re", "claims"):
        options["sources"] = args.sources
    elif args.sources and args.experiment == "reproduction_gap":
        # the token-source rung's llms, as reproduction_gap.ipynb passes them: one name (a preset such as
        # llm_heavy) stays a string, so the sweep trains exactly the runs the notebook then reads
        options["sources"] = args.sources[0] if len(args.sources) == 1 else list(args.sources)
    elif args.sources:
        raise ValueError(f"--sources applies to the te_vs_re, claims and reproduction_gap grids, not {args.experiment}")
    if args.controls is not None:
        if args.experiment != "table2":
            raise ValueError("--controls applies to the table2 grid only")
        options["controls"] = args.controls
    return exp, options


def finish_by_time(text: str, now: float | None = None) -> float:
    """argparse type for --finish-by: ``+90m`` / ``+2h`` / ``+45s`` from now, ``HH:MM`` (local time, its next
    occurrence) or an ISO date-time; returns a ``time.time()``."""
    import datetime as _dt
    import re
    import time

    now = time.time() if now is None else now
    text = text.strip()
    relative = re.fullmatch(r"\+(\d+(?:\.\d+)?)([smh])", text)
    if relative:
        return now + float(relative.group(1)) * {"s": 1, "m": 60, "h": 3600}[relative.group(2)]
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    try:
        if clock:
            today = _dt.datetime.fromtimestamp(now)
            when = today.replace(hour=int(clock.group(1)), minute=int(clock.group(2)), second=0, microsecond=0)
            return (when if when.timestamp() > now else when + _dt.timedelta(days=1)).timestamp()
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected +90m / +2h (from now), HH:MM (local time) or an ISO date-time "
                                     f"such as 2026-12-02T08:50, got {text!r}")


def _llms(text: str | None):
    """--llms: a preset name, or sources separated by commas."""
    if text is None:
        return None
    return text.split(",") if "," in text else text


def cmd_diagnose(args: argparse.Namespace) -> int:
    from mltfrkit.mltfr.diagnostics import selection_diagnostic
    from mltfrkit.runs import load_trained

    _, split, model = load_trained(args.run_dir, args.data_dir)
    if model.plugin is None or not hasattr(model.plugin, "experts"):
        raise ValueError(f"{args.run_dir} is not an MLTFR run: nothing selects tokens there")
    histories, _ = split.eval_pairs("test")
    table = selection_diagnostic(model, histories, top_k=args.top_k, seed=args.seed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-score a stored run under another protocol (e.g. history excluded, as S3-Rec and BSARec's
    published numbers are) without retraining; prints the metrics as JSON."""
    from mltfrkit.runs import load_trained
    from mltfrkit.train.metrics import evaluate

    if args.pool is not None:
        return _evaluate_pool(args)
    _, split, model = load_trained(args.run_dir, args.data_dir)
    histories, targets = split.eval_pairs(args.split)
    metrics = evaluate(model, histories, targets, exclude_history=args.exclude_history)
    print(json.dumps({"run_dir": args.run_dir, "split": args.split, "exclude_history": args.exclude_history,
                      **{k: round(v, 5) for k, v in metrics.items()}}))
    return 0


def _evaluate_pool(args: argparse.Namespace) -> int:
    """Candidate-pool metrics of a stored run (Table 4's protocol), cached in the run directory."""
    from mltfrkit.store import pool_evaluation
    from mltfrkit.train.pools import PoolSpec

    if args.split != "test" or args.exclude_history:
        raise ValueError("--pool evaluates the test split, and a pool never holds a history item: drop --split / "
                         "--exclude-history")
    pool = PoolSpec(size=args.pool, sampling=args.pool_sampling, seed=args.pool_seed, max_users=args.max_users)
    evaluation = pool_evaluation(args.run_dir, pool, args.data_dir)
    metrics = {k: round(v, 5) for k, v in evaluation.items() if isinstance(v, float)}
    print(json.dumps({"run_dir": args.run_dir, "pool": evaluation["pool"], "users": evaluation["users"], **metrics}))
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    """``store export DEST`` / ``store import ARCHIVE``: carry finished runs (no weights) between stores."""
    from mltfrkit.archive import export_results, import_results
    from mltfrkit.paths import ensure_directory
    from mltfrkit.runs import store_root

    root = store_root(args.runs_dir)
    if args.store_command == "export":
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no result store here to export; pass --runs-dir (or set MLTFR_RUNS_DIR) "
                                    f"to the store the runs were trained in")
        report = export_results(root, args.destination)
        print(report.summary(f"exported to {args.destination}/{root.name}:"))
    else:
        ensure_directory(root, "--runs-dir" if args.runs_dir else "the result store")
        report = import_results(args.archive, root)
        print(report.summary(f"imported into {root}:"))
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    for spec in DATASETS.values():
        print(f"{spec.name:10s} {', '.join(spec.files):50s} {spec.origin}")
        if spec.title_files:
            print(f"{'':10s} titles: {', '.join(spec.title_files)}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    stats = load_dataset(args.name, args.data_dir).stats()
    print(f"{'Dataset':10s} {'#Users':>8s} {'#Items':>8s} {'Av. n':>9s} {'Density':>11s}")
    print(f"{stats['dataset']:10s} {stats['users']:8,d} {stats['items']:8,d} {stats['avg_length']:9.5f} "
          f"{stats['density']:11.4e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mltfrkit", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error too (or set MLTFR_DEBUG=1); goes before the command")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a backbone, print test metrics, write the result JSON")
    train.add_argument("--dataset", default="ml-100k")
    train.add_argument("--backbone", default="sasrec", help=f"one of: {', '.join(backbone_names())}")
    train.add_argument("--data-dir", default=None)
    train.add_argument("--profile", choices=["quick", "paper"], default=None,
                       help="the notebooks' settings (epochs, patience, MLTFR experts / vocabulary cap / Fisher users), "
                            "so the run is the same store entry a notebook with that profile reads")
    train.add_argument("--epochs", type=int, default=None, help=f"default {TrainConfig.epochs} (or the profile's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--patience", type=int, default=None, help=f"default {TrainConfig.patience} (or the profile's)")
    train.add_argument("--patience-relative", type=float, default=None,
                       help=f"wait max(patience, this x best epoch) epochs (default {TrainConfig.patience_relative:g}; "
                            "0 = plain patience; README 'Early stopping')")
    train.add_argument("--lr", type=float, default=TrainConfig.lr)
    train.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    train.add_argument("--loss", choices=["bce", "bpr", "ce"], default=None, help="default: the backbone's own")
    train.add_argument("--device", default="auto")
    train.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="backbone option")
    train.add_argument("--plugin", choices=["none", "mltfr", "te", "re"], default="none",
                       help="mltfr = the MLTFR plug-in; te / re = LLM-TE / LLM-RE (Fig. 1)")
    train.add_argument("--mltfr", action="store_true", help="same as --plugin mltfr")
    train.add_argument("--llms", default=None, help="vocab preset, or source names separated by commas (default: offline)")
    train.add_argument("--experts", type=int, default=None, help="first m sources of the preset (default 4)")
    train.add_argument("--top-k", type=int, default=None)
    train.add_argument("--noise", choices=["paper", "tempered", "none"], default=None)
    train.add_argument("--alpha", type=float, default=None, help="consensus weight (default: the authors' per backbone)")
    train.add_argument("--placement", choices=["input", "from_input_after_first_block", "after_first_block"],
                       default=None, help="input = eq. 18 (default); from_input_after_first_block = the authors' code")
    train.add_argument("--round2", choices=["continue", "restart"], default=None)
    train.add_argument("--no-consensus", action="store_true", help="the SC ablation: one round, no consensus expert")
    train.add_argument("--llm", default=None, help="token source for --plugin te/re")
    train.add_argument("--plugin-set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="MLTFR option (a field of MLTFRConfig), or llm / assignment_seed for te / re")
    train.add_argument("--out", default=None, help="result JSON path")
    train.add_argument("--runs-dir", default=None, help="the result store's root: runs go to <root>/mltfrkit-<version>/, where notebooks "
                       "look first (default: $MLTFR_RUNS_DIR, else <cache>/runs)")
    train.add_argument("--windows", choices=["last", "all"], default="last",
                       help="training sequences: each user's last max_len + 1 items (default, SASRec's practice) or "
                            "every window of the history, so every training item is a target once")
    train.add_argument("--stride", type=int, default=None,
                       help="with --windows all: a window ends every STRIDE items and scores only its last STRIDE "
                            "targets, so each target sees at least max_len + 1 - STRIDE items of history "
                            "(default max_len: cheapest; smaller = more context, about max_len / STRIDE times the cost)")
    train.add_argument("--exclude-history", action="store_true",
                       help="never rank the user's history items (S3-Rec / BSARec protocol); default: rank every item")
    train.add_argument("--authors", action="store_true",
                       help="the paper as its authors ran it: their split (no validation), their code's MLTFR "
                            "behaviours and per-backbone settings, test-set selection (reported as test_oracle, "
                            "optimistic); README 'The authors' MLTFR'")
    train.add_argument("--test-every-epoch", action="store_true",
                       help="also evaluate the test split after every epoch: the result gains test_oracle (the "
                            "best test epoch, optimistic); `test` stays validation-selected")
    train.add_argument("--compile", nargs="?", const="all", default=None, choices=["all", "train", "score"],
                       help="torch.compile (inductor) the training step and full-ranking scoring (or only 'train' / "
                            "'score'); a different run (key) from the eager one. README 'Compiled training'")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=cmd_train)

    from mltfrkit.executors import EXECUTORS
    from mltfrkit.experiments import GRIDS

    sweep = sub.add_parser("sweep", help="train every missing run of an experiment (a notebook then reads them all)",
                           description=cmd_sweep.__doc__)
    sweep.add_argument("experiment", choices=GRIDS,
                       help="a notebook's grid (ablation = Table 3 + noise x K; claims = the claims notebook's runs for "
                            "this dataset and configuration; all = every notebook's but reproduction_gap and claims)")
    sweep.add_argument("--dataset", default="ml-100k")
    sweep.add_argument("--data-dir", default=None)
    sweep.add_argument("--profile", choices=["quick", "paper"], default="quick")
    sweep.add_argument("--backbones", nargs="+", default=None, help="default: the profile's")
    sweep.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's")
    sweep.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    sweep.add_argument("--llms", default=None, help="vocab preset, or sources separated by commas")
    sweep.add_argument("--experts", nargs="+", type=int, default=None, help="expert_sweep, claims: the values of m")
    sweep.add_argument("--sources", nargs="+", default=None,
                       help="te_vs_re, claims: Fig. 1's token sources (default: the profile's first ones); "
                            "reproduction_gap: the token-source rung's llms (a preset such as llm_heavy, or sources)")
    sweep.add_argument("--controls", nargs="*", choices=["wo2", "mltfr_re"], default=None,
                       help="table2: its control columns (W/O 2-round, MLTFR-RE; default: the profile's, wo2; "
                            "none given = none)")
    sweep.add_argument("--plugin-set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="MLTFR option on top of the profile's (the notebooks' mltfr_options)")
    sweep.add_argument("--configuration", choices=CONFIGURATIONS, default="ours",
                       help="ours (validation selects) or authors (the paper as its authors ran it; test-selected)")
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--runs-dir", default=None, help="the result store's root (default: $MLTFR_RUNS_DIR, else <cache>/runs)")
    sweep.add_argument("--finish-by", type=finish_by_time, default=None, metavar="TIME",
                       help="a time budget: start no run that would end after TIME by its estimate from the stored "
                            "runs (or after TIME at all); runs in flight finish, the rest wait for the next sweep "
                            "(exit code 3). TIME: +90m, +2h, HH:MM (local) or an ISO date-time")
    sweep.add_argument("--executor", choices=EXECUTORS, default="auto",
                       help="local: this process, one run after another; processes: WORKERS processes on this machine; "
                            "ray: a Ray task per run (local, or the cluster at --ray-address); auto (default): "
                            "processes when this machine has more than one core")
    sweep.add_argument("--workers", type=int, default=None,
                       help="runs at once (default: cores / threads; with ray: as many as the cluster's CPUs allow); "
                            "with --plan: the workers the wall-time estimate assumes (default: the executor's)")
    sweep.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1; local: unchanged)")
    sweep.add_argument("--ray-address", default=None, help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:10001")
    sweep.add_argument("--plan", action="store_true",
                       help="train nothing: print what is stored, what would be trained (per backbone, plug-in and "
                            "schedule) and the estimated hours, serial and with --workers workers, from the measured "
                            "times of similar stored runs (valid for the concurrency those runs had)")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.set_defaults(func=cmd_sweep)

    from mltfrkit.mixrec.cli import add_mixrec_parser
    from mltfrkit.vocab.cli import add_vocab_parser

    add_vocab_parser(sub)
    add_mixrec_parser(sub)

    diagnose = sub.add_parser("diagnose", help="selection sharpness of a trained MLTFR run, per noise mode")
    diagnose.add_argument("run_dir")
    diagnose.add_argument("--data-dir", default=None)
    diagnose.add_argument("--top-k", type=int, default=None)
    diagnose.add_argument("--seed", type=int, default=0)
    diagnose.set_defaults(func=cmd_diagnose)

    evaluate = sub.add_parser("evaluate", help="re-score a stored run (best weights) under another protocol")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--split", choices=["valid", "test"], default="test")
    evaluate.add_argument("--exclude-history", action="store_true", help="never rank the user's history items")
    evaluate.add_argument("--pool", type=int, default=None, metavar="N",
                          help="rank the test item among N candidates (it + N-1 negatives never interacted with; "
                               "Table 4's protocol): top-1 accuracy, HR@k / NDCG@k within the pool")
    evaluate.add_argument("--pool-sampling", choices=["uniform", "popularity"], default="uniform")
    evaluate.add_argument("--pool-seed", type=int, default=0, help="the pools' seed: every method sees the same pools")
    evaluate.add_argument("--max-users", type=int, default=None, help="a seeded sample of test users (default: all)")
    evaluate.set_defaults(func=cmd_evaluate)

    store = sub.add_parser("store", help="carry finished runs between machines: a result archive without weights")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    export = store_sub.add_parser("export", help="copy every finished run of the store (no *.pt weights) to DEST/mltfrkit-<version>/")
    export.add_argument("destination")
    importer = store_sub.add_parser("import", help="add an archive's runs to the store (runs already there are kept); "
                                    "tables then read them, grids train only what is missing")
    importer.add_argument("archive", help="the folder export wrote (holding mltfrkit-<version>/)")
    for command in (export, importer):
        command.add_argument("--runs-dir", default=None, help="the result store's root (default: $MLTFR_RUNS_DIR, "
                             "else <cache>/runs)")
        command.set_defaults(func=cmd_store)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    data.add_parser("list", help="named datasets and where their files come from").set_defaults(func=cmd_data_list)
    stats = data.add_parser("stats", help="Table 5 statistics")
    stats.add_argument("name")
    stats.add_argument("--data-dir", default=None)
    stats.set_defaults(func=cmd_data_stats)
    return parser


# The library's own errors carry a full message (what, which file or option, what to do); the others
# (a full disk, a torch runtime error, a corrupt zip) are printed as one line too, never as a traceback.
LIBRARY_ERRORS = (KeyError, TypeError, ValueError, FileNotFoundError, DatasetNotFoundError, EmptyDatasetError,
                  MalformedInputError)
OTHER_ERRORS = (OSError, EOFError, RuntimeError, zipfile.BadZipFile, MemoryError)


def main(argv: list[str] | None = None) -> int:
    """Every expected failure prints one line ``mltfrkit: error: ...`` and exits 2 (the traceback too
    with ``--debug`` or ``MLTFR_DEBUG=1``); Ctrl-C prints how to resume and exits 130."""
    from mltfrkit.executors import StoreNotVisible
    from mltfrkit.vocab.cli import EXPECTED_ERRORS as VOCAB_ERRORS

    args = build_parser().parse_args(argv)
    ours = LIBRARY_ERRORS + VOCAB_ERRORS + (StoreNotVisible, ImportError)  # ImportError: a missing extra
    debug = args.debug or os.environ.get("MLTFR_DEBUG", "") not in ("", "0")
    previous = _terminate_like_interrupt()
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        if debug:
            traceback.print_exc()
        how = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"mltfrkit: {how}; re-run the same command to resume (every finished epoch is checkpointed)",
              file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    except ours + OTHER_ERRORS as error:
        if debug:
            traceback.print_exc()
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if not isinstance(error, ours):  # not ours: name its kind, offer the traceback
            first = str(message).strip().splitlines()[0] if str(message).strip() else ""
            message = f"{type(error).__name__}: {first} (run with --debug or MLTFR_DEBUG=1 for the traceback)"
        print(f"mltfrkit: error: {message}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``kill``, a batch script stopping its sweep), raised where Ctrl-C would
    be: a sweep then stops its workers and leaves every run resumable, instead of dying with workers left over."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _terminate_like_interrupt():
    """Make SIGTERM raise :class:`Terminated` in this (main) thread; returns the handler it replaced (None: not
    the main thread, where handlers cannot be set)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
