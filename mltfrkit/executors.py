"""Executors: who trains the missing runs of a grid. :meth:`mltfrkit.store.ResultStore.ensure_many`
hands them one; stored runs are never sent anywhere.

=============  ===================================================================================
``local``      in this process, one run after another (the behaviour before executors existed)
``processes``  ``workers`` processes on this machine (``spawn``), each with ``threads`` torch threads
``ray``        a Ray task per run: a local Ray (``ray.init()``) or a cluster by address
               (``auto``, ``ray://head:10001``, ``head:6379``); each task asks for ``threads`` CPUs
               and one GPU when its run's device is CUDA
``auto``       ``processes`` when this machine has more than one core, else ``local``
=============  ===================================================================================

Why processes and not threads: our models are small, so a second torch thread gains little, while a
second run on the other core doubles throughput. A worker receives a :class:`RunJob` (a picklable
:class:`~mltfrkit.runs.RunSpec` plus the store's root and the data directory), loads the split
itself, trains with the run's lock held (:func:`mltfrkit.runs.run_training`) and writes its log to
``<run dir>/train.log``.

Failures: a worker that dies (killed, out of memory) is replaced and its run is retried, resuming
from the run's last checkpoint (the trainer resumes exactly: same result as an uninterrupted run);
a run that raises fails alone, the rest of the grid finishes, and the store then raises
:class:`GridFailed` naming each failed run and its log. A worker that cannot see the store's root
(a cluster without a shared filesystem) stops the grid at once with :class:`StoreNotVisible`.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # runtime imports stay lazy: a worker sets its thread count before torch loads
    from mltfrkit.runs import RunSpec
    from mltfrkit.store import ResultStore

EXECUTORS = ("auto", "local", "processes", "ray")
LOG_FILE = "train.log"
STORE_ID_FILE = ".store-id"
DEFAULT_RETRIES = 2  # times a run whose worker died is started again


class StoreNotVisible(RuntimeError):
    """A worker cannot see the result store (or sees another directory under the same path)."""


class RunError(RuntimeError):
    """A run failed in its worker; carries the worker's traceback text (always picklable)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message, details)
        self.message, self.details = message, details

    def __str__(self) -> str:
        return self.message


@dataclass
class RunJob:
    """What a worker receives: a run and where it lives, nothing that is expensive to send."""

    spec: "RunSpec"
    root: str
    data_dir: str | None
    run_dir: str  # where the driver expects the run: the worker checks it computes the same
    store_id: str | None = None  # the driver's token in <root>/.store-id: proves the worker sees this store
    threads: int | None = None
    finish_by: float | None = None  # time.time() by which the grid is to be done: a run is not started later
    finish_by_text: str = ""  # that time as the driver's user wrote it / reads it (its local time)
    estimate: float | None = None  # this run's estimated seconds (mltfrkit.plan): not started unless it fits
    cost: dict | None = None  # its mltfrkit.plan.cost_fields, computed by the driver: a worker re-estimates from them
    # the estimate is the data-size level's upper bound (mltfrkit.plan.SIZE_SCALED_LEVEL): a worker prefers a real
    # one from runs finished meanwhile (the grid's first run of the kind on this dataset gives it one)
    estimate_bound: bool = False


@dataclass
class RunDeferred:
    """A run not started because the grid's finish-by time left no room for it (it would have run past
    it by its estimate, or the time had passed): nothing of it was written; the next request trains it."""

    spec: "RunSpec"
    run_dir: str
    reason: str


def deferral(job: RunJob, now: float | None = None) -> str | None:
    """Why ``job`` must not start now under its finish-by time (None: it may). A run with an estimate starts
    only if it is expected to end in time; one without starts while the time has not passed (it may then end
    later: there is nothing to tell its length by)."""
    if job.finish_by is None:
        return None
    import datetime as _dt
    import math
    import time

    now = time.time() if now is None else now
    deadline = job.finish_by_text or _dt.datetime.fromtimestamp(job.finish_by).strftime("%H:%M")
    left = job.finish_by - now
    if left <= 0:
        return f"the finish-by time ({deadline}) had passed when a worker was free"
    estimate = job.estimate
    if estimate is None or not math.isfinite(estimate) or job.estimate_bound:
        fresh = current_estimate(job)  # runs finished since the grid started (a store that began empty)
        if math.isfinite(fresh) or estimate is None or not math.isfinite(estimate):
            estimate = fresh
    if not math.isfinite(estimate):
        return None
    from mltfrkit.plan import checkpointed_seconds, time_left

    # an interrupted run resumes from its checkpoints, read now (a retried job has trained further since the
    # driver built it): only what is left of it must fit
    trained = checkpointed_seconds(job.run_dir) if job.run_dir else 0.0
    left_of_run = time_left(estimate, trained)
    if left_of_run > left:
        resumed = f" (what is left of it after {trained / 60:.0f} min trained)" if trained else ""
        return (f"estimated at {left_of_run / 60:.0f} min{resumed}, with {left / 60:.0f} min left before the "
                f"finish-by time ({deadline})")
    return None


def current_estimate(job: RunJob) -> float:
    """``job``'s estimated seconds from the runs stored in its store now (:mod:`mltfrkit.plan`; NaN: none alike,
    or no cost fields from the driver): the whole run's (:func:`deferral` takes off what its checkpoints hold).
    Reads result files only: never a token table or the data."""
    if job.cost is None:
        return float("nan")
    from mltfrkit.plan import Estimator, timed_runs

    try:
        return Estimator(timed_runs(job.root)).estimate(job.cost)[0]
    except Exception:  # advice only: whatever it cannot read leaves the run unestimated, never failed
        return float("nan")


@dataclass
class RunFailure:
    """A run that did not finish: the one-line reason and where its log is."""

    spec: "RunSpec"
    run_dir: str
    error: str

    @property
    def log_path(self) -> str:
        return str(Path(self.run_dir) / LOG_FILE)

    def describe(self) -> str:
        return f"{describe_spec(self.spec)}: {self.error}\n    log: {self.log_path}"


class GridDeferred(RuntimeError):
    """The finish-by time came before every run of a grid could start: the runs that finished are stored,
    ``deferred`` were not started (nothing of them was written); running the grid again trains them."""

    def __init__(self, desc: str, deferred: list[RunDeferred], results: list):
        self.deferred, self.results = deferred, results
        done = sum(result is not None for result in results)
        super().__init__(f"{desc}: stopped at the finish-by time with {len(deferred)} run(s) not started "
                         f"({done} of {len(results)} results stored); run the same command again to train the rest")


class GridFailed(RuntimeError):
    """Some runs of a grid failed (the others finished and are stored). ``results`` holds every
    finished result in the grid's order, None where a run failed or was not started; ``failures`` the failed
    runs, ``deferred`` those the finish-by time left unstarted."""

    def __init__(self, desc: str, failures: list[RunFailure], results: list, deferred: list | None = None):
        self.failures, self.results, self.deferred = failures, results, list(deferred or [])
        later = (f"; {len(self.deferred)} not started at the finish-by time" if self.deferred else "")
        lines = [f"{desc}: {len(failures)} of {len(results)} run(s) failed (the runs that finished are stored{later}; "
                 f"run the grid again to retry only the failed ones and train the rest):"]
        lines += [f"  {failure.describe()}" for failure in failures]
        super().__init__("\n".join(lines))


def describe_spec(spec: "RunSpec") -> str:
    plugin = "" if spec.plugin == "none" else f"+{spec.plugin}"
    options = {k: v for k, v in spec.plugin_options.items() if k in ("n_experts", "consensus", "noise", "top_k", "llm")}
    extra = " " + " ".join(f"{k}={v}" for k, v in sorted(options.items())) if options else ""
    return f"{spec.dataset} {spec.backbone}{plugin} seed {spec.train.seed}{extra}"


# -- the store's identity, for the shared-filesystem check -----------------------------------------
def store_id(root: str | os.PathLike) -> str:
    """The store's token (written once at its root): a worker that reads the same token sees the same
    directory, not merely an empty one with the same path on its own disk."""
    from mltfrkit.paths import atomic_write_bytes

    path = Path(root) / STORE_ID_FILE
    if not path.exists():
        atomic_write_bytes(path, uuid.uuid4().hex.encode())
    return path.read_text().strip()


def check_store_visible(root: str | os.PathLike, expected: str | None) -> None:
    if expected is None:
        return
    path = Path(root) / STORE_ID_FILE
    try:
        seen = path.read_text().strip()
    except OSError:
        seen = None
    if seen != expected:
        what = "cannot see" if seen is None else "sees another directory at"
        raise StoreNotVisible(
            f"worker on {socket.gethostname()} {what} the result store {root}: on a cluster the store must be on a "
            f"filesystem every worker mounts at the same path (NFS, Lustre, GPFS, a shared home); put it there "
            f"with --runs-dir / runs_dir / $MLTFR_RUNS_DIR (see the README's section on executors)")


# -- what a worker runs ---------------------------------------------------------------------------
def train_job(job: RunJob) -> dict:
    """Train one run in a worker: check the store, load the split, train with the lock held, log to
    ``<run dir>/train.log``. Errors come back as :class:`RunError` with the traceback in the log."""
    check_store_visible(job.root, job.store_id)
    reason = deferral(job)
    if reason:  # before the log is touched: the process pool tells started runs by their log's growth
        return RunDeferred(job.spec, job.run_dir, reason)
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    from mltfrkit.data import load_dataset
    from mltfrkit.runs import run_dir_for, run_training

    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "a", buffering=1) as handle, redirect_stdout(handle), redirect_stderr(handle):
        def log(message: str) -> None:
            print(message, file=handle, flush=True)

        log(f"--- {describe_spec(job.spec)} on {socket.gethostname()}, pid {os.getpid()}, "
            f"{job.threads or 'default'} thread(s)")
        try:
            split = load_dataset(job.spec.dataset, job.data_dir)
            computed = run_dir_for(job.spec, split, job.root)
            if computed != run_dir:
                raise RuntimeError(f"the worker computes the run directory {computed}, the driver {run_dir}: the "
                                   f"worker reads another version of the data file (or another mltfrkit); make "
                                   f"every worker see the same data directory and code")
            return run_training(job.spec, data_dir=job.data_dir, root=job.root, progress=False, log=log, split=split)
        except Exception as error:
            traceback.print_exc(file=handle)
            raise RunError(f"{type(error).__name__}: {error}", traceback.format_exc()) from None


PARENT_CHECK_SECONDS = 2.0  # how often a pool worker checks that the process that started it is alive


def _init_worker(threads: int | None, parent: int) -> None:
    """Pool initialiser: runs before torch is imported in the worker, so the thread count holds for
    every library torch loads (OpenMP, MKL); and makes the worker end itself when ``parent`` (the pid
    that created the pool) dies (:func:`_stop_when_orphaned`)."""
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(threads)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), name="mltfrkit-parent-watch", daemon=True).start()


def _stop_when_orphaned(parent: int) -> None:
    """End this worker once the process that started its pool is gone.

    A grid's process stopped without running its cleanup (SIGKILL, the OOM killer, a JupyterLab kernel
    restarted or killed, a script's SIGTERM with no handler) cannot stop its workers, and
    concurrent.futures leaves each to finish the run it is on: hours of invisible training that also
    hold the run's lock, so the next request for that run only waits. The worker sees it has been
    re-parented and sends itself SIGTERM, whose default action ends it at once; the run resumes from
    its last epoch's checkpoint (written atomically) at the next request, and its lock dies with it."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    # Only reached if the task installed a SIGTERM handler (concurrent.futures would then catch its exception
    # and wait forever for work that never comes): end without it.
    time.sleep(10)
    os._exit(128 + signal.SIGTERM)


# -- executors ------------------------------------------------------------------------------------
Outcome = tuple[int, "dict | RunFailure | RunDeferred"]


def rough_cost(spec: "RunSpec") -> float:
    """A run's cost as :func:`longest_first` ranks it, known before anything is trained: epochs, x 3 for
    MLTFR (two rounds and the experts), x 2 for a two-round schedule."""
    return spec.train.epochs * (3 if spec.plugin == "mltfr" else 1) * (1 if spec.schedule == "single" else 2)


def longest_first(jobs: list[RunJob]) -> list[int]:
    """Positions of ``jobs`` in the order parallel executors start them: the costliest first (longest
    processing time first), so that a long MLTFR run does not start last and leave the other workers
    idle at the end of a grid. The cost is the rough estimate of :func:`rough_cost`; ties keep the
    grid's order. Results never depend on it. :func:`mltfrkit.plan.plan_grid` simulates this order."""
    return sorted(range(len(jobs)), key=lambda index: -rough_cost(jobs[index].spec))


def concurrent_runs(executor) -> int:
    """How many runs ``executor`` trains at once: 1 for the local executor (and any executor that does not
    say), its ``workers`` for a process pool; for Ray its ``workers`` cap, else what a local Ray gets
    (cores / threads). A Ray cluster without a cap runs as many as its CPUs allow, which is not known
    before connecting: the local guess stands in for it, and ``mltfrkit sweep --plan --workers N`` says
    otherwise."""
    if isinstance(executor, RayExecutor):
        return executor.workers or max(1, (os.cpu_count() or 1) // executor.threads)
    return max(1, int(getattr(executor, "workers", None) or 1))


class LocalExecutor:
    """In this process, one run after another, logging to the store's log as well as train.log."""

    name = "local"
    remote = False

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __repr__(self) -> str:
        return "LocalExecutor()"

    def run(self, jobs: list[RunJob], store: "ResultStore") -> Iterator[Outcome]:
        previous = None
        if self.threads:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            for index, job in enumerate(jobs):
                reason = deferral(job)
                if reason:
                    yield index, RunDeferred(job.spec, job.run_dir, reason)
                    continue
                try:
                    yield index, store.train_here(job.spec)
                except Exception as error:
                    yield index, RunFailure(job.spec, job.run_dir, f"{type(error).__name__}: {error}")
        finally:
            if previous:
                import torch

                torch.set_num_threads(previous)


class WorkersCannotStart(RuntimeError):
    """Every worker of a process pool died before it started a run (typically a script without a
    ``__main__`` guard, which spawned workers re-execute): retrying would loop forever."""


class ProcessExecutor:
    """``workers`` spawned processes, each with ``threads`` torch threads (concurrent.futures).

    A worker that dies breaks the whole pool (:class:`BrokenProcessPool`): every unfinished run is
    then sent to a fresh pool, and each run that had started counts one attempt (the pool cannot
    tell which of its workers died, and the others were stopped with it); a run that reaches
    ``max_retries + 1`` attempts fails. Resubmitted runs resume from their last checkpoint. A worker whose
    pool's process dies without stopping it (killed, a kernel restarted) ends itself within
    :data:`PARENT_CHECK_SECONDS`: no orphan keeps training, or holding a run's lock."""

    name = "processes"
    remote = True

    def __init__(self, workers: int | None = None, threads: int = 1, max_retries: int = DEFAULT_RETRIES,
                 task: Callable[[RunJob], dict] = train_job):
        self.threads = max(1, int(threads))
        self.workers = max(1, int(workers or (os.cpu_count() or 1) // self.threads))
        self.max_retries = max_retries
        self.task = task  # a module-level function (spawned workers import it by name)

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers}, threads={self.threads})"

    def run(self, jobs: list[RunJob], store: "ResultStore") -> Iterator[Outcome]:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        for job in jobs:
            job.threads = self.threads
        pending = {index: jobs[index] for index in longest_first(jobs)}
        attempts = {index: 0 for index in pending}
        startless = 0  # pools that broke before any run started in them
        while pending:
            pool = ProcessPoolExecutor(max_workers=min(self.workers, len(pending)), mp_context=context,
                                       initializer=_init_worker, initargs=(self.threads, os.getpid()))
            broken, finished = False, False
            log_sizes = {index: _log_size(jobs[index]) for index in pending}
            try:
                futures = {pool.submit(self.task, job): index for index, job in pending.items()}
                waiting = set(futures)
                while waiting:
                    done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = futures[future]
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        except StoreNotVisible:
                            raise
                        except Exception as error:
                            del pending[index]
                            yield index, RunFailure(jobs[index].spec, jobs[index].run_dir, str(error))
                        else:
                            del pending[index]
                            yield index, result
                finished = True
            finally:
                if not finished:  # interrupted (or the store gave up): stop the runs in flight now; their
                    # checkpoints and locks make the next request resume them. (concurrent.futures has no
                    # public way to stop running workers before Python 3.14.)
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
            if broken:
                started = [index for index in pending if _log_size(jobs[index]) > log_sizes[index]]
                startless = 0 if started else startless + 1
                if startless > self.max_retries:
                    raise WorkersCannotStart(
                        f"the worker processes died {startless} times before starting any run. Spawned workers "
                        f"re-import the main module: in a script, put the code that runs the grid under "
                        f"`if __name__ == \"__main__\":` (Python's multiprocessing 'safe importing of main "
                        f"module'); otherwise look for an import error in the workers' output above, or use "
                        f"executor='local'")
                for index in list(pending):
                    if _log_size(jobs[index]) > log_sizes[index]:  # it had started in the pool that broke
                        attempts[index] += 1
                    if attempts[index] > self.max_retries:
                        del pending[index]
                        yield index, RunFailure(jobs[index].spec, jobs[index].run_dir,
                                                f"its worker died {attempts[index]} times (killed? out of memory?)")
                    elif store.log:
                        store.log(f"a worker died; {describe_spec(jobs[index].spec)} will resume from its checkpoint")


def _log_size(job: RunJob) -> int:
    """The size of a run's log: it grows when a worker starts the run (how a broken pool's runs that
    had started are told from those still queued)."""
    try:
        return (Path(job.run_dir) / LOG_FILE).stat().st_size
    except FileNotFoundError:
        return 0


class RayExecutor:
    """A Ray task per missing run: ``num_cpus=threads``, one GPU when the run's device is CUDA (or
    ``auto`` on a cluster with GPUs), ``max_retries`` re-executions when a worker dies (Ray's own
    fault tolerance; application errors are not retried: they would fail again).

    ``address`` None starts a local Ray with ``workers * threads`` CPUs; ``"auto"`` joins the cluster
    this machine belongs to (``ray start`` ran here); ``"ray://head:10001"`` connects as a Ray client;
    ``"head:6379"`` joins as a driver. Workers import the mltfrkit this driver imported
    (``PYTHONPATH`` in the runtime environment) and receive the ``MLTFR_*`` variables set here.
    ``workers`` caps the runs in flight on a cluster (None: as many as its CPUs allow). Ray's
    authentication settings (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``, ...) are those of the environment
    when :meth:`connect` runs; a cluster that refuses the driver's token fails with a ConnectionError
    saying what to set (:data:`RAY_AUTH_HINT`)."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1,
                 max_retries: int = DEFAULT_RETRIES, task: Callable[[RunJob], dict] = train_job):
        self.address, self.threads, self.max_retries, self.task = address, max(1, int(threads)), max_retries, task
        self.workers = int(workers) if workers else None

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.workers}, threads={self.threads})"

    def runtime_env(self) -> dict:
        import mltfrkit

        package_parent = str(Path(mltfrkit.__file__).resolve().parents[1])
        paths = [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        env.update({k: v for k, v in os.environ.items() if k.startswith("MLTFR_")})
        env.update({name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        return {"env_vars": env}

    def connect(self):
        try:
            import ray
        except ImportError:
            raise ImportError("executor 'ray' needs Ray: pip install 'mltfrkit[ray]' (or pip install ray)") from None
        if not ray.is_initialized():
            _reload_ray_auth_settings()
            options = {"runtime_env": self.runtime_env(), "log_to_driver": False}
            if self.address is None:
                cpus = (self.workers or max(1, (os.cpu_count() or 1) // self.threads)) * self.threads
                ray.init(num_cpus=cpus, include_dashboard=False, **options)
            else:
                try:
                    ray.init(address=self.address, **options)
                except ConnectionError as error:
                    if not _is_auth_error(error):
                        raise
                    raise ConnectionError(f"{error}: the cluster refused this driver (authentication token "
                                          f"missing or wrong). {RAY_AUTH_HINT}") from error
        return ray

    def run(self, jobs: list[RunJob], store: "ResultStore") -> Iterator[Outcome]:
        ray = self.connect()
        from ray.exceptions import RayTaskError, WorkerCrashedError

        gpus_in_cluster = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(self.task)
        queue = [(index, jobs[index]) for index in longest_first(jobs)]
        flying: dict = {}
        while queue or flying:
            while queue and (self.workers is None or len(flying) < self.workers):
                index, job = queue.pop(0)
                job.threads = self.threads
                device = job.spec.train.device
                gpu = 1 if device.startswith("cuda") or (device == "auto" and gpus_in_cluster) else 0
                if gpu and not gpus_in_cluster:
                    yield index, RunFailure(job.spec, job.run_dir, f"device {device!r} needs a GPU, and the Ray "
                                            f"cluster has none: run it with device 'cpu' or on a cluster with GPUs")
                    continue
                ref = remote.options(num_cpus=self.threads, num_gpus=gpu, max_retries=self.max_retries,
                                     retry_exceptions=False).remote(job)
                flying[ref] = index
            if not flying:
                continue
            done, _ = ray.wait(list(flying), num_returns=1)
            for ref in done:
                index = flying.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as error:
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, StoreNotVisible):
                        for other in flying:
                            ray.cancel(other, force=True)
                        raise cause from None
                    message = str(cause) if cause is not None else str(error).strip().splitlines()[-1]
                    yield index, RunFailure(jobs[index].spec, jobs[index].run_dir, message)
                except WorkerCrashedError:
                    yield index, RunFailure(jobs[index].spec, jobs[index].run_dir,
                                            f"its worker died {self.max_retries + 1} times (killed? out of memory?)")
                except Exception as error:  # lost node, object lost, ...
                    yield index, RunFailure(jobs[index].spec, jobs[index].run_dir, f"{type(error).__name__}: {error}")
                else:
                    yield index, result


RAY_AUTH_HINT = (
    "Ray (2.52+) clusters may require token authentication: `ray start --head` turns it on when the head has a "
    "token (~/.ray/auth_token, which a local ray.init() creates), newer Ray versions by default. Every node and "
    "this driver must then agree: set RAY_AUTH_MODE=token and give each the cluster's token (RAY_AUTH_TOKEN, "
    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; `ray get-auth-token` prints it) before they start, or start every "
    "node and the driver with RAY_AUTH_MODE=disabled on a trusted network. "
    "See https://docs.ray.io/en/latest/ray-security/token-auth.html")


def _reload_ray_auth_settings() -> None:
    """Make Ray use the ``RAY_AUTH_*`` variables set now, not those of when ``ray`` was imported.

    Ray reads ``RAY_AUTH_MODE`` (and caches the token) once per process, at import: a notebook that sets
    ``os.environ["RAY_AUTH_MODE"] = "token"`` after something imported ray would otherwise connect without
    a token and get a bare "Failed to connect". Ray itself reloads its config this way when it turns token
    authentication on (``ray._private.authentication.authentication_token_setup._enable_token_auth``);
    if a Ray version lacks these internals, nothing is reloaded."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        return
    try:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except AttributeError:
        pass


def _is_auth_error(error: BaseException) -> bool:
    """Whether a failed ``ray.init`` failed on authentication (its cause chain names the token)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(error) \
                or "Authentication token" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def make_executor(executor: "str | LocalExecutor | ProcessExecutor | RayExecutor | None" = "local",
                  workers: int | None = None, threads: int | None = None, ray_address: str | None = None,
                  max_retries: int = DEFAULT_RETRIES):
    """An executor from its name (notebook parameters and command-line flags end up here)."""
    if executor is None:
        executor = "local"
    if not isinstance(executor, str):
        return executor
    name = executor.lower()
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if name == "auto":
        name = "processes" if (os.cpu_count() or 1) > 1 else "local"
    if ray_address and name != "ray":
        raise ValueError(f"ray_address={ray_address!r} only applies to executor 'ray' (the executor is {name!r})")
    if name == "local":
        return LocalExecutor(threads=threads)
    if name == "processes":
        return ProcessExecutor(workers=workers, threads=threads or 1, max_retries=max_retries)
    return RayExecutor(address=ray_address, workers=workers, threads=threads or 1, max_retries=max_retries)


__all__ = ["EXECUTORS", "GridFailed", "LocalExecutor", "ProcessExecutor", "RayExecutor", "RunError", "RunFailure",
           "WorkersCannotStart",
           "RunJob", "StoreNotVisible", "check_store_visible", "concurrent_runs", "describe_spec", "longest_first",
           "rough_cost", "make_executor", "store_id", "train_job"]
