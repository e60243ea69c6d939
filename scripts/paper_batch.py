#!/usr/bin/env python
"""The paper-profile batch behind issue 15's ladder and issue 20's claims, a session at a time.

    python scripts/paper_batch.py --finish-by 08:50            # import results/, train in order until 08:50, export
    python scripts/paper_batch.py --finish-by 08:20 --stop-at 08:50   # start no run after 08:20, stop the running ones at 08:50
    python scripts/paper_batch.py --plan                       # what each grid still needs, the batch's total
    python scripts/paper_batch.py --only claims-ml-100k-ours   # one grid of the queue

The whole batch is days of compute on a 2-core laptop, more than one machine keeps its store, so each
invocation (1) imports the committed result archive (``results/``, README "The result archive") into the store,
(2) runs the grids of :data:`QUEUE` in order with ``mltfrkit sweep ... --finish-by``, so that no run is cut off
half-trained, stopping at the first grid the time budget ends in, and (3) exports every finished run back to the
archive, also when interrupted. Every number of the batch is reproduced by the same sweeps on an empty store.
A run can outlast a session (ml-100k's FMLP-Rec and BSARec with MLTFR: hours): ``--stop-at`` stops the batch at
a set time as SIGTERM does (exit code 4), each running run keeping its last epoch's checkpoint, which the next
invocation on the same machine resumes from; with ``--finish-by`` before it, no run starts in the last stretch.

The queue's order: the reproduction-gap ladder on Pantry first (issue 15), SASRec's then BERT4Rec's, then its
token-source rung (``llm_heavy``), then the claims grids, cheapest evidence first: SASRec's and BERT4Rec's runs of
ml-100k (Fig. 1 and Fig. 3 at the paper profile there soonest) and of Pantry, then Pantry's other four backbones
(the paper's Table 2 dataset; FMLPRec's and BSARec's prefix-encoded runs take an hour or more each, fewer there
than on ml-100k), Beauty's Table 2 runs (two backbones), the authors' test-selected focus grids of ml-100k and
Pantry, then ml-100k's other four backbones (claims 3a-3c wait for them), Beauty's Fig. 3 (claim 5), Beauty's
Fig. 1 (claims 1 and 2; most of the batch's hours), and the rest of the authors' configuration last. The
settings are those of the notebooks that read the runs (``reproduction_gap.ipynb`` with SASRec and BERT4Rec,
``claims.ipynb``'s defaults: six backbones for Table 2, two on Beauty, max_vocab 2000).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--profile", "paper", "--plugin-set", "max_vocab=2000"]
FOCUS = ["--backbones", "sasrec", "bert4rec"]
QUEUE: dict[str, list[str]] = {
    # one backbone at a time: a session's budget then completes SASRec's three seeds (acceptance 2 of issue 15
    # reads them) before BERT4Rec starts, where one grid of both would interleave them longest-first
    "ladder-Pantry-sasrec": ["reproduction_gap", "--dataset", "Pantry", "--backbones", "sasrec"],
    "ladder-Pantry-bert4rec": ["reproduction_gap", "--dataset", "Pantry", "--backbones", "bert4rec"],
    # the token-source rung (the llm_heavy preset) after both ladders: their stored runs answer the rest of the grid
    "ladder-Pantry-sources": ["reproduction_gap", "--dataset", "Pantry", "--sources", "llm_heavy", *FOCUS],
    # SASRec and BERT4Rec of ml-100k and Pantry first (Fig. 1, Fig. 3, the SC ablation: minutes a run), the other
    # four backbones of Table 2 after them: FMLPRec and BSARec encode one window per training prefix (leak-free
    # filters, PrefixEncodedMixin), about 2 minutes an epoch on ml-100k with MLTFR, so hours a run, and longest-first
    # they would hold both workers for whole sessions before a single figure is complete. A focus grid's runs are
    # the full grid's (same run keys): the full grid then trains only the other backbones. Pantry's full grid (the
    # paper's Table 2 dataset) before Beauty's two backbones and before ml-100k's full grid: an epoch there encodes
    # 15,966 prefix windows against ml-100k's 38,762, so its long runs fit a session.
    "claims-ml-100k-ours-focus": ["claims", "--dataset", "ml-100k", *FOCUS, "--configuration", "ours"],
    "claims-Pantry-ours-focus": ["claims", "--dataset", "Pantry", *FOCUS, "--configuration", "ours"],
    "claims-Pantry-ours": ["claims", "--dataset", "Pantry", "--configuration", "ours"],
    # Beauty's runs take 30 to 90 minutes each (about 100 epochs of 22,363 users): its Table 2 runs first (W/O and
    # MLTFR of SASRec and BERT4Rec, three seeds, about 7 hours wall; Table 3's w/o SC is recorded from them), which
    # measure claims 3a, 3b and 4 there, then the two focus grids of the authors' configuration (about 3 hours
    # together). Then the grids that complete a claim's verdict soonest per hour: ml-100k's other four backbones
    # (12 runs, hours each, but the last runs claims 3a-3c wait for), Beauty's Fig. 3 (30 runs, claim 5's last
    # rows; the expert_sweep grid's runs are the claims grid's, same run keys), then the rest of Beauty's claims
    # grid, its Fig. 1 (69 runs, claims 1 and 2, most of the whole batch's hours)
    "claims-Beauty-ours-table2": ["table2", "--dataset", "Beauty", *FOCUS, "--controls"],
    "claims-ml-100k-authors-focus": ["claims", "--dataset", "ml-100k", *FOCUS, "--configuration", "authors"],
    "claims-Pantry-authors-focus": ["claims", "--dataset", "Pantry", *FOCUS, "--configuration", "authors"],
    "claims-ml-100k-ours": ["claims", "--dataset", "ml-100k", "--configuration", "ours"],
    "claims-Beauty-ours-fig3": ["expert_sweep", "--dataset", "Beauty", *FOCUS],
    "claims-Beauty-ours": ["claims", "--dataset", "Beauty", *FOCUS, "--configuration", "ours"],
    "claims-Pantry-authors": ["claims", "--dataset", "Pantry", "--configuration", "authors"],
    "claims-Beauty-authors": ["claims", "--dataset", "Beauty", *FOCUS, "--configuration", "authors"],
    "claims-ml-100k-authors": ["claims", "--dataset", "ml-100k", "--configuration", "authors"],
}
DEFERRED = 3  # mltfrkit sweep's exit code when the finish-by time stopped it
STOPPED_AT = 4  # the batch's exit code when --stop-at stopped it: unfinished runs resume on this machine only


STOP_GRACE = 120  # seconds a sweep gets to stop its workers when the batch is stopped
POLL = 30  # seconds between two looks at the clock for --stop-at while a sweep runs


class Stopped(KeyboardInterrupt):
    """SIGTERM to the batch (a session's end, a scheduler): handled as Ctrl-C, so the archive is still written."""


class Deadline(Stopped):
    """The ``--stop-at`` time came: the batch stops as on SIGTERM, by plan."""


# While a child is being started, a SIGTERM is held until the child is known (raised inside Popen, it would leave
# the child running untracked) and raised right after.
_starting = {"now": False, "pending": None}


def _stop(signum, frame):
    if _starting["now"]:
        _starting["pending"] = Stopped()
        return
    raise Stopped()


def mltfrkit(*args: str, stop_at: float | None = None) -> int:
    """``mltfrkit ARGS`` in a child process. Stopped (Ctrl-C, SIGTERM), the batch passes SIGTERM on and waits
    for the child to stop its workers (mltfrkit handles SIGTERM as Ctrl-C): every run is left resumable and
    every finished one stored before the export. A second stop during that wait does not cut it short.
    ``stop_at`` (a ``time.time()``, ``--stop-at``): the child is stopped the same way once that time has come,
    and :class:`Deadline` raised; the clock is read every :data:`POLL` seconds (wall-clock time, so a machine
    woken from sleep past the time stops at once)."""
    command = [sys.executable, "-m", "mltfrkit", *args]
    print("$ mltfrkit " + " ".join(args), flush=True)
    _starting["now"] = True
    try:
        child = subprocess.Popen(command, cwd=REPO)
    finally:
        _starting["now"] = False
    pending, _starting["pending"] = _starting["pending"], None
    try:
        if pending is not None:
            raise pending
        while True:
            timeout = None if stop_at is None else max(0.0, min(POLL, stop_at - time.time()))
            try:
                return child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if time.time() >= stop_at:
                    raise Deadline() from None
    except KeyboardInterrupt:
        child.terminate()
        end, remaining = time.time() + STOP_GRACE, STOP_GRACE
        while True:
            try:
                child.wait(timeout=remaining)
                break
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                break
            except KeyboardInterrupt:  # stopped again while stopping: keep waiting for the child
                remaining = max(0.0, end - time.time())
        raise


def print_plans(grids: list[str], sweep_options: list[str]) -> None:
    """Each grid's ``mltfrkit sweep ... --plan`` report, then one line for the whole claims batch (its grids in
    queue order, each run once: a focus grid's runs are its full grid's), from the stored runs' measured times
    plus the estimates: issue 20's "wall time of the whole claims batch with the parallel executor"; before it,
    how close the estimates came on the store's own runs (:func:`mltfrkit.plan.held_out_check`)."""
    import contextlib

    from mltfrkit.cli import LIBRARY_ERRORS, OTHER_ERRORS, build_parser, sweep_experiment
    from mltfrkit.plan import batch_totals, epoch_units, held_out_check, timed_runs

    plans, failed, store = {}, [], None
    with contextlib.chdir(REPO):  # relative paths mean what they mean to the sweeps, which run in REPO
        for name in grids:
            argv = ["sweep", *QUEUE[name], *sweep_options, "--plan"]
            print("$ mltfrkit " + " ".join(argv), flush=True)
            args = build_parser().parse_args(argv)
            try:
                exp, options = sweep_experiment(args)
                plans[name] = exp.plan(args.experiment, workers=args.workers, **options)
                if store is None:
                    store = getattr(exp, "store", None)
            except LIBRARY_ERRORS + OTHER_ERRORS as error:  # one grid that cannot be planned: the rest still are
                print(f"mltfrkit: error: {error}", file=sys.stderr, flush=True)
                failed.append(name)
                continue
            print(plans[name].report(f"{args.experiment} on {exp.dataset}"), flush=True)
        # what the estimates are worth, on this store's runs (every grid shares the one store); inside REPO, where a
        # relative runs or data directory means what it meant to the sweeps
        if store is not None:
            sizes = lambda dataset: epoch_units(store.split(dataset))  # noqa: E731  (as the plans' own estimates)
            print(held_out_check(timed_runs(store), sizes=sizes).text(), flush=True)
    claims = [name for name in QUEUE if name.startswith("claims-")]
    planned = [name for name in claims if name in plans]
    if planned:
        label = ("the claims batch" if planned == claims else
                 f"{len(planned)} of the queue's {len(claims)} claims grids") + ", in queue order from an empty store"
        print(batch_totals([plans[name] for name in planned]).text(label))
    if failed:
        print(f"not planned (the error above): {', '.join(failed)}; the total leaves them out", file=sys.stderr)


def _dt_iso(moment: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(moment).isoformat(timespec="seconds")


def budget(text: str | None) -> tuple[float | None, list[str]]:
    """``--finish-by`` read once, as the time it means now (so ``+2h`` and ``08:50`` mean one moment for the
    whole queue, not a fresh budget per grid), and the sweep option that passes that moment on."""
    if text is None:
        return None, []
    from mltfrkit.cli import finish_by_time

    try:
        moment = finish_by_time(text)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"paper_batch.py: --finish-by: {error}") from None
    return moment, ["--finish-by", _dt_iso(moment)]


def stop_time(text: str | None) -> float | None:
    """``--stop-at`` read once, as a ``time.time()`` (None: not given)."""
    if text is None:
        return None
    from mltfrkit.cli import finish_by_time

    try:
        return finish_by_time(text)
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"paper_batch.py: --stop-at: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finish-by", default=None, help="sweep --finish-by: +2h, HH:MM, an ISO date-time")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--archive", default=str(REPO / "results"), help="the result archive (default: results/)")
    parser.add_argument("--runs-dir", default=None, help="the result store's root (default: $MLTFR_RUNS_DIR)")
    parser.add_argument("--only", nargs="+", choices=list(QUEUE), default=None, help="these grids, in queue order")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--stop-at", default=None,
                        help="stop at this time (+2h, HH:MM, an ISO date-time) as on SIGTERM: running runs keep "
                             "their last epoch's checkpoint and resume on this machine; the finished ones are exported")
    parser.add_argument("--plan", action="store_true", help="print each grid's plan; train, import and export nothing")
    args = parser.parse_args(argv)

    from mltfrkit.runs import store_root

    store = ["--runs-dir", args.runs_dir] if args.runs_dir else []
    grids = [name for name in QUEUE if args.only is None or name in args.only]
    finish_by, finish_flag = budget(args.finish_by)
    stop_at = stop_time(args.stop_at)
    if stop_at is not None and finish_by is not None and stop_at < finish_by:
        # no run can start after the batch has stopped: the earlier time is both (HH:MM means its next occurrence,
        # so "--finish-by 08:20 --stop-at 08:50" started at 08:25 would otherwise start runs until tomorrow)
        finish_by, finish_flag = budget(_dt_iso(stop_at))
    sweep_options = ["--data-dir", args.data_dir, *COMMON, *store, "--executor", "processes",
                     "--workers", args.workers, "--threads", args.threads]
    if args.plan:
        print_plans(grids, sweep_options)
        return 0
    root = store_root(args.runs_dir)
    if (Path(args.archive) / root.name).is_dir():  # a first session has nothing to import
        if mltfrkit("store", "import", args.archive, *store) != 0:
            return 2
    previous = signal.signal(signal.SIGTERM, _stop)
    outcome, failed, stopped = 0, [], None
    try:
        for name in grids:
            if stop_at is not None and time.time() >= stop_at:
                print(f"{name}: not started, the --stop-at time has passed; the next invocation continues here")
                stopped = STOPPED_AT
                break
            if finish_by is not None and time.time() >= finish_by:
                print(f"{name}: not started, the finish-by time has passed; the next invocation continues here")
                outcome = DEFERRED
                break
            code = mltfrkit("sweep", *QUEUE[name], *sweep_options, *finish_flag,
                            **({"stop_at": stop_at} if stop_at is not None else {}))
            if code == DEFERRED:
                print(f"{name}: the time budget ended in this grid; the next invocation continues here", flush=True)
                outcome = DEFERRED
                break
            if code != 0:  # failed runs fail alone: the sweep named them; the next grids still train
                failed.append(name)
        else:
            print("every grid of the queue is stored", flush=True)
    except Deadline:  # the --stop-at time: the sweep has stopped its workers, by plan
        stopped = STOPPED_AT
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (Stopped): the sweep has stopped its workers
        stopped = 143 if isinstance(stop, Stopped) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        exported = 0 if not root.is_dir() else mltfrkit("store", "export", args.archive, *store)
    if exported != 0:
        print(f"paper_batch.py: the export to {args.archive} failed (above): the finished runs are in {root} only; "
              f"run `mltfrkit store export {args.archive}` before this machine goes", file=sys.stderr)
        return 2
    if failed:
        print(f"grids with failed runs (see their sweep's message above): {', '.join(failed)}", file=sys.stderr)
    if stopped:
        saved = f"every finished run is exported to {args.archive}" if root.is_dir() else "no run had finished"
        how = {143: "terminated", 130: "interrupted", STOPPED_AT: "stopped at the --stop-at time"}[stopped]
        print(f"paper_batch.py: {how}; {saved}; the same command continues (an unfinished run resumes on this "
              f"machine only)", file=sys.stderr)
        return stopped
    return 1 if failed else outcome


if __name__ == "__main__":
    sys.exit(main())
