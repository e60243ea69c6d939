"""RecBole's SASRec against ours on ml-100k, with settings matched as far as RecBole allows.

Why: to show how our training loop compares with a widely used reference implementation in wall
time to the early stop and in test accuracy, on the same file, split and hyper-parameters.

RecBole (``recbole==1.2.1``) lives in its own virtual environment (default
``<mltfrkit cache>/recbole-venv``) so that its old pins (``numpy<2``, ``pandas<2.3``, ...) never touch
ours. The script builds that venv on first use (torch 2.13.0 CPU first, then RecBole without its
dependency list, then only what its imports, ``recbole.quick_start`` included, need) and runs RecBole in a
subprocess with that venv's python. Our side runs in this process through the library
(``build_model`` + ``fit``, the two calls ``run_training`` makes) with a temporary run directory.

Both read the same ``ml-100k.inter`` from our dataset cache (RecBole: ``data_path`` = its parent's
parent, dataset ``ml-100k``). Our ml-100k preparation (``PrepSettings()``): no k-core, no rating
threshold, users need 3 interactions (all have at least 20), exact duplicate rows dropped (there are
none), ties in time broken by file order. RecBole gets no filters and no threshold either, so both
keep 943 users, 1682 items and 100,000 interactions.

Matched: leave-one-out in time order (validation = second-to-last item, test = last), full ranking
over all items with no history masking (ours: ``exclude_history=False``; RecBole never masks for
sequential models), d=64, 2 blocks, 2 heads, FFN inner size = d (ours has no separate inner size),
ReLU, dropout 0.2 (hidden and attention), max_len 50, batch 128, Adam lr 1e-3, no weight decay, one
uniform negative per training target, NDCG@20 early stopping with patience 10 (RecBole stops after
``stopping_step + 1`` epochs without improvement, so it gets ``stopping_step = patience - 1``),
HR/NDCG@20, the same epoch cap, seed value, CPU, thread count (``torch.set_num_threads`` and
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), one evaluation batch for all 943 users.

Loss: RecBole's SASRec has only CE and BPR, so both sides train BPR (-log sigmoid(pos - neg)) with one
uniform negative per target (ours: ``loss="bpr"``; our default is BCE, MLTFR's eq. 16).

Not matched (RecBole does not allow it, or the models differ by design):
  * training samples: RecBole trains one target per prefix (every item of every training sequence,
    history truncated to 50), in batches of 128 prefixes. Ours (``--windows all``, the default here)
    cuts each user's training history into windows of 51 items that end every ``--stride`` items
    (default 10) and scores each window's last ``stride`` targets, so every training item is a target
    once too, with at least 41 items of history where the user has them (``--stride 50``: windows
    overlapping by one item except near a history's start, cheapest, but early positions of a window
    see little history; ``--stride 1``: RecBole's exact contexts, at about 50 times the cost), 16
    windows a batch (``--our-batch``; about 220 targets per update against RecBole's 128);
    ``--windows last`` trains only each user's last 51 items (our default elsewhere, SASRec's
    practice: 40% of ml-100k's targets). Time per training sample is therefore given two ways: per
    target scored by the loss, and per user.
  * architecture: RecBole's SASRec is BERT-style (post-LayerNorm, LayerNorm on the input embedding,
    no sqrt(d) scaling, no final LayerNorm, all weights N(0, 0.02)); ours follows the SASRec paper's
    code (pre-LayerNorm on queries, sqrt(d) scaling, final LayerNorm, Xavier linear layers).
    layer_norm_eps is set to ours (1e-8).
  * time ties: RecBole stores timestamps as float32. It is given ``normalize_field: [timestamp]``
    (min-max scaling first, which keeps ~1 s resolution, instead of 64 s for raw float32); a few
    near-simultaneous ratings can still be ordered differently from ours (stable file order on
    exact float64 times), which changes the validation/test item of a handful of users.
    The script prints how many.
  * early-stopping ties: RecBole counts an equal validation score as an improvement, ours does not.
  * seeds: the same seed value, but the two libraries draw different random streams.

Wall time to the early stop = the fit call: training epochs + per-epoch validation + checkpoint
writes, up to the last epoch. Excluded: venv build, interpreter start and imports, dataset loading
and preparation (printed separately), model construction, the final test evaluation.

RecBole's side takes about 50 minutes a seed on one core here, so each of its seeds is stored once
measured (``<mltfrkit cache>/benchmarks/vs_recbole/``, keyed by its full config, the data file's sha256,
the thread count and RecBole's version) and reused by later calls; ``--fresh`` measures again. Ours is
always trained anew. The load average is printed with every measurement: timings taken on a busy
machine say so.

    python benchmarks/vs_recbole.py [--seeds 0 1 2] [--threads 2] [--epochs 200] [--keep-logs] [--fresh]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECBOLE_VERSION = "1.2.1"
TORCH_VERSION = "2.13.0"
# RecBole 1.2.1 imports fail on numpy 2 / newer pandas and scipy / setuptools >= 70 (pkg_resources).
RECBOLE_PINS = ["numpy<2", "pandas<2.3", "scipy<1.14", "setuptools<70"]
# The minimal set RecBole's imports need (found by trying); its own list adds thop, plotly, tabulate
# and psutil, which only its run_recbole helpers use. ray is for quick_start (`from ray import tune`),
# and it also happens to hide a missing colorama when quick_start is imported first.
RECBOLE_DEPS = ["tqdm", "pyyaml", "colorlog==4.7.2", "colorama==0.4.4", "texttable", "scikit-learn",
                "tensorboard", "ray<=2.6.3,>=1.13.0"]
# What the subprocess imports, in an order that does not let ray's vendored colorama mask a gap.
RECBOLE_PROBE = ("import recbole.config, recbole.data, recbole.model.sequential_recommender, recbole.trainer, "
                 "recbole.utils; import recbole.quick_start")

# Hyper-parameters shared by both sides.
HIDDEN, LAYERS, HEADS, DROPOUT, MAX_LEN = 64, 2, 2, 0.2, 50
BATCH, LR, PATIENCE, METRIC, K = 128, 1e-3, 10, "NDCG@20", 20
EVAL_BATCH = 4096


# -- RecBole's venv ------------------------------------------------------------------------

def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def recbole_importable(python: Path) -> bool:
    if not python.exists():
        return False
    return probe_recbole(python).returncode == 0


def probe_recbole(python: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    return subprocess.run([str(python), "-c", RECBOLE_PROBE], capture_output=True, text=True, env=env, check=False)


def manual_build_hint(venv: Path) -> str:
    pip = f"{venv_python(venv)} -m pip install"
    quoted = " ".join(f'"{r}"' for r in RECBOLE_PINS + RECBOLE_DEPS)
    return (f"  rm -rf {venv}\n  {sys.executable} -m venv {venv}\n  {pip} torch=={TORCH_VERSION}\n"
            f"  {pip} --no-deps recbole=={RECBOLE_VERSION}\n  {pip} {quoted}\n"
            f"  {venv_python(venv)} -c '{RECBOLE_PROBE}'")


def ensure_recbole_venv(venv: Path) -> tuple[Path, float]:
    """Build RecBole's venv unless it already imports recbole; returns (python, seconds spent)."""
    python = venv_python(venv)
    if recbole_importable(python):
        return python, 0.0
    print(f"building RecBole's venv at {venv} (one-off; a few minutes) ...", flush=True)
    started = time.perf_counter()
    from mltfrkit.data.registry import RECBOLE_WHEEL
    from mltfrkit.paths import cache_dir

    wheel = cache_dir("downloads") / RECBOLE_WHEEL  # already fetched for ml-100k: no second download
    recbole = str(wheel) if wheel.exists() else f"recbole=={RECBOLE_VERSION}"
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    steps = [
        ("create the venv", [sys.executable, "-m", "venv", str(venv)]),
        # torch first and pinned: a bare requirement would resolve to a multi-GB CUDA build.
        (f"install torch=={TORCH_VERSION}", pip + [f"torch=={TORCH_VERSION}"]),
        # --no-deps: RecBole's list pulls packages that only its other entry points use.
        (f"install recbole=={RECBOLE_VERSION}", pip + ["--no-deps", recbole]),
        # no torch here: re-resolving it would clash with setuptools<70 (torch asks for >=77 but
        # imports fine without it); nothing in this list requires torch, so pip leaves it alone.
        ("install RecBole's pins and imports", pip + RECBOLE_PINS + RECBOLE_DEPS),
    ]
    for what, command in steps:
        if what == "create the venv" and python.exists():
            continue
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise SystemExit(f"could not build RecBole's venv at {venv}: step '{what}' failed:\n{tail}\n"
                             f"Fix the cause and rerun, or build it by hand:\n{manual_build_hint(venv)}")
    if not recbole_importable(python):
        probe = probe_recbole(python)
        tail = "\n".join(probe.stderr.strip().splitlines()[-8:])
        raise SystemExit(f"RecBole's venv at {venv} was built but RecBole's imports fail:\n{tail}\n"
                         f"Install the missing module into that venv, or rebuild it by hand:\n"
                         f"{manual_build_hint(venv)}")
    seconds = time.perf_counter() - started
    print(f"RecBole's venv is ready ({seconds:.0f}s)", flush=True)
    return python, seconds


# -- the RecBole side (runs inside RecBole's venv) -------------------------------------------

RECBOLE_CHILD = r'''
"""Train RecBole's SASRec with the config on stdin; write timings and metrics as JSON."""
import json, sys, time
job = json.load(sys.stdin)
import torch
torch.set_num_threads(job["threads"])
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed

config = Config(model="SASRec", dataset="ml-100k", config_dict=job["config"])
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
began = time.perf_counter()
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
data_seconds = time.perf_counter() - began

init_seed(config["seed"], config["reproducibility"])  # as RecBole's own runner: reseed before the model
model = SASRec(config, train_data._dataset).to(config["device"])
trainer = Trainer(config, model)
spent = {"train": 0.0, "valid": 0.0}

def timed(method, bucket):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[bucket] += time.perf_counter() - started
    return wrapper

trainer._train_epoch = timed(trainer._train_epoch, "train")
trainer._valid_epoch = timed(trainer._valid_epoch, "valid")
best = {"epoch": 0}

def on_epoch(epoch_idx, score):
    if trainer.cur_step == 0:  # early_stopping just reset its counter: this epoch is the best so far
        best["epoch"] = epoch_idx + 1

def pairs(loader):  # (user, target item) ids of an evaluation split
    feat = loader._dataset.inter_feat
    return list(zip(feat[config["USER_ID_FIELD"]].tolist(), feat[config["ITEM_ID_FIELD"]].tolist()))

began = time.perf_counter()
trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=on_epoch)
wall = time.perf_counter() - began
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
users = len(set(train_data._dataset.inter_feat[config["USER_ID_FIELD"]].tolist()))
json.dump({"wall": wall, "train_seconds": spent["train"], "valid_seconds": spent["valid"],
           "data_seconds": data_seconds, "epochs": len(trainer.train_loss_dict), "best_epoch": best["epoch"],
           "targets_per_epoch": len(train_data._dataset), "users_per_epoch": users,
           "test": {k.upper().replace("HIT", "HR"): float(v) for k, v in test.items()},
           "n_items": dataset.item_num - 1, "n_users": dataset.user_num - 1,
           "interactions": len(dataset.inter_feat) + dataset.user_num - 1,
           "valid_pairs": pairs(valid_data), "test_pairs": pairs(test_data),
           "user_tokens": dataset.field2id_token[config["USER_ID_FIELD"]].tolist(),
           "item_tokens": dataset.field2id_token[config["ITEM_ID_FIELD"]].tolist(),
           "torch": torch.__version__, "threads": torch.get_num_threads()}, open(job["result"], "w"))
'''


def recbole_config(inter: Path, seed: int, epochs: int, workdir: Path) -> dict:
    return {
        "data_path": str(inter.parent.parent), "checkpoint_dir": str(workdir / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # float32 timestamps lose order; min-max scaling first keeps about 1 s of resolution
        "normalize_all": False, "normalize_field": ["timestamp"],
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        "n_layers": LAYERS, "n_heads": HEADS, "hidden_size": HIDDEN, "inner_size": HIDDEN,
        "hidden_dropout_prob": DROPOUT, "attn_dropout_prob": DROPOUT, "hidden_act": "relu",
        "layer_norm_eps": 1e-8, "initializer_range": 0.02, "loss_type": "BPR",
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                                  "candidate_num": 0},
        "epochs": epochs, "train_batch_size": BATCH, "learner": "adam", "learning_rate": LR, "weight_decay": 0.0,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG"], "topk": [K], "valid_metric": METRIC, "eval_step": 1,
        "stopping_step": PATIENCE - 1, "eval_batch_size": EVAL_BATCH,
        "seed": seed, "reproducibility": True, "use_gpu": False, "gpu_id": "", "worker": 0, "shuffle": True,
        "show_progress": False, "state": "INFO",
    }


def recbole_store_path(inter: Path, seed: int, epochs: int, threads: int) -> Path:
    """Where one seed's RecBole measurement is kept: keyed by everything that determines it."""
    from mltfrkit.paths import cache_dir

    config = recbole_config(inter, seed, epochs, Path("."))
    for path_key in ("data_path", "checkpoint_dir"):
        config.pop(path_key)
    digest = hashlib.sha256(inter.read_bytes()).hexdigest()
    key = json.dumps({"config": config, "threads": threads, "data": digest, "recbole": RECBOLE_VERSION,
                      "torch": TORCH_VERSION}, sort_keys=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir("benchmarks") / "vs_recbole" / f"{name}-seed{seed}.json"


def stored_recbole(python: Path, inter: Path, seed: int, epochs: int, threads: int, workdir: Path,
                   fresh: bool) -> dict:
    """One seed of RecBole: the stored measurement when there is one, else run it and store it atomically."""
    from mltfrkit.paths import atomic_write_bytes

    path = recbole_store_path(inter, seed, epochs, threads)
    if path.exists() and not fresh:
        result = json.loads(path.read_text())
        result["stored"] = str(path)
        return result
    load_before = os.getloadavg()[0]
    result = run_recbole(python, inter, seed, epochs, threads, workdir)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_bytes(path, json.dumps(result).encode())
    return result


def run_recbole(python: Path, inter: Path, seed: int, epochs: int, threads: int, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    job = {"config": recbole_config(inter, seed, epochs, workdir), "threads": threads,
           "result": str(workdir / "result.json")}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONNOUSERSITE": "1",
           # RecBole 1.2.1 reloads its best checkpoint with a bare torch.load, which torch >= 2.6 refuses
           # (weights_only); the file is the one it has just written itself.
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    with open(workdir / "recbole.out", "w") as output:
        done = subprocess.run([str(python), "-c", RECBOLE_CHILD], input=json.dumps(job), cwd=workdir, env=env,
                              stdout=output, stderr=subprocess.STDOUT, text=True,
                              check=False)
    if done.returncode != 0:
        tail = "\n".join((workdir / "recbole.out").read_text().strip().splitlines()[-20:])
        raise SystemExit(f"RecBole failed (exit {done.returncode}); last lines of {workdir / 'recbole.out'}:\n{tail}")
    return json.loads((workdir / "result.json").read_text())


# -- our side (this process) ---------------------------------------------------------------

def run_ours(split, seed: int, epochs: int, workdir: Path, windows: str = "all", stride: int | None = 10,
             batch_size: int = 16) -> dict:
    """Train through the library, timing the fit call the same way as RecBole's."""
    import mltfrkit.train.trainer as trainer_module
    from mltfrkit.runs import RunSpec, build_model, run_dir_for
    from mltfrkit.train import TrainConfig, fit
    from mltfrkit.train.trainer import training_sequences, training_windows

    spec = RunSpec(dataset="ml-100k", backbone="sasrec",
                   model={"hidden_size": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "dropout": DROPOUT,
                          "max_len": MAX_LEN, "loss": "bpr"},
                   # plain patience, as RecBole stops (its stopping_step), not our relative default
                   train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=LR, patience=PATIENCE, patience_relative=0.0,
                                     valid_metric=METRIC,
                                     ks=(K,), seed=seed, device="cpu", exclude_history=False, windows=windows,
                                     stride=stride if windows == "all" else None))
    run_dir = run_dir_for(spec, split, workdir)
    model, _ = build_model(spec, split.n_items)
    evaluate, eval_seconds = trainer_module.evaluate, []

    def timed_evaluate(*args, **kwargs):  # per-epoch validation, then the final test
        started = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            eval_seconds.append(time.perf_counter() - started)

    epoch_ends = []
    trainer_module.evaluate = timed_evaluate
    try:
        began = time.perf_counter()
        result = fit(model, split, spec.train, run_dir=run_dir, run_config=spec.to_dict(split.source_sha256),
                     progress=False, log=None, on_epoch_end=lambda entry: epoch_ends.append(time.perf_counter()))
    finally:
        trainer_module.evaluate = evaluate
    n_epochs = len(result["epochs"])
    valid_seconds = sum(eval_seconds[:n_epochs])
    sequences, scored = training_windows(split, MAX_LEN, spec.train.windows, spec.train.stride)
    targets = sequences[:, 1:] > 0
    return {"wall": epoch_ends[-1] - began, "valid_seconds": valid_seconds,
            "train_seconds": sum(e["seconds"] for e in result["epochs"]) - valid_seconds,
            "epochs": n_epochs, "best_epoch": result["best_epoch"],
            "targets_per_epoch": int((targets if scored is None else targets & scored).sum()),
            "users_per_epoch": len(training_sequences(split, MAX_LEN)),  # one row per user: users, not windows
            "test": result["test"]}


# -- report --------------------------------------------------------------------------------

def target_differences(split, recbole: dict) -> tuple[int, int]:
    """Users whose validation / test item differs between the two preparations (time ties)."""
    ours = {user: (seq[-2], seq[-1]) for user, seq in zip(split.user_ids, split.sequences)}
    items, users = recbole["item_tokens"], recbole["user_tokens"]
    valid = sum(split.item_ids[ours[users[u]][0]] != items[i] for u, i in recbole["valid_pairs"])
    test = sum(split.item_ids[ours[users[u]][1]] != items[i] for u, i in recbole["test_pairs"])
    return int(valid), int(test)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def sd(values) -> float:
    values = list(values)
    centre = mean(values)
    return (sum((v - centre) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run; means are reported")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads for both (default 2)")
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap for both (default 200)")
    parser.add_argument("--recbole-venv", type=Path, default=None,
                        help="RecBole's virtual environment, built here if missing "
                             "(default: <mltfrkit cache>/recbole-venv, i.e. $MLTFR_CACHE_DIR or ~/.cache/mltfrkit)")
    parser.add_argument("--windows", choices=["all", "last"], default="all",
                        help="our training sequences: every window of each history, so every training item is a "
                             "target once as in RecBole (default), or only each user's last max_len + 1 items")
    parser.add_argument("--stride", type=int, default=10,
                        help="with --windows all: a window ends every STRIDE items and scores its last STRIDE targets, "
                             "so each target sees at least 51 - STRIDE items of history (default 10; 1 = RecBole's "
                             "contexts at about 50x our cost; 50 = the cheapest, windows overlapping by about one item)")
    parser.add_argument("--our-batch", type=int, default=16,
                        help=f"our batch size in windows (default 16): a window at stride 10 carries about 14 targets on "
                             f"ml-100k, so 16 windows (~220 targets) are closest to RecBole's {BATCH} one-target prefixes "
                             f"per update; {BATCH} windows make 8x fewer, larger updates")
    parser.add_argument("--fresh", action="store_true",
                        help="measure RecBole again even where a stored measurement for the same settings exists")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep RecBole's logs and both sides' checkpoints (the path is printed)")
    args = parser.parse_args()
    if not 1 <= args.stride <= MAX_LEN:  # before RecBole's hour, not after it
        parser.error(f"--stride must be between 1 and max_len={MAX_LEN}, not {args.stride}")
    if args.our_batch < 1:
        parser.error(f"--our-batch must be at least 1, not {args.our_batch}")

    # Before torch is imported, so that OpenMP starts with the same pool in both processes.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    import mltfrkit
    from mltfrkit.data import load_dataset
    from mltfrkit.data.registry import (
        _fetch_ml100k,  # the cached RecBole-format file, never ./data or $MLTFR_DATA_DIR
    )
    from mltfrkit.paths import cache_dir

    torch.set_num_threads(args.threads)
    venv = (args.recbole_venv or cache_dir() / "recbole-venv").expanduser().resolve()
    python, build_seconds = ensure_recbole_venv(venv)
    inter = _fetch_ml100k()
    if inter.name != "ml-100k.inter":
        raise SystemExit(f"ml-100k came from GroupLens ({inter}), not as RecBole's ml-100k.inter; RecBole needs the "
                         f"atomic file: pip download --no-deps recbole=={RECBOLE_VERSION} -d {cache_dir('downloads')}")

    began = time.perf_counter()
    split = load_dataset(str(inter), use_cache=False)
    ours_data_seconds = time.perf_counter() - began
    stats = split.stats()
    workroot = Path(tempfile.mkdtemp(prefix="vs_recbole-"))
    print(f"SASRec on ml-100k: mltfrkit {mltfrkit.__version__} vs RecBole {RECBOLE_VERSION}; torch {torch.__version__}, "
          f"{args.threads} threads, CPU; seeds {args.seeds}; epoch cap {args.epochs}; "
          f"early stopping on valid {METRIC}, patience {PATIENCE}", flush=True)
    prep = split.settings
    print(f"data (read by both): {inter}; our preparation (PrepSettings defaults: k_core={prep.k_core}, "
          f"user_core={prep.user_core}, min_user_len={prep.min_user_len}, dedupe={prep.dedupe}, no rating "
          f"threshold, ties by file order): {stats['users']} users, {stats['items']} items, "
          f"{stats['interactions']} interactions")
    print(f"RecBole venv: {venv} ({f'built now in {build_seconds:.0f}s' if build_seconds else 'reused'})")

    ours_runs, recbole_runs = [], []
    try:
        for seed in args.seeds:
            print(f"seed {seed}: RecBole ...", flush=True)
            rb = stored_recbole(python, inter, seed, args.epochs, args.threads, workroot / f"recbole-seed{seed}",
                                args.fresh)
            origin = (f"stored, measured {rb['measured_at']}" if "stored" in rb else "measured now")
            print(f"seed {seed}: RecBole  wall {rb['wall']:7.1f}s  epochs {rb['epochs']:3d}  best {rb['best_epoch']:3d}  "
                  f"test HR@20 {rb['test']['HR@20']:.4f}  NDCG@20 {rb['test']['NDCG@20']:.4f}  "
                  f"(load average {rb['load_average'][0]:.1f} -> {rb['load_average'][1]:.1f}; {origin})", flush=True)
            print(f"seed {seed}: ours ...", flush=True)
            load_before = os.getloadavg()[0]
            ours = run_ours(split, seed, args.epochs, workroot / f"ours-seed{seed}", args.windows, args.stride,
                            args.our_batch)
            print(f"seed {seed}: ours     wall {ours['wall']:7.1f}s  epochs {ours['epochs']:3d}  best {ours['best_epoch']:3d}  "
                  f"test HR@20 {ours['test']['HR@20']:.4f}  NDCG@20 {ours['test']['NDCG@20']:.4f}  "
                  f"(load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
            recbole_runs.append(rb)
            ours_runs.append(ours)
    finally:
        if args.keep_logs:
            print(f"logs and checkpoints kept in {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)

    rb0 = recbole_runs[0]
    valid_diff, test_diff = target_differences(split, rb0)
    print(f"RecBole's preparation (no filters, no threshold, timestamp min-max scaled to float32): "
          f"{rb0['n_users']} users, {rb0['n_items']} items, {rb0['interactions']} interactions; validation item "
          f"differs from ours for {valid_diff} users, test item for {test_diff} (float32 time ties); "
          f"RecBole side: torch {rb0['torch']}, {rb0['threads']} threads")
    print(f"matched: leave-one-out in time order, full ranking without history masking, d={HIDDEN}, {LAYERS} blocks, "
          f"{HEADS} heads, FFN inner {HIDDEN}, ReLU, dropout {DROPOUT} (hidden + attention), max_len {MAX_LEN}, "
          f"batch {BATCH}{'' if args.our_batch == BATCH else f' (ours: {args.our_batch} windows)'}, Adam lr {LR:g}, "
          f"1 uniform negative, patience {PATIENCE} on valid {METRIC} "
          f"(RecBole stopping_step={PATIENCE - 1}), epoch cap, seed value, threads, CPU")
    print("matched loss: BPR, -log sigmoid(pos - neg), 1 uniform negative per target (RecBole's SASRec has no BCE)")
    ours_samples = (f"every training item of every user once, in windows of 51 items ending every {args.stride} items, "
                    f"each target with at least {MAX_LEN + 1 - args.stride} items of history where the user has them "
                    f"({args.our_batch} windows a batch)" if args.windows == "all" else
                    f"every position of each user's last 51 training items ({args.our_batch} users a batch)")
    print(f"not matched: training samples (RecBole: one target per prefix with up to 50 items of history, 128 "
          f"prefixes a batch; ours: {ours_samples}), architecture details (RecBole post-LN BERT-style)")
    print("wall = fit call: training + per-epoch validation + checkpoints up to the early stop; excludes venv build, "
          "imports, data preparation, model construction, final test evaluation. "
          "Per-sample times use training time only (no validation).")

    def row(label, key, fmt):
        o, r = mean(key(x) for x in ours_runs), mean(key(x) for x in recbole_runs)
        return f"{label:44s} {format(o, fmt):>12s} {format(r, fmt):>12s} {o / r if r else float('nan'):12.3f}"

    n = len(args.seeds)
    print(f"\n{f'mean over {n} seed' + 's' * (n > 1):44s} {'ours':>12s} {'RecBole':>12s} {'ours/RecBole':>12s}")
    print(row("wall time to early stop [s]", lambda x: x["wall"], ".1f"))
    print(row("  of which training [s]", lambda x: x["train_seconds"], ".1f"))
    print(row("  of which validation [s]", lambda x: x["valid_seconds"], ".1f"))
    print(row("seconds per epoch (training + validation)", lambda x: x["wall"] / x["epochs"], ".2f"))
    print(row("epochs run", lambda x: x["epochs"], ".1f"))
    print(row("best epoch", lambda x: x["best_epoch"], ".1f"))
    print(row("training targets per epoch (scored by loss)", lambda x: x["targets_per_epoch"], ",.0f"))
    print(row("user sequences per epoch", lambda x: x["users_per_epoch"], ",.0f"))
    print(row("training time per target [us]",
              lambda x: 1e6 * x["train_seconds"] / (x["epochs"] * x["targets_per_epoch"]), ".2f"))
    print(row("training time per user sequence [ms]",
              lambda x: 1e3 * x["train_seconds"] / (x["epochs"] * x["users_per_epoch"]), ".3f"))
    print(row("test HR@20", lambda x: x["test"]["HR@20"], ".4f"))
    print(row("test NDCG@20", lambda x: x["test"]["NDCG@20"], ".4f"))
    print(f"{'data loading + preparation [s] (excluded)':44s} {ours_data_seconds:12.1f} "
          f"{mean(x['data_seconds'] for x in recbole_runs):12.1f}")
    wall = mean(x["wall"] for x in ours_runs) / mean(x["wall"] for x in recbole_runs)
    ndcg = mean(x["test"]["NDCG@20"] for x in ours_runs) / mean(x["test"]["NDCG@20"] for x in recbole_runs)
    if n > 1:  # is the quality gap larger than the spread between seeds?
        for metric in ("HR@20", "NDCG@20"):
            o = [x["test"][metric] for x in ours_runs]
            r = [x["test"][metric] for x in recbole_runs]
            gap, se = mean(o) - mean(r), (sd(o) ** 2 / n + sd(r) ** 2 / n) ** 0.5
            print(f"test {metric}: ours {mean(o):.4f} +- {sd(o):.4f}, RecBole {mean(r):.4f} +- {sd(r):.4f} (sd over "
                  f"seeds); ours - RecBole = {gap:+.4f}, {gap / se if se else float('nan'):+.2f} standard errors")
    print(f"RATIOS wall={wall:.3g} ndcg20={ndcg:.3g}")


if __name__ == "__main__":
    main()
