"""``mltfrkit mixrec``: train a MixRec variant or run the DAMoE search, as store runs.

    mltfrkit mixrec train --dataset ml-100k --variant mixrec --profile cpu --seed 0 [--design 010101...]
    mltfrkit mixrec search --dataset ml-100k --profile cpu --iterations 30 --users 0.2

Each command is one library call (:func:`mltfrkit.mixrec.train.run_mixrec`,
:func:`mltfrkit.mixrec.search.search_damoe`) with the specs of :mod:`mltfrkit.mixrec.experiment`, so a
notebook with the same profile reads the same runs. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json


def _design(text: str) -> tuple[int, ...]:
    if not text or set(text) - {"0", "1"}:
        raise argparse.ArgumentTypeError(f"a design is a string of 0 (serial) / 1 (parallel) bits, 3 per DAMoE "
                                         f"layer, not {text!r}")
    return tuple(int(c) for c in text)


def _spec(args):
    from mltfrkit.mixrec.experiment import mixrec_spec

    return mixrec_spec(args.variant if hasattr(args, "variant") else "mixrec", args.dataset, args.profile, args.seed,
                       args.epochs, getattr(args, "design", None), args.llm, args.text)


def cmd_train(args: argparse.Namespace) -> int:
    from mltfrkit.data import load_dataset
    from mltfrkit.mixrec.train import run_mixrec

    spec = _spec(args)
    result = run_mixrec(spec, data_dir=args.data_dir, runs_dir=args.runs_dir, split=load_dataset(args.dataset,
                                                                                                  args.data_dir))
    print(json.dumps({"run_dir": result["run_dir"], "best_epoch": result["best_epoch"], "test": result["test"]},
                     indent=1))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from mltfrkit.data import load_dataset
    from mltfrkit.mixrec.experiment import bo_spec
    from mltfrkit.mixrec.search import search_damoe

    split = load_dataset(args.dataset, args.data_dir)
    trials = search_damoe(bo_spec(_spec(args), args.users), split, runs_dir=args.runs_dir, iterations=args.iterations,
                          n_init=args.init, seed=args.seed)
    design, value = trials.best()
    print(f"best design {''.join(map(str, design))}: validation MRR {value:.5f} on Data_BO "
          f"({args.users:.0%} of the users); train it: mltfrkit mixrec train --dataset {args.dataset} "
          f"--profile {args.profile} --design {''.join(map(str, design))}")
    return 0


def add_mixrec_parser(sub) -> None:
    mixrec = sub.add_parser("mixrec", help="MixRec (the text-reading LLM recommender): train a variant, search DAMoE")
    commands = mixrec.add_subparsers(dest="mixrec_command", required=True)
    for name, func, text in (("train", cmd_train, "train (or resume, or read) a MixRec variant"),
                             ("search", cmd_search, "the DAMoE architecture search by Bayesian optimisation")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--dataset", default="ml-100k")
        command.add_argument("--data-dir", default=None)
        command.add_argument("--runs-dir", default=None)
        command.add_argument("--profile", choices=["cpu", "paper"], default="cpu",
                             help="cpu: the reduced scale of mltfrkit.mixrec.experiment.CPU_REDUCTIONS; paper: 3.1.4")
        command.add_argument("--llm", default="SmolLM2-135M", help="SmolLM2-135M (offline), a folder, .gguf or hub id")
        command.add_argument("--text", default="titles",
                             help="titles (the dataset's title file) or a CSV item,title / Amazon meta file")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--epochs", type=int, default=None, help="default: the profile's (cpu 2, paper 40)")
        command.set_defaults(func=func)
        if name == "train":
            command.add_argument("--variant", choices=["llmrec", "mixrec_base", "mixrec"], default="mixrec")
            command.add_argument("--design", type=_design, default=None,
                                 help="3L serial/parallel bits (e.g. the search's best); default all serial")
        else:
            command.add_argument("--iterations", type=int, default=30, help="BO evaluations in all (paper: 30)")
            command.add_argument("--init", type=int, default=5, help="random initial designs")
            command.add_argument("--users", type=float, default=0.2, help="Data_BO: share of the users (paper: b%%)")
